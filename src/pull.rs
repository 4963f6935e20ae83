//! The pull pipeline: reference → source → manifest → blobs → squashfs → store.

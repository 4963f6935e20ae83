//! The content-addressed image store (layout in docs/store.md).

//! Turning layer blobs into one squashfs: decompress and parse each layer
//! ([`layer`]), apply the layers in order with OCI semantics ([`flatten`]), write the
//! result as one squashfs ([`squash`]).
//!
//! Nothing here writes into the image tree on disk: file contents go to unlinked spool
//! files and the squashfs is built from metadata, so owners, modes, xattrs and device
//! rules come from the layers, never from the host, and no layer path can reach outside.

/// Checking the image config blob's shape.
pub mod config;
/// One parsed layer entry and path normalisation.
pub mod entry;
/// Applying layers in order (whiteouts, opaque dirs, hard links) to an in-memory tree.
pub mod flatten;
#[cfg(test)]
mod flatten_props;
/// Decompressing and parsing one layer blob.
pub mod layer;
/// Anonymous files holding file contents until the squashfs is written.
pub mod spool;
/// Writing the tree as one squashfs (tar2sqfs).
pub mod squash;
/// A minimal ustar + PAX writer for the flattened tree.
pub mod tarwrite;

/// Bounds on hostile input, from `pull.max_entries` / `pull.max_file_size`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Entries across all layers of one image.
    pub max_entries: u64,
    /// Bytes in any one file.
    pub max_file_size: u64,
}

impl Limits {
    /// The limits configured under `[pull]`.
    pub fn from_config(p: &crate::config::PullConfig) -> Limits {
        Limits {
            max_entries: p.max_entries,
            max_file_size: p.max_file_size,
        }
    }
}

/// Longest path accepted (Linux PATH_MAX, counting the leading '/' and NUL).
pub const MAX_PATH: usize = 4094;
/// Longest name of one path component (squashfs and Linux limit).
pub const MAX_NAME: usize = 255;

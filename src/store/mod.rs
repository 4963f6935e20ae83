//! The content-addressed image store (layout in docs/store.md).

use crate::config::Config;
use crate::digest::Digest;
use anyhow::Result;
use std::path::PathBuf;

/// A published image, as the runtime needs it.
#[derive(Debug, Clone)]
pub struct ImageEntry {
    /// Manifest digest: the image's identity.
    pub digest: Digest,
    /// The image's single squashfs file.
    pub squashfs: PathBuf,
    /// The OCI image config JSON beside it.
    pub config: PathBuf,
}

/// The user's store plus the shared stores, searched in order.
pub struct Stores {}

impl Stores {
    pub fn open(_cfg: &Config) -> Result<Stores> {
        anyhow::bail!("store: not implemented yet")
    }

    /// Find an image by reference (as typed: tag, digest, short name) or by digest prefix.
    pub fn find(&self, _image: &str) -> Result<Option<ImageEntry>> {
        anyhow::bail!("store: not implemented yet")
    }
}

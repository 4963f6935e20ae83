//! The seam where image sources plug into the pull pipeline: a registry
//! ([`crate::registry`]) or a local OCI layout ([`crate::oci_layout`]).

use crate::digest::Digest;
use crate::platform::Platform;
use anyhow::Result;
use oci_spec::image::{Descriptor, ImageManifest};
use std::path::Path;

/// A manifest chosen for one platform, with its config blob, both verified.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// Digest of the top-level object the reference points at (an index or a manifest).
    pub top_digest: Digest,
    /// Digest of the platform's image manifest (the store's image key).
    pub manifest_digest: Digest,
    pub manifest: ImageManifest,
    /// The manifest exactly as served (its digest is `manifest_digest`).
    pub manifest_bytes: Vec<u8>,
    /// The image config exactly as served (its digest is the manifest's `config.digest`).
    pub config_bytes: Vec<u8>,
}

/// Where an image comes from.
pub trait Source: Send + Sync {
    /// Human-readable name for messages (`127.0.0.1:5000/lab/app:1`).
    fn describe(&self) -> String;

    /// The digest the reference resolves to now, with one cheap request (HEAD): used to
    /// answer a re-pull of an unchanged tag from the store.
    fn current_digest(&self) -> Result<Digest>;

    /// Resolve to one platform's manifest and fetch its config.
    fn resolve(&self, platform: &Platform) -> Result<ResolvedImage>;

    /// Write blob `desc` to `dest` (a temp file the caller owns and later renames),
    /// verifying size and digest. Resume from `dest`'s current length if it has bytes.
    /// `progress` is called with the number of bytes written so far.
    fn fetch_blob(&self, desc: &Descriptor, dest: &Path, progress: &dyn Fn(u64)) -> Result<()>;
}

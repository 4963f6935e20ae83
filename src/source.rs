//! The seam where image sources plug into the pull pipeline: a registry
//! ([`crate::registry`]) or a local OCI layout ([`crate::oci_layout`]).

use crate::digest::Digest;
use crate::platform::Platform;
use anyhow::Result;
use oci_spec::image::{Descriptor, ImageManifest};
use std::path::Path;

/// A manifest chosen for one platform, verified (its config not fetched yet: a pull that
/// finds the image already stored needs nothing more).
#[derive(Debug, Clone)]
pub struct ResolvedManifest {
    /// Digest of the top-level object the reference points at (an index or a manifest).
    pub top_digest: Digest,
    /// Digest of the platform's image manifest (the store's image key).
    pub manifest_digest: Digest,
    pub manifest: ImageManifest,
    /// The manifest exactly as served (its digest is `manifest_digest`).
    pub manifest_bytes: Vec<u8>,
}

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

    /// Resolve to one platform's manifest.
    fn resolve_manifest(&self, platform: &Platform) -> Result<ResolvedManifest>;

    /// Fetch (and verify) the config blob of a resolved manifest.
    fn fetch_config(&self, m: &ResolvedManifest) -> Result<Vec<u8>>;

    /// Resolve to one platform's manifest and fetch its config.
    fn resolve(&self, platform: &Platform) -> Result<ResolvedImage> {
        let m = self.resolve_manifest(platform)?;
        let config_bytes = self.fetch_config(&m)?;
        Ok(ResolvedImage::new(m, config_bytes))
    }

    /// Write blob `desc` to `dest` (a temp file the caller owns and later renames),
    /// verifying size and digest. Resume from `dest`'s current length if it has bytes.
    /// `progress` is called with the number of bytes written so far.
    fn fetch_blob(&self, desc: &Descriptor, dest: &Path, progress: &dyn Fn(u64)) -> Result<()>;
}

impl ResolvedImage {
    /// A resolved manifest with its fetched config.
    pub fn new(m: ResolvedManifest, config_bytes: Vec<u8>) -> ResolvedImage {
        ResolvedImage {
            top_digest: m.top_digest,
            manifest_digest: m.manifest_digest,
            manifest: m.manifest,
            manifest_bytes: m.manifest_bytes,
            config_bytes,
        }
    }
}

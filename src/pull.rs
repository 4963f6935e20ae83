//! The pull pipeline: reference → source → manifest → blobs → squashfs → store.

use crate::config::Config;
use crate::store::ImageEntry;
use anyhow::Result;

/// Options a caller can set for one pull.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// `os/arch[/variant]`; default from config, then the host.
    pub platform: Option<String>,
    /// Pull into the first shared store instead of the user's.
    pub shared: bool,
    pub quiet: bool,
}

/// Pull `image` (as typed) into the store, or answer from the store when the tag still
/// resolves to the stored digest.
pub fn pull(_cfg: &Config, image: &str, _opts: &PullOptions) -> Result<ImageEntry> {
    anyhow::bail!("pull {image}: not implemented yet")
}

//! Probing what the kernel allows an unprivileged user (kernel overlayfs in a user namespace).

use crate::config::Config;
use anyhow::Result;

/// Outcome of the native-overlay probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverlayProbe {
    /// Kernel overlayfs with `userxattr` works over a squashfuse lower in a user namespace.
    Native,
    /// It does not; the reason (kernel's error) is kept for `warren doctor`.
    Unsupported(String),
}

/// Probe (or read the per-boot cached answer).
pub fn native_overlay(_cfg: &Config) -> Result<OverlayProbe> {
    anyhow::bail!("overlay probe: not implemented yet")
}

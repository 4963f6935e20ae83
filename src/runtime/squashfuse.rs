//! Mounting the image's squashfs with `squashfuse_ll` (never unpacking it).

use super::fuse;
use anyhow::{Context, Result};
use std::ffi::OsStr;
use std::path::Path;

/// Mount `image` read-only on `target` with the daemon `prog` (messages name it as
/// `shown`: the configured program, when `prog` is its execute-only copy); returns the
/// daemon's PID.
pub fn mount(prog: &Path, shown: &Path, image: &Path, target: &Path) -> Result<i32> {
    fuse::mount_with_daemon(
        target,
        "squashfuse",
        true,
        false,
        prog,
        &[OsStr::new("-f"), image.as_os_str()],
    )
    .with_context(|| format!("mount {} with {}", image.display(), shown.display()))
}

//! The container's root when it is not a writable overlay: the read-only root (the image,
//! or a read-only overlay of the mount-point skeleton over it), and the small directory
//! helpers the set-up shares with it.

use super::overlay::Backend;
use super::sys;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// The read-only root: the image itself, or, when the mount-point skeleton is not empty
/// (`layers` = skeleton then image; images built FROM scratch have no /proc, /dev…), a
/// read-only overlay of the layers: the kernel's, or fuse-overlayfs with the fuse back end
/// (`fuse_overlayfs`). Returns the root and the fuse-overlayfs daemon's PID, if any.
pub fn root(
    layers: &[&Path],
    base: &Path,
    backend: Backend,
    fuse_overlayfs: &Path,
) -> anyhow::Result<(PathBuf, Option<i32>)> {
    let image = layers[layers.len() - 1].to_path_buf();
    if layers.len() == 1 {
        return Ok((image, None));
    }
    let merged = base.join("r");
    if backend == Backend::Native && super::overlay::mount_readonly(layers, &merged).is_ok() {
        return Ok((merged, None));
    }
    let pid = super::overlay::mount_fuse(fuse_overlayfs, layers, None, &merged)?;
    Ok((merged, Some(pid)))
}

/// Open a directory as an O_PATH fd.
pub fn open_dir(p: &Path) -> std::io::Result<OwnedFd> {
    let c = sys::cpath(p)?;
    sys::openat2(
        libc::AT_FDCWD,
        &c,
        (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64,
        0,
        0,
    )
}

/// The upper layer's root takes the image root's owner and mode, so `/` inside looks
/// like the image's (best effort: an unmapped owner is left as is).
pub fn copy_root_attrs(lower: &Path, upper: &Path) {
    use std::os::unix::fs::MetadataExt;
    if let Ok(md) = std::fs::metadata(lower) {
        let _ = std::os::unix::fs::chown(upper, Some(md.uid()), Some(md.gid()));
        use std::os::unix::fs::PermissionsExt;
        let _ =
            std::fs::set_permissions(upper, std::fs::Permissions::from_mode(md.mode() & 0o7777));
    }
}

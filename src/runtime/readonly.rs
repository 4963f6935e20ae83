//! The container's root when it is not a fresh writable overlay: the read-only root (the
//! image, or a read-only overlay of a mount-point skeleton over it), and the small
//! directory helpers the set-up shares with it.

use super::overlay::Backend;
use super::resolve::{self, Kind};
use super::{rootfs, sys};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The read-only root: the image itself, or, when it lacks mount points the container
/// needs (images built FROM scratch have no /proc, /dev…), a read-only kernel overlay of
/// a small skeleton of those mount points over the image. A mount point under a symlink
/// of the image is left out (a skeleton directory would hide the link).
pub fn root(
    lower: &Path,
    base: &Path,
    ops: &[rootfs::Op],
    passwd: bool,
    backend: Backend,
) -> PathBuf {
    if backend != Backend::Native {
        return lower.to_path_buf();
    }
    let Ok(lroot) = open_dir(lower) else {
        return lower.to_path_buf();
    };
    let mut wanted: Vec<(PathBuf, Kind)> = ops
        .iter()
        .filter_map(|op| match op {
            rootfs::Op::Bind { dst, kind, .. } => Some((dst.clone(), *kind)),
            rootfs::Op::Fs { dst, .. } => Some((dst.clone(), Kind::Dir)),
            rootfs::Op::Symlink { .. } => None,
        })
        .collect();
    if passwd {
        wanted.push(("/etc/passwd".into(), Kind::File));
        wanted.push(("/etc/group".into(), Kind::File));
    }
    let skel = base.join("k");
    let mut any = false;
    for (dst, kind) in wanted {
        let s = dst.to_string_lossy();
        if s.starts_with("/dev/") || s.starts_with("/tmp/") {
            continue; // inside tmpfs instances of ours
        }
        match resolve::open_in_root(&lroot, &dst) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            _ => continue,
        }
        if !no_symlink_on_the_way(&lroot, &dst) {
            continue;
        }
        let rel = dst.strip_prefix("/").unwrap_or(&dst);
        let target = skel.join(rel);
        let made = match kind {
            Kind::Dir => std::fs::create_dir_all(&target),
            Kind::File => target
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|_| std::fs::File::create(&target).map(drop)),
        };
        any |= made.is_ok();
    }
    if !any {
        return lower.to_path_buf();
    }
    let merged = base.join("r");
    match super::overlay::mount_readonly(&[Path::new("k"), lower], &merged) {
        Ok(()) => merged,
        Err(_) => lower.to_path_buf(),
    }
}

/// True when no existing component of `dst`'s parents in the image is a symlink.
fn no_symlink_on_the_way(root: &OwnedFd, dst: &Path) -> bool {
    let mut prefix = PathBuf::new();
    let parent = dst.parent().unwrap_or(Path::new("/"));
    for c in parent.strip_prefix("/").unwrap_or(parent).components() {
        prefix.push(c);
        let Ok(cp) = sys::cpath(&prefix) else {
            return false;
        };
        match sys::openat2(
            root.as_raw_fd(),
            &cp,
            (libc::O_PATH | libc::O_CLOEXEC) as u64,
            0,
            libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_SYMLINKS,
        ) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return true,
            Err(_) => return false,
        }
    }
    true
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

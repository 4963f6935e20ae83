//! The mount-point skeleton: the container's mount points the image lacks (`/proc`,
//! `/dev`, `/etc/hosts`, the home directory, `-v` destinations and their parents), made
//! as a small tree on the staging tmpfs and stacked as the top lower layer of the root
//! (`lowerdir=SKELETON:IMAGE`). Nothing is created in the image's own directories, so
//! no copy-up is needed: in the single-ID mode the image's directories belong to unmapped
//! IDs and a copy-up of them fails, and a read-only root has no upper layer at all.
//!
//! A directory of the image that gets a skeleton entry (e.g. `/etc` for a missing
//! `/etc/hosts`) is shown with the skeleton's attributes (overlayfs takes a merged
//! directory's from its top layer): its mode, and its owner when that ID is mapped, are
//! copied from the image.

use super::resolve::{self, Kind};
use super::sys;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Pure: the mount points worth a skeleton entry, in order, without duplicates. `/dev/…`
/// and `/tmp/…` are left out: they are created in tmpfs instances of ours.
pub fn wanted<'a>(targets: impl IntoIterator<Item = (&'a Path, Kind)>) -> Vec<(PathBuf, Kind)> {
    let mut out: Vec<(PathBuf, Kind)> = Vec::new();
    for (dst, kind) in targets {
        let Some(norm) = normalize(dst) else { continue };
        if inside_our_tmpfs(&norm) || norm == Path::new("/") {
            continue;
        }
        if !out.iter().any(|(p, _)| *p == norm) {
            out.push((norm, kind));
        }
    }
    out
}

/// Strictly under `/dev` or `/tmp` (tmpfs instances of ours, always writable).
pub fn inside_our_tmpfs(p: &Path) -> bool {
    ["/dev", "/tmp"]
        .iter()
        .any(|d| p.starts_with(d) && p != Path::new(d))
}

/// `dst` as an absolute path of plain components, or None (`..`, relative, empty).
fn normalize(dst: &Path) -> Option<PathBuf> {
    let mut p = PathBuf::from("/");
    for c in dst.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => p.push(n),
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    dst.is_absolute().then_some(p)
}

/// Make, under `skel`, every entry of `wanted` that the image (opened as `image`) lacks,
/// with its parents; returns true when anything was made (`skel` is then worth
/// stacking). An entry under a symlink of the image is made where the link leads inside
/// the image (`/lib/x` with `/lib -> usr/lib` at `/usr/lib/x`), as the mounts will resolve
/// it; one under a dangling link, or whose parent in the image is not a directory, is
/// left out.
pub fn build(image: &OwnedFd, skel: &Path, wanted: &[(PathBuf, Kind)]) -> bool {
    let Ok(image_path) = std::fs::read_link(sys::fd_path(image)) else {
        return false;
    };
    let mut any = false;
    for (dst, kind) in wanted {
        match resolve::open_in_root(image, dst) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            _ => continue,
        }
        let Some(at) = place(image, &image_path, dst) else {
            continue;
        };
        if make(image, skel, &at, *kind).is_ok() {
            any = true;
        }
    }
    if any {
        copy_attrs(image, Path::new("/"), skel);
    }
    any
}

/// Where the absent `dst` is in the image: its deepest existing ancestor resolved inside
/// the image root (symlinks followed in-root), then the missing rest. `image_path` is
/// the image root's path as the kernel names it.
fn place(image: &OwnedFd, image_path: &Path, dst: &Path) -> Option<PathBuf> {
    let mut existing = dst.parent()?.to_path_buf();
    let mut rest = vec![dst.file_name()?.to_owned()];
    loop {
        match resolve::open_in_root(image, &existing) {
            Ok(fd) => {
                let real = std::fs::read_link(sys::fd_path(&fd)).ok()?;
                let mut p = Path::new("/").join(real.strip_prefix(image_path).ok()?);
                p.extend(rest.iter().rev());
                return Some(p);
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                rest.push(existing.file_name()?.to_owned());
                existing = existing.parent()?.to_path_buf();
            }
            Err(_) => return None,
        }
    }
}

/// Make `dst` (absent from the image) under `skel`, each parent directory taking the
/// attributes of the image's directory of that name when there is one.
fn make(image: &OwnedFd, skel: &Path, dst: &Path, kind: Kind) -> std::io::Result<()> {
    let rel = dst.strip_prefix("/").unwrap_or(dst);
    let mut in_image = PathBuf::from("/");
    let mut image_has = true;
    let mut target = skel.to_path_buf();
    let parents: Vec<_> = rel
        .parent()
        .map(|p| p.components().collect())
        .unwrap_or_default();
    for c in parents {
        in_image.push(c);
        target.push(c);
        if image_has {
            match lstat_in_root(image, &in_image) {
                Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {}
                Ok(_) => return Err(std::io::Error::from_raw_os_error(libc::ENOTDIR)),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => image_has = false,
                Err(e) => return Err(e),
            }
        }
        match std::fs::DirBuilder::new().mode(0o755).create(&target) {
            Ok(()) if image_has => copy_attrs(image, &in_image, &target),
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    target.push(rel.file_name().unwrap_or_default());
    let made = match kind {
        Kind::Dir => std::fs::DirBuilder::new().mode(0o755).create(&target),
        Kind::File => std::fs::File::create(&target).map(drop),
    };
    match made {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

/// lstat of `path` inside the image: parents resolved in the root, no symlink followed
/// on the way (a mount point under an image symlink is not the skeleton's to make).
fn lstat_in_root(image: &OwnedFd, path: &Path) -> std::io::Result<libc::stat> {
    let rel = path.strip_prefix("/").unwrap_or(path);
    let c = sys::cpath(rel)?;
    let fd = sys::openat2(
        image.as_raw_fd(),
        &c,
        (libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC) as u64,
        0,
        libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_SYMLINKS,
    )?;
    // SAFETY: an all-zero stat is a valid value to be overwritten by fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open; st is a valid out pointer.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
        return Err(std::io::Error::from_raw_os_error(libc::ELOOP));
    }
    Ok(st)
}

/// The skeleton directory `target` takes the mode and (when mapped) the owner of the
/// image's `path`, best effort: it is what the merged directory shows.
fn copy_attrs(image: &OwnedFd, path: &Path, target: &Path) {
    let st = if path == Path::new("/") {
        // SAFETY: an all-zero stat is a valid value to be overwritten by fstat.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: image is an open fd; st is a valid out pointer.
        if unsafe { libc::fstat(image.as_raw_fd(), &mut st) } != 0 {
            return;
        }
        st
    } else {
        match lstat_in_root(image, path) {
            Ok(st) => st,
            Err(_) => return,
        }
    };
    // An unmapped owner (single-ID mode) fails: the directory stays ours.
    let _ = std::os::unix::fs::chown(target, Some(st.st_uid), Some(st.st_gid));
    let _ = std::fs::set_permissions(target, std::fs::Permissions::from_mode(st.st_mode & 0o7777));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wanted_drops_our_tmpfs_entries_and_duplicates() {
        let w = wanted([
            (Path::new("/proc"), Kind::Dir),
            (Path::new("/dev"), Kind::Dir),
            (Path::new("/dev/null"), Kind::File),
            (Path::new("/tmp/x"), Kind::Dir),
            (Path::new("/etc/hosts"), Kind::File),
            (Path::new("/etc//hosts/"), Kind::File),
            (Path::new("/a/./b"), Kind::Dir),
            (Path::new("/a/../b"), Kind::Dir),
            (Path::new("rel"), Kind::Dir),
            (Path::new("/"), Kind::Dir),
        ]);
        let got: Vec<(&str, Kind)> = w.iter().map(|(p, k)| (p.to_str().unwrap(), *k)).collect();
        assert_eq!(
            got,
            vec![
                ("/proc", Kind::Dir),
                ("/dev", Kind::Dir),
                ("/etc/hosts", Kind::File),
                ("/a/b", Kind::Dir)
            ]
        );
    }

    #[test]
    fn build_makes_only_what_the_image_lacks() {
        let img = tempfile::tempdir().unwrap();
        let skel = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(img.path().join("etc")).unwrap();
        std::fs::set_permissions(
            img.path().join("etc"),
            std::fs::Permissions::from_mode(0o750),
        )
        .unwrap();
        std::fs::write(img.path().join("etc/passwd"), "").unwrap();
        std::os::unix::fs::symlink("/elsewhere", img.path().join("link")).unwrap();
        std::fs::create_dir_all(img.path().join("usr/lib")).unwrap();
        std::os::unix::fs::symlink("usr/lib", img.path().join("lib")).unwrap();
        let root = crate::runtime::readonly::open_dir(img.path()).unwrap();
        let w = wanted([
            (Path::new("/etc/hosts"), Kind::File),
            (Path::new("/etc/passwd"), Kind::File),
            (Path::new("/data/deep/dir"), Kind::Dir),
            (Path::new("/link/x"), Kind::Dir),
            (Path::new("/lib/new/x"), Kind::Dir),
        ]);
        assert!(build(&root, skel.path(), &w));
        let s = skel.path();
        assert!(s.join("etc/hosts").is_file());
        assert!(!s.join("etc/passwd").exists());
        assert!(s.join("data/deep/dir").is_dir());
        assert!(!s.join("link").exists());
        // Under a symlink: where it leads; the link itself stays the image's.
        assert!(s.join("usr/lib/new/x").is_dir());
        assert!(!s.join("lib").exists());
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&s.join("etc")), 0o750, "the image's /etc mode");
        // Nothing missing: nothing made.
        let skel2 = tempfile::tempdir().unwrap();
        let w = wanted([(Path::new("/etc/passwd"), Kind::File)]);
        assert!(!build(&root, skel2.path(), &w));
    }

    proptest! {
        #[test]
        fn wanted_paths_are_absolute_and_plain(parts in proptest::collection::vec("[a-z.]{0,3}", 0..5)) {
            let p = format!("/{}", parts.join("/"));
            for (w, _) in wanted([(Path::new(&p), Kind::Dir)]) {
                prop_assert!(w.is_absolute());
                prop_assert!(w.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_))));
                prop_assert!(!inside_our_tmpfs(&w));
            }
        }
    }
}

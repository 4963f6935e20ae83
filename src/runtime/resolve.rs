//! Path work inside the container's root file system, always relative to an open fd of
//! the root and resolved with `openat2(RESOLVE_IN_ROOT)`: a symlink in the image (even
//! `/etc -> /host/etc` or `../../..`) can never lead a mount point onto the host.

use super::sys;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path};

const RESOLVE: u64 = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;

fn cstr(p: &Path) -> io::Result<CString> {
    sys::cpath(p)
}

/// What a missing mount point should be created as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
}

/// Open `path` (absolute or relative, always taken inside `root`) as an O_PATH fd.
pub fn open_in_root(root: &OwnedFd, path: &Path) -> io::Result<OwnedFd> {
    open_in_root_flags(root, path, libc::O_PATH)
}

/// As [`open_in_root`] with open `flags` (O_CLOEXEC is added).
pub fn open_in_root_flags(root: &OwnedFd, path: &Path, flags: i32) -> io::Result<OwnedFd> {
    let rel = relative(path);
    let c = cstr(if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    })?;
    sys::openat2(
        root.as_raw_fd(),
        &c,
        (flags | libc::O_CLOEXEC) as u64,
        0,
        RESOLVE,
    )
}

fn relative(path: &Path) -> &Path {
    path.strip_prefix("/").unwrap_or(path)
}

/// Open `path` inside `root`, creating it (and missing parents, as 0755 directories) when
/// absent. An existing object of the other kind is an error.
pub fn ensure_in_root(root: &OwnedFd, path: &Path, kind: Kind) -> io::Result<OwnedFd> {
    ensure_depth(root, path, kind, 0)
}

fn ensure_depth(root: &OwnedFd, path: &Path, kind: Kind, depth: u32) -> io::Result<OwnedFd> {
    if depth > 40 {
        return Err(io::Error::from_raw_os_error(libc::ELOOP));
    }
    match open_in_root(root, path) {
        Ok(fd) => return check_kind(fd, kind),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        Err(e) => return Err(e),
    }
    let rel = relative(path);
    let name = match rel.components().next_back() {
        Some(Component::Normal(n)) => n.to_owned(),
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a file name",
            ))
        }
    };
    let parent = match rel.parent() {
        Some(p) if !p.as_os_str().is_empty() => ensure_depth(root, p, Kind::Dir, depth + 1)?,
        _ => open_in_root(root, Path::new("."))?,
    };
    // Reopen the parent as a real directory fd: *at calls need one.
    let dir = sys::openat2(
        parent.as_raw_fd(),
        c".",
        (libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64,
        0,
        0,
    )?;
    let cname = cstr(Path::new(&name))?;
    // SAFETY: dir is an open directory fd, cname a valid C string.
    let r = unsafe {
        match kind {
            Kind::Dir => libc::mkdirat(dir.as_raw_fd(), cname.as_ptr(), 0o755),
            Kind::File => {
                let fd = libc::openat(
                    dir.as_raw_fd(),
                    cname.as_ptr(),
                    libc::O_CREAT
                        | libc::O_EXCL
                        | libc::O_WRONLY
                        | libc::O_NOFOLLOW
                        | libc::O_CLOEXEC,
                    0o644,
                );
                if fd >= 0 {
                    libc::close(fd);
                }
                fd.min(0)
            }
        }
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        // A racing creator or a dangling symlink: resolve again, inside the root.
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(e);
        }
        let mut buf = [0u8; libc::PATH_MAX as usize];
        // SAFETY: buf is valid for its length; readlinkat fails (EINVAL) on a non-link.
        let n = unsafe {
            libc::readlinkat(
                dir.as_raw_fd(),
                cname.as_ptr(),
                buf.as_mut_ptr() as *mut libc::c_char,
                buf.len(),
            )
        };
        if n > 0 {
            // Dangling link: create its target, still resolved inside the root.
            use std::os::unix::ffi::OsStrExt;
            let target = Path::new(std::ffi::OsStr::from_bytes(&buf[..n as usize]));
            let next = match rel.parent() {
                Some(p) if target.is_relative() => p.join(target),
                _ => target.to_path_buf(),
            };
            return ensure_depth(root, &next, kind, depth + 1);
        }
    }
    check_kind(open_in_root(root, path)?, kind)
}

fn check_kind(fd: OwnedFd, kind: Kind) -> io::Result<OwnedFd> {
    let st = nix::sys::stat::fstat(&fd).map_err(io::Error::from)?;
    let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
    match (kind, is_dir) {
        (Kind::Dir, true) | (Kind::File, false) => Ok(fd),
        (Kind::Dir, false) => Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
        (Kind::File, true) => Err(io::Error::from_raw_os_error(libc::EISDIR)),
    }
}

/// Read a small file inside `root` (e.g. the image's /etc/passwd); None when absent.
pub fn read_in_root(root: &OwnedFd, path: &Path) -> io::Result<Option<Vec<u8>>> {
    let rel = cstr(relative(path))?;
    match sys::openat2(
        root.as_raw_fd(),
        &rel,
        (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY) as u64,
        0,
        RESOLVE,
    ) {
        Ok(fd) => {
            let mut f = std::fs::File::from(fd);
            let mut v = Vec::new();
            use std::io::Read;
            f.by_ref().take(16 << 20).read_to_end(&mut v)?;
            Ok(Some(v))
        }
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Replace (or create) a regular file inside `root` with `bytes`, mode 0644.
pub fn write_in_root(root: &OwnedFd, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let rel = cstr(relative(path))?;
    let fd = sys::openat2(
        root.as_raw_fd(),
        &rel,
        (libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC | libc::O_NOFOLLOW)
            as u64,
        0o644,
        RESOLVE,
    )?;
    use std::io::Write;
    std::fs::File::from(fd).write_all(bytes)
}

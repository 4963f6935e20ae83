//! What root does below the runtime path, where the job's user owns everything from
//! `RUNTIME/NODE/UID/` down: every path is opened component by component from the
//! (admin-configured) runtime path with `O_NOFOLLOW | O_DIRECTORY`, so a symlink the user
//! plants can never send root elsewhere; files are created, chowned and chmodded through
//! their descriptors; records are only read (never pruned) as root; trees are moved into
//! a root-owned trash directory by `renameat` before they are deleted.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

fn cstr(s: &std::ffi::OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn openat_dir(dirfd: i32, name: &std::ffi::OsStr) -> io::Result<OwnedFd> {
    let c = cstr(name)?;
    // SAFETY: a valid C string; the flags refuse symlinks and non-directories.
    let fd = unsafe {
        libc::openat(
            dirfd,
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Open `path` (below `root`) as a directory, no symlink followed below `root`.
pub fn open_dir(root: &Path, path: &Path) -> io::Result<OwnedFd> {
    let rel = path
        .strip_prefix(root)
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let c = cstr(root.as_os_str())?;
    // SAFETY: a valid C string.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    let mut dir = unsafe { OwnedFd::from_raw_fd(fd) };
    for comp in rel.components() {
        match comp {
            Component::Normal(n) => dir = openat_dir(dir.as_raw_fd(), n)?,
            _ => return Err(io::Error::from(io::ErrorKind::InvalidInput)),
        }
    }
    Ok(dir)
}

/// `name` in `parent`: created with `mode` and `uid:gid` through its descriptor, or an
/// existing real directory owned by `uid`.
pub fn ensure_dir_at(
    parent: &OwnedFd,
    name: &str,
    mode: u32,
    uid: u32,
    gid: u32,
) -> io::Result<OwnedFd> {
    let c = cstr(std::ffi::OsStr::new(name))?;
    // SAFETY: a valid C string; mkdirat does not follow a final symlink.
    let made = unsafe { libc::mkdirat(parent.as_raw_fd(), c.as_ptr(), 0o700) } == 0;
    if !made && io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST) {
        return Err(io::Error::last_os_error());
    }
    let fd = openat_dir(parent.as_raw_fd(), std::ffi::OsStr::new(name))?;
    if made {
        // SAFETY: fchown/fchmod on a descriptor we hold.
        unsafe {
            if libc::fchown(fd.as_raw_fd(), uid, gid) != 0
                || libc::fchmod(fd.as_raw_fd(), mode) != 0
            {
                return Err(io::Error::last_os_error());
            }
        }
    }
    // SAFETY: fstat into a zeroed stat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open; st is valid for writing.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if st.st_uid != uid {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("not owned by uid {uid}"),
        ));
    }
    Ok(fd)
}

/// The live holder record of a warren runtime dir (`dir/ctr/*.json` locked by its
/// process), read as root without following symlinks and without pruning stale records.
pub fn holder_record(root: &Path, dir: &Path) -> Option<warren::runtime::state::Record> {
    let ctr = open_dir(root, &dir.join("ctr")).ok()?;
    let entries = fs::read_dir(format!("/proc/self/fd/{}", ctr.as_raw_fd())).ok()?;
    for e in entries.flatten() {
        let name = e.file_name();
        if !name.as_bytes().ends_with(b".json") {
            continue;
        }
        let Ok(c) = cstr(&name) else { continue };
        // SAFETY: a valid C string; no symlink, no blocking on a fifo.
        let fd = unsafe {
            libc::openat(
                ctr.as_raw_fd(),
                c.as_ptr(),
                libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            continue;
        }
        // SAFETY: a fresh descriptor we own.
        let file = fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        if !file
            .metadata()
            .is_ok_and(|m| m.is_file() && m.len() <= 65536)
        {
            continue;
        }
        // SAFETY: a non-blocking shared lock only tests the holder's exclusive one.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } == 0 {
            continue; // stale: its process is gone
        }
        let mut text = String::new();
        if io::Read::read_to_string(&mut &file, &mut text).is_err() {
            continue;
        }
        if let Ok(r) = serde_json::from_str::<warren::runtime::state::Record>(&text) {
            if r.kind == "holder" {
                return Some(r);
            }
        }
    }
    None
}

/// The names in directory `dir` (below `root`), read without following symlinks.
pub fn list_dirs(root: &Path, dir: &Path) -> Vec<String> {
    let Ok(fd) = open_dir(root, dir) else {
        return vec![];
    };
    fs::read_dir(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Remove `path` (below `root`): moved by `renameat` into `trash` (a root-owned directory
/// below `root`), then deleted there, where no component is the user's. Gone already: Ok.
pub fn remove(root: &Path, trash: &Path, path: &Path) -> io::Result<()> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    };
    let pfd = match open_dir(root, parent) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    match fs::DirBuilder::new().create(trash) {
        Ok(()) => fs::set_permissions(trash, std::os::unix::fs::PermissionsExt::from_mode(0o700))?,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let tfd = open_dir(root, trash)?;
    let unique = format!(
        "{}-{}-{}",
        std::process::id(),
        warren::runtime::sys::monotonic_ns(),
        name.to_string_lossy()
    );
    let (from, to) = (cstr(name)?, cstr(std::ffi::OsStr::new(&unique))?);
    // SAFETY: valid C strings and descriptors; renameat moves the entry itself.
    if unsafe { libc::renameat(pfd.as_raw_fd(), from.as_ptr(), tfd.as_raw_fd(), to.as_ptr()) } != 0
    {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENOENT) {
            Ok(())
        } else {
            Err(e)
        };
    }
    // Every component of this path is root's now (the moved entry itself is not
    // followed if it is a symlink).
    let moved = trash.join(unique);
    match fs::symlink_metadata(&moved) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(&moved),
        Ok(_) => fs::remove_file(&moved),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_below_the_root_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        fs::create_dir_all(root.join("n/1/job")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("n/1/evil")).unwrap();
        assert!(open_dir(root, &root.join("n/1/job")).is_ok());
        assert!(open_dir(root, &root.join("n/1/evil")).is_err());
        assert!(open_dir(root, &root.join("n/1/evil/ssl")).is_err());
        assert!(open_dir(root, Path::new("/etc")).is_err());
        assert!(holder_record(root, &root.join("n/1/evil")).is_none());
        assert!(list_dirs(root, &root.join("n/1/evil")).is_empty());
        assert_eq!(list_dirs(root, &root.join("n/1")), ["job"]);
        // Removing through a symlinked component removes nothing behind it.
        let victim = d.path().join("victim");
        fs::create_dir_all(victim.join("step.0")).unwrap();
        std::os::unix::fs::symlink(&victim, root.join("n/1/j2")).unwrap();
        let trash = root.join("n/.trash");
        assert!(remove(root, &trash, &root.join("n/1/j2/step.0")).is_err());
        assert!(victim.join("step.0").is_dir());
        // The symlink itself goes, not its target.
        remove(root, &trash, &root.join("n/1/j2")).unwrap();
        assert!(victim.join("step.0").is_dir());
        remove(root, &trash, &root.join("n/1/job")).unwrap();
        assert!(!root.join("n/1/job").exists());
        remove(root, &trash, &root.join("n/1/gone")).unwrap();
        // A planted symlink where a directory is to be made is refused.
        let parent = open_dir(root, &root.join("n/1")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("n/1/made")).unwrap();
        // SAFETY: plain queries.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        assert!(ensure_dir_at(&parent, "made", 0o700, uid, gid).is_err());
        let fd = ensure_dir_at(&parent, "fresh", 0o700, uid, gid).unwrap();
        drop(fd);
        assert!(root.join("n/1/fresh").is_dir());
    }
}

//! Warming the page cache with the container's executable while the rest of the set-up
//! runs. On a fresh squashfuse mount every page the command touches is a FUSE read that
//! decompresses a block; `exec` faults them in one at a time (a 2 MB busybox: ~20 serial
//! reads, ~8 ms). `readahead(2)` queues the whole file at once as asynchronous FUSE reads
//! that the daemon's threads serve in parallel while warren builds the mounts, so the
//! command mostly finds its pages ready.
//!
//! Best effort: any failure only means no prefetch.

use super::resolve;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Larger executables are not prefetched. squashfuse_ll serves one request at a time, so
/// queued reads delay every other FUSE request of the set-up and of `exec`: worth it when
/// the program reads most of its file at start (a 2 MB static busybox: ~4 ms saved), not
/// for a big, sparsely used one (a 6.8 MB python3: 3 ms lost even at a 4 MB cap).
pub const MAX_BYTES: u64 = 2 << 20;

/// The file `argv0` resolves to inside the root: as given when it contains a slash
/// (relative to `cwd`), else the first regular file named so in a `PATH` directory.
pub fn executable(root: &OwnedFd, argv0: &str, path: &str, cwd: &str) -> Option<OwnedFd> {
    if argv0.is_empty() {
        return None;
    }
    if argv0.contains('/') {
        return open_regular(root, &Path::new(cwd).join(argv0));
    }
    path.split(':')
        .filter(|d| !d.is_empty())
        .find_map(|d| open_regular(root, &PathBuf::from(d).join(argv0)))
}

/// The kernel caps one `readahead(2)` at the device's readahead window (128 KiB on
/// FUSE): the file is queued in steps of this size.
const STEP: u64 = 128 << 10;

/// Queue reads of all of `file` unless it is larger than [`MAX_BYTES`] or already in
/// the page cache (a holder's warm mount); returns at once on FUSE (the daemon answers
/// asynchronously).
pub fn start(file: &OwnedFd) {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat fills `st` on success; we read it only then.
    if unsafe { libc::fstat(file.as_raw_fd(), st.as_mut_ptr()) } != 0 {
        return;
    }
    // SAFETY: fstat succeeded.
    let size = unsafe { st.assume_init() }.st_size as u64;
    if size > MAX_BYTES || cached(file, size) {
        return;
    }
    let mut off = 0;
    while off < size {
        // SAFETY: readahead on a regular file we opened; the result does not matter.
        unsafe { libc::readahead(file.as_raw_fd(), off as i64, STEP as usize) };
        off += STEP;
    }
}

/// True when the first, middle and last bytes are in the page cache (reads that must
/// not wait: `RWF_NOWAIT` fails with EAGAIN otherwise).
fn cached(file: &OwnedFd, size: u64) -> bool {
    if size == 0 {
        return true;
    }
    [0, size / 2, size - 1].iter().all(|&off| {
        let mut b = 0u8;
        let iov = libc::iovec {
            iov_base: (&mut b as *mut u8).cast(),
            iov_len: 1,
        };
        // SAFETY: one valid iovec of one byte; the fd is ours.
        unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, off as i64, libc::RWF_NOWAIT) == 1 }
    })
}

fn open_regular(root: &OwnedFd, p: &Path) -> Option<OwnedFd> {
    // O_NONBLOCK: a FIFO of that name must not block the set-up.
    let fd = resolve::open_in_root_flags(root, p, libc::O_RDONLY | libc::O_NONBLOCK).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat fills `st` on success; we read it only then.
    if unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: fstat succeeded.
    let mode = unsafe { st.assume_init() }.st_mode;
    (mode & libc::S_IFMT == libc::S_IFREG).then_some(fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn finds_what_exec_would_run() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        for p in ["bin", "usr/bin", "work"] {
            std::fs::create_dir_all(r.join(p)).unwrap();
        }
        std::fs::write(r.join("usr/bin/tool"), "x").unwrap();
        std::fs::set_permissions(
            r.join("usr/bin/tool"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::os::unix::fs::symlink("/usr/bin/tool", r.join("bin/link")).unwrap();
        std::fs::create_dir(r.join("bin/dir")).unwrap();
        std::fs::write(r.join("work/script"), "x").unwrap();
        let root = crate::runtime::userdb::open_root(r).unwrap();
        let found = |a0: &str, path: &str, cwd: &str| {
            executable(&root, a0, path, cwd)
                .map(|f| std::fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd())).unwrap())
        };
        let tool = Some(r.join("usr/bin/tool"));
        assert_eq!(found("tool", "/bin:/usr/bin", "/"), tool);
        // A symlink resolves inside the root (its absolute target is the image's).
        assert_eq!(found("link", "/bin:/usr/bin", "/"), tool);
        assert_eq!(found("/usr/bin/tool", "", "/"), tool);
        assert_eq!(found("./script", "", "/work"), Some(r.join("work/script")));
        // Directories and missing names are skipped; nothing leaves the root.
        assert_eq!(found("dir", "/bin", "/"), None);
        assert_eq!(found("nothing", "/bin:/usr/bin", "/"), None);
        assert_eq!(found("../../../etc/passwd", "", "/"), None);
        assert_eq!(found("", "/bin", "/"), None);
        // The cache is warmed without error on a regular file.
        start(&executable(&root, "tool", "/usr/bin", "/").unwrap());
    }
}

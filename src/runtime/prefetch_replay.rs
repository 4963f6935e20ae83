//! Reading an image's prefetch list ahead on a fresh mount (`prefetch_list`): a child
//! of the set-up process lists the directories and queues reads of the files the last
//! first container read, several at a time and in the order they were first needed,
//! through the image mount itself, while the set-up and then the command run. A fresh
//! mount answers one request per round trip; the command makes them one after the
//! other, the replay makes them in parallel and ahead of it, so that the command finds
//! names, listings and pages cached.
//!
//! The child outlives the set-up (the command starts while it reads) and ends when its
//! list is done or when the set-up process (the command's monitor) kills what is left
//! at the command's end, or dies. It keeps no descriptor but the image root's, and is
//! non-dumpable: the container, running as the same user, can neither trace it nor open
//! its `/proc/PID/root` (the set-up's view of the host).

use super::prefetch_list::{Entry, Kind};
use super::{resolve, sys};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Requests in flight at once: enough to keep warren's server threads busy while each
/// waits for its reply.
const THREADS: usize = 4;
/// A file is read ahead up to this much (a big library the command maps and touches
/// sparsely is not read whole).
const MAX_FILE: u64 = 64 << 20;
/// And all files together.
const MAX_TOTAL: u64 = 512 << 20;
/// A shorter list is left alone: a few files are what the command's own prefetch reads
/// (its executable, loader and libraries), and a child process to read them again
/// costs more than it saves (a first `true` under fuse-overlayfs, which is CPU-bound:
/// ~0.8 ms).
pub const MIN_ENTRIES: usize = 8;
/// One `readahead(2)` is capped at FUSE's readahead window.
const STEP: u64 = 128 << 10;

/// Start reading `list` ahead through the image root `root`, in a child process; returns
/// its PID, or None when nothing was started (a list shorter than [`MIN_ENTRIES`], this
/// process has threads, or the fork failed). The caller does not wait for it. `lock`: a
/// descriptor the child keeps open until it is done (the caller's lock on this list).
pub fn start(root: &OwnedFd, list: Vec<Entry>, lock: Option<&OwnedFd>) -> Option<i32> {
    if list.len() < MIN_ENTRIES {
        return None;
    }
    sys::fork_helper(|| {
        // SAFETY: prctl on this process.
        if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
            return;
        }
        let mut keep = vec![root.as_raw_fd()];
        keep.extend(lock.map(|l| l.as_raw_fd()));
        sys::close_all_but(&keep);
        // SAFETY: the standard descriptors are this process's own; nothing of it writes
        // there (warren must see EOF on what it passed the set-up).
        unsafe {
            for fd in 0..3 {
                libc::close(fd);
            }
        }
        run(root, &list);
    })
}

/// Read the list ahead on [`THREADS`] threads, each taking the next entry.
pub fn run(root: &OwnedFd, list: &[Entry]) {
    let next = AtomicUsize::new(0);
    let budget = AtomicU64::new(MAX_TOTAL);
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                while let Some(e) = list.get(next.fetch_add(1, Ordering::Relaxed)) {
                    one(root, e, &budget);
                }
            });
        }
    });
}

fn one(root: &OwnedFd, e: &Entry, budget: &AtomicU64) {
    let path = Path::new(std::ffi::OsStr::from_bytes(&e.path));
    match e.kind {
        Kind::Dir => {
            let flags = libc::O_RDONLY | libc::O_DIRECTORY;
            if let Ok(dir) = resolve::open_in_root_flags(root, path, flags) {
                list_dir(&dir);
            }
        }
        Kind::File { bytes } => {
            // O_NONBLOCK: a FIFO of that name (in a changed image) must not block.
            let flags = libc::O_RDONLY | libc::O_NONBLOCK;
            let Ok(f) = resolve::open_in_root_flags(root, path, flags) else {
                return;
            };
            let Ok(st) = nix::sys::stat::fstat(&f) else {
                return;
            };
            if st.st_mode & libc::S_IFMT != libc::S_IFREG {
                return;
            }
            let want = bytes.min(st.st_size as u64).min(MAX_FILE);
            let taken = budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                b.checked_sub(want)
            });
            if taken.is_err() {
                return;
            }
            let mut off = 0;
            while off < want {
                // SAFETY: readahead on a regular file we opened; the result does not
                // matter (a failure only means no read ahead).
                unsafe { libc::readahead(f.as_raw_fd(), off as i64, STEP as usize) };
                off += STEP;
            }
        }
    }
}

/// List `dir` to its end (the kernel then caches the listing and the entries' names and
/// attributes: READDIRPLUS).
fn list_dir(dir: &OwnedFd) {
    let mut buf = vec![0u8; 32 << 10];
    loop {
        // SAFETY: getdents64 into a buffer we own, of its length.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                dir.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        if n <= 0 {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_it_can_and_skips_the_rest() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        std::fs::write(d.path().join("a/b/f"), vec![7u8; 300_000]).unwrap();
        std::os::unix::fs::symlink("/a/b/f", d.path().join("link")).unwrap();
        let root = OwnedFd::from(std::fs::File::open(d.path()).unwrap());
        let e = |path: &str, kind| Entry {
            kind,
            path: path.as_bytes().to_vec(),
        };
        let list = vec![
            e("/a", Kind::Dir),
            e("/a/b/f", Kind::File { bytes: 1 << 40 }),
            e("/missing", Kind::File { bytes: 10 }),
            e("/a/b", Kind::File { bytes: 10 }),
            e("/a/b/f", Kind::Dir),
            e("/link", Kind::File { bytes: 10 }),
        ];
        // Nothing to assert on the page cache from here; it must neither fail nor hang,
        // and count what it queued: the file once, capped at its size, and the link.
        let budget = AtomicU64::new(MAX_TOTAL);
        for x in &list {
            one(&root, x, &budget);
        }
        assert_eq!(budget.load(Ordering::Relaxed), MAX_TOTAL - 300_000 - 10);
        run(&root, &list);
    }

    #[test]
    fn the_budget_stops_reading() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("f"), vec![1u8; 4096]).unwrap();
        let root = OwnedFd::from(std::fs::File::open(d.path()).unwrap());
        let budget = AtomicU64::new(100);
        let f = Entry {
            kind: Kind::File { bytes: 4096 },
            path: b"/f".to_vec(),
        };
        one(&root, &f, &budget);
        assert_eq!(budget.load(Ordering::Relaxed), 100, "over budget: not read");
    }
}

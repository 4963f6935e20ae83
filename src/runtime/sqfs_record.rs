//! Recording an image's prefetch list in warren's image server: which files a fresh
//! mount's first container read (and how far into each) and which directories it listed,
//! in the order of their first request, for the next fresh mount to read ahead
//! (`prefetch_list`, `prefetch_replay`).
//!
//! The server knows nodes, not paths: it keeps each node's parent and name from the
//! replies that named it (LOOKUP, READDIRPLUS), and turns the nodes read into paths when
//! it writes the list. It records for a window after the mount (long enough for a
//! Python import on a fresh mount, short enough that a long job's later reads are left
//! out), stops early when the list is full, and writes it once: at the window's end, when
//! the image is unmounted before, or when asked ([`write_signal`]: its parent's death, or
//! the container's end).

use super::prefetch_list::{self, Entry, Kind};
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long after the mount reads are recorded.
pub const WINDOW: Duration = Duration::from_secs(30);
/// Names kept to build paths from (a walk of a 100,000-entry image: ~5 MB).
const MAX_NAMES: usize = 262_144;
/// Deeper paths are left out (a path of this many components is past PATH_MAX anyway).
const MAX_DEPTH: usize = 512;

/// Where the list goes: a directory and a file name in it.
pub struct Target {
    pub dir: OwnedFd,
    pub name: String,
}

/// The recording of one mount. Shared by the server's threads.
pub struct Recorder {
    target: Target,
    root: u64,
    deadline: Instant,
    /// Recording, until the window ends or the list is full (read without the lock).
    open: AtomicBool,
    state: Mutex<State>,
}

/// The server's thread that writes the list when the window ends, or when the server's
/// parent dies (the set-up process or holder whose mount it serves: the signal below
/// is then its parent-death signal instead of SIGKILL, so that a container shorter than
/// the window still leaves its list). One wake-up at the window's end; none after.
pub struct Watcher {
    thread: std::thread::JoinHandle<()>,
    stop: Arc<AtomicBool>,
}

/// The server's parent-death signal while it records; sent to it, it makes it write
/// the list and end (the monitor of a container with its own mount does, at the end).
pub fn write_signal() -> libc::c_int {
    libc::SIGRTMIN()
}

/// Ask the image server `server` (a child of the caller), which records the image's
/// prefetch list, to write it and end; wait for that a short while (a slow home
/// directory must not hold up the container's end: the caller then kills it).
pub fn let_write(server: i32) {
    let Ok(fd) = super::sys::pidfd_open(server) else {
        return;
    };
    // SAFETY: a signal to the caller's own child, whose pidfd we hold.
    unsafe { libc::kill(server, write_signal()) };
    let mut p = libc::pollfd {
        fd: std::os::fd::AsRawFd::as_raw_fd(&fd),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; a pidfd becomes readable when its process exits.
    unsafe { libc::poll(&mut p, 1, 2000) };
}

fn signal_set(sig: libc::c_int) -> libc::sigset_t {
    // SAFETY: sigset operations on a local, initialized set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        set
    }
}

impl Watcher {
    /// Start it. Call on the server's main thread before it starts its other threads
    /// (they inherit the blocked signal, so only this thread takes it).
    pub fn start(rec: Arc<Recorder>) -> std::io::Result<Watcher> {
        let sig = write_signal();
        let set = signal_set(sig);
        // SAFETY: blocking one signal in this thread; getppid cannot fail; prctl with
        // integer arguments on this thread (the parent-death signal is the creating
        // thread's, which this is in the forked server).
        unsafe {
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            let parent = libc::getppid();
            libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0);
            if libc::getppid() != parent {
                // The parent died before the new signal was set (the old one, SIGKILL,
                // would have ended us): write and go.
                rec.finish();
                libc::_exit(0);
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let halt = stop.clone();
        let thread = std::thread::Builder::new()
            .name("record".into())
            .spawn(move || watch(&rec, &halt, &set))?;
        Ok(Watcher { thread, stop })
    }

    /// Stop the thread (the mount is gone; the caller wrote the list).
    pub fn stop(self) {
        use std::os::unix::thread::JoinHandleExt;
        self.stop.store(true, Ordering::SeqCst);
        // SAFETY: a signal to our own live thread (joined below), blocked there and taken
        // by its sigwait.
        unsafe { libc::pthread_kill(self.thread.as_pthread_t(), write_signal()) };
        let _ = self.thread.join();
    }
}

fn watch(rec: &Recorder, stop: &AtomicBool, set: &libc::sigset_t) {
    let mut written = false;
    loop {
        let left = rec.time_left();
        // SAFETY: waiting for a signal blocked in this thread, with a valid timeout.
        let got = unsafe {
            if written || left.is_zero() {
                libc::sigwaitinfo(set, std::ptr::null_mut())
            } else {
                let ts = libc::timespec {
                    tv_sec: left.as_secs() as libc::time_t,
                    tv_nsec: left.subsec_nanos() as libc::c_long,
                };
                libc::sigtimedwait(set, std::ptr::null_mut(), &ts)
            }
        };
        if stop.load(Ordering::SeqCst) {
            return;
        }
        if got == write_signal() {
            rec.finish();
            // SAFETY: the parent is gone: the server ends here, its list written.
            unsafe { libc::_exit(0) };
        }
        if !written && rec.time_left().is_zero() {
            rec.finish();
            written = true;
        }
    }
}

#[derive(Default)]
struct State {
    /// Node → (parent node, name).
    names: HashMap<u64, (u64, Box<[u8]>)>,
    /// Nodes in the order of their first read or listing, and what to read of each.
    order: Vec<(u64, Kind)>,
    /// Node → its index in `order`.
    index: HashMap<u64, usize>,
    written: bool,
}

impl Recorder {
    /// Record for `window` from now; `root` is the root directory's node.
    pub fn new(target: Target, root: u64, window: Duration) -> Recorder {
        Recorder {
            target,
            root,
            deadline: Instant::now() + window,
            open: AtomicBool::new(true),
            state: Mutex::new(State::default()),
        }
    }

    fn recording(&self) -> Option<std::sync::MutexGuard<'_, State>> {
        if !self.open.load(Ordering::Relaxed) {
            return None;
        }
        if Instant::now() >= self.deadline {
            self.open.store(false, Ordering::Relaxed);
            return None;
        }
        self.state.lock().ok()
    }

    /// A reply named `child` as `name` in directory `parent`.
    pub fn named(&self, parent: u64, name: &[u8], child: u64) {
        if let Some(mut s) = self.recording() {
            if s.names.len() < MAX_NAMES && child != self.root {
                s.names.entry(child).or_insert((parent, name.into()));
            }
        }
    }

    /// A directory listing named these `(name, child)` in `parent`.
    pub fn named_in<'a>(&self, parent: u64, names: impl Iterator<Item = (&'a [u8], u64)>) {
        if let Some(mut s) = self.recording() {
            for (name, child) in names {
                if s.names.len() >= MAX_NAMES {
                    break;
                }
                if child != self.root {
                    s.names.entry(child).or_insert((parent, name.into()));
                }
            }
        }
    }

    /// The file `node` was read up to byte `end`.
    pub fn read(&self, node: u64, end: u64) {
        self.touch(node, Kind::File { bytes: end });
    }

    /// The directory `node` was listed.
    pub fn listed(&self, node: u64) {
        self.touch(node, Kind::Dir);
    }

    fn touch(&self, node: u64, kind: Kind) {
        let Some(mut s) = self.recording() else {
            return;
        };
        let s = &mut *s;
        match s.index.get(&node) {
            Some(&i) => {
                if let (Kind::File { bytes }, Kind::File { bytes: new }) = (&mut s.order[i].1, kind)
                {
                    *bytes = (*bytes).max(new);
                }
            }
            None if s.order.len() < prefetch_list::MAX_ENTRIES => {
                s.index.insert(node, s.order.len());
                s.order.push((node, kind));
            }
            None => {
                // Full: nothing more to learn.
                self.open.store(false, Ordering::Relaxed);
            }
        }
    }

    /// How long the window still runs.
    fn time_left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Stop recording and write the list (once; nothing when nothing was read).
    pub fn finish(&self) {
        self.open.store(false, Ordering::Relaxed);
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        if std::mem::replace(&mut s.written, true) {
            return;
        }
        let entries = s.entries(self.root);
        drop(s);
        if !entries.is_empty() {
            // Best effort: a list not written is made by a later fresh mount.
            let _ = prefetch_list::store(
                &self.target.dir,
                &self.target.name,
                &prefetch_list::encode(&entries),
            );
        }
    }
}

impl State {
    /// The recorded nodes as paths (those whose path is not known are left out).
    fn entries(&self, root: u64) -> Vec<Entry> {
        self.order
            .iter()
            .filter_map(|&(node, kind)| self.path(root, node).map(|path| Entry { kind, path }))
            .collect()
    }

    fn path(&self, root: u64, node: u64) -> Option<Vec<u8>> {
        if node == root {
            return Some(b"/".to_vec());
        }
        let mut parts: Vec<&[u8]> = Vec::new();
        let mut n = node;
        while n != root {
            let (parent, name) = self.names.get(&n)?;
            parts.push(name);
            if parts.len() > MAX_DEPTH {
                return None;
            }
            n = *parent;
        }
        let mut p = Vec::new();
        for c in parts.iter().rev() {
            p.push(b'/');
            p.extend_from_slice(c);
        }
        prefetch_list::valid_path(&p).then_some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorder(dir: &std::path::Path, window: Duration) -> Recorder {
        let fd = OwnedFd::from(std::fs::File::open(dir).unwrap());
        Recorder::new(
            Target {
                dir: fd,
                name: "list".into(),
            },
            1,
            window,
        )
    }

    #[test]
    fn records_paths_in_first_access_order_with_the_furthest_read() {
        let d = tempfile::tempdir().unwrap();
        let r = recorder(d.path(), WINDOW);
        r.named(1, b"usr", 10);
        r.named(10, b"bin", 11);
        r.named(11, b"python3", 12);
        r.named(1, b"etc", 20);
        r.named(20, b"passwd", 21);
        r.read(12, 4096);
        r.listed(20);
        r.read(12, 131072);
        r.read(21, 100);
        r.read(99, 10); // never named: left out
        r.listed(1);
        r.finish();
        let list = prefetch_list::load(&d.path().join("list"))
            .unwrap()
            .unwrap();
        let got: Vec<(String, Kind)> = list
            .into_iter()
            .map(|e| (String::from_utf8(e.path).unwrap(), e.kind))
            .collect();
        assert_eq!(
            got,
            vec![
                ("/usr/bin/python3".into(), Kind::File { bytes: 131072 }),
                ("/etc".into(), Kind::Dir),
                ("/etc/passwd".into(), Kind::File { bytes: 100 }),
                ("/".into(), Kind::Dir),
            ]
        );
        // Written once: later reads change nothing.
        r.read(21, 1 << 20);
        r.finish();
        assert_eq!(
            prefetch_list::load(&d.path().join("list"))
                .unwrap()
                .unwrap()
                .len(),
            4
        );
    }

    #[test]
    fn nothing_is_recorded_after_the_window_and_an_empty_list_is_not_written() {
        let d = tempfile::tempdir().unwrap();
        let r = recorder(d.path(), Duration::ZERO);
        r.named(1, b"a", 5);
        r.read(5, 10);
        r.finish();
        assert!(!d.path().join("list").exists());
    }

    #[test]
    fn a_name_loop_is_no_path() {
        let d = tempfile::tempdir().unwrap();
        let r = recorder(d.path(), WINDOW);
        r.named(6, b"a", 5);
        r.named(5, b"b", 6);
        r.read(5, 1);
        r.named(1, b"ok", 7);
        r.read(7, 1);
        r.finish();
        let list = prefetch_list::load(&d.path().join("list"))
            .unwrap()
            .unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].path, b"/ok");
    }
}

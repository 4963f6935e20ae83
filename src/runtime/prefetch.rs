//! Warming the page cache with the container's executable while the rest of the set-up
//! runs. On a fresh squashfuse mount every page the command touches is a FUSE read that
//! decompresses a block; `exec` faults them in one at a time (a 2 MB busybox: ~20 serial
//! reads, ~8 ms). `readahead(2)` queues the whole file at once as asynchronous FUSE reads
//! that the daemon serves while warren builds the mounts, so the command mostly finds its
//! pages ready.
//!
//! For a dynamically linked command the ELF interpreter and the direct libraries follow
//! (found as the loader would by default; each up to [`MAX_BYTES`]): Debian's `ls` 26 →
//! 23 ms for a first container. They follow too when the executable itself is too big to
//! read ahead but not cached: `python3 -c pass` (a 6.8 MB python3) 57.8 → 50.3 ms.
//!
//! Best effort: any failure only means no prefetch.

use super::resolve;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Larger files are not read ahead in line (a larger executable's libraries still are).
/// squashfuse_ll serves one request at a time, so
/// queued reads delay every other FUSE request of the set-up and of `exec`: worth it when
/// the program reads most of its file at start (a 2 MB static busybox: ~4 ms saved), not
/// for a big, sparsely used one (a 6.8 MB python3: 3 ms lost even at a 4 MB cap).
pub const MAX_BYTES: u64 = 2 << 20;

/// The cap beside the set-up ([`Background`]) with warren's own image server, which
/// serves reads on several threads: there a whole python3 is worth reading ahead
/// (`python3 -c pass` 55.3 → 45.9 ms for a first container with 8 MiB against 2).
pub const MAX_BYTES_BESIDE: u64 = 8 << 20;

/// The command to prefetch, as `exec` will find it, and the largest file read ahead.
#[derive(Clone, Copy)]
pub struct Target<'a> {
    pub argv0: &'a str,
    /// The container's PATH.
    pub path: &'a str,
    pub cwd: &'a str,
    pub max_bytes: u64,
}

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

/// What [`start`] did with a file.
#[derive(Debug, PartialEq, Eq)]
pub enum Started {
    /// Reads of all of it were queued.
    Queued,
    /// Not cached, but larger than the cap: not read ahead.
    TooBigCold,
    /// Already in the page cache (a holder's warm mount), or its status unknown.
    Nothing,
}

/// Queue reads of all of `file` unless it is larger than `max_bytes` or already in
/// the page cache; returns at once on FUSE (the daemon answers asynchronously).
pub fn start(file: &OwnedFd, max_bytes: u64) -> Started {
    let Ok(st) = nix::sys::stat::fstat(file) else {
        return Started::Nothing;
    };
    let size = st.st_size as u64;
    if cached(file, &st) {
        return Started::Nothing;
    }
    if size > max_bytes {
        return Started::TooBigCold;
    }
    let mut off = 0;
    while off < size {
        // SAFETY: readahead on a regular file we opened; the result does not matter.
        unsafe { libc::readahead(file.as_raw_fd(), off as i64, STEP as usize) };
        off += STEP;
    }
    Started::Queued
}

/// Warm the page cache with the command `t.argv0` (resolved as [`executable`] does) and,
/// unless it was skipped (too big, or already cached by a warm holder), its loader and
/// libraries. The files stay open in the result: their inodes, and so their pages, stay
/// in the kernel until the caller drops them.
pub fn command(root: &OwnedFd, t: &Target) -> Vec<OwnedFd> {
    executable(root, t.argv0, t.path, t.cwd).map_or_else(Vec::new, |exe| command_of(root, exe, t))
}

/// [`command`] with its executable `exe` already resolved.
pub fn command_of(root: &OwnedFd, exe: OwnedFd, t: &Target) -> Vec<OwnedFd> {
    let mut files = Vec::new();
    if matches!(
        start(&exe, t.max_bytes),
        Started::Queued | Started::TooBigCold
    ) {
        files = dependencies(root, &exe);
        for f in &files {
            start(f, t.max_bytes);
        }
    }
    files.push(exe);
    files
}

/// [`command`] run beside the caller, in a child process: on a fresh image mount every
/// name it resolves and every header it reads is a FUSE round trip (Debian's `true`:
/// ~3 ms), which the caller's own set-up can overlap. A process, not a thread: the
/// set-up calls `unshare(CLONE_NEWNS)` after this, which a process with threads cannot.
pub struct Background(i32);

impl Background {
    /// Fork the child; None (nothing started) when this process has threads, since a
    /// forked child could then not safely allocate, or when the fork fails. The child
    /// dies with this process (SIGKILL as its parent-death signal).
    pub fn start(root: &OwnedFd, t: &Target) -> Option<Background> {
        super::sys::fork_helper(|| drop(command(root, t))).map(Background)
    }

    /// Wait for the child to be done (its reads are queued; the kernel completes them).
    pub fn wait(self) {
        drop(self)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let mut status = 0;
        // SAFETY: waiting for our own child, retried on EINTR.
        while unsafe { libc::waitpid(self.0, &mut status, 0) } < 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
        {}
    }
}

/// Directories searched for a `DT_NEEDED` library (the loader's defaults; the image's
/// ld.so.cache is not read): multiarch first, as Debian and Ubuntu lay them out.
fn lib_dirs() -> Vec<String> {
    lib_dirs_for(std::env::consts::ARCH)
}

/// [`lib_dirs`] on the architecture `arch` (Rust's name for it).
fn lib_dirs_for(arch: &str) -> Vec<String> {
    let mut v = Vec::new();
    let triplet = match arch {
        "x86_64" => Some("x86_64-linux-gnu"),
        "aarch64" => Some("aarch64-linux-gnu"),
        "powerpc64" => Some("powerpc64le-linux-gnu"),
        _ => None,
    };
    if let Some(t) = triplet {
        v.push(format!("/lib/{t}"));
        v.push(format!("/usr/lib/{t}"));
    }
    v.extend(["/lib64", "/usr/lib64", "/lib", "/usr/lib"].map(String::from));
    v
}

/// The ELF interpreter and direct libraries of `exe` (see `elfdeps`), opened inside the
/// root: a dynamically linked command's first reads after `exec` (Debian's `true`: ld.so
/// and libc, ~5 ms of serial page faults on a fresh mount). Reading the headers waits
/// for the executable's first block, which `exec` needs first anyway.
pub fn dependencies(root: &OwnedFd, exe: &OwnedFd) -> Vec<OwnedFd> {
    let Some(deps) = exe
        .try_clone()
        .ok()
        .and_then(|fd| super::elfdeps::read(&std::fs::File::from(fd)))
    else {
        return Vec::new();
    };
    let mut out: Vec<OwnedFd> = deps
        .interp
        .and_then(|i| open_regular(root, Path::new(&i)))
        .into_iter()
        .collect();
    let dirs = lib_dirs();
    for name in deps.needed.iter().filter(|n| !n.contains('/')) {
        if let Some(f) = dirs
            .iter()
            .find_map(|d| open_regular(root, &Path::new(d).join(name)))
        {
            out.push(f);
        }
    }
    out
}

/// True when the first, middle and last bytes of `file` (`st`: its status) are in the
/// page cache (reads that must not wait: `RWF_NOWAIT` fails with EAGAIN otherwise).
/// Overlayfs refuses `RWF_NOWAIT` (EOPNOTSUPP): there the pages of a mapping, which
/// overlayfs maps from the lower file, are asked with `mincore` instead.
fn cached(file: &OwnedFd, st: &libc::stat) -> bool {
    let size = st.st_size as u64;
    size == 0 || residency(file, st, &[0, size / 2, size - 1]) == Some(true)
}

/// Whether the bytes at `probes` (the first one 0) of a non-empty `file` are all in the
/// page cache; None when the kernel cannot be asked truthfully ([`may_ask_residency`]).
fn residency(file: &OwnedFd, st: &libc::stat, probes: &[u64]) -> Option<bool> {
    match read_without_waiting(file, probes[0]) {
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
            may_ask_residency(file, st).then(|| resident(file, st.st_size as u64, probes))
        }
        Err(_) => None,
        Ok(first) => Some(
            first
                && probes[1..]
                    .iter()
                    .all(|&off| matches!(read_without_waiting(file, off), Ok(true))),
        ),
    }
}

/// True only when `file`'s first page is known not to be in the page cache: a warm
/// mount whose caches were dropped since (memory pressure, `drop_caches`). Unknown
/// (the kernel cannot be asked) is not cold.
pub fn known_cold(file: &OwnedFd) -> bool {
    let Ok(st) = nix::sys::stat::fstat(file) else {
        return false;
    };
    st.st_size > 0 && residency(file, &st, &[0]) == Some(false)
}

/// Whether the byte at `off` could be read from the page cache (`RWF_NOWAIT`).
fn read_without_waiting(file: &OwnedFd, off: u64) -> std::io::Result<bool> {
    let mut b = 0u8;
    let iov = libc::iovec {
        iov_base: (&mut b as *mut u8).cast(),
        iov_len: 1,
    };
    // SAFETY: one valid iovec of one byte; the fd is ours.
    match unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, off as i64, libc::RWF_NOWAIT) } {
        n if n < 0 => Err(std::io::Error::last_os_error()),
        n => Ok(n == 1),
    }
}

/// Whether `mincore` tells the truth about `file`'s pages: the kernel answers "all
/// resident" (a side channel closed) for a mapping of a file the caller neither owns
/// (nor has CAP_FOWNER over) nor could open for writing, as the image's files owned
/// by unmapped IDs in the single-ID mode.
fn may_ask_residency(file: &OwnedFd, st: &libc::stat) -> bool {
    // SAFETY: geteuid cannot fail.
    st.st_uid == unsafe { libc::geteuid() } || {
        // SAFETY: faccessat2 on our own fd with an empty path; no memory is written.
        let r = unsafe {
            libc::syscall(
                libc::SYS_faccessat2,
                file.as_raw_fd(),
                c"".as_ptr(),
                libc::W_OK,
                libc::AT_EMPTY_PATH | libc::AT_EACCESS,
            )
        };
        r == 0
    }
}

/// `mincore` of the pages holding `offsets` in a read-only mapping of `file`.
fn resident(file: &OwnedFd, size: u64, offsets: &[u64]) -> bool {
    let Ok(len) = usize::try_from(size) else {
        return false;
    };
    // SAFETY: a new private read-only mapping of our own fd; nothing else refers to it,
    // and it is unmapped below before it could be used for anything but mincore.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            file.as_raw_fd(),
            0,
        )
    };
    if map == libc::MAP_FAILED {
        return false;
    }
    // SAFETY: sysconf has no memory effects.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    let all = offsets.iter().all(|&off| {
        let mut vec = 0u8;
        let at = (off / page * page) as usize;
        // SAFETY: `at` is a page-aligned offset inside the mapping (off < size), one
        // page asked, one status byte written to `vec`.
        let r = unsafe { libc::mincore(map.cast::<u8>().add(at).cast(), 1, &mut vec) };
        r == 0 && vec & 1 == 1
    });
    // SAFETY: unmapping exactly the mapping made above.
    unsafe { libc::munmap(map, len) };
    all
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

    fn target<'a>(argv0: &'a str, path: &'a str) -> Target<'a> {
        Target {
            argv0,
            path,
            cwd: "/",
            max_bytes: MAX_BYTES,
        }
    }

    #[test]
    fn residency_follows_the_page_cache() {
        // On a disk file system (not tmpfs, whose pages cannot be dropped).
        let d = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, vec![7u8; 300_000]).unwrap();
        let f = std::fs::File::open(&p).unwrap();
        f.sync_all().unwrap();
        let fd = OwnedFd::from(f);
        assert!(resident(&fd, 300_000, &[0, 150_000, 299_999]));
        // SAFETY: advice on our own clean file.
        unsafe { libc::posix_fadvise(fd.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert!(!resident(&fd, 300_000, &[0, 150_000, 299_999]));
        let st = nix::sys::stat::fstat(&fd).unwrap();
        assert!(!cached(&fd, &st));
        std::fs::read(&p).unwrap();
        assert!(cached(&fd, &st) && resident(&fd, 300_000, &[299_999]));
    }

    #[test]
    fn command_queues_reads_of_the_resolved_executable() {
        // On a disk file system, with the file's pages dropped first.
        let d = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("usr/bin")).unwrap();
        let p = r.join("usr/bin/tool");
        std::fs::write(&p, vec![7u8; 300_000]).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        let f = std::fs::File::open(&p).unwrap();
        f.sync_all().unwrap();
        let fd = OwnedFd::from(f);
        // SAFETY: advice on our own clean file.
        unsafe { libc::posix_fadvise(fd.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert!(!resident(&fd, 300_000, &[0, 299_999]));
        let root = crate::runtime::userdb::open_root(r).unwrap();
        let files = command(&root, &target("tool", "/none:/usr/bin"));
        assert_eq!(files.len(), 1, "the executable only: not an ELF file");
        // readahead(2) returns once the reads are queued: wait for the disk.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !resident(&fd, 300_000, &[0, 150_000, 299_999]) {
            assert!(std::time::Instant::now() < deadline, "never read");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(command(&root, &target("absent", "/usr/bin")).is_empty());
    }

    #[test]
    fn no_background_child_from_a_process_with_threads() {
        // The test harness runs each test on a thread of its own: a child forked here
        // could deadlock in the allocator, so none is started (the set-up then reads in
        // line).
        let d = tempfile::tempdir().unwrap();
        let root = crate::runtime::userdb::open_root(d.path()).unwrap();
        assert!(!crate::runtime::sys::single_threaded());
        assert!(Background::start(&root, &target("true", "/bin")).is_none());
    }

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
        start(
            &executable(&root, "tool", "/usr/bin", "/").unwrap(),
            MAX_BYTES,
        );
    }

    #[test]
    fn library_dirs_per_architecture() {
        let first = |a: &str| lib_dirs_for(a)[..2].to_vec();
        assert_eq!(
            first("x86_64"),
            ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu"]
        );
        assert_eq!(
            first("aarch64"),
            ["/lib/aarch64-linux-gnu", "/usr/lib/aarch64-linux-gnu"]
        );
        // Without a known multiarch triplet, the classic directories only.
        assert_eq!(
            lib_dirs_for("riscv64"),
            ["/lib64", "/usr/lib64", "/lib", "/usr/lib"]
        );
        assert_eq!(lib_dirs(), lib_dirs_for(std::env::consts::ARCH));
    }

    /// On the host's own architecture (x86_64 or aarch64 alike): the host's dynamic
    /// `/bin/true` must be read, and its loader and libraries found in a root that holds
    /// them where this architecture's loader looks first.
    #[test]
    fn loader_and_libraries_are_found_in_the_root() {
        let f = std::fs::File::open("/bin/true").unwrap();
        let deps = crate::runtime::elfdeps::read(&f).expect("the host's /bin/true is read");
        let interp = deps.interp.expect("the host's /bin/true is dynamic");
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("bin")).unwrap();
        std::fs::copy("/bin/true", r.join("bin/true")).unwrap();
        let mut want = vec![r.join(interp.trim_start_matches('/'))];
        let libdir = lib_dirs()[0].trim_start_matches('/').to_string();
        for n in deps.needed.iter().filter(|n| !n.contains('/')) {
            want.push(r.join(&libdir).join(n));
        }
        assert!(want.len() >= 2, "{want:?}");
        for w in &want {
            std::fs::create_dir_all(w.parent().unwrap()).unwrap();
            std::fs::write(w, "").unwrap();
        }
        let root = crate::runtime::userdb::open_root(r).unwrap();
        let exe = executable(&root, "true", "/bin", "/").unwrap();
        let got: Vec<PathBuf> = dependencies(&root, &exe)
            .iter()
            .map(|f| std::fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd())).unwrap())
            .collect();
        assert_eq!(got, want);
    }

    /// An executable too big to read ahead (python3: 6.8 MB) still has its loader and
    /// libraries read ahead when it is not cached; a cached one (a warm mount) has not.
    #[test]
    fn a_big_cold_executable_still_gets_its_libraries_read() {
        let f = std::fs::File::open("/bin/true").unwrap();
        let deps = crate::runtime::elfdeps::read(&f).expect("the host's /bin/true is read");
        let d = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("bin")).unwrap();
        let exe_path = r.join("bin/big");
        let mut body = std::fs::read("/bin/true").unwrap();
        body.resize(MAX_BYTES as usize + (1 << 20), 0);
        std::fs::write(&exe_path, body).unwrap();
        std::fs::set_permissions(&exe_path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let libdir = lib_dirs()[0].trim_start_matches('/').to_string();
        let mut libs = vec![r.join(deps.interp.unwrap().trim_start_matches('/'))];
        for n in deps.needed.iter().filter(|n| !n.contains('/')) {
            libs.push(r.join(&libdir).join(n));
        }
        for w in &libs {
            std::fs::create_dir_all(w.parent().unwrap()).unwrap();
            std::fs::write(w, "").unwrap();
        }
        let exe = OwnedFd::from(std::fs::File::open(&exe_path).unwrap());
        std::fs::File::open(&exe_path).unwrap().sync_all().unwrap();
        // SAFETY: advice on our own clean file.
        unsafe { libc::posix_fadvise(exe.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        let root = crate::runtime::userdb::open_root(r).unwrap();
        assert_eq!(command(&root, &target("big", "/bin")).len(), libs.len() + 1);
        std::fs::read(&exe_path).unwrap();
        assert_eq!(command(&root, &target("big", "/bin")).len(), 1);
    }
}

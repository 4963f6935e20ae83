//! Thin wrappers over the Linux system calls the runtime issues directly (new mount API,
//! openat2, pidfd, prctl). Each returns `io::Result`; callers add context.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

// The new mount API constants (linux/mount.h); defined here because not every libc
// version exports them.
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x04;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
/// Mount attribute: read-only.
pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
/// Mount attribute: ignore setuid/setgid bits.
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
/// Mount attribute: no device files.
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
/// Mount attribute: no program execution.
pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Turn a -1 return into the thread's errno.
fn check(r: libc::c_long) -> io::Result<libc::c_long> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// A path as a C string (paths with NUL bytes are refused).
pub fn cpath(p: &Path) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// `open_tree(OPEN_TREE_CLONE [| AT_RECURSIVE])`: a detached copy of the mount at `path`.
pub fn open_tree_clone(path: &Path, recursive: bool) -> io::Result<OwnedFd> {
    let c = cpath(path)?;
    let mut flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: c is a valid NUL-terminated string; the kernel returns a new fd or -1.
    let fd =
        check(unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c.as_ptr(), flags) })?;
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `mount_setattr` on a mount fd (optionally recursive): set the given MOUNT_ATTR_* bits.
pub fn mount_setattr(fd: &OwnedFd, set: u64, recursive: bool) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: attr lives for the call and its size is passed; "" with AT_EMPTY_PATH names fd.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })?;
    Ok(())
}

/// `move_mount` of a detached tree onto the object `target` (an O_PATH fd).
pub fn move_mount(tree: &OwnedFd, target: &OwnedFd) -> io::Result<()> {
    // SAFETY: both fds are valid; empty paths with the EMPTY_PATH flags name the fds.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            target.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    })?;
    Ok(())
}

/// `openat2` with `how`.
pub fn openat2(
    dir: RawFd,
    path: &CStr,
    flags: u64,
    mode: u64,
    resolve: u64,
) -> io::Result<OwnedFd> {
    // SAFETY: open_how is plain data; zeroed is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = flags;
    how.mode = mode;
    how.resolve = resolve;
    // EAGAIN: a ".." walk raced with a mount or rename somewhere; the kernel asks to retry.
    let mut tries = 0;
    let fd = loop {
        // SAFETY: how and path are valid for the call; the kernel returns a new fd or -1.
        let r = check(unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir,
                path.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        });
        match r {
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) && tries < 1000 => tries += 1,
            r => break r?,
        }
    };
    // SAFETY: fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `mount(2)` with C strings; `target` may be a `/proc/self/fd/N` magic link.
pub fn mount(
    source: &str,
    target: &Path,
    fstype: &str,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let s = CString::new(source)?;
    let t = cpath(target)?;
    let f = CString::new(fstype)?;
    let d = data.map(CString::new).transpose()?;
    // SAFETY: all pointers are valid NUL-terminated strings (or null for data).
    let r = unsafe {
        libc::mount(
            s.as_ptr(),
            t.as_ptr(),
            f.as_ptr(),
            flags,
            d.as_ref()
                .map_or(std::ptr::null(), |d| d.as_ptr() as *const libc::c_void),
        )
    };
    check(r as libc::c_long).map(|_| ())
}

/// The `/proc/self/fd/N` path naming an open fd (a mount target that cannot be swapped).
pub fn fd_path(fd: &OwnedFd) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// `pidfd_open(pid)`.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; returns a new fd or -1.
    let fd = check(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    // SAFETY: fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Ask for `sig` when the parent thread dies; fails if the parent is already gone.
pub fn die_with_parent(sig: libc::c_int, expected_parent: i32) -> io::Result<()> {
    // SAFETY: prctl with integer arguments.
    check(
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) }
            as libc::c_long,
    )?;
    // SAFETY: getppid cannot fail.
    if unsafe { libc::getppid() } != expected_parent {
        return Err(io::Error::other("parent exited during start"));
    }
    Ok(())
}

/// Close every descriptor of this process from 3 on but those in `keep` (a forked
/// child's first step: nothing of its parent's stays open in it by accident).
pub fn close_all_but(keep: &[RawFd]) {
    let mut keep: Vec<u32> = keep
        .iter()
        .filter(|&&f| f >= 3)
        .map(|&f| f as u32)
        .collect();
    keep.sort_unstable();
    let mut from = 3u32;
    for k in keep.into_iter().chain([u32::MAX]) {
        if k > from {
            // SAFETY: closing a range of this process's descriptors; none is in use by
            // Rust objects the caller still uses (it keeps those in `keep`).
            unsafe { libc::syscall(libc::SYS_close_range, from, k - 1, 0) };
        }
        from = k.saturating_add(1);
    }
}

/// Fork a helper child that runs `body` and exits, and dies with this process (SIGKILL as
/// its parent-death signal); its PID, or None when this process has threads (a forked
/// child could then not safely allocate) or the fork failed.
pub fn fork_helper(body: impl FnOnce()) -> Option<i32> {
    if !single_threaded() {
        return None;
    }
    // SAFETY: getpid cannot fail.
    let me = unsafe { libc::getpid() };
    // SAFETY: this process is single-threaded (checked above): the child may do
    // anything it could, and leaves only through _exit.
    match unsafe { libc::fork() } {
        -1 => None,
        0 => {
            if die_with_parent(libc::SIGKILL, me).is_ok() {
                body();
            }
            // SAFETY: leave the child without running the parent's exit handlers.
            unsafe { libc::_exit(0) }
        }
        pid => Some(pid),
    }
}

/// Whether this process runs one thread (then a forked child may allocate and start
/// threads of its own).
pub fn single_threaded() -> bool {
    std::fs::read_dir("/proc/self/task").is_ok_and(|d| d.count() == 1)
}

/// `pipe2(O_CLOEXEC)` as two owned fds (read, write).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds has room for two descriptors.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } as libc::c_long)?;
    // SAFETY: fresh descriptors we own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Write all of `buf` to a raw fd (EINTR retried).
pub fn write_all(fd: RawFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: buf is valid for buf.len() bytes.
        let n = unsafe { libc::write(fd, buf.as_ptr() as *const libc::c_void, buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

/// Read until EOF from a raw fd (EINTR retried).
pub fn read_to_end(fd: RawFd) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: buf is valid for its length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n as usize]);
    }
}

/// Read exactly one byte; `Ok(None)` at EOF.
pub fn read_byte(fd: RawFd) -> io::Result<Option<u8>> {
    let mut b = [0u8; 1];
    loop {
        // SAFETY: b is valid for one byte.
        let n = unsafe { libc::read(fd, b.as_mut_ptr() as *mut libc::c_void, 1) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        return Ok((n == 1).then_some(b[0]));
    }
}

/// CLOCK_MONOTONIC in nanoseconds (comparable across processes, unlike `Instant`).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Run `child` in a new process that shares this one's memory until it execs or exits,
/// this thread waiting meanwhile (`clone(CLONE_VM | CLONE_VFORK)`, what posix_spawn
/// does): no copy of the address space to make, fault in and tear down again at the
/// exec. Returns the child's PID.
///
/// `child` should end in an exec or `_exit` (if it returns, the process exits with 127),
/// and must not unwind, free or move what the caller owns, nor take locks another
/// thread could hold: the caller must be single-threaded. Its own allocations are fine
/// (the caller is suspended).
pub fn spawn_sharing_memory(child: &mut dyn FnMut()) -> io::Result<i32> {
    const STACK: usize = 256 << 10;
    const GUARD: usize = 4096;
    extern "C" fn start(arg: *mut libc::c_void) -> libc::c_int {
        // SAFETY: `arg` is the `&mut &mut dyn FnMut` below, alive until we exec or exit
        // (CLONE_VFORK suspends its owner until then).
        let f = unsafe { &mut *(arg as *mut &mut dyn FnMut()) };
        f();
        // SAFETY: leave the new process; nothing of the caller's is to be cleaned up.
        unsafe { libc::_exit(127) }
    }
    // SAFETY: a fresh private anonymous mapping, ours alone.
    let stack = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            STACK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
            -1,
            0,
        )
    };
    if stack == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the lowest page of our mapping becomes the guard of the child's stack.
    let r = unsafe { libc::mprotect(stack, GUARD, libc::PROT_NONE) };
    let pid = if r == 0 {
        let mut f: &mut dyn FnMut() = child;
        // SAFETY: the stack is ours and grows down from its end; `start` gets `f`, which
        // outlives the child's use of it (this thread is suspended until the child has
        // exec'd or exited, and only then does clone return here).
        unsafe {
            libc::clone(
                start,
                stack.cast::<u8>().add(STACK).cast(),
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                (&mut f as *mut &mut dyn FnMut()).cast(),
            )
        }
    } else {
        -1
    };
    let err = io::Error::last_os_error();
    // SAFETY: the child no longer runs on it (exec'd or exited), and nothing else does.
    unsafe { libc::munmap(stack, STACK) };
    if pid < 0 {
        Err(err)
    } else {
        Ok(pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait(pid: i32) -> i32 {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status), "status {status:#x}");
        libc::WEXITSTATUS(status)
    }

    #[test]
    fn the_new_process_shares_memory_until_it_exits() {
        // Only async-signal-safe calls in the child: this test's process has threads.
        let mut seen = 0u32;
        let pid = spawn_sharing_memory(&mut || {
            seen = 42;
            // SAFETY: leave the new process.
            unsafe { libc::_exit(3) };
        })
        .unwrap();
        // CLONE_VFORK: the child has exited by the time we are back, its write is ours.
        assert_eq!(seen, 42);
        assert_eq!(wait(pid), 3);
    }

    #[test]
    fn the_new_process_can_exec_and_returning_exits_127() {
        let (prog, arg, env) = (c"/bin/sh", c"sh", [std::ptr::null::<libc::c_char>()]);
        let script = c"exit 5";
        let argv = [
            arg.as_ptr(),
            c"-c".as_ptr(),
            script.as_ptr(),
            std::ptr::null(),
        ];
        let pid = spawn_sharing_memory(&mut || {
            // SAFETY: NULL-terminated arrays of valid C strings.
            unsafe { libc::execve(prog.as_ptr(), argv.as_ptr(), env.as_ptr()) };
        })
        .unwrap();
        assert_eq!(wait(pid), 5);
        let pid = spawn_sharing_memory(&mut || {}).unwrap();
        assert_eq!(wait(pid), 127);
    }
}

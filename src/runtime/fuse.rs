//! Mounting a FUSE file system ourselves and handing the connection to its daemon
//! (`squashfuse_ll`, `fuse-overlayfs`) through libfuse's `/dev/fd/N` mountpoint: no
//! `fusermount3`, no setuid helper, and the daemon lives exactly as long as its parent.
//!
//! Runs in the container's setup process (already inside the user + mount namespace).

use super::sys;
use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The daemon's end of /dev/fuse, always this descriptor number in the daemon.
const DAEMON_FD: i32 = 3;

/// Why `/dev/fuse` cannot be opened, in one line naming it and the fix.
fn device_error(e: io::Error) -> io::Error {
    use std::os::unix::fs::MetadataExt;
    let msg = match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => {
            let mode = std::fs::metadata("/dev/fuse")
                .map(|m| format!(" (mode {:04o})", m.mode() & 0o7777))
                .unwrap_or_default();
            format!("/dev/fuse: permission denied{mode}: an admin must make it 0666 (chmod 0666 /dev/fuse, or a udev rule); see warren doctor")
        }
        Some(libc::ENOENT) | Some(libc::ENODEV) | Some(libc::ENXIO) => format!(
            "/dev/fuse: {e}: the node has no FUSE device (an admin must load the fuse module or create the node); see warren doctor"
        ),
        _ => format!("/dev/fuse: {e}"),
    };
    io::Error::new(e.kind(), msg)
}

/// When the daemon `pid` (a child of this process, `prog` serving `what`) is dead or
/// dies within a moment, one line saying so, to put before `failure` (the error seen by
/// the set-up: a dead daemon shows as "Transport endpoint is not connected"); None while
/// it runs. Waits (at most a second) only when `failure` looks like a lost connection.
/// Reaps the daemon when it is dead.
pub fn daemon_death(pid: i32, what: &str, prog: Option<&Path>, failure: &str) -> Option<String> {
    if pid <= 0 {
        return None;
    }
    let lost = [libc::ENOTCONN, libc::ECONNABORTED]
        .iter()
        .any(|&e| failure.contains(&io::Error::from_raw_os_error(e).to_string()));
    if lost {
        if let Ok(fd) = sys::pidfd_open(pid) {
            let mut p = libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd; a pidfd is readable once its process exited.
            unsafe { libc::poll(&mut p, 1, 1000) };
        }
    }
    let mut status = 0;
    // SAFETY: pid is our child; WNOHANG never blocks.
    if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } != pid {
        return None;
    }
    let how = if libc::WIFEXITED(status) {
        match libc::WEXITSTATUS(status) {
            127 => {
                "could not be executed (exit status 127: not found, or not a program)".to_string()
            }
            c => format!("exited with status {c}"),
        }
    } else if libc::WIFSIGNALED(status) {
        format!("was killed by signal {}", libc::WTERMSIG(status))
    } else {
        return None;
    };
    Some(match prog {
        Some(prog) => format!(
            "{what} ({}) {how} before answering: check that it is a working {what} for FUSE 3 (libfuse 3.3 or later, which accepts /dev/fd/N), e.g. run it by hand; see warren doctor",
            prog.display()
        ),
        // warren's own server (a fork of warren): no program to check.
        None => format!(
            "{what} {how} before answering: check the image with `warren verify`, or try run.image_server = \"squashfuse\""
        ),
    })
}

/// Open `/dev/fuse` and mount a FUSE file system of type `fuse.SUBTYPE` on `target`
/// served through it; returns the connection (the daemon's end).
fn mount_fd(target: &Path, subtype: &str, read_only: bool) -> io::Result<OwnedFd> {
    // SAFETY: open with a constant path; returns a new fd or -1.
    let raw = unsafe { libc::open(c"/dev/fuse".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if raw < 0 {
        return Err(device_error(io::Error::last_os_error()));
    }
    // SAFETY: fresh fd we own.
    let dev = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let data = format!(
        "fd={},rootmode=40000,user_id={uid},group_id={gid},allow_other,default_permissions",
        dev.as_raw_fd()
    );
    let mut flags = libc::MS_NOSUID | libc::MS_NODEV;
    if read_only {
        flags |= libc::MS_RDONLY;
    }
    sys::mount(
        subtype,
        target,
        &format!("fuse.{subtype}"),
        flags,
        Some(&data),
    )?;
    Ok(dev)
}

/// The first steps of a daemon child of the set-up process (`me`): killed when its
/// parent dies, its own process group, deaf to terminal and job-control signals, no
/// signal blocked.
///
/// # Safety
/// Only async-signal-safe calls: fit for a child of `fork`.
unsafe fn daemon_prelude(me: i32) {
    libc::prctl(
        libc::PR_SET_PDEATHSIG,
        libc::SIGKILL as libc::c_ulong,
        0,
        0,
        0,
    );
    if libc::getppid() != me {
        libc::_exit(1);
    }
    // Own process group: Ctrl-C on the terminal must not reach the daemon, and
    // ignored signals stay ignored (libfuse only hooks signals left at default).
    libc::setpgid(0, 0);
    for s in [
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGTSTP,
        libc::SIGTTIN,
        libc::SIGTTOU,
    ] {
        libc::signal(s, libc::SIG_IGN);
    }
    let mut set: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut set);
    libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
}

/// Mount a FUSE file system of type `fuse.SUBTYPE` on `target` and start `prog ARGS…
/// /dev/fd/3` to serve it. Returns the daemon's PID (a child of the caller, killed by
/// SIGKILL when the caller dies, deaf to terminal and job-control signals).
/// `keep_caps`: the daemon keeps the caller's capabilities in the namespace (ambient), as
/// fuse-overlayfs needs them to copy owners up when the caller's UID is not 0.
pub fn mount_with_daemon(
    target: &Path,
    subtype: &str,
    read_only: bool,
    keep_caps: bool,
    prog: &Path,
    args: &[&OsStr],
) -> io::Result<i32> {
    let dev = mount_fd(target, subtype, read_only)?;

    // Everything the child needs is prepared before fork: no allocation after it.
    let cprog = sys::cpath(prog)?;
    let mut cargs: Vec<CString> = vec![cprog.clone()];
    for a in args {
        cargs.push(CString::new(a.as_bytes())?);
    }
    cargs.push(CString::new(format!("/dev/fd/{DAEMON_FD}"))?);
    let mut argv: Vec<*const libc::c_char> = cargs.iter().map(|c| c.as_ptr()).collect();
    argv.push(std::ptr::null());
    // SAFETY: getpid cannot fail.
    let me = unsafe { libc::getpid() };
    let last_cap = super::caps::last_cap();

    // SAFETY: the setup process is single-threaded; the child only calls async-signal-safe
    // functions before execv.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: all calls below are async-signal-safe syscalls on valid arguments.
        unsafe {
            daemon_prelude(me);
            // dup2 onto itself keeps FD_CLOEXEC: clear it explicitly in that case.
            if dev.as_raw_fd() == DAEMON_FD {
                libc::fcntl(DAEMON_FD, libc::F_SETFD, 0);
            } else if libc::dup2(dev.as_raw_fd(), DAEMON_FD) < 0 {
                libc::_exit(1);
            }
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            // Quiet: fuse-overlayfs chatters ("unknown argument ignored"); a daemon that
            // fails is named by `daemon_death` when the set-up then fails (ENOTCONN).
            if null >= 0 {
                libc::dup2(null, 0);
                libc::dup2(null, 1);
                libc::dup2(null, 2);
            }
            libc::syscall(libc::SYS_close_range, DAEMON_FD + 1, u32::MAX, 0);
            if keep_caps && super::caps::raise_all_ambient(last_cap).is_err() {
                libc::_exit(1);
            }
            // Without capabilities an execute-only program (runtime::execonly) starts
            // non-dumpable: the container cannot open its /proc/PID/root or /fd.
            if !keep_caps && super::caps::clear().is_err() {
                libc::_exit(1);
            }
            libc::chdir(c"/".as_ptr());
            libc::execv(cprog.as_ptr(), argv.as_ptr());
            libc::_exit(127);
        }
    }
    Ok(pid)
}

/// `fd` moved to a descriptor number of at least 3 (close-on-exec).
pub fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() >= 3 {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC on a valid fd returns a new fd or -1.
    let n = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

/// Mount a read-only FUSE file system of type `fuse.SUBTYPE` on `target` served by a
/// forked copy of this process, named `name`, that runs `serve(connection)` (no exec:
/// warren's own server). The child keeps only the connection and `keep` (each at least 3), drops its capabilities
/// and makes itself non-dumpable before serving (the container cannot open its
/// `/proc/PID/root` or `/fd`, nor ptrace it; docs/security.md); it is killed when the
/// caller dies. Returns its PID, or None (nothing mounted) when this process has other
/// threads (a forked child could then deadlock on their locks): use a daemon instead.
pub fn mount_with_server(
    target: &Path,
    subtype: &str,
    name: &std::ffi::CStr,
    keep: &[BorrowedFd],
    serve: impl FnOnce(OwnedFd) -> i32,
) -> io::Result<Option<i32>> {
    if !sys::single_threaded() {
        return Ok(None);
    }
    let dev = above_stdio(mount_fd(target, subtype, true)?)?;
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    let mut kept: Vec<i32> = keep.iter().map(|f| f.as_raw_fd()).collect();
    kept.push(dev.as_raw_fd());
    // SAFETY: getpid cannot fail.
    let me = unsafe { libc::getpid() };
    // SAFETY: this process is single-threaded (checked above), so the child may do
    // anything this process could.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: plain syscalls on descriptors this process owns.
        unsafe {
            daemon_prelude(me);
            for fd in 0..3 {
                libc::dup2(null.as_raw_fd(), fd);
            }
        }
        // Everything but the connection and `keep` (the image) is closed.
        sys::close_all_but(&kept);
        // SAFETY: plain syscalls on this process.
        unsafe {
            if super::caps::clear().is_err() || libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) != 0
            {
                libc::_exit(1);
            }
            libc::chdir(c"/".as_ptr());
            // Its name in ps and /proc/PID/comm (the kernel truncates to 15 bytes).
            libc::prctl(libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0);
        }
        std::mem::forget(null);
        let code = serve(dev);
        // SAFETY: leaving the child without running the parent's exit handlers.
        unsafe { libc::_exit(code) };
    }
    Ok(Some(pid))
}

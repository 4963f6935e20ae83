//! The set-up process's second life (docs/run.md, "When warren dies"): once the
//! container is prepared, the set-up process forks the command and stays as its small,
//! non-dumpable parent. It is a child subreaper, so every process the command starts
//! stays its descendant; it forwards warren's signals to the command, exits with the
//! command's exit code, and kills every remaining descendant when the command exits or
//! when warren dies (its parent-death signal is [`parent_gone`], which it handles:
//! SIGKILL, the usual choice, would kill it before it could kill the tree).
//!
//! With `--contain` the command's parent is instead a PID namespace's init forked by this
//! process: it mounts the namespace's own /proc and forwards signals the same way, and its
//! exit (or its SIGKILL when this process dies) makes the kernel kill the whole namespace.
//!
//! Front-end only: it changes process-global state (signal mask, subreaper, dumpability).

use super::supervisor::{reap_descendants, FORWARDED};
use crate::runtime::messages::Message;
use crate::runtime::setup::{Prepared, SetupError};
use crate::runtime::{pidns, process, sys};
use std::os::fd::{AsRawFd, OwnedFd};

/// The parent-death signal of the monitor: a real-time signal nothing else sends it.
pub fn parent_gone() -> libc::c_int {
    libc::SIGRTMIN()
}

/// The signals a monitor waits for with `sigwaitinfo` (all blocked while it runs).
fn wait_set() -> libc::sigset_t {
    // SAFETY: sigset operations on a local, initialized set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in FORWARDED.iter().chain(&[libc::SIGCHLD, parent_gone()]) {
            libc::sigaddset(&mut set, *s);
        }
        set
    }
}

/// Set this process's signal mask to `set`; returns the previous mask.
fn set_mask(how: libc::c_int, set: &libc::sigset_t) -> libc::sigset_t {
    // SAFETY: sigprocmask with valid sets.
    unsafe {
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigprocmask(how, set, &mut old);
        old
    }
}

/// Make this process non-dumpable: other processes of the user (a container's among
/// them) cannot open its /proc/PID/root, /fd or /mem, nor ptrace it.
pub fn make_non_dumpable() {
    // SAFETY: prctl with integer arguments on this process.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
}

/// Fork the command and supervise it; never returns once the command's process exists.
/// `parent` is warren's PID; `rep` the report pipe (taken at the fork: kept only by the
/// command until its exec). An error before the fork is returned for the caller to
/// report on the pipe.
pub fn run(
    prepared: Prepared,
    rep: &mut Option<OwnedFd>,
    parent: i32,
    contain: bool,
) -> Result<std::convert::Infallible, SetupError> {
    let fail = |what: &str, e: std::io::Error| SetupError::new(format!("{what}: {e}"));
    let set = wait_set();
    let old_mask = set_mask(libc::SIG_BLOCK, &set);
    // SAFETY: prctl with integer arguments: orphans of the command come back to us.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    sys::die_with_parent(parent_gone(), parent).map_err(|e| fail("watch warren", e))?;
    make_non_dumpable();
    if contain {
        pidns::new_for_children().map_err(|e| fail("--contain", e))?;
    }
    // The child checks through it that we are still there once its own death signal is
    // armed (in a new PID namespace getppid() is 0 and cannot tell).
    // SAFETY: getpid cannot fail.
    let me = unsafe { libc::getpid() };
    let me_fd = sys::pidfd_open(me).map_err(|e| fail("pidfd_open", e))?;
    let Prepared {
        mut exec,
        prefetch,
        recorder,
    } = prepared;
    let rep = rep.take();
    let started = if contain {
        // SAFETY: this process is single-threaded; the child continues below and never
        // returns into the caller's frames (it execs or exits).
        match unsafe { libc::fork() } {
            -1 => Err(std::io::Error::last_os_error()),
            0 => {
                armed_or_exit(&me_fd);
                drop(me_fd);
                init(&mut exec, rep, &set, &old_mask, prefetch)
            }
            pid => Ok(pid),
        }
    } else {
        // The command's process shares our memory until its exec: a fork would copy the
        // set-up's address space only for the exec to tear it down (~0.3 ms a start).
        // What it runs only reads ours, allocates its own, and execs or exits.
        sys::spawn_sharing_memory(&mut || {
            armed_or_exit(&me_fd);
            command(&mut exec, &rep, &old_mask, false)
        })
    };
    let pid = match started {
        Ok(pid) => pid,
        Err(e) => {
            let e = fail("start the command", e);
            report(&rep, e.code, &e.msg);
            return Err(e);
        }
    };
    drop((rep, prefetch, me_fd));
    ignore_terminal_stops();
    let code = supervise(pid, &set, Some(parent));
    if let Some(server) = recorder {
        crate::runtime::sqfs_record::let_write(server);
    }
    reap_descendants();
    // SAFETY: leave the set-up process with the command's code.
    unsafe { libc::_exit(code) };
}

/// In the command's (or init's) new process: the death signal armed, then a check that
/// the monitor had not already gone before it was (its pidfd `me` is readable then).
fn armed_or_exit(me: &OwnedFd) {
    // SAFETY: PDEATHSIG on ourselves.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    if exited(me) {
        // SAFETY: leave the new process at once.
        unsafe { libc::_exit(137) };
    }
}

/// A monitor in the terminal's foreground group must not stop or dump on the terminal's
/// job-control keys (the command gets them itself). Called after the fork: the command
/// keeps the default actions.
fn ignore_terminal_stops() {
    for s in [libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU, libc::SIGQUIT] {
        // SAFETY: setting a signal's disposition to ignore in this process.
        unsafe { libc::signal(s, libc::SIG_IGN) };
    }
}

/// True when the process of `pidfd` has exited (a pidfd is readable then).
fn exited(pidfd: &OwnedFd) -> bool {
    let mut p = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait.
    unsafe { libc::poll(&mut p, 1, 0) == 1 }
}

/// The PID namespace's init (`--contain`): its own /proc, then the command as its child;
/// when the command exits so does init, and with it every process of the namespace.
fn init(
    exec: &mut process::ExecSpec,
    rep: Option<OwnedFd>,
    set: &libc::sigset_t,
    old_mask: &libc::sigset_t,
    prefetch: Vec<OwnedFd>,
) -> ! {
    if let Err(e) = pidns::mount_own_proc() {
        report(&rep, 125, &format!("--contain: {e}"));
        // SAFETY: leave the forked child.
        unsafe { libc::_exit(125) };
    }
    // SAFETY: as in `run`: single-threaded, the child execs or exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        report(&rep, 125, "fork the command in its PID namespace");
        // SAFETY: leave the forked child.
        unsafe { libc::_exit(125) };
    }
    if pid == 0 {
        // SAFETY: PDEATHSIG on ourselves (our parent is this namespace's init).
        unsafe {
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            )
        };
        command(exec, &rep, old_mask, true)
    }
    // Our copy of the report pipe must go for warren to see the command's exec.
    drop((rep, prefetch));
    ignore_terminal_stops();
    let code = supervise(pid, set, None);
    // SAFETY: init's exit kills every process of the namespace.
    unsafe { libc::_exit(code) };
}

/// The command's process: restore the signal mask, then finish and exec. With
/// `contain`, only fds 0-2 reach the command.
fn command(
    exec: &mut process::ExecSpec,
    rep: &Option<OwnedFd>,
    old_mask: &libc::sigset_t,
    contain: bool,
) -> ! {
    set_mask(libc::SIG_SETMASK, old_mask);
    // The death signal must follow the process that waits for us (re-armed by `finish`
    // after the identity change).
    // SAFETY: getppid cannot fail.
    exec.parent = Some(unsafe { libc::getppid() });
    if contain {
        // SAFETY: close_range with constant bounds; CLOEXEC keeps the prefetched files
        // and the report pipe open until the exec itself.
        unsafe {
            libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            )
        };
    }
    let (code, msg) = process::exec(exec);
    report(rep, code, &msg);
    // SAFETY: leave the forked child after a failed exec.
    unsafe { libc::_exit(code) };
}

fn report(rep: &Option<OwnedFd>, code: i32, msg: &str) {
    match rep {
        Some(fd) => {
            let m = [Message::Error {
                code,
                msg: msg.to_string(),
            }];
            let _ = sys::write_all(fd.as_raw_fd(), &Message::encode_all(&m));
        }
        // Past an OCI container's start gate warren no longer listens: the container's
        // own stderr is where the error belongs.
        None => eprintln!("warren: {msg}"),
    }
}

/// Wait for `child` with the signals of `set` blocked: forward warren's signals (not
/// the terminal's, which reach the whole foreground group by themselves), reap every
/// exited descendant, and return the child's exit code. `parent`: when its death is
/// signalled, stop at once (the caller then kills the tree).
fn supervise(child: i32, set: &libc::sigset_t, parent: Option<i32>) -> i32 {
    loop {
        // SAFETY: a zeroed siginfo_t is a valid out-parameter; set is initialized.
        let (sig, info) = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            (libc::sigwaitinfo(set, &mut info), info)
        };
        if sig == libc::SIGCHLD {
            if let Some(code) = reap(child) {
                return code;
            }
        } else if sig == parent_gone() {
            // SAFETY: getppid cannot fail.
            if parent.is_some_and(|p| unsafe { libc::getppid() } != p) {
                return 137;
            }
        } else if sig > 0 && info.si_code != libc::SI_KERNEL {
            // SAFETY: kill on our own child.
            unsafe { libc::kill(child, sig) };
        }
    }
}

/// Reap exited children; the child's exit code once it is among them.
fn reap(child: i32) -> Option<i32> {
    let mut code = None;
    loop {
        let mut status = 0;
        // SAFETY: waiting for any child of ours without blocking.
        let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if r <= 0 {
            return code;
        }
        if r == child {
            code = Some(process::exit_code(status));
        }
    }
}

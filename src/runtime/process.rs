//! The container's process: the last steps before exec in the child (identity,
//! capabilities, no_new_privs, seccomp, PATH search) and, in warren, signal forwarding,
//! waiting, the exit code, and reaping whatever the container left behind.

use super::{caps, seccomp};
use std::ffi::CString;
use std::io;

/// Signals warren forwards to the container's first process.
pub const FORWARDED: [libc::c_int; 6] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGCONT,
];

/// Everything the final exec needs, prepared before pivot_root.
#[derive(Debug, Clone)]
pub struct ExecSpec {
    pub argv: Vec<CString>,
    pub env: Vec<CString>,
    /// PATH inside the container (for the command lookup).
    pub path: String,
    pub cwd: CString,
    pub uid: u32,
    pub gid: u32,
    pub fake_chown: bool,
    /// warren's PID (the death signal is re-armed after the identity change).
    pub parent: i32,
    pub last_cap: u32,
}

/// Finish and exec; returns only on failure, with the exit code to use (126/127/125).
pub fn exec(spec: &ExecSpec) -> (i32, String) {
    // SAFETY: plain credential syscalls on the calling (single-threaded) process.
    unsafe {
        if libc::getgid() != spec.gid && libc::setresgid(spec.gid, spec.gid, spec.gid) != 0 {
            return (
                125,
                format!("setresgid {}: {}", spec.gid, io::Error::last_os_error()),
            );
        }
        if libc::getuid() != spec.uid && libc::setresuid(spec.uid, spec.uid, spec.uid) != 0 {
            return (
                125,
                format!("setresuid {}: {}", spec.uid, io::Error::last_os_error()),
            );
        }
    }
    // Identity changes clear the parent-death signal: arm it again.
    if let Err(e) = super::sys::die_with_parent(libc::SIGKILL, spec.parent) {
        return (125, e.to_string());
    }
    let r = if spec.uid == 0 {
        caps::restrict(&caps::DEFAULT_ROOT, spec.last_cap, false)
    } else {
        caps::restrict(&[], spec.last_cap, true)
    };
    if let Err(e) = r {
        return (125, format!("drop capabilities: {e}"));
    }
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return (125, format!("no_new_privs: {}", io::Error::last_os_error()));
    }
    // SAFETY: cwd is a valid C string.
    if unsafe { libc::chdir(spec.cwd.as_ptr()) } != 0 {
        return (
            125,
            format!(
                "working directory {:?}: {}",
                spec.cwd,
                io::Error::last_os_error()
            ),
        );
    }
    if spec.fake_chown {
        if let Err(e) = seccomp::install() {
            return (125, format!("seccomp filter: {e}"));
        }
    }
    exec_path(spec)
}

fn exec_path(spec: &ExecSpec) -> (i32, String) {
    let Some(arg0) = spec.argv.first() else {
        return (
            125,
            "no command: the image has no Entrypoint/Cmd; give one".into(),
        );
    };
    let mut argv: Vec<*const libc::c_char> = spec.argv.iter().map(|c| c.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = spec.env.iter().map(|c| c.as_ptr()).collect();
    envp.push(std::ptr::null());
    let name = arg0.to_bytes();
    let candidates: Vec<CString> = if name.contains(&b'/') {
        vec![arg0.clone()]
    } else {
        spec.path
            .split(':')
            .filter(|d| !d.is_empty())
            .filter_map(|d| {
                let mut v = d.as_bytes().to_vec();
                v.push(b'/');
                v.extend_from_slice(name);
                CString::new(v).ok()
            })
            .collect()
    };
    let mut denied = false;
    for c in &candidates {
        // SAFETY: argv/envp are NULL-terminated arrays of valid C strings.
        unsafe { libc::execve(c.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        match io::Error::last_os_error().raw_os_error() {
            Some(libc::EACCES) => denied = true,
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => {}
            _ => {
                return (
                    126,
                    format!(
                        "exec {}: {}",
                        c.to_string_lossy(),
                        io::Error::last_os_error()
                    ),
                )
            }
        }
    }
    let what = arg0.to_string_lossy();
    if denied {
        (126, format!("exec {what}: permission denied"))
    } else {
        (
            127,
            format!(
                "exec {what}: not found in the container (PATH={})",
                spec.path
            ),
        )
    }
}

/// Block the forwarded signals and SIGCHLD (before fork); returns the old mask.
pub fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset operations on local, initialized sets.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in FORWARDED.iter().chain(&[libc::SIGCHLD]) {
            libc::sigaddset(&mut set, *s);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &set, &mut old);
        old
    }
}

/// Restore a mask saved by [`block_signals`].
pub fn restore_signals(old: &libc::sigset_t) {
    // SAFETY: old is a valid sigset.
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, old, std::ptr::null_mut()) };
}

/// The shell convention: exit status, or 128+N for a signal.
pub fn exit_code(status: libc::c_int) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        125
    }
}

/// Forward signals to `child` until it exits; returns its exit code. Signals must be
/// blocked (they are consumed with sigwaitinfo).
pub fn wait_forwarding(child: i32) -> i32 {
    // SAFETY: sigset operations and waits on local data; kill on our own child.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in FORWARDED.iter().chain(&[libc::SIGCHLD]) {
            libc::sigaddset(&mut set, *s);
        }
        loop {
            let mut status = 0;
            let r = libc::waitpid(child, &mut status, libc::WNOHANG);
            if r == child {
                return exit_code(status);
            }
            if r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD) {
                return 125;
            }
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let sig = libc::sigwaitinfo(&set, &mut info);
            if sig > 0 && sig != libc::SIGCHLD {
                libc::kill(child, sig);
            }
        }
    }
}

/// After the container's first process exited: kill and reap every remaining
/// descendant (warren is a child subreaper, so orphans and FUSE daemons come back to it).
pub fn reap_descendants() {
    let me = std::process::id();
    let children_file = format!("/proc/{me}/task/{me}/children");
    for _ in 0..1000 {
        let kids: Vec<i32> = std::fs::read_to_string(&children_file)
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        for k in &kids {
            // SAFETY: k is our own child (listed in our children file).
            unsafe { libc::kill(*k, libc::SIGKILL) };
        }
        let mut status = 0;
        // SAFETY: waiting for any child of ours.
        let r = unsafe {
            libc::waitpid(
                -1,
                &mut status,
                if kids.is_empty() { libc::WNOHANG } else { 0 },
            )
        };
        if r < 0 {
            return; // ECHILD: nothing left
        }
        if r == 0 && kids.is_empty() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert_eq!(exit_code(3 << 8), 3);
        assert_eq!(exit_code(libc::SIGTERM), 128 + 15);
    }
}

//! The container's process: the last steps in the container's own process (identity,
//! capabilities, no_new_privs, seccomp: [`finish`]) and the PATH search and exec
//! ([`exec`] = `finish` + exec). A SPANK task_init calls `finish` alone (slurmstepd
//! execs the task). Signal forwarding, waiting and reaping belong to the front end that
//! started the process (the CLI's supervisor), never to the library.

use super::{caps, seccomp};
use std::ffi::CString;
use std::io;

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
    /// The starter's PID whose death must kill the container (the CLI's warren): the
    /// death signal is re-armed after the identity change. None: no such parent.
    pub parent: Option<i32>,
    pub last_cap: u32,
    /// Capability sets the caller asked for (an OCI config); None: warren's (root
    /// inside: the default container set; others: none).
    pub caps: Option<caps::Sets>,
}

/// Finish and exec; returns only on failure, with the exit code to use (126/127/125).
pub fn exec(spec: &ExecSpec) -> (i32, String) {
    if let Err(e) = finish(spec) {
        return e;
    }
    exec_path(spec)
}

/// The last steps without the exec: identity, parent-death signal, capabilities,
/// no_new_privs, working directory, seccomp (fake chown). On failure: (125, message).
pub fn finish(spec: &ExecSpec) -> Result<(), (i32, String)> {
    // A change to a non-zero UID empties the capability sets, CAP_SETPCAP with them:
    // the bounding set must be dropped first.
    let bounding = match &spec.caps {
        Some(s) => Some(caps::bits(s.bounding)),
        None if spec.uid != 0 => Some(vec![]),
        None => None,
    };
    if let Some(keep) = bounding {
        if let Err(e) = caps::drop_bounding(&keep, spec.last_cap) {
            return Err((125, format!("drop capabilities: {e}")));
        }
    }
    if spec.caps.is_some() && spec.uid != 0 {
        // The asked-for sets survive the change to a non-zero UID only so.
        if let Err(e) = caps::keep_caps() {
            return Err((125, format!("keep capabilities: {e}")));
        }
    }
    // SAFETY: plain credential syscalls on the calling (single-threaded) process.
    unsafe {
        if libc::getgid() != spec.gid && libc::setresgid(spec.gid, spec.gid, spec.gid) != 0 {
            return Err((
                125,
                format!("setresgid {}: {}", spec.gid, io::Error::last_os_error()),
            ));
        }
        if libc::getuid() != spec.uid && libc::setresuid(spec.uid, spec.uid, spec.uid) != 0 {
            return Err((
                125,
                format!("setresuid {}: {}", spec.uid, io::Error::last_os_error()),
            ));
        }
    }
    // Identity changes clear the parent-death signal: arm it again.
    if let Some(parent) = spec.parent {
        if let Err(e) = super::sys::die_with_parent(libc::SIGKILL, parent) {
            return Err((125, e.to_string()));
        }
    }
    let r = if let Some(s) = &spec.caps {
        caps::apply(s, spec.last_cap)
    } else if spec.uid == 0 {
        caps::restrict(&caps::DEFAULT_ROOT, spec.last_cap, false)
    } else {
        caps::clear()
    };
    if let Err(e) = r {
        return Err((125, format!("drop capabilities: {e}")));
    }
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err((125, format!("no_new_privs: {}", io::Error::last_os_error())));
    }
    // SAFETY: cwd is a valid C string.
    if unsafe { libc::chdir(spec.cwd.as_ptr()) } != 0 {
        return Err((
            125,
            format!(
                "working directory {:?}: {}",
                spec.cwd,
                io::Error::last_os_error()
            ),
        ));
    }
    if spec.fake_chown {
        if let Err(e) = seccomp::install() {
            return Err((125, format!("seccomp filter: {e}")));
        }
    }
    Ok(())
}

/// Set the supplementary groups (IDs inside the user namespace, all mapped, with
/// setgroups allowed there). Before the identity change: setresgid/setresuid keep them.
pub fn set_groups(gids: &[u32]) -> Result<(), String> {
    let groups: Vec<nix::unistd::Gid> = gids
        .iter()
        .map(|g| nix::unistd::Gid::from_raw(*g))
        .collect();
    nix::unistd::setgroups(&groups).map_err(|e| format!("setgroups {gids:?}: {e}"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert_eq!(exit_code(3 << 8), 3);
        assert_eq!(exit_code(libc::SIGTERM), 128 + 15);
    }
}

//! `--container-entrypoint`: run the image's entrypoint before the task, as pyxis does.
//!
//! pyxis (0.24, default `--no-container-entrypoint`) starts its container with the
//! image's entrypoint and the command `sh -c 'kill -STOP $$'`: an entrypoint that ends
//! with `exec "$@"` reaches that shell, which stops itself; pyxis then takes the stopped
//! process's environment and working directory for the task, and lets it exit. The
//! entrypoint's output is hidden unless `--container-entrypoint-log`.
//!
//! Here the same happens in each task, in its own container, after it has entered it
//! (identity, capabilities, mounts all final): [`run`] forks, execs the entrypoint with
//! that command, waits until it stops, reads `/proc/PID/environ` and `/proc/PID/cwd`,
//! resumes it and reaps it. What the entrypoint changed in the environment
//! ([`env_delta`]) goes into the job environment; its working directory becomes the
//! task's unless `--container-workdir` is given.

use crate::task::always_host;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The command the entrypoint gets (it must `exec "$@"` to reach it), as pyxis's.
pub const STOP_COMMAND: [&str; 3] = ["sh", "-c", "kill -STOP $$; exit 0"];

/// What the stopped entrypoint left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Its whole environment.
    pub env: Vec<(String, String)>,
    /// Its working directory (a path in the container).
    pub cwd: Option<PathBuf>,
}

/// Pure: what the entrypoint set or changed, as job environment changes: not the shell's
/// own bookkeeping, not Slurm's per-task variables, not the ones `--container-env` keeps.
pub fn env_delta(
    before: &[(String, String)],
    after: &[(String, String)],
    keep_host: &[String],
) -> Vec<(String, String)> {
    after
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "PWD" | "OLDPWD" | "SHLVL" | "_"))
        .filter(|(k, _)| !always_host(k) && !keep_host.iter().any(|h| h == k))
        .filter(|(k, v)| !before.iter().any(|(bk, bv)| bk == k && bv == v))
        .cloned()
        .collect()
}

/// Pure: `NAME=VALUE\0…` (a /proc environ file) as pairs.
pub fn parse_environ(bytes: &[u8]) -> Vec<(String, String)> {
    bytes
        .split(|&b| b == 0)
        .filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            kv.split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// The entrypoint's program: a path as is, else the first executable file of that name
/// in `path` (the container's PATH; we are in the container's root).
fn resolve(prog: &str, path: &str) -> Option<PathBuf> {
    if prog.contains('/') {
        return Some(PathBuf::from(prog));
    }
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(prog))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

fn cstrings<'a>(v: impl Iterator<Item = &'a str>) -> Result<Vec<CString>, String> {
    v.map(|s| {
        CString::new(s).map_err(|_| "a NUL byte in the entrypoint or environment".to_string())
    })
    .collect()
}

/// Run `entrypoint` (non-empty) with `env`; its output goes to the task's stdout/stderr
/// when `log`, else nowhere.
pub fn run(entrypoint: &[String], env: &[(String, String)], log: bool) -> Result<Outcome, String> {
    let what = entrypoint.join(" ");
    let fail = |m: String| format!("warren: the image's entrypoint ({what}): {m}");
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map_or(warren::runtime::setup::DEFAULT_PATH, |(_, v)| v.as_str());
    let prog = resolve(&entrypoint[0], path)
        .ok_or_else(|| fail(format!("{} not found in PATH {path}", entrypoint[0])))?;
    let prog = CString::new(prog.as_os_str().as_bytes()).map_err(|_| fail("NUL byte".into()))?;
    let argv = cstrings(
        entrypoint
            .iter()
            .map(String::as_str)
            .chain(STOP_COMMAND.iter().copied()),
    )
    .map_err(fail)?;
    let envp_s: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let envp = cstrings(envp_s.iter().map(String::as_str)).map_err(fail)?;
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|c| c.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut envp_p: Vec<*const libc::c_char> = envp.iter().map(|c| c.as_ptr()).collect();
    envp_p.push(std::ptr::null());
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| fail(format!("/dev/null: {e}")))?;
    use std::os::fd::AsRawFd;
    let null_fd = null.as_raw_fd();
    // SAFETY: the task process is single-threaded (slurmstepd forked it); the child only
    // makes async-signal-safe calls on data prepared above, then execs or _exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(fail(format!("fork: {}", std::io::Error::last_os_error())));
    }
    if pid == 0 {
        // SAFETY: in the child: dup2/prctl/execve/_exit on valid descriptors and
        // NULL-terminated arrays of valid C strings.
        unsafe {
            // A task killed meanwhile must not leave its entrypoint stopped for ever.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            libc::dup2(null_fd, 0);
            if !log {
                libc::dup2(null_fd, 1);
                libc::dup2(null_fd, 2);
            }
            libc::execve(prog.as_ptr(), argv_p.as_ptr(), envp_p.as_ptr());
            libc::_exit(127);
        }
    }
    drop(null);
    let wait = |flags: libc::c_int| -> Result<libc::c_int, String> {
        let mut status = 0;
        loop {
            // SAFETY: waiting for our own child.
            let r = unsafe { libc::waitpid(pid, &mut status, flags) };
            if r == pid {
                return Ok(status);
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(fail(format!("wait: {e}")));
            }
        }
    };
    let status = wait(libc::WUNTRACED)?;
    if !libc::WIFSTOPPED(status) {
        let how = if libc::WIFEXITED(status) {
            format!("exit code {}", libc::WEXITSTATUS(status))
        } else {
            format!("signal {}", libc::WTERMSIG(status))
        };
        return Err(fail(format!(
            "ended ({how}) without running the command (it must end with exec \"$@\"); try --no-container-entrypoint"
        )));
    }
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let environ = std::fs::read(proc.join("environ"));
    let cwd = std::fs::read_link(proc.join("cwd")).ok();
    // SAFETY: resuming and then reaping our own stopped child.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    wait(0)?;
    let environ = environ.map_err(|e| fail(format!("read its environment: {e}")))?;
    Ok(Outcome {
        env: parse_environ(&environ),
        cwd,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn delta_is_what_the_entrypoint_changed() {
        let before = pairs(&[("PATH", "/bin"), ("A", "1"), ("KEEP", "host")]);
        let after = pairs(&[
            ("PATH", "/opt/bin:/bin"),
            ("A", "1"),
            ("NEW", "x"),
            ("KEEP", "changed"),
            ("PWD", "/w"),
            ("SHLVL", "1"),
            ("_", "/bin/sh"),
            ("SLURM_PROCID", "9"),
        ]);
        assert_eq!(
            env_delta(&before, &after, &["KEEP".to_string()]),
            pairs(&[("PATH", "/opt/bin:/bin"), ("NEW", "x")])
        );
    }

    #[test]
    fn environ_files() {
        assert_eq!(
            parse_environ(b"A=1\0B=x=y\0=bad\0NOEQ\0\0"),
            pairs(&[("A", "1"), ("B", "x=y")])
        );
    }

    proptest::proptest! {
        #[test]
        fn environ_never_panics_and_round_trips(
            pairs in proptest::collection::vec(("[A-Za-z_][A-Za-z0-9_]{0,8}", "[ -~]{0,12}"), 0..6),
            junk in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
        ) {
            let _ = parse_environ(&junk);
            let bytes: Vec<u8> = pairs
                .iter()
                .flat_map(|(k, v)| format!("{k}={v}\0").into_bytes())
                .collect();
            proptest::prop_assert_eq!(parse_environ(&bytes), pairs);
        }
    }

    #[test]
    fn runs_until_the_command_and_reads_what_it_left() {
        // A real shell as the entrypoint: exports, changes directory, execs "$@".
        let ep = [
            "/bin/sh".to_string(),
            "-c".to_string(),
            "export EP=set; cd /tmp; exec \"$@\"".to_string(),
            "ep".to_string(),
        ];
        let env = pairs(&[("PATH", "/usr/bin:/bin")]);
        let o = run(&ep, &env, false).unwrap();
        assert!(o.env.contains(&("EP".to_string(), "set".to_string())));
        assert_eq!(o.cwd.as_deref(), Some(Path::new("/tmp")));
        let e = run(
            &["/bin/sh".into(), "-c".into(), "exit 3".into()],
            &env,
            false,
        )
        .unwrap_err();
        assert!(e.contains("exit code 3"), "{e}");
        assert!(run(&["no-such-program-here".into()], &env, false)
            .unwrap_err()
            .contains("not found"));
    }
}

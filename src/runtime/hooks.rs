//! OCI hooks: run one hook with the container's state JSON on its stdin, its own `env`
//! only, and its `timeout`; what it writes to stderr is kept (the last
//! [`MAX_STDERR`] bytes) for the error when it fails. A hook "in the container" (createContainer) is found in the
//! runtime's mount namespace and run in the container's user and mount namespaces
//! (joined through a pidfd of the container's process).

use super::bundle::Hook;
use std::io::{Read, Seek, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A hook that failed: `phase[index] path: why`, one line; its stderr apart (a front end
/// shows it under the line).
#[derive(Debug, thiserror::Error)]
#[error("hook {phase}[{index}] {path}: {why}")]
pub struct HookError {
    pub phase: &'static str,
    pub index: usize,
    pub path: String,
    pub why: String,
    /// The end of what the hook wrote to stderr (lossy UTF-8, trailing newline trimmed).
    pub stderr: String,
}

/// How much of a hook's stderr is kept.
pub const MAX_STDERR: usize = 16 << 10;

/// Run `hooks` of `phase` in order; the first failure stops them.
pub fn run_all(
    phase: &'static str,
    hooks: &[Hook],
    state: &[u8],
    enter: Option<&OwnedFd>,
) -> Result<(), HookError> {
    run_each(phase, hooks, state, enter, &[])
}

/// Open the hooks' executables now (before this process's root changes), for
/// [`run_all_opened`].
pub fn open_exes(phase: &'static str, hooks: &[Hook]) -> Result<Vec<OwnedFd>, HookError> {
    hooks
        .iter()
        .enumerate()
        .map(|(index, h)| {
            open_exe(&h.path).map_err(|why| HookError {
                phase,
                index,
                path: h.path.display().to_string(),
                why,
                stderr: String::new(),
            })
        })
        .collect()
}

/// [`run_all`] with executables opened earlier by [`open_exes`] (a Slurm task runs its
/// createContainer hooks after its pivot_root, where the host paths no longer resolve).
pub fn run_all_opened(
    phase: &'static str,
    hooks: &[Hook],
    exes: &[OwnedFd],
    state: &[u8],
) -> Result<(), HookError> {
    run_each(phase, hooks, state, None, exes)
}

fn open_exe(path: &std::path::Path) -> Result<OwnedFd, String> {
    // Not O_CLOEXEC: the hook is exec'd as /proc/self/fd/N, and a script's interpreter
    // opens that path after the exec.
    nix::fcntl::open(
        path,
        nix::fcntl::OFlag::O_RDONLY,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| e.to_string())
}

fn run_each(
    phase: &'static str,
    hooks: &[Hook],
    state: &[u8],
    enter: Option<&OwnedFd>,
    exes: &[OwnedFd],
) -> Result<(), HookError> {
    // In the container's namespaces a hook is the container's root when the user
    // namespace maps 0 (as crun and rootless podman run them): NVIDIA's hooks write
    // into the image's /usr/lib and /dev. It never has more than the user's IDs.
    let as_root = phase == "createContainer";
    for (index, h) in hooks.iter().enumerate() {
        run(h, state, enter, exes.get(index), as_root).map_err(|(why, stderr)| HookError {
            phase,
            index,
            path: h.path.display().to_string(),
            why,
            stderr,
        })?;
    }
    Ok(())
}

/// Keep reading `r` into a buffer holding its last [`MAX_STDERR`] bytes (a thread: a
/// hook's children may keep the pipe open after the hook is killed, so nobody joins it).
fn collect(mut r: impl Read + Send + 'static) -> Arc<Mutex<Vec<u8>>> {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let b = buf.clone();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = r.read(&mut chunk) {
            if n == 0 {
                break;
            }
            let Ok(mut v) = b.lock() else { break };
            v.extend_from_slice(&chunk[..n]);
            if v.len() > MAX_STDERR {
                let cut = v.len() - MAX_STDERR;
                v.drain(..cut);
            }
        }
    });
    buf
}

fn run(
    h: &Hook,
    state: &[u8],
    enter: Option<&OwnedFd>,
    opened: Option<&OwnedFd>,
    as_root: bool,
) -> Result<(), (String, String)> {
    let mut stderr = None;
    let r = run_inner(h, state, enter, opened, as_root, &mut stderr);
    // Let the reader drain what the hook wrote and end (at most 100 ms: a hook's
    // background child may hold the pipe). Also on success: the caller may fork next
    // (a Slurm task, a container's monitor), better with no other thread running.
    let text = stderr
        .map(|b: Arc<Mutex<Vec<u8>>>| {
            for _ in 0..50 {
                if Arc::strong_count(&b) == 1 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            let v = b.lock().map(|v| v.clone()).unwrap_or_default();
            String::from_utf8_lossy(&v).trim_end().to_string()
        })
        .unwrap_or_default();
    r.map_err(|why| (why, text))
}

fn run_inner(
    h: &Hook,
    state: &[u8],
    enter: Option<&OwnedFd>,
    opened: Option<&OwnedFd>,
    as_root: bool,
    stderr: &mut Option<Arc<Mutex<Vec<u8>>>>,
) -> Result<(), String> {
    // Inside the container the path no longer resolves: open it here and exec the
    // descriptor (kept open across the fork).
    let exe = match enter {
        Some(_) => Some(open_exe(&h.path)?),
        None => None,
    };
    let program = match exe.as_ref().or(opened) {
        Some(fd) => format!("/proc/self/fd/{}", fd.as_raw_fd()).into(),
        None => h.path.clone(),
    };
    let mut cmd = Command::new(&program);
    if let Some(a0) = h.args.first() {
        cmd.arg0(a0);
    }
    cmd.args(h.args.iter().skip(1))
        .env_clear()
        .envs(h.env.iter().filter_map(|e| e.split_once('=')))
        .stdin(state_stdin(state).map_err(|e| format!("its stdin: {e}"))?)
        .stderr(Stdio::piped());
    let enter = enter.map(|fd| fd.as_raw_fd());
    if enter.is_some() || as_root {
        // SAFETY: the closure only calls setns and setres[ug]id (async-signal-safe)
        // between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if let Some(raw) = enter {
                    if libc::setns(raw, libc::CLONE_NEWUSER | libc::CLONE_NEWNS) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if as_root {
                    // EINVAL where 0 is not mapped (single-ID): the hook stays the user.
                    if libc::setresgid(0, 0, 0) == 0 {
                        libc::setresuid(0, 0, 0);
                    }
                }
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().map_err(|e| e.to_string())?;
    drop(exe);
    *stderr = child.stderr.take().map(collect);
    let deadline = h
        .timeout
        .map(|t| Instant::now() + Duration::from_secs(t as u64));
    loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => return Ok(()),
            Ok(Some(st)) => return Err(format!("failed ({st})")),
            Ok(None) => {}
            Err(e) => return Err(e.to_string()),
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("timed out after {} s", h.timeout.unwrap_or(0)));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The state as a hook's stdin: an in-memory file, not a pipe. A hook need not read it:
/// writing to a pipe whose hook had exited raised SIGPIPE, which kills a Slurm task
/// (its SIGPIPE is not ignored, as Rust's `main` ignores it), and a state larger than a
/// pipe's buffer blocked the write past the hook's timeout while it did not read.
fn state_stdin(state: &[u8]) -> std::io::Result<std::fs::File> {
    let fd = nix::sys::memfd::memfd_create(c"oci-state", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)?;
    let mut f = std::fs::File::from(fd);
    f.write_all(state)?;
    f.rewind()?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(script: &str, timeout: Option<u32>) -> Hook {
        Hook {
            path: "/bin/sh".into(),
            args: vec!["sh".into(), "-c".into(), script.into()],
            env: vec!["X=1".into()],
            timeout,
        }
    }

    #[test]
    fn state_on_stdin_env_only_its_own_and_order() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        let o = out.display();
        let hs = [
            hook(
                &format!("cat > {o}; echo \" X=$X HOME=${{HOME:-none}}\" >> {o}"),
                None,
            ),
            hook(&format!("echo second >> {o}"), Some(5)),
        ];
        run_all("prestart", &hs, b"{\"id\":\"c\"}", None).unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "{\"id\":\"c\"} X=1 HOME=none\nsecond\n"
        );
    }

    #[test]
    fn failures_stop_the_rest_and_name_the_hook() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("never");
        let hs = [
            hook("exit 3", None),
            hook(&format!("touch {}", out.display()), None),
        ];
        let e = run_all(
            "poststop",
            &[hook("echo no GPU here >&2; exit 3", None)],
            b"{}",
            None,
        )
        .unwrap_err();
        assert_eq!(e.stderr, "no GPU here");
        let e = run_all("poststop", &hs, b"{}", None)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("hook poststop[0] /bin/sh: failed"), "{e}");
        assert!(!out.exists());
        let e = run_all("prestart", &[hook("sleep 5", Some(1))], b"{}", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("timed out"), "{e}");
    }

    #[test]
    fn a_hook_need_not_read_its_state() {
        // A state larger than a pipe's buffer, a hook that never reads it: its timeout
        // still holds (the write to a pipe blocked until the hook exited), and one that
        // exits at once succeeds.
        let state = vec![b' '; 1 << 20];
        let t = Instant::now();
        let e = run_all("prestart", &[hook("sleep 20", Some(1))], &state, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("timed out"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        run_all("prestart", &[hook("exit 0", None)], &state, None).unwrap();
        // And one that reads it gets all of it.
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("n");
        run_all(
            "prestart",
            &[hook(&format!("wc -c > {}", out.display()), None)],
            &state,
            None,
        )
        .unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap().trim(), "1048576");
    }
}

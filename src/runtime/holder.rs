//! Namespace holders: a detached process keeping one user namespace and one mount
//! namespace with an image mounted (squashfuse), so that later containers of the same
//! scope, image and identity join them (setns + a private mount namespace copy + their
//! own overlay) instead of building them.
//!
//! Scope: a holder belongs to whoever started it: `Scope::User` (the CLI: `warren run
//! --holder --name NAME IMAGE`) or `Scope::Job` (the Slurm plugin: one job, optionally
//! one step and name). `find` matches scope + digest + identity, so two jobs of one user
//! with the same image never share or stop each other's holder, and a CLI holder never
//! matches a job lookup nor the reverse. `stop_job` ends a job's holders.
//!
//! Lifetime: until `warren rm NAME` / `stop_job` (SIGTERM), a SIGTERM/SIGINT/SIGHUP from
//! anyone, or reboot. Its squashfuse daemon dies with it (parent-death signal), so
//! containers still running on it lose their image: `warren rm` refuses to stop a holder
//! with joined containers unless `--force`. Its record in `RUNDIR/ctr` is locked while it
//! lives.

use super::spec::{identity_name, RunSpec};
use super::state::{self, Record};
use super::sys;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::os::fd::AsRawFd;
use std::path::Path;

/// Who a container or holder belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Scope {
    /// The user's own (CLI) containers and holders.
    #[default]
    User,
    /// One Slurm job (and optionally one step and name within it).
    Job {
        job_id: u32,
        #[serde(default)]
        step_id: Option<u32>,
        #[serde(default)]
        name: Option<String>,
    },
}

/// A `--job` value that is not `JOB` or `JOB.STEP` (decimal, 32 bits).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("job {0:?}: use JOB or JOB.STEP (decimal numbers, as in SLURM_JOB_ID.SLURM_STEP_ID)")]
pub struct BadJob(pub String);

impl Scope {
    /// Parse `JOB` or `JOB.STEP` (e.g. from `SLURM_JOB_ID`/`SLURM_STEP_ID`) into a job scope.
    pub fn parse_job(s: &str) -> Result<Scope, BadJob> {
        let num = |t: &str| -> Result<u32, BadJob> {
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(BadJob(s.to_string()));
            }
            t.parse().map_err(|_| BadJob(s.to_string()))
        };
        let (job, step) = match s.split_once('.') {
            Some((j, st)) => (num(j)?, Some(num(st)?)),
            None => (num(s)?, None),
        };
        Ok(Scope::Job {
            job_id: job,
            step_id: step,
            name: None,
        })
    }

    /// The job this scope belongs to, if any.
    pub fn job_id(&self) -> Option<u32> {
        match self {
            Scope::User => None,
            Scope::Job { job_id, .. } => Some(*job_id),
        }
    }
}

/// Pure: is `r` a live holder for this scope, digest and identity?
pub fn matches(r: &Record, scope: &Scope, digest: &str, identity: &str) -> bool {
    r.kind == "holder" && r.scope == *scope && r.digest == digest && r.identity == identity
}

/// A live holder for this scope, image digest and identity, if any.
pub fn find(rundir: &Path, scope: &Scope, digest: &str, identity: &str) -> Result<Option<Record>> {
    Ok(state::list(rundir)?
        .into_iter()
        .find(|r| matches(r, scope, digest, identity)))
}

/// Live holders of job `job_id` (any step or name).
pub fn of_job(rundir: &Path, job_id: u32) -> Result<Vec<Record>> {
    Ok(state::list(rundir)?
        .into_iter()
        .filter(|r| r.kind == "holder" && r.scope.job_id() == Some(job_id))
        .collect())
}

/// Live containers that joined the holder `h`.
pub fn joined(rundir: &Path, h: &Record) -> Result<Vec<Record>> {
    let key = h.name.clone().unwrap_or(h.id.clone());
    Ok(state::list(rundir)?
        .into_iter()
        .filter(|r| {
            r.kind == "container" && r.scope == h.scope && r.holder.as_deref() == Some(key.as_str())
        })
        .collect())
}

/// Stop every holder of job `job_id` (SIGTERM, then SIGKILL after `grace_secs`); returns
/// how many were stopped. For the plugin's `slurm_spank_exit`.
pub fn stop_job(rundir: &Path, job_id: u32, grace_secs: u64) -> Result<usize> {
    let hs = of_job(rundir, job_id)?;
    for h in &hs {
        stop(h.pid, grace_secs).with_context(|| format!("stop holder {} of job {job_id}", h.id))?;
    }
    Ok(hs.len())
}

/// Stop process `pid` through a pidfd (no PID-reuse race): SIGTERM, wait up to `secs`,
/// then SIGKILL. A process already gone is success.
pub fn stop(pid: i32, secs: u64) -> Result<()> {
    let fd = match sys::pidfd_open(pid) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(()),
        Err(e) => return Err(e).context("pidfd_open"),
    };
    for (sig, wait_ms) in [(libc::SIGTERM, secs * 1000), (libc::SIGKILL, 5000)] {
        // SAFETY: pidfd_send_signal on a pidfd we hold: no PID-reuse race.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd.as_raw_fd(),
                sig,
                std::ptr::null::<u8>(),
                0,
            )
        };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ESRCH) {
                return Ok(());
            }
            return Err(e).context("signal");
        }
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: pfd is valid for the call; a pidfd is readable once the process exits.
        if unsafe { libc::poll(&mut pfd, 1, wait_ms.min(i32::MAX as u64) as i32) } > 0 {
            return Ok(());
        }
    }
    bail!("process {pid} did not exit")
}

/// The holder process's end of set-up (it is a process of its own, forked for this, so
/// the process-state changes below are its own): record itself, detach, call `ready`
/// (the front end tells its starter), wait for a termination signal, then stop and reap
/// its FUSE daemon `daemon` and exit. Returns only on error (exit code, message).
pub fn serve(
    spec: &RunSpec,
    daemon: i32,
    ready: impl FnOnce(),
) -> Result<std::convert::Infallible, (i32, String)> {
    let rec = Record {
        id: state::new_id(),
        name: spec.name.clone(),
        // SAFETY: getpid cannot fail.
        pid: unsafe { libc::getpid() },
        image: spec.image.clone(),
        digest: spec.digest.clone(),
        command: vec![],
        started: state::now(),
        kind: "holder".into(),
        identity: identity_name(spec.identity).into(),
        holder: None,
        scope: spec.scope.clone(),
    };
    let reg = state::register(&spec.rundir, &rec).map_err(|e| (125, format!("{e:#}")))?;
    // SAFETY: plain process-state syscalls on this holder process: no parent-death signal
    // (the holder outlives its starter), own session, quiet stdio, root as cwd.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, 0, 0, 0, 0);
        libc::setsid();
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            libc::dup2(null, 0);
            libc::dup2(null, 1);
            libc::dup2(null, 2);
            libc::close(null);
        }
        libc::chdir(c"/".as_ptr());
    }
    ready();
    // SAFETY: wait for SIGTERM/SIGINT/SIGHUP with them blocked (in this process only).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let mut sig = 0;
        libc::sigwait(&set, &mut sig);
    }
    reg.remove();
    // Stop and reap the daemon ourselves: once we are gone nobody may reap it.
    // SAFETY: daemon is our child; then exit without running destructors.
    unsafe {
        libc::kill(daemon, libc::SIGKILL);
        libc::waitpid(daemon, std::ptr::null_mut(), 0);
        libc::_exit(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(kind: &str, scope: Scope, digest: &str, identity: &str) -> Record {
        Record {
            id: "0123456789ab".into(),
            name: None,
            pid: 1,
            image: "i".into(),
            digest: digest.into(),
            command: vec![],
            started: 0,
            kind: kind.into(),
            identity: identity.into(),
            holder: None,
            scope,
        }
    }

    fn job(job_id: u32, step_id: Option<u32>) -> Scope {
        Scope::Job {
            job_id,
            step_id,
            name: None,
        }
    }

    #[test]
    fn scopes_never_cross() {
        let d = "sha256:a";
        let user = rec("holder", Scope::User, d, "keep-id");
        let j1 = rec("holder", job(1, None), d, "keep-id");
        assert!(matches(&user, &Scope::User, d, "keep-id"));
        assert!(!matches(&user, &job(1, None), d, "keep-id"));
        assert!(!matches(&j1, &Scope::User, d, "keep-id"));
        assert!(!matches(&j1, &job(2, None), d, "keep-id"));
        assert!(!matches(&j1, &job(1, Some(0)), d, "keep-id"));
        assert!(matches(&j1, &job(1, None), d, "keep-id"));
        assert!(!matches(&j1, &job(1, None), "sha256:b", "keep-id"));
        assert!(!matches(&j1, &job(1, None), d, "remap-root"));
        assert!(!matches(
            &rec("container", job(1, None), d, "keep-id"),
            &job(1, None),
            d,
            "keep-id"
        ));
    }

    #[test]
    fn job_values() {
        assert_eq!(Scope::parse_job("42").unwrap(), job(42, None));
        assert_eq!(Scope::parse_job("42.7").unwrap(), job(42, Some(7)));
        for bad in [
            "",
            ".",
            "1.",
            ".1",
            "-1",
            "+1",
            "1.2.3",
            "x",
            "4294967296",
            " 1",
            "1 ",
        ] {
            assert!(Scope::parse_job(bad).is_err(), "{bad:?}");
        }
        let e = Scope::parse_job("a\nb").unwrap_err().to_string();
        assert!(!e.contains('\n') && e.contains("JOB.STEP"), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn job_values_round_trip(j in proptest::prelude::any::<u32>(), st in proptest::option::of(proptest::prelude::any::<u32>())) {
            let text = match st { Some(x) => format!("{j}.{x}"), None => j.to_string() };
            proptest::prop_assert_eq!(Scope::parse_job(&text).unwrap(), job(j, st));
        }

        #[test]
        fn any_text_parses_or_fails_cleanly(s in ".{0,24}") {
            match Scope::parse_job(&s) {
                // Accepted: decimal digits with at most one '.', nothing else.
                Ok(_) => proptest::prop_assert!(
                    s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                        && s.bytes().filter(|&b| b == b'.').count() <= 1
                ),
                // Refused: one line naming the value.
                Err(e) => proptest::prop_assert!(!e.to_string().contains('\n')),
            }
        }
    }

    #[test]
    fn scope_serde_and_old_records() {
        let s = job(7, Some(2));
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Scope>(&text).unwrap(), s);
        // Records written before scopes existed are the user's.
        let old = r#"{"id":"x","name":null,"pid":1,"image":"i","digest":"d","command":[],"started":0,"kind":"holder"}"#;
        assert_eq!(
            serde_json::from_str::<Record>(old).unwrap().scope,
            Scope::User
        );
    }

    #[test]
    fn job_holders_found_by_job_and_stopped_alone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("ctr")).unwrap();
        // Two live records (locked by this process) of jobs 1 and 2, same image and name.
        let mut r1 = rec("holder", job(1, None), "sha256:a", "keep-id");
        r1.name = Some("h".into());
        // PIDs that are surely not running: stop() of a gone process is success.
        r1.pid = i32::MAX - 1;
        let mut r2 = r1.clone();
        r2.id = state::new_id();
        r2.scope = job(2, None);
        r1.id = state::new_id();
        let g1 = state::register(dir.path(), &r1).unwrap();
        let g2 = state::register(dir.path(), &r2).unwrap();
        // Same name in the same scope is refused.
        let mut dup = r1.clone();
        dup.id = state::new_id();
        assert!(state::register(dir.path(), &dup).is_err());
        assert_eq!(of_job(dir.path(), 1).unwrap(), vec![r1.clone()]);
        assert_eq!(
            find(dir.path(), &job(2, None), "sha256:a", "keep-id").unwrap(),
            Some(r2.clone())
        );
        assert_eq!(
            find(dir.path(), &Scope::User, "sha256:a", "keep-id").unwrap(),
            None
        );
        assert_eq!(stop_job(dir.path(), 1, 0).unwrap(), 1);
        assert_eq!(stop_job(dir.path(), 3, 0).unwrap(), 0);
        g1.remove();
        g2.remove();
    }
}

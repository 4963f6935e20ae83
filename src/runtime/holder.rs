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
//! Shared image mounts (`Record::idle` set): the CLI starts a holder on demand for the
//! first `warren run` of an image and identity, and later runs join it without any flag
//! (docs/run.md, "Shared image mounts"). It ends by itself `idle` seconds after its last
//! container ended.
//!
//! Lifetime: until `warren rm NAME` / `stop_job` (SIGTERM), a SIGTERM/SIGINT/SIGHUP from
//! anyone, its idle deadline (shared mounts), or reboot. Its squashfuse daemon dies with
//! it (parent-death signal), so containers still running on it would lose their image:
//! that is why every joined container holds a **use lock** for its whole life, an OFD
//! read lock on the holder's record file ([`use_holder`]; independent of the record's
//! `flock` liveness lock, local file systems only). A holder ends on idle, and `warren
//! rm` stops one, only under the write lock ([`stop_if_unused`]): never under a running
//! container, and a joiner waiting for its read lock then finds the record unlinked and
//! starts or joins another. Its record in `RUNDIR/ctr` is locked while it lives; its
//! mtime is the last time a container used it.

use super::spec::{identity_name, RunSpec};
use super::state::{self, Record};
use super::sys;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
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

/// Pure: the share key of an ID map: a joiner's user namespace is the holder's, so its
/// maps must be equal (the identity name alone does not say which ranges are mapped).
pub fn share_key(map: &super::idmap::IdMap) -> String {
    let ext = |v: &[super::idmap::Extent]| {
        v.iter()
            .map(|e| format!("{}:{}:{}", e.inside, e.outside, e.count))
            .collect::<Vec<_>>()
            .join(",")
    };
    format!("u={};g={}", ext(&map.uid), ext(&map.gid))
}

/// Pure: may a container of this scope, digest, identity and key join holder `r`?
/// A record without a key (older versions) matches by identity alone, as before.
pub fn matches_key(r: &Record, scope: &Scope, digest: &str, identity: &str, key: &str) -> bool {
    matches(r, scope, digest, identity) && (r.key.is_empty() || r.key == key)
}

/// A live holder a container of this scope, digest, identity and key may join.
pub fn find_keyed(
    rundir: &Path,
    scope: &Scope,
    digest: &str,
    identity: &str,
    key: &str,
) -> Result<Option<Record>> {
    Ok(state::list(rundir)?
        .into_iter()
        .find(|r| matches_key(r, scope, digest, identity, key)))
}

/// One OFD lock operation on the first byte of `fd` (`F_OFD_SETLK`/`SETLKW`/`GETLK`).
/// Returns the lock structure (for `GETLK`: the conflicting lock's type, or `F_UNLCK`).
fn ofd_lock(fd: RawFd, cmd: libc::c_int, kind: libc::c_int) -> std::io::Result<libc::c_short> {
    // SAFETY: flock is a plain C struct; all-zero is valid (pid must be 0 for OFD locks).
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = 0;
    fl.l_len = 1;
    loop {
        // SAFETY: fcntl with a valid fd and a pointer to a live flock struct.
        if unsafe { libc::fcntl(fd, cmd, &mut fl) } == 0 {
            return Ok(fl.l_type);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Set the file's mtime to now: "a container used this holder".
fn touch(f: &File) {
    // SAFETY: futimens with a NULL times pointer sets both times to now on an open fd.
    unsafe { libc::futimens(f.as_raw_fd(), std::ptr::null()) };
}

/// A joined container's hold on a holder: the use lock (kept by the container's
/// processes for their whole life: the fd is inherited by the set-up process and the
/// monitor, closed at exec) and a pidfd of the holder.
pub struct Use {
    file: File,
    pub pidfd: OwnedFd,
    pub record: Record,
}

impl Use {
    /// The use-lock fd (for a front end that must keep it across a fork).
    pub fn lock_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// The container ended: record the time of last use and drop the lock. A shared
    /// mount with no idle time (`run.shared_mount_idle = 0`) ends now unless another
    /// container uses it (the last one out stops it, and waits for it).
    pub fn finish(self, rundir: &Path) -> Result<()> {
        touch(&self.file);
        let Use { file, record, .. } = self;
        drop(file);
        if record.idle == Some(0) {
            stop_if_unused(rundir, &record, 5, false)?;
        }
        Ok(())
    }
}

/// A holder's record opened for its OFD locks; `None` when it is gone (the holder ended).
fn open_record(path: &Path) -> Result<Option<File>> {
    match OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("open {}", path.display())),
    }
}

/// Take a use lock on holder `h` (waiting while someone holds the write lock: a holder
/// ending on idle, `warren rm`). `None` when the holder ended meanwhile (its record was
/// unlinked, or is stale): look again.
pub fn use_holder(rundir: &Path, h: &Record) -> Result<Option<Use>> {
    let path = state::record_path(rundir, &h.id);
    let Some(file) = open_record(&path)? else {
        return Ok(None);
    };
    ofd_lock(file.as_raw_fd(), libc::F_OFD_SETLKW, libc::F_RDLCK)
        .with_context(|| format!("use lock on {}", path.display()))?;
    if file.metadata().map_or(0, |m| m.nlink()) == 0 {
        return Ok(None);
    }
    let pidfd = match sys::pidfd_open(h.pid) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("holder pid {}", h.pid)),
    };
    // The record still locked after the pidfd exists: the PID is the holder's, not reused.
    if !state::is_live(rundir, &h.id) {
        return Ok(None);
    }
    touch(&file);
    Ok(Some(Use {
        file,
        pidfd,
        record: h.clone(),
    }))
}

/// Is holder `h` in use (a container holds its use lock)?
pub fn in_use(rundir: &Path, h: &Record) -> bool {
    let Ok(f) = File::open(state::record_path(rundir, &h.id)) else {
        return false;
    };
    ofd_lock(f.as_raw_fd(), libc::F_OFD_GETLK, libc::F_WRLCK)
        .is_ok_and(|t| t != libc::F_UNLCK as libc::c_short)
}

/// Unix time (seconds) at which a shared holder `h` ends if nobody uses it meanwhile
/// (`None`: not a shared holder).
pub fn idle_deadline(rundir: &Path, h: &Record) -> Option<u64> {
    let idle = h.idle?;
    let mtime = std::fs::metadata(state::record_path(rundir, &h.id))
        .map_or(h.started, |m| m.mtime().max(0) as u64);
    // In seconds: a record created late in its start second reads as used (the deadline
    // is then at most FIRST_USE_GRACE early for a holder nobody joined).
    Some(deadline(h.started, mtime, idle, FIRST_USE_GRACE))
}

/// A started holder nobody joined yet waits at least this long (its starter joins it
/// within milliseconds; a starter killed meanwhile leaves it to end by itself).
pub const FIRST_USE_GRACE: u64 = 5;

/// Pure: when a shared holder created at `created` and last used at `last_use` ends,
/// with `idle` of idle time and `grace` before a first use (all in one unit).
pub fn deadline(created: u64, last_use: u64, idle: u64, grace: u64) -> u64 {
    if last_use > created {
        last_use + idle
    } else {
        created + idle.max(grace)
    }
}

/// Stop holder `h` unless a container uses it, atomically: under its write lock, so no
/// container joins meanwhile (joiners wait, then find it gone). Returns whether it was
/// stopped (`false`: in use). `force` stops it even then (its containers lose their image).
pub fn stop_if_unused(rundir: &Path, h: &Record, grace_secs: u64, force: bool) -> Result<bool> {
    let path = state::record_path(rundir, &h.id);
    let Some(file) = open_record(&path)? else {
        return Ok(true); // already gone: stopped
    };
    match ofd_lock(file.as_raw_fd(), libc::F_OFD_SETLK, libc::F_WRLCK) {
        Ok(_) => {}
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) => {
            if !force {
                return Ok(false);
            }
        }
        Err(e) => return Err(e).with_context(|| format!("lock {}", path.display())),
    }
    stop(h.pid, grace_secs)?;
    drop(file);
    Ok(true)
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
///
/// With `idle` (a shared image mount) it also ends by itself once no container has used
/// it for `idle` seconds (see [`deadline`]), checking its use lock at most every second.
pub fn serve(
    spec: &RunSpec,
    daemon: i32,
    recording: bool,
    reader: Option<i32>,
    idle: Option<u64>,
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
        idle,
        key: share_key(&spec.map),
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
    // SAFETY: block SIGTERM/SIGINT/SIGHUP (in this process only) to wait for them below;
    // SIGCHLD too while the prefetch list's reader (`reader`) runs: it is reaped.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        if reader.is_some() {
            libc::sigaddset(&mut set, libc::SIGCHLD);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    ready();
    // It outlives its starter: keep none of the starter's descriptors (a caller waiting
    // for EOF on an inherited pipe would wait for the holder's end), only the record.
    sys::close_all_but(&[reg.file.as_raw_fd()]);
    let reap = || {
        if let Some(pid) = reader {
            // SAFETY: reaping our own child (only it: the daemon is killed and reaped
            // below, by its PID).
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
        }
    };
    match idle {
        None => loop {
            let mut sig = 0;
            // SAFETY: waiting for a blocked signal of the set.
            unsafe { libc::sigwait(&set, &mut sig) };
            if sig != libc::SIGCHLD {
                break;
            }
            reap();
        },
        Some(idle) => wait_idle(&reg.file, rec.started, idle, &set, &reap),
    }
    // Under the write lock when idle (kept until exit): joiners waiting for their use
    // lock see the record unlinked.
    reg.remove();
    // Stop and reap the daemon ourselves: once we are gone nobody may reap it. One
    // that records the image's prefetch list writes it first.
    if recording {
        super::sqfs_record::let_write(daemon);
    }
    // SAFETY: daemon is our child; then exit without running destructors.
    unsafe {
        libc::kill(daemon, libc::SIGKILL);
        libc::waitpid(daemon, std::ptr::null_mut(), 0);
        libc::_exit(0)
    }
}

/// Pure: how long a shared holder sleeps before it looks at its use lock again: until
/// its deadline, but at most a second (a container may have come and gone meanwhile).
pub fn next_check(now_ms: u64, deadline_ms: u64) -> u64 {
    deadline_ms.saturating_sub(now_ms).clamp(20, 1000)
}

/// Return once the holder should end: a termination signal of `set` arrived, or nobody
/// used it for `idle` seconds (its record's mtime is the last use; the write lock on
/// `rec` is taken for that check and kept when it ends).
fn wait_idle(rec: &File, started: u64, idle: u64, set: &libc::sigset_t, reap: &dyn Fn()) {
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    };
    let mtime_ms = |f: &File| {
        f.metadata()
            .map(|m| m.mtime().max(0) as u64 * 1000 + m.mtime_nsec().max(0) as u64 / 1_000_000)
            .unwrap_or(started * 1000)
    };
    // The record's own creation: a later mtime is a use.
    let created_ms = mtime_ms(rec);
    let mut wait_ms = 20;
    loop {
        let ts = libc::timespec {
            tv_sec: (wait_ms / 1000) as libc::time_t,
            tv_nsec: ((wait_ms % 1000) * 1_000_000) as libc::c_long,
        };
        // SAFETY: the signals of `set` are blocked; info is a local out-parameter.
        let sig = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::sigtimedwait(set, &mut info, &ts)
        };
        if sig == libc::SIGCHLD {
            reap();
        } else if sig > 0 {
            return;
        }
        match ofd_lock(rec.as_raw_fd(), libc::F_OFD_SETLK, libc::F_WRLCK) {
            Ok(_) => {}
            Err(_) => {
                // In use (or `warren rm` is at it): now counts as used.
                touch(rec);
                wait_ms = 1000.min(idle * 1000).max(20);
                continue;
            }
        }
        let end_ms = deadline(
            created_ms,
            mtime_ms(rec),
            idle * 1000,
            FIRST_USE_GRACE * 1000,
        );
        let now = now_ms();
        if now >= end_ms {
            return;
        }
        let _ = ofd_lock(rec.as_raw_fd(), libc::F_OFD_SETLK, libc::F_UNLCK);
        wait_ms = next_check(now, end_ms);
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
            idle: None,
            key: String::new(),
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
    fn shared_mounts_match_by_map_and_end_on_time() {
        let d = "sha256:a";
        let map = |lo: u32| {
            super::super::idmap::choose(
                crate::runtime::idmap::Identity::KeepId,
                1001,
                1001,
                &[(lo as u64, 65536)],
                &[(lo as u64, 65536)],
            )
        };
        let (k1, k2) = (share_key(&map(100000)), share_key(&map(200000)));
        assert_ne!(k1, k2);
        assert!(
            k1.starts_with("u=1001:1001:1,") && k1.contains(";g="),
            "{k1}"
        );
        let mut h = rec("holder", Scope::User, d, "keep-id");
        // A record without a key (older version, or a job's) matches by identity alone.
        assert!(matches_key(&h, &Scope::User, d, "keep-id", &k1));
        h.key = k1.clone();
        assert!(matches_key(&h, &Scope::User, d, "keep-id", &k1));
        assert!(!matches_key(&h, &Scope::User, d, "keep-id", &k2));
        assert!(!matches_key(&h, &Scope::User, d, "remap-root", &k1));
        assert!(!matches_key(&h, &job(1, None), d, "keep-id", &k1));
        // Never used: the grace (or the idle time if longer) from creation; used: the
        // idle time from the last use.
        assert_eq!(deadline(100, 100, 0, 5), 105);
        assert_eq!(deadline(100, 100, 60, 5), 160);
        assert_eq!(deadline(100, 130, 0, 5), 130);
        assert_eq!(deadline(100, 130, 60, 5), 190);
        assert_eq!(next_check(0, 10_000), 1000);
        assert_eq!(next_check(9_990, 10_000), 20);
        assert_eq!(next_check(20_000, 10_000), 20);
    }

    #[test]
    fn use_locks_keep_a_holder_from_being_stopped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("ctr")).unwrap();
        // The "holder": a child process, its record locked by this process.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let mut h = rec("holder", Scope::User, "sha256:a", "keep-id");
        h.id = state::new_id();
        h.pid = child.id() as i32;
        h.idle = Some(0);
        let reg = state::register(dir.path(), &h).unwrap();
        assert!(!in_use(dir.path(), &h));
        let u = use_holder(dir.path(), &h).unwrap().expect("a live holder");
        assert!(in_use(dir.path(), &h));
        assert!(!stop_if_unused(dir.path(), &h, 0, false).unwrap());
        assert!(child.try_wait().unwrap().is_none(), "stopped under a user");
        drop(u);
        assert!(!in_use(dir.path(), &h));
        assert!(stop_if_unused(dir.path(), &h, 5, false).unwrap());
        assert!(child.wait().unwrap().code().is_none(), "ended by a signal");
        // Its record unlinked (as the holder does when it ends): joiners find nothing.
        reg.remove();
        assert!(use_holder(dir.path(), &h).unwrap().is_none());
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

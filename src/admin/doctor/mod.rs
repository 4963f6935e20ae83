//! `warren doctor`: can this node run rootless containers for this user, and if not,
//! exactly what to change. Each check group gathers facts (I/O, in `gather`) and judges
//! them (pure, in `judge`), so broken setups are unit-tested from hand-made facts.

pub mod apparmor;
pub mod cgroup;
pub mod elf;
pub mod fuse;
pub mod idmap;
pub mod kernel;
pub mod slurm;
pub mod storage;

use crate::config::Config;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Ok,
    /// Works, but slower or fragile; the fix is advised.
    Warn,
    /// Rootless containers will not work (or are unsafe) until fixed.
    Fail,
}

impl Status {
    /// Fixed-width label for text output.
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "OK  ",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    /// Stable identifier (`newuidmap`, `subuid`, `fuse_device`, …).
    pub id: &'static str,
    /// Verdict.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do, exactly (commands or file contents), when not OK.
    pub fix: Option<String>,
}

impl Check {
    /// An OK check.
    pub fn ok(id: &'static str, detail: impl Into<String>) -> Check {
        Check {
            id,
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }
    /// A WARN check with its fix.
    pub fn warn(id: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            id,
            status: Status::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
    /// A FAIL check with its fix.
    pub fn fail(id: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            id,
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// The user the checks are about.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Target {
    /// Login name.
    pub name: String,
    /// UID.
    pub uid: u32,
    /// Primary GID.
    pub gid: u32,
    /// Whether checks "as the user" switch to that user (root doctoring another user).
    pub switch: bool,
}

/// Paths the checks look at; overridable so tests need not break the real system.
#[derive(Debug, Clone)]
pub struct Options {
    /// `--user NAME` (root only), else the calling user.
    pub user: Option<String>,
    /// newuidmap to check (default: config `run.newuidmap` looked up in PATH).
    pub newuidmap: Option<PathBuf>,
    /// newgidmap to check.
    pub newgidmap: Option<PathBuf>,
    /// subuid file.
    pub subuid: PathBuf,
    /// subgid file.
    pub subgid: PathBuf,
    /// login.defs (for the suggested range in a fix).
    pub login_defs: PathBuf,
    /// FUSE device (`--fuse-dev` or `WARREN_DOCTOR_FUSE_DEV`).
    pub fuse_dev: PathBuf,
    /// Slurm's plugstack.conf.
    pub plugstack: PathBuf,
    /// Root of sysctls (`/proc/sys`).
    pub proc_sys: PathBuf,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            user: None,
            newuidmap: None,
            newgidmap: None,
            subuid: "/etc/subuid".into(),
            subgid: "/etc/subgid".into(),
            login_defs: "/etc/login.defs".into(),
            fuse_dev: "/dev/fuse".into(),
            plugstack: "/etc/slurm/plugstack.conf".into(),
            proc_sys: "/proc/sys".into(),
        }
    }
}

/// Resolve the target user.
pub fn target(opts: &Options) -> Result<Target> {
    let me = nix::unistd::geteuid();
    match &opts.user {
        Some(name) => {
            let u = nix::unistd::User::from_name(name)
                .with_context(|| format!("look up user {name:?}"))?
                .with_context(|| format!("no such user {name:?}"))?;
            if u.uid != me && !me.is_root() {
                bail!("--user {name}: only root can check another user");
            }
            Ok(Target {
                name: u.name,
                uid: u.uid.as_raw(),
                gid: u.gid.as_raw(),
                switch: u.uid != me,
            })
        }
        None => {
            let name = nix::unistd::User::from_uid(me)
                .ok()
                .flatten()
                .map(|u| u.name)
                .unwrap_or_else(|| me.to_string());
            Ok(Target {
                name,
                uid: me.as_raw(),
                gid: nix::unistd::getegid().as_raw(),
                switch: false,
            })
        }
    }
}

/// Run `f` as the target user (in a forked child when switching) and return its answer.
/// Used for "can the user open /dev/fuse", "can the user write the shared store".
/// `f` must not allocate (the child of a fork may only make async-signal-safe calls):
/// prepare C strings before calling; see [`can_open_rw`] and [`can_access`].
pub fn as_user(t: &Target, f: impl FnOnce() -> bool) -> Result<bool> {
    if !t.switch {
        return Ok(f());
    }
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, ForkResult, Gid, Uid};
    // SAFETY: the CLI is single-threaded when doctor runs; the child only makes
    // async-signal-safe calls (setgroups/setgid/setuid, open/access) before _exit.
    match unsafe { fork() }.with_context(|| format!("fork to check as UID {}", t.uid))? {
        ForkResult::Child => {
            let ok = nix::unistd::setgroups(&[]).is_ok()
                && nix::unistd::setgid(Gid::from_raw(t.gid)).is_ok()
                && nix::unistd::setuid(Uid::from_raw(t.uid)).is_ok();
            let code = if !ok {
                2
            } else if f() {
                0
            } else {
                1
            };
            // SAFETY: _exit without running the parent's destructors or atexit handlers.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => match waitpid(child, None)
            .with_context(|| format!("wait for the check as UID {}", t.uid))?
        {
            WaitStatus::Exited(_, 0) => Ok(true),
            WaitStatus::Exited(_, 1) => Ok(false),
            other => bail!("check as UID {} failed: {other:?}", t.uid),
        },
    }
}

fn cpath(p: &std::path::Path) -> Result<std::ffi::CString> {
    std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()))
        .with_context(|| format!("path {} contains NUL", p.display()))
}

/// Whether the target user can open `p` read-write (no allocation in the child).
pub fn can_open_rw(t: &Target, p: &std::path::Path) -> Result<bool> {
    let c = cpath(p)?;
    as_user(t, || {
        // SAFETY: valid C string; the fd is closed at once.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC | libc::O_NOCTTY) };
        if fd >= 0 {
            // SAFETY: fd was just opened by us.
            unsafe { libc::close(fd) };
        }
        fd >= 0
    })
}

/// Whether the target user has `mode` (`libc::R_OK | libc::X_OK`, …) on `p`.
pub fn can_access(t: &Target, p: &std::path::Path, mode: libc::c_int) -> Result<bool> {
    let c = cpath(p)?;
    // SAFETY: valid C string; access(2) only reads it.
    as_user(t, || unsafe { libc::access(c.as_ptr(), mode) } == 0)
}

/// Run every check group for the target user.
pub fn run(cfg: &Config, opts: &Options) -> Result<(Target, Vec<Check>)> {
    let t = target(opts)?;
    let mut checks = Vec::new();
    checks.extend(kernel::judge(&kernel::gather(cfg, opts)));
    checks.extend(idmap::judge_helpers(&idmap::gather_helpers(cfg, opts)));
    checks.extend(idmap::judge_subids(&idmap::gather_subids(&t, opts)?));
    checks.extend(fuse::judge(&fuse::gather(cfg, opts, &t)?));
    checks.extend(storage::judge(&storage::gather(cfg, &t)?));
    checks.extend(cgroup::judge(&cgroup::gather()));
    checks.extend(slurm::judge(&slurm::gather(opts)));
    Ok((t, checks))
}

/// (ok, warn, fail) counts.
pub fn summary(checks: &[Check]) -> (usize, usize, usize) {
    let n = |s| checks.iter().filter(|c| c.status == s).count();
    (n(Status::Ok), n(Status::Warn), n(Status::Fail))
}

/// The first line of a version banner that contains a dotted number, e.g.
/// `squashfuse 0.1.104 (c) …` → `squashfuse 0.1.104 (c) 2012 Dave Vasilevsky`.
pub fn version_line(output: &str, hint: &str) -> Option<String> {
    output
        .lines()
        .filter(|l| l.to_ascii_lowercase().contains(hint))
        .find(|l| {
            l.split(|c: char| !(c.is_ascii_digit() || c == '.'))
                .any(|w| w.contains('.') && w.split('.').all(|p| !p.is_empty()))
        })
        .map(|l| l.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_summary() {
        let o = "unknown argument ignored: lazytime\nfusermount3 version: 3.14.0\nfuse-overlayfs: version 1.10\n";
        assert_eq!(
            version_line(o, "fuse-overlayfs").as_deref(),
            Some("fuse-overlayfs: version 1.10")
        );
        assert_eq!(
            version_line("squashfuse 0.1.104 (c) 2012\n\nUsage", "squashfuse").as_deref(),
            Some("squashfuse 0.1.104 (c) 2012")
        );
        assert_eq!(version_line("no numbers", "no"), None);
        let c = [
            Check::ok("a", ""),
            Check::fail("b", "", ""),
            Check::warn("c", "", ""),
        ];
        assert_eq!(summary(&c), (1, 1, 1));
    }
}

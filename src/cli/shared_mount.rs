//! `warren run`'s shared image mount (docs/run.md, "Shared image mounts"): join the
//! user's holder of this image digest, identity and ID map, or start one (one at a time:
//! concurrent first runs serialize on `RUNDIR/share.lock`, so they start one holder and
//! all join it) and join that. Front-end only: starting a holder forks this process.

use crate::config::RunConfig;
use crate::runtime::holder::{self, Use};
use crate::runtime::spec::{identity_name, Mode, RunSpec};
use anyhow::{Context, Result};
use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

/// A use of the shared image mount for `spec` and whether this run started it, or `None`
/// when none can be had (its holder could not be started: the caller mounts the image
/// privately, whose errors then say why).
pub fn acquire(cfg: &RunConfig, spec: &RunSpec) -> Result<Option<(Use, bool)>> {
    let mut started = false;
    let identity = identity_name(spec.identity);
    let key = holder::share_key(&spec.map);
    let find = || holder::find_keyed(&spec.rundir, &spec.scope, &spec.digest, identity, &key);
    // A holder found may end before we hold its use lock (idle, `warren rm`): look again;
    // a few rounds are plenty (each either joins or starts one).
    for _ in 0..4 {
        if let Some(h) = find()? {
            if let Some(u) = holder::use_holder(&spec.rundir, &h)? {
                return Ok(Some((u, started)));
            }
            continue;
        }
        let path = spec.rundir.join("share.lock");
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .with_context(|| format!("open {}", path.display()))?;
        // Released when `lock` is dropped (end of this round) or this process dies.
        let lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .with_context(|| format!("lock {}", path.display()))?;
        if find()?.is_some() {
            continue; // started by another run while we waited
        }
        let mut hs = spec.clone();
        hs.mode = Mode::Holder;
        hs.name = None;
        hs.timing = false;
        hs.quiet = true;
        hs.join = None;
        if let Err(e) =
            super::supervisor::start_holder(cfg, &hs, cfg.shared_mount_idle, lock.as_raw_fd())
        {
            if spec.timing {
                eprintln!(
                    "warren timing: shared image mount not started ({}): mounting privately",
                    super::one_line(&e)
                );
            }
            return Ok(None);
        }
        started = true;
    }
    Ok(None)
}

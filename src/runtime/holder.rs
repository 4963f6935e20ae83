//! Namespace holders: a detached process keeping one user namespace and one mount
//! namespace with an image mounted (squashfuse), so that later containers of the same
//! user, image and identity join them (setns + a private mount namespace copy + their
//! own overlay) instead of building them. The Slurm integration starts one per job.
//!
//! Lifetime: started by `warren run --holder --name NAME IMAGE`; lives until
//! `warren rm NAME` (SIGTERM), a SIGTERM/SIGINT/SIGHUP from anyone, or reboot. Its
//! squashfuse daemon dies with it (parent-death signal), so containers still running on
//! it lose their image: `warren rm` refuses to stop a holder with joined containers
//! unless `--force`. Its record in `RUNDIR/ctr` is locked while it lives.

use super::state::{self, Record};
use anyhow::Result;
use std::path::Path;

/// A live holder for this image digest and identity, if any.
pub fn find(rundir: &Path, digest: &str, identity: &str) -> Result<Option<Record>> {
    Ok(state::list(rundir)?
        .into_iter()
        .find(|r| r.kind == "holder" && r.digest == digest && r.identity == identity))
}

/// Live containers that joined the holder `h`.
pub fn joined(rundir: &Path, h: &Record) -> Result<Vec<Record>> {
    let key = h.name.clone().unwrap_or(h.id.clone());
    Ok(state::list(rundir)?
        .into_iter()
        .filter(|r| r.kind == "container" && r.holder.as_deref() == Some(key.as_str()))
        .collect())
}

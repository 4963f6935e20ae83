//! Advisory whole-file locks (flock) on files under `STORE/locks/`. On NFS, Linux maps
//! flock to POSIX byte-range locks, so they hold across clients too.

use anyhow::{Context, Result};
use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// A held lock; released on drop (or when the process dies, even by `kill -9`).
pub struct Lock {
    _f: Flock<File>,
}

fn open(path: &Path) -> Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(path)
        .with_context(|| format!("open lock file {}", path.display()))?;
    // Umask-independent: other users of a shared store open it read-only.
    let _ = f.set_permissions(std::fs::Permissions::from_mode(0o644));
    Ok(f)
}

impl Lock {
    /// Wait for the exclusive lock on `path`.
    pub fn exclusive(path: &Path) -> Result<Lock> {
        let f = open(path)?;
        let f = Flock::lock(f, FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .with_context(|| format!("lock {}", path.display()))?;
        Ok(Lock { _f: f })
    }

    /// Take the lock if nobody holds it.
    pub fn try_exclusive(path: &Path) -> Result<Option<Lock>> {
        let f = open(path)?;
        match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            Ok(f) => Ok(Some(Lock { _f: f })),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, e)) => Err(e).with_context(|| format!("lock {}", path.display())),
        }
    }
}

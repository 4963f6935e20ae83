//! Atomic publication: everything is written under `STORE/tmp/`, fsynced, made
//! readable by all (0644 files, 0755 directories), then renamed into place and the
//! parent directory fsynced. A crash at any moment leaves only `tmp/` debris, which the
//! next pull (holding the same lock) or `warren prune` removes.

use super::layout::{mkdir_0755, Store};
use super::lock::Lock;
use crate::digest::Digest;
use crate::util::fsync_dir;
use anyhow::{Context, Result};
use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A fresh staging directory `tmp/img-HEX.PID.N` for image `d`.
pub fn stage_image(store: &Store, d: &Digest) -> Result<PathBuf> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let p = store.tmp().join(format!(
        "img-{}.{}.{}",
        d.hex(),
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    mkdir_0755(&p)?;
    Ok(p)
}

/// Remove staging debris of image `d` left by dead pulls. Call with the image lock held.
pub fn clean_stale_image(store: &Store, d: &Digest) {
    let prefix = format!("img-{}.", d.hex());
    if let Ok(rd) = fs::read_dir(store.tmp()) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
}

/// Make `f` 0644, flush it to disk.
pub fn seal_file(p: &Path) -> Result<()> {
    let f = File::open(p).with_context(|| format!("open {}", p.display()))?;
    f.set_permissions(fs::Permissions::from_mode(0o644))
        .with_context(|| format!("chmod {}", p.display()))?;
    f.sync_all()
        .with_context(|| format!("fsync {}", p.display()))
}

/// Move staging directory `stage` (files already sealed) to `images/HEX`. Returns false
/// if a complete image was already there (the staging directory is then removed).
pub fn publish_image(store: &Store, stage: &Path, d: &Digest) -> Result<bool> {
    fsync_dir(stage)?;
    let dest = store.image_dir(d);
    match fs::rename(stage, &dest) {
        Ok(()) => {
            fsync_dir(&store.images_dir())?;
            Ok(true)
        }
        // Another pull published it first (the rename fails on a non-empty target).
        Err(_) if dest.is_dir() && store.image(d).is_some() => {
            let _ = fs::remove_dir_all(stage);
            Ok(false)
        }
        Err(e) => Err(e).with_context(|| format!("publish {}", dest.display())),
    }
}

/// Move a verified download to `blobs/sha256/HEX`.
pub fn publish_blob(store: &Store, partial: &Path, d: &Digest) -> Result<PathBuf> {
    seal_file(partial)?;
    let dest = store.blob(d);
    fs::rename(partial, &dest)
        .with_context(|| format!("rename {} to {}", partial.display(), dest.display()))?;
    fsync_dir(dest.parent().unwrap_or(Path::new("/")))?;
    Ok(dest)
}

/// Delete blob `d` unless someone is using its lock right now.
pub fn drop_blob(store: &Store, d: &Digest) -> Result<()> {
    if let Some(_l) = Lock::try_exclusive(&store.lock_file("blob", d))? {
        match fs::remove_file(store.blob(d)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("remove blob {d}")),
        }
    }
    Ok(())
}

//! Removing things: `rmi` (a tag, then the image if no tag is left) and `prune`
//! (images no tag refers to, blobs no kept image needs, debris in `tmp/` whose owner's
//! lock is free).

use super::layout::Store;
use super::lock::Lock;
use super::refs;
use crate::digest::Digest;
use anyhow::{Context, Result};
use std::collections::HashSet;
use std::fs;
use std::path::PathBuf;

/// What prune removed (or would remove, dry run).
#[derive(Debug, Default)]
pub struct PruneReport {
    pub removed: Vec<PathBuf>,
    pub bytes: u64,
}

/// Remove a directory tree atomically as seen by readers: rename it into `tmp/` first.
pub fn remove_image_dir(store: &Store, d: &Digest) -> Result<()> {
    let dir = store.image_dir(d);
    let grave = store
        .tmp()
        .join(format!("dead-{}.{}", d.hex(), std::process::id()));
    match fs::rename(&dir, &grave) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("remove {}", dir.display())),
    }
    crate::util::fsync_dir(&store.images_dir())?;
    fs::remove_dir_all(&grave).with_context(|| format!("remove {}", grave.display()))
}

/// Remove tag `name` (for every platform); then each image it named that no other tag
/// names. Returns the digests of the images removed.
pub fn rmi(store: &Store, name: &str) -> Result<Vec<Digest>> {
    let recs = refs::named(store, name);
    if recs.is_empty() {
        anyhow::bail!("no tag {name} in {}", store.root.display());
    }
    for r in &recs {
        refs::remove(store, name, &r.platform)?;
    }
    let left = refs::list(store);
    let mut gone = Vec::new();
    for r in recs {
        if left.iter().any(|l| l.manifest == r.manifest) || gone.contains(&r.manifest) {
            continue;
        }
        let _l = Lock::exclusive(&store.lock_file("image", &r.manifest))?;
        remove_image_dir(store, &r.manifest)?;
        gone.push(r.manifest);
    }
    Ok(gone)
}

fn size_of(p: &std::path::Path) -> u64 {
    let Ok(m) = fs::symlink_metadata(p) else {
        return 0;
    };
    if m.is_dir() {
        fs::read_dir(p)
            .map(|rd| rd.flatten().map(|e| size_of(&e.path())).sum())
            .unwrap_or(0)
    } else {
        m.len()
    }
}

/// Prune one writable store. `keep_layers`: keep blobs of tagged images.
pub fn prune(store: &Store, keep_layers: bool, dry_run: bool) -> Result<PruneReport> {
    let mut rep = PruneReport::default();
    let drop = |p: PathBuf, rep: &mut PruneReport| -> Result<()> {
        rep.bytes += size_of(&p);
        if !dry_run {
            let r = if p.is_dir() {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            };
            r.with_context(|| format!("remove {}", p.display()))?;
        }
        rep.removed.push(p);
        Ok(())
    };
    let tagged: HashSet<Digest> = refs::list(store).into_iter().map(|r| r.manifest).collect();
    // Images nobody tags.
    let mut wanted_blobs = HashSet::new();
    for d in store.image_digests() {
        let dir = store.image_dir(&d);
        // Temp files of an interrupted integrity-record refresh (a live refresher whose
        // file goes only fails its best-effort rename).
        for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = e.file_name();
            let refresh_tmp = format!(".{}.tmp.", super::integrity::RECORD);
            if name.to_string_lossy().starts_with(&refresh_tmp) {
                drop(e.path(), &mut rep)?;
            }
        }
        if tagged.contains(&d) {
            if keep_layers {
                if let Ok(m) = fs::read(dir.join("manifest.json")) {
                    if let Ok(m) = serde_json::from_slice::<oci_spec::image::ImageManifest>(&m) {
                        for l in m.layers() {
                            wanted_blobs.insert(l.digest().to_string());
                        }
                    }
                }
            }
            continue;
        }
        if let Some(_l) = Lock::try_exclusive(&store.lock_file("image", &d))? {
            drop(dir, &mut rep)?;
        }
    }
    // Blobs nothing needs.
    for d in store.blob_digests() {
        if wanted_blobs.contains(&d.to_string()) {
            continue;
        }
        if let Some(_l) = Lock::try_exclusive(&store.lock_file("blob", &d))? {
            drop(store.blob(&d), &mut rep)?;
        }
    }
    // Debris whose owner is gone (its lock is free).
    for e in fs::read_dir(store.tmp()).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let owner = name
            .strip_prefix("img-")
            .map(|r| ("image", r))
            .or_else(|| name.strip_prefix("blob-").map(|r| ("blob", r)));
        let free = match owner {
            Some((kind, rest)) => {
                // `get`: a name is any bytes; slicing at 64 could split a character.
                match Digest::parse(&format!("sha256:{}", rest.get(..64).unwrap_or(rest))) {
                    Ok(d) => Lock::try_exclusive(&store.lock_file(kind, &d))?,
                    Err(_) => None,
                }
            }
            // dead-* (interrupted removals) and temp files of atomic writes.
            None => Lock::try_exclusive(&store.root.join("locks/prune.lock"))?,
        };
        if let Some(_l) = free {
            drop(e.path(), &mut rep)?;
        }
    }
    Ok(rep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_removes_interrupted_record_refreshes() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::create(d.path()).unwrap();
        let img = store.image_dir(&Digest::of(b"i"));
        fs::create_dir_all(&img).unwrap();
        let debris = img.join(".integrity.json.tmp.123.0");
        fs::write(&debris, b"{").unwrap();
        fs::write(img.join("integrity.json"), b"{}").unwrap();
        // Tagged: the image stays, only the debris goes.
        refs::write(
            &store,
            &refs::RefRecord {
                name: "r/a:1".into(),
                top: Digest::of(b"i"),
                manifest: Digest::of(b"i"),
                platform: "linux/amd64".into(),
            },
        )
        .unwrap();
        prune(&store, false, false).unwrap();
        assert!(!debris.exists());
        assert!(img.join("integrity.json").exists());
    }

    #[test]
    fn non_ascii_names_in_tmp_do_not_panic_prune() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::create(d.path()).unwrap();
        // 63 hex digits and a two-byte character straddling byte 64.
        let odd = store.tmp().join(format!("img-{}\u{e9}", "a".repeat(63)));
        fs::write(&odd, b"x").unwrap();
        let rep = prune(&store, false, false).unwrap();
        // Not a staging name of ours (no digest): left alone.
        assert!(rep.removed.is_empty(), "{:?}", rep.removed);
        assert!(odd.exists());
    }
}

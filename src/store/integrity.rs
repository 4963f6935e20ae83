//! Each published image's integrity record, `images/HEX/integrity.json`: the SHA-256 and
//! size of its `image.sqfs`, plus the file's inode, mtime and ctime when it was sealed.
//!
//! Two checks (docs/store.md, "Integrity"):
//! - [`quick`] (every re-pull, a `stat` and a small read): any write to the file changes
//!   its mtime and ctime, and a replacement changes its inode, so an unchanged stamp
//!   means unchanged bytes. Only when the stamp differs (a write, a copy, a restore) are
//!   the bytes hashed, and the image passes if the hash still matches.
//! - [`full`] (`warren verify`): always hashes the whole file.
//!
//! Images published before records existed have none: they count as unverified, and
//! `warren pull` rebuilds them (there is nothing to compare their bytes with).

use crate::digest::{Digest, HashingWriter};
use crate::util::atomic_write;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The record's file name inside an image directory.
pub const RECORD: &str = "integrity.json";
/// The image file a record is about.
const SQUASHFS: &str = "image.sqfs";

/// What was true of `image.sqfs` when it was sealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// SHA-256 of the whole file.
    pub sha256: Digest,
    /// Its length in bytes.
    pub size: u64,
    /// Its stat stamp (compared by the quick check).
    pub stamp: Stamp,
}

/// The stat fields any write or replacement changes. No device number: on NFS it
/// differs between the clients sharing a store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    pub ino: u64,
    pub mtime: i64,
    pub mtime_nsec: i64,
    pub ctime: i64,
    pub ctime_nsec: i64,
}

impl Stamp {
    fn of(m: &fs::Metadata) -> Stamp {
        Stamp {
            ino: m.ino(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
            ctime: m.ctime(),
            ctime_nsec: m.ctime_nsec(),
        }
    }
}

/// The outcome of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// The bytes are the ones sealed.
    Sound,
    /// No (readable) record: published by an older warren, or the record was dropped.
    Unrecorded,
    /// The bytes changed, or cannot be read: why, in a few words.
    Damaged(String),
}

fn record_path(dir: &Path) -> PathBuf {
    dir.join(RECORD)
}

/// SHA-256 and length of a file's bytes.
fn hash_file(p: &Path) -> std::io::Result<(Digest, u64)> {
    let mut f = File::open(p)?;
    let mut w = HashingWriter::new(std::io::sink());
    std::io::copy(&mut f, &mut w)?;
    let (_, d, n) = w.finish();
    Ok((d, n))
}

/// Hash the (sealed: final mode, fsynced) `DIR/image.sqfs` and write `DIR/integrity.json`.
/// Called on the staging directory, before it is published.
pub fn seal(dir: &Path) -> Result<Record> {
    let sqfs = dir.join(SQUASHFS);
    let (sha256, size) = hash_file(&sqfs).with_context(|| format!("read {}", sqfs.display()))?;
    let m = fs::metadata(&sqfs).with_context(|| format!("stat {}", sqfs.display()))?;
    let rec = Record {
        sha256,
        size,
        stamp: Stamp::of(&m),
    };
    write(dir, &rec)?;
    Ok(rec)
}

fn write(dir: &Path, rec: &Record) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(rec)?;
    atomic_write(&record_path(dir), &bytes, 0o644)
        .with_context(|| format!("write the integrity record of {}", dir.display()))
}

/// The record of image directory `dir`, if it has a readable one.
pub fn read(dir: &Path) -> Option<Record> {
    serde_json::from_slice(&fs::read(record_path(dir)).ok()?).ok()
}

/// The cheap check: compare the stat stamp; hash only when it differs. A sound image
/// whose stamp changed (copied, restored) gets its stamp refreshed when the store is
/// writable, so the next check is cheap again.
pub fn quick(dir: &Path) -> Status {
    let Some(rec) = read(dir) else {
        return Status::Unrecorded;
    };
    let m = match fs::metadata(dir.join(SQUASHFS)) {
        Ok(m) => m,
        Err(e) => return Status::Damaged(format!("{SQUASHFS}: {e}")),
    };
    if m.len() == rec.size && Stamp::of(&m) == rec.stamp {
        return Status::Sound;
    }
    compare_and_refresh(dir, rec, &m)
}

/// [`quick`], for an image about to be used from any store: an unrecorded image that
/// we cannot write (a shared store published by an older warren) passes, since
/// nothing running as us (our containers included) can have changed it, and we could
/// not rebuild it in place anyway; its owner's next pull does.
pub fn quick_for_use(dir: &Path) -> Status {
    match quick(dir) {
        Status::Unrecorded if !writable(&dir.join(SQUASHFS)) => Status::Sound,
        st => st,
    }
}

fn writable(p: &Path) -> bool {
    nix::unistd::access(p, nix::unistd::AccessFlags::W_OK).is_ok()
}

/// The full check: hash the whole file against the record (refreshing a changed stamp
/// of a sound file, as [`quick`] does).
pub fn full(dir: &Path) -> Status {
    let Some(rec) = read(dir) else {
        return Status::Unrecorded;
    };
    match fs::metadata(dir.join(SQUASHFS)) {
        Ok(m) => compare_and_refresh(dir, rec, &m),
        Err(e) => Status::Damaged(format!("{SQUASHFS}: {e}")),
    }
}

fn compare_and_refresh(dir: &Path, rec: Record, m: &fs::Metadata) -> Status {
    let st = compare(dir, &rec);
    let stamp = Stamp::of(m);
    if st == Status::Sound && stamp != rec.stamp {
        // Best effort: a shared store may not be ours to write.
        let _ = write(dir, &Record { stamp, ..rec });
    }
    st
}

fn compare(dir: &Path, rec: &Record) -> Status {
    match hash_file(&dir.join(SQUASHFS)) {
        Err(e) => Status::Damaged(format!("{SQUASHFS}: {e}")),
        Ok((_, n)) if n != rec.size => Status::Damaged(format!(
            "{SQUASHFS} is {n} bytes, {} were published",
            rec.size
        )),
        Ok((d, _)) if d != rec.sha256 => Status::Damaged(format!(
            "{SQUASHFS} has digest {d}, {} was published",
            rec.sha256
        )),
        Ok(_) => Status::Sound,
    }
}

/// Drop the record of a damaged image, so that the next `warren pull` rebuilds it even
/// if the file's stamp is later made to match again.
pub fn forget(dir: &Path) -> Result<()> {
    match fs::remove_file(record_path(dir)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("remove {}", record_path(dir).display())),
    }
}

/// One image's verdict from [`verify`].
#[derive(Debug, Clone)]
pub struct Verdict {
    pub digest: Digest,
    pub status: Status,
    /// A damaged image's record was dropped, so the next pull rebuilds it (false when
    /// the store is not ours to write).
    pub forgotten: bool,
}

/// The full check of every published image of `store`. Damaged images lose their
/// record (see [`forget`]), best effort.
pub fn verify(store: &super::layout::Store) -> Vec<Verdict> {
    let mut out = Vec::new();
    let mut digests = store.image_digests();
    digests.sort();
    for d in digests {
        if store.image(&d).is_none() {
            continue;
        }
        let dir = store.image_dir(&d);
        let status = full(&dir);
        let forgotten = matches!(status, Status::Damaged(_)) && forget(&dir).is_ok();
        out.push(Verdict {
            digest: d,
            status,
            forgotten,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};

    fn image(dir: &Path) {
        fs::write(dir.join(SQUASHFS), vec![7u8; 64 << 10]).unwrap();
        seal(dir).unwrap();
    }

    #[test]
    fn sealed_image_is_sound() {
        let d = tempfile::tempdir().unwrap();
        image(d.path());
        assert_eq!(quick(d.path()), Status::Sound);
        assert_eq!(full(d.path()), Status::Sound);
    }

    #[test]
    fn in_place_write_of_same_size_is_caught_by_both_checks() {
        let d = tempfile::tempdir().unwrap();
        image(d.path());
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(d.path().join(SQUASHFS))
            .unwrap();
        f.seek(SeekFrom::Start(20 << 10)).unwrap();
        f.write_all(&[0u8; 4096]).unwrap();
        drop(f);
        assert!(matches!(quick(d.path()), Status::Damaged(_)));
        assert!(matches!(full(d.path()), Status::Damaged(_)));
    }

    #[test]
    fn truncation_is_caught() {
        let d = tempfile::tempdir().unwrap();
        image(d.path());
        let f = fs::OpenOptions::new()
            .write(true)
            .open(d.path().join(SQUASHFS))
            .unwrap();
        f.set_len(1000).unwrap();
        match quick(d.path()) {
            Status::Damaged(why) => assert!(why.contains("1000 bytes"), "{why}"),
            s => panic!("{s:?}"),
        }
    }

    #[test]
    fn changed_stamp_with_same_bytes_is_sound_and_refreshed() {
        let d = tempfile::tempdir().unwrap();
        image(d.path());
        let before = read(d.path()).unwrap();
        // Same bytes, new inode (a copy put in place).
        let p = d.path().join(SQUASHFS);
        let copy = d.path().join("copy");
        fs::copy(&p, &copy).unwrap();
        fs::rename(&copy, &p).unwrap();
        assert_eq!(quick(d.path()), Status::Sound);
        let after = read(d.path()).unwrap();
        assert_eq!(after.sha256, before.sha256);
        assert_ne!(after.stamp, before.stamp);
    }

    #[test]
    fn full_check_refreshes_a_changed_stamp() {
        let d = tempfile::tempdir().unwrap();
        image(d.path());
        let before = read(d.path()).unwrap();
        let p = d.path().join(SQUASHFS);
        let copy = d.path().join("copy");
        fs::copy(&p, &copy).unwrap();
        fs::rename(&copy, &p).unwrap();
        assert_eq!(full(d.path()), Status::Sound);
        let after = read(d.path()).unwrap();
        assert_ne!(after.stamp, before.stamp);
        assert_eq!(after.stamp, Stamp::of(&fs::metadata(&p).unwrap()));
    }

    #[test]
    fn no_record_and_forget() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join(SQUASHFS), b"x").unwrap();
        assert_eq!(quick(d.path()), Status::Unrecorded);
        seal(d.path()).unwrap();
        forget(d.path()).unwrap();
        assert_eq!(full(d.path()), Status::Unrecorded);
    }
}

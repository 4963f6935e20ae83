//! Tags → digests: one small JSON file per (reference, platform) under `STORE/refs/`,
//! so nodes of different architectures can share one store.

use super::layout::Store;
use crate::digest::Digest;
use crate::util::atomic_write;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// What a reference resolved to when it was last pulled.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RefRecord {
    /// The canonical reference (`127.0.0.1:5000/test/busybox:latest`, `oci:/dir:tag`).
    pub name: String,
    /// What the reference pointed at: an index or a manifest (compared on re-pull).
    pub top: Digest,
    /// The platform's manifest: the image's key in `images/`.
    pub manifest: Digest,
    /// `os/arch[/variant]` chosen.
    pub platform: String,
}

fn encode(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '%' => out.push_str("%25"),
            '/' => out.push_str("%2F"),
            '#' => out.push_str("%23"),
            c => out.push(c),
        }
    }
}

/// The file name of a tag: `NAME#PLATFORM.json`, reversible, no '/' (`%` → `%25`,
/// `/` → `%2F`, `#` → `%23`).
pub fn file_name(name: &str, platform: &str) -> String {
    let mut s = String::with_capacity(name.len() + platform.len() + 16);
    encode(name, &mut s);
    s.push('#');
    encode(platform, &mut s);
    s.push_str(".json");
    s
}

fn path(store: &Store, name: &str, platform: &str) -> PathBuf {
    store.refs_dir().join(file_name(name, platform))
}

/// The record for `name` on `platform`, if the store has one (an unreadable record
/// counts as none).
pub fn read(store: &Store, name: &str, platform: &str) -> Option<RefRecord> {
    let bytes = std::fs::read(path(store, name, platform)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// All records for `name`, any platform.
pub fn named(store: &Store, name: &str) -> Vec<RefRecord> {
    list(store).into_iter().filter(|r| r.name == name).collect()
}

/// Write (replace) the record atomically, mode 0644 whatever the umask (a shared
/// store's tags must be readable by every user).
pub fn write(store: &Store, rec: &RefRecord) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(rec)?;
    let dest = path(store, &rec.name, &rec.platform);
    atomic_write(&dest, &bytes, 0o644).with_context(|| format!("record tag {}", rec.name))
}

/// Remove a record; false if there was none.
pub fn remove(store: &Store, name: &str, platform: &str) -> Result<bool> {
    match std::fs::remove_file(path(store, name, platform)) {
        Ok(()) => {
            crate::util::fsync_dir(&store.refs_dir())?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("remove tag {name}")),
    }
}

/// All readable records of a store, sorted by name.
pub fn list(store: &Store) -> Vec<RefRecord> {
    let Ok(rd) = std::fs::read_dir(store.refs_dir()) else {
        return Vec::new();
    };
    let mut v: Vec<RefRecord> = rd
        .flatten()
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.ends_with(".json") && !n.starts_with('.')
        })
        .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
        .collect();
    v.sort_by(|a: &RefRecord, b| a.name.cmp(&b.name));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_encode() {
        assert_eq!(
            file_name("127.0.0.1:5000/a/b:latest", "linux/amd64"),
            "127.0.0.1:5000%2Fa%2Fb:latest#linux%2Famd64.json"
        );
        assert_eq!(
            file_name("oci:/x%y#z", "l/a"),
            "oci:%2Fx%25y%23z#l%2Fa.json"
        );
    }

    #[test]
    fn write_read_list_remove() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::create(d.path()).unwrap();
        let rec = RefRecord {
            name: "r.example/a:1".into(),
            top: Digest::of(b"t"),
            manifest: Digest::of(b"m"),
            platform: "linux/amd64".into(),
        };
        write(&s, &rec).unwrap();
        let arm = RefRecord {
            platform: "linux/arm64/v8".into(),
            manifest: Digest::of(b"m2"),
            ..rec.clone()
        };
        write(&s, &arm).unwrap();
        assert_eq!(read(&s, "r.example/a:1", "linux/amd64"), Some(rec.clone()));
        assert_eq!(named(&s, "r.example/a:1").len(), 2);
        assert!(remove(&s, "r.example/a:1", "linux/amd64").unwrap());
        assert!(!remove(&s, "r.example/a:1", "linux/amd64").unwrap());
        assert_eq!(list(&s), vec![arm]);
    }
}

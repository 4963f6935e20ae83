//! Writing `/etc/subuid` and `/etc/subgid`: under shadow's locks, with a `FILE-` backup
//! like shadow's, through a temp file that is fsynced and renamed, mode 0644 root:root.
//! Readers see the old file or the whole new one, never a mix; a writer killed at any
//! point leaves the old file intact (and a stale lock the next run takes over).
//!
//! A symlinked file (`/etc/subuid -> /shared/etc/subuid`) is written through, as shadow's
//! `lrename()` does: the link stays, its target is replaced atomically (temp file in the
//! target's directory, fsync, rename, fsync of that directory). Locks and the `FILE-`
//! backup stay beside the name given, where shadow puts them. A dangling or looping link
//! is refused with a message.

use super::diff;
use super::subid_lock;
use super::subid_plan::{self, Plan};
use super::subid_source::Paths;
use crate::subid::{self, SubIdFile};
use anyhow::{Context, Result};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Test hook: seconds to pause after the temp file is written and fsynced, before the
/// rename (the integration test kills the process there).
pub const PAUSE_ENV: &str = "WARREN_ADMIN_TEST_PAUSE_BEFORE_RENAME";

/// What happened to one file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FileChange {
    /// The file.
    pub path: PathBuf,
    /// Lines added.
    pub added: usize,
    /// Whether its content changes (or would, with `--dry-run`).
    pub changed: bool,
    /// Unified diff when changed.
    pub diff: Option<String>,
    /// The backup written (`FILE-`), when the file existed and changed.
    pub backup: Option<PathBuf>,
}

/// Result of `apply`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    /// The plan computed under the lock.
    pub plan: Plan,
    /// Per file; empty when the plan was refused.
    pub files: Vec<FileChange>,
    /// True when nothing was written because of `--dry-run` or refusals.
    pub written: bool,
}

/// The file's bytes (not text: one non-UTF-8 line must not stop the others).
fn read_bytes(p: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(p) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("read {}", p.display())),
    }
}

/// Lock (unless `dry_run`; waiting up to `lock_wait`, shadow waits
/// [`subid_lock::LOCK_WAIT`]), read both files, plan with `make_plan`, and write what changed.
/// A plan with errors writes nothing.
pub fn apply(
    paths: &Paths,
    dry_run: bool,
    lock_wait: std::time::Duration,
    make_plan: impl FnOnce(&SubIdFile, &SubIdFile) -> Result<Plan>,
) -> Result<Outcome> {
    let _lock = if dry_run {
        None
    } else {
        Some(subid_lock::lock(
            &[&paths.subuid, &paths.subgid],
            lock_wait,
        )?)
    };
    // Read under the lock: what we append to is what is there now.
    let old_u = read_bytes(&paths.subuid)?;
    let old_g = read_bytes(&paths.subgid)?;
    let (pu, pg) = (
        subid::parse_bytes(old_u.as_deref().unwrap_or_default()),
        subid::parse_bytes(old_g.as_deref().unwrap_or_default()),
    );
    let plan = make_plan(&pu, &pg)?;
    if !plan.errors.is_empty() {
        return Ok(Outcome {
            plan,
            files: Vec::new(),
            written: false,
        });
    }
    // A bad symlink is refused before either file is written.
    for p in [&paths.subuid, &paths.subgid] {
        write_target(p)?;
    }
    let mut files = Vec::new();
    for (path, old, new) in [
        (&paths.subuid, &old_u, &plan.subuid),
        (&paths.subgid, &old_g, &plan.subgid),
    ] {
        let old_bytes = old.as_deref().unwrap_or_default();
        let new_bytes = subid_plan::render(old_bytes, new);
        let name = path.display().to_string();
        // The diff is for people: non-UTF-8 bytes shown replaced, written unchanged.
        let d = diff::unified(
            &name,
            &format!("{name} (new)"),
            &String::from_utf8_lossy(old_bytes),
            &String::from_utf8_lossy(&new_bytes),
        );
        let changed = d.is_some();
        let mut backup_path = None;
        if changed && !dry_run {
            if old.is_some() {
                backup_path = Some(backup(path)?);
            }
            replace(path, &new_bytes)?;
        }
        files.push(FileChange {
            path: path.clone(),
            added: new.len(),
            changed,
            diff: d,
            backup: backup_path,
        });
    }
    let written = !dry_run && files.iter().any(|f| f.changed);
    Ok(Outcome {
        plan,
        files,
        written,
    })
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// `FILE-`: a copy of the current file with its owner, mode and times, as shadow makes.
fn backup(path: &Path) -> Result<PathBuf> {
    let meta = fs::metadata(path).with_context(|| format!("stat {}", path.display()))?;
    let bytes = fs::read(path).with_context(|| format!("read {}", path.display()))?;
    let target = sibling(path, "-");
    let tmp = sibling(path, "-.warren-tmp");
    write_synced(
        &tmp,
        &bytes,
        meta.mode() & 0o664,
        Some((meta.uid(), meta.gid())),
    )?;
    let times = [
        libc::timespec {
            tv_sec: meta.atime(),
            tv_nsec: meta.atime_nsec(),
        },
        libc::timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec(),
        },
    ];
    let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(tmp.as_os_str()))
        .context("path with NUL")?;
    // SAFETY: valid C string and a two-element timespec array, as utimensat requires.
    unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) };
    fs::rename(&tmp, &target)
        .with_context(|| format!("rename {} to {}", tmp.display(), target.display()))?;
    Ok(target)
}

/// Where the new content goes: `path` itself, or the final target of a symlink at `path`
/// (shadow's `lrename()` follows it too). A dangling or looping link is refused.
pub fn write_target(path: &Path) -> Result<PathBuf> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            let link = fs::read_link(path)
                .map(|l| l.display().to_string())
                .unwrap_or_default();
            let target = fs::canonicalize(path).with_context(|| {
                format!("{} is a symlink to {link} that cannot be followed (dangling or a loop): fix the link or replace it with a file", path.display())
            })?;
            let m = fs::metadata(&target).with_context(|| format!("stat {}", target.display()))?;
            if !m.is_file() {
                anyhow::bail!(
                    "{} is a symlink to {}, which is not a regular file",
                    path.display(),
                    target.display()
                );
            }
            Ok(target)
        }
        _ => Ok(path.to_path_buf()),
    }
}

/// Replace `path` (through a symlink: its target) atomically with `bytes`, mode 0644,
/// owned by root when we are root.
fn replace(path: &Path, bytes: &[u8]) -> Result<()> {
    let path = &write_target(path)?;
    // In the target's directory: rename(2) is atomic only within one file system.
    let tmp = sibling(path, ".warren-tmp");
    let owner = nix::unistd::geteuid().is_root().then_some((0, 0));
    write_synced(&tmp, bytes, 0o644, owner)?;
    if let Some(secs) = std::env::var(PAUSE_ENV)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        eprintln!("warren: test pause before rename of {}", path.display());
        std::thread::sleep(std::time::Duration::from_secs(secs));
    }
    fs::rename(&tmp, path)
        .with_context(|| format!("rename {} to {}", tmp.display(), path.display()))?;
    crate::util::fsync_parent(path)
}

/// Create `tmp` afresh (a leftover from a killed run is removed first: we hold the lock),
/// write, set mode and owner, fsync.
fn write_synced(tmp: &Path, bytes: &[u8], mode: u32, owner: Option<(u32, u32)>) -> Result<()> {
    match fs::remove_file(tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("remove {}", tmp.display())),
    }
    let res = (|| -> Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(tmp)
            .with_context(|| format!("create {}", tmp.display()))?;
        if let Some((u, g)) = owner {
            std::os::unix::fs::fchown(&f, Some(u), Some(g))
                .with_context(|| format!("chown {}", tmp.display()))?;
        }
        // Explicit chmod: the umask must not change the mode.
        f.set_permissions(fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {}", tmp.display()))?;
        f.write_all(bytes)
            .and_then(|_| f.sync_all())
            .with_context(|| format!("write {}", tmp.display()))
    })();
    if res.is_err() {
        let _ = fs::remove_file(tmp);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::subid_plan::NewEntry;

    #[test]
    fn writes_backup_and_is_idempotent() {
        let d = tempfile::tempdir().unwrap();
        let mut paths = Paths::under(Some(d.path()));
        paths.subuid = d.path().join("subuid");
        paths.subgid = d.path().join("subgid");
        fs::write(&paths.subuid, "a:100000:65536\n").unwrap();
        let entry = NewEntry {
            owner: "b".into(),
            uid: 1001,
            start: 165536,
            count: 65536,
        };
        let mk = |u: &SubIdFile, _: &SubIdFile| -> Result<Plan> {
            let mut p = Plan::default();
            if u.ranges_for("b", 1001).is_empty() {
                p.subuid.push(entry.clone());
            }
            Ok(p)
        };
        let o = apply(&paths, false, std::time::Duration::ZERO, mk).unwrap();
        assert!(o.written);
        assert_eq!(
            fs::read_to_string(&paths.subuid).unwrap(),
            "a:100000:65536\nb:165536:65536\n"
        );
        assert_eq!(
            fs::read_to_string(d.path().join("subuid-")).unwrap(),
            "a:100000:65536\n"
        );
        assert_eq!(fs::metadata(&paths.subuid).unwrap().mode() & 0o7777, 0o644);
        assert!(o.files[0]
            .diff
            .as_deref()
            .unwrap()
            .contains("+b:165536:65536"));
        assert!(!o.files[1].changed);
        let o = apply(&paths, false, std::time::Duration::ZERO, mk).unwrap();
        assert!(!o.written);
        assert!(o.files.iter().all(|f| !f.changed));
        let names: Vec<String> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            !names
                .iter()
                .any(|n| n.contains("lock") && n != ".pwd.lock" || n.contains("tmp")),
            "{names:?}"
        );
    }
}

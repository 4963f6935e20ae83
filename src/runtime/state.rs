//! Runtime state: the per-user runtime directory and one record per running container
//! (for `warren ps` / `warren rm`). Records are locked (flock) by their container while it
//! lives; an unlocked record is stale (its warren was killed) and is pruned by the next
//! `warren run`, `ps` or `rm`.
//!
//! Layout of `$XDG_RUNTIME_DIR/warren` (else `/tmp/warren-UID`), mode 0700, owner checked:
//! * `mnt/`          empty; each container mounts its private tmpfs here in its own mount
//!   namespace (nothing is ever written to it on the host)
//! * `ctr/ID.json`   one record per running container or holder
//! * `overlay-probe` cached answer of the native overlay probe for this boot
//! * `probe.sqfs`    tiny image used by the standalone probe (`warren doctor`)

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Where the runtime directory came from ([`decide_runtime_dir`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeDirSource {
    /// `run.runtime_dir`.
    Config,
    /// `XDG_RUNTIME_DIR/warren`.
    Xdg,
    /// `/tmp/warren-UID`, and why the XDG runtime directory was not used.
    Fallback(String),
}

/// The runtime directory warren uses, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeDirChoice {
    pub path: PathBuf,
    pub source: RuntimeDirSource,
}

/// The one decision of where the runtime directory is (`run` and `warren doctor` both
/// use it), without touching the process: `run.runtime_dir` (a leading `~` is `home`),
/// else `XDG_RUNTIME_DIR/warren` when the caller gave one that is an absolute directory
/// owned by `uid`, else `/tmp/warren-UID`. A front end without an environment
/// (slurmstepd, Slurm's oci.conf runtime) passes `/run/user/UID` or `None`.
pub fn decide_runtime_dir(
    cfg: &crate::config::RunConfig,
    uid: u32,
    home: &Path,
    xdg_runtime_dir: Option<&Path>,
) -> RuntimeDirChoice {
    if let Some(d) = &cfg.runtime_dir {
        let path = match d.strip_prefix("~") {
            Ok(rest) => home.join(rest),
            Err(_) => d.clone(),
        };
        return RuntimeDirChoice {
            path,
            source: RuntimeDirSource::Config,
        };
    }
    let why = match xdg_runtime_dir {
        None => "XDG_RUNTIME_DIR is not set".to_string(),
        Some(x) if !x.is_absolute() => format!("XDG_RUNTIME_DIR {} is not absolute", x.display()),
        Some(x) => match fs::symlink_metadata(x) {
            Err(_) => format!("XDG_RUNTIME_DIR {} does not exist", x.display()),
            Ok(m) if !m.is_dir() => format!("XDG_RUNTIME_DIR {} is not a directory", x.display()),
            Ok(m) if m.uid() != uid => format!(
                "XDG_RUNTIME_DIR {} belongs to UID {}, not {uid}",
                x.display(),
                m.uid()
            ),
            Ok(_) => {
                return RuntimeDirChoice {
                    path: x.join("warren"),
                    source: RuntimeDirSource::Xdg,
                }
            }
        },
    };
    RuntimeDirChoice {
        path: PathBuf::from(format!("/tmp/warren-{uid}")),
        source: RuntimeDirSource::Fallback(why),
    }
}

/// The path of [`decide_runtime_dir`].
pub fn choose_runtime_dir(
    cfg: &crate::config::RunConfig,
    uid: u32,
    home: &Path,
    xdg_runtime_dir: Option<&Path>,
) -> PathBuf {
    decide_runtime_dir(cfg, uid, home, xdg_runtime_dir).path
}

/// The runtime directory ([`choose_runtime_dir`]), created 0700 and checked to be owned
/// by `uid`.
pub fn runtime_dir(
    cfg: &crate::config::RunConfig,
    uid: u32,
    home: &Path,
    xdg_runtime_dir: Option<&Path>,
) -> Result<PathBuf> {
    let dir = choose_runtime_dir(cfg, uid, home, xdg_runtime_dir);
    ensure_runtime_dir(&dir, uid)?;
    Ok(dir)
}

/// Create `dir` (and its `mnt`, `ctr`) 0700 unless it exists; it must be a directory
/// owned by `uid`.
pub fn ensure_runtime_dir(dir: &Path, uid: u32) -> Result<()> {
    let dir = dir.to_path_buf();
    match fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("create runtime dir {}", dir.display())),
    }
    let md =
        fs::symlink_metadata(&dir).with_context(|| format!("runtime dir {}", dir.display()))?;
    if !md.is_dir() || md.uid() != uid {
        bail!(
            "runtime dir {} is not a directory owned by you (uid {uid}); remove it or set run.runtime_dir",
            dir.display()
        );
    }
    if md.mode() & 0o077 != 0 {
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("chmod 0700 {}", dir.display()))?;
    }
    for sub in ["mnt", "ctr"] {
        let p = dir.join(sub);
        match fs::DirBuilder::new().mode(0o700).create(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("create {}", p.display())),
        }
    }
    Ok(())
}

/// What `warren ps` shows about a container or holder.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Record {
    pub id: String,
    pub name: Option<String>,
    /// PID of the warren process (containers) or of the holder.
    pub pid: i32,
    pub image: String,
    /// Image digest (holders are matched by it).
    pub digest: String,
    pub command: Vec<String>,
    /// Unix seconds.
    pub started: u64,
    /// "container" or "holder".
    pub kind: String,
    /// Holders: the identity ("keep-id" / "remap-root") their namespace maps.
    #[serde(default)]
    pub identity: String,
    /// Containers: the holder they joined, if any.
    #[serde(default)]
    pub holder: Option<String>,
    /// Who owns it: the user's CLI, or one Slurm job (holders are found by scope).
    #[serde(default)]
    pub scope: crate::runtime::holder::Scope,
    /// Holders of a shared image mount: the seconds they stay after their last
    /// container ended (`run.shared_mount_idle`); `None` for holders started by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<u64>,
    /// Holders: what a joiner's user namespace must equal besides the identity (its ID
    /// maps, `holder::share_key`); empty in records of older versions.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
}

/// A record on disk, locked for as long as this value (or a fork holding its fd) lives.
pub struct Registered {
    pub path: PathBuf,
    pub file: File,
}

impl Registered {
    /// Remove the record (normal exit).
    pub fn remove(self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// A fresh 12-hex-digit ID.
pub fn new_id() -> String {
    let mut b = [0u8; 6];
    // SAFETY: b is valid for its length; getrandom fills it.
    let n = unsafe { libc::getrandom(b.as_mut_ptr() as *mut libc::c_void, b.len(), 0) };
    if n != b.len() as isize {
        let t = crate::runtime::sys::monotonic_ns() ^ std::process::id() as u64;
        b.copy_from_slice(&t.to_le_bytes()[..6]);
    }
    hex::encode(b)
}

/// Validate a container name: `[A-Za-z0-9][A-Za-z0-9_.-]*`, ≤ 64 bytes.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if !ok {
        bail!("name {name:?}: use letters, digits, '_', '.', '-' (first a letter or digit, at most 64)");
    }
    Ok(())
}

/// Write and lock a record; a live record with the same name in the same scope is an
/// error (two jobs may each name their holder alike).
pub fn register(rundir: &Path, rec: &Record) -> Result<Registered> {
    if let Some(n) = &rec.name {
        if list(rundir)?
            .iter()
            .any(|r| r.name.as_deref() == Some(n) && r.scope == rec.scope)
        {
            bail!("a container or holder named {n:?} is running (warren rm {n})");
        }
    }
    let path = record_path(rundir, &rec.id);
    // Written and locked under a temporary name, then renamed: `list` never sees a record
    // that is not yet locked (it would take it for stale and delete it).
    let tmp = crate::util::temp_sibling(&path);
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(&tmp)
        .with_context(|| format!("create {}", tmp.display()))?;
    let res = (|| -> Result<()> {
        // SAFETY: file is open; nobody else knows the temporary name.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            bail!(
                "lock {}: {}",
                tmp.display(),
                std::io::Error::last_os_error()
            );
        }
        use std::io::Write;
        (&file)
            .write_all(&serde_json::to_vec(rec)?)
            .with_context(|| format!("write {}", tmp.display()))?;
        fs::rename(&tmp, &path).with_context(|| format!("rename to {}", path.display()))
    })();
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(Registered { path, file })
}

/// Live records (stale ones, whose lock is free, are removed on the way).
pub fn list(rundir: &Path) -> Result<Vec<Record>> {
    let dir = rundir.join("ctr");
    let mut out = Vec::new();
    let rd = match fs::read_dir(&dir) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("read {}", dir.display())),
    };
    for ent in rd.flatten() {
        let p = ent.path();
        if p.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let Ok(f) = File::open(&p) else { continue };
        // SAFETY: f is open; a non-blocking shared lock only tests the holder's LOCK_EX.
        let free = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } == 0;
        if free {
            let _ = fs::remove_file(&p);
            continue;
        }
        // Read whole (from_reader on a File would issue one read per byte).
        let mut text = String::new();
        if std::io::Read::read_to_string(&mut &f, &mut text).is_ok() {
            if let Ok(r) = serde_json::from_str::<Record>(&text) {
                out.push(r);
            }
        }
    }
    out.sort_by(|a, b| a.started.cmp(&b.started).then(a.id.cmp(&b.id)));
    Ok(out)
}

/// Is the record `id` still live (present and locked by its process)?
pub fn is_live(rundir: &Path, id: &str) -> bool {
    let Ok(f) = File::open(record_path(rundir, id)) else {
        return false;
    };
    // SAFETY: f is open; a non-blocking shared lock only tests the owner's LOCK_EX (and
    // is released with f).
    unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) != 0 }
}

/// Where the record `id` lives.
pub fn record_path(rundir: &Path, id: &str) -> PathBuf {
    rundir.join("ctr").join(format!("{id}.json"))
}

/// Unix time in seconds.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_list_prune() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("ctr")).unwrap();
        let rec = Record {
            id: new_id(),
            name: Some("a".into()),
            pid: 1,
            image: "img".into(),
            digest: "sha256:x".into(),
            command: vec!["true".into()],
            started: now(),
            kind: "container".into(),
            identity: String::new(),
            holder: None,
            scope: Default::default(),
            idle: None,
            key: String::new(),
        };
        let r = register(d.path(), &rec).unwrap();
        assert_eq!(list(d.path()).unwrap(), vec![rec.clone()]);
        assert!(register(
            d.path(),
            &Record {
                id: new_id(),
                ..rec.clone()
            }
        )
        .is_err());
        drop(r); // lock released without removal: stale
        assert!(list(d.path()).unwrap().is_empty());
        assert_eq!(fs::read_dir(d.path().join("ctr")).unwrap().count(), 0);
        assert!(
            check_name("ok-1.x").is_ok() && check_name("-x").is_err() && check_name("a/b").is_err()
        );
    }
}

#[cfg(test)]
mod runtime_dir_tests {
    use super::*;

    #[test]
    fn choice_without_the_process_environment() {
        let mut cfg = crate::config::RunConfig::default();
        let d = tempfile::tempdir().unwrap();
        let home = Path::new("/home/a");
        // An XDG dir owned by someone else (root owns the temp dir; uid 4242 does not).
        assert_eq!(
            choose_runtime_dir(&cfg, 4242, home, Some(d.path())),
            PathBuf::from("/tmp/warren-4242")
        );
        assert_eq!(
            choose_runtime_dir(&cfg, 4242, home, None),
            PathBuf::from("/tmp/warren-4242")
        );
        assert_eq!(
            choose_runtime_dir(&cfg, 4242, home, Some(Path::new("relative"))),
            PathBuf::from("/tmp/warren-4242")
        );
        let me = fs::metadata(d.path()).unwrap().uid();
        assert_eq!(
            choose_runtime_dir(&cfg, me, home, Some(d.path())),
            d.path().join("warren")
        );
        // The source and the reason of a fallback, as doctor reports them.
        let src = |x: Option<&Path>, uid| decide_runtime_dir(&cfg, uid, home, x).source;
        assert_eq!(src(Some(d.path()), me), RuntimeDirSource::Xdg);
        let why = |s: RuntimeDirSource| match s {
            RuntimeDirSource::Fallback(w) => w,
            o => panic!("{o:?}"),
        };
        assert!(why(src(None, me)).contains("not set"));
        assert!(why(src(Some(Path::new("rel")), me)).contains("not absolute"));
        assert!(why(src(Some(&d.path().join("no")), me)).contains("does not exist"));
        assert!(why(src(Some(d.path()), 4242)).contains(&format!("belongs to UID {me}")));
        cfg.runtime_dir = Some("~/rt".into());
        assert_eq!(
            choose_runtime_dir(&cfg, me, home, Some(d.path())),
            PathBuf::from("/home/a/rt")
        );
        cfg.runtime_dir = Some("/abs".into());
        assert_eq!(
            choose_runtime_dir(&cfg, me, home, None),
            PathBuf::from("/abs")
        );
        // Created 0700 and owner-checked.
        let rt = d.path().join("rt");
        ensure_runtime_dir(&rt, me).unwrap();
        assert!(rt.join("mnt").is_dir() && rt.join("ctr").is_dir());
        assert_eq!(fs::metadata(&rt).unwrap().mode() & 0o777, 0o700);
        assert!(ensure_runtime_dir(&rt, me.wrapping_add(1)).is_err());
    }
}

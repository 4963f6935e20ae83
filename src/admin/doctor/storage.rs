//! Storage checks: the user's store, shared stores (readable, never writable by users),
//! and the runtime directory.

use super::{can_access, Check, Target};
use crate::config::Config;
use crate::runtime::state::{self, RuntimeDirSource};
use anyhow::Result;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// One directory as seen by the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dir {
    /// The path.
    pub path: PathBuf,
    /// (owner UID, mode) if it exists.
    pub meta: Option<(u32, u32)>,
    /// The user can list and enter it.
    pub readable: bool,
    /// The user can create files in it.
    pub writable: bool,
}

/// What was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// The target's UID.
    pub uid: u32,
    /// The user's store, or why it has none.
    pub user_store: Result<Dir, String>,
    /// Shared stores, in config order.
    pub shared: Vec<Dir>,
    /// The runtime directory `run` would use (`state::decide_runtime_dir`), where it came
    /// from, and whether the user can create it in its parent when it does not exist.
    pub runtime: (Dir, RuntimeDirSource, bool),
}

fn probe(t: &Target, p: &Path) -> Result<Dir> {
    let meta = std::fs::metadata(p)
        .ok()
        .map(|m| (m.uid(), m.mode() & 0o7777));
    let (readable, writable) = if meta.is_some() {
        let r = can_access(t, p, libc::R_OK | libc::X_OK)?;
        let w = can_access(t, p, libc::W_OK | libc::X_OK)?;
        (r, w)
    } else {
        (false, false)
    };
    Ok(Dir {
        path: p.to_path_buf(),
        meta,
        readable,
        writable,
    })
}

/// Read the facts, as the target user.
pub fn gather(cfg: &Config, t: &Target) -> Result<Facts> {
    let home = nix::unistd::User::from_uid(t.uid.into())
        .ok()
        .flatten()
        .map(|u| u.dir);
    let user_store = match (&cfg.store.path, t.switch) {
        (Some(p), _) => Ok(crate::config::expand_tilde(p)),
        (None, false) => cfg.user_store().map_err(|e| format!("{e:#}")),
        (None, true) => home
            .as_ref()
            .map(|h| h.join(".local/share/warren"))
            .ok_or_else(|| "user has no home directory".to_string()),
    };
    let user_store = match user_store {
        Ok(p) => Ok(probe(t, &p)?),
        Err(e) => Err(e),
    };
    let shared = cfg
        .store
        .shared
        .iter()
        .map(|p| probe(t, p))
        .collect::<Result<Vec<_>>>()?;
    // The same decision as `run`'s: the caller's XDG_RUNTIME_DIR when doctoring oneself;
    // for another user, what a front end without that user's environment passes.
    let xdg = if t.switch {
        Some(PathBuf::from(format!("/run/user/{}", t.uid)))
    } else {
        std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from)
    };
    let home = if t.switch {
        home
    } else {
        crate::config::home_dir()
    };
    let choice = state::decide_runtime_dir(
        &cfg.run,
        t.uid,
        home.as_deref().unwrap_or(Path::new("/")),
        xdg.as_deref(),
    );
    let dir = probe(t, &choice.path)?;
    let creatable = match choice.path.parent() {
        Some(parent) if dir.meta.is_none() => can_access(t, parent, libc::W_OK | libc::X_OK)?,
        _ => false,
    };
    let runtime = (dir, choice.source, creatable);
    Ok(Facts {
        uid: t.uid,
        user_store,
        shared,
        runtime,
    })
}

/// Judge the facts.
pub fn judge(f: &Facts) -> Vec<Check> {
    let mut out = Vec::new();
    out.push(match &f.user_store {
        Err(e) => Check::fail(
            "store",
            format!("no user store: {e}"),
            "set store.path in /etc/warren/warren.toml, or XDG_DATA_HOME/HOME",
        ),
        Ok(d) if d.meta.is_none() => Check::ok(
            "store",
            format!(
                "{} does not exist yet (created by the first pull)",
                d.path.display()
            ),
        ),
        Ok(d) if !(d.readable && d.writable) => Check::fail(
            "store",
            format!(
                "{} is not readable and writable by the user",
                d.path.display()
            ),
            format!(
                "chown -R UID {0} or set store.path to a directory the user owns",
                d.path.display()
            )
            .replace("UID", &f.uid.to_string()),
        ),
        Ok(d) => Check::ok("store", format!("{} (writable)", d.path.display())),
    });
    if f.shared.is_empty() {
        out.push(Check::ok(
            "shared_store",
            "no shared stores configured (store.shared)",
        ));
    }
    for d in &f.shared {
        let p = d.path.display();
        out.push(match d.meta {
            None => Check::warn("shared_store", format!("{p} does not exist"), "create it as root (mode 0755) and fill it with `warren pull` run by its owner, or remove it from store.shared"),
            Some(_) if !d.readable => Check::fail("shared_store", format!("{p} is not readable by the user"), format!("as root: chmod a+rX {p}")),
            Some((owner, mode)) if d.writable || mode & 0o022 != 0 || owner == f.uid => Check::fail("shared_store",
                format!("{p} (mode {mode:04o}, owner UID {owner}) is writable by the user: one user could replace images others run"),
                format!("as root: chown root: {p} && chmod go-w {p}")),
            Some((_, mode)) => Check::ok("shared_store", format!("{p} (mode {mode:04o}) readable, not writable by the user")),
        });
    }
    out.extend(judge_runtime(f.uid, &f.runtime));
    out
}

/// The runtime directory as `run` treats it: `run` creates a missing one (0700) and
/// makes an existing one 0700, refuses one it does not own, and falls back to
/// `/tmp/warren-UID` from an unusable `XDG_RUNTIME_DIR` (a warning here, as it works).
fn judge_runtime(uid: u32, (d, source, creatable): &(Dir, RuntimeDirSource, bool)) -> Vec<Check> {
    let p = d.path.display();
    let from = match source {
        RuntimeDirSource::Config => "run.runtime_dir",
        RuntimeDirSource::Xdg => "$XDG_RUNTIME_DIR/warren",
        RuntimeDirSource::Fallback(_) => "fallback",
    };
    let mut out = Vec::new();
    if let RuntimeDirSource::Fallback(why) = source {
        out.push(Check::warn(
            "runtime_dir_fallback",
            format!("{why}: warren run uses {p} (on /tmp, shared by all users)"),
            format!("as root: install -d -m 0700 -o {uid} /run/user/{uid}   (pam_systemd/logind normally creates it), or set run.runtime_dir"),
        ));
    }
    out.push(match d.meta {
        None if *creatable => Check::ok("runtime_dir", format!("{p} ({from}) does not exist yet: warren run creates it (0700)")),
        None => Check::fail("runtime_dir", format!("{p} ({from}) does not exist and the user cannot create it"),
            format!("as root: install -d -m 0700 -o {uid} {p}, or set run.runtime_dir to a directory the user owns")),
        Some((owner, _)) if owner != uid => Check::fail("runtime_dir", format!("{p} ({from}) is owned by UID {owner}, not {uid}: warren run refuses it"),
            format!("as root: chown {uid} {p}; chmod 0700 {p}   (or remove it)")),
        Some((_, mode)) if mode & 0o077 != 0 => Check::ok("runtime_dir", format!("{p} ({from}) has mode {mode:04o}: warren run makes it 0700")),
        Some(_) => Check::ok("runtime_dir", format!("{p} ({from}), owned, 0700")),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::doctor::Status;

    fn dir(p: &str, meta: Option<(u32, u32)>, r: bool, w: bool) -> Dir {
        Dir {
            path: p.into(),
            meta,
            readable: r,
            writable: w,
        }
    }

    #[test]
    fn judges_each_case() {
        let f = Facts {
            uid: 1000,
            user_store: Ok(dir("/home/a/.local/share/warren", None, false, false)),
            shared: vec![
                dir("/shared/ok", Some((0, 0o755)), true, false),
                dir("/shared/open", Some((0, 0o777)), true, true),
                dir("/shared/hidden", Some((0, 0o700)), false, false),
            ],
            runtime: (
                dir("/run/user/1000/warren", Some((1000, 0o700)), true, true),
                RuntimeDirSource::Xdg,
                false,
            ),
        };
        let s: Vec<(&str, Status)> = judge(&f).iter().map(|c| (c.id, c.status)).collect();
        assert_eq!(
            s,
            vec![
                ("store", Status::Ok),
                ("shared_store", Status::Ok),
                ("shared_store", Status::Fail),
                ("shared_store", Status::Fail),
                ("runtime_dir", Status::Ok)
            ]
        );
    }

    #[test]
    fn runtime_dir_judged_as_run_treats_it() {
        let st = |d: Dir, src: RuntimeDirSource, creatable: bool| -> Vec<(&str, Status)> {
            judge_runtime(1000, &(d, src, creatable))
                .iter()
                .map(|c| (c.id, c.status))
                .collect()
        };
        let fb =
            || RuntimeDirSource::Fallback("XDG_RUNTIME_DIR /run/user/1000 does not exist".into());
        // Missing XDG dir: run falls back and works, doctor warns (not fails).
        assert_eq!(
            st(dir("/tmp/warren-1000", None, false, false), fb(), true),
            vec![
                ("runtime_dir_fallback", Status::Warn),
                ("runtime_dir", Status::Ok)
            ]
        );
        // The fallback squatted by another user: run refuses it, doctor fails it.
        assert_eq!(
            st(
                dir("/tmp/warren-1000", Some((1001, 0o700)), true, true),
                fb(),
                false
            ),
            vec![
                ("runtime_dir_fallback", Status::Warn),
                ("runtime_dir", Status::Fail)
            ]
        );
        // An open mode is fixed by run.
        assert_eq!(
            st(
                dir("/r", Some((1000, 0o755)), true, true),
                RuntimeDirSource::Config,
                false
            ),
            vec![("runtime_dir", Status::Ok)]
        );
        // A configured dir that cannot be created.
        assert_eq!(
            st(
                dir("/nope/r", None, false, false),
                RuntimeDirSource::Config,
                false
            ),
            vec![("runtime_dir", Status::Fail)]
        );
    }
}

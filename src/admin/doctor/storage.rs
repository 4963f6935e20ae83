//! Storage checks: the user's store, shared stores (readable, never writable by users),
//! and the runtime directory.

use super::{can_access, Check, Target};
use crate::config::Config;
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
    /// The runtime directory and where it came from.
    pub runtime: Option<(Dir, &'static str)>,
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
    let runtime = match (
        &cfg.run.runtime_dir,
        std::env::var_os("XDG_RUNTIME_DIR"),
        t.switch,
    ) {
        (Some(p), _, _) => Some((p.clone(), "run.runtime_dir")),
        (None, Some(x), false) => Some((PathBuf::from(x), "$XDG_RUNTIME_DIR")),
        (None, _, _) => Some((
            PathBuf::from(format!("/run/user/{}", t.uid)),
            "/run/user/UID",
        )),
    };
    let runtime = match runtime {
        Some((p, from)) => Some((probe(t, &p)?, from)),
        None => None,
    };
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
    if let Some((d, from)) = &f.runtime {
        let p = d.path.display();
        let fallback = format!("/tmp/warren-{}", f.uid);
        out.push(match d.meta {
            None => Check::warn("runtime_dir", format!("{p} ({from}) does not exist: falling back to {fallback}"),
                format!("as root: install -d -m 0700 -o {uid} {p}   (pam_systemd/logind normally creates it)", uid = f.uid)),
            Some((owner, _)) if owner != f.uid => Check::fail("runtime_dir", format!("{p} ({from}) is owned by UID {owner}, not {}", f.uid),
                format!("as root: chown {} {p}; chmod 0700 {p}", f.uid)),
            Some((_, mode)) if mode & 0o077 != 0 => Check::warn("runtime_dir", format!("{p} ({from}) has mode {mode:04o}: other users can see container state"),
                format!("chmod 0700 {p}")),
            Some(_) => Check::ok("runtime_dir", format!("{p} ({from}), owned, 0700")),
        });
    }
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
            runtime: Some((
                dir("/run/user/1000", Some((1000, 0o755)), true, true),
                "$XDG_RUNTIME_DIR",
            )),
        };
        let s: Vec<(&str, Status)> = judge(&f).iter().map(|c| (c.id, c.status)).collect();
        assert_eq!(
            s,
            vec![
                ("store", Status::Ok),
                ("shared_store", Status::Ok),
                ("shared_store", Status::Fail),
                ("shared_store", Status::Fail),
                ("runtime_dir", Status::Warn)
            ]
        );
    }
}

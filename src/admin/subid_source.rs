//! Where `warren admin subid` reads from: file paths (`--root`, per-file overrides),
//! accounts (NSS or files), login.defs, and which users are selected.

use super::ids::IdSet;
use super::logindefs::{self, LoginDefs};
use super::passwd::{self, UserDb};
use super::subid_plan::{Candidate, RealIds};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// The files involved. With `passwd` unset, accounts come from NSS.
#[derive(Debug, Clone)]
pub struct Paths {
    /// `/etc/subuid`.
    pub subuid: PathBuf,
    /// `/etc/subgid`.
    pub subgid: PathBuf,
    /// passwd-format file; `None` = NSS (getpwent).
    pub passwd: Option<PathBuf>,
    /// group-format file; `None` = NSS (getgrent) when `passwd` is `None`, else none.
    pub group: Option<PathBuf>,
    /// `/etc/login.defs`.
    pub login_defs: PathBuf,
}

impl Paths {
    /// Defaults under `root` (`/` when `None`); with a root, accounts come from
    /// `ROOT/etc/passwd` and `ROOT/etc/group` instead of NSS.
    pub fn under(root: Option<&Path>) -> Paths {
        let r = root.unwrap_or(Path::new("/"));
        Paths {
            subuid: r.join("etc/subuid"),
            subgid: r.join("etc/subgid"),
            passwd: root.map(|r| r.join("etc/passwd")),
            group: root.map(|r| r.join("etc/group")),
            login_defs: r.join("etc/login.defs"),
        }
    }

    /// Load the accounts.
    pub fn load_db(&self) -> Result<UserDb> {
        match &self.passwd {
            Some(p) => passwd::from_files(p, self.group.as_deref()),
            None => passwd::from_nss(),
        }
    }

    /// Load login.defs with the defaults of the chosen strategy.
    pub fn load_defs(&self, deterministic: bool) -> Result<LoginDefs> {
        logindefs::read(&self.login_defs, deterministic)
    }
}

/// Every UID and GID in use.
pub fn real_ids(db: &UserDb) -> RealIds {
    let mut uids: Vec<u32> = db.users.iter().map(|a| a.uid).collect();
    uids.sort_unstable();
    uids.dedup();
    let mut gids = db.gids.clone();
    gids.sort_unstable();
    gids.dedup();
    let set = |v: Vec<u32>| {
        let mut s = IdSet::new();
        // Sorted input: merge runs first so the set is built in one pass.
        let mut it = v.into_iter();
        if let Some(first) = it.next() {
            let (mut a, mut b) = (first as u64, first as u64 + 1);
            for x in it {
                let x = x as u64;
                if x == b {
                    b += 1;
                } else {
                    s.insert(a, b);
                    (a, b) = (x, x + 1);
                }
            }
            s.insert(a, b);
        }
        s
    };
    RealIds {
        uids: set(uids),
        gids: set(gids),
    }
}

/// Which users to provision.
#[derive(Debug, Clone)]
pub enum Selection {
    /// Every enumerated account with UID in `UID_MIN..=UID_MAX` (all accounts with `all`).
    Enumerated {
        /// Include system accounts too.
        all: bool,
    },
    /// Names listed in a file, one per line (`#` comments).
    UsersFile(PathBuf),
    /// Every UID in `A..=B`; UIDs without an account are written by number.
    UidRange(u32, u32),
}

/// Parse `A-B`.
pub fn parse_uid_range(s: &str) -> Result<(u32, u32)> {
    let (a, b) = s
        .split_once('-')
        .with_context(|| format!("UID range {s:?}: expected A-B"))?;
    let a: u32 = a
        .trim()
        .parse()
        .with_context(|| format!("UID range {s:?}: start"))?;
    let b: u32 = b
        .trim()
        .parse()
        .with_context(|| format!("UID range {s:?}: end"))?;
    if a > b {
        bail!("UID range {s:?}: start is after end");
    }
    if b - a >= 10_000_000 {
        bail!("UID range {s:?}: more than 10,000,000 UIDs");
    }
    Ok((a, b))
}

/// The candidates for the planner. `nss` enables per-name/per-UID NSS lookups for
/// accounts that enumeration does not list (SSSD with `enumerate = false`).
pub fn candidates(
    db: &UserDb,
    sel: &Selection,
    defs: &LoginDefs,
    nss: bool,
) -> Result<Vec<Candidate>> {
    let by_name = db.by_name();
    match sel {
        Selection::Enumerated { all } => Ok(db
            .users
            .iter()
            .filter(|a| *all || (a.uid as u64 >= defs.uid_min && a.uid as u64 <= defs.uid_max))
            .map(|a| Candidate {
                owner: a.name.clone(),
                uid: a.uid,
            })
            .collect()),
        Selection::UsersFile(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()))?;
            let mut out = Vec::new();
            for (i, raw) in text.lines().enumerate() {
                let name = raw.trim();
                if name.is_empty() || name.starts_with('#') {
                    continue;
                }
                let uid = match by_name.get(name) {
                    Some(a) => a.uid,
                    None if nss => match nix::unistd::User::from_name(name) {
                        Ok(Some(u)) => u.uid.as_raw(),
                        _ => bail!("{}:{}: no such user {name:?}", p.display(), i + 1),
                    },
                    None => bail!("{}:{}: no such user {name:?}", p.display(), i + 1),
                };
                out.push(Candidate {
                    owner: name.to_string(),
                    uid,
                });
            }
            Ok(out)
        }
        Selection::UidRange(a, b) => {
            let mut by_uid = std::collections::HashMap::with_capacity(db.users.len());
            for acc in &db.users {
                by_uid.entry(acc.uid).or_insert(acc.name.as_str());
            }
            Ok((*a..=*b)
                .map(|uid| {
                    let owner = match by_uid.get(&uid) {
                        Some(n) => n.to_string(),
                        None if nss => nix::unistd::User::from_uid(uid.into())
                            .ok()
                            .flatten()
                            .map(|u| u.name)
                            .unwrap_or_else(|| uid.to_string()),
                        None => uid.to_string(),
                    };
                    Candidate { owner, uid }
                })
                .collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_ranges() {
        assert_eq!(parse_uid_range("1000-1009").unwrap(), (1000, 1009));
        assert!(parse_uid_range("9-1").is_err());
        assert!(parse_uid_range("x").is_err());
        assert!(parse_uid_range("0-4294967295").is_err());
    }

    #[test]
    fn selection_filters_regular_users() {
        let db =
            passwd::parse_passwd("root:x:0:0::/:/\na:x:1000:1000::/:/\nn:x:65534:65534::/:/\n")
                .unwrap();
        let defs = logindefs::parse("", true).unwrap();
        let c = candidates(&db, &Selection::Enumerated { all: false }, &defs, false).unwrap();
        assert_eq!(
            c,
            vec![Candidate {
                owner: "a".into(),
                uid: 1000
            }]
        );
        let c = candidates(&db, &Selection::UidRange(999, 1000), &defs, false).unwrap();
        assert_eq!(c[0].owner, "999");
        assert_eq!(c[1].owner, "a");
        let r = real_ids(&db);
        assert!(r.uids.overlap(0, 1).is_some());
        assert!(r.uids.overlap(1, 1000).is_none());
        assert_eq!(r.gids.len(), 3);
    }
}

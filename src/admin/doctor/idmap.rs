//! ID-mapping checks: newuidmap/newgidmap installed with the privilege they need, and the
//! user's subordinate ranges.

use super::{Check, Options, Target};
use crate::admin::logindefs;
use crate::admin::subid_check::TYPICAL_IMAGE_IDS;
use crate::admin::subid_plan::deterministic_range;
use crate::config::Config;
use anyhow::Result;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// `CAP_SETGID` bit number.
pub const CAP_SETGID: u32 = 6;
/// `CAP_SETUID` bit number.
pub const CAP_SETUID: u32 = 7;

/// One helper program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Helper {
    /// `newuidmap` or `newgidmap`.
    pub id: &'static str,
    /// As configured (name or path).
    pub configured: String,
    /// Resolved path, if found.
    pub path: Option<PathBuf>,
    /// Owner UID and mode bits.
    pub owner: u32,
    /// Mode bits.
    pub mode: u32,
    /// File capabilities: permitted set and effective flag, if the xattr exists.
    pub caps: Option<(u64, bool)>,
}

/// Read both helpers' facts.
pub fn gather_helpers(cfg: &Config, opts: &Options) -> Vec<Helper> {
    [
        ("newuidmap", &opts.newuidmap, &cfg.run.newuidmap),
        ("newgidmap", &opts.newgidmap, &cfg.run.newgidmap),
    ]
    .into_iter()
    .map(|(id, flag, conf)| {
        let configured = flag
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| conf.clone());
        let path = crate::util::which(&configured);
        let meta = path.as_ref().and_then(|p| std::fs::metadata(p).ok());
        Helper {
            id,
            configured,
            owner: meta.as_ref().map_or(u32::MAX, |m| m.uid()),
            mode: meta.as_ref().map_or(0, |m| m.mode()),
            caps: path.as_deref().and_then(read_caps),
            path,
        }
    })
    .collect()
}

/// The `security.capability` xattr, parsed.
fn read_caps(p: &Path) -> Option<(u64, bool)> {
    let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str())).ok()?;
    let mut buf = [0u8; 64];
    // SAFETY: valid NUL-terminated strings and a buffer of the length passed.
    let n = unsafe {
        libc::getxattr(
            c.as_ptr(),
            c"security.capability".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n <= 0 {
        return None;
    }
    parse_caps(&buf[..n as usize])
}

/// Parse `struct vfs_cap_data` (revisions 1–3): the permitted set and the effective flag.
pub fn parse_caps(b: &[u8]) -> Option<(u64, bool)> {
    let word =
        |o: usize| -> Option<u32> { Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?)) };
    let magic = word(0)?;
    let effective = magic & 1 != 0;
    match magic & 0xFF00_0000 {
        0x0100_0000 => Some((word(4)? as u64, effective)),
        0x0200_0000 | 0x0300_0000 => Some((word(4)? as u64 | (word(12)? as u64) << 32, effective)),
        _ => None,
    }
}

/// Judge the helpers.
pub fn judge_helpers(hs: &[Helper]) -> Vec<Check> {
    hs.iter()
        .map(|h| {
            let Some(p) = &h.path else {
                return Check::fail(h.id, format!("{} not found", h.configured),
                    "as root: apt install uidmap (Debian/Ubuntu) or dnf install shadow-utils (RHEL); or set run.newuidmap/run.newgidmap in /etc/warren/warren.toml");
            };
            let cap = if h.id == "newuidmap" { CAP_SETUID } else { CAP_SETGID };
            let cap_name = if h.id == "newuidmap" { "cap_setuid" } else { "cap_setgid" };
            if h.mode & 0o4000 != 0 && h.owner == 0 {
                return Check::ok(h.id, format!("{} is setuid root", p.display()));
            }
            if let Some((perm, eff)) = h.caps {
                if perm & (1 << cap) != 0 && eff {
                    return Check::ok(h.id, format!("{} has file capability {cap_name}+ep", p.display()));
                }
            }
            Check::fail(
                h.id,
                format!("{} is neither setuid root nor has {cap_name}+ep (mode {:o}, owner UID {}): it cannot write the ID map", p.display(), h.mode & 0o7777, h.owner),
                format!("as root: chown root:root {0} && chmod u+s {0}   (or: setcap {cap_name}+ep {0})", p.display()),
            )
        })
        .collect()
}

/// The user's entries in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubIds {
    /// `subuid` or `subgid`.
    pub id: &'static str,
    /// The file.
    pub file: PathBuf,
    /// (start, count, line) of the user's ranges, by name or UID.
    pub ranges: Vec<(u64, u64, usize)>,
    /// A read error, if the file could not be read.
    pub error: Option<String>,
}

/// What the subid checks need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubIdFacts {
    /// The user.
    pub user: String,
    /// Their UID.
    pub uid: u32,
    /// subuid then subgid.
    pub files: Vec<SubIds>,
    /// The deterministic range for this UID under login.defs, to suggest in the fix.
    pub suggested: Option<(u64, u64)>,
}

/// Read the user's entries.
pub fn gather_subids(t: &Target, opts: &Options) -> Result<SubIdFacts> {
    let files = [("subuid", &opts.subuid), ("subgid", &opts.subgid)]
        .into_iter()
        .map(|(id, p)| match crate::subid::read(p) {
            Ok(f) => SubIds {
                id,
                file: p.clone(),
                ranges: f
                    .ranges_for(&t.name, t.uid)
                    .iter()
                    .map(|e| (e.start, e.count, e.line))
                    .collect(),
                error: None,
            },
            Err(e) => SubIds {
                id,
                file: p.clone(),
                ranges: Vec::new(),
                error: Some(format!("{e:#}")),
            },
        })
        .collect();
    let suggested = logindefs::read(&opts.login_defs, true)
        .ok()
        .and_then(|d| deterministic_range(t.uid as u64, d.uid_min, &d.sub_uid).ok());
    Ok(SubIdFacts {
        user: t.name.clone(),
        uid: t.uid,
        files,
        suggested,
    })
}

/// Judge the user's ranges.
pub fn judge_subids(f: &SubIdFacts) -> Vec<Check> {
    let fix_add = || {
        match f.suggested {
        Some((s, n)) => format!(
            "as root: usermod --add-subuids {s}-{e} --add-subgids {s}-{e} {u}   (the deterministic range for UID {uid}); or give every user a range: warren admin subid apply",
            e = s + n - 1, u = f.user, uid = f.uid
        ),
        None => format!("as root: warren admin subid apply --strategy first-fit   (gives {} and every other user a free range)", f.user),
    }
    };
    f.files
        .iter()
        .map(|s| {
            if let Some(e) = &s.error {
                return Check::fail(s.id, format!("cannot read {}: {e}", s.file.display()), "as root: chmod 0644 /etc/subuid /etc/subgid");
            }
            if s.ranges.is_empty() {
                return Check::fail(
                    s.id,
                    format!("no {} range for {} (UID {}) in {}: only a single-ID mapping is possible (files owned by other IDs in images fail)", s.id, f.user, f.uid, s.file.display()),
                    fix_add(),
                );
            }
            let total: u64 = s.ranges.iter().map(|r| r.1).sum();
            let list: Vec<String> = s.ranges.iter().map(|(a, n, l)| format!("{a}:{n} (line {l})")).collect();
            let detail = format!("{} (UID {}) in {}: {}", f.user, f.uid, s.file.display(), list.join(", "));
            if total < TYPICAL_IMAGE_IDS {
                Check::warn(s.id, format!("{detail}: only {total} IDs, images with files owned by IDs up to 65535 need 65536"), fix_add())
            } else {
                Check::ok(s.id, detail)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::doctor::Status;

    #[test]
    fn caps_parse() {
        // setcap cap_setuid+ep: revision 2, effective, permitted bit 7.
        let mut b = vec![0x01, 0, 0, 0x02];
        b.extend_from_slice(&(1u32 << CAP_SETUID).to_le_bytes());
        b.extend_from_slice(&[0; 12]);
        assert_eq!(parse_caps(&b), Some((1 << CAP_SETUID, true)));
        assert_eq!(parse_caps(&[1, 2]), None);
    }

    fn helper(mode: u32, owner: u32, caps: Option<(u64, bool)>) -> Helper {
        Helper {
            id: "newuidmap",
            configured: "newuidmap".into(),
            path: Some("/usr/bin/newuidmap".into()),
            owner,
            mode,
            caps,
        }
    }

    #[test]
    fn helpers() {
        let v = judge_helpers(&[
            helper(0o104755, 0, None),
            helper(0o100755, 0, None),
            helper(0o100755, 0, Some((1 << CAP_SETUID, true))),
            helper(0o100755, 0, Some((1 << CAP_SETGID, true))),
            helper(0o104755, 1000, None),
            Helper {
                path: None,
                ..helper(0, 0, None)
            },
        ]);
        let s: Vec<Status> = v.iter().map(|c| c.status).collect();
        assert_eq!(
            s,
            vec![
                Status::Ok,
                Status::Fail,
                Status::Ok,
                Status::Fail,
                Status::Fail,
                Status::Fail
            ]
        );
        assert!(v[1]
            .fix
            .as_deref()
            .unwrap()
            .contains("chmod u+s /usr/bin/newuidmap"));
        assert!(v[5].fix.as_deref().unwrap().contains("apt install uidmap"));
    }

    #[test]
    fn subids() {
        let mk = |r: Vec<(u64, u64, usize)>| SubIds {
            id: "subuid",
            file: "/etc/subuid".into(),
            ranges: r,
            error: None,
        };
        let f = SubIdFacts {
            user: "bob".into(),
            uid: 1001,
            files: vec![
                mk(vec![(100000, 65536, 3)]),
                mk(vec![]),
                mk(vec![(1, 100, 1)]),
            ],
            suggested: Some((165536, 65536)),
        };
        let v = judge_subids(&f);
        assert_eq!(v[0].status, Status::Ok);
        assert_eq!(v[1].status, Status::Fail);
        assert!(v[1]
            .fix
            .as_deref()
            .unwrap()
            .contains("usermod --add-subuids 165536-231071 --add-subgids 165536-231071 bob"));
        assert_eq!(v[2].status, Status::Warn);
    }
}

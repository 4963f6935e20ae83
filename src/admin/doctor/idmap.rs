//! ID-mapping checks: newuidmap/newgidmap installed with the privilege they need, and the
//! user's subordinate ranges.

use super::{Check, Options, Target};
use crate::admin::logindefs;
use crate::admin::subid_check::TYPICAL_IMAGE_IDS;
use crate::admin::subid_plan::{self, Candidate, Params, RealIds, Strategy};
use crate::config::Config;
use crate::subid::SubIdFile;
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
    /// Lines newuidmap/newgidmap ignore: (line, reason, whether its owner field is this
    /// user's name or UID).
    pub problems: Vec<(usize, String, bool)>,
    /// A read error, if the file could not be read.
    pub error: Option<String>,
    /// The read error was "permission denied".
    pub denied: bool,
}

/// Ranges proposed for a user who lacks them, and the policy that chose them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suggestion {
    /// New subuid range (start, count), when the user has none.
    pub subuid: Option<(u64, u64)>,
    /// New subgid range (start, count), when the user has none.
    pub subgid: Option<(u64, u64)>,
    /// Which policy chose them and why, for the fix text.
    pub policy: String,
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
    /// Ranges for a user without them, from the planner (never overlapping an existing
    /// range or a real ID); `None` when the user has both or nothing fits.
    pub suggested: Option<Suggestion>,
}

/// Read the user's entries, and plan ranges for what is missing.
pub fn gather_subids(t: &Target, opts: &Options) -> Result<SubIdFacts> {
    let mut parsed = Vec::new();
    let files = [("subuid", &opts.subuid), ("subgid", &opts.subgid)]
        .into_iter()
        .map(|(id, p)| match crate::subid::read(p) {
            Ok(f) => {
                let uid_s = t.uid.to_string();
                let s = SubIds {
                    id,
                    file: p.clone(),
                    ranges: f
                        .ranges_for(&t.name, t.uid)
                        .iter()
                        .map(|e| (e.start, e.count, e.line))
                        .collect(),
                    problems: f
                        .problems
                        .iter()
                        .map(|pr| {
                            let mine = pr
                                .owner
                                .as_deref()
                                .is_some_and(|o| o == t.name || o == uid_s);
                            (pr.line, pr.reason.clone(), mine)
                        })
                        .collect(),
                    error: None,
                    denied: false,
                };
                parsed.push(f);
                s
            }
            Err(e) => {
                parsed.push(SubIdFile::default());
                SubIds {
                    id,
                    file: p.clone(),
                    ranges: Vec::new(),
                    problems: Vec::new(),
                    denied: e.source.kind() == std::io::ErrorKind::PermissionDenied,
                    error: Some(e.source.to_string()),
                }
            }
        })
        .collect::<Vec<_>>();
    let readable = files.iter().all(|f| f.error.is_none());
    // Real IDs the proposal must avoid: every account NSS lists (cheap where enumeration
    // is off: then only the user's own IDs are known, and the planner's base,
    // SUB_UID_MIN, is far above normal UIDs).
    let mut real =
        crate::admin::subid_source::real_ids(&crate::admin::passwd::from_nss().unwrap_or_default());
    real.uids.insert_id(t.uid as u64);
    real.gids.insert_id(t.gid as u64);
    let suggested = readable
        .then(|| {
            suggest(
                &t.name,
                t.uid,
                &parsed[0],
                &parsed[1],
                &real,
                &opts.login_defs,
            )
        })
        .flatten();
    Ok(SubIdFacts {
        user: t.name.clone(),
        uid: t.uid,
        files,
        suggested,
    })
}

/// Plan ranges for `name` with the same planner as `warren admin subid apply`:
/// deterministic from `login_defs` first, first-fit when the deterministic range is taken
/// or does not fit. `None` when the user needs nothing or nothing fits.
pub fn suggest(
    name: &str,
    uid: u32,
    subuid: &SubIdFile,
    subgid: &SubIdFile,
    real: &RealIds,
    login_defs: &Path,
) -> Option<Suggestion> {
    let cand = [Candidate {
        owner: name.to_string(),
        uid,
    }];
    let run = |strategy| {
        let defs = logindefs::read(login_defs, strategy == Strategy::Deterministic).ok()?;
        let params = Params {
            strategy,
            uid_min: defs.uid_min,
            sub_uid: defs.sub_uid,
            sub_gid: defs.sub_gid,
        };
        subid_plan::plan(&params, &cand, subuid, subgid, real)
            .ok()
            .map(|p| (p, defs))
    };
    let pick = |p: &subid_plan::Plan| {
        (
            p.subuid.first().map(|e| (e.start, e.count)),
            p.subgid.first().map(|e| (e.start, e.count)),
        )
    };
    let (det, defs) = run(Strategy::Deterministic)?;
    let why_not = if det.errors.is_empty() {
        let (u, g) = pick(&det);
        if u.is_none() && g.is_none() {
            return None;
        }
        return Some(Suggestion {
            subuid: u,
            subgid: g,
            policy: format!(
                "chosen by the deterministic policy: SUB_UID_MIN {} + (UID {uid} - UID_MIN {}) x SUB_UID_COUNT {} from {}, free in both files; warren admin subid apply gives the same on every node",
                defs.sub_uid.min, defs.uid_min, defs.sub_uid.count, login_defs.display()
            ),
        });
    } else {
        det.errors
            .iter()
            .map(|r| format!("{}: {}", r.kind.name(), r.message))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let (ff, defs) = run(Strategy::FirstFit)?;
    if !ff.errors.is_empty() {
        return None;
    }
    let (u, g) = pick(&ff);
    if u.is_none() && g.is_none() {
        return None;
    }
    Some(Suggestion {
        subuid: u,
        subgid: g,
        policy: format!(
            "chosen first-fit: the lowest range of {} IDs at or above SUB_UID_MIN {} free in both files, because the deterministic range is refused ({why_not})",
            defs.sub_uid.count, defs.sub_uid.min
        ),
    })
}

/// Judge the user's ranges.
pub fn judge_subids(f: &SubIdFacts) -> Vec<Check> {
    let fix_add = || {
        match &f.suggested {
        Some(sg) => {
            let mut args = String::new();
            for (flag, r) in [("--add-subuids", sg.subuid), ("--add-subgids", sg.subgid)] {
                if let Some((s, n)) = r {
                    args.push_str(&format!("{flag} {s}-{} ", s + n - 1));
                }
            }
            format!(
                "as root: usermod {args}{u}   ({}); or give every user a range: warren admin subid apply",
                sg.policy,
                u = f.user
            )
        }
        None => format!(
            "as root: warren admin subid apply --strategy first-fit   (gives {} and every other user a free range; warren admin subid check shows what is in the way)",
            f.user
        ),
    }
    };
    let mut out: Vec<Check> = f
        .files
        .iter()
        .map(|s| {
            if let Some(e) = &s.error {
                let fix = if s.denied {
                    format!("as root: chmod 0644 {}", s.file.display())
                } else {
                    format!("as root: make {} a readable regular file", s.file.display())
                };
                return Check::fail(s.id, format!("cannot read {}: {e}", s.file.display()), fix);
            }
            let mine: Vec<&(usize, String, bool)> = s.problems.iter().filter(|p| p.2).collect();
            if s.ranges.is_empty() && !mine.is_empty() {
                let (l, why, _) = mine[0];
                return Check::fail(
                    s.id,
                    format!("{}:{l}: the {} line of {} (UID {}) is ignored by new{}map: {why}", s.file.display(), s.id, f.user, f.uid, &s.id[3..]),
                    format!("as root: correct line {l} of {} (then: warren admin subid check)", s.file.display()),
                );
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
                Check::warn(s.id, format!("{detail}: only {total} IDs, images with files owned by IDs up to 65535 need 65536"),
                    format!("as root: replace the range with one of 65536 IDs that overlaps nothing (usermod --del-{0}s/--add-{0}s {1}; warren admin subid check verifies)", s.id, f.user))
            } else {
                Check::ok(s.id, detail)
            }
        })
        .collect();
    // Malformed lines hurt whoever they name: newuidmap skips them, `warren run` would
    // then find no range. Each is listed as FILE:LINE.
    for s in f.files.iter().filter(|s| s.error.is_none()) {
        let id = if s.id == "subuid" {
            "subuid_lines"
        } else {
            "subgid_lines"
        };
        if s.problems.is_empty() {
            out.push(Check::ok(
                id,
                format!("every line of {} is valid", s.file.display()),
            ));
            continue;
        }
        let mut list: Vec<String> = s
            .problems
            .iter()
            .take(5)
            .map(|(l, why, _)| format!("{}:{l}: {why}", s.file.display()))
            .collect();
        if s.problems.len() > 5 {
            list.push(format!("and {} more", s.problems.len() - 5));
        }
        out.push(Check::fail(
            id,
            format!(
                "{} line(s) that new{}map ignores (the users they name get no range): {}",
                s.problems.len(),
                &s.id[3..],
                list.join("; ")
            ),
            format!(
                "as root: correct or remove these lines of {} (warren admin subid check lists them all)",
                s.file.display()
            ),
        ));
    }
    out
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

    fn mk(r: Vec<(u64, u64, usize)>) -> SubIds {
        SubIds {
            id: "subuid",
            file: "/etc/subuid".into(),
            ranges: r,
            problems: Vec::new(),
            error: None,
            denied: false,
        }
    }

    #[test]
    fn subids() {
        let f = SubIdFacts {
            user: "bob".into(),
            uid: 1001,
            files: vec![
                mk(vec![(100000, 65536, 3)]),
                mk(vec![]),
                mk(vec![(1, 100, 1)]),
            ],
            suggested: Some(Suggestion {
                subuid: Some((165536, 65536)),
                subgid: Some((165536, 65536)),
                policy: "chosen by the deterministic policy".into(),
            }),
        };
        let v = judge_subids(&f);
        assert_eq!(v[0].status, Status::Ok);
        assert_eq!(v[1].status, Status::Fail);
        let fix = v[1].fix.as_deref().unwrap();
        assert!(
            fix.contains("usermod --add-subuids 165536-231071 --add-subgids 165536-231071 bob"),
            "{fix}"
        );
        assert!(fix.contains("deterministic policy"), "{fix}");
        assert_eq!(v[2].status, Status::Warn);
        // One `*_lines` check per readable file, OK when no line is malformed.
        assert_eq!(v.len(), 6);
        assert!(v[3..].iter().all(|c| c.status == Status::Ok));
    }

    #[test]
    fn malformed_lines_fail_with_file_and_line() {
        let mut own = mk(vec![]);
        own.problems = vec![(2, "ends with a carriage return".into(), true)];
        let mut other = mk(vec![(100000, 65536, 1)]);
        other.id = "subgid";
        other.file = "/etc/subgid".into();
        other.problems = vec![(7, "not valid UTF-8".into(), false)];
        let f = SubIdFacts {
            user: "bob".into(),
            uid: 1001,
            files: vec![own, other],
            suggested: None,
        };
        let v = judge_subids(&f);
        assert_eq!(v[0].status, Status::Fail);
        assert!(
            v[0].detail.starts_with("/etc/subuid:2: ") && v[0].detail.contains("carriage return"),
            "{v:?}"
        );
        assert_eq!(v[1].status, Status::Ok);
        let lines = &v[3];
        assert_eq!((lines.id, lines.status), ("subgid_lines", Status::Fail));
        assert!(
            lines.detail.contains("/etc/subgid:7: not valid UTF-8"),
            "{lines:?}"
        );
    }

    fn defs_file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn suggestion_never_overlaps_and_names_its_policy() {
        use crate::subid::parse;
        let defs = defs_file("UID_MIN 1000\nSUB_UID_MIN 100000\nSUB_UID_MAX 600100000\nSUB_UID_COUNT 65536\nSUB_GID_MIN 100000\nSUB_GID_MAX 600100000\nSUB_GID_COUNT 65536\n");
        let real = RealIds::default();
        // The field report: UID 1002's deterministic range is 231072-296607, and another
        // user already has 231072:65536. The proposal must go elsewhere.
        let taken = parse("alice:100000:65536\nmallory:231072:65536\n");
        let s = suggest("carol", 1002, &taken, &taken, &real, defs.path()).unwrap();
        let (start, n) = s.subuid.unwrap();
        for e in &taken.entries {
            assert!(
                start + n <= e.start || start >= e.end(),
                "{s:?} overlaps {e:?}"
            );
        }
        assert_eq!(start, 165536, "the lowest free range");
        assert_eq!(s.subuid, s.subgid);
        assert!(s.policy.starts_with("chosen first-fit"), "{}", s.policy);
        assert!(s.policy.contains("231072-296607 overlaps"), "{}", s.policy);
        // Free: the deterministic range, named as such.
        let free = parse("alice:100000:65536\n");
        let s = suggest("carol", 1002, &free, &free, &real, defs.path()).unwrap();
        assert_eq!(s.subuid, Some((231072, 65536)));
        assert!(s.policy.contains("deterministic policy"), "{}", s.policy);
        // Only the missing file gets a range; a user with both needs none.
        let u = parse("carol:231072:65536\n");
        let s = suggest("carol", 1002, &u, &free, &real, defs.path()).unwrap();
        assert_eq!((s.subuid, s.subgid), (None, Some((231072, 65536))));
        assert_eq!(suggest("carol", 1002, &u, &u, &real, defs.path()), None);
    }
}

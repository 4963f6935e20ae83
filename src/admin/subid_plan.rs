//! The subuid/subgid planner: which users get which new ranges. Pure: users, existing
//! files and IDs in use in, new entries and refusals out.
//!
//! Two strategies:
//! - `deterministic`: shadow 4.20's `SUB_UID_DETERMINISTIC` rule,
//!   `start = SUB_UID_MIN + (UID − UID_MIN) × SUB_UID_COUNT`, refused when the range does
//!   not fit in `[SUB_UID_MIN, SUB_UID_MAX]` (shadow's safe mode; its "wrap" mode can
//!   overlap and is not offered). Same for GIDs with `SUB_GID_*` and the user's UID.
//!   Every node computes the same answer with no coordination.
//! - `first-fit`: the lowest free range at or above the base, free in both files when the
//!   user needs both, so a user's subuid and subgid ranges match when they can.
//!
//! Existing entries are always kept; users that have one are not given another.

use super::ids::IdSet;
use super::logindefs::SubLimits;
use crate::subid::SubIdEntry;
use crate::subid::{SubIdFile, ID_LIMIT};
use std::collections::{HashMap, HashSet};

/// How new ranges are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// From the UID, like shadow's `SUB_UID_DETERMINISTIC`.
    Deterministic,
    /// Lowest free range, keeping existing entries.
    FirstFit,
}

/// Planner settings.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Strategy.
    pub strategy: Strategy,
    /// `UID_MIN`: offset origin of the deterministic formula.
    pub uid_min: u64,
    /// Base (`min`), size (`count`) and last ID (`max`) for subordinate UIDs.
    pub sub_uid: SubLimits,
    /// The same for subordinate GIDs.
    pub sub_gid: SubLimits,
}

/// A user to provision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Owner as it will be written: the login name, or the decimal UID for UIDs without one.
    pub owner: String,
    /// The user's UID.
    pub uid: u32,
}

/// IDs that must never be handed out as subordinate IDs.
#[derive(Debug, Clone, Default)]
pub struct RealIds {
    /// UIDs of existing accounts.
    pub uids: IdSet,
    /// GIDs of existing groups and primary groups.
    pub gids: IdSet,
}

/// Which file an entry or a problem is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// `/etc/subuid`.
    Subuid,
    /// `/etc/subgid`.
    Subgid,
}

impl Kind {
    /// File name without directory.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Subuid => "subuid",
            Kind::Subgid => "subgid",
        }
    }
}

/// One range to add.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NewEntry {
    /// Owner field.
    pub owner: String,
    /// The user's UID.
    pub uid: u32,
    /// First subordinate ID.
    pub start: u64,
    /// Number of IDs.
    pub count: u64,
}

impl NewEntry {
    /// The line as written to the file.
    pub fn line(&self) -> String {
        format!("{}:{}:{}", self.owner, self.start, self.count)
    }
}

/// A user the planner refused (error) or a remark (note).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Remark {
    /// Owner concerned.
    pub user: String,
    /// Its UID.
    pub uid: u32,
    /// File concerned.
    pub kind: Kind,
    /// What and why.
    pub message: String,
}

/// The planner's answer.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Plan {
    /// New `/etc/subuid` lines, in UID order.
    pub subuid: Vec<NewEntry>,
    /// New `/etc/subgid` lines, in UID order.
    pub subgid: Vec<NewEntry>,
    /// Users that already had both entries.
    pub unchanged: usize,
    /// Refusals: applying is refused while any exist.
    pub errors: Vec<Remark>,
    /// Remarks that do not block (e.g. an existing range differs from the formula).
    pub notes: Vec<Remark>,
}

/// Errors in the settings themselves (nothing can be planned).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParamError {
    /// Count 0, min > max, or a count larger than the whole space.
    #[error("invalid {0} limits: min {1}, max {2}, count {3} (need min <= max and 0 < count <= max-min+1)")]
    Limits(&'static str, u64, u64, u64),
}

fn validate(what: &'static str, l: &SubLimits) -> Result<(), ParamError> {
    if l.count == 0 || l.min > l.max || l.count > l.max - l.min + 1 {
        return Err(ParamError::Limits(what, l.min, l.max, l.count));
    }
    Ok(())
}

/// A file's entries by owner field, for O(1) lookups by name or UID (a linear
/// `ranges_for` per user would be quadratic at 100,000 users).
struct Index<'a>(HashMap<&'a str, Vec<&'a SubIdEntry>>);

impl<'a> Index<'a> {
    fn new(f: &'a SubIdFile) -> Self {
        let mut m: HashMap<&str, Vec<&SubIdEntry>> = HashMap::with_capacity(f.entries.len());
        for e in &f.entries {
            m.entry(e.owner.as_str()).or_default().push(e);
        }
        Index(m)
    }

    fn has(&self, c: &Candidate, uid_s: &str) -> bool {
        self.0.contains_key(c.owner.as_str()) || self.0.contains_key(uid_s)
    }

    /// The user's entries, by name then by UID (file order within each).
    fn ranges_for(&self, c: &Candidate) -> Vec<&'a SubIdEntry> {
        let mut v: Vec<&SubIdEntry> = self.0.get(c.owner.as_str()).cloned().unwrap_or_default();
        if let Some(more) = self.0.get(c.uid.to_string().as_str()) {
            if c.owner != c.uid.to_string() {
                v.extend(more);
            }
        }
        v.sort_by_key(|e| e.line);
        v
    }
}

fn occupancy(f: &SubIdFile, real: &IdSet) -> IdSet {
    let mut s = real.clone();
    for e in &f.entries {
        s.insert(e.start, e.end());
    }
    // A line newuidmap ignores today (CRLF, Latin-1 name) is live once repaired.
    for (a, n) in f.problems.iter().filter_map(|p| p.reserved) {
        s.insert(a, a + n);
    }
    s
}

/// Exclusive upper bound for ranges: `SUB_?ID_MAX + 1`, never past 2^32−1.
fn limit(l: &SubLimits) -> u64 {
    (l.max.saturating_add(1)).min(ID_LIMIT)
}

/// The deterministic range of `uid`, or why there is none.
pub fn deterministic_range(uid: u64, uid_min: u64, l: &SubLimits) -> Result<(u64, u64), String> {
    if uid < uid_min {
        return Err(format!(
            "UID {uid} is below UID_MIN {uid_min}: no deterministic range"
        ));
    }
    if l.count == 0 || l.min > l.max {
        return Err(format!(
            "invalid limits: min {}, max {}, count {}",
            l.min, l.max, l.count
        ));
    }
    let slots = (l.max - l.min + 1) / l.count;
    let off = uid - uid_min;
    if off >= slots {
        return Err(format!(
            "deterministic range for UID {uid} passes SUB_ID_MAX {} (only {slots} slots of {})",
            l.max, l.count
        ));
    }
    let start = l.min + off * l.count;
    if start + l.count > ID_LIMIT {
        return Err(format!(
            "deterministic range {start}+{} for UID {uid} passes 2^32-1",
            l.count
        ));
    }
    Ok((start, l.count))
}

/// Compute the plan. Candidates are processed in UID order (then owner), so every node
/// computes the same result from the same inputs.
pub fn plan(
    params: &Params,
    candidates: &[Candidate],
    subuid: &SubIdFile,
    subgid: &SubIdFile,
    real: &RealIds,
) -> Result<Plan, ParamError> {
    validate("SUB_UID", &params.sub_uid)?;
    validate("SUB_GID", &params.sub_gid)?;
    let mut users: Vec<&Candidate> = candidates.iter().collect();
    users.sort_by(|a, b| (a.uid, &a.owner).cmp(&(b.uid, &b.owner)));
    users.dedup_by(|a, b| a.owner == b.owner);

    let (own_u, own_g) = (Index::new(subuid), Index::new(subgid));
    let mut occ_u = occupancy(subuid, &real.uids);
    let mut occ_g = occupancy(subgid, &real.gids);
    let mut out = Plan::default();
    let mut seen_uid: HashSet<u32> = HashSet::new();
    let mut deferred: Vec<(&Candidate, bool, bool)> = Vec::new();
    // Joint first-fit cursor: gaps skipped once are too small for later users too.
    let mut cursor = params.sub_uid.min.min(params.sub_gid.min);

    for c in users {
        let uid_s = c.uid.to_string();
        let need_u = !own_u.has(c, &uid_s);
        let need_g = !own_g.has(c, &uid_s);
        if !need_u && !need_g {
            out.unchanged += 1;
            if params.strategy == Strategy::Deterministic {
                note_if_differs(&mut out, params, c, &own_u, Kind::Subuid);
                note_if_differs(&mut out, params, c, &own_g, Kind::Subgid);
            }
            continue;
        }
        let remark = |kind, message: String| Remark {
            user: c.owner.clone(),
            uid: c.uid,
            kind,
            message,
        };
        match params.strategy {
            Strategy::Deterministic => {
                if !seen_uid.insert(c.uid) {
                    out.errors.push(remark(
                        Kind::Subuid,
                        format!("UID {} is shared with another user: the formula would give both the same range", c.uid),
                    ));
                    continue;
                }
                for (need, kind, l, occ, list) in [
                    (
                        need_u,
                        Kind::Subuid,
                        &params.sub_uid,
                        &occ_u,
                        &mut out.subuid,
                    ),
                    (
                        need_g,
                        Kind::Subgid,
                        &params.sub_gid,
                        &occ_g,
                        &mut out.subgid,
                    ),
                ] {
                    if !need {
                        continue;
                    }
                    match deterministic_range(c.uid as u64, params.uid_min, l) {
                        Err(m) => out.errors.push(remark(kind, m)),
                        Ok((s, n)) => match occ.overlap(s, s + n) {
                            Some((a, b)) => out.errors.push(remark(
                                kind,
                                format!(
                                    "range {s}-{} overlaps IDs {a}-{} already used (a real ID or another user's range)",
                                    s + n - 1,
                                    b - 1
                                ),
                            )),
                            None => list.push(NewEntry {
                                owner: c.owner.clone(),
                                uid: c.uid,
                                start: s,
                                count: n,
                            }),
                        },
                    }
                }
            }
            Strategy::FirstFit => {
                // A user missing only one file first tries the other file's start, before
                // fresh allocations can take it; everyone else waits for the second pass.
                if need_u != need_g
                    && mirror(
                        &mut out, &mut occ_u, &mut occ_g, params, c, &own_u, &own_g, need_u,
                    )
                {
                    continue;
                }
                deferred.push((c, need_u, need_g));
            }
        }
    }
    for (c, need_u, need_g) in deferred {
        let (lu, lg) = (&params.sub_uid, &params.sub_gid);
        let remark = |kind, message: String| Remark {
            user: c.owner.clone(),
            uid: c.uid,
            kind,
            message,
        };
        let (found_u, found_g);
        if need_u && need_g {
            match joint_fit(&occ_u, &occ_g, cursor, lu, lg) {
                Some(s) => {
                    cursor = s;
                    (found_u, found_g) = (Some(s), Some(s));
                }
                None => {
                    out.errors.push(remark(
                        Kind::Subuid,
                        format!(
                            "no free range of {} IDs left below {} in both files",
                            lu.count,
                            limit(lu)
                        ),
                    ));
                    continue;
                }
            }
        } else {
            let (l, occ, kind) = if need_u {
                (lu, &occ_u, Kind::Subuid)
            } else {
                (lg, &occ_g, Kind::Subgid)
            };
            let Some(s) = occ.first_fit(l.min, l.count, limit(l)) else {
                out.errors.push(remark(
                    kind,
                    format!("no free range of {} IDs left below {}", l.count, limit(l)),
                ));
                continue;
            };
            (found_u, found_g) = if need_u {
                (Some(s), None)
            } else {
                (None, Some(s))
            };
        }
        if let Some(s) = found_u {
            occ_u.insert(s, s + lu.count);
            out.subuid.push(NewEntry {
                owner: c.owner.clone(),
                uid: c.uid,
                start: s,
                count: lu.count,
            });
        }
        if let Some(s) = found_g {
            occ_g.insert(s, s + lg.count);
            out.subgid.push(NewEntry {
                owner: c.owner.clone(),
                uid: c.uid,
                start: s,
                count: lg.count,
            });
        }
    }
    out.subuid
        .sort_by(|a, b| (a.uid, &a.owner).cmp(&(b.uid, &b.owner)));
    out.subgid
        .sort_by(|a, b| (a.uid, &a.owner).cmp(&(b.uid, &b.owner)));
    Ok(out)
}

/// Give a user missing one file the same start as in the other file, when free there.
#[allow(clippy::too_many_arguments)]
fn mirror(
    out: &mut Plan,
    occ_u: &mut IdSet,
    occ_g: &mut IdSet,
    params: &Params,
    c: &Candidate,
    subuid: &Index,
    subgid: &Index,
    need_u: bool,
) -> bool {
    let (other, l, occ, list) = if need_u {
        (
            subgid.ranges_for(c),
            &params.sub_uid,
            occ_u,
            &mut out.subuid,
        )
    } else {
        (
            subuid.ranges_for(c),
            &params.sub_gid,
            occ_g,
            &mut out.subgid,
        )
    };
    let Some(s) = other.first().map(|e| e.start) else {
        return false;
    };
    if s < l.min || s + l.count > limit(l) || occ.overlap(s, s + l.count).is_some() {
        return false;
    }
    occ.insert(s, s + l.count);
    list.push(NewEntry {
        owner: c.owner.clone(),
        uid: c.uid,
        start: s,
        count: l.count,
    });
    true
}

/// Lowest `s >= from` free for `lu.count` IDs in `u` and `lg.count` IDs in `g`.
fn joint_fit(u: &IdSet, g: &IdSet, from: u64, lu: &SubLimits, lg: &SubLimits) -> Option<u64> {
    let mut s = from.max(lu.min).max(lg.min);
    loop {
        let a = u.first_fit(s, lu.count, limit(lu))?;
        let b = g.first_fit(a, lg.count, limit(lg))?;
        if a == b {
            return Some(a);
        }
        s = b;
    }
}

fn note_if_differs(out: &mut Plan, p: &Params, c: &Candidate, f: &Index, kind: Kind) {
    let l = if kind == Kind::Subuid {
        &p.sub_uid
    } else {
        &p.sub_gid
    };
    let Ok((s, n)) = deterministic_range(c.uid as u64, p.uid_min, l) else {
        return;
    };
    let have = f.ranges_for(c);
    if !have.iter().any(|e| e.start == s && e.count == n) {
        out.notes.push(Remark {
            user: c.owner.clone(),
            uid: c.uid,
            kind,
            message: format!(
                "kept existing range {}:{} (line {}); the formula gives {s}:{n}",
                have[0].start, have[0].count, have[0].line
            ),
        });
    }
}

/// The new file content: the old bytes unchanged (comments, order, unknown and even
/// non-UTF-8 lines), then the new lines.
pub fn render(old: &[u8], new: &[NewEntry]) -> Vec<u8> {
    let mut s = Vec::with_capacity(old.len() + new.len() * 32);
    s.extend_from_slice(old);
    if !s.is_empty() && !s.ends_with(b"\n") && !new.is_empty() {
        s.push(b'\n');
    }
    for e in new {
        s.extend_from_slice(e.line().as_bytes());
        s.push(b'\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subid::{parse, parse_bytes};

    fn limits(min: u64, max: u64, count: u64) -> SubLimits {
        SubLimits { min, max, count }
    }

    fn params(strategy: Strategy) -> Params {
        let l = limits(100000, 600100000, 65536);
        Params {
            strategy,
            uid_min: 1000,
            sub_uid: l,
            sub_gid: l,
        }
    }

    fn cand(owner: &str, uid: u32) -> Candidate {
        Candidate {
            owner: owner.into(),
            uid,
        }
    }

    #[test]
    fn deterministic_matches_shadow_formula() {
        let l = limits(100000, 600100000, 65536);
        assert_eq!(deterministic_range(1000, 1000, &l), Ok((100000, 65536)));
        assert_eq!(deterministic_range(1001, 1000, &l), Ok((165536, 65536)));
        // (600100000-100000+1)/65536 = 9155 slots: UID 10154 is the last one.
        assert!(deterministic_range(1000 + 9154, 1000, &l).is_ok());
        assert!(deterministic_range(1000 + 9155, 1000, &l)
            .unwrap_err()
            .contains("SUB_ID_MAX"));
        assert!(deterministic_range(999, 1000, &l)
            .unwrap_err()
            .contains("UID_MIN"));
        // shadow's defaults without login.defs keys: 65536..=2^32-1; the top slot would end
        // at 2^32 and include the reserved ID 2^32-1.
        let d = limits(65536, u32::MAX as u64, 65536);
        assert!(deterministic_range(1000 + 65534, 1000, &d)
            .unwrap_err()
            .contains("2^32-1"));
        assert!(deterministic_range(1000 + 65533, 1000, &d).is_ok());
    }

    #[test]
    fn ranges_of_refused_lines_are_never_handed_out() {
        // A CRLF line and a Latin-1 name: newuidmap ignores the first, honours the
        // second; both ranges are taken as far as planning goes.
        let su = parse_bytes(b"alice:100000:65536\r\nj\xe9r\xf4me:165536:65536\n");
        let users = [cand("bob", 1001), cand("carol", 1002)];
        let p = plan(
            &params(Strategy::FirstFit),
            &users,
            &su,
            &su,
            &RealIds::default(),
        )
        .unwrap();
        let starts: Vec<u64> = p.subuid.iter().map(|e| e.start).collect();
        assert_eq!(starts, vec![231072, 296608], "{p:?}");
        let p = plan(
            &params(Strategy::Deterministic),
            &users[..1],
            &su,
            &su,
            &RealIds::default(),
        )
        .unwrap();
        assert!(p.subuid.is_empty() && p.errors.len() == 2, "{p:?}");
    }

    #[test]
    fn deterministic_keeps_existing_and_refuses_overlap() {
        let su = parse("alice:100000:65536\nzed:165536:10\n");
        let sg = parse("alice:100000:65536\n");
        let users = [cand("alice", 1000), cand("bob", 1001), cand("carol", 1002)];
        let p = plan(
            &params(Strategy::Deterministic),
            &users,
            &su,
            &sg,
            &RealIds::default(),
        )
        .unwrap();
        assert_eq!(p.unchanged, 1);
        // bob's subuid slot collides with zed's stray range; his subgid is fine.
        assert_eq!(p.errors.len(), 1);
        assert_eq!(p.errors[0].user, "bob");
        assert_eq!(p.errors[0].kind, Kind::Subuid);
        assert_eq!(
            p.subuid,
            vec![NewEntry {
                owner: "carol".into(),
                uid: 1002,
                start: 231072,
                count: 65536
            }]
        );
        assert_eq!(p.subgid.len(), 2);
    }

    #[test]
    fn refuses_real_ids_and_shared_uids() {
        let mut real = RealIds::default();
        real.uids.insert_id(165540);
        let users = [cand("a", 1001), cand("b", 1002), cand("b2", 1002)];
        let p = plan(
            &params(Strategy::Deterministic),
            &users,
            &parse(""),
            &parse(""),
            &real,
        )
        .unwrap();
        let msgs: Vec<String> = p
            .errors
            .iter()
            .map(|e| format!("{}:{}", e.user, e.message))
            .collect();
        assert_eq!(p.errors.len(), 2, "{msgs:?}");
        assert!(msgs[0].starts_with("a:") && msgs[0].contains("overlaps"));
        assert!(msgs[1].starts_with("b2:") && msgs[1].contains("shared"));
    }

    #[test]
    fn first_fit_fills_gaps_and_matches_files() {
        let su = parse("x:100000:65536\ny:300000:65536\n");
        let sg = parse("x:100000:65536\ny:300000:65536\nw:165536:65536\n");
        let users = [
            cand("x", 1000),
            cand("a", 1001),
            cand("b", 1002),
            cand("c", 1003),
        ];
        let p = plan(
            &params(Strategy::FirstFit),
            &users,
            &su,
            &sg,
            &RealIds::default(),
        )
        .unwrap();
        assert!(p.errors.is_empty());
        let starts: Vec<u64> = p.subuid.iter().map(|e| e.start).collect();
        // 165536 is free in subuid but taken in subgid: the joint fit skips it.
        assert_eq!(starts, vec![231072, 365536, 431072]);
        assert_eq!(p.subuid, p.subgid);
    }

    #[test]
    fn first_fit_one_missing_reuses_other_start() {
        let su = parse("a:500000:65536\n");
        let p = plan(
            &params(Strategy::FirstFit),
            &[cand("a", 1000)],
            &su,
            &parse(""),
            &RealIds::default(),
        )
        .unwrap();
        assert_eq!(p.subgid[0].start, 500000);
        assert!(p.subuid.is_empty());
    }

    #[test]
    fn first_fit_refuses_past_max() {
        let mut pr = params(Strategy::FirstFit);
        pr.sub_uid = limits(100000, 100000 + 65536 * 2 - 1, 65536);
        let users = [cand("a", 1000), cand("b", 1001), cand("c", 1002)];
        let p = plan(&pr, &users, &parse(""), &parse(""), &RealIds::default()).unwrap();
        assert_eq!(p.subuid.len(), 2);
        assert_eq!(p.errors.len(), 1);
        assert_eq!(p.errors[0].user, "c");
    }

    #[test]
    fn bad_limits_and_render() {
        let mut pr = params(Strategy::FirstFit);
        pr.sub_gid.count = 0;
        assert!(plan(&pr, &[], &parse(""), &parse(""), &RealIds::default()).is_err());
        let e = NewEntry {
            owner: "a".into(),
            uid: 1,
            start: 5,
            count: 6,
        };
        assert_eq!(
            render(b"x:1:2", std::slice::from_ref(&e)),
            b"x:1:2\na:5:6\n"
        );
        assert_eq!(render(b"", &[]), b"");
        assert_eq!(render(b"x:1:2", &[]), b"x:1:2");
        assert_eq!(render(b"\xe9:1:2\n", &[e]), b"\xe9:1:2\na:5:6\n");
    }
}

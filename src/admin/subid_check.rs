//! The subuid/subgid checker. Pure: parsed files, accounts and IDs in use in, findings out.

use super::ids::IdSet;
use super::passwd::UserDb;
use crate::subid::{SubIdEntry, SubIdFile};
use std::collections::HashMap;

/// Ranges smaller than this cannot map the IDs typical images use (0..65535).
pub const TYPICAL_IMAGE_IDS: u64 = 65536;

/// How bad a finding is. Any `Error` makes `check` exit non-zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Works, but worth a look.
    Warn,
    /// Unsafe or broken.
    Error,
}

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// Error or warning.
    pub severity: Severity,
    /// Stable machine-readable code: `unparseable`, `overlap`, `real-id-overlap`,
    /// `duplicate`, `unknown-user`, `too-small`, `missing`, `mismatch`.
    pub code: &'static str,
    /// The file (as given on the command line).
    pub file: String,
    /// 1-based line, when the finding is about one line.
    pub line: Option<usize>,
    /// The owner field concerned.
    pub user: Option<String>,
    /// Human-readable explanation.
    pub message: String,
}

/// One file to check, with the IDs its ranges must not cover.
pub struct Input<'a> {
    /// Display name (path).
    pub file: &'a str,
    /// Parsed content.
    pub parsed: &'a SubIdFile,
    /// Real IDs of the same kind (UIDs for subuid, GIDs for subgid).
    pub real: &'a IdSet,
}

/// Identity of an owner: the UID when the owner resolves to an account, else the text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Who {
    Uid(u32),
    Unknown(String),
}

struct Resolver<'a> {
    by_name: HashMap<&'a str, u32>,
    uids: std::collections::HashSet<u32>,
}

impl<'a> Resolver<'a> {
    fn new(db: &'a UserDb) -> Self {
        let mut by_name = HashMap::with_capacity(db.users.len());
        for a in &db.users {
            by_name.entry(a.name.as_str()).or_insert(a.uid);
        }
        Resolver {
            by_name,
            uids: db.users.iter().map(|a| a.uid).collect(),
        }
    }

    fn who(&self, owner: &str) -> Who {
        if let Some(&u) = self.by_name.get(owner) {
            return Who::Uid(u);
        }
        // newuidmap matches a decimal owner against the UID.
        match owner.parse::<u32>() {
            Ok(u) if self.uids.contains(&u) => Who::Uid(u),
            _ => Who::Unknown(owner.to_string()),
        }
    }
}

/// Check both files against each other and the account database.
pub fn check(subuid: Input<'_>, subgid: Input<'_>, db: &UserDb) -> Vec<Finding> {
    let r = Resolver::new(db);
    let mut out = Vec::new();
    let mut firsts = Vec::new();
    for inp in [&subuid, &subgid] {
        firsts.push(check_one(inp, &r, &mut out));
    }
    // subuid vs subgid: every user needs both, and they normally match.
    let (fu, fg) = (&firsts[0], &firsts[1]);
    let mut missing = |have: &HashMap<Who, &SubIdEntry>,
                       other: &HashMap<Who, &SubIdEntry>,
                       inp: &Input,
                       oname: &str| {
        let mut v: Vec<&&SubIdEntry> = have
            .iter()
            .filter(|(w, _)| !other.contains_key(*w))
            .map(|(_, e)| e)
            .collect();
        v.sort_by_key(|e| e.line);
        for e in v {
            out.push(Finding {
                severity: Severity::Error,
                code: "missing",
                file: inp.file.to_string(),
                line: Some(e.line),
                user: Some(e.owner.clone()),
                message: format!(
                    "{} has a range here but none in {oname}: newuidmap/newgidmap will refuse",
                    e.owner
                ),
            });
        }
    };
    missing(fu, fg, &subuid, subgid.file);
    missing(fg, fu, &subgid, subuid.file);
    let mut mism: Vec<(&SubIdEntry, &SubIdEntry)> = fu
        .iter()
        .filter_map(|(w, u)| fg.get(w).map(|g| (*u, *g)))
        .filter(|(u, g)| u.start != g.start || u.count != g.count)
        .collect();
    mism.sort_by_key(|(u, _)| u.line);
    for (u, g) in mism {
        out.push(Finding {
            severity: Severity::Warn,
            code: "mismatch",
            file: subuid.file.to_string(),
            line: Some(u.line),
            user: Some(u.owner.clone()),
            message: format!(
                "{}: subuid {}:{} differs from subgid {}:{} ({}:{})",
                u.owner, u.start, u.count, g.start, g.count, subgid.file, g.line
            ),
        });
    }
    out
}

/// Per-file checks; returns each identity's first entry.
fn check_one<'a>(
    inp: &Input<'a>,
    r: &Resolver,
    out: &mut Vec<Finding>,
) -> HashMap<Who, &'a SubIdEntry> {
    let f = |severity, code, line: Option<usize>, user: Option<&str>, message: String| Finding {
        severity,
        code,
        file: inp.file.to_string(),
        line,
        user: user.map(str::to_string),
        message,
    };
    for p in &inp.parsed.problems {
        out.push(f(
            Severity::Error,
            "unparseable",
            Some(p.line),
            p.owner.as_deref(),
            format!("{:?}: {}", p.text, p.reason),
        ));
    }
    let entries = &inp.parsed.entries;
    let whos: Vec<Who> = entries.iter().map(|e| r.who(&e.owner)).collect();

    // Per identity: all entries (duplicates, totals, unknown users).
    let mut groups: HashMap<&Who, Vec<usize>> = HashMap::with_capacity(entries.len());
    for (i, w) in whos.iter().enumerate() {
        groups.entry(w).or_default().push(i);
    }
    let mut firsts = HashMap::with_capacity(groups.len());
    let mut ordered: Vec<(&Who, Vec<usize>)> = groups.into_iter().collect();
    ordered.sort_by_key(|(_, v)| v[0]);
    for (w, idx) in ordered {
        let e0 = &entries[idx[0]];
        firsts.insert(w.clone(), e0);
        if let Who::Unknown(o) = w {
            out.push(f(Severity::Warn, "unknown-user", Some(e0.line), Some(o), format!(
                "{o} is not a known user or UID: stale entry (a future user with this name would inherit it)")));
        }
        if idx.len() > 1 {
            let lines: Vec<String> = idx.iter().map(|&i| entries[i].line.to_string()).collect();
            let names: std::collections::BTreeSet<&str> =
                idx.iter().map(|&i| entries[i].owner.as_str()).collect();
            out.push(f(
                Severity::Warn,
                "duplicate",
                Some(entries[idx[1]].line),
                Some(&e0.owner),
                format!(
                    "{} has {} entries (lines {}{})",
                    e0.owner,
                    idx.len(),
                    lines.join(", "),
                    if names.len() > 1 {
                        format!(
                            ", as {}",
                            names.into_iter().collect::<Vec<_>>().join(" and ")
                        )
                    } else {
                        String::new()
                    }
                ),
            ));
        }
        let total: u64 = idx.iter().map(|&i| entries[i].count).sum();
        if total < TYPICAL_IMAGE_IDS {
            out.push(f(Severity::Warn, "too-small", Some(e0.line), Some(&e0.owner), format!(
                "{} has {total} IDs in total: images with files owned by IDs up to 65535 need {TYPICAL_IMAGE_IDS}", e0.owner)));
        }
    }

    // Overlaps with real IDs.
    for e in entries {
        if let Some((a, b)) = inp.real.overlap(e.start, e.end()) {
            let (lo, hi) = (a.max(e.start), b.min(e.end()) - 1);
            out.push(f(Severity::Error, "real-id-overlap", Some(e.line), Some(&e.owner), format!(
                "range {}-{} covers real IDs in use ({lo}-{hi}): container root could act as those users/groups",
                e.start, e.end() - 1)));
        }
    }

    // Overlaps between users: sweep by start, remembering the range reaching furthest.
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by_key(|&i| (entries[i].start, entries[i].line));
    let mut reach: Option<usize> = None;
    for &i in &order {
        let e = &entries[i];
        if let Some(j) = reach {
            let p = &entries[j];
            if e.start < p.end() {
                let same = whos[i] == whos[j];
                out.push(f(
                    if same {
                        Severity::Warn
                    } else {
                        Severity::Error
                    },
                    if same { "duplicate" } else { "overlap" },
                    Some(e.line),
                    Some(&e.owner),
                    format!(
                        "{}:{}:{} (line {}) overlaps {}:{}:{} (line {}){}",
                        e.owner,
                        e.start,
                        e.count,
                        e.line,
                        p.owner,
                        p.start,
                        p.count,
                        p.line,
                        if same {
                            " of the same user"
                        } else {
                            ": both users can reach each other's files"
                        }
                    ),
                ));
            }
            if e.end() > p.end() {
                reach = Some(i);
            }
        } else {
            reach = Some(i);
        }
    }
    firsts
}

/// Number of findings at each severity: (errors, warnings).
pub fn counts(findings: &[Finding]) -> (usize, usize) {
    let e = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    (e, findings.len() - e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::passwd::parse_passwd;
    use crate::subid::parse;

    fn db() -> UserDb {
        parse_passwd("root:x:0:0::/:/\nalice:x:1000:1000::/:/\nbob:x:1001:1001::/:/\ncarol:x:1002:1002::/:/\n").unwrap()
    }

    fn run(u: &str, g: &str, real_u: &IdSet) -> Vec<Finding> {
        let (pu, pg) = (parse(u), parse(g));
        let none = IdSet::new();
        check(
            Input {
                file: "subuid",
                parsed: &pu,
                real: real_u,
            },
            Input {
                file: "subgid",
                parsed: &pg,
                real: &none,
            },
            &db(),
        )
    }

    fn codes(v: &[Finding]) -> Vec<(&'static str, Option<usize>)> {
        v.iter().map(|f| (f.code, f.line)).collect()
    }

    #[test]
    fn clean_files_pass() {
        let t = "alice:100000:65536\nbob:165536:65536\n1002:231072:65536\n";
        assert!(run(t, t, &IdSet::new()).is_empty());
    }

    #[test]
    fn finds_each_problem() {
        let u = "alice:100000:65536\nbob:150000:65536\nghost:900000:65536\ncarol:1000:65536\nalice:5000000:10\nbad line\n";
        let g = "alice:100000:65536\nbob:165536:65536\nghost:900000:65536\n";
        let mut real = IdSet::new();
        real.insert(1000, 1003);
        let v = run(u, g, &real);
        let c = codes(&v);
        assert!(c.contains(&("unparseable", Some(6))), "{c:?}");
        assert!(c.contains(&("unknown-user", Some(3))), "{c:?}");
        assert!(c.contains(&("duplicate", Some(5))), "{c:?}");
        assert!(c.contains(&("real-id-overlap", Some(4))), "{c:?}");
        assert!(c.contains(&("overlap", Some(2))), "{c:?}");
        assert!(c.contains(&("missing", Some(4))), "{c:?}");
        assert!(c.contains(&("mismatch", Some(2))), "{c:?}");
        assert!(
            !c.contains(&("too-small", Some(1))),
            "alice has 65546 in total: {c:?}"
        );
        assert_eq!(counts(&v).0, 4, "{v:#?}");
    }

    #[test]
    fn name_and_uid_are_the_same_user() {
        let v = run(
            "alice:100000:65536\n1000:300000:65536\n",
            "alice:100000:65536\n",
            &IdSet::new(),
        );
        let c = codes(&v);
        assert_eq!(c, vec![("duplicate", Some(2))], "{v:#?}");
    }

    #[test]
    fn small_range_warns() {
        let v = run("bob:100000:1000\n", "bob:100000:1000\n", &IdSet::new());
        assert_eq!(
            codes(&v),
            vec![("too-small", Some(1)), ("too-small", Some(1))]
        );
        assert_eq!(counts(&v), (0, 2));
    }
}

//! `/etc/subuid` and `/etc/subgid`: parsing and lookup. Pure: no I/O beyond reading the file.
//!
//! Format (shadow-utils `subuid(5)`): `NAME_OR_UID:START:COUNT`, one per line; `#` comments
//! and blank lines are allowed; a user may have several lines.

use anyhow::{Context, Result};
use std::path::Path;

/// One valid line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubIdEntry {
    /// User name or decimal UID, as written.
    pub owner: String,
    pub start: u64,
    pub count: u64,
    /// 1-based line number in the file.
    pub line: usize,
}

impl SubIdEntry {
    /// One past the last ID of the range.
    pub fn end(&self) -> u64 {
        self.start + self.count
    }
}

/// A line that could not be parsed, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubIdProblem {
    pub line: usize,
    pub text: String,
    pub reason: String,
}

/// A parsed file: valid entries and unparseable lines, in file order.
#[derive(Debug, Clone, Default)]
pub struct SubIdFile {
    pub entries: Vec<SubIdEntry>,
    pub problems: Vec<SubIdProblem>,
}

/// Largest valid ID + 1: IDs are 32-bit and 2^32-1 is reserved as "no ID".
pub const ID_LIMIT: u64 = u32::MAX as u64;

pub fn parse(text: &str) -> SubIdFile {
    let mut out = SubIdFile::default();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let t = raw.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        match parse_line(t) {
            Ok((owner, start, count)) => out.entries.push(SubIdEntry {
                owner: owner.to_string(),
                start,
                count,
                line,
            }),
            Err(reason) => out.problems.push(SubIdProblem {
                line,
                text: raw.to_string(),
                reason,
            }),
        }
    }
    out
}

fn parse_line(t: &str) -> Result<(&str, u64, u64), String> {
    let fields: Vec<&str> = t.split(':').collect();
    if fields.len() != 3 {
        return Err(format!(
            "expected NAME:START:COUNT, found {} field(s)",
            fields.len()
        ));
    }
    let owner = fields[0];
    if owner.is_empty() {
        return Err("empty user name".into());
    }
    if !owner
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-$@".contains(&b))
    {
        return Err(format!("invalid user name {owner:?}"));
    }
    let num = |s: &str, what: &str| -> Result<u64, String> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{what} {s:?} is not a decimal number"));
        }
        s.parse::<u64>()
            .map_err(|_| format!("{what} {s:?} is too large"))
    };
    let start = num(fields[1], "start")?;
    let count = num(fields[2], "count")?;
    if count == 0 {
        return Err("count is 0".into());
    }
    if start.checked_add(count).is_none_or(|e| e > ID_LIMIT) {
        return Err(format!("range {start}+{count} passes the 32-bit ID limit"));
    }
    Ok((owner, start, count))
}

/// Read and parse a file; a missing file is an empty one.
pub fn read(path: &Path) -> Result<SubIdFile> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(parse(&t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SubIdFile::default()),
        Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
    }
}

impl SubIdFile {
    /// The ranges of a user, matched by name or by decimal UID (as newuidmap does), in file order.
    pub fn ranges_for(&self, name: &str, uid: u32) -> Vec<&SubIdEntry> {
        let uid_s = uid.to_string();
        self.entries
            .iter()
            .filter(|e| e.owner == name || e.owner == uid_s)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_and_reports_bad() {
        let f = parse("# c\nalice:100000:65536\n\n1001:200000:65536\nbob:x:1\ncarol:1:0\nd:4294967290:10\ne:1\n");
        assert_eq!(f.entries.len(), 2);
        assert_eq!(f.entries[0].owner, "alice");
        assert_eq!(f.entries[1].line, 4);
        let lines: Vec<usize> = f.problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, vec![5, 6, 7, 8]);
        assert!(f.problems[0].reason.contains("start"));
    }

    #[test]
    fn lookup_by_name_and_uid() {
        let f = parse("alice:100000:65536\n1000:300000:1000\nbob:200000:65536\n");
        let r = f.ranges_for("alice", 1000);
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].start, 300000);
        assert!(f.ranges_for("nobody", 5).is_empty());
    }
}

//! `/etc/subuid` and `/etc/subgid`: parsing and lookup. Pure: no I/O beyond reading the file.
//!
//! Format (shadow-utils `subuid(5)`): `NAME_OR_UID:START:COUNT`, one per line, a user may
//! have several lines. The file is parsed as bytes, line by line, as shadow does
//! (`lib/subordinateio.c` over `commonio`): one bad line never hides the others.
//!
//! What is accepted is what newuidmap/newgidmap accept *with the same meaning*; every other
//! line is a [`SubIdProblem`] with its line number (skipped for lookups, an error for
//! `warren admin subid check` and `warren doctor`):
//! - empty lines and lines starting with `#` are ignored (shadow ignores them too: they
//!   never parse as an entry);
//! - exactly three `:`-separated fields, none empty (newer shadow rejects a fourth field;
//!   older shadow silently drops it);
//! - no carriage return (a CRLF file: shadow keeps the `\r` in the count, which then fails
//!   to parse), no white space or control character anywhere (shadow reads
//!   ` alice` as a user named " alice", and `65536 ` as no number);
//! - valid UTF-8 (a Latin-1 name is reported and skipped, not fatal for the file);
//! - START and COUNT in plain decimal without a leading zero (shadow's `strtoul(…, 0)`
//!   reads `010` as octal and `0x10` as hex; we refuse rather than disagree), COUNT > 0,
//!   START + COUNT ≤ 2^32 − 1;
//! - shorter than 1024 bytes (older shadow ignores longer lines).

use std::path::{Path, PathBuf};

/// One valid line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubIdEntry {
    /// User name or decimal UID, as written.
    pub owner: String,
    /// First subordinate ID.
    pub start: u64,
    /// Number of IDs.
    pub count: u64,
    /// 1-based line number in the file.
    pub line: usize,
}

impl SubIdEntry {
    /// One past the last ID of the range.
    pub fn end(&self) -> u64 {
        self.start + self.count
    }

    /// The line as written to the file (without the newline).
    pub fn render(&self) -> String {
        format!("{}:{}:{}", self.owner, self.start, self.count)
    }
}

/// A line that could not be parsed, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubIdProblem {
    /// 1-based line number.
    pub line: usize,
    /// The line, non-UTF-8 bytes replaced (for messages only).
    pub text: String,
    /// The owner field as newuidmap would see it, trimmed (to tell a user their own
    /// line is ignored), when the line has a `:`.
    pub owner: Option<String>,
    /// Why the line is refused.
    pub reason: String,
    /// The range the line would claim once repaired (numbers read leniently: white space
    /// and CR trimmed, octal/hex as shadow's `strtoul(…, 0)`), so that planners never
    /// hand those IDs to someone else.
    pub reserved: Option<(u64, u64)>,
}

/// A parsed file: valid entries and unparseable lines, in file order.
#[derive(Debug, Clone, Default)]
pub struct SubIdFile {
    /// Valid entries.
    pub entries: Vec<SubIdEntry>,
    /// Refused lines.
    pub problems: Vec<SubIdProblem>,
}

/// Largest valid ID + 1: IDs are 32-bit and 2^32-1 is reserved as "no ID".
pub const ID_LIMIT: u64 = u32::MAX as u64;

/// Lines this long or longer are ignored by shadow (its 1024-byte parse buffer).
pub const MAX_LINE: usize = 1024;

/// Reading a subid file failed (a missing file is not an error: it is an empty one).
#[derive(Debug, thiserror::Error)]
#[error("read {path}: {source}")]
pub struct ReadError {
    /// The file.
    pub path: PathBuf,
    /// The I/O error (permission denied, a directory, …).
    #[source]
    pub source: std::io::Error,
}

/// Parse text (see [`parse_bytes`]).
pub fn parse(text: &str) -> SubIdFile {
    parse_bytes(text.as_bytes())
}

/// Parse a whole file's bytes. Lines end at `\n` only, as for shadow.
pub fn parse_bytes(bytes: &[u8]) -> SubIdFile {
    let mut out = SubIdFile::default();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = i + 1;
        if raw.is_empty() || raw[0] == b'#' {
            continue;
        }
        match parse_line(raw) {
            Ok((owner, start, count)) => out.entries.push(SubIdEntry {
                owner,
                start,
                count,
                line,
            }),
            Err(reason) => out.problems.push(SubIdProblem {
                line,
                text: String::from_utf8_lossy(raw).into_owned(),
                owner: raw
                    .iter()
                    .position(|&b| b == b':')
                    .map(|p| String::from_utf8_lossy(raw[..p].trim_ascii()).into_owned())
                    .filter(|o| !o.is_empty()),
                reason,
                reserved: reserved(raw),
            }),
        }
    }
    out
}

/// See [`SubIdProblem::reserved`].
fn reserved(raw: &[u8]) -> Option<(u64, u64)> {
    let mut f = raw.split(|&b| b == b':').skip(1);
    let (start, count) = (lenient(f.next()?)?, lenient(f.next()?)?);
    if count == 0 || start >= ID_LIMIT {
        return None;
    }
    Some((start, count.min(ID_LIMIT - start)))
}

/// A number as C's `strtoul(s, _, 0)` reads a whole field (shadow's `getulong`, login.defs'
/// `getdef`): surrounding white space ignored, `0x` hex, leading-`0` octal, else decimal.
pub fn c_ulong(s: &str) -> Option<u64> {
    let s = s.trim();
    let s = s.strip_prefix('+').unwrap_or(s);
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()
    } else if s.len() > 1 && s.starts_with('0') {
        u64::from_str_radix(&s[1..], 8).ok()
    } else {
        s.parse().ok()
    }
}

/// A refused line's number: as shadow would read it, or (`09`, not octal) as whoever
/// repairs it will mean it.
fn lenient(s: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(s).ok()?;
    c_ulong(s).or_else(|| s.trim().parse().ok())
}

/// One non-empty, non-comment line.
fn parse_line(raw: &[u8]) -> Result<(String, u64, u64), String> {
    if raw.len() >= MAX_LINE {
        return Err(format!(
            "line is {} bytes long: shadow ignores lines of {MAX_LINE} bytes or more",
            raw.len()
        ));
    }
    let t = match std::str::from_utf8(raw) {
        Ok(t) => t,
        Err(e) => {
            return Err(format!(
            "not valid UTF-8 (byte {:#04x} at column {}): a Latin-1 or other non-UTF-8 user name?",
            raw[e.valid_up_to()],
            e.valid_up_to() + 1
        ))
        }
    };
    if t.ends_with('\r') {
        return Err("ends with a carriage return (CRLF line ending): newuidmap ignores this line; convert the file with dos2unix or sed -i 's/\\r$//'".into());
    }
    if t.starts_with(char::is_whitespace) || t.ends_with(char::is_whitespace) {
        return Err(
            "leading or trailing white space: newuidmap ignores this line; remove the spaces"
                .into(),
        );
    }
    if let Some(c) = t.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "contains {c:?}: no white space or control characters are allowed in an entry"
        ));
    }
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
    let start = number(fields[1], "start")?;
    let count = number(fields[2], "count")?;
    if count == 0 {
        return Err("count is 0".into());
    }
    if start.checked_add(count).is_none_or(|e| e > ID_LIMIT) {
        return Err(format!("range {start}+{count} passes the 32-bit ID limit"));
    }
    Ok((owner.to_string(), start, count))
}

/// A plain decimal number, as shadow reads it with the same value.
fn number(s: &str, what: &str) -> Result<u64, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{what} {s:?} is not a decimal number"));
    }
    if s.len() > 1 && s.starts_with('0') {
        return Err(format!(
            "{what} {s:?} has a leading zero: newuidmap reads it as octal"
        ));
    }
    s.parse::<u64>()
        .map_err(|_| format!("{what} {s:?} is too large"))
}

/// Read and parse a file; a missing file is an empty one. Only I/O fails: bad lines,
/// including non-UTF-8 ones, are [`SubIdFile::problems`].
pub fn read(path: &Path) -> Result<SubIdFile, ReadError> {
    match std::fs::read(path) {
        Ok(b) => Ok(parse_bytes(&b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SubIdFile::default()),
        Err(source) => Err(ReadError {
            path: path.to_path_buf(),
            source,
        }),
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
    use proptest::prelude::*;

    #[test]
    fn parses_valid_and_reports_bad() {
        let f = parse("# c\nalice:100000:65536\n\n1001:200000:65536\nbob:x:1\ncarol:1:0\nd:4294967290:10\ne:1\n");
        assert_eq!(f.entries.len(), 2);
        assert_eq!(f.entries[0].owner, "alice");
        assert_eq!(f.entries[1].line, 4);
        let lines: Vec<usize> = f.problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, vec![5, 6, 7, 8]);
        assert!(f.problems[0].reason.contains("start"));
        assert_eq!(f.problems[0].owner.as_deref(), Some("bob"));
        assert_eq!(f.problems[2].reserved, Some((4294967290, 5)));
    }

    #[test]
    fn refused_lines_still_reserve_their_range() {
        let f = parse_bytes(b"a:100000:65536\r\n b :0x30000:0200000\nc:1:x\n\xe9:5:5\n");
        let r: Vec<_> = f.problems.iter().map(|p| p.reserved).collect();
        assert_eq!(
            r,
            vec![
                Some((100000, 65536)),
                Some((0x30000, 65536)),
                None,
                Some((5, 5))
            ]
        );
        assert_eq!(f.problems[1].owner.as_deref(), Some("b"));
    }

    #[test]
    fn lookup_by_name_and_uid() {
        let f = parse("alice:100000:65536\n1000:300000:1000\nbob:200000:65536\n");
        let r = f.ranges_for("alice", 1000);
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].start, 300000);
        assert!(f.ranges_for("nobody", 5).is_empty());
    }

    #[test]
    fn non_utf8_line_is_reported_and_the_rest_still_works() {
        let f = parse_bytes(b"alice:100000:65536\nj\xe9r\xf4me:165536:65536\nbob:231072:65536\n");
        assert_eq!(f.entries.len(), 2);
        assert_eq!(f.ranges_for("bob", 1001)[0].start, 231072);
        assert_eq!(f.problems.len(), 1);
        assert_eq!(f.problems[0].line, 2);
        assert!(f.problems[0].reason.contains("UTF-8"), "{:?}", f.problems);
    }

    #[test]
    fn lines_newuidmap_rejects_are_problems() {
        for (text, why) in [
            ("alice:100000:65536\r", "carriage return"),
            (" alice:100000:65536", "white space"),
            ("alice:100000:65536 ", "white space"),
            ("alice: 100000:65536", "' '"),
            ("alice:100000:65536\t", "white space"),
            ("al ice:100000:65536", "' '"),
            ("alice:0100000:65536", "leading zero"),
            ("alice:0x100:65536", "decimal"),
            ("alice:+100:65536", "decimal"),
            ("alice:100:65536:1", "4 field"),
            ("alice:100", "2 field"),
            (":100:1", "empty user"),
            ("alice::1", "decimal"),
            ("alice:1:", "decimal"),
            ("   ", "white space"),
            ("  # indented comment", "white space"),
        ] {
            let f = parse(text);
            assert!(f.entries.is_empty(), "{text:?} accepted");
            assert_eq!(f.problems.len(), 1, "{text:?}");
            assert!(
                f.problems[0].reason.contains(why),
                "{text:?}: {}",
                f.problems[0].reason
            );
        }
        let long = format!("{}:1:1", "a".repeat(MAX_LINE));
        assert!(parse(&long).problems[0].reason.contains("1024"));
        // Valid in shadow and here: UTF-8 names, `@`/`\` of directory users, 0 start,
        // the last ID below 2^32-1, a file without a final newline.
        let f = parse("jos\u{e9}:0:1\nuser@AD.EXAMPLE:1:1\nDOM\\u:2:1\nz:4294967294:1");
        assert!(f.problems.is_empty(), "{:?}", f.problems);
        assert_eq!(f.entries.len(), 4);
    }

    fn owner() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z_][a-z0-9_.@$-]{0,31}",
            any::<u32>().prop_map(|u| u.to_string()),
            "[^:#\\s\\p{Cc}][^:\\s\\p{Cc}]{0,20}",
        ]
    }

    fn entry() -> impl Strategy<Value = (String, u64, u64)> {
        (owner(), 0..ID_LIMIT).prop_flat_map(|(o, s)| (Just(o), Just(s), 1..=(ID_LIMIT - s)))
    }

    proptest! {
        #[test]
        fn parse_of_render_round_trips(v in proptest::collection::vec(entry(), 0..20)) {
            let entries: Vec<SubIdEntry> = v
                .into_iter()
                .enumerate()
                .map(|(i, (owner, start, count))| SubIdEntry { owner, start, count, line: i + 1 })
                .collect();
            let text: String = entries.iter().map(|e| e.render() + "\n").collect();
            let f = parse(&text);
            prop_assert!(f.problems.is_empty(), "{:?}", f.problems);
            prop_assert_eq!(f.entries, entries);
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let f = parse_bytes(&b);
            let lines = b.split(|&c| c == b'\n').count();
            for e in &f.entries {
                prop_assert!(e.count > 0 && e.end() <= ID_LIMIT && e.line <= lines);
            }
            for p in &f.problems {
                prop_assert!(p.line >= 1 && p.line <= lines && !p.reason.contains('\n'));
            }
        }

        /// Lines built from the grammar's own pieces, mutated: accepted exactly when
        /// shadow's grammar (restated here independently) accepts them.
        #[test]
        fn accepts_exactly_the_grammar(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just(":".to_string()), Just(" ".to_string()), Just("\r".to_string()),
                    Just("0".to_string()), "[1-9][0-9]{0,10}", "[a-z]{1,4}", Just("#".to_string()),
                ],
                1..8,
            )
        ) {
            let line: String = parts.concat();
            let f = parse(&line);
            let fields: Vec<&str> = line.split(':').collect();
            let dec = |s: &str| !s.is_empty()
                && s.bytes().all(|b| b.is_ascii_digit())
                && (s == "0" || !s.starts_with('0'))
                && s.parse::<u64>().is_ok();
            let ok = !line.starts_with('#')
                && fields.len() == 3
                && !fields[0].is_empty()
                && !line.contains([' ', '\r'])
                && dec(fields[1])
                && dec(fields[2])
                && fields[2] != "0"
                && fields[1].parse::<u64>().unwrap_or(u64::MAX)
                    .checked_add(fields[2].parse::<u64>().unwrap_or(u64::MAX))
                    .is_some_and(|e| e <= ID_LIMIT);
            prop_assert_eq!(f.entries.len(), usize::from(ok), "{:?}", line);
            prop_assert_eq!(f.problems.len(), usize::from(!ok && !line.starts_with('#')), "{:?}", line);
        }
    }
}

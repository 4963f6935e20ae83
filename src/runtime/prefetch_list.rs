//! An image's prefetch list: what the first container of a fresh image mount read, in the
//! order it first read it (directories listed, files and how far into each), so that the
//! next fresh mount of that image can read it ahead in parallel (`prefetch_replay`) —
//! as lazy-pulling snapshotters replay an image's prefetch list. Written by warren's
//! image server (`sqfs_record`), one file per user and image
//! (`$XDG_CACHE_HOME/warren/prefetch/DIGEST`).
//!
//! The file is input like any other (the user's own, but it can be truncated, stale or
//! edited): it is parsed with bounds, and only names a path inside the image; the replay
//! opens it under the image root (`RESOLVE_IN_ROOT`), read-only.
//!
//! Format: the line `warren-prefetch-list 1`, then entries, each `KIND` (`f` a file, `d`
//! a directory), the bytes to read ahead in decimal (0 for a directory), a space, the
//! path inside the image (absolute, bytes, no NUL) and a NUL byte.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::Path;

const MAGIC: &[u8] = b"warren-prefetch-list 1\n";
/// More entries than a Python import of a big framework touches (torch: ~3,000 files).
pub const MAX_ENTRIES: usize = 16_384;
/// PATH_MAX.
pub const MAX_PATH: usize = 4096;
/// A list's largest size on disk (bounded by the two limits above).
const MAX_FILE: u64 = (MAX_ENTRIES * (MAX_PATH + 24)) as u64;

/// A list older than this is made again by the next fresh mount that would read it: it
/// was recorded from one start, which may not have been a typical one.
pub const MAX_AGE: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// Whether the list with metadata `md` is older than [`MAX_AGE`] (a modification time
/// in the future is not).
pub fn stale(md: &std::fs::Metadata) -> bool {
    md.modified()
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > MAX_AGE)
}

/// What an entry asks to read ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file: its first `bytes` bytes.
    File { bytes: u64 },
    /// A directory: its listing.
    Dir,
}

/// One entry: a path inside the image (absolute, as bytes) and what to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    pub path: Vec<u8>,
}

/// Why a list was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ListError {
    #[error("not a prefetch list (no `warren-prefetch-list 1` line)")]
    Magic,
    #[error("more than {MAX_ENTRIES} entries")]
    TooMany,
    #[error("entry {0}: {1}")]
    Entry(usize, &'static str),
    #[error("larger than {MAX_FILE} bytes")]
    TooBig,
}

/// Whether `path` is one the list may name: absolute, at most [`MAX_PATH`] bytes, no NUL,
/// no empty, `.` or `..` component.
pub fn valid_path(path: &[u8]) -> bool {
    path.len() <= MAX_PATH
        && path.first() == Some(&b'/')
        && !path.contains(&0)
        && (path == b"/"
            || path[1..]
                .split(|&b| b == b'/')
                .all(|c| !c.is_empty() && c != b"." && c != b".."))
}

/// The list's bytes. Entries with a path [`valid_path`] refuses are left out.
pub fn encode(entries: &[Entry]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    for e in entries
        .iter()
        .filter(|e| valid_path(&e.path))
        .take(MAX_ENTRIES)
    {
        let (k, n) = match e.kind {
            Kind::File { bytes } => (b'f', bytes),
            Kind::Dir => (b'd', 0),
        };
        out.push(k);
        // Writing to a Vec cannot fail.
        let _ = write!(out, "{n} ");
        out.extend_from_slice(&e.path);
        out.push(0);
    }
    out
}

/// Parse a list; any malformed entry refuses the whole list (it is not what warren wrote).
pub fn decode(bytes: &[u8]) -> Result<Vec<Entry>, ListError> {
    if bytes.len() as u64 > MAX_FILE {
        return Err(ListError::TooBig);
    }
    let body = bytes.strip_prefix(MAGIC).ok_or(ListError::Magic)?;
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let i = out.len();
        if i == MAX_ENTRIES {
            return Err(ListError::TooMany);
        }
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(ListError::Entry(i, "no NUL at its end"))?;
        let (entry, next) = (&rest[..end], &rest[end + 1..]);
        rest = next;
        let (&k, entry) = entry.split_first().ok_or(ListError::Entry(i, "empty"))?;
        let sp = entry
            .iter()
            .position(|&b| b == b' ')
            .ok_or(ListError::Entry(i, "no space after the size"))?;
        let (digits, path) = (&entry[..sp], &entry[sp + 1..]);
        if digits.is_empty() || digits.len() > 20 || !digits.iter().all(u8::is_ascii_digit) {
            return Err(ListError::Entry(i, "size is not a decimal number"));
        }
        let n: u64 = std::str::from_utf8(digits)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(ListError::Entry(i, "size out of range"))?;
        let kind = match k {
            b'f' => Kind::File { bytes: n },
            b'd' if n == 0 => Kind::Dir,
            b'd' => return Err(ListError::Entry(i, "a directory with a size")),
            _ => return Err(ListError::Entry(i, "kind is neither f nor d")),
        };
        if !valid_path(path) {
            return Err(ListError::Entry(i, "not an absolute path of plain names"));
        }
        out.push(Entry {
            kind,
            path: path.to_vec(),
        });
    }
    Ok(out)
}

/// Read and parse the list at `path`: None when there is none; an error when it is
/// unreadable or malformed.
pub fn load(path: &Path) -> Result<Option<Vec<Entry>>, String> {
    use std::io::Read;
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let mut bytes = Vec::new();
    f.take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    decode(&bytes)
        .map(Some)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Publish `bytes` as `name` in the directory `dir`, whole or not at all: an unnamed
/// file linked in once written and synced (`O_TMPFILE`: a writer killed half-way leaves
/// nothing), else a temporary name renamed. Left alone when `name` appeared meanwhile
/// (another node of the job wrote it: same image, same start).
pub fn store(dir: &OwnedFd, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use nix::fcntl::{openat, renameat, OFlag};
    use nix::sys::stat::Mode;
    if let Ok(f) = openat(
        dir,
        ".",
        OFlag::O_TMPFILE | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    ) {
        use std::os::fd::AsRawFd;
        let link = format!("/proc/self/fd/{}", f.as_raw_fd());
        let mut file = std::fs::File::from(f);
        file.write_all(bytes)?;
        file.sync_all()?;
        let r = nix::unistd::linkat(
            nix::fcntl::AT_FDCWD,
            link.as_str(),
            dir,
            name,
            nix::fcntl::AtFlags::AT_SYMLINK_FOLLOW,
        );
        match r {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => return Ok(()),
            // No /proc to name it by: the temporary name below.
            Err(_) => {}
        }
    }
    // SAFETY: getpid cannot fail.
    let tmp = format!(".{name}.tmp.{}", unsafe { libc::getpid() });
    let f = openat(
        dir,
        tmp.as_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )?;
    let mut file = std::fs::File::from(f);
    let done = file.write_all(bytes).and_then(|_| file.sync_all());
    let exists = nix::sys::stat::fstatat(dir, name, nix::fcntl::AtFlags::empty()).is_ok();
    let r = match done {
        Ok(()) if !exists => renameat(dir, tmp.as_str(), dir, name).map_err(Into::into),
        Ok(()) => Ok(()),
        Err(e) => Err(e),
    };
    if r.is_err() || exists {
        let _ = nix::unistd::unlinkat(dir, tmp.as_str(), nix::unistd::UnlinkatFlags::NoRemoveDir);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn f(path: &str, bytes: u64) -> Entry {
        Entry {
            kind: Kind::File { bytes },
            path: path.as_bytes().to_vec(),
        }
    }

    #[test]
    fn round_trip_and_format() {
        let list = vec![
            f("/usr/bin/python3.11", 6834488),
            Entry {
                kind: Kind::Dir,
                path: b"/usr/lib/python3.11".to_vec(),
            },
        ];
        let b = encode(&list);
        assert_eq!(
            b,
            b"warren-prefetch-list 1\nf6834488 /usr/bin/python3.11\0d0 /usr/lib/python3.11\0"
        );
        assert_eq!(decode(&b).unwrap(), list);
    }

    #[test]
    fn refuses_what_warren_never_writes() {
        let bad: [(&[u8], ListError); 8] = [
            (b"", ListError::Magic),
            (b"warren-prefetch-list 2\n", ListError::Magic),
            (
                b"warren-prefetch-list 1\nf1 /a",
                ListError::Entry(0, "no NUL at its end"),
            ),
            (
                b"warren-prefetch-list 1\nx1 /a\0",
                ListError::Entry(0, "kind is neither f nor d"),
            ),
            (
                b"warren-prefetch-list 1\nf-1 /a\0",
                ListError::Entry(0, "size is not a decimal number"),
            ),
            (
                b"warren-prefetch-list 1\nf99999999999999999999 /a\0",
                ListError::Entry(0, "size out of range"),
            ),
            (
                b"warren-prefetch-list 1\nf1 /a/../etc\0",
                ListError::Entry(0, "not an absolute path of plain names"),
            ),
            (
                b"warren-prefetch-list 1\nd5 /a\0",
                ListError::Entry(0, "a directory with a size"),
            ),
        ];
        for (b, want) in bad {
            assert_eq!(decode(b), Err(want), "{:?}", String::from_utf8_lossy(b));
        }
        assert_eq!(
            decode(b"warren-prefetch-list 1\nf1 a\0").unwrap_err(),
            ListError::Entry(0, "not an absolute path of plain names")
        );
        assert!(decode(b"warren-prefetch-list 1\n").unwrap().is_empty());
    }

    #[test]
    fn encode_leaves_out_invalid_paths_and_caps_entries() {
        let mut list = vec![f("relative", 1), f("/a//b", 1), f("/ok", 1)];
        list.extend((0..MAX_ENTRIES + 5).map(|i| f(&format!("/f{i}"), 1)));
        let back = decode(&encode(&list)).unwrap();
        assert_eq!(back.len(), MAX_ENTRIES);
        assert_eq!(back[0], f("/ok", 1));
    }

    #[test]
    fn a_list_is_stale_after_a_week() {
        use std::time::{Duration, SystemTime};
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x");
        let f = std::fs::File::create(&p).unwrap();
        let day = Duration::from_secs(24 * 3600);
        for (age_days, want) in [(0, false), (6, false), (8, true)] {
            f.set_modified(SystemTime::now() - day * age_days).unwrap();
            assert_eq!(stale(&p.metadata().unwrap()), want, "{age_days} days");
        }
        f.set_modified(SystemTime::now() + day).unwrap();
        assert!(!stale(&p.metadata().unwrap()), "in the future");
    }

    #[test]
    fn store_publishes_whole_and_keeps_an_existing_list() {
        let d = tempfile::tempdir().unwrap();
        let dir = OwnedFd::from(std::fs::File::open(d.path()).unwrap());
        store(&dir, "x", b"one").unwrap();
        store(&dir, "x", b"two").unwrap();
        assert_eq!(std::fs::read(d.path().join("x")).unwrap(), b"one");
        let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file left");
        assert_eq!(load(&d.path().join("none")).unwrap(), None);
        assert!(load(&d.path().join("x"))
            .unwrap_err()
            .contains("not a prefetch list"));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut b = MAGIC.to_vec();
            b.extend(bytes);
            let _ = decode(&b);
        }

        #[test]
        fn valid_lists_round_trip(
            names in proptest::collection::vec(
                (proptest::collection::vec(
                    proptest::collection::vec(any::<u8>().prop_filter("no NUL or /", |b| *b != 0 && *b != b'/'), 1..12),
                    1..5),
                 proptest::option::of(any::<u64>())),
                0..40)
        ) {
            let list: Vec<Entry> = names
                .into_iter()
                .map(|(comps, size)| {
                    let mut path = Vec::new();
                    for c in comps {
                        path.push(b'/');
                        path.extend(c);
                    }
                    Entry {
                        kind: size.map_or(Kind::Dir, |bytes| Kind::File { bytes }),
                        path,
                    }
                })
                .filter(|e| valid_path(&e.path))
                .collect();
            prop_assert_eq!(decode(&encode(&list)).unwrap(), list);
        }
    }
}

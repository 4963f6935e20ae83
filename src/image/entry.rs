//! One layer entry after parsing: a normalised path, what it is, and its metadata.

use super::{MAX_NAME, MAX_PATH};

/// Owner, permissions, time and extended attributes of a file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Meta {
    /// Permission bits including setuid/setgid/sticky (`0o7777` mask).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Seconds since the epoch (negative values clamp to 0 when written).
    pub mtime: i64,
    /// `(name, value)` in the order the layer gave them.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Where a regular file's bytes are: spool `spool`, at `offset`, `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataRef {
    pub spool: u32,
    pub offset: u64,
    pub len: u64,
}

/// What an entry is. Char/block devices never get here (see [`super::layer`]): they are
/// dropped, except char 0:0, an overlayfs-style whiteout, which becomes `Whiteout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    File(DataRef),
    Dir,
    Symlink(Vec<u8>),
    /// A hard link to another path of the image (normalised like entry paths).
    Hardlink(Vec<u8>),
    Fifo,
    /// Hide the entry of this path from lower layers (`.wh.NAME`, or a 0:0 char device).
    Whiteout,
    /// Hide everything lower layers put in this directory (`DIR/.wh..wh..opq`).
    Opaque,
}

/// One parsed entry. `path` is relative, without `.`/empty components; empty = the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: Vec<u8>,
    pub kind: Kind,
    pub meta: Meta,
}

/// Why a path from a layer is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error("path has a '..' component")]
    DotDot,
    #[error("path longer than {MAX_PATH} bytes")]
    TooLong,
    #[error("path component longer than {MAX_NAME} bytes")]
    NameTooLong,
    #[error("path contains a NUL byte")]
    Nul,
}

/// Normalise a tar path: leading `/` and `./`, repeated and trailing `/` and `.`
/// components go; `..` anywhere is refused (never resolved: a layer has no business
/// naming its parent). `/`, `.` and `./` all become the root (empty path).
pub fn normalise(raw: &[u8]) -> Result<Vec<u8>, PathError> {
    if raw.contains(&0) {
        return Err(PathError::Nul);
    }
    let mut out = Vec::with_capacity(raw.len());
    for comp in raw.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => continue,
            b".." => return Err(PathError::DotDot),
            c if c.len() > MAX_NAME => return Err(PathError::NameTooLong),
            c => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(c);
            }
        }
    }
    if out.len() > MAX_PATH {
        return Err(PathError::TooLong);
    }
    Ok(out)
}

/// `a/b/c` → (`a/b`, `c`); `c` → (``, `c`).
pub fn split_parent(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

/// Show a path from a layer in a message: lossy UTF-8, absolute.
pub fn show(path: &[u8]) -> String {
    format!("/{}", String::from_utf8_lossy(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises() {
        for (i, o) in [
            ("/", ""),
            ("./", ""),
            (".", ""),
            ("./etc/", "etc"),
            ("/etc//passwd", "etc/passwd"),
            ("a/./b/.", "a/b"),
            ("usr/bin/x", "usr/bin/x"),
        ] {
            assert_eq!(normalise(i.as_bytes()).unwrap(), o.as_bytes(), "{i}");
        }
    }

    #[test]
    fn refuses_dotdot_and_long() {
        assert_eq!(normalise(b"../etc"), Err(PathError::DotDot));
        assert_eq!(normalise(b"a/../../b"), Err(PathError::DotDot));
        assert_eq!(normalise(&[b'x'; 256]), Err(PathError::NameTooLong));
        let long = "abcdefgh/".repeat(500);
        assert_eq!(normalise(long.as_bytes()), Err(PathError::TooLong));
        assert_eq!(normalise(b"a\0b"), Err(PathError::Nul));
    }

    #[test]
    fn splits() {
        assert_eq!(split_parent(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(split_parent(b"c"), (&b""[..], &b"c"[..]));
    }
}

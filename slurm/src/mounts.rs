//! `--container-mounts=SRC:DST[:FLAGS][,SRC:DST[:FLAGS]…]` as pyxis 0.24 reads it:
//! entries separated by `,`, mount flags inside an entry by `+` (enroot's fstab uses `,`,
//! which the list already takes). `DST` may be left out (`SRC` is used). A source is a path
//! (absolute, or relative to the job's working directory on the node: it starts with `/` or
//! `.`), `tmpfs` or `umount`. Pure: no file system access.
//!
//! Stricter than pyxis, on purpose (hostile input): the destination must be absolute and
//! may not contain a `..` component (pyxis lets enroot resolve relative destinations
//! inside the root), and the flags must be ones we know (pyxis hands any word to enroot).

use std::fmt;

/// Longest accepted `--container-mounts` value (all entries).
pub const MAX_LEN: usize = 65536;
/// Most entries in one value.
pub const MAX_ENTRIES: usize = 256;
/// Longest path (Linux PATH_MAX, terminating NUL included).
pub const MAX_PATH: usize = 4095;

/// Where a mount comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A host path: absolute, or relative (`./x`, `../x`) to the job's working directory.
    Path(String),
    /// A fresh tmpfs.
    Tmpfs,
    /// Not a mount: unmount `target` inside the container (pyxis `umount:`).
    Umount,
}

/// One entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Source.
    pub source: Source,
    /// Absolute path inside the container, no `..` component.
    pub target: String,
    /// Flags as given (validated words, order kept).
    pub flags: Vec<String>,
}

/// What was wrong with a `--container-mounts` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MountError {
    #[error("empty value")]
    Empty,
    #[error("value longer than {MAX_LEN} bytes")]
    TooLong,
    #[error("more than {MAX_ENTRIES} entries")]
    TooMany,
    #[error("empty entry (a leading, trailing or doubled ',')")]
    EmptyEntry,
    #[error("{0:?}: source must be an absolute path, a relative path starting with '.', \"tmpfs\" or \"umount\"")]
    BadSource(String),
    #[error("{0:?}: empty destination")]
    EmptyTarget(String),
    #[error("{0:?}: destination must be an absolute path inside the container")]
    RelativeTarget(String),
    #[error("{0:?}: destination may not contain '..'")]
    DotDot(String),
    #[error("{0:?}: path longer than {MAX_PATH} bytes or with a control character")]
    BadPath(String),
    #[error("{entry:?}: unknown mount flag {flag:?} (flags are separated by '+': ro, rw, bind, rbind, nosuid, nodev, noexec, [r]private, [r]slave, [r]shared, x-create=dir|file|auto, x-detach; tmpfs also size=, mode=, nr_inodes=)")]
    BadFlag { entry: String, flag: String },
    #[error("{0:?}: both ro and rw")]
    RoRw(String),
}

/// Flags valid for every source.
const FLAGS: [&str; 20] = [
    "ro",
    "rw",
    "bind",
    "rbind",
    "nosuid",
    "suid",
    "nodev",
    "dev",
    "noexec",
    "exec",
    "private",
    "rprivate",
    "slave",
    "rslave",
    "shared",
    "rshared",
    "unbindable",
    "runbindable",
    "x-detach",
    "nofail",
];

fn flag_ok(source: &Source, f: &str) -> bool {
    if FLAGS.contains(&f) {
        return true;
    }
    if let Some(v) = f.strip_prefix("x-create=") {
        return matches!(v, "dir" | "file" | "auto");
    }
    if *source != Source::Tmpfs {
        return false;
    }
    let num = |v: &str| !v.is_empty() && v.len() <= 20 && v.bytes().all(|b| b.is_ascii_digit());
    if let Some(v) = f.strip_prefix("size=") {
        let digits = v
            .strip_suffix(['k', 'm', 'g', 'K', 'M', 'G', '%'])
            .unwrap_or(v);
        return num(digits);
    }
    if let Some(v) = f.strip_prefix("mode=") {
        return !v.is_empty() && v.len() <= 4 && v.bytes().all(|b| (b'0'..=b'7').contains(&b));
    }
    if let Some(v) = f.strip_prefix("nr_inodes=") {
        return num(v);
    }
    false
}

fn path_ok(p: &str) -> bool {
    p.len() <= MAX_PATH && !p.chars().any(|c| c.is_control())
}

impl Mount {
    /// One entry (`SRC[:DST[:FLAGS]]`).
    pub fn parse(entry: &str) -> Result<Mount, MountError> {
        if entry.is_empty() {
            return Err(MountError::EmptyEntry);
        }
        let mut parts = entry.splitn(3, ':');
        let src = parts.next().unwrap_or_default();
        let dst = parts.next();
        let flags = parts.next().unwrap_or_default();
        let source = match src {
            "tmpfs" => Source::Tmpfs,
            "umount" => Source::Umount,
            s if s.starts_with('/') || s.starts_with('.') => Source::Path(s.to_string()),
            _ => return Err(MountError::BadSource(entry.into())),
        };
        if !path_ok(src) {
            return Err(MountError::BadPath(entry.into()));
        }
        let target = match dst {
            None => src,
            Some("") => return Err(MountError::EmptyTarget(entry.into())),
            Some(d) => d,
        };
        if !target.starts_with('/') {
            return Err(MountError::RelativeTarget(entry.into()));
        }
        if target.split('/').any(|c| c == "..") {
            return Err(MountError::DotDot(entry.into()));
        }
        if !path_ok(target) {
            return Err(MountError::BadPath(entry.into()));
        }
        let flags: Vec<String> = if flags.is_empty() {
            vec![]
        } else {
            flags.split('+').map(str::to_string).collect()
        };
        for f in &flags {
            if !flag_ok(&source, f) {
                return Err(MountError::BadFlag {
                    entry: entry.into(),
                    flag: f.clone(),
                });
            }
        }
        if flags.iter().any(|f| f == "ro") && flags.iter().any(|f| f == "rw") {
            return Err(MountError::RoRw(entry.into()));
        }
        Ok(Mount {
            source,
            target: target.to_string(),
            flags,
        })
    }

    /// Read-only bind?
    pub fn read_only(&self) -> bool {
        self.flags.iter().any(|f| f == "ro")
    }
}

/// A whole value: one or more entries separated by `,`.
pub fn parse_list(value: &str) -> Result<Vec<Mount>, MountError> {
    if value.is_empty() {
        return Err(MountError::Empty);
    }
    if value.len() > MAX_LEN {
        return Err(MountError::TooLong);
    }
    let entries: Vec<&str> = value.split(',').collect();
    if entries.len() > MAX_ENTRIES {
        return Err(MountError::TooMany);
    }
    entries.into_iter().map(Mount::parse).collect()
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Path(p) => f.write_str(p),
            Source::Tmpfs => f.write_str("tmpfs"),
            Source::Umount => f.write_str("umount"),
        }
    }
}

impl fmt::Display for Mount {
    /// The canonical entry: `SRC:DST[:F1+F2]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.source, self.target)?;
        if !self.flags.is_empty() {
            write!(f, ":{}", self.flags.join("+"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn pyxis_forms() {
        let m = parse_list("/scratch:/scratch,./data:/data:ro+rprivate,tmpfs:/tmp:size=1G+mode=1777,umount:/etc/x,/opt").unwrap();
        assert_eq!(m.len(), 5);
        assert_eq!(m[0].source, Source::Path("/scratch".into()));
        assert_eq!(m[1].flags, ["ro", "rprivate"]);
        assert!(m[1].read_only());
        assert_eq!(m[2].source, Source::Tmpfs);
        assert_eq!(m[3].source, Source::Umount);
        assert_eq!(m[4].target, "/opt");
        assert_eq!(m[1].to_string(), "./data:/data:ro+rprivate");
        assert!(Mount::parse("/a:/b:x-create=file").is_ok());
        assert!(Mount::parse("/a:/b:").is_ok());
    }

    #[test]
    fn refusals() {
        let e = |v: &str| parse_list(v).unwrap_err();
        assert_eq!(e(""), MountError::Empty);
        assert_eq!(e("/a:/b,"), MountError::EmptyEntry);
        assert_eq!(e(",/a:/b"), MountError::EmptyEntry);
        assert!(matches!(e("a:/b"), MountError::BadSource(_)));
        assert!(matches!(e("/a:b"), MountError::RelativeTarget(_)));
        assert!(matches!(e("/a:./b"), MountError::RelativeTarget(_)));
        assert!(matches!(e("/a:/b/../../etc"), MountError::DotDot(_)));
        assert!(matches!(e("/a:"), MountError::EmptyTarget(_)));
        assert!(matches!(e("/a:/b:bogus"), MountError::BadFlag { .. }));
        assert!(matches!(e("/a:/b:size=1G"), MountError::BadFlag { .. }));
        assert!(matches!(e("/a:/b:ro+rw"), MountError::RoRw(_)));
        assert!(matches!(e("/a:/b:ro,rw"), MountError::BadSource(_)));
        assert!(matches!(e("tmpfs:/t:mode=99"), MountError::BadFlag { .. }));
        assert!(matches!(e("/a\n:/b"), MountError::BadPath(_)));
        assert_eq!(e(&"/a:/b,".repeat(300)), MountError::TooMany);
    }

    fn path() -> impl Strategy<Value = String> {
        "(/[a-zA-Z0-9_.-]{1,12}){1,4}".prop_filter("no ..", |p| !p.split('/').any(|c| c == ".."))
    }

    fn mount() -> impl Strategy<Value = Mount> {
        let src = prop_oneof![
            path().prop_map(Source::Path),
            path().prop_map(|p| Source::Path(format!(".{p}"))),
            Just(Source::Tmpfs),
            Just(Source::Umount),
        ];
        let flag = prop_oneof![
            Just("ro".to_string()),
            Just("rbind".to_string()),
            Just("nosuid".to_string()),
            Just("x-create=dir".to_string()),
            Just("rprivate".to_string()),
        ];
        (src, path(), proptest::collection::vec(flag, 0..3)).prop_map(|(source, target, flags)| {
            Mount {
                source,
                target,
                flags,
            }
        })
    }

    proptest! {
        #[test]
        fn never_panics(s in any::<String>()) {
            let _ = parse_list(&s);
        }

        #[test]
        fn never_panics_on_mount_like(s in "[/.a-z:+,=x-]{0,40}") {
            if let Ok(ms) = parse_list(&s) {
                for m in ms {
                    prop_assert!(m.target.starts_with('/'));
                    prop_assert!(!m.target.split('/').any(|c| c == ".."));
                }
            }
        }

        #[test]
        fn round_trips(ms in proptest::collection::vec(mount(), 1..5)) {
            let text: Vec<String> = ms.iter().map(|m| m.to_string()).collect();
            prop_assert_eq!(parse_list(&text.join(",")).unwrap(), ms);
        }
    }
}

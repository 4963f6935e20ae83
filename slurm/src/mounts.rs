//! `--container-mounts=SRC:DST[:FLAGS][,SRC:DST[:FLAGS]…]` as pyxis 0.24 reads it:
//! entries separated by `,`, mount flags inside an entry by `+` (enroot's fstab uses `,`,
//! which the list already takes). `DST` may be left out (`SRC` is used). A source is a path
//! (absolute, or relative to the job's working directory on the node: it starts with `/` or
//! `.`), `tmpfs` or `umount`. Pure: no file system access.
//!
//! Stricter than pyxis, on purpose (hostile input): the destination must be absolute and
//! may not contain a `..` component (pyxis lets enroot resolve relative destinations
//! inside the root), and the flags must be ones we know and can honour rootless (pyxis
//! hands any word to enroot): contradictory pairs (`ro`+`rw`, `nosuid`+`suid`, …), two
//! propagations, flags that make no sense for the source (`bind` on a tmpfs, any flag
//! on `umount:`) and `x-detach` (use an `umount:` entry: entries apply in the given
//! order) are refused. [`Mount::opts`] gives the flags as typed options.

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
    #[error("{entry:?}: unknown mount flag {flag:?} (flags are separated by '+': ro, rw, bind, rbind, [no]suid, [no]dev, [no]exec, [r]private, [r]slave, [r]shared, [r]unbindable, x-create=dir|file|auto, nofail; tmpfs also size=, mode=, nr_inodes=)")]
    BadFlag { entry: String, flag: String },
    #[error("{0:?}: both ro and rw")]
    RoRw(String),
    #[error("{entry:?}: {a} and {b} contradict each other")]
    Conflict { entry: String, a: String, b: String },
    #[error("{entry:?}: {flag}: {why}")]
    NotHere {
        entry: String,
        flag: String,
        why: &'static str,
    },
}

/// Flags valid for every source.
const FLAGS: [&str; 19] = [
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
    "nofail",
];

/// Typed meaning of an entry's flags (see [`Mount::opts`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opts {
    /// `ro`.
    pub read_only: bool,
    /// `nosuid`, `nodev`, `noexec`: added to the mount.
    pub nosuid: bool,
    pub nodev: bool,
    pub noexec: bool,
    /// `rw`, `suid`, `dev`, `exec`: the opposite restriction must be absent (a user
    /// namespace cannot lift one the host mount has: refused on the node).
    pub want_rw: bool,
    pub want_suid: bool,
    pub want_dev: bool,
    pub want_exec: bool,
    /// `rbind` (the default, as pyxis's) rather than `bind`.
    pub recursive: bool,
    /// Propagation to set once mounted, and whether recursively (`r…`).
    pub propagation: Option<(Propagation, bool)>,
    /// What to create at a missing destination (`x-create`, default `auto`: the
    /// source's kind; a tmpfs always needs a directory).
    pub create: Create,
    /// `nofail`: a missing source (or, for `umount:`, nothing mounted) skips the entry.
    pub nofail: bool,
    /// tmpfs options (`size=`, `mode=`, `nr_inodes=`), in order.
    pub data: Vec<String>,
}

/// `x-create=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    Dir,
    File,
    Auto,
}

/// Mount propagation (`mount --make-…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    Private,
    Slave,
    Shared,
    Unbindable,
}

fn propagation(f: &str) -> Option<(Propagation, bool)> {
    Some(match f {
        "private" => (Propagation::Private, false),
        "rprivate" => (Propagation::Private, true),
        "slave" => (Propagation::Slave, false),
        "rslave" => (Propagation::Slave, true),
        "shared" => (Propagation::Shared, false),
        "rshared" => (Propagation::Shared, true),
        "unbindable" => (Propagation::Unbindable, false),
        "runbindable" => (Propagation::Unbindable, true),
        _ => return None,
    })
}

/// Pairs of flags that contradict each other.
const OPPOSITES: [(&str, &str); 5] = [
    ("ro", "rw"),
    ("nosuid", "suid"),
    ("nodev", "dev"),
    ("noexec", "exec"),
    ("bind", "rbind"),
];

/// Refuse contradictions and flags that make no sense (or cannot be honoured rootless)
/// for this kind of source.
fn check_combination(entry: &str, source: &Source, flags: &[String]) -> Result<(), MountError> {
    let has = |f: &str| flags.iter().any(|g| g == f);
    for (a, b) in OPPOSITES {
        if has(a) && has(b) {
            if a == "ro" {
                return Err(MountError::RoRw(entry.into()));
            }
            return Err(MountError::Conflict {
                entry: entry.into(),
                a: a.into(),
                b: b.into(),
            });
        }
    }
    let props: Vec<&String> = flags.iter().filter(|f| propagation(f).is_some()).collect();
    let creates: Vec<&String> = flags
        .iter()
        .filter(|f| f.starts_with("x-create="))
        .collect();
    for group in [props, creates] {
        if let [a, b, ..] = group.as_slice() {
            return Err(MountError::Conflict {
                entry: entry.into(),
                a: a.to_string(),
                b: b.to_string(),
            });
        }
    }
    let not_here = |flag: &str, why| {
        Err(MountError::NotHere {
            entry: entry.into(),
            flag: flag.into(),
            why,
        })
    };
    for f in flags {
        match (source, f.as_str()) {
            (Source::Umount, "nofail") => {}
            (Source::Umount, f) => return not_here(f, "an umount: entry takes no mount flags"),
            (Source::Tmpfs, "bind" | "rbind") => {
                return not_here(f, "a tmpfs is a new mount, not a bind")
            }
            (Source::Tmpfs, "x-create=file") => {
                return not_here(f, "a tmpfs can only be mounted on a directory")
            }
            (Source::Tmpfs, "dev") => {
                return not_here(
                    f,
                    "device nodes never work on a tmpfs mounted in a user namespace (rootless)",
                )
            }
            _ => {}
        }
    }
    Ok(())
}

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
        if flags.iter().any(|f| f == "x-detach") {
            return Err(MountError::NotHere {
                entry: entry.into(),
                flag: "x-detach".into(),
                why: "use an umount:DST entry (entries apply in the given order)",
            });
        }
        for f in &flags {
            if !flag_ok(&source, f) {
                return Err(MountError::BadFlag {
                    entry: entry.into(),
                    flag: f.clone(),
                });
            }
        }
        check_combination(entry, &source, &flags)?;
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

    /// The flags as typed options (the entry was checked by [`Mount::parse`]).
    pub fn opts(&self) -> Opts {
        let has = |f: &str| self.flags.iter().any(|g| g == f);
        Opts {
            read_only: has("ro"),
            nosuid: has("nosuid"),
            nodev: has("nodev"),
            noexec: has("noexec"),
            want_rw: has("rw"),
            want_suid: has("suid"),
            want_dev: has("dev"),
            want_exec: has("exec"),
            recursive: !has("bind"),
            propagation: self.flags.iter().find_map(|f| propagation(f)),
            create: match self.flags.iter().find_map(|f| f.strip_prefix("x-create=")) {
                Some("dir") => Create::Dir,
                Some("file") => Create::File,
                _ => Create::Auto,
            },
            nofail: has("nofail"),
            data: self
                .flags
                .iter()
                .filter(|f| {
                    ["size=", "mode=", "nr_inodes="]
                        .iter()
                        .any(|p| f.starts_with(p))
                })
                .cloned()
                .collect(),
        }
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
        for (v, a, b) in [
            ("/a:/b:nosuid+suid", "nosuid", "suid"),
            ("/a:/b:exec+noexec", "noexec", "exec"),
            ("/a:/b:bind+rbind", "bind", "rbind"),
            ("/a:/b:private+rshared", "private", "rshared"),
            (
                "/a:/b:x-create=dir+x-create=file",
                "x-create=dir",
                "x-create=file",
            ),
        ] {
            assert_eq!(
                e(v),
                MountError::Conflict {
                    entry: v.into(),
                    a: a.into(),
                    b: b.into()
                },
                "{v}"
            );
        }
        for v in [
            "tmpfs:/t:rbind",
            "tmpfs:/t:x-create=file",
            "tmpfs:/t:dev",
            "umount:/u:ro",
            "/a:/b:x-detach",
            "none:/b:x-detach",
        ] {
            assert!(
                matches!(e(v), MountError::NotHere { .. } | MountError::BadSource(_)),
                "{v}"
            );
        }
        assert!(e("/a:/b:x-detach").to_string().contains("umount:DST"));
        assert!(Mount::parse("umount:/u:nofail").is_ok());
    }

    #[test]
    fn typed_options() {
        let o = Mount::parse("/a:/b").unwrap().opts();
        assert!(o.recursive && !o.read_only && o.propagation.is_none());
        assert_eq!((o.create, o.nofail), (Create::Auto, false));
        let o = Mount::parse("/a:/b:ro+bind+nosuid+nodev+noexec+rslave+x-create=file+nofail")
            .unwrap()
            .opts();
        assert!(o.read_only && !o.recursive && o.nosuid && o.nodev && o.noexec && o.nofail);
        assert_eq!(o.propagation, Some((Propagation::Slave, true)));
        assert_eq!(o.create, Create::File);
        let o = Mount::parse("/a:/b:rw+suid+dev+exec+shared")
            .unwrap()
            .opts();
        assert!(o.want_rw && o.want_suid && o.want_dev && o.want_exec);
        assert_eq!(o.propagation, Some((Propagation::Shared, false)));
        let o = Mount::parse("tmpfs:/t:size=1G+mode=1777+ro")
            .unwrap()
            .opts();
        assert_eq!(o.data, ["size=1G", "mode=1777"]);
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
        // Compatible flags: any subset, in this order, is a valid path entry.
        let flags = proptest::sample::subsequence(
            vec!["ro", "rbind", "nosuid", "x-create=dir", "rprivate"],
            0..4,
        );
        (src, path(), flags).prop_map(|(source, target, flags)| {
            let flags = flags
                .into_iter()
                .filter(|f| match source {
                    Source::Path(_) => true,
                    Source::Tmpfs => *f != "rbind",
                    Source::Umount => false,
                })
                .map(String::from)
                .collect();
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

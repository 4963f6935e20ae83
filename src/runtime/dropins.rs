//! Site drop-ins, as enroot has them: `mounts.d/*.fstab` (bind mounts every container
//! gets) and `environ.d/*.env` (variables every container gets). Directories are read in
//! order, files in lexical order; a file of the same name in a later directory replaces
//! the earlier one. Parsing is pure ([`parse_fstab`]); errors name the file and line.
//!
//! fstab lines: `SRC DST [TYPE [OPTIONS [DUMP [PASS]]]]`, `#` comments. SRC is an absolute
//! host path; DST a path inside (a relative one is taken from the root, as enroot does);
//! TYPE `none`, `bind` or `rbind` (rootless: binds only); OPTIONS among `ro`, `rw`,
//! `bind`, `rbind`, `nosuid`, `nodev`, `noexec`, `nofail` (skip when SRC is missing) and
//! enroot's `x-create=dir|file` (accepted: mount points are always created).
//! env lines: `K=V` or `K` (the caller's value), `#` comments: `--env-file`'s syntax.

use super::mounts::{container_path, Bind};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A drop-in file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DropinError {
    #[error("{file} line {line}: {what}")]
    Line {
        file: String,
        line: usize,
        what: String,
    },
    #[error("{file}: {what}")]
    File { file: String, what: String },
}

/// Largest drop-in file read.
pub const MAX_BYTES: u64 = 1 << 20;

/// The files with extension `ext` of `dirs`: later directories replace files of the same
/// name; the result is in lexical order of the names.
pub fn files(dirs: &[PathBuf], ext: &str) -> Vec<PathBuf> {
    let mut by_name: BTreeMap<std::ffi::OsString, PathBuf> = BTreeMap::new();
    for d in dirs {
        let Ok(rd) = std::fs::read_dir(d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().and_then(|x| x.to_str()) == Some(ext) && p.is_file() {
                by_name.insert(e.file_name(), p);
            }
        }
    }
    by_name.into_values().collect()
}

/// Read a drop-in file (bounded).
pub fn read(file: &Path) -> Result<String, DropinError> {
    let fail = |what: String| DropinError::File {
        file: file.display().to_string(),
        what,
    };
    let md = std::fs::metadata(file).map_err(|e| fail(e.to_string()))?;
    if md.len() > MAX_BYTES {
        return Err(fail(format!("more than {MAX_BYTES} bytes")));
    }
    std::fs::read_to_string(file).map_err(|e| fail(e.to_string()))
}

/// One mount of a fstab drop-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FstabMount {
    pub bind: Bind,
    /// `nofail`: skipped when the source is missing.
    pub optional: bool,
}

/// Parse a fstab drop-in's text (`file` names it in errors).
pub fn parse_fstab(file: &str, text: &str) -> Result<Vec<FstabMount>, DropinError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fail = |what: String| DropinError::Line {
            file: file.to_string(),
            line: i + 1,
            what,
        };
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 2 || f.len() > 6 {
            return Err(fail("expected SRC DST [TYPE [OPTIONS]]".into()));
        }
        let src = f[0];
        if !src.starts_with('/') || container_path(src).is_none() {
            return Err(fail(format!(
                "source {src:?} must be an absolute host path without '..'"
            )));
        }
        let dst = if f[1].starts_with('/') {
            f[1].to_string()
        } else {
            format!("/{}", f[1])
        };
        let dest = match container_path(&dst) {
            Some(d) if d != Path::new("/") => d,
            _ => {
                return Err(fail(format!(
                    "destination {:?} must be a path inside the container without '..' (not /)",
                    f[1]
                )))
            }
        };
        match f.get(2).copied() {
            None | Some("none" | "bind" | "rbind") => {}
            Some(t) => {
                return Err(fail(format!(
                    "type {t:?} is not supported (rootless: none, bind or rbind)"
                )))
            }
        }
        let mut m = FstabMount {
            bind: Bind {
                source: PathBuf::from(src),
                dest,
                read_only: false,
                device: false,
                noexec: false,
            },
            optional: false,
        };
        for o in f.get(3).map(|o| o.split(',')).into_iter().flatten() {
            match o {
                "ro" => m.bind.read_only = true,
                "rw" => m.bind.read_only = false,
                "noexec" => m.bind.noexec = true,
                "nofail" => m.optional = true,
                "bind" | "rbind" | "nosuid" | "nodev" | "defaults" | "x-create=dir"
                | "x-create=file" | "private" | "rprivate" | "slave" | "rslave" => {}
                other => return Err(fail(format!("option {other:?} is not supported"))),
            }
        }
        out.push(m);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn enroot_style_lines() {
        let t = "# site\n/etc/hosts /etc/hosts none x-create=file,bind,ro,nosuid,nodev\n\n/scratch scratch none bind,nofail 0 0\n/opt/x /opt/y\n";
        let m = parse_fstab("/etc/warren/mounts.d/10-site.fstab", t).unwrap();
        assert_eq!(m.len(), 3);
        assert!(m[0].bind.read_only && !m[0].optional);
        assert_eq!(m[1].bind.dest, Path::new("/scratch"));
        assert!(m[1].optional && !m[1].bind.read_only);
        assert_eq!(m[2].bind.source, Path::new("/opt/x"));
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        for (t, want) in [
            ("/a", "expected SRC DST"),
            ("a /b", "absolute host path"),
            ("/a /../etc", "inside the container"),
            ("/a /", "inside the container"),
            ("/a /b tmpfs", "type \"tmpfs\""),
            ("/a /b none suid", "option \"suid\""),
        ] {
            let e = parse_fstab("f.fstab", &format!("# c\n{t}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("f.fstab line 2: "), "{e}");
            assert!(e.contains(want), "{want} not in {e}");
        }
    }

    #[test]
    fn files_later_dirs_replace_same_names_lexical_order() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        for (dir, n) in [
            (&a, "20-x.env"),
            (&a, "10-y.env"),
            (&b, "20-x.env"),
            (&b, "z.txt"),
        ] {
            std::fs::write(dir.join(n), "").unwrap();
        }
        let f = files(&[a.clone(), b.clone(), d.path().join("none")], "env");
        assert_eq!(f, vec![a.join("10-y.env"), b.join("20-x.env")]);
    }

    proptest! {
        #[test]
        fn any_fstab_text_parses_or_fails_on_one_line(t in "[ -~\n]{0,200}") {
            match parse_fstab("f", &t) {
                Ok(ms) => for m in ms {
                    prop_assert!(m.bind.source.is_absolute());
                    prop_assert!(m.bind.dest.is_absolute() && m.bind.dest != Path::new("/"));
                    prop_assert!(!m.bind.dest.components().any(|c| c == std::path::Component::ParentDir));
                },
                Err(e) => prop_assert!(!e.to_string().contains('\n')),
            }
        }
    }
}

//! Bind mounts asked for on the command line: `-v SRC:DST[:ro|rw]`. Pure parsing and
//! validation; the host side (SRC) is canonicalized by [`Bind::resolve_source`].

use std::path::{Component, Path, PathBuf};
use thiserror::Error;

/// A validated bind mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// Host path (absolute; canonical after `resolve_source`).
    pub source: PathBuf,
    /// Path inside the container (absolute, normalized, no `..`).
    pub dest: PathBuf,
    pub read_only: bool,
    /// The source is a device node (a CDI device): bound without `nodev`.
    pub device: bool,
    /// Bound `noexec` (a CDI mount's option).
    pub noexec: bool,
}

/// `dst` as an absolute, normalized path inside the container: `None` when it is
/// relative, holds `..` or a NUL byte. The root itself comes back as `/`.
pub fn container_path(dst: &str) -> Option<PathBuf> {
    if !dst.starts_with('/') || dst.contains('\0') {
        return None;
    }
    let mut dest = PathBuf::from("/");
    for c in Path::new(dst).components() {
        match c {
            Component::Normal(n) => dest.push(n),
            Component::ParentDir => return None,
            _ => {}
        }
    }
    Some(dest)
}

/// What is wrong with a `-v` value.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BindError {
    #[error("-v {0:?}: expected SRC:DST[:ro|rw]")]
    Shape(String),
    #[error("-v {0:?}: {1} must be an absolute path")]
    NotAbsolute(String, &'static str),
    #[error("-v {0:?}: destination must not contain '..'")]
    DotDot(String),
    #[error("-v {0:?}: unknown option {1:?} (ro or rw)")]
    Option(String, String),
    #[error("-v {0:?}: destination / is not allowed")]
    Root(String),
}

/// Parse one `-v` value.
pub fn parse(spec: &str) -> Result<Bind, BindError> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (src, dst, opt) = match parts.as_slice() {
        [s, d] => (*s, *d, None),
        [s, d, o] => (*s, *d, Some(*o)),
        _ => return Err(BindError::Shape(spec.into())),
    };
    if src.is_empty() || dst.is_empty() || src.contains('\0') || dst.contains('\0') {
        return Err(BindError::Shape(spec.into()));
    }
    if !src.starts_with('/') {
        return Err(BindError::NotAbsolute(spec.into(), "source"));
    }
    if !dst.starts_with('/') {
        return Err(BindError::NotAbsolute(spec.into(), "destination"));
    }
    let Some(dest) = container_path(dst) else {
        return Err(BindError::DotDot(spec.into()));
    };
    if dest == Path::new("/") {
        return Err(BindError::Root(spec.into()));
    }
    let mut read_only = false;
    if let Some(o) = opt {
        for w in o.split(',') {
            match w {
                "ro" => read_only = true,
                "rw" => read_only = false,
                other => return Err(BindError::Option(spec.into(), other.into())),
            }
        }
    }
    Ok(Bind {
        source: PathBuf::from(src),
        dest,
        read_only,
        device: false,
        noexec: false,
    })
}

impl Bind {
    /// Canonicalize the host source (it must exist; the user's own permissions apply).
    pub fn resolve_source(mut self) -> anyhow::Result<Bind> {
        use anyhow::Context;
        self.source = std::fs::canonicalize(&self.source)
            .with_context(|| format!("-v source {}", self.source.display()))?;
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_specs() {
        assert_eq!(
            parse("/data:/mnt/./d/:ro").unwrap(),
            Bind {
                source: "/data".into(),
                dest: "/mnt/d".into(),
                read_only: true,
                device: false,
                noexec: false,
            }
        );
        assert!(!parse("/a:/b").unwrap().read_only);
        assert!(!parse("/a:/b:ro,rw").unwrap().read_only);
    }

    #[test]
    fn bad_specs() {
        assert!(matches!(parse("/a"), Err(BindError::Shape(_))));
        assert!(matches!(parse("/a:/b:ro:x"), Err(BindError::Shape(_))));
        assert!(matches!(
            parse("a:/b"),
            Err(BindError::NotAbsolute(_, "source"))
        ));
        assert!(matches!(
            parse("/a:b"),
            Err(BindError::NotAbsolute(_, "destination"))
        ));
        assert!(matches!(parse("/a:/b/../c"), Err(BindError::DotDot(_))));
        assert!(matches!(parse("/a:/b:z"), Err(BindError::Option(_, _))));
        assert!(matches!(parse("/a:/"), Err(BindError::Root(_))));
    }
}

//! `--container-image`: a squashfs file on the node (pyxis: a value starting with `/` or
//! `.`) or a registry reference, parsed by warren's own reference parser (enroot/pyxis
//! `[USER@][REGISTRY#]IMAGE[:TAG]`, docker form, digest) so srun refuses exactly what
//! `warren pull` would refuse on the node.

use std::fmt;

/// What the user asked to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Image {
    /// A squashfs file on the node; relative to the job's working directory if it starts
    /// with `.`.
    Squashfs(String),
    /// A registry reference, as given (the node's `warren pull` resolves it).
    Registry(String),
}

/// Why the value is no image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("argument required")]
    Empty,
    #[error("longer than {} bytes", crate::args::MAX_VALUE)]
    TooLong,
    #[error("squashfs path {0:?} contains a control character")]
    BadPath(String),
    #[error("{0}")]
    Reference(String),
}

/// Classify and check a `--container-image` value.
pub fn parse(v: &str) -> Result<Image, ImageError> {
    if v.is_empty() {
        return Err(ImageError::Empty);
    }
    if v.len() > crate::args::MAX_VALUE {
        return Err(ImageError::TooLong);
    }
    if v.starts_with('/') || v.starts_with('.') {
        if v.chars().any(|c| c.is_control()) {
            return Err(ImageError::BadPath(v.into()));
        }
        return Ok(Image::Squashfs(v.to_string()));
    }
    // oci:DIR is a warren CLI form, not a pyxis one: a directory on the submit host.
    warren::reference::ImageRef::parse(v).map_err(|e| ImageError::Reference(format!("{e:#}")))?;
    Ok(Image::Registry(v.to_string()))
}

impl fmt::Display for Image {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Image::Squashfs(p) | Image::Registry(p) => f.write_str(p),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn forms() {
        for ok in [
            "nvcr.io#nvidia/pytorch:24.05-py3",
            "127.0.0.1:5000/lab/app:1.2",
            "127.0.0.1:5000#test/busybox:latest",
            "user@127.0.0.1:5000#test/busybox",
            "docker://busybox",
            "busybox@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "ubuntu",
        ] {
            assert_eq!(parse(ok), Ok(Image::Registry(ok.into())), "{ok}");
        }
        assert_eq!(parse("/x/y.sqfs"), Ok(Image::Squashfs("/x/y.sqfs".into())));
        assert_eq!(parse("./y.sqfs"), Ok(Image::Squashfs("./y.sqfs".into())));
        for bad in [
            "",
            "Ubuntu",
            "a b",
            "#x",
            "x:",
            "x@sha256:12",
            "ftp://x/y",
            "oci:/d",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse(&"a".repeat(5000)), Err(ImageError::TooLong));
    }

    proptest! {
        #[test]
        fn never_panics(s in any::<String>()) {
            let _ = parse(&s);
        }

        /// The plugin accepts a registry reference exactly when warren's parser does.
        #[test]
        fn agrees_with_warren(s in "[a-zA-Z0-9:/@#._-]{1,40}") {
            prop_assume!(!s.starts_with('/') && !s.starts_with('.') && !s.starts_with("oci:"));
            prop_assert_eq!(parse(&s).is_ok(), warren::reference::ImageRef::parse(&s).is_ok());
        }
    }
}

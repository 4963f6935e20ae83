//! Image references: what users type, parsed and checked before anything touches the
//! network or the store.
//!
//! Accepted forms (Docker/Podman and enroot/pyxis syntaxes):
//! - `busybox`, `busybox:1.36`, `org/app:1.2` — registry from `pull.short_name_registries`
//!   (default `docker.io`; single names get `library/` there)
//! - `ghcr.io/org/app:1.2`, `127.0.0.1:5000/lab/app@sha256:…`, `localhost/app`
//! - `docker://…` prefix on any of the above
//! - enroot: `[docker://][USER@][REGISTRY#]IMAGE[:TAG]`
//! - a local OCI image layout: `oci:DIR[:TAG]`

use crate::digest::Digest;
use anyhow::{bail, Result};
use std::fmt;
use std::path::PathBuf;

pub const DOCKER_HUB: &str = "docker.io";

/// What to pull from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Registry(ImageRef),
    /// An OCI image layout directory and the tag (`org.opencontainers.image.ref.name`) in it.
    OciLayout {
        dir: PathBuf,
        tag: Option<String>,
    },
}

/// A registry image reference. `registry` is `None` for a short name that still has to
/// be qualified from the configured search list.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    pub registry: Option<String>,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
    /// enroot's `USER@`: whose credentials to use.
    pub user: Option<String>,
}

impl Reference {
    pub fn parse(s: &str) -> Result<Reference> {
        if let Some(rest) = s.strip_prefix("oci:") {
            if rest.is_empty() {
                bail!("image reference {s:?}: oci: needs a directory, as oci:DIR[:TAG]");
            }
            // DIR may itself contain ':' only if no tag is given; the last ':' after the
            // last '/' separates the tag, as skopeo does.
            let slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
            let (dir, tag) = match rest[slash..].rfind(':') {
                Some(i) => (&rest[..slash + i], Some(rest[slash + i + 1..].to_string())),
                None => (rest, None),
            };
            if let Some(t) = &tag {
                check_tag(s, t)?;
            }
            return Ok(Reference::OciLayout {
                dir: PathBuf::from(dir),
                tag,
            });
        }
        Ok(Reference::Registry(ImageRef::parse(s)?))
    }
}

impl ImageRef {
    pub fn parse(input: &str) -> Result<ImageRef> {
        if input.is_empty() {
            bail!("image reference is empty");
        }
        if input.len() > 4096 || input.chars().any(|c| c.is_whitespace() || c.is_control()) {
            bail!("image reference {input:?}: contains white space or control characters, or is too long");
        }
        let mut s = input.strip_prefix("docker://").unwrap_or(input);
        if s.contains("://") {
            bail!("image reference {input:?}: unsupported transport (use docker://, oci: or a plain name)");
        }
        // enroot: USER@ before REGISTRY#, and '@' otherwise only introduces a digest.
        let mut user = None;
        if let Some(hash) = s.find('#') {
            if let Some(at) = s[..hash].find('@') {
                user = Some(s[..at].to_string());
                s = &s[at + 1..];
            }
        }
        let (mut registry, rest) = match s.split_once('#') {
            Some((reg, rest)) => {
                if reg.is_empty() {
                    bail!("image reference {input:?}: empty registry before '#'");
                }
                (Some(reg.to_string()), rest)
            }
            None => (None, s),
        };
        let (name_tag, digest) = match rest.split_once('@') {
            Some((n, d)) => {
                let d = Digest::parse(d)
                    .map_err(|e| anyhow::anyhow!("image reference {input:?}: {e}"))?;
                (n, Some(d))
            }
            None => (rest, None),
        };
        // The tag is after the last ':' that follows the last '/' (a ':' before a '/' is a port).
        let slash = name_tag.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (mut name, tag) = match name_tag[slash..].rfind(':') {
            Some(i) => (
                &name_tag[..slash + i],
                Some(name_tag[slash + i + 1..].to_string()),
            ),
            None => (name_tag, None),
        };
        if let Some(t) = &tag {
            check_tag(input, t)?;
        }
        if registry.is_none() {
            if let Some((first, rest)) = name.split_once('/') {
                if looks_like_registry(first) {
                    registry = Some(first.to_string());
                    name = rest;
                }
            }
        }
        if let Some(r) = &registry {
            check_registry(input, r)?;
        }
        check_repository(input, name)?;
        let mut repository = name.to_string();
        if registry.as_deref() == Some(DOCKER_HUB) && !repository.contains('/') {
            repository = format!("library/{repository}");
        }
        if let Some(u) = &user {
            if u.is_empty()
                || !u
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            {
                bail!("image reference {input:?}: invalid user name {u:?} before '@'");
            }
        }
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest,
            user,
        })
    }

    /// Fully qualified candidates, in the order to try: the reference itself if it names
    /// a registry, else one per configured short-name registry.
    pub fn candidates(&self, short_name_registries: &[String]) -> Vec<ImageRef> {
        if self.registry.is_some() {
            return vec![self.clone()];
        }
        short_name_registries
            .iter()
            .map(|reg| {
                let mut r = self.clone();
                r.registry = Some(reg.clone());
                if reg == DOCKER_HUB && !r.repository.contains('/') {
                    r.repository = format!("library/{}", r.repository);
                }
                r
            })
            .collect()
    }

    /// Registry host (`docker.io` when unqualified).
    pub fn registry(&self) -> &str {
        self.registry.as_deref().unwrap_or(DOCKER_HUB)
    }

    /// Tag, `latest` when neither tag nor digest is given.
    pub fn tag_or_latest(&self) -> Option<&str> {
        match (&self.tag, &self.digest) {
            (Some(t), _) => Some(t),
            (None, Some(_)) => None,
            (None, None) => Some("latest"),
        }
    }

    /// What the registry is asked for: the digest if pinned, else the tag.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, self.tag_or_latest()) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.to_string(),
            (None, None) => "latest".to_string(),
        }
    }
}

/// True when the first component of `a/b` names a registry rather than a Docker Hub
/// organisation (Docker's rule: a '.', a port, or `localhost`).
fn looks_like_registry(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost"
}

impl fmt::Display for ImageRef {
    /// Canonical form, used as the key of tags in the store: `REGISTRY/REPO:TAG[@DIGEST]`,
    /// or enroot's `REGISTRY#REPO:TAG[@DIGEST]` for a registry that would read back as a
    /// Docker Hub organisation (a host without '.' or port, given as `HOST#…`), so that
    /// the form always parses back to the same reference.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reg = self.registry();
        let sep = if looks_like_registry(reg) { '/' } else { '#' };
        write!(f, "{reg}{sep}{}", self.repository)?;
        if let Some(t) = self.tag_or_latest() {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Registry(r) => r.fmt(f),
            Reference::OciLayout { dir, tag } => {
                write!(f, "oci:{}", dir.display())?;
                if let Some(t) = tag {
                    write!(f, ":{t}")?;
                }
                Ok(())
            }
        }
    }
}

fn check_tag(input: &str, t: &str) -> Result<()> {
    let ok = !t.is_empty()
        && t.len() <= 128
        && t.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if !ok {
        bail!("image reference {input:?}: invalid tag {t:?} (letters, digits, '_', '.', '-'; at most 128)");
    }
    Ok(())
}

fn check_registry(input: &str, r: &str) -> Result<()> {
    let (host, port) = match r.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || r.starts_with('[') => (h, Some(p)),
        _ => (r, None),
    };
    let host_ok = if host.starts_with('[') && host.ends_with(']') {
        host[1..host.len() - 1]
            .parse::<std::net::Ipv6Addr>()
            .is_ok()
    } else {
        !host.is_empty()
            && host.split('.').all(|l| {
                !l.is_empty()
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            })
    };
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0));
    if !host_ok || !port_ok {
        bail!("image reference {input:?}: invalid registry host {r:?}");
    }
    Ok(())
}

/// Distribution's grammar: components of `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*` joined by '/'.
fn check_repository(input: &str, name: &str) -> Result<()> {
    let bad = |why: &str| -> Result<()> {
        bail!("image reference {input:?}: invalid repository {name:?}: {why}")
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > 255 {
        return bad("longer than 255 characters");
    }
    for comp in name.split('/') {
        if comp.is_empty() {
            return bad("empty path component");
        }
        let b = comp.as_bytes();
        if !b[0].is_ascii_lowercase() && !b[0].is_ascii_digit()
            || !b[b.len() - 1].is_ascii_lowercase() && !b[b.len() - 1].is_ascii_digit()
        {
            return bad("components must start and end with a lowercase letter or digit");
        }
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'a'..=b'z' | b'0'..=b'9' => i += 1,
                b'.' | b'_' => {
                    let run = b[i..]
                        .iter()
                        .take_while(|&&c| c == b'.' || c == b'_')
                        .count();
                    let sep = &comp[i..i + run];
                    if !matches!(sep, "." | "_" | "__") {
                        return bad("separators are '.', '_', '__' or dashes");
                    }
                    i += run;
                }
                b'-' => i += 1,
                _ => return bad("only lowercase letters, digits, '.', '_', '-' and '/'"),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap()
    }

    #[test]
    fn docker_hub_defaults() {
        let r = p("busybox");
        assert_eq!(r.registry, None);
        let c = &r.candidates(&["docker.io".into()])[0];
        assert_eq!(c.to_string(), "docker.io/library/busybox:latest");
        assert_eq!(p("docker.io/busybox").repository, "library/busybox");
        assert_eq!(
            p("org/app:1.2").candidates(&["docker.io".into()])[0].to_string(),
            "docker.io/org/app:1.2"
        );
    }

    #[test]
    fn registries_ports_digests() {
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let r = p(&format!("127.0.0.1:5000/lab/app@{d}"));
        assert_eq!(r.registry.as_deref(), Some("127.0.0.1:5000"));
        assert_eq!(r.repository, "lab/app");
        assert_eq!(r.tag, None);
        assert_eq!(r.manifest_reference(), d);
        let r = p(&format!("docker://ghcr.io/org/app:1.2@{d}"));
        assert_eq!(r.tag.as_deref(), Some("1.2"));
        assert_eq!(r.manifest_reference(), d);
        assert_eq!(p("localhost/app").registry.as_deref(), Some("localhost"));
        assert_eq!(p("[::1]:5000/app").registry.as_deref(), Some("[::1]:5000"));
    }

    #[test]
    fn enroot_syntax() {
        let r = p("docker://nvcr.io#nvidia/pytorch:24.01-py3");
        assert_eq!(r.registry.as_deref(), Some("nvcr.io"));
        assert_eq!(r.repository, "nvidia/pytorch");
        assert_eq!(r.tag.as_deref(), Some("24.01-py3"));
        let r = p("alice@127.0.0.1:5000#lab/app");
        assert_eq!(r.user.as_deref(), Some("alice"));
        assert_eq!(r.registry.as_deref(), Some("127.0.0.1:5000"));
        assert_eq!(p("127.0.0.1:5000#busybox").repository, "busybox");
        // A dotless host read back from `HOST/app` would be a Docker Hub organisation:
        // its canonical form keeps the '#'.
        let r = p("myhost#app");
        assert_eq!(r.to_string(), "myhost#app:latest");
        assert_eq!(p(&r.to_string()).registry.as_deref(), Some("myhost"));
        assert_eq!(p("nvcr.io#app").to_string(), "nvcr.io/app:latest");
    }

    #[test]
    fn malformed_rejected_with_reason() {
        for (s, why) in [
            ("", "empty"),
            ("Busybox", "lowercase"),
            ("a//b", "empty path"),
            ("app:", "invalid tag"),
            ("app:-x", "invalid tag"),
            ("app@sha256:123", "sha256"),
            ("a b", "white space"),
            ("http://x/y", "transport"),
            ("#app", "empty registry"),
            ("bad_host:99999/app", "invalid registry"),
            ("a/../b", "repository"),
            ("a..b", "separators"),
        ] {
            let e = format!("{:#}", ImageRef::parse(s).unwrap_err());
            assert!(e.contains(why), "{s:?}: {e}");
        }
    }

    #[test]
    fn oci_layout() {
        assert_eq!(
            Reference::parse("oci:/tmp/lay:v1").unwrap(),
            Reference::OciLayout {
                dir: "/tmp/lay".into(),
                tag: Some("v1".into())
            }
        );
        assert_eq!(
            Reference::parse("oci:./lay").unwrap(),
            Reference::OciLayout {
                dir: "./lay".into(),
                tag: None
            }
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// A registry host as users write it (named, with a port, IPv4, IPv6, enroot's
        /// dotless `HOST#`).
        fn registry() -> impl Strategy<Value = String> {
            prop_oneof![
                "[a-z0-9]{1,8}(-[a-z0-9]{1,4})?(\\.[a-z0-9]{1,8}){1,2}(:[1-9][0-9]{0,3})?",
                Just("localhost".to_string()),
                Just("docker.io".to_string()),
                "localhost:[1-9][0-9]{0,3}",
                "127\\.0\\.0\\.[0-9]{1,2}:[1-9][0-9]{3}",
                "\\[::[1-9]\\]:[1-9][0-9]{3}",
                "[a-z][a-z0-9]{0,8}",
            ]
        }

        /// A repository in distribution's grammar.
        fn repository() -> impl Strategy<Value = String> {
            let comp = "[a-z0-9]{1,6}((\\.|_|__|-{1,2})[a-z0-9]{1,6}){0,2}";
            proptest::collection::vec(comp, 1..4).prop_map(|v| v.join("/"))
        }

        fn image_ref() -> impl Strategy<Value = ImageRef> {
            (
                registry(),
                repository(),
                proptest::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}"),
                proptest::option::of("[0-9a-f]{64}"),
            )
                .prop_map(|(reg, mut repo, tag, digest)| {
                    if reg == DOCKER_HUB && !repo.contains('/') {
                        repo = format!("library/{repo}");
                    }
                    let digest = digest.map(|h| Digest::parse(&format!("sha256:{h}")).unwrap());
                    // Display writes `latest` when neither is given: so does the parse.
                    let tag = tag.or_else(|| digest.is_none().then(|| "latest".to_string()));
                    ImageRef {
                        registry: Some(reg),
                        repository: repo,
                        tag,
                        digest,
                        user: None,
                    }
                })
        }

        proptest! {
            /// The canonical form (the store's key) parses back to the same reference.
            #[test]
            fn display_parses_back(r in image_ref()) {
                let shown = r.to_string();
                let back = ImageRef::parse(&shown);
                prop_assert!(back.is_ok(), "{:?}: {:#}", shown, back.unwrap_err());
                prop_assert_eq!(back.unwrap(), r);
                let as_ref = Reference::parse(&shown).unwrap();
                prop_assert_eq!(as_ref.to_string(), shown);
            }

            /// Arbitrary text never panics; what parses has a canonical form that is
            /// stable once qualified.
            #[test]
            fn arbitrary_text_never_panics(
                s in prop_oneof!["\\PC{0,60}", "[a-zA-Z0-9:/@#._\\[\\]-]{0,40}", "(docker://|oci:)?[a-z0-9:/@#._-]{0,40}"]
            ) {
                let _ = Reference::parse(&s);
                if let Ok(r) = ImageRef::parse(&s) {
                    let q = &r.candidates(&[DOCKER_HUB.to_string()])[0];
                    let once = q.to_string();
                    let again = ImageRef::parse(&once);
                    prop_assert!(again.is_ok(), "{:?} -> {:?}", s, once);
                    prop_assert_eq!(again.unwrap().to_string(), once);
                }
            }

            /// `oci:DIR[:TAG]` round trip (DIR without ':' in its last component when a
            /// tag follows, as skopeo reads it).
            #[test]
            fn oci_layout_round_trip(
                dir in "(/|\\./)?[a-z0-9._-]{1,10}(/[a-z0-9._-]{1,10}){0,3}",
                tag in proptest::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}"),
            ) {
                let r = Reference::OciLayout { dir: dir.into(), tag };
                prop_assert_eq!(Reference::parse(&r.to_string()).unwrap(), r);
            }
        }
    }
}

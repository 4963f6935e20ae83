//! Manifests and indexes: which media types we accept, what a reply is (trusting the
//! Content-Type, then the body's `mediaType`, then its shape), parsing, descriptor checks
//! and choosing a platform from an index.

use crate::digest::Digest;
use crate::platform::Platform;
use anyhow::{anyhow, bail, Result};
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list (schema 2).
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// The Accept header for manifest requests: all four types, or distribution 2.8 answers
/// 404 for OCI manifests (and Docker Hub converts to schema1 for old clients).
pub const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.list.v2+json";

/// Largest blob size we accept in a descriptor (1 TiB: beyond any real layer).
const MAX_BLOB: u64 = 1 << 40;

/// What a manifest reply is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A single-platform image manifest (OCI or Docker schema2).
    Manifest,
    /// An index / manifest list.
    Index,
}

fn kind_of_type(t: &str) -> Option<Kind> {
    match t {
        OCI_MANIFEST | DOCKER_MANIFEST => Some(Kind::Manifest),
        OCI_INDEX | DOCKER_LIST => Some(Kind::Index),
        _ => None,
    }
}

/// Types that say nothing about the document (some servers and umoci-made layouts).
fn is_generic(t: &str) -> bool {
    matches!(
        t,
        "" | "application/json" | "text/plain" | "application/octet-stream"
    )
}

#[derive(serde::Deserialize)]
struct Shape {
    #[serde(rename = "schemaVersion", default)]
    schema_version: Option<i64>,
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<serde_json::Value>,
    #[serde(default)]
    config: Option<serde_json::Value>,
    #[serde(default)]
    layers: Option<serde_json::Value>,
}

/// Decide what `body` is: the Content-Type if it names a known type, else the body's
/// `mediaType`, else its shape. Known-but-unsupported types (Docker schema1, artifacts)
/// are refused with a message naming them.
pub fn classify(content_type: Option<&str>, body: &[u8]) -> Result<Kind> {
    let ct = content_type
        .map(|c| {
            c.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    if let Some(k) = kind_of_type(&ct) {
        return Ok(k);
    }
    if !is_generic(&ct) {
        bail!("{}", unsupported(&ct));
    }
    let shape: Shape =
        serde_json::from_slice(body).map_err(|e| anyhow!("manifest is not valid JSON: {e}"))?;
    if let Some(mt) = shape.media_type.as_deref() {
        return kind_of_type(mt).ok_or_else(|| anyhow!("{}", unsupported(mt)));
    }
    if shape.schema_version == Some(1) {
        bail!("{}", unsupported("Docker schema 1 (schemaVersion 1)"));
    }
    match (
        shape.manifests.is_some(),
        shape.config.is_some() && shape.layers.is_some(),
    ) {
        (true, false) => Ok(Kind::Index),
        (false, true) => Ok(Kind::Manifest),
        _ => bail!("manifest has no media type and is neither an image manifest nor an index"),
    }
}

fn unsupported(t: &str) -> String {
    let why = if t.contains("manifest.v1") || t.contains("schema 1") {
        " (Docker schema 1 is obsolete; push the image again with a current tool)"
    } else {
        ""
    };
    format!(
        "unsupported manifest media type {t:?}{why}; warren reads OCI image manifests/indexes and Docker schema 2 manifests/lists"
    )
}

/// Parse an image manifest (OCI or Docker schema2: same shape).
pub fn parse_manifest(body: &[u8]) -> Result<ImageManifest> {
    let m: ImageManifest =
        serde_json::from_slice(body).map_err(|e| anyhow!("invalid image manifest: {e}"))?;
    if m.schema_version() != 2 {
        bail!(
            "image manifest has schemaVersion {}, expected 2",
            m.schema_version()
        );
    }
    check_descriptor(m.config()).map_err(|e| e.context("config descriptor"))?;
    for (i, l) in m.layers().iter().enumerate() {
        check_descriptor(l).map_err(|e| e.context(format!("layer {} descriptor", i + 1)))?;
    }
    Ok(m)
}

/// Parse an index / manifest list.
pub fn parse_index(body: &[u8]) -> Result<ImageIndex> {
    let i: ImageIndex =
        serde_json::from_slice(body).map_err(|e| anyhow!("invalid image index: {e}"))?;
    if i.schema_version() != 2 {
        bail!(
            "image index has schemaVersion {}, expected 2",
            i.schema_version()
        );
    }
    Ok(i)
}

/// The descriptor's digest (sha256 only) and size, checked.
pub fn check_descriptor(d: &Descriptor) -> Result<(Digest, u64)> {
    let s = d.digest().to_string();
    let digest = Digest::parse(&s)?;
    let size = d.size();
    if size > MAX_BLOB {
        bail!("descriptor {digest}: size {size} is absurd (limit {MAX_BLOB})");
    }
    Ok((digest, size))
}

fn platform_string(d: &Descriptor) -> String {
    match d.platform() {
        Some(p) => {
            let mut s = format!("{}/{}", p.os(), p.architecture());
            if let Some(v) = p.variant() {
                s.push('/');
                s.push_str(v);
            }
            s
        }
        None => "(no platform)".into(),
    }
}

/// Pick the manifest for `want` from an index. An entry whose variant matches exactly is
/// preferred over one that matches because a variant is missing on either side. Entries
/// that are not image manifests (attestations, nested indexes) are skipped.
pub fn choose_platform(index: &ImageIndex, want: &Platform) -> Result<Descriptor> {
    let mut loose: Option<&Descriptor> = None;
    for d in index.manifests() {
        let mt = d.media_type().to_string();
        if !(kind_of_type(&mt) == Some(Kind::Manifest) || is_generic(&mt)) {
            continue;
        }
        let Some(p) = d.platform() else { continue };
        let (os, arch) = (p.os().to_string(), p.architecture().to_string());
        let variant = p.variant().as_deref();
        if !want.matches(&os, &arch, variant) {
            continue;
        }
        if want.variant.as_deref() == variant {
            return Ok(d.clone());
        }
        loose.get_or_insert(d);
    }
    if let Some(d) = loose {
        return Ok(d.clone());
    }
    let mut avail: Vec<String> = Vec::new();
    for p in index.manifests().iter().map(platform_string) {
        if !avail.contains(&p) {
            avail.push(p);
        }
    }
    bail!(
        "no image for platform {want} in the index; available: {} (choose one with --platform)",
        if avail.is_empty() {
            "none".to_string()
        } else {
            avail.join(", ")
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const UMOCI: &[u8] = br#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0},"layers":[]}"#;

    fn index(entries: &[(&str, &str, Option<&str>, &str)]) -> ImageIndex {
        let m: Vec<String> = entries
            .iter()
            .enumerate()
            .map(|(i, (os, arch, v, mt))| {
                let v = v.map(|v| format!(r#","variant":"{v}""#)).unwrap_or_default();
                format!(
                    r#"{{"mediaType":"{mt}","digest":"sha256:{:064x}","size":10,"platform":{{"os":"{os}","architecture":"{arch}"{v}}}}}"#,
                    i + 1
                )
            })
            .collect();
        parse_index(format!(r#"{{"schemaVersion":2,"manifests":[{}]}}"#, m.join(",")).as_bytes())
            .unwrap()
    }

    #[test]
    fn content_type_then_media_type_then_shape() {
        assert_eq!(classify(Some(OCI_MANIFEST), b"").unwrap(), Kind::Manifest);
        assert_eq!(
            classify(
                Some("application/vnd.docker.distribution.manifest.list.v2+json; charset=utf-8"),
                b""
            )
            .unwrap(),
            Kind::Index
        );
        // umoci: no mediaType in the body; generic or missing Content-Type.
        assert_eq!(classify(None, UMOCI).unwrap(), Kind::Manifest);
        assert_eq!(
            classify(Some("application/json"), UMOCI).unwrap(),
            Kind::Manifest
        );
        assert_eq!(
            classify(None, br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#).unwrap(),
            Kind::Index
        );
        assert_eq!(
            classify(None, br#"{"schemaVersion":2,"manifests":[]}"#).unwrap(),
            Kind::Index
        );
    }

    #[test]
    fn unknown_types_refused_clearly() {
        let e = classify(
            Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
            b"",
        )
        .unwrap_err();
        assert!(format!("{e}").contains("schema 1"), "{e}");
        let e = classify(None, br#"{"schemaVersion":1,"fsLayers":[]}"#).unwrap_err();
        assert!(format!("{e}").contains("schema 1"), "{e}");
        let e = classify(
            None,
            br#"{"mediaType":"application/vnd.oci.artifact.manifest.v1+json"}"#,
        )
        .unwrap_err();
        assert!(format!("{e}").contains("artifact"), "{e}");
        assert!(classify(None, b"<html>").is_err());
        assert!(classify(None, br#"{"schemaVersion":2}"#).is_err());
    }

    #[test]
    fn manifest_descriptors_are_checked() {
        assert!(parse_manifest(UMOCI).is_ok());
        let bad = String::from_utf8_lossy(UMOCI).replace("sha256:e3b0", "sha256:E3B0");
        assert!(parse_manifest(bad.as_bytes()).is_err());
        let v1 =
            String::from_utf8_lossy(UMOCI).replace("\"schemaVersion\":2", "\"schemaVersion\":3");
        assert!(parse_manifest(v1.as_bytes()).is_err());
    }

    #[test]
    fn platform_choice() {
        let idx = index(&[
            ("linux", "amd64", None, OCI_MANIFEST),
            ("linux", "arm64", Some("v8"), OCI_MANIFEST),
            ("linux", "arm", Some("v7"), DOCKER_MANIFEST),
            ("unknown", "unknown", None, OCI_MANIFEST),
        ]);
        let pick = |p: &str| {
            check_descriptor(&choose_platform(&idx, &Platform::parse(p).unwrap()).unwrap())
                .unwrap()
                .0
                .to_string()
        };
        assert!(pick("linux/amd64").ends_with("01"));
        assert!(pick("linux/arm64").ends_with("02"));
        assert!(pick("linux/arm64/v8").ends_with("02"));
        assert!(pick("linux/arm/v7").ends_with("03"));
        let e = choose_platform(&idx, &Platform::parse("linux/riscv64").unwrap()).unwrap_err();
        let msg = format!("{e}");
        assert!(msg.contains("linux/riscv64"), "{msg}");
        assert!(
            msg.contains("linux/amd64, linux/arm64/v8, linux/arm/v7"),
            "{msg}"
        );
    }

    #[test]
    fn exact_variant_preferred_and_non_manifests_skipped() {
        let idx = index(&[
            ("linux", "arm64", None, OCI_MANIFEST),
            ("linux", "arm64", Some("v8"), OCI_MANIFEST),
            ("linux", "amd64", None, OCI_INDEX),
        ]);
        let d = choose_platform(&idx, &Platform::parse("linux/arm64/v8").unwrap()).unwrap();
        assert!(d.digest().to_string().ends_with("02"));
        assert!(choose_platform(&idx, &Platform::parse("linux/amd64").unwrap()).is_err());
    }
}

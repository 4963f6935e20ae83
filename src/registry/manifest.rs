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

/// Property tests: whatever a registry sends never panics the parsers, and valid
/// manifests and indexes round-trip.
#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    /// JSON values biased towards manifest-like objects (the keys the parsers read).
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "[a-z0-9:./+-]{0,12}".prop_map(Value::from),
            Just(Value::from(format!("sha256:{}", "a".repeat(64)))),
            Just(Value::from(OCI_MANIFEST)),
            Just(Value::from(OCI_INDEX)),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            let key = prop_oneof![
                Just("schemaVersion".to_string()),
                Just("mediaType".to_string()),
                Just("config".to_string()),
                Just("layers".to_string()),
                Just("manifests".to_string()),
                Just("digest".to_string()),
                Just("size".to_string()),
                Just("platform".to_string()),
                Just("os".to_string()),
                Just("architecture".to_string()),
                Just("variant".to_string()),
                "[a-z]{1,6}",
            ];
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                proptest::collection::btree_map(key, inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn content_type() -> impl Strategy<Value = Option<String>> {
        proptest::option::of(prop_oneof![
            Just(OCI_MANIFEST.to_string()),
            Just(DOCKER_LIST.to_string()),
            Just("application/json; charset=utf-8".to_string()),
            ".{0,20}",
        ])
    }

    fn all_parsers(ct: Option<&str>, body: &[u8]) {
        let _ = classify(ct, body);
        let _ = parse_manifest(body);
        if let Ok(i) = parse_index(body) {
            for p in ["linux/amd64", "linux/arm64/v8"] {
                let _ = choose_platform(&i, &Platform::parse(p).unwrap());
            }
        }
    }

    fn hex64() -> impl Strategy<Value = String> {
        "[0-9a-f]{64}"
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_never_panic(
            ct in content_type(),
            body in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            all_parsers(ct.as_deref(), &body);
        }

        #[test]
        fn arbitrary_json_never_panics(ct in content_type(), v in json_value()) {
            all_parsers(ct.as_deref(), &serde_json::to_vec(&v).unwrap());
        }

        #[test]
        fn valid_manifests_round_trip(
            config in hex64(),
            layers in proptest::collection::vec((hex64(), 0u64..(1 << 40)), 0..8),
            with_type in any::<bool>(),
        ) {
            let mut m = json!({
                "schemaVersion": 2,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": format!("sha256:{config}"), "size": 7},
                "layers": layers.iter().map(|(h, s)| json!({
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": format!("sha256:{h}"), "size": s})).collect::<Vec<_>>(),
            });
            if with_type {
                m["mediaType"] = Value::from(OCI_MANIFEST);
            }
            let body = serde_json::to_vec(&m).unwrap();
            prop_assert_eq!(classify(None, &body).unwrap(), Kind::Manifest);
            let parsed = parse_manifest(&body).unwrap();
            let (cd, _) = check_descriptor(parsed.config()).unwrap();
            prop_assert_eq!(cd.hex(), config.as_str());
            let got: Vec<(String, u64)> = parsed
                .layers()
                .iter()
                .map(|l| (check_descriptor(l).unwrap().0.hex().to_string(), l.size()))
                .collect();
            prop_assert_eq!(&got, &layers);
            // Serialised again, it parses to the same manifest.
            let again = parse_manifest(&serde_json::to_vec(&parsed).unwrap()).unwrap();
            prop_assert_eq!(again, parsed);
        }

        #[test]
        fn valid_indexes_round_trip_and_choose(
            entries in proptest::collection::vec(
                (hex64(), prop_oneof![Just("amd64"), Just("arm64"), Just("ppc64le")]),
                1..6,
            ),
        ) {
            let i = json!({
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": entries.iter().map(|(h, a)| json!({
                    "mediaType": OCI_MANIFEST, "digest": format!("sha256:{h}"), "size": 100,
                    "platform": {"os": "linux", "architecture": a}})).collect::<Vec<_>>(),
            });
            let body = serde_json::to_vec(&i).unwrap();
            prop_assert_eq!(classify(None, &body).unwrap(), Kind::Index);
            let idx = parse_index(&body).unwrap();
            prop_assert_eq!(&parse_index(&serde_json::to_vec(&idx).unwrap()).unwrap(), &idx);
            for arch in ["amd64", "arm64", "ppc64le"] {
                let want = Platform::parse(&format!("linux/{arch}")).unwrap();
                let first = entries.iter().find(|(_, a)| *a == arch);
                match (choose_platform(&idx, &want), first) {
                    (Ok(d), Some((h, _))) => {
                        prop_assert_eq!(d.digest().to_string(), format!("sha256:{h}"))
                    }
                    (Err(_), None) => {}
                    (r, f) => prop_assert!(false, "{arch}: chose {r:?}, first entry {f:?}"),
                }
            }
        }
    }
}

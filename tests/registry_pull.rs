//! The registry client against real registries (scripts/registry.sh start): plain HTTP,
//! digests, multi-platform indexes, resumed downloads.

mod support;

use std::cell::Cell;
use support::registry::*;
use warren::platform::Platform;
use warren::source::Source;

/// A source without credentials.
fn open(cfg: &str, r: &str) -> Box<dyn Source> {
    support::registry::open(cfg, r, vec![])
}

fn amd64() -> Platform {
    Platform::parse("linux/amd64").unwrap()
}

#[test]
fn plain_busybox_resolve_and_fetch_all_blobs() {
    need!(need_registry(&[PLAIN]));
    let src = open("", "127.0.0.1:5000/test/busybox:latest");
    assert_eq!(src.describe(), "127.0.0.1:5000/test/busybox:latest");
    let head = src.current_digest().expect("current digest");
    let img = src.resolve(&Platform::host()).expect("resolve");
    // umoci's manifest has no mediaType and no index: top == manifest.
    assert_eq!(img.top_digest, head);
    assert_eq!(img.manifest_digest, head);
    assert_eq!(warren::digest::Digest::of(&img.manifest_bytes), head);
    let cfg: serde_json::Value = serde_json::from_slice(&img.config_bytes).unwrap();
    assert_eq!(cfg["config"]["Cmd"][0], "/bin/sh");
    assert!(!img.manifest.layers().is_empty());

    let dir = tempfile::tempdir().unwrap();
    for (i, l) in img.manifest.layers().iter().enumerate() {
        let dest = dir.path().join(format!("layer{i}"));
        let last = Cell::new(0u64);
        src.fetch_blob(l, &dest, &|n| last.set(n))
            .expect("fetch layer");
        let (d, n) = file_digest(&dest);
        assert_eq!(d.to_string(), l.digest().to_string());
        assert_eq!(n, l.size());
        assert_eq!(
            last.get(),
            l.size(),
            "progress reports the full size at the end"
        );
    }
}

#[test]
fn digest_reference_and_missing_image() {
    need!(need_registry(&[PLAIN]));
    let d = open("", "127.0.0.1:5000/test/busybox:latest")
        .current_digest()
        .unwrap();
    let pinned = open("", &format!("127.0.0.1:5000/test/busybox@{d}"));
    assert_eq!(pinned.current_digest().unwrap(), d);
    assert_eq!(
        pinned.resolve(&Platform::host()).unwrap().manifest_digest,
        d
    );

    let e = open(
        "[pull]\nretries = 2\n",
        "127.0.0.1:5000/test/nonexistent:latest",
    )
    .resolve(&Platform::host())
    .unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("404") && msg.contains("test/nonexistent"),
        "{msg}"
    );
    let e = open("", "127.0.0.1:5000/test/busybox:no-such-tag")
        .current_digest()
        .unwrap_err();
    assert!(format!("{e:#}").contains("404"), "{e:#}");
}

#[test]
fn multi_platform_index_oci_and_docker() {
    need!(need_registry(&[PLAIN]));
    for tag in ["latest", "docker"] {
        let src = open("", &format!("127.0.0.1:5000/test/multi:{tag}"));
        let top = src.current_digest().unwrap();
        let a = src.resolve(&amd64()).expect("amd64");
        let b = src
            .resolve(&Platform::parse("linux/arm64").unwrap())
            .expect("arm64");
        assert_eq!(a.top_digest, top);
        assert_eq!(b.top_digest, top);
        assert_ne!(
            a.manifest_digest, top,
            "an index: the manifest is one level down"
        );
        assert_ne!(a.manifest_digest, b.manifest_digest);
        let arch = |c: &[u8]| {
            let v: serde_json::Value = serde_json::from_slice(c).unwrap();
            v["architecture"].as_str().unwrap().to_string()
        };
        assert_eq!(arch(&a.config_bytes), "amd64");
        assert_eq!(arch(&b.config_bytes), "arm64");
        // The arm64 layer holds /arch = "arm64\n" (gzip tar).
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("l");
        src.fetch_blob(&b.manifest.layers()[0], &dest, &|_| {})
            .unwrap();
        let mut t = tar::Archive::new(flate2::read::GzDecoder::new(
            std::fs::File::open(&dest).unwrap(),
        ));
        let mut found = String::new();
        for e in t.entries().unwrap() {
            let mut e = e.unwrap();
            if e.path().unwrap().to_str() == Some("arch") {
                std::io::Read::read_to_string(&mut e, &mut found).unwrap();
            }
        }
        assert_eq!(found, "arm64\n");

        let e = src
            .resolve(&Platform::parse("linux/riscv64").unwrap())
            .unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("linux/riscv64") && msg.contains("linux/amd64, linux/arm64/v8"),
            "{msg}"
        );
    }
}

#[test]
fn resume_from_prefix_garbage_and_oversized_files() {
    need!(need_registry(&[PLAIN]));
    let src = open("", "127.0.0.1:5000/test/busybox:latest");
    let img = src.resolve(&Platform::host()).unwrap();
    let layer = img
        .manifest
        .layers()
        .iter()
        .max_by_key(|l| l.size())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good");
    src.fetch_blob(layer, &good, &|_| {}).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let half = bytes.len() / 2;

    // A correct prefix: resumed with Range, the result is the whole blob.
    let dest = dir.path().join("prefix");
    std::fs::write(&dest, &bytes[..half]).unwrap();
    let first = Cell::new(None);
    src.fetch_blob(layer, &dest, &|n| {
        if first.get().is_none() {
            first.set(Some(n))
        }
    })
    .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
    assert!(
        first.get().unwrap() > half as u64,
        "progress starts after the kept prefix"
    );

    // A wrong prefix: the resumed result mismatches, one clean restart fixes it.
    let dest = dir.path().join("garbage");
    std::fs::write(&dest, vec![0x55u8; half]).unwrap();
    src.fetch_blob(layer, &dest, &|_| {}).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);

    // Longer than the blob: not a prefix, start over.
    let dest = dir.path().join("long");
    std::fs::write(&dest, vec![1u8; bytes.len() + 10]).unwrap();
    src.fetch_blob(layer, &dest, &|_| {}).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);

    // Already complete: verified locally.
    src.fetch_blob(layer, &good, &|_| {}).unwrap();
    assert_eq!(std::fs::read(&good).unwrap(), bytes);
}

#[test]
fn shared_between_threads() {
    need!(need_registry(&[PLAIN]));
    let src: std::sync::Arc<dyn Source> = open("", "127.0.0.1:5000/test/busybox:latest").into();
    let img = src.resolve(&Platform::host()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::thread::scope(|s| {
        for i in 0..4 {
            let src = src.clone();
            let img = &img;
            let dir = dir.path();
            s.spawn(move || {
                for (j, l) in img.manifest.layers().iter().enumerate() {
                    let dest = dir.join(format!("t{i}-{j}"));
                    src.fetch_blob(l, &dest, &|_| {}).unwrap();
                    assert_eq!(file_digest(&dest).0.to_string(), l.digest().to_string());
                }
            });
        }
    });
}

#[test]
fn connection_refused_is_a_clear_error() {
    // Port 9 (discard) on loopback: nothing listens there in the test VM.
    let src = open(
        "[pull]\nretries = 2\ntimeout_secs = 2\n",
        "127.0.0.1:9/test/busybox:latest",
    );
    let e = src.current_digest().unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("127.0.0.1:9") && msg.contains("gave up after 2 attempts"),
        "{msg}"
    );
}

#[test]
fn mirror_serves_a_reference_under_its_own_name() {
    need!(need_registry(&[PLAIN]));
    let cfg = "[[registry]]\nhost = \"registry.example.invalid\"\nmirror = \"127.0.0.1:5000\"\n";
    let src = open(cfg, "registry.example.invalid/test/busybox:latest");
    assert_eq!(
        src.describe(),
        "registry.example.invalid/test/busybox:latest"
    );
    let direct = open("", "127.0.0.1:5000/test/busybox:latest")
        .current_digest()
        .unwrap();
    assert_eq!(src.current_digest().unwrap(), direct);
    assert_eq!(src.resolve(&Platform::host()).unwrap().top_digest, direct);
}

//! A real distribution image (debootstrap minbase, `scripts/test-images.sh debian`):
//! the squashfs tree must equal what GNU tar extracts from the layers as root (type,
//! mode, owner, symlink target, file content of every path).

mod pull_common;
use pull_common::*;
use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// (kind, mode, uid, gid, link target or content hash)
type Node = (char, u32, u64, u64, String);

fn from_sqfs(img: &Path) -> BTreeMap<String, Node> {
    let raw = read_sqfs(img);
    let mut out = BTreeMap::new();
    for (p, e) in &raw {
        let (kind, what) = match e.kind {
            'h' => ('f', sha256_hex(&raw[&e.link].data)),
            'f' => ('f', sha256_hex(&e.data)),
            'l' => ('l', e.link.clone()),
            k => (k, String::new()),
        };
        out.insert(p.clone(), (kind, e.mode, e.uid, e.gid, what));
    }
    out
}

fn from_dir(root: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let rel = if rel.is_empty() { ".".to_string() } else { rel };
        let ft = m.file_type();
        let (kind, what) = if ft.is_dir() {
            for e in std::fs::read_dir(&p).unwrap().flatten() {
                stack.push(e.path());
            }
            ('d', String::new())
        } else if ft.is_symlink() {
            (
                'l',
                std::fs::read_link(&p)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            )
        } else if ft.is_file() {
            ('f', sha256_hex(&std::fs::read(&p).unwrap()))
        } else if ft.is_fifo() {
            ('p', String::new())
        } else {
            continue; // devices: dropped by warren's rule, compared separately
        };
        out.insert(
            rel,
            (
                kind,
                m.mode() & 0o7777,
                m.uid() as u64,
                m.gid() as u64,
                what,
            ),
        );
    }
    out
}

#[test]
fn debian_matches_gnu_tar_extraction() {
    let layout = Path::new("/var/tmp/warren-test/oci/debian");
    if !layout.join(".done").is_file() {
        skip!("no debian layout (scripts/test-images.sh debian)");
    }
    if !is_root() {
        skip!("GNU tar keeps owners only as root");
    }
    let mut env = Env::new();
    // umoci leaves the layout readable by root only; this test is about the tree.
    env.user = None;
    let d = env.ok(&["pull", "-q", &format!("oci:{}", layout.display())]);
    let got = from_sqfs(&env.sqfs(&d));

    // The oracle: GNU tar extracts each layer in order (one layer here).
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            env.store()
                .join("images")
                .join(d.trim().trim_start_matches("sha256:"))
                .join("manifest.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(
        layers.len(),
        1,
        "the oracle handles one layer (no whiteouts)"
    );
    let root = env.path().join("tar-root");
    std::fs::create_dir(&root).unwrap();
    let blob = layout.join("blobs/sha256").join(
        layers[0]["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:"),
    );
    let st = std::process::Command::new("tar")
        .args(["--numeric-owner", "-xpzf"])
        .arg(&blob)
        .arg("-C")
        .arg(&root)
        .status()
        .unwrap();
    assert!(st.success());
    let mut want = from_dir(&root);
    // The root directory's metadata comes from the layer's "./" entry in both.
    want.remove(".");
    let mut got_cmp = got.clone();
    got_cmp.remove(".");
    let missing: Vec<_> = want.keys().filter(|k| !got_cmp.contains_key(*k)).collect();
    let extra: Vec<_> = got_cmp.keys().filter(|k| !want.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, extra {extra:?}"
    );
    for (p, w) in &want {
        assert_eq!(&got_cmp[p], w, "{p}");
    }
    assert!(
        want.len() > 3000,
        "a whole distribution: {} paths",
        want.len()
    );
}

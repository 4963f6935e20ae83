//! A real distribution image (debootstrap minbase, `scripts/test-images.sh debian`):
//! the squashfs tree must equal what GNU tar extracts from the layers as root (type,
//! mode, owner, symlink target, file content of every path).

mod support;
use std::path::Path;
use support::*;

#[test]
fn debian_matches_gnu_tar_extraction() {
    let layout = Path::new("/var/tmp/warren-test/oci/debian");
    if !layout.join(".done").is_file() {
        skip!("no debian layout (scripts/test-images.sh debian)");
    }
    need!(need_root("GNU tar keeps owners only as root"));
    // umoci leaves the layout readable by root only; this test is about the tree.
    let env = Env::new().run_as_self();
    let d = env.ok(&["pull", "-q", &format!("oci:{}", layout.display())]);
    let got = sqfs_tree(&env.sqfs(&d));

    // The oracle: GNU tar extracts each layer in order (one layer here).
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.image_dir(&d).join("manifest.json")).unwrap())
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
    let mut want = dir_tree(&root);
    // The root directory's metadata comes from the layer's "./" entry in both.
    want.remove(".");
    // Devices: dropped by warren's rule (GNU tar as root makes them).
    want.retain(|_, n| !matches!(n.0, 'c' | 'b'));
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

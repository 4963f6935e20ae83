//! podman as an independent oracle for layer semantics: rootful podman pulls the
//! torture image (the variant without the two hard links podman 4.3 cannot apply) and
//! `podman image mount` gives its tree; warren's squashfs must hold the same paths with
//! the same type, mode, owner, link target and content. Devices are the one documented
//! difference (warren drops char/block devices).

mod support;
use std::path::Path;
use std::process::Command;
use support::*;

fn podman(args: &[&str]) -> Result<String, String> {
    let o = Command::new("podman")
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if !o.status.success() {
        return Err(format!("podman {args:?}: {}", stderr(&o)));
    }
    Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// Unmounts and removes the podman image on drop.
struct PodmanImage(String);
impl Drop for PodmanImage {
    fn drop(&mut self) {
        let _ = podman(&["image", "unmount", &self.0]);
        let _ = podman(&["rmi", "-f", &self.0]);
    }
}

#[test]
fn torture_matches_podman() {
    need!(need_root("rootful podman image mount"));
    need!(need_programs(&["podman"]));
    let env = Env::new().run_as_self();
    // podman names the image after the path, which must be lower case.
    let lower = TestDir::named(&format!("warren-podman-test.{}", std::process::id()));
    let layout = lower.join("torture");
    let o = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/test-images.sh"))
        .args(["layout", "torture"])
        .arg(&layout)
        .env("TORTURE_VARIANT", "podman")
        .output()
        .unwrap();
    if !o.status.success() {
        skip!("cannot build the torture layout: {}", stderr(&o));
    }
    let id = match podman(&["pull", "-q", &format!("oci:{}:latest", layout.display())]) {
        Ok(id) => id,
        Err(e) => skip!("podman cannot pull here: {e}"),
    };
    let img = PodmanImage(id);
    let mnt = match podman(&["image", "mount", &img.0]) {
        Ok(m) => m,
        Err(e) => skip!("podman image mount: {e}"),
    };
    let mut want = dir_tree(Path::new(&mnt));
    want.remove(".");
    // The documented difference: devices are dropped (here the char device dev/null).
    let devices: Vec<String> = want
        .iter()
        .filter(|(_, v)| v.0 == 'c')
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(devices, ["dev/null"]);
    want.remove("dev/null");

    let d = env.ok(&["pull", "-q", &format!("oci:{}", layout.display())]);
    let mut got = sqfs_tree(&env.sqfs(&d));
    got.remove(".");
    let diff = support::sqfs::tree_diff(&want, &got);
    assert!(diff.is_empty(), "podman vs warren: {diff:#?}");
    assert!(want.len() > 40);
}

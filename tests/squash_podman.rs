//! podman as an independent oracle for layer semantics: rootful podman pulls the
//! torture image (the variant without the two hard links podman 4.3 cannot apply) and
//! `podman image mount` gives its tree; warren's squashfs must hold the same paths with
//! the same type, mode, owner, link target and content. Devices are the one documented
//! difference (warren drops char/block devices).

mod pull_common;
use pull_common::*;
use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::Command;

/// (kind, mode, uid, gid, link target or content hash)
type Node = (char, u32, u64, u64, String);

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

fn walk(root: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
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
            ('c', String::new())
        };
        if !rel.is_empty() {
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
    }
    out
}

/// Removes a directory on drop.
struct RemoveDir(std::path::PathBuf);
impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
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
    if !is_root() || !have("podman") {
        skip!("needs root and podman (rootful podman image mount)");
    }
    let mut env = Env::new();
    env.user = None;
    // podman names the image after the path, which must be lower case.
    let lower = Path::new("/var/tmp").join(format!("warren-podman-test.{}", std::process::id()));
    let _cleanup = RemoveDir(lower.clone());
    let layout = lower.join("torture");
    let o = Command::new("bash")
        .arg(repo_root().join("scripts/test-images.sh"))
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
    let mut want = walk(Path::new(&mnt));
    // The documented difference: devices are dropped (here the char device dev/null).
    let devices: Vec<String> = want
        .iter()
        .filter(|(_, v)| v.0 == 'c')
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(devices, ["dev/null"]);
    want.remove("dev/null");

    let d = env.ok(&["pull", "-q", &format!("oci:{}", layout.display())]);
    let raw = read_sqfs(&env.sqfs(&d));
    let mut got = BTreeMap::new();
    for (p, e) in &raw {
        if p == "." {
            continue;
        }
        let (kind, what, src) = match e.kind {
            'h' => ('f', sha256_hex(&raw[&e.link].data), &raw[&e.link]),
            'f' => ('f', sha256_hex(&e.data), e),
            'l' => ('l', e.link.clone(), e),
            k => (k, String::new(), e),
        };
        got.insert(p.clone(), (kind, src.mode, src.uid, src.gid, what));
    }
    let diff: Vec<_> = want
        .keys()
        .chain(got.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|k| want.get(*k) != got.get(*k))
        .map(|k| (k.clone(), want.get(k).cloned(), got.get(k).cloned()))
        .collect();
    assert!(diff.is_empty(), "podman vs warren: {diff:#?}");
    assert!(want.len() > 40);
}

//! A store on a full file system (a small tmpfs mounted as the store): the pull fails
//! with one line saying so, leaves no partial blob, staging or blob behind to keep the
//! store full, and a retry once there is room finishes the job.

mod support;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::*;

/// A tmpfs of `size` at `dir` for the test user, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(env: &Env, dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs on {}", dir.display());
        let m = Tmpfs(dir.to_path_buf());
        env.give(dir);
        m
    }

    fn resize(&self, size: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(st.success(), "remount");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let st = Command::new("umount").arg(&self.0).status();
        if !st.is_ok_and(|s| s.success()) {
            // Something still has it open: detach so nothing stays mounted.
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// `bytes` of incompressible data in one file of a one-layer layout.
fn layout(env: &Env, bytes: usize) -> String {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut data = vec![0u8; bytes];
    for c in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let n = c.len();
        c.copy_from_slice(&x.to_le_bytes()[..n]);
    }
    let dir = env.path().join("img");
    write_layout(&dir, &[RawTar::default().file("big", &data).done()]);
    env.give(&dir);
    format!("oci:{}", dir.display())
}

/// Names in `dir` (none if it does not exist).
fn names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

fn fails_full_and_clean(env: &Env, spec: &str) {
    let o = env.run(&["pull", "-q", spec]);
    assert!(!o.status.success(), "pull succeeded on a full store");
    let err = stderr(&o);
    assert_eq!(
        err.trim(),
        format!(
            "warren: no space left on device in {}",
            env.store().display()
        ),
        "{err}"
    );
    let store = env.store();
    assert!(
        names(&store.join("tmp")).is_empty(),
        "staging left: {:?}",
        names(&store.join("tmp"))
    );
    assert!(names(&store.join("blobs/sha256")).is_empty(), "blobs left");
    assert!(names(&store.join("images")).is_empty(), "images left");
}

#[test]
fn blob_larger_than_the_store() {
    need!(need_root("mount a tmpfs"));
    need!(need_programs(&["tar2sqfs", "mount", "umount"]));
    let env = Env::new();
    let spec = layout(&env, 12 << 20);
    let fs = Tmpfs::mount(&env, &env.store(), "4m");
    fails_full_and_clean(&env, &spec);
    fs.resize("64m");
    env.ok(&["pull", "-q", &spec]);
}

#[test]
fn squashfs_does_not_fit_beside_its_blob() {
    need!(need_root("mount a tmpfs"));
    need!(need_programs(&["tar2sqfs", "mount", "umount"]));
    let env = Env::new();
    let spec = layout(&env, 5 << 20);
    let fs = Tmpfs::mount(&env, &env.store(), "8m");
    fails_full_and_clean(&env, &spec);
    fs.resize("64m");
    let d = env.ok(&["pull", "-q", &spec]);
    assert!(env.sqfs(&d).is_file());
}

/// The same through the registry source: the partial download is removed.
#[test]
fn registry_blob_larger_than_the_store() {
    use support::registry::{need_registry, PLAIN};
    need!(need_root("mount a tmpfs"));
    need!(need_programs(&["tar2sqfs", "mount", "umount"]));
    need!(need_registry(&[PLAIN]));
    let env = Env::new();
    // The busybox layer is about 1 MiB.
    let fs = Tmpfs::mount(&env, &env.store(), "256k");
    fails_full_and_clean(&env, "127.0.0.1:5000/test/busybox:latest");
    fs.resize("64m");
    env.ok(&["pull", "-q", "127.0.0.1:5000/test/busybox:latest"]);
}

/// A full `$TMPDIR` (where layer contents are spooled) is named as such, not as the
/// store.
#[test]
fn full_spool_dir_is_named() {
    need!(need_root("mount a tmpfs"));
    need!(need_programs(&["tar2sqfs", "mount", "umount"]));
    let env = Env::new();
    let spec = layout(&env, 4 << 20);
    let tmpdir = env.path().join("spool");
    let _fs = Tmpfs::mount(&env, &tmpdir, "1m");
    let o = env
        .cmd(&["pull", "-q", &spec])
        .env("TMPDIR", &tmpdir)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert_eq!(
        stderr(&o).trim(),
        format!("warren: no space left on device in {}", tmpdir.display())
    );
    assert!(names(&env.store().join("tmp")).is_empty());
    assert!(names(&tmpdir).is_empty(), "spool files left");
}

//! `kill -9` of a pull at several moments: no partial image is ever visible (no image
//! directory without its files, no tag without its image), and the next pull completes.

mod support;
use std::time::{Duration, Instant};
use support::registry::{need_registry, PLAIN};
use support::*;

/// ~48 MB of incompressible bytes in 3 files, one plain layer: slow enough to kill
/// mid-way at several points.
fn big_layout(dir: &std::path::Path) -> Vec<(String, String)> {
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let mut t = RawTar::default();
    let mut files = Vec::new();
    for i in 0..3 {
        let mut data = vec![0u8; 16 << 20];
        for c in data.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes());
        }
        let name = format!("data/f{i}");
        files.push((name.clone(), sha256_hex(&data)));
        t = t.file(&name, &data);
    }
    write_layout(dir, &[t.done()]);
    files
}

fn assert_consistent(env: &Env) {
    let images = env.store().join("images");
    for e in std::fs::read_dir(&images).into_iter().flatten().flatten() {
        for f in ["image.sqfs", "config.json", "manifest.json"] {
            assert!(
                e.path().join(f).is_file(),
                "partial image visible: {:?} lacks {f}",
                e.path()
            );
        }
    }
    for e in std::fs::read_dir(env.store().join("refs"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let rec: serde_json::Value = serde_json::from_slice(&std::fs::read(e.path()).unwrap())
            .expect("a tag file is complete JSON");
        let m = rec["manifest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:")
            .to_string();
        assert!(
            images.join(m).join("image.sqfs").is_file(),
            "tag without image"
        );
    }
}

/// Kill pulls of `spec` at several points of a full pull's duration, then pull again
/// and check the files.
fn kill_and_resume(env: &Env, spec: &str, files: &[(String, String)]) {
    // Time one full pull to spread the kills over it, then start from scratch.
    let t0 = Instant::now();
    env.ok(&["pull", "-q", spec]);
    let full = t0.elapsed();
    eprintln!("one pull: {full:?}");
    std::fs::remove_dir_all(env.store()).unwrap();
    for frac in [0.05, 0.2, 0.4, 0.6, 0.8, 0.95] {
        let mut child = env
            .cmd(&["pull", "-q", spec])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(full.mul_f64(frac));
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = child.wait();
        assert_consistent(env);
        let tmp: Vec<_> = std::fs::read_dir(env.store().join("tmp"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        eprintln!("killed at {frac}: tmp = {tmp:?}");
        if env.store().join("refs").is_dir()
            && std::fs::read_dir(env.store().join("refs")).unwrap().count() > 0
        {
            // The pull finished before the kill: start over for the next point.
            std::fs::remove_dir_all(env.store()).unwrap();
        }
    }
    // Let an orphaned tar2sqfs (reading from the dead pull's pipe) see EOF and exit.
    std::thread::sleep(Duration::from_millis(200));
    let d = env.ok(&["pull", "-q", spec]);
    assert_consistent(env);
    let got = read_sqfs(&env.sqfs(&d));
    for (name, sum) in files {
        assert_eq!(&sha256_hex(&got[name].data), sum, "{name}");
    }
    let tmp = env.staging();
    assert!(tmp.is_empty(), "stale staging not cleaned: {tmp:?}");
}

#[test]
fn kill_9_mid_pull_then_pull_again() {
    need!(need_programs(&["tar2sqfs", "sqfs2tar"]));
    let env = Env::new();
    let layout = env.path().join("big");
    let files = big_layout(&layout);
    env.give(&layout);
    kill_and_resume(&env, &format!("oci:{}", layout.display()), &files);
}

/// The same through the registry source (resumed downloads use Range requests).
#[test]
fn kill_9_mid_registry_pull_then_pull_again() {
    need!(need_programs(&["tar2sqfs", "sqfs2tar", "skopeo"]));
    need!(need_registry(&[PLAIN]));
    let env = Env::new();
    let layout = env.path().join("big");
    let files = big_layout(&layout);
    let st = std::process::Command::new("skopeo")
        .args(["copy", "-q", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:latest", layout.display()))
        .arg("docker://127.0.0.1:5000/test/killme:latest")
        .status()
        .unwrap();
    assert!(st.success(), "skopeo copy to the registry");
    kill_and_resume(&env, "127.0.0.1:5000/test/killme:latest", &files);
}

//! `kill -9` of a pull at several moments: no partial image is ever visible (no image
//! directory without its files, no tag without its image), and the next pull completes.

mod support;
use std::path::Path;
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

/// PIDs of tar2sqfs processes writing into `store`.
fn squashers(store: &Path) -> Vec<i32> {
    let store = store.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let args: Vec<String> = cmd
                .split(|&b| b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let prog = args.first()?;
            (prog.ends_with("tar2sqfs") && args.iter().any(|a| a.starts_with(&store)))
                .then_some(pid)
        })
        .collect()
}

/// The squashers of `store` still alive after waiting up to 10 s for them to go (a
/// killed process takes a moment to be reaped); killed before returning, so a failing
/// test leaves nothing behind either.
fn squashers_after_wait(store: &Path) -> Vec<i32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = squashers(store);
        if left.is_empty() || Instant::now() > deadline {
            for &p in &left {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            return left;
        }
        std::thread::sleep(Duration::from_millis(10));
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
        let left = squashers_after_wait(&env.store());
        assert!(left.is_empty(), "tar2sqfs outlived its pull: pids {left:?}");
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

/// `kill -9` of a pull while tar2sqfs runs: the squasher dies with it, even when it
/// could not have noticed on its own (stopped, so it never reads the pipe's EOF).
#[test]
fn kill_9_mid_squash_leaves_no_squasher() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    need!(need_programs(&["tar2sqfs", "sqfs2tar"]));
    let env = Env::new();
    let layout = env.path().join("big");
    let files = big_layout(&layout);
    env.give(&layout);
    let spec = format!("oci:{}", layout.display());
    let mut child = env
        .cmd(&["pull", "-q", &spec])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait (bounded) for the squasher to start.
    let deadline = Instant::now() + Duration::from_secs(120);
    let sq = loop {
        if let Some(&p) = squashers(&env.store()).first() {
            break p;
        }
        let done = child.try_wait().unwrap();
        if done.is_some() || Instant::now() > deadline {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
            panic!("no tar2sqfs seen while the pull ran ({done:?})");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    kill(Pid::from_raw(sq), Signal::SIGSTOP).unwrap();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
    let _ = child.wait();
    let left = squashers_after_wait(&env.store());
    assert!(
        left.is_empty(),
        "tar2sqfs outlived its killed pull: {left:?}"
    );
    assert_consistent(&env);
    // And a retry finishes the job.
    let d = env.ok(&["pull", "-q", &spec]);
    let got = read_sqfs(&env.sqfs(&d));
    for (name, sum) in &files {
        assert_eq!(&sha256_hex(&got[name].data), sum, "{name}");
    }
    assert!(env.staging().is_empty(), "{:?}", env.staging());
}

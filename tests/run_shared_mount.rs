//! One image mount per user, image and identity by default (docs/run.md, "Shared image
//! mounts"): the first `warren run` of an image starts a holder, later runs join it
//! (proved by the holder record and the user namespace, never by timing); at most two
//! mounts for 32 concurrent runs; the idle time ends it; `kill -9` at any point leaves
//! nothing and the next run works; `warren rm` never stops it under a container;
//! `--contain`, another identity and `--no-shared-mount` do not join.
//!
//! Each test runs an image file of its own, so that no other test's holder serves it.

mod run_support;
use run_support::{fixture, ok, stderr, Fixture, User};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A copy of the fixture's image for one test.
fn own_image(f: &Fixture, name: &str) -> PathBuf {
    let p = f.dir.join(format!("shared-{name}.sqfs"));
    std::fs::copy(&f.sqfs, &p).unwrap();
    p
}

/// `warren run` of `sqfs` as `u` with `run.shared_mount_idle = idle`.
fn run_cmd(f: &Fixture, u: &User, idle: &str, sqfs: &Path, args: &[&str]) -> Command {
    let mut c = f.cmd(u, &f.run_args_on(sqfs, args));
    c.env("WARREN_RUN_SHARED_MOUNT_IDLE", idle);
    c
}

/// Run (with `--timing`: its lines tell how the image was mounted) and require success.
fn run(f: &Fixture, u: &User, idle: &str, sqfs: &Path, args: &[&str]) -> String {
    run_timed(f, u, idle, sqfs, args).0
}

/// [`run`], also returning its `--timing` lines.
fn run_timed(f: &Fixture, u: &User, idle: &str, sqfs: &Path, args: &[&str]) -> (String, String) {
    let o = run_cmd(f, u, idle, sqfs, &[&["--timing"], args].concat())
        .output()
        .unwrap();
    let out = ok(&o);
    let timing = stderr(&o);
    eprintln!("{}", timing.trim());
    (out, timing)
}

/// `warren ps --json` records (with `in_use`/`idle_deadline` for holders) of `sqfs`.
fn records(f: &Fixture, u: &User, sqfs: &Path) -> Vec<serde_json::Value> {
    let out = ok(&f.cmd(u, &["ps", "--json"]).output().unwrap());
    let all: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    all.into_iter()
        .filter(|r| r["image"] == sqfs.to_str().unwrap())
        .collect()
}

fn holders(f: &Fixture, u: &User, sqfs: &Path) -> Vec<serde_json::Value> {
    records(f, u, sqfs)
        .into_iter()
        .filter(|r| r["kind"] == "holder")
        .collect()
}

/// Processes whose command line names `sqfs`: warren runs of it, its holders, and its
/// image servers (`squashfuse_ll … IMAGE`, or warren's own `warren-sqfs`, a fork of the
/// process that mounted it), as (pid, comm).
fn processes_of(sqfs: &Path) -> Vec<(i32, String)> {
    let want = sqfs.to_str().unwrap();
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        if stat
            .rsplit_once(") ")
            .is_some_and(|(_, r)| r.starts_with('Z'))
        {
            continue; // PID 1 of the test VM does not reap
        }
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(want) {
            let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            v.push((pid, comm.trim().to_string()));
        }
    }
    v
}

/// Image daemons serving `sqfs`: one per mount of it.
fn mounts_of(sqfs: &Path) -> usize {
    processes_of(sqfs)
        .iter()
        .filter(|(_, c)| c == "squashfuse_ll" || c == "warren-sqfs")
        .count()
}

/// Wait (bounded) until no process of `u` for `sqfs` runs and no record of it is live.
fn assert_nothing_left(f: &Fixture, u: &User, sqfs: &Path, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let procs: Vec<_> = processes_of(sqfs)
            .into_iter()
            .filter(|(pid, _)| {
                std::fs::metadata(format!("/proc/{pid}"))
                    .is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == u.uid)
            })
            .collect();
        let recs = records(f, u, sqfs);
        if procs.is_empty() && recs.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: left behind: processes {procs:?}, records {recs:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The user namespace of process `pid` as the host sees it (`user:[INODE]`).
fn userns(pid: i64) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/user"))
        .unwrap()
        .display()
        .to_string()
}

/// What a container prints for its own user namespace.
const OWN_USERNS: &[&str] = &["readlink", "/proc/self/ns/user"];

#[test]
fn second_run_joins_the_first_mount() {
    let Some(f) = fixture() else { return };
    let img = own_image(f, "join");
    // The first run starts the mount: nothing of it is cached, so the set-up resolves
    // and reads the command beside its other steps (its timing has a "prefetch wait").
    let (first, timing) = run_timed(f, &f.ci, "60", &img, OWN_USERNS);
    assert!(timing.contains("prefetch wait"), "{timing}");
    let hs = holders(f, &f.ci, &img);
    assert_eq!(hs.len(), 1, "{hs:?}");
    let h = &hs[0];
    assert_eq!(h["idle"], 60);
    assert_eq!(h["in_use"], false);
    assert!(h["idle_deadline"].as_u64().is_some(), "{h}");
    let hpid = h["pid"].as_i64().unwrap();
    // The first container already ran in the holder's user namespace, the second too.
    assert_eq!(first.trim(), userns(hpid));
    // A later run finds the mount warm: no background prefetch.
    let (second, timing) = run_timed(f, &f.ci, "60", &img, OWN_USERNS);
    assert!(!timing.contains("prefetch wait"), "{timing}");
    assert_eq!(second.trim(), userns(hpid));
    let again = holders(f, &f.ci, &img);
    assert_eq!((again.len(), &again[0]["id"]), (1, &h["id"]), "{again:?}");
    assert_eq!(mounts_of(&img), 1);
    // `warren ps` says what it is and when it ends.
    let ps = ok(&f.cmd(&f.ci, &["ps"]).output().unwrap());
    assert!(ps.contains("shared image mount, idle, ends in"), "{ps}");
    // A private mount: its own namespace, and the holder stays the only one.
    let private = run(
        f,
        &f.ci,
        "60",
        &img,
        &[&["--no-shared-mount"], OWN_USERNS].concat(),
    );
    assert_ne!(private.trim(), userns(hpid));
    assert_eq!(holders(f, &f.ci, &img).len(), 1);
    let id = h["id"].as_str().unwrap();
    assert_eq!(ok(&f.cmd(&f.ci, &["rm", id]).output().unwrap()).trim(), id);
    assert_nothing_left(f, &f.ci, &img, "after warren rm");
}

#[test]
fn rm_refuses_while_a_container_runs_in_it() {
    let Some(f) = fixture() else { return };
    let img = own_image(f, "rm");
    let mut c = run_cmd(
        f,
        &f.ci,
        "60",
        &img,
        &["sh", "-c", "echo up; exec sleep 60"],
    )
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let mut up = [0u8; 3];
    std::io::Read::read_exact(c.stdout.as_mut().unwrap(), &mut up).unwrap();
    assert_eq!(&up, b"up\n");
    let hs = holders(f, &f.ci, &img);
    assert_eq!(hs.len(), 1, "{hs:?}");
    let id = hs[0]["id"].as_str().unwrap().to_string();
    assert_eq!(hs[0]["in_use"], true);
    let ctr: Vec<_> = records(f, &f.ci, &img)
        .into_iter()
        .filter(|r| r["kind"] == "container")
        .collect();
    assert_eq!(ctr.len(), 1);
    assert_eq!(ctr[0]["holder"], id.as_str());
    let o = f.cmd(&f.ci, &["rm", &id]).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("still use this holder"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        holders(f, &f.ci, &img).len(),
        1,
        "stopped under a container"
    );
    // The container is unharmed: it still reads its image.
    // SAFETY: SIGTERM to our own child (warren, exec'd by setpriv): forwarded, sleep ends.
    unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    c.wait().unwrap();
    assert_eq!(holders(f, &f.ci, &img)[0]["in_use"], false);
    assert_eq!(ok(&f.cmd(&f.ci, &["rm", &id]).output().unwrap()).trim(), id);
    assert_nothing_left(f, &f.ci, &img, "after warren rm");
}

#[test]
fn thirty_two_concurrent_runs_share_at_most_two_mounts() {
    let Some(f) = fixture() else { return };
    let img = own_image(f, "32");
    let x = f.user_dir(&f.ci, "shared-32-x");
    let vol = format!("{}:/x", x.display());
    let script = "touch /x/up.$$; while [ ! -e /x/go ]; do sleep 0.05; done; cat /data48/f";
    let children: Vec<_> = (0..32)
        .map(|_| {
            run_cmd(f, &f.ci, "0", &img, &["-v", &vol, "sh", "-c", script])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // All 32 running at once (each touched its file), then count.
    let t = Instant::now();
    while std::fs::read_dir(&x).unwrap().count() < 32 {
        assert!(t.elapsed() < Duration::from_secs(120), "not all 32 started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let recs = records(f, &f.ci, &img);
    let hs: Vec<_> = recs.iter().filter(|r| r["kind"] == "holder").collect();
    let joined = recs
        .iter()
        .filter(|r| r["kind"] == "container" && !r["holder"].is_null())
        .count();
    let mounts = mounts_of(&img);
    assert!((1..=2).contains(&hs.len()), "{} holders", hs.len());
    assert!(mounts <= 2, "{mounts} image mounts for 32 runs");
    assert_eq!(joined, 32, "{recs:?}");
    std::fs::write(x.join("go"), "").unwrap();
    for c in children {
        assert_eq!(ok(&c.wait_with_output().unwrap()).trim(), "hi");
    }
    // Idle time 0: the last container out stopped it.
    assert_nothing_left(f, &f.ci, &img, "after 32 concurrent runs");
}

#[test]
fn the_idle_time_ends_the_holder() {
    let Some(f) = fixture() else { return };
    let img = own_image(f, "idle");
    run(f, &f.ci, "1", &img, &["true"]);
    let hs = holders(f, &f.ci, &img);
    assert_eq!((hs.len(), &hs[0]["idle"]), (1, &serde_json::json!(1)));
    // It ends by itself (no rm, no signal): nothing of it is left.
    assert_nothing_left(f, &f.ci, &img, "after the idle time");
    // And the next run starts a fresh one.
    run(f, &f.ci, "0", &img, &["true"]);
    assert_nothing_left(f, &f.ci, &img, "after a run with idle time 0");
}

#[test]
fn kill_9_of_an_idle_holder_leaves_nothing_and_the_next_run_works() {
    let Some(f) = fixture() else { return };
    let img = own_image(f, "k9holder");
    run(f, &f.ci, "60", &img, &["true"]);
    let hs = holders(f, &f.ci, &img);
    assert_eq!(
        hs.len(),
        1,
        "{:?} {:?}",
        ok(&f.cmd(&f.ci, &["ps", "--json"]).output().unwrap()),
        processes_of(&img)
    );
    // SAFETY: SIGKILL to the test user's holder process.
    unsafe { libc::kill(hs[0]["pid"].as_i64().unwrap() as i32, libc::SIGKILL) };
    // Its image daemon dies with it and `ps` drops its stale record.
    assert_nothing_left(f, &f.ci, &img, "after kill -9 of the holder");
    assert_eq!(
        run(f, &f.ci, "60", &img, &["cat", "/data48/f"]).trim(),
        "hi"
    );
    let again = holders(f, &f.ci, &img);
    assert_eq!(again.len(), 1);
    assert_ne!(again[0]["id"], hs[0]["id"]);
    let id = again[0]["id"].as_str().unwrap();
    ok(&f.cmd(&f.ci, &["rm", id]).output().unwrap());
    assert_nothing_left(f, &f.ci, &img, "after warren rm");
}

#[test]
fn kill_9_of_the_first_run_mid_start_leaves_nothing() {
    let Some(f) = fixture() else { return };
    let img = own_image(f, "k9start");
    // Killed at different points of the start (before, while and after the holder
    // starts): never more than one holder, the next run works, and once the idle time
    // is over nothing is left.
    for delay_ms in (0..40).step_by(2) {
        let mut c = run_cmd(f, &f.ci, "1", &img, &["true"]).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        c.kill().unwrap();
        c.wait().unwrap();
        let n = holders(f, &f.ci, &img).len();
        assert!(n <= 1, "{n} holders after kill -9 at {delay_ms} ms");
        assert_eq!(
            run(f, &f.ci, "1", &img, &["cat", "/data48/f"]).trim(),
            "hi",
            "the run after kill -9 at {delay_ms} ms"
        );
    }
    assert_nothing_left(f, &f.ci, &img, "after the kills and the idle time");
}

#[test]
fn contain_and_another_identity_do_not_join() {
    let Some(f) = fixture() else { return };
    let img = own_image(f, "contain");
    run(f, &f.ci, "60", &img, &["true"]);
    let hs = holders(f, &f.ci, &img);
    assert_eq!(hs.len(), 1);
    let ns = userns(hs[0]["pid"].as_i64().unwrap());
    // --contain: a user namespace of its own, and no holder of its own either.
    let contained = run(f, &f.ci, "60", &img, &[&["--contain"], OWN_USERNS].concat());
    assert_ne!(contained.trim(), ns);
    assert_eq!(holders(f, &f.ci, &img).len(), 1);
    // --remap-root: another identity, another map: its own holder.
    let root = run(
        f,
        &f.ci,
        "60",
        &img,
        &[&["--remap-root"], OWN_USERNS].concat(),
    );
    assert_ne!(root.trim(), ns);
    let hs2 = holders(f, &f.ci, &img);
    assert_eq!(hs2.len(), 2, "{hs2:?}");
    let mut ids: Vec<&str> = hs2
        .iter()
        .map(|h| h["identity"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["keep-id", "remap-root"]);
    let remap = hs2.iter().find(|h| h["identity"] == "remap-root").unwrap();
    assert_eq!(root.trim(), userns(remap["pid"].as_i64().unwrap()));
    // The single-ID mode (no subuid range): its own user's holder, joined the same way.
    let single = run(f, &f.nosub, "0", &img, OWN_USERNS);
    assert_ne!(single.trim(), ns);
    assert_nothing_left(f, &f.nosub, &img, "warren-nosub after its run");
    for h in &hs2 {
        ok(&f
            .cmd(&f.ci, &["rm", h["id"].as_str().unwrap()])
            .output()
            .unwrap());
    }
    assert_nothing_left(f, &f.ci, &img, "after warren rm");
}

#[test]
fn the_setting_and_the_flag_turn_it_off() {
    let Some(f) = fixture() else { return };
    let img = own_image(f, "off");
    let mut c = run_cmd(f, &f.ci, "60", &img, &["true"]);
    c.env("WARREN_RUN_SHARED_MOUNT", "0");
    ok(&c.output().unwrap());
    assert!(holders(f, &f.ci, &img).is_empty());
    run(f, &f.ci, "60", &img, &["--no-shared-mount", "true"]);
    assert!(holders(f, &f.ci, &img).is_empty());
    // A hand-started holder (no idle time) is still joined by a default run.
    ok(
        &run_cmd(f, &f.ci, "60", &img, &["--holder", "--name", "byhand"])
            .output()
            .unwrap(),
    );
    let hs = holders(f, &f.ci, &img);
    assert_eq!(hs.len(), 1);
    assert!(hs[0]["idle"].is_null(), "{hs:?}");
    let joined = run(f, &f.ci, "60", &img, OWN_USERNS);
    assert_eq!(joined.trim(), userns(hs[0]["pid"].as_i64().unwrap()));
    assert_eq!(holders(f, &f.ci, &img).len(), 1);
    ok(&f.cmd(&f.ci, &["rm", "byhand"]).output().unwrap());
    assert_nothing_left(f, &f.ci, &img, "after warren rm");
}

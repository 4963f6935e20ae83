//! Nothing left behind: many runs, parallel runs, kill -9 of warren mid-run, and the
//! namespace holder's life cycle. Serialized: each test counts the test user's processes.

mod run_support;
use run_support::{fixture, leftover_mounts, leftover_state, live_processes, ok, Fixture};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

fn assert_clean(f: &Fixture, what: &str) {
    // A `warren ps` prunes records of warrens killed with -9.
    ok(&f.cmd(&f.ci, &["ps"]).output().unwrap());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // warren, its FUSE daemons, and what the tests run in containers (other processes
        // of the user, e.g. a podman pause process, are not ours to judge).
        let procs: Vec<String> = live_processes(f.ci.uid)
            .into_iter()
            .filter(|p| {
                let (pid, comm) = p.split_once(' ').unwrap_or((p, ""));
                match comm {
                    // Ours only: other suites may run warren as the same user meanwhile.
                    "warren" | "squashfuse_ll" => f.owns_process(pid),
                    "fuse-overlayfs" | "sleep" | "sh" | "busybox" => true,
                    _ => false,
                }
            })
            .collect();
        let mounts = leftover_mounts();
        let state = leftover_state(&f.rundir(&f.ci));
        if procs.is_empty() && mounts.is_empty() && state.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            panic!("{what}: left behind: processes {procs:?}, mounts {mounts:?}, state {state:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn many_runs_leave_nothing() {
    let Some(f) = fixture() else { return };
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    assert_clean(f, "before");
    for i in 0..200 {
        let args: &[&str] = match i % 4 {
            0 => &["true"],
            1 => &["--read-only", "true"],
            2 => &["--remap-root", "sh", "-c", "echo x > /f"],
            _ => &["sh", "-c", "sleep 30 & exit 3"],
        };
        let o = f.run(&f.ci, args);
        let want = if i % 4 == 3 { 3 } else { 0 };
        assert_eq!(
            o.status.code(),
            Some(want),
            "run {i}: {}",
            run_support::stderr(&o)
        );
    }
    // The background sleep of the last kind is killed with its container.
    assert_clean(f, "after 200 runs");
}

#[test]
fn fifty_parallel_runs() {
    let Some(f) = fixture() else { return };
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let children: Vec<_> = (0..50)
        .map(|i| {
            let s = format!("test \"$(cat /data48/f)\" = hi && echo {i} > /tmp/n && cat /tmp/n");
            f.cmd(&f.ci, &f.run_args(&["sh", "-c", &s]))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, c) in children.into_iter().enumerate() {
        let o = c.wait_with_output().unwrap();
        assert_eq!(ok(&o).trim(), i.to_string());
    }
    assert_clean(f, "after 50 parallel runs");
}

#[test]
fn kill_9_of_warren_mid_run_leaves_nothing() {
    let Some(f) = fixture() else { return };
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for backend in ["native", "fuse"] {
        let mut child = f
            .cmd(
                &f.ci,
                &f.run_args(&["--overlay", backend, "sh", "-c", "echo up; exec sleep 60"]),
            )
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let mut buf = [0u8; 3];
        std::io::Read::read_exact(&mut out, &mut buf).unwrap();
        assert_eq!(&buf, b"up\n");
        let t = Instant::now();
        while !live_processes(f.ci.uid)
            .iter()
            .any(|p| p.ends_with(" sleep"))
        {
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "the container's sleep never started"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // SAFETY: killing our own child (warren, exec'd by setpriv).
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        child.wait().unwrap();
        assert_clean(f, &format!("after kill -9 ({backend})"));
    }
}

#[test]
fn holder_life_cycle() {
    let Some(f) = fixture() else { return };
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // A separate image file: other tests must not join this holder.
    let img2 = f.dir.join("img2.sqfs");
    let base = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "run",
            "--squashfs",
            img2.to_str().unwrap(),
            "--image-config",
            f.config.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let run = |extra: &[&str]| {
        let v = base(extra);
        let a: Vec<&str> = v.iter().map(String::as_str).collect();
        f.cmd(&f.ci, &a).output().unwrap()
    };
    assert_eq!(ok(&run(&["--holder", "--name", "hold1"])).trim(), "hold1");
    // Stop it even when an assertion below fails.
    struct Stop<'a>(&'a Fixture);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            let _ = self.0.cmd(&self.0.ci, &["rm", "--force", "hold1"]).output();
        }
    }
    let _stop = Stop(f);
    let ps = ok(&f.cmd(&f.ci, &["ps"]).output().unwrap());
    assert!(ps.contains("hold1") && ps.contains("holder"), "{ps}");
    // The leftover check recognizes the holder and its daemon as ours.
    let ours: Vec<String> = live_processes(f.ci.uid)
        .into_iter()
        .filter(|p| f.owns_process(p.split_once(' ').map_or(p.as_str(), |x| x.0)))
        .collect();
    for name in ["warren", "squashfuse_ll"] {
        assert!(
            ours.iter().any(|p| p.ends_with(&format!(" {name}"))),
            "{name} of the holder not seen as the fixture's: {ours:?}"
        );
    }
    // A second holder for the same image and identity is refused.
    assert!(!run(&["--holder", "--name", "hold2"]).status.success());
    // Joining: same owners, own writable layer, timing shows the join step.
    let o = run(&[
        "--timing",
        "sh",
        "-c",
        "stat -c '%u' /data48; grep -c ' / / .* - overlay ' /proc/self/mountinfo",
    ]);
    assert_eq!(ok(&o), "48\n1\n");
    assert!(
        run_support::stderr(&o).contains("join"),
        "{}",
        run_support::stderr(&o)
    );
    // A running joined container keeps `rm` from stopping the holder.
    let mut c = f
        .cmd(
            &f.ci,
            &base(&["sh", "-c", "echo up; sleep 30"])
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        )
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = c.stdout.take().unwrap();
    let mut buf = [0u8; 3];
    std::io::Read::read_exact(&mut out, &mut buf).unwrap();
    let o = f.cmd(&f.ci, &["rm", "hold1"]).output().unwrap();
    assert!(!o.status.success());
    assert!(run_support::stderr(&o).contains("still use this holder"));
    // SAFETY: our child.
    unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    assert_eq!(c.wait().unwrap().code(), Some(143));
    assert_eq!(
        ok(&f.cmd(&f.ci, &["rm", "hold1"]).output().unwrap()).trim(),
        "hold1"
    );
    assert_clean(f, "after the holder was removed");
}

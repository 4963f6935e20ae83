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
                    "warren" | "warren-sqfs" | "squashfuse_ll" => f.owns_process(pid),
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
    for names in [&["warren"][..], &["warren-sqfs", "squashfuse_ll"]] {
        assert!(
            ours.iter()
                .any(|p| names.iter().any(|n| p.ends_with(&format!(" {n}")))),
            "{names:?} of the holder not seen as the fixture's: {ours:?}"
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

/// (pid, start time) of `pid` and of every descendant, from /proc/PID/task/*/children.
fn tree(pid: i32) -> Vec<(i32, u64)> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        if let Some(t) = start_time(p) {
            out.push((p, t));
        }
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let kids = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            todo.extend(
                kids.split_whitespace()
                    .filter_map(|k| k.parse::<i32>().ok()),
            );
        }
    }
    out
}

/// The start time of a live (not zombie) process.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(") ")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After "comm)": state is field 3 of stat, starttime field 22.
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Live processes whose environment carries `mark` (the container's, whatever their
/// parent: `-e` reaches every process the command starts).
fn marked(mark: &str) -> Vec<i32> {
    let needle = format!("WARREN_TEST_MARK={mark}\0");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/environ"))
                .is_ok_and(|env| env.windows(needle.len()).any(|w| w == needle.as_bytes()))
                && start_time(*p).is_some()
        })
        .collect()
}

fn log_lines(p: &std::path::Path) -> usize {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .count()
}

/// kill -9 of warren in every mode: within a bounded poll no process of the container
/// (the command's shell loop run as a grandchild, its `sleep`s, the monitor, the FUSE
/// daemons) is left, and the loop's log stops growing.
#[test]
fn kill_9_of_warren_kills_the_whole_container_in_every_mode() {
    let Some(f) = fixture() else { return };
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bind = f.user_dir(&f.ci, "kill9-bind");
    let img2 = f.dir.join("img2.sqfs");
    let holder_args = |extra: &[&str]| -> Vec<String> {
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
    let h = holder_args(&["--holder", "--name", "k9hold"]);
    let h: Vec<&str> = h.iter().map(String::as_str).collect();
    assert_eq!(ok(&f.cmd(&f.ci, &h).output().unwrap()).trim(), "k9hold");
    struct Stop<'a>(&'a Fixture);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            let _ = self
                .0
                .cmd(&self.0.ci, &["rm", "--force", "k9hold"])
                .output();
        }
    }
    let _stop = Stop(f);
    let vol = format!("{}:/bind", bind.display());
    let modes: [(&str, &[&str]); 5] = [
        ("default", &[]),
        ("fuse-overlayfs", &["--overlay", "fuse"]),
        ("read-only", &["--read-only"]),
        ("contain", &["--contain"]),
        ("joined holder", &["--no-mount-home"]),
    ];
    for (i, (what, opts)) in modes.iter().enumerate() {
        let log = bind.join(format!("log{i}"));
        let mark = format!("k9-{}-{i}", std::process::id());
        let script = format!("(while :; do echo x >> /bind/log{i}; sleep 0.1; done); exit 3");
        let mut args: Vec<String> = vec![
            "-v".into(),
            vol.clone(),
            "-e".into(),
            format!("WARREN_TEST_MARK={mark}"),
        ];
        args.extend(opts.iter().map(|s| s.to_string()));
        args.extend(["sh".into(), "-c".into(), script]);
        let full: Vec<String> = if *what == "joined holder" {
            holder_args(&args.iter().map(String::as_str).collect::<Vec<_>>())
        } else {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            f.run_args(&a).iter().map(|s| s.to_string()).collect()
        };
        let full: Vec<&str> = full.iter().map(String::as_str).collect();
        let mut child = f.cmd(&f.ci, &full).spawn().unwrap();
        let warren = child.id() as i32;
        // Running: the loop wrote twice and a `sleep` (a great-grandchild of the
        // container's first process) exists.
        let t = Instant::now();
        while log_lines(&log) < 2 || marked(&mark).len() < 3 {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "{what}: the loop never ran"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let ours = tree(warren);
        assert!(ours.len() >= 4, "{what}: {ours:?}");
        // SAFETY: killing our own child (warren, exec'd by setpriv).
        unsafe { libc::kill(warren, libc::SIGKILL) };
        child.wait().unwrap();
        let t = Instant::now();
        loop {
            let left: Vec<i32> = ours
                .iter()
                .filter(|(p, s)| start_time(*p) == Some(*s))
                .map(|(p, _)| *p)
                .chain(marked(&mark))
                .collect();
            if left.is_empty() {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "{what}: processes left after kill -9 of warren: {left:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // No process of the container is left, so nothing writes any more.
        let n = log_lines(&log);
        ok(&f.cmd(&f.ci, &["ps"]).output().unwrap());
        assert_eq!(log_lines(&log), n, "{what}: the log still grows");
        assert!(
            leftover_mounts().is_empty(),
            "{what}: {:?}",
            leftover_mounts()
        );
    }
    // The joined holder outlived the container it served; removing it leaves nothing.
    let ps = ok(&f.cmd(&f.ci, &["ps"]).output().unwrap());
    assert!(ps.contains("k9hold"), "{ps}");
    assert_eq!(
        ok(&f.cmd(&f.ci, &["rm", "k9hold"]).output().unwrap()).trim(),
        "k9hold"
    );
    assert_clean(f, "after kill -9 in every mode");
}

/// kill -9 of the monitor (the set-up process that stays the command's parent): the
/// command dies with it, its orphans come back to warren, which kills them and exits.
#[test]
fn kill_9_of_the_monitor_leaves_nothing() {
    let Some(f) = fixture() else { return };
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bind = f.user_dir(&f.ci, "kill9-monitor");
    let vol = format!("{}:/bind", bind.display());
    let log = bind.join("log");
    let mark = format!("k9m-{}", std::process::id());
    let env = format!("WARREN_TEST_MARK={mark}");
    let args = f.run_args(&[
        "-v",
        &vol,
        "-e",
        &env,
        "sh",
        "-c",
        "(while :; do echo x >> /bind/log; sleep 0.1; done); exit 3",
    ]);
    let mut child = f.cmd(&f.ci, &args).spawn().unwrap();
    let warren = child.id() as i32;
    let t = Instant::now();
    while log_lines(&log) < 2 || marked(&mark).len() < 3 {
        assert!(t.elapsed() < Duration::from_secs(20), "the loop never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
    let ours = tree(warren);
    let monitor = ours
        .iter()
        .map(|(p, _)| *p)
        .find(|p| *p != warren)
        .expect("the monitor");
    // SAFETY: a process of our test user's container, found by PID in warren's tree.
    unsafe { libc::kill(monitor, libc::SIGKILL) };
    // warren reports the monitor's death as a signal (128+9) and leaves nothing.
    assert_eq!(child.wait().unwrap().code(), Some(137));
    let left: Vec<i32> = ours
        .iter()
        .filter(|(p, s)| start_time(*p) == Some(*s))
        .map(|(p, _)| *p)
        .chain(marked(&mark))
        .collect();
    assert!(left.is_empty(), "left after warren exited: {left:?}");
    assert_clean(f, "after kill -9 of the monitor");
}

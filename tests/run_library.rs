//! The run path as a library, the way the Slurm plugin's task_init uses it: no warren
//! binary, no supervisor, no pipes. A forked process becomes the unprivileged test user
//! (as slurmstepd's task does), builds its `Caller` from explicit values, plans the
//! container with a job scope, creates its user namespace, calls `setup::prepare` and
//! `process::finish` (no exec), and reports what it sees from inside. Real squashfuse,
//! kernel overlay or fuse-overlayfs, no mocks.

mod run_support;

use run_support::{fixture, leftover_mounts, live_processes};
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};
use warren::runtime::caller::Caller;
use warren::runtime::holder::Scope;
use warren::runtime::idmap::Identity;
use warren::runtime::setup::{self, Log};
use warren::runtime::spec::{self, Mode, RunOptions, Writable};
use warren::runtime::{overlay, process, userns};

/// In the forked process: everything the plugin's task would do; returns one line.
fn as_task(
    uid: u32,
    gid: u32,
    rundir: std::path::PathBuf,
    entry: &warren::store::ImageEntry,
) -> Result<String, String> {
    let e = |what: &str| {
        let what = what.to_string();
        move |x: std::io::Error| format!("{what}: {x}")
    };
    // Become the user, as slurmstepd's task process is before task_init.
    nix::unistd::setgroups(&[]).map_err(|x| format!("setgroups: {x}"))?;
    // SAFETY: credential syscalls on this forked, single-threaded process.
    unsafe {
        if libc::setresgid(gid, gid, gid) != 0 {
            return Err(e("setresgid")(std::io::Error::last_os_error()));
        }
        if libc::setresuid(uid, uid, uid) != 0 {
            return Err(e("setresuid")(std::io::Error::last_os_error()));
        }
        // The ID change made us non-dumpable, which would make /proc/self/*_map root's.
        libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0);
    }
    let cfg = warren::config::Config::default();
    let caller = Caller::lookup(uid, gid, vec![("LIBVAR".into(), "x".into())], rundir);
    let opts = RunOptions {
        volumes: vec![],
        env: vec!["LIBVAR".into()],
        env_files: vec![],
        workdir: Some("/tmp".into()),
        identity: Identity::KeepId,
        mount_home: Some(false),
        writable: Writable::Tmpfs,
        overlay: None,
        name: None,
        entrypoint: None,
        command: vec!["true".into()],
        tty: false,
        fake_chown: false,
        timing: false,
        quiet: true,
        mode: Mode::Container,
        scope: Scope::Job {
            job_id: 77,
            step_id: Some(0),
            name: None,
        },
        join: true,
        contain: None,
        prefetch_for: None,
    };
    let (spec, _notices) = spec::build(&cfg.run, "lib-test".into(), entry, &opts, &caller)
        .map_err(|x| format!("build: {x:#}"))?;
    if !spec.map.single {
        return Err("this test needs the user without a subordinate range".into());
    }
    let mut log = Log::default();
    setup::new_user_namespace().map_err(|x| x.to_string())?;
    userns::write_self(&spec.map).map_err(e("single-ID map"))?;
    let prepared = setup::prepare(
        &spec,
        overlay::choose(&spec),
        None,
        &mut log,
        &mut |_, _| Ok(()),
    )
    .map_err(|x| format!("prepare: {x}"))?;
    process::finish(&prepared.exec).map_err(|(c, m)| format!("finish ({c}): {m}"))?;
    // Now in the container, with the task's final credentials: look around.
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(e("/etc/passwd"))?;
    let name = caller.name.clone();
    let entry_line = passwd
        .lines()
        .any(|l| l.starts_with(&format!("{name}:x:{uid}:{gid}:")));
    // SAFETY: plain queries.
    let (nnp, ruid) = unsafe {
        (
            libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0),
            libc::getuid(),
        )
    };
    let cwd = std::env::current_dir().map_err(e("cwd"))?;
    let busybox = std::path::Path::new("/bin/busybox").exists();
    let env_ok = prepared
        .exec
        .env
        .iter()
        .any(|v| v.to_bytes() == b"LIBVAR=x");
    Ok(format!(
        "uid={ruid} passwd={entry_line} nnp={nnp} cwd={} busybox={busybox} env={env_ok} steps={}",
        cwd.display(),
        log.times
            .iter()
            .map(|(s, _)| *s)
            .collect::<Vec<_>>()
            .join(",")
    ))
}

#[test]
fn plugin_path_prepares_in_process_and_leaves_nothing() {
    let Some(f) = fixture() else { return };
    let u = &f.nosub;
    let rundir = f.dir.join("rt-lib");
    std::fs::create_dir(&rundir).unwrap();
    std::os::unix::fs::chown(&rundir, Some(u.uid), Some(u.gid)).unwrap();
    std::fs::set_permissions(&rundir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let entry = warren::store::ImageEntry {
        digest: warren::digest::Digest::of(b"run_library test image"),
        squashfs: f.sqfs.clone(),
        config: f.config.clone(),
    };
    let mut fds = [0; 2];
    // SAFETY: fds is valid for two ints.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: fresh descriptors we own.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: the child only runs `as_task` and leaves with _exit (glibc keeps malloc
    // usable after fork of a threaded test harness).
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        drop(r);
        let line = match as_task(u.uid, u.gid, rundir.clone(), &entry) {
            Ok(l) => l,
            Err(m) => format!("ERR {m}"),
        };
        let _ = nix::unistd::write(&w, line.as_bytes());
        // SAFETY: leave the forked child without running the harness's destructors.
        unsafe { libc::_exit(0) };
    }
    drop(w);
    let mut out = String::new();
    std::fs::File::from(r).read_to_string(&mut out).unwrap();
    let mut st = 0;
    // SAFETY: our child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    assert_eq!(
        out,
        format!(
            "uid={} passwd=true nnp=1 cwd=/tmp busybox=true env=true steps=squashfuse,passwd,overlay,prefetch,mounts,prefetch wait,pivot",
            u.uid
        )
    );
    // Its squashfuse and overlay daemons died with it; its mounts were in its own
    // namespace; nothing of it is left in the runtime dir but caches.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let procs: Vec<String> = live_processes(u.uid)
            .into_iter()
            .filter(|p| {
                let (pid, comm) = p.split_once(' ').unwrap_or((p, ""));
                f.owns_process(pid) || comm == "fuse-overlayfs"
            })
            .collect();
        let mounts = leftover_mounts();
        if procs.is_empty() && mounts.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: processes {procs:?}, mounts {mounts:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let ctr: Vec<_> = std::fs::read_dir(rundir.join("ctr")).unwrap().collect();
    assert!(ctr.is_empty(), "records left: {ctr:?}");
}

/// Holders of two jobs of one user with one image, and a CLI holder of that image: each
/// is found only in its own scope, and stopping one job's holders leaves the others.
#[test]
fn job_holders_are_scoped() {
    let Some(f) = fixture() else { return };
    let u = &f.ci;
    let run = |extra: &[&str]| f.run(u, extra);
    let ok = |o: &std::process::Output| run_support::ok(o);
    let holders = || -> Vec<(String, String)> {
        let o = f.cmd(u, &["ps", "--json"]).output().unwrap();
        let v: serde_json::Value = serde_json::from_str(&ok(&o)).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .filter(|r| r["kind"] == "holder")
            .map(|r| {
                (
                    r["name"].as_str().unwrap().to_string(),
                    r["scope"].to_string(),
                )
            })
            .collect()
    };
    assert_eq!(
        ok(&run(&["--holder", "--name", "h", "--job", "5"])).trim(),
        "h"
    );
    // Same name and image in another job, and a CLI holder: all allowed.
    assert_eq!(
        ok(&run(&["--holder", "--name", "h", "--job", "6"])).trim(),
        "h"
    );
    assert_eq!(ok(&run(&["--holder", "--name", "u"])).trim(), "u");
    // A second holder in the same job (same image, identity) is refused.
    assert!(!run(&["--holder", "--name", "h9", "--job", "5"])
        .status
        .success());
    assert_eq!(holders().len(), 3);
    // A container of job 5 joins job 5's holder; one of job 7 finds none and builds its
    // own namespaces; a plain run joins the CLI holder.
    for (extra, joins) in [
        (vec!["--job", "5"], true),
        (vec!["--job", "7"], false),
        (vec!["--job", "5.1"], false),
        (vec![], true),
    ] {
        let mut a = extra.clone();
        a.extend(["--timing", "true"]);
        let o = run(&a);
        ok(&o);
        let err = run_support::stderr(&o);
        assert_eq!(err.contains(", join "), joins, "{extra:?}: {err}");
    }
    // Bad job values are one clear line and exit 125 or clap's 2, never a start.
    let o = run(&["--job", "5x", "true"]);
    assert!(!o.status.success());
    assert!(run_support::stderr(&o).contains("JOB.STEP"));
    // Job 5's end stops job 5's holder only.
    assert_eq!(
        ok(&f.cmd(u, &["rm", "--job", "5"]).output().unwrap()).trim(),
        "1"
    );
    let left = holders();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(
        left.iter()
            .any(|(n, s)| n == "h" && s.contains("\"job_id\":6")),
        "{left:?}"
    );
    assert!(
        left.iter().any(|(n, s)| n == "u" && s.contains("\"user\"")),
        "{left:?}"
    );
    assert_eq!(
        ok(&f.cmd(u, &["rm", "--job", "6"]).output().unwrap()).trim(),
        "1"
    );
    assert_eq!(ok(&f.cmd(u, &["rm", "u"]).output().unwrap()).trim(), "u");
    assert!(holders().is_empty());
    // Nothing of the fixture's left: processes, mounts.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let procs: Vec<String> = live_processes(u.uid)
            .into_iter()
            .filter(|p| f.owns_process(p.split_once(' ').map_or(p.as_str(), |x| x.0)))
            .collect();
        let mounts = leftover_mounts();
        if procs.is_empty() && mounts.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: processes {procs:?}, mounts {mounts:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

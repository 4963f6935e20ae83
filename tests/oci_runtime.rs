//! `warren oci` as an OCI runtime, outside Slurm, as the unprivileged test user: the
//! create → start → kill → delete lifecycle, run mode and exit codes, multi-UID owners
//! of a bundle's rootfs, an image bundle, hooks, hostile configs, and that two users
//! never see each other's containers. Bundles are built here from the host's static
//! busybox (a rootfs directory owned by the user and by its subordinate IDs).

mod oci_support;
mod support;

use oci_support::{one_line_error, processes_of, wait_for, Fixture, BUSYBOX_IMAGE, OS_RELEASE};
use serde_json::{json, Value};
use std::path::Path;
use support::{need_user, NOSUB_USER};

#[test]
fn run_mode_output_owners_env_exit_code() {
    let f = need!(Fixture::new());
    f.write_config(&f.config(&[
        "sh",
        "-c",
        "cat /etc/os-release; id -u; hostname; echo A=$A; stat -c %u:%g /data/a /data/n /bin/busybox; exit 7",
    ]));
    let o = f.run_bundle("run1");
    assert_eq!(o.status.code(), Some(7), "{}", support::stderr(&o));
    let out = support::stdout(&o);
    assert_eq!(
        out,
        format!("{OS_RELEASE}0\noci-test\nA=job\n1000:1001\n65534:65534\n0:0\n")
    );
    assert!(!f.state_dir("run1").exists(), "run leaves no state");
    assert!(processes_of(f.user.uid, "run1").is_empty());
}

#[test]
fn lifecycle_create_start_kill_delete() {
    let f = need!(Fixture::new());
    f.write_config(&f.config(&["sh", "-c", "echo started > /dev/null; exec sleep 60"]));
    let b = f.bundle();
    let pid_file = f.env.path().join("pid");
    let o = f.create(&[
        "--bundle",
        b.to_str().unwrap(),
        "--pid-file",
        pid_file.to_str().unwrap(),
        "life1",
    ]);
    assert!(o.status.success(), "{}", support::stderr(&o));
    assert_eq!(f.status("life1").as_deref(), Some("created"));
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let st = support::json(&f.oci(&["state", "life1"]));
    assert_eq!(st["pid"], pid);
    // Created: the command has not run yet (the process is still warren).
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_eq!(comm.trim(), "warren");
    let o = f.oci(&["start", "life1"]);
    assert!(o.status.success(), "{}", support::stderr(&o));
    assert_eq!(f.status("life1").as_deref(), Some("running"));
    // The state's pid is the container's monitor; the command is its child.
    wait_for("sleep to run", || {
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .any(|c| {
                std::fs::read_to_string(format!("/proc/{c}/comm"))
                    .is_ok_and(|c| c.trim() == "sleep")
            })
    });
    // Starting twice is refused.
    one_line_error(&f.oci(&["start", "life1"]));
    // Deleting a running container needs --force.
    one_line_error(&f.oci(&["delete", "life1"]));
    let o = f.oci(&["kill", "life1", "KILL"]);
    assert!(o.status.success(), "{}", support::stderr(&o));
    wait_for("stopped", || {
        f.status("life1").as_deref() == Some("stopped")
    });
    let o = f.oci(&["delete", "life1"]);
    assert!(o.status.success(), "{}", support::stderr(&o));
    assert!(f.status("life1").is_none());
    assert!(!f.state_dir("life1").exists());
    wait_for("no processes left", || {
        processes_of(f.user.uid, "life1").is_empty()
            && processes_of(f.user.uid, "squashfuse").is_empty()
    });
}

#[test]
fn delete_force_of_a_running_container_and_kill_all() {
    let f = need!(Fixture::new());
    f.write_config(&f.config(&["sh", "-c", "sleep 60 & sleep 60; wait"]));
    let b = f.bundle();
    for id in ["force1", "all1"] {
        let o = f.create(&["--bundle", b.to_str().unwrap(), id]);
        assert!(o.status.success(), "{}", support::stderr(&o));
        assert!(f.oci(&["start", id]).status.success());
        assert_eq!(f.status(id).as_deref(), Some("running"));
    }
    let o = f.oci(&["delete", "--force", "force1"]);
    assert!(o.status.success(), "{}", support::stderr(&o));
    assert!(!f.state_dir("force1").exists());
    // kill --all reaches the background sleep too (the whole process group).
    let o = f.oci(&["kill", "--all", "all1", "9"]);
    assert!(o.status.success(), "{}", support::stderr(&o));
    wait_for("stopped", || f.status("all1").as_deref() == Some("stopped"));
    assert!(f.oci(&["delete", "all1"]).status.success());
    wait_for("no processes left", || {
        processes_of(f.user.uid, "sleep 60").is_empty()
    });
}

#[test]
fn a_killed_run_leaves_no_process_and_a_retry_works() {
    let f = need!(Fixture::new());
    f.write_config(&f.config(&["sh", "-c", "sleep 71 & exec sleep 72"]));
    let b = f.bundle();
    let mut child = f
        .env
        .cmd(&["oci", "run", "--bundle", b.to_str().unwrap(), "killed1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the container to run", || {
        f.status("killed1").as_deref() == Some("running")
    });
    child.kill().unwrap();
    child.wait().unwrap();
    // The first process died with warren; its background child lives on until the
    // container is deleted (or its ID reused).
    wait_for("stopped", || {
        f.status("killed1").as_deref() == Some("stopped")
    });
    // The same ID again: the abandoned state is reclaimed.
    f.write_config(&f.config(&["true"]));
    let o = f.run_bundle("killed1");
    assert!(o.status.success(), "{}", support::stderr(&o));
    assert!(!f.state_dir("killed1").exists());
    wait_for("no processes left", || {
        processes_of(f.user.uid, "sleep 7").is_empty()
    });
}

#[test]
fn container_namespace_hooks_see_the_container() {
    let f = need!(Fixture::new());
    let mut v = f.config(&["echo", "command"]);
    // createContainer: found here (the host's static busybox), run in the container's
    // namespaces before its pivot_root, as runc runs it: the bundle's root.path shows the
    // container's root, its mounts (/dev) included; startContainer: found and run inside
    // the container.
    let root = f.bundle().join("rootfs");
    let look = format!(
        "cat {0}/etc/os-release && test -c {0}/dev/null && echo dev",
        root.display()
    );
    v["hooks"] = json!({
        "createContainer": [{"path": "/bin/busybox", "args": ["busybox", "sh", "-c", look]}],
        "startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "stat -c %u:%g /data/a"]}],
    });
    f.write_config(&v);
    let o = f.run_bundle("nshook1");
    assert!(
        o.status.success(),
        "{:?} {} {}",
        o.status,
        support::stderr(&o),
        support::stdout(&o)
    );
    assert_eq!(
        support::stdout(&o),
        format!("{OS_RELEASE}dev\n1000:1001\ncommand\n")
    );
}

#[test]
fn unknown_ids_and_bad_signals() {
    let f = need!(Fixture::new());
    let e = one_line_error(&f.oci(&["kill", "nosuch", "TERM"]));
    assert!(e.contains("does not exist"), "{e}");
    let o = f.oci(&["state", "nosuch"]);
    assert!(!o.status.success());
    assert_eq!(
        support::stdout(&o),
        "",
        "no state on stdout for a missing container"
    );
    let e = one_line_error(&f.oci(&["state", "../x"]));
    assert!(e.contains("container ID"), "{e}");
    let e = one_line_error(&f.oci(&["kill", "nosuch", "NOSIG"]));
    assert!(e.contains("signal"), "{e}");
}

#[test]
fn two_users_never_see_each_others_containers() {
    let f = need!(Fixture::new());
    let other = need!(need_user(NOSUB_USER));
    f.write_config(&f.config(&["sleep", "60"]));
    let b = f.bundle();
    let o = f.create(&["--bundle", b.to_str().unwrap(), "shared-id"]);
    assert!(o.status.success(), "{}", support::stderr(&o));
    let o = other
        .command(support::warren_bin())
        .args(["oci", "state", "shared-id"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(support::stderr(&o).contains("does not exist"));
    let o = other
        .command(support::warren_bin())
        .args(["oci", "delete", "--force", "shared-id"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert_eq!(f.status("shared-id").as_deref(), Some("created"));
    assert!(f.oci(&["delete", "--force", "shared-id"]).status.success());
    assert!(!f.state_dir("shared-id").exists());
}

#[test]
fn hostile_configs_are_refused_in_one_line_leaving_nothing() {
    let f = need!(Fixture::new());
    // A symlink in the rootfs that points out of it, used as a mount destination.
    let esc = f.bundle().join("rootfs/escape");
    std::os::unix::fs::symlink("/../../../../tmp", &esc).unwrap();
    let _ = std::process::Command::new("chown")
        .arg("-h")
        .arg(format!("{}:{}", f.user.uid, f.user.gid))
        .arg(&esc)
        .status();
    let marker_dir = f.env.path().join("bindsrc");
    std::fs::create_dir(&marker_dir).unwrap();
    f.env.give(&marker_dir);
    let base = f.config(&["true"]);
    let mut cases: Vec<(Vec<u8>, &str)> = Vec::new();
    let mut push = |m: &dyn Fn(&mut Value), want: &'static str| {
        let mut v = base.clone();
        m(&mut v);
        cases.push((serde_json::to_vec(&v).unwrap(), want));
    };
    push(
        &|v| {
            v["process"].as_object_mut().unwrap().remove("cwd");
        },
        "cwd",
    );
    push(&|v| v["process"]["args"] = json!("sh"), "invalid type");
    push(
        &|v| v["process"]["user"]["uid"] = json!("root"),
        "invalid type",
    );
    push(
        &|v| {
            v["mounts"].as_array_mut().unwrap().push(
        json!({"destination": "/a/../../etc", "type": "bind", "source": "/tmp", "options": ["rbind"]}))
        },
        "'..'",
    );
    push(
        &|v| {
            v["linux"]["namespaces"]
                .as_array_mut()
                .unwrap()
                .push(json!({"type": "pid", "path": "/proc/1/ns/pid"}))
        },
        "joining an existing pid namespace",
    );
    push(
        &|v| v["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 0, "size": 1}]),
        "Mappings",
    );
    cases.push((b"{\"ociVersion\": \"1.0.2\",".to_vec(), "config.json"));
    let mut big = serde_json::to_vec(&base).unwrap();
    big.pop();
    big.extend_from_slice(b",\"annotations\":{\"x\":\"");
    big.extend(std::iter::repeat_n(b'x', 10 << 20));
    big.extend_from_slice(b"\"}}");
    cases.push((big, "larger than"));
    for (bytes, want) in &cases {
        let p = f.bundle().join("config.json");
        std::fs::write(&p, bytes).unwrap();
        f.env.give(&p);
        let e = one_line_error(&f.run_bundle("bad1"));
        assert!(e.contains(want), "{e:?} lacks {want:?}");
        assert!(!f.state_dir("bad1").exists());
    }
    // The maps case needs both maps to reach the range check.
    let mut v = base.clone();
    v["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 0, "size": 1}]);
    v["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 0, "size": 1}]);
    f.write_config(&v);
    let e = one_line_error(&f.run_bundle("bad2"));
    assert!(e.contains("subordinate ranges"), "{e}");
    // A bind whose destination is a symlink out of the root lands inside the root.
    let mut v = base.clone();
    v["process"]["args"] = json!(["sh", "-c", "ls /escape/"]);
    v["mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"destination": "/escape/m",
        "type": "bind", "source": marker_dir.to_str().unwrap(), "options": ["rbind", "ro"]}));
    f.write_config(&v);
    let o = f.run_bundle("esc1");
    assert!(o.status.success(), "{}", support::stderr(&o));
    // /escape resolves inside the root (to the root's /tmp): the mount is there.
    assert_eq!(support::stdout(&o), "m\n");
    assert!(
        !Path::new("/tmp/m").exists(),
        "the mount point escaped the root"
    );
    assert!(!f.state_dir("esc1").exists());
}

#[test]
fn hooks_run_in_order_with_the_state_and_a_failing_prestart_aborts() {
    let f = need!(Fixture::new());
    let log = f.env.path().join("hooks.log");
    std::fs::write(&log, "").unwrap();
    f.env.give(&log);
    let hook = |name: &str| {
        json!({"path": "/bin/sh", "args": ["sh", "-c",
            format!("read -r s; echo \"{name} $s\" >> {}", log.display())]})
    };
    let mut v = f.config(&["sh", "-c", "exit 0"]);
    v["hooks"] = json!({
        "prestart": [hook("prestart")],
        "createRuntime": [hook("createRuntime")],
        "poststart": [hook("poststart")],
        "poststop": [hook("poststop")],
    });
    f.write_config(&v);
    let o = f.run_bundle("hook1");
    assert!(o.status.success(), "{}", support::stderr(&o));
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let names: Vec<&str> = lines.iter().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(
        names,
        ["prestart", "createRuntime", "poststart", "poststop"],
        "{text}"
    );
    for l in &lines {
        let state: Value = serde_json::from_str(l.split_once(' ').unwrap().1).unwrap();
        assert_eq!(state["id"], "hook1");
        assert_eq!(state["bundle"], f.bundle().to_str().unwrap());
    }
    let first: Value = serde_json::from_str(lines[0].split_once(' ').unwrap().1).unwrap();
    assert_eq!(first["status"], "created");
    assert!(first["pid"].as_i64().unwrap() > 0);

    // A failing prestart hook: not started, one line, nothing left.
    let marker = f.env.path().join("ran");
    v["process"]["args"] = json!(["sh", "-c", "echo > /ran"]);
    v["hooks"] = json!({"prestart": [{"path": "/bin/sh", "args": ["sh", "-c", "exit 4"]}]});
    f.write_config(&v);
    let e = one_line_error(&f.run_bundle("hook2"));
    assert!(e.contains("hook prestart[0]"), "{e}");
    assert!(!marker.exists());
    assert!(!f.state_dir("hook2").exists());
    let b = f.bundle();
    let o = f.create(&["--bundle", b.to_str().unwrap(), "hook3"]);
    assert!(!o.status.success());
    assert!(support::stderr(&o).contains("hook prestart[0]"));
    assert!(!f.state_dir("hook3").exists());
    wait_for("no processes left", || {
        processes_of(f.user.uid, "hook").is_empty()
    });
}

#[test]
fn a_bundle_naming_a_warren_image() {
    let f = need!(Fixture::new());
    need!(support::registry::need_registry(&["127.0.0.1:5000"]));
    f.env.ok(&["pull", "-q", BUSYBOX_IMAGE]);
    let mut v = f.config(&[
        "sh",
        "-c",
        "ls /bin/busybox && test ! -e /data/a && echo image",
    ]);
    v["root"]["path"] = json!("does-not-matter");
    v["annotations"] = json!({"org.warren.image": BUSYBOX_IMAGE});
    f.write_config(&v);
    let o = f.run_bundle("img1");
    assert!(o.status.success(), "{}", support::stderr(&o));
    assert_eq!(support::stdout(&o), "/bin/busybox\nimage\n");

    // Slurm 23.02's IgnoreFileConfigJson form: the reference itself as the bundle, the
    // command after the ID, the job's environment from Slurm's NUL-separated file.
    let envf = f.env.path().join("env");
    std::fs::write(&envf, b"A=from-file\0PATH=/bin\0").unwrap();
    f.env.give(&envf);
    let o = f.oci(&[
        "run",
        "--bundle",
        BUSYBOX_IMAGE,
        "--env-file",
        envf.to_str().unwrap(),
        "img2",
        "sh",
        "-c",
        "echo $A; id -u; exit 4",
    ]);
    assert_eq!(o.status.code(), Some(4), "{}", support::stderr(&o));
    assert_eq!(support::stdout(&o), "from-file\n0\n");
    let e = one_line_error(&f.oci(&["run", "--bundle", "/nonexistent/dir", "img3"]));
    assert!(e.contains("--bundle /nonexistent/dir"), "{e}");
}

#[test]
fn a_pid_namespace_shows_only_the_containers_processes() {
    let f = need!(Fixture::new());
    // The command is PID 2, the child of the namespace's init (warren's monitor-forked
    // init, PID 1); /proc (mounted by that init) lists only them and this pipeline.
    let mut v = f.config(&["sh", "-c", "echo $$ $PPID; ls -d /proc/[0-9]* | wc -l"]);
    v["linux"]["namespaces"] = json!([{"type": "pid"}, {"type": "uts"}, {"type": "mount"}]);
    f.write_config(&v);
    let o = f.run_bundle("pidns1");
    assert!(o.status.success(), "{}", support::stderr(&o));
    let out = support::stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first(), Some(&"2 1"), "{out:?}");
    let n: usize = lines[1].trim().parse().unwrap();
    // init, sh, ls, wc (wc may not have started when ls reads /proc); the host has more.
    assert!((3..=4).contains(&n), "{n} processes visible: {out:?}");
    assert!(!f.state_dir("pidns1").exists(), "run leaves no state");

    // create → start → kill → delete: every process of the namespace ends with it.
    f.write_config(&{
        let mut v = f.config(&["sh", "-c", "sleep 64 & exec sleep 65"]);
        v["linux"]["namespaces"] = json!([{"type": "pid"}, {"type": "uts"}]);
        v
    });
    let b = f.bundle();
    let o = f.create(&["--bundle", b.to_str().unwrap(), "pidns2"]);
    assert!(o.status.success(), "{}", support::stderr(&o));
    assert!(f.oci(&["start", "pidns2"]).status.success());
    wait_for("both sleeps", || {
        !processes_of(f.user.uid, "sleep 64").is_empty()
            && !processes_of(f.user.uid, "sleep 65").is_empty()
    });
    let o = f.oci(&["kill", "pidns2", "KILL"]);
    assert!(o.status.success(), "{}", support::stderr(&o));
    wait_for("stopped", || {
        f.status("pidns2").as_deref() == Some("stopped")
    });
    // The background sleep is gone with the namespace, before any delete.
    wait_for("no sleep left", || {
        processes_of(f.user.uid, "sleep 64").is_empty()
            && processes_of(f.user.uid, "sleep 65").is_empty()
    });
    assert!(f.oci(&["delete", "pidns2"]).status.success());
    assert!(!f.state_dir("pidns2").exists());
    wait_for("no processes left", || {
        processes_of(f.user.uid, "pidns2").is_empty()
            && processes_of(f.user.uid, "squashfuse").is_empty()
    });
}

#[test]
fn additional_gids_are_the_processes_groups() {
    let f = need!(Fixture::new());
    let mut v = f.config(&["sh", "-c", "id -u; id -g; id -G"]);
    v["process"]["user"] = json!({"uid": 1000, "gid": 1001, "additionalGids": [5, 100]});
    f.write_config(&v);
    let o = f.run_bundle("gids1");
    assert!(o.status.success(), "{}", support::stderr(&o));
    assert_eq!(support::stdout(&o), "1000\n1001\n1001 5 100\n");

    // A group outside the container's gid map: one line naming it, nothing left.
    v["process"]["user"]["additionalGids"] = json!([5, 4000000]);
    f.write_config(&v);
    let e = one_line_error(&f.run_bundle("gids2"));
    assert!(e.contains("additionalGids") && e.contains("4000000"), "{e}");
    assert!(!f.state_dir("gids2").exists());
}

#[test]
fn capabilities_are_the_requested_sets() {
    let f = need!(Fixture::new());
    let caps = |v: &mut Value, sets: Value| v["process"]["capabilities"] = sets;
    // Root inside: bounding, effective and permitted as asked (the kernel's root rule
    // gives root its bounding set at exec; no_new_privs keeps it within permitted).
    let mut v = f.config(&["sh", "-c", "grep ^Cap /proc/self/status"]);
    let two = json!(["CAP_CHOWN", "CAP_NET_BIND_SERVICE"]);
    caps(
        &mut v,
        json!({"bounding": two, "effective": two, "permitted": two}),
    );
    f.write_config(&v);
    let o = f.run_bundle("caps1");
    assert!(o.status.success(), "{}", support::stderr(&o));
    assert_eq!(
        support::stdout(&o),
        "CapInh:\t0000000000000000\nCapPrm:\t0000000000000401\nCapEff:\t0000000000000401\n\
         CapBnd:\t0000000000000401\nCapAmb:\t0000000000000000\n"
    );
    // A non-root user keeps capabilities across exec only as ambient ones.
    let kill = json!(["CAP_KILL"]);
    caps(
        &mut v,
        json!({"bounding": ["CAP_KILL", "CAP_CHOWN"], "effective": kill, "permitted": kill,
               "inheritable": kill, "ambient": kill}),
    );
    v["process"]["user"] = json!({"uid": 1000, "gid": 1001});
    f.write_config(&v);
    let o = f.run_bundle("caps2");
    assert!(o.status.success(), "{}", support::stderr(&o));
    assert_eq!(
        support::stdout(&o),
        "CapInh:\t0000000000000020\nCapPrm:\t0000000000000020\nCapEff:\t0000000000000020\n\
         CapBnd:\t0000000000000021\nCapAmb:\t0000000000000020\n"
    );
    // Without the field: warren's defaults (none for a non-root user).
    v["process"].as_object_mut().unwrap().remove("capabilities");
    f.write_config(&v);
    let o = f.run_bundle("caps3");
    assert!(o.status.success(), "{}", support::stderr(&o));
    assert_eq!(
        support::stdout(&o),
        "CapInh:\t0000000000000000\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\n\
         CapBnd:\t0000000000000000\nCapAmb:\t0000000000000000\n"
    );
    // An unknown name: one line naming it, nothing left.
    caps(&mut v, json!({"bounding": ["CAP_NOPE"]}));
    f.write_config(&v);
    let e = one_line_error(&f.run_bundle("caps4"));
    assert!(e.contains("CAP_NOPE"), "{e}");
    assert!(!f.state_dir("caps4").exists());
}

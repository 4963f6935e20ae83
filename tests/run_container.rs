//! `warren run` as unprivileged users: identity maps, owners, bind mounts, host
//! protection, exit codes, signals, overlay back ends, environment, unshare.

mod run_support;
use run_support::{fixture, ok, stderr};
use std::os::unix::fs::MetadataExt;

#[test]
fn owners_inside_match_the_image() {
    let Some(f) = fixture() else { return };
    for mode in [&[][..], &["--remap-root"][..]] {
        let mut a = mode.to_vec();
        a.extend([
            "stat",
            "-c",
            "%n %u %g",
            "/data48",
            "/data48/f",
            "/u65534",
            "/u1",
            "/bin/busybox",
        ]);
        let out = ok(&f.run(&f.ci, &a));
        assert_eq!(
            out,
            "/data48 48 48\n/data48/f 1001 65534\n/u65534 65534 65534\n/u1 1 1\n/bin/busybox 0 0\n",
            "{mode:?}"
        );
    }
}

#[test]
fn default_map_keeps_the_user_and_remap_root_makes_root() {
    let Some(f) = fixture() else { return };
    let out = ok(&f.run(
        &f.ci,
        &[
            "sh",
            "-c",
            "id -u; id -g; whoami; echo $HOME; cat /proc/self/uid_map",
        ],
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        &lines[..4],
        ["1001", "1001", "warren-ci", "/home/warren-ci"]
    );
    let map: Vec<Vec<&str>> = lines[4..]
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    // The range comes from /etc/subuid: check it matches what the kernel shows.
    let sub = std::fs::read_to_string("/etc/subuid").unwrap();
    let start: u64 = sub
        .lines()
        .find(|l| l.starts_with("warren-ci:"))
        .unwrap()
        .split(':')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(map[0], ["1001", "1001", "1"]);
    assert_eq!(
        map[1],
        ["0".to_string(), start.to_string(), "1001".to_string()]
    );
    assert_eq!(
        map[2],
        [
            "1002".to_string(),
            (start + 1001).to_string(),
            "64535".to_string()
        ]
    );

    let out = ok(&f.run(
        &f.ci,
        &[
            "--remap-root",
            "sh",
            "-c",
            "id -u; whoami; cat /proc/self/uid_map",
        ],
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..2], ["0", "root"]);
    assert_eq!(
        lines[2].split_whitespace().collect::<Vec<_>>(),
        ["0", "1001", "1"]
    );
    assert_eq!(
        lines[3].split_whitespace().collect::<Vec<_>>(),
        ["1", &start.to_string(), "65536"]
    );
}

#[test]
fn bind_mount_writes_belong_to_the_user() {
    let Some(f) = fixture() else { return };
    let d = f.user_dir(&f.ci, "bind-owner");
    let v = format!("{}:/out", d.display());
    ok(&f.run(&f.ci, &["-v", &v, "touch", "/out/keep"]));
    ok(&f.run(&f.ci, &["--remap-root", "-v", &v, "touch", "/out/root"]));
    for n in ["keep", "root"] {
        let md = std::fs::metadata(d.join(n)).unwrap();
        assert_eq!((md.uid(), md.gid()), (f.ci.uid, f.ci.gid), "{n}");
    }
    // Read-only binds are read-only.
    let ro = format!("{}:/out:ro", d.display());
    let o = f.run(&f.ci, &["-v", &ro, "touch", "/out/no"]);
    assert!(!o.status.success());
    assert!(!d.join("no").exists());
}

#[test]
fn container_root_cannot_touch_host_files_the_user_cannot() {
    let Some(f) = fixture() else { return };
    let before = std::fs::read("/etc/passwd").unwrap();
    let secret = f.dir.join("root-only");
    std::fs::write(&secret, "secret").unwrap();
    let sd = format!("{}:/h", f.dir.display());
    let o = f.run(
        &f.ci,
        &[
            "--remap-root",
            "-v",
            "/etc:/hostetc",
            "-v",
            &sd,
            "sh",
            "-c",
            "echo evil >> /hostetc/passwd; r1=$?; echo x > /h/root-only; r2=$?; chmod 666 /h/root-only; r3=$?; rm -f /h/root-only; r4=$?; echo $r1 $r2 $r3 $r4",
        ],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(out.trim(), "1 1 1 1", "{}", stderr(&o));
    assert_eq!(std::fs::read("/etc/passwd").unwrap(), before);
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "secret");
}

#[test]
fn setuid_binary_gains_nothing() {
    let Some(f) = fixture() else { return };
    // The image's setuid-root busybox: no_new_privs and nosuid leave every ID alone.
    let out = ok(&f.run(
        &f.ci,
        &[
            "/busybox-suid",
            "sh",
            "-c",
            "grep -E '^(Uid|Gid|CapEff|NoNewPrivs)' /proc/self/status",
        ],
    ));
    assert!(out.contains("Uid:\t1001\t1001\t1001\t1001"), "{out}");
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    // And as container root, a host root-only file stays unreadable.
    std::fs::write(f.dir.join("root-only-read"), "s").unwrap();
    std::fs::set_permissions(
        f.dir.join("root-only-read"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let sd = format!("{}:/h", f.dir.display());
    let o = f.run(
        &f.ci,
        &[
            "--remap-root",
            "-v",
            &sd,
            "/busybox-suid",
            "cat",
            "/h/root-only-read",
        ],
    );
    assert!(!o.status.success());
}

#[test]
fn exit_codes() {
    let Some(f) = fixture() else { return };
    assert_eq!(f.run(&f.ci, &["sh", "-c", "exit 7"]).status.code(), Some(7));
    assert_eq!(
        f.run(&f.ci, &["sh", "-c", "kill -TERM $$"]).status.code(),
        Some(143)
    );
    let o = f.run(&f.ci, &["no-such-command"]);
    assert_eq!(o.status.code(), Some(127));
    assert!(stderr(&o).contains("no-such-command"), "{}", stderr(&o));
    let o = f.run(&f.ci, &["/etc/passwd"]);
    assert_eq!(o.status.code(), Some(126), "{}", stderr(&o));
}

#[test]
fn signals_are_forwarded() {
    let Some(f) = fixture() else { return };
    for (sig, name, code) in [
        (libc::SIGTERM, "TERM", 42),
        (libc::SIGUSR1, "USR1", 43),
        (libc::SIGHUP, "HUP", 44),
    ] {
        let script =
            format!("trap 'echo got-{name}; exit {code}' {name}; echo ready; sleep 20 & wait");
        let mut child = f
            .cmd(&f.ci, &f.run_args(&["sh", "-c", &script]))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let mut buf = [0u8; 6];
        std::io::Read::read_exact(&mut out, &mut buf).unwrap();
        assert_eq!(&buf, b"ready\n");
        // SAFETY: signalling our own child (warren itself, via setpriv's exec).
        unsafe { libc::kill(child.id() as i32, sig) };
        let st = child.wait().unwrap();
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
        assert_eq!(st.code(), Some(code), "{name}: {rest}");
        assert_eq!(rest.trim(), format!("got-{name}"));
    }
}

#[test]
fn both_overlay_back_ends_work() {
    let Some(f) = fixture() else { return };
    for (b, fstype) in [("native", "overlay"), ("fuse", "fuse.fuse-overlayfs")] {
        let out = ok(&f.run(
            &f.ci,
            &["--overlay", b, "--remap-root", "sh", "-c", "echo new > /newfile && chown 48:48 /newfile && stat -c '%u %g' /newfile && cat /newfile && grep ' / / ' /proc/self/mountinfo"],
        ));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(&lines[..2], ["48 48", "new"], "{b}");
        assert!(
            lines[2].contains(&format!(" - {fstype} ")),
            "{b}: {}",
            lines[2]
        );
    }
    // As the (non-root) user too: reading and writing where allowed.
    for b in ["native", "fuse"] {
        let out = ok(&f.run(
            &f.ci,
            &[
                "--overlay",
                b,
                "sh",
                "-c",
                "cat /data48/f; echo x > /tmp/x && cat /tmp/x; id -un",
            ],
        ));
        assert_eq!(out, "hi\nx\nwarren-ci\n", "{b}");
    }
}

#[test]
fn read_only_root() {
    let Some(f) = fixture() else { return };
    let o = f.run(
        &f.ci,
        &["--read-only", "--remap-root", "sh", "-c", "touch /x"],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("Read-only file system"),
        "{}",
        stderr(&o)
    );
    // The image has no /proc, /dev, /sys, /home: a read-only skeleton overlay provides
    // the mount points (kernel overlay back end), so the standard mounts are all there.
    let out = ok(&f.run(
        &f.ci,
        &["--read-only", "--overlay", "native", "sh", "-c", "test -e /proc/self/status && test -c /dev/null && test -d /sys/kernel && id -un && test -d $HOME && echo ok"],
    ));
    assert_eq!(out, "warren-ci\nok\n");
}

#[test]
fn unshare_deletes_files_a_container_created_as_uid_1() {
    let Some(f) = fixture() else { return };
    let d = f.user_dir(&f.ci, "unshare");
    let v = format!("{}:/out", d.display());
    ok(&f.run(
        &f.ci,
        &[
            "--remap-root",
            "-v",
            &v,
            "sh",
            "-c",
            "mkdir /out/d && touch /out/d/f && chown -R 1:1 /out/d",
        ],
    ));
    let md = std::fs::metadata(d.join("d/f")).unwrap();
    assert_ne!(md.uid(), f.ci.uid, "owned by a subordinate ID on the host");
    // The user cannot delete it directly …
    let st = run_support::host_cmd(&f.ci, &["rm", "-rf", d.join("d").to_str().unwrap()])
        .status()
        .unwrap();
    assert!(!st.success() && d.join("d/f").exists());
    // … but can with warren unshare.
    let o = f
        .cmd(
            &f.ci,
            &["unshare", "rm", "-rf", d.join("d").to_str().unwrap()],
        )
        .output()
        .unwrap();
    ok(&o);
    assert!(!d.join("d").exists());
}

#[test]
fn no_range_falls_back_to_a_single_id() {
    let Some(f) = fixture() else { return };
    let o = f.run(&f.nosub, &["sh", "-c", "id -u; stat -c %u /data48; cat /proc/self/uid_map; touch /tmp/t; chown 0 /tmp/t; echo chown=$?"]);
    let out = ok(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1002");
    assert_eq!(lines[1], "65534", "other owners show as nobody");
    assert_eq!(
        lines[2].split_whitespace().collect::<Vec<_>>(),
        ["1002", "1002", "1"]
    );
    assert_eq!(lines[3], "chown=1");
    assert!(
        stderr(&o).contains("no subordinate ID range"),
        "{}",
        stderr(&o)
    );
    // Fake chown: chown and setuid calls succeed without effect.
    let out = ok(&f.run(
        &f.nosub,
        &[
            "--fake-chown",
            "sh",
            "-c",
            "touch /tmp/t; chown 0:0 /tmp/t; echo chown=$?; stat -c %u /tmp/t",
        ],
    ));
    assert_eq!(out, "chown=0\n1002\n");
}

#[test]
fn gid_mismatch_is_explained() {
    let Some(f) = fixture() else { return };
    let o = f
        .cmd_gid(&f.ci, 100, &f.run_args(&["id", "-u"]))
        .output()
        .unwrap();
    assert_eq!(ok(&o).trim(), "1001");
    assert!(
        stderr(&o).contains("differs from your passwd GID 1001"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn environment_workdir_entrypoint() {
    let Some(f) = fixture() else { return };
    let envf = f.dir.join("envfile");
    std::fs::write(&envf, "# comment\nFROMFILE=file\nOVER=file\n").unwrap();
    let o = f
        .cmd(
            &f.ci,
            &f.run_args(&[
                "--env-file",
                envf.to_str().unwrap(),
                "-e",
                "OVER=cli",
                "-e",
                "PASSED",
                "-w",
                "/work",
                "sh",
                "-c",
                "echo $IMGVAR $SLURM_JOB_ID ${SECRET:-none} $FROMFILE $OVER $PASSED; pwd",
            ]),
        )
        .env("SLURM_JOB_ID", "77")
        .env("SECRET", "leak")
        .env("PASSED", "p")
        .output()
        .unwrap();
    assert_eq!(ok(&o), "img 77 none file cli p\n/work\n");
    let out = ok(&f.run(&f.ci, &["--entrypoint", "/bin/echo", "a", "b"]));
    assert_eq!(out, "a b\n");
}

#[test]
fn bad_input_is_one_clear_line() {
    let Some(f) = fixture() else { return };
    for (args, want) in [
        (
            vec!["-v", "relative:/x", "true"],
            "source must be an absolute path",
        ),
        (
            vec!["-v", "/nonexistent-src:/x", "true"],
            "/nonexistent-src",
        ),
        (vec!["-v", "/tmp:/a/../b", "true"], "'..'"),
        (vec!["--name", "bad/name", "true"], "name"),
    ] {
        let o = f.run(&f.ci, &args);
        assert_eq!(o.status.code(), Some(125), "{args:?}");
        let e = stderr(&o);
        assert_eq!(e.lines().count(), 1, "{e}");
        assert!(e.contains(want), "{args:?}: {e}");
    }
}

#[test]
fn image_symlinks_are_not_followed_onto_the_host() {
    let Some(f) = fixture() else { return };
    // The image has /escape -> ../../../…/FIXTURE/escaped; a mount point below it must be
    // created inside the container's root, never under the host's FIXTURE.
    let d = f.user_dir(&f.ci, "escape-src");
    std::fs::create_dir_all(f.dir.join("escaped")).unwrap();
    std::os::unix::fs::chown(f.dir.join("escaped"), Some(f.ci.uid), Some(f.ci.gid)).unwrap();
    let v = format!("{}:/escape/m", d.display());
    let o = f.run(&f.ci, &["--remap-root", "-v", &v, "true"]);
    ok(&o);
    assert!(
        !f.dir.join("escaped/m").exists(),
        "mount point created on the host"
    );
}

#[test]
fn a_host_terminal_passes_through() {
    let Some(f) = fixture() else { return };
    // script(1) gives warren a pseudo-terminal as stdin/stdout.
    let inner = format!(
        "{} run -t --squashfs {} --image-config {} sh -c 'tty; echo $TERM'",
        f.bin.display(),
        f.sqfs.display(),
        f.config.display()
    );
    let o = run_support::host_cmd(&f.ci, &["script", "-qec", &inner, "/dev/null"])
        .env_clear()
        .env("HOME", &f.ci.home)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("TERM", "vt100")
        .env("WARREN_CONFIG", "/dev/null")
        .env("XDG_CACHE_HOME", f.dir.join(format!("cache-{}", f.ci.uid)))
        .output()
        .unwrap();
    let out = ok(&o);
    assert!(out.contains("/dev/pts/"), "{out}");
    assert!(out.contains("vt100"), "{out}");
    // Without a terminal, -t is refused in one line.
    let o = f.run(&f.ci, &["-t", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("not a terminal"), "{}", stderr(&o));
}

#[test]
fn writable_dir_keeps_the_layer_across_runs() {
    let Some(f) = fixture() else { return };
    let d = f.user_dir(&f.ci, "wdir");
    let wd = d.join("layer");
    let w = wd.to_str().unwrap();
    // Container root writes to /; later runs (as the user) see it.
    ok(&f.run(
        &f.ci,
        &[
            "--writable-dir",
            w,
            "--remap-root",
            "sh",
            "-c",
            "echo kept > /kept",
        ],
    ));
    assert!(
        wd.join("upper/kept").exists(),
        "the layer is in the directory"
    );
    for _ in 0..2 {
        let out = ok(&f.run(
            &f.ci,
            &[
                "--writable-dir",
                w,
                "sh",
                "-c",
                "cat /kept; whoami; grep -c '^warren-ci:' /etc/passwd",
            ],
        ));
        assert_eq!(
            out, "kept\nwarren-ci\n1\n",
            "kept; the entry not duplicated"
        );
    }
    // Removing the layer's files (some owned by subordinate IDs) needs the namespace.
    ok(&f.cmd(&f.ci, &["unshare", "rm", "-rf", w]).output().unwrap());
}

#[test]
fn passwd_entry_with_and_without_a_writable_layer() {
    let Some(f) = fixture() else { return };
    // Fresh layer (written into the upper layer before the overlay), read-only root
    // (bound copies), and the fuse back end: the same entry, the image's owner and mode.
    // (The read-only root binds copies owned by the user: checked for content only.)
    for mode in [&[][..], &["--overlay", "fuse"][..], &["--read-only"][..]] {
        let mut a = mode.to_vec();
        a.extend([
            "sh",
            "-c",
            "grep '^warren-ci:' /etc/passwd; grep '^warren-ci:' /etc/group; stat -c '%u %g %a' /etc/passwd /etc/group /etc; grep -c '^root:' /etc/passwd",
        ]);
        let out = ok(&f.run(&f.ci, &a));
        let want = format!(
            "warren-ci:x:1001:1001::{}:/bin/sh\nwarren-ci:x:1001:\n0 0 644\n0 0 644\n0 0 755\n1\n",
            f.ci.home.display()
        );
        if mode == ["--read-only"] {
            let l: Vec<&str> = out.lines().collect();
            let w: Vec<&str> = want.lines().collect();
            assert_eq!((l[0], l[1], l[5]), (w[0], w[1], w[5]), "{out}");
        } else {
            assert_eq!(out, want, "{mode:?}");
        }
    }
}

/// `warren run` as warren-ci with a private config file holding `toml`.
fn run_with_config(
    f: &run_support::Fixture,
    name: &str,
    toml: &str,
    args: &[&str],
) -> std::process::Output {
    let cfg = f.dir.join(format!("{name}.toml"));
    std::fs::write(&cfg, toml).unwrap();
    // An image of its own: a shared mount of the common image that another test started
    // would serve this run without the helper under test.
    let own = f.dir.join(format!("{name}.sqfs"));
    if !own.exists() {
        std::fs::copy(&f.sqfs, &own).unwrap();
    }
    f.cmd(&f.ci, &f.run_args_on(&own, args))
        .env("WARREN_CONFIG", &cfg)
        .output()
        .unwrap()
}

/// One line on stderr, exit 125, containing `want`.
fn one_line_125(o: &std::process::Output, want: &str) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(125), "{e}");
    assert!(e.contains(want), "{e}");
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
}

#[test]
fn a_newuidmap_that_writes_nothing_is_named() {
    let Some(f) = fixture() else { return };
    let o = run_with_config(
        f,
        "true-newuidmap",
        "[run]\nnewuidmap = \"/bin/true\"\n",
        &["true"],
    );
    one_line_125(
        &o,
        "newuidmap (/bin/true) exited 0 but did not write the uid map of pid ",
    );
    assert!(stderr(&o).contains("setuid root"), "{}", stderr(&o));
}

#[test]
fn a_squashfuse_that_dies_is_named() {
    let Some(f) = fixture() else { return };
    for (prog, how) in [
        ("/bin/false", "exited with status 1 before answering"),
        ("/nonexistent/squashfuse_ll", "not found"),
    ] {
        let o = run_with_config(
            f,
            "false-squashfuse",
            &format!("[run]\nimage_server = \"squashfuse\"\nsquashfuse = \"{prog}\"\n"),
            &["true"],
        );
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(125), "{e}");
        assert!(e.contains(prog), "{e}");
        assert!(e.contains(how), "{e}");
        assert!(
            !e.contains("Transport endpoint") || e.contains("squashfuse ("),
            "{e}"
        );
    }
    let o = run_with_config(
        f,
        "false-squashfuse",
        "[run]\nimage_server = \"squashfuse\"\nsquashfuse = \"/bin/false\"\n",
        &["true"],
    );
    one_line_125(
        &o,
        "squashfuse (/bin/false) exited with status 1 before answering",
    );
}

#[test]
fn a_fuse_overlayfs_that_dies_is_named() {
    let Some(f) = fixture() else { return };
    let o = run_with_config(
        f,
        "false-fuse-overlayfs",
        "[run]\nfuse_overlayfs = \"/bin/false\"\noverlay = \"fuse\"\n",
        &["true"],
    );
    one_line_125(
        &o,
        "fuse-overlayfs (/bin/false) exited with status 1 before answering",
    );
}

#[test]
fn dev_fuse_without_access_is_named() {
    let Some(f) = fixture() else { return };
    // A private mount namespace where /dev/fuse is a 0600 node (as on a fresh machine):
    // the host's stays as it is for the other tests.
    let node = f.dir.join("fuse-0600");
    // An image of its own: no other test's shared mount of it runs (joining one needs no
    // /dev/fuse). Then the private mount (--no-shared-mount) of the common image.
    let own = f.dir.join("img-devfuse.sqfs");
    std::fs::copy(&f.sqfs, &own).unwrap();
    for inner in [
        f.cmd(&f.ci, &f.run_args_on(&own, &["true"])),
        f.cmd(&f.ci, &f.run_args(&["--no-shared-mount", "true"])),
    ] {
        dev_fuse_0600(&node, inner);
    }
}

fn dev_fuse_0600(node: &std::path::Path, inner: std::process::Command) {
    let mut c = std::process::Command::new("unshare");
    c.args(["-m", "--propagation", "private", "sh", "-ec"])
        .arg("mknod \"$1\" c 10 229; chmod 0600 \"$1\"; mount --bind \"$1\" /dev/fuse; shift; exec \"$@\"")
        .arg("sh")
        .arg(node)
        .arg(inner.get_program())
        .args(inner.get_args())
        .env_clear()
        .envs(inner.get_envs().filter_map(|(k, v)| Some((k, v?))));
    let o = c.output().unwrap();
    let _ = std::fs::remove_file(node);
    one_line_125(
        &o,
        "/dev/fuse: permission denied (mode 0600): an admin must make it 0666",
    );
    assert!(stderr(&o).contains("warren doctor"), "{}", stderr(&o));
}

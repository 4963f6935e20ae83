//! Every standard mount, in the full mode (warren-ci, a subuid range) and the single-ID
//! mode (warren-nosub, no range; and warren-ci after `sg`, the GID-mismatch fallback),
//! on an image without any mount point (`bare_sqfs`: no /proc, /sys, /dev, /tmp, /home,
//! /etc/hosts, /etc/resolv.conf, /etc/hostname; /etc owned by root), with the kernel
//! overlay, fuse-overlayfs and a read-only root of each: the same container in every
//! mode, minus the other owners.

mod run_support;
use run_support::{fixture, ok, stderr, Fixture, User};
use std::os::unix::fs::MetadataExt;

/// The host file's content, or "MISSING" (then the container has none either).
fn host_file(name: &str) -> String {
    std::fs::read_to_string(format!("/etc/{name}")).unwrap_or_else(|_| "MISSING\n".into())
}

const SCRIPT: &str = r#"
echo "user=$(whoami) $(id -u):$(id -g)"
grep -c "^$(whoami):x:$(id -u):$(id -g):" /etc/passwd
echo "home=$HOME"; test -d "$HOME" && test -w "$HOME" && echo home-writable
for f in hosts resolv.conf hostname; do echo "== $f"; cat /etc/$f 2>/dev/null || echo MISSING; done
echo ==
touch /tmp/t && echo tmp-ok
test -c /dev/null && echo x > /dev/null && test -c /dev/urandom && test -d /dev/pts && echo dev-ok
test -e /proc/self/status && test -d /sys/kernel && echo proc-sys-ok
echo deep > /deep/new/path/written && echo deep-ok
test -f /usr/lib/linked/dir/written && echo under-a-symlink-ok
cat /a/new/file.txt
test -d "$HOME" && test -w "$HOME" && echo home-bind-ok
grep ' / / ' /proc/self/mountinfo | cut -d' ' -f6
stat -c '%u:%g %a' /etc
/busybox-suid grep '^Uid:' /proc/self/status
"#;

fn check_mode(f: &Fixture, user: &User, gid: u32, mode: &[&str]) {
    let dir = f.user_dir(
        user,
        &format!("single-{}-{gid}-{}", user.uid, mode.join("")),
    );
    // A directory the user owns keeps the written file; a file to bind at a new path.
    let file = dir.join("file.txt");
    std::fs::write(&file, "bound file\n").unwrap();
    let deep = dir.join("deep");
    std::fs::create_dir(&deep).unwrap();
    std::os::unix::fs::chown(&deep, Some(user.uid), Some(user.gid)).unwrap();
    let v_deep = format!("{}:/deep/new/path", deep.display());
    // Under the image's /lib -> usr/lib: made where the link leads.
    let v_link = format!("{}:/lib/linked/dir", deep.display());
    let v_file = format!("{}:/a/new/file.txt:ro", file.display());
    let home = user.home.to_str().unwrap();
    let v_home = format!("{home}:{home}");
    let mut args: Vec<&str> = mode.to_vec();
    args.extend([
        "-v", &v_deep, "-v", &v_link, "-v", &v_file, "-v", &v_home, "sh", "-c", SCRIPT,
    ]);
    let o = f
        .cmd_gid(user, gid, &f.run_args_on(&f.bare_sqfs, &args))
        .output()
        .unwrap();
    let what = format!("{} gid {gid} {mode:?}", user.name);
    let out = ok(&o);
    let err = stderr(&o);
    assert!(!err.contains("no mount point"), "{what}: {err}");
    let expected = format!(
        "user={name} {uid}:{gid}\n1\nhome={home}\nhome-writable\n== hosts\n{}== resolv.conf\n{}== hostname\n{}==\ntmp-ok\ndev-ok\nproc-sys-ok\ndeep-ok\nunder-a-symlink-ok\nbound file\nhome-bind-ok\n",
        host_file("hosts"),
        host_file("resolv.conf"),
        host_file("hostname"),
        name = user.name,
        uid = user.uid,
    );
    let lines: Vec<&str> = out.lines().collect();
    let n = expected.lines().count();
    assert_eq!(lines[..n].join("\n") + "\n", expected, "{what}");
    // The root: nosuid and nodev in every mode; the setuid-root copy gains nothing.
    let opts: Vec<&str> = lines[n].split(',').collect();
    assert!(
        opts.contains(&"nosuid") && opts.contains(&"nodev"),
        "{what}: / has {}",
        lines[n]
    );
    if mode.contains(&"--read-only") {
        assert!(opts.contains(&"ro"), "{what}: / has {}", lines[n]);
    }
    // /etc got skeleton entries (hosts…): it shows the image's mode, and its owner (root)
    // when mapped; in the single-ID mode root is not, and the directory is the user's.
    let single = user.uid == f.nosub.uid || gid != user.gid;
    let etc_owner = if single {
        format!("{}:{gid}", user.uid)
    } else {
        "0:0".to_string()
    };
    assert_eq!(lines[n + 1], format!("{etc_owner} 755"), "{what}");
    let uid = user.uid;
    assert_eq!(
        lines[n + 2],
        format!("Uid:\t{uid}\t{uid}\t{uid}\t{uid}"),
        "{what}"
    );
    let md = std::fs::metadata(deep.join("written")).unwrap();
    assert_eq!(md.uid(), user.uid, "{what}: the written file is the user's");
    std::fs::remove_dir_all(&dir).unwrap();
}

const MODES: [&[&str]; 4] = [
    &["--overlay", "native"],
    &["--overlay", "fuse"],
    &["--read-only", "--overlay", "native"],
    &["--read-only", "--overlay", "fuse"],
];

#[test]
fn full_range_gets_every_standard_mount_on_a_bare_image() {
    let Some(f) = fixture() else { return };
    for mode in MODES {
        check_mode(f, &f.ci, f.ci.gid, mode);
    }
}

#[test]
fn no_range_gets_every_standard_mount_on_a_bare_image() {
    let Some(f) = fixture() else { return };
    for mode in MODES {
        check_mode(f, &f.nosub, f.nosub.gid, mode);
    }
}

#[test]
fn gid_mismatch_fallback_gets_every_standard_mount() {
    let Some(f) = fixture() else { return };
    // As after `sg`: current GID 100 (users), not the passwd GID: newgidmap would refuse,
    // warren falls back to the single-ID mode.
    check_mode(f, &f.ci, 100, &["--overlay", "native"]);
    check_mode(f, &f.ci, 100, &["--read-only", "--overlay", "fuse"]);
}

#[test]
fn single_id_image_files_stay_nobody_and_new_mount_points_are_usable() {
    let Some(f) = fixture() else { return };
    // The image's files belong to an unmapped owner (nobody inside); the skeleton's new
    // directories (here /home) are the user's, so a directory can be made in them.
    let o = f
        .cmd(
            &f.nosub,
            &f.run_args_on(
                &f.bare_sqfs,
                &[
                    "sh",
                    "-c",
                    "stat -c %u /bin/busybox; mkdir -p /home/x/y && echo home-mkdir-ok",
                ],
            ),
        )
        .output()
        .unwrap();
    assert_eq!(ok(&o), "65534\nhome-mkdir-ok\n");
}

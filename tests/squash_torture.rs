//! The torture image (scripts/test-images.sh, `torture_layout`): pull it and check every
//! path of the resulting squashfs (type, mode, owner, link target, content, xattrs)
//! against what the three layers imply. Runs warren as the unprivileged test user when
//! started as root: owners 0, 48, 1001, 200000, 3000000 must come out without root.

mod support;
use std::collections::BTreeMap;
use support::registry::{need_registry, PLAIN};
use support::*;

/// (path, kind, mode, uid, gid, link target or content)
type Want = (&'static str, char, u32, u64, u64, &'static str);

fn expected() -> Vec<Want> {
    let long = "usr/share/a-rather-long-directory-name/a-rather-long-directory-name/a-rather-long-directory-name/a-rather-long-directory-name/a-rather-long-directory-name/file-with-a-long-name.txt";
    let long_link: &'static str = Box::leak(format!("/{long}").into_boxed_str());
    let mut v: Vec<Want> = vec![
        (".", 'd', 0o755, 0, 0, ""),
        ("abs-sym", 'l', 0o777, 0, 0, "/etc/passwd"),
        ("apache", 'd', 0o750, 48, 48, ""),
        ("big-owner", 'f', 0o644, 200000, 200001, "big\n"),
        ("bin", 'd', 0o755, 0, 0, ""),
        ("bin/sgid", 'f', 0o2755, 0, 48, "sgid\n"),
        ("bin/suid", 'f', 0o4755, 0, 0, "suid\n"),
        ("bin/tool", 'f', 0o755, 0, 0, "#!/bin/sh\necho tool\n"),
        ("cap", 'f', 0o755, 0, 0, "capable\n"),
        ("dangling", 'l', 0o777, 0, 0, "/nonexistent/x"),
        // dev/null (char 1:3) is dropped by rule; the directory stays.
        ("dev", 'd', 0o755, 0, 0, ""),
        ("dir-meta", 'd', 0o750, 1001, 1001, ""),
        ("dir-meta/keep", 'f', 0o644, 0, 0, "keep\n"),
        ("etc", 'd', 0o755, 0, 0, ""),
        (
            "etc/passwd",
            'f',
            0o644,
            0,
            0,
            "root:x:0:0::/root:/bin/sh\n",
        ),
        ("fifo", 'p', 0o620, 0, 0, ""),
        ("hl", 'd', 0o755, 0, 0, ""),
        ("hl/a", 'f', 0o644, 0, 0, "shared\n"),
        ("hl/b", 'h', 0o644, 0, 0, "hl/a"),
        ("hl/early", 'f', 0o640, 7, 0, "late target\n"),
        ("hl/zlate", 'h', 0o640, 7, 0, "hl/early"),
        ("home", 'd', 0o755, 0, 0, ""),
        ("home/u1001", 'd', 0o700, 1001, 1001, ""),
        ("home/u1001/f", 'f', 0o600, 1001, 1001, "mine\n"),
        ("huge-owner", 'f', 0o644, 3000000, 3000001, "huge\n"),
        ("link-sym", 'l', 0o777, 0, 0, "bin/tool"),
        ("long-link", 'l', 0o777, 0, 0, long_link),
        ("lower-target", 'f', 0o644, 0, 0, "version 2\n"),
        ("opq", 'd', 0o755, 0, 0, ""),
        ("opq/new", 'f', 0o644, 0, 0, "new\n"),
        ("replace", 'd', 0o755, 0, 0, ""),
        ("replace/d2f", 'f', 0o644, 0, 0, "now a file\n"),
        ("replace/f2d", 'd', 0o700, 0, 0, ""),
        ("replace/f2d/in", 'f', 0o644, 0, 0, "in\n"),
        ("replace/f2s", 'l', 0o777, 0, 0, "/etc/passwd"),
        ("replace/s2f", 'f', 0o644, 0, 0, "now a file\n"),
        ("ro", 'd', 0o555, 0, 0, ""),
        ("ro/file", 'f', 0o444, 0, 0, "read only\n"),
        ("secret", 'f', 0o000, 0, 0, "no one reads me\n"),
        ("tmp", 'd', 0o1777, 0, 0, ""),
        ("wh", 'd', 0o755, 0, 0, ""),
        ("wh/stay", 'f', 0o644, 0, 0, "stay\n"),
        // Linked to lower-target in layer 2; layer 3 replaced lower-target.
        ("xl-link", 'f', 0o644, 0, 0, "version 1\n"),
        (long, 'f', 0o644, 0, 0, "long path\n"),
    ];
    // Implicit parents of the long path: created 0755 root, mtime 0.
    let mut p = String::from("usr");
    v.push(("usr", 'd', 0o755, 0, 0, ""));
    for c in long.split('/').skip(1) {
        if c.ends_with(".txt") {
            break;
        }
        p = format!("{p}/{c}");
        v.push((Box::leak(p.clone().into_boxed_str()), 'd', 0o755, 0, 0, ""));
    }
    v
}

fn check(got: &BTreeMap<String, Ent>) {
    let want = expected();
    let want_paths: Vec<&str> = {
        let mut w: Vec<&str> = want.iter().map(|w| w.0).collect();
        w.sort();
        w
    };
    let got_paths: Vec<&str> = got.keys().map(String::as_str).collect();
    assert_eq!(got_paths, want_paths, "set of paths");
    for (path, kind, mode, uid, gid, s) in want {
        let e = &got[path];
        assert_eq!(e.kind, kind, "{path}: kind");
        assert_eq!(e.mode, mode, "{path}: mode {:o} want {mode:o}", e.mode);
        assert_eq!((e.uid, e.gid), (uid, gid), "{path}: owner");
        match kind {
            'l' | 'h' => assert_eq!(e.link, s, "{path}: link target"),
            'f' => assert_eq!(String::from_utf8_lossy(&e.data), s, "{path}: content"),
            _ => {}
        }
    }
    let cap = &got["cap"].xattrs;
    assert_eq!(
        cap.get("security.capability").map(Vec::as_slice),
        Some(&[1u8, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0][..]),
        "security.capability kept byte for byte"
    );
    assert_eq!(
        cap.get("user.bin").map(Vec::as_slice),
        Some(&[0u8, 255, 1, 254][..])
    );
    assert_eq!(got["etc/passwd"].mtime, 1_700_000_000, "mtime kept");
    assert_eq!(got["usr"].mtime, 0, "implicit directory mtime");
}

#[test]
fn torture_from_oci_layout() {
    let env = Env::new();
    let spec = need!(env.torture());
    let digest = env.ok(&["pull", "-q", &spec]);
    let got = read_sqfs(&env.sqfs(&digest));
    check(&got);
    // The squashfs belongs to whoever pulled, and is readable by all.
    let meta = std::fs::metadata(env.sqfs(&digest)).unwrap();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert_eq!(meta.permissions().mode() & 0o777, 0o644);
    if let Some(u) = env.user() {
        assert_eq!(meta.uid(), u.uid, "pulled without root");
    }
}

/// Unmounts on drop, so a failed assertion leaves no mount behind.
struct Mount(std::path::PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("fusermount")
            .arg("-u")
            .arg(&self.0)
            .status();
    }
}

/// What the runtime will see: mount the squashfs with squashfuse as the pulling user
/// and stat through the kernel.
#[test]
fn torture_through_squashfuse() {
    need!(need_programs(&["squashfuse_ll", "fusermount"]));
    let env = Env::new();
    let spec = need!(env.torture());
    let digest = env.ok(&["pull", "-q", &spec]);
    let mnt = env.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    env.give(&mnt);
    // Run squashfuse as the same user as warren.
    let as_user =
        |prog: &str, args: &[&std::ffi::OsStr]| env.as_user(prog).args(args).output().unwrap();
    let img = env.sqfs(&digest);
    // squashfuse_ll, as the runtime uses: it exposes the squashfs inode numbers.
    let o = as_user("squashfuse_ll", &[img.as_os_str(), mnt.as_os_str()]);
    if !o.status.success() {
        skip!("squashfuse cannot mount here: {}", stderr(&o));
    }
    let _m = Mount(mnt.clone());
    // Only the mounting user may enter a FUSE mount (no allow_other): stat as that user.
    let run = |prog: &str, args: &[&str]| {
        let args: Vec<std::ffi::OsString> =
            args.iter().map(|a| mnt.join(a).into_os_string()).collect();
        let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        let o = as_user(prog, &refs);
        assert!(o.status.success(), "{prog}: {}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let st = |p: &str| {
        let o = as_user(
            "stat",
            &[
                "-c".as_ref(),
                "%u %g %a %i %h %F".as_ref(),
                mnt.join(p).as_os_str(),
            ],
        );
        assert!(o.status.success(), "stat {p}: {}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let field = |p: &str, i: usize| st(p).split(' ').nth(i).unwrap().to_string();
    assert_eq!(
        st("big-owner"),
        format!("200000 200001 644 {} 1 regular file", field("big-owner", 3))
    );
    assert_eq!(field("huge-owner", 0), "3000000");
    assert_eq!(field("apache", 0), "48");
    assert_eq!(field("bin/suid", 2), "4755");
    assert_eq!(field("bin/sgid", 2), "2755");
    assert_eq!(field("secret", 2), "0");
    assert_eq!(field("ro", 2), "555");
    assert!(st("fifo").ends_with("fifo"), "{}", st("fifo"));
    assert_eq!(
        field("hl/a", 3),
        field("hl/b", 3),
        "hard link shares the inode"
    );
    assert_eq!(field("hl/a", 4), "2");
    assert_eq!(run("readlink", &["abs-sym"]), "/etc/passwd");
    assert_eq!(run("cat", &["xl-link"]), "version 1");
    if have("getfattr") {
        let o = as_user(
            "getfattr",
            &[
                "--absolute-names".as_ref(),
                "-n".as_ref(),
                "security.capability".as_ref(),
                "-e".as_ref(),
                "hex".as_ref(),
                mnt.join("cap").as_os_str(),
            ],
        );
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.contains("0x0100000200040000"), "{out} {}", stderr(&o));
    }
}

#[test]
fn torture_from_registry() {
    need!(need_registry(&[PLAIN]));
    let o = std::process::Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/test-images.sh"
        ))
        .arg("torture")
        .output()
        .unwrap();
    if !o.status.success() {
        skip!("test-images.sh torture failed: {}", stderr(&o));
    }
    let env = Env::new();
    let o = env.run(&["pull", "-q", "127.0.0.1:5000/test/torture:latest"]);
    assert!(o.status.success(), "pull: {}", stderr(&o));
    let digest = String::from_utf8_lossy(&o.stdout).into_owned();
    check(&read_sqfs(&env.sqfs(&digest)));
}

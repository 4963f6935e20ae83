//! Extended attributes through warren's own image server: an image made by mksquashfs
//! from a tree with `user.*` attributes (one value shared by two files, which
//! mksquashfs stores once and references out of line, one on a directory) and a file
//! capability (`security.capability`, set with setcap). Read back by the library
//! (`sqfs::Image::xattrs`) and, as the unprivileged test user, inside a container by a
//! static `llistxattr`/`lgetxattr` program: the same names and bytes as on the host.
//! `run.squashfuse = /bin/false` proves warren's server served them (before, such images
//! went to squashfuse_ll).

mod run_support;
use proptest::prelude::*;
use run_support::{fixture, ok, skip_note, Fixture};
use std::path::{Path, PathBuf};
use std::process::Command;
use warren::runtime::sqfs::Image;

/// Lists every attribute of each argument: `PATH NAME=HEX`, one per line.
const DUMP_C: &str = r#"
#include <stdio.h>
#include <string.h>
#include <sys/xattr.h>
int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        char names[4096];
        ssize_t n = llistxattr(argv[i], names, sizeof names);
        if (n < 0) { perror(argv[i]); return 1; }
        for (char *p = names; p < names + n; p += strlen(p) + 1) {
            unsigned char v[4096];
            ssize_t m = lgetxattr(argv[i], p, v, sizeof v);
            if (m < 0) { perror(p); return 1; }
            printf("%s %s=", argv[i], p);
            for (ssize_t k = 0; k < m; k++) printf("%02x", v[k]);
            printf("\n");
        }
    }
    return 0;
}
"#;

fn sh(script: &str) -> bool {
    Command::new("sh")
        .args(["-ec", script])
        .status()
        .is_ok_and(|s| s.success())
}

/// The image and its source tree, built once, or why not (no static C toolchain, no
/// setcap/setfattr).
fn image(f: &Fixture) -> Result<&'static (PathBuf, PathBuf), String> {
    static I: std::sync::OnceLock<Result<(PathBuf, PathBuf), String>> = std::sync::OnceLock::new();
    I.get_or_init(|| build(f)).as_ref().map_err(Clone::clone)
}

fn build(f: &Fixture) -> Result<(PathBuf, PathBuf), String> {
    let d = f.dir.join("xattrs");
    let _ = std::fs::remove_dir_all(&d);
    let r = d.join("root");
    std::fs::create_dir_all(r.join("bin")).unwrap();
    std::fs::create_dir_all(r.join("xd")).unwrap();
    std::fs::write(d.join("dump.c"), DUMP_C).unwrap();
    let bb = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .ok_or("no busybox")?;
    let big = "x".repeat(300);
    let script = format!(
        "cd {d}; cc -static -O -o root/bin/dump dump.c
         cp {bb} root/bin/busybox; ln -s busybox root/bin/sh
         echo cap > root/cap; echo a > root/big1; echo b > root/big2; echo plain > root/plain
         setcap cap_net_raw+p root/cap; setfattr -n user.a -v one root/cap
         setfattr -n user.big -v {big} root/big1; setfattr -n user.big -v {big} root/big2
         setfattr -n user.dir -v d root/xd
         mksquashfs root img.sqfs -comp zstd -noappend -quiet -no-progress >/dev/null
         chmod 644 img.sqfs; chmod -R a+rX {d}",
        d = d.display()
    );
    if !sh(&script) {
        return Err("cc -static, setcap or setfattr failed (libc6-dev, libcap2-bin, attr)".into());
    }
    Ok((d.join("img.sqfs"), r))
}

/// What the host says of `paths` under `root`, in the dump's format (`getfattr`).
fn host_view(root: &Path, paths: &[&str]) -> String {
    let mut out = String::new();
    for p in paths {
        let o = Command::new("getfattr")
            .args(["--absolute-names", "-h", "-d", "-m", "-", "-e", "hex"])
            .arg(root.join(p.trim_start_matches('/')))
            .output()
            .unwrap();
        for l in String::from_utf8_lossy(&o.stdout).lines() {
            if let Some((n, v)) = l.split_once('=') {
                out += &format!("{p} {n}={}\n", v.trim_start_matches("0x"));
            }
        }
    }
    out
}

#[test]
fn extended_attributes_are_served_as_the_tree_had_them() {
    let Some(f) = fixture() else { return };
    let (img, root) = match image(f) {
        Ok(x) => x,
        Err(e) => return skip_note(&e),
    };
    let paths = ["/cap", "/big1", "/big2", "/xd", "/plain"];
    let want = host_view(root, &paths);
    assert!(
        want.contains("/cap security.capability=") && want.contains("/big2 user.big=7878"),
        "{want}"
    );
    // The library.
    let i = Image::open_file(std::fs::File::open(img).unwrap()).unwrap();
    let mut got = String::new();
    for p in paths {
        let dir = i.inode(i.root()).unwrap();
        let e = i
            .lookup(i.root(), &dir, p.trim_start_matches('/').as_bytes())
            .unwrap()
            .unwrap();
        let mut attrs = i.xattrs(&i.inode(e.inode).unwrap()).unwrap();
        attrs.sort();
        for (n, v) in attrs {
            got += &format!("{p} {}={}\n", String::from_utf8_lossy(&n), hex::encode(v));
        }
    }
    let sorted = |s: &str| {
        let mut l: Vec<&str> = s.lines().collect();
        l.sort();
        l.join("\n")
    };
    assert_eq!(sorted(&got), sorted(&want));
    // In a container, as the test user, through warren's server (squashfuse would fail).
    let mut args = f.run_args_on(img, &["/bin/dump"]);
    args.extend(paths);
    let out = ok(&f
        .cmd(&f.ci, &args)
        .env("WARREN_RUN_SQUASHFUSE", "/bin/false")
        .output()
        .unwrap());
    assert_eq!(sorted(&out), sorted(&want));
}

/// Every inode's attributes of an image (bytes in memory), or the first error.
fn all_xattrs(bytes: Vec<u8>) -> Result<usize, String> {
    let len = bytes.len() as u64;
    let i = Image::open(Box::new(bytes), len).map_err(|e| e.to_string())?;
    let root = i.inode(i.root()).map_err(|e| e.to_string())?;
    let mut n = i.xattrs(&root).map_err(|e| e.to_string())?.len();
    for e in i
        .read_dir(i.root(), &root)
        .map_err(|e| e.to_string())?
        .iter()
    {
        let ino = i.inode(e.inode).map_err(|e| e.to_string())?;
        n += i.xattrs(&ino).map_err(|e| e.to_string())?.len();
    }
    Ok(n)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Corrupted attribute tables (any byte of the image's tail, where mksquashfs puts
    /// the xattr and ID tables) give errors or other values, never a panic.
    #[test]
    fn corrupted_attribute_tables_never_panic(at in 0usize..4096, byte in any::<u8>()) {
        let Some(f) = fixture() else { return Ok(()) };
        let (img, _) = match image(f) {
            Ok(x) => x,
            Err(e) => { skip_note(&e); return Ok(()) }
        };
        let mut bytes = std::fs::read(img).unwrap();
        // The intact image has attributes to find.
        prop_assert_eq!(all_xattrs(bytes.clone()), Ok(5));
        let k = bytes.len().saturating_sub(1 + at % bytes.len().max(1));
        bytes[k] = byte;
        let _ = all_xattrs(bytes);
    }
}

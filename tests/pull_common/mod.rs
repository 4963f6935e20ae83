//! Shared helpers for the pull/squash/store integration tests: a private store and
//! config per test, running the real `warren` binary (as the unprivileged test user
//! when we are root), building OCI layouts from raw tar bytes, and reading a squashfs
//! back with `sqfs2tar`.
#![allow(dead_code)]

use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const TEST_USER: &str = "warren-ci";

/// Print why a test does not run, and return from it.
#[macro_export]
macro_rules! skip {
    ($($t:tt)*) => {{
        eprintln!("SKIP {}: {}", module_path!(), format!($($t)*));
        return;
    }};
}

pub fn have(prog: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {prog} >/dev/null")])
        .status()
        .is_ok_and(|s| s.success())
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The uid/gid of the test user, if it exists.
pub fn test_user() -> Option<(u32, u32)> {
    let u = nix::unistd::User::from_name(TEST_USER).ok()??;
    Some((u.uid.as_raw(), u.gid.as_raw()))
}

pub fn registry_up() -> bool {
    Command::new("curl")
        .args([
            "-fsS",
            "-o",
            "/dev/null",
            "--max-time",
            "2",
            "http://127.0.0.1:5000/v2/",
        ])
        .status()
        .is_ok_and(|s| s.success())
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A scratch directory for one test with its own store and config. Removed on drop.
/// When run as root with the test user present, everything belongs to that user and
/// `warren` runs as that user (the rootless path).
pub struct Env {
    pub dir: tempfile::TempDir,
    pub user: Option<(u32, u32)>,
}

impl Env {
    pub fn new() -> Env {
        Env::with_config("")
    }

    /// `extra` is appended to the generated config (after `[store] path = …`).
    pub fn with_config(extra: &str) -> Env {
        let dir = tempfile::Builder::new()
            .prefix("warren-pulltest-")
            .tempdir_in("/var/tmp")
            .expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let user = if is_root() { test_user() } else { None };
        let env = Env { dir, user };
        env.give(env.path());
        env.write_config(extra);
        env
    }

    pub fn write_config(&self, extra: &str) {
        let cfg = format!("[store]\npath = \"{}\"\n{extra}\n", self.store().display());
        std::fs::write(self.path().join("warren.toml"), cfg).unwrap();
        self.give(&self.path().join("warren.toml"));
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn store(&self) -> PathBuf {
        self.path().join("store")
    }

    /// Hand `p` to the test user (when we run warren as that user).
    pub fn give(&self, p: &Path) {
        if let Some((u, g)) = self.user {
            let _ = Command::new("chown")
                .arg("-R")
                .arg(format!("{u}:{g}"))
                .arg(p)
                .status();
        }
    }

    /// A command running `warren ARGS` with this test's config.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let bin = env!("CARGO_BIN_EXE_warren");
        // setpriv execs (runuser forks), so the pid we get is warren's own: kill -9 hits it.
        let mut c = match self.user {
            Some((u, g)) => {
                let mut c = Command::new("setpriv");
                c.args([
                    &format!("--reuid={u}"),
                    &format!("--regid={g}"),
                    "--clear-groups",
                    "--",
                    bin,
                ]);
                c
            }
            None => Command::new(bin),
        };
        c.args(args)
            .env("WARREN_CONFIG", self.path().join("warren.toml"))
            .env("HOME", self.path())
            .env_remove("XDG_DATA_HOME")
            .env_remove("XDG_CONFIG_HOME")
            .current_dir(self.path());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run warren")
    }

    /// Run and require success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "warren {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&o.stderr),
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// The squashfs of image `digest` (`sha256:…`) in this store.
    pub fn sqfs(&self, digest: &str) -> PathBuf {
        self.store()
            .join("images")
            .join(digest.trim().trim_start_matches("sha256:"))
            .join("image.sqfs")
    }
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Build the torture layout with scripts/test-images.sh into `dir`.
pub fn torture_layout(dir: &Path) -> Result<(), String> {
    for p in ["/usr/bin/python3", "zstd", "tar2sqfs", "sqfs2tar"] {
        if !have(p) {
            return Err(format!("{p} not installed"));
        }
    }
    let o = Command::new("bash")
        .arg(repo_root().join("scripts/test-images.sh"))
        .args(["layout", "torture"])
        .arg(dir)
        .output()
        .map_err(|e| e.to_string())?;
    if !o.status.success() {
        return Err(format!("test-images.sh failed: {}", stderr(&o)));
    }
    Ok(())
}

/// One file of a squashfs, as sqfs2tar reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ent {
    /// 'f' file, 'd' dir, 'l' symlink, 'h' hard link, 'p' fifo, 'c'/'b' devices.
    pub kind: char,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    /// Symlink or hard link target.
    pub link: String,
    pub data: Vec<u8>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

/// Every path of squashfs `img` (root as "."), via `sqfs2tar -r .`.
pub fn read_sqfs(img: &Path) -> BTreeMap<String, Ent> {
    let o = Command::new("sqfs2tar")
        .args(["-r", "."])
        .arg(img)
        .output()
        .expect("run sqfs2tar");
    assert!(o.status.success(), "sqfs2tar: {}", stderr(&o));
    let mut ar = tar::Archive::new(&o.stdout[..]);
    let mut out = BTreeMap::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let path = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let path = path
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        let path = if path.is_empty() || path == "." {
            ".".to_string()
        } else {
            path
        };
        let h = e.header().clone();
        let mut xattrs = BTreeMap::new();
        let mut uid = h.uid().unwrap();
        let mut gid = h.gid().unwrap();
        if let Ok(Some(exts)) = e.pax_extensions() {
            for x in exts.flatten() {
                let k = String::from_utf8_lossy(x.key_bytes()).into_owned();
                if let Some(n) = k.strip_prefix("SCHILY.xattr.") {
                    xattrs.insert(n.to_string(), x.value_bytes().to_vec());
                } else if k == "uid" {
                    uid = x.value().unwrap().parse().unwrap();
                } else if k == "gid" {
                    gid = x.value().unwrap().parse().unwrap();
                }
            }
        }
        let kind = match h.entry_type() {
            tar::EntryType::Regular => 'f',
            tar::EntryType::Directory => 'd',
            tar::EntryType::Symlink => 'l',
            tar::EntryType::Link => 'h',
            tar::EntryType::Fifo => 'p',
            tar::EntryType::Char => 'c',
            tar::EntryType::Block => 'b',
            other => panic!("unexpected entry type {other:?}"),
        };
        let link = e
            .link_name_bytes()
            .map(|l| {
                String::from_utf8_lossy(&l)
                    .trim_start_matches("./")
                    .to_string()
            })
            .unwrap_or_default();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.insert(
            path,
            Ent {
                kind,
                mode: h.mode().unwrap() & 0o7777,
                uid,
                gid,
                mtime: h.mtime().unwrap(),
                link,
                data,
                xattrs,
            },
        );
    }
    out
}

pub fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Write blob `b` into layout `dir`; returns its digest.
fn blob(dir: &Path, b: &[u8]) -> String {
    let h = sha256_hex(b);
    std::fs::write(dir.join("blobs/sha256").join(&h), b).unwrap();
    format!("sha256:{h}")
}

/// An OCI layout at `dir` with one image tagged `latest` made of `layers` (plain tar
/// bytes, stored uncompressed).
pub fn write_layout(dir: &Path, layers: &[Vec<u8>]) {
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    let mut descs = Vec::new();
    let mut diffs = Vec::new();
    for l in layers {
        let d = blob(dir, l);
        diffs.push(d.clone());
        descs.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": d, "size": l.len()
        }));
    }
    let cfg = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": diffs}
    }))
    .unwrap();
    let cd = blob(dir, &cfg);
    let man = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cfg.len()},
        "layers": descs
    }))
    .unwrap();
    let md = blob(dir, &man);
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
              "digest": md, "size": man.len(),
              "annotations": {"org.opencontainers.image.ref.name": "latest"}}]
        }))
        .unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// A raw tar writer that accepts any path (the `tar` crate refuses `..`, which is the
/// point of hostile tests).
#[derive(Default)]
pub struct RawTar {
    pub buf: Vec<u8>,
}

impl RawTar {
    fn header(&mut self, path: &str, typ: tar::EntryType, mode: u32, size: u64, link: &str) {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(typ);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        let p = path.as_bytes();
        if p.len() > 100 {
            // PAX path record for long names.
            let rec_body = format!(" path={path}\n");
            let mut n = rec_body.len() + 1;
            while n != rec_body.len() + n.to_string().len() {
                n = rec_body.len() + n.to_string().len();
            }
            let rec = format!("{n}{rec_body}");
            let mut ph = tar::Header::new_ustar();
            ph.set_entry_type(tar::EntryType::XHeader);
            ph.set_size(rec.len() as u64);
            ph.set_mode(0o644);
            ph.as_old_mut().name[..9].copy_from_slice(b"PaxHeader");
            ph.set_cksum();
            self.buf.extend_from_slice(ph.as_bytes());
            self.buf.extend_from_slice(rec.as_bytes());
            self.pad(rec.len() as u64);
        } else {
            h.as_old_mut().name[..p.len()].copy_from_slice(p);
        }
        let l = link.as_bytes();
        h.as_old_mut().linkname[..l.len()].copy_from_slice(l);
        h.set_cksum();
        self.buf.extend_from_slice(h.as_bytes());
    }
    fn pad(&mut self, n: u64) {
        let pad = (512 - (n % 512) as usize) % 512;
        self.buf.extend(std::iter::repeat_n(0u8, pad));
    }
    pub fn file(mut self, path: &str, data: &[u8]) -> Self {
        self.header(path, tar::EntryType::Regular, 0o644, data.len() as u64, "");
        self.buf.extend_from_slice(data);
        self.pad(data.len() as u64);
        self
    }
    pub fn dir(mut self, path: &str) -> Self {
        self.header(path, tar::EntryType::Directory, 0o755, 0, "");
        self
    }
    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        self.header(path, tar::EntryType::Symlink, 0o777, 0, target);
        self
    }
    pub fn hardlink(mut self, path: &str, target: &str) -> Self {
        self.header(path, tar::EntryType::Link, 0o644, 0, target);
        self
    }
    pub fn done(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&[0u8; 1024]);
        self.buf
    }
}

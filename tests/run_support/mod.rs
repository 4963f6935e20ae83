//! Shared fixture for the `warren run` integration tests: a squashfs built here from
//! busybox-static with owners 0, 1, 48, 1001 and 65534 and a setuid copy of busybox, an
//! OCI config, and helpers that run the binary as the unprivileged test users with
//! setpriv (no intermediate process: the PID we get is warren's).
//!
//! Tests skip (print why, pass) unless: root, users warren-ci (with a subuid range) and
//! warren-nosub exist, and busybox-static, mksquashfs, squashfuse_ll, fuse-overlayfs,
//! newuidmap and setpriv are installed (scripts/setup-host.sh provides all of them).
#![allow(dead_code)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

pub struct User {
    pub name: &'static str,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

pub struct Fixture {
    pub dir: PathBuf,
    pub bin: PathBuf,
    pub sqfs: PathBuf,
    /// A busybox image without any mount point: no /proc, /sys, /dev, /tmp, /home,
    /// /etc/hosts, /etc/resolv.conf, /etc/hostname (its /etc, owned by root, has only
    /// passwd and group), with a setuid-root busybox copy at /busybox-suid and a symlink
    /// `/lib -> usr/lib`.
    pub bare_sqfs: PathBuf,
    pub config: PathBuf,
    pub ci: User,
    pub nosub: User,
}

fn user(name: &'static str) -> Option<User> {
    let out = Command::new("getent")
        .args(["passwd", name])
        .output()
        .ok()?;
    let line = String::from_utf8(out.stdout).ok()?;
    let f: Vec<&str> = line.trim().split(':').collect();
    if f.len() < 7 {
        return None;
    }
    Some(User {
        name,
        uid: f[2].parse().ok()?,
        gid: f[3].parse().ok()?,
        home: PathBuf::from(f[5]),
    })
}

fn have(prog: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {prog}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn sh(cmd: &str) {
    let st = Command::new("sh").args(["-ec", cmd]).status().unwrap();
    assert!(st.success(), "{cmd}");
}

/// Say why a test is skipped; under `WARREN_TEST_NO_SKIP` (CI, where every
/// prerequisite is installed) a skip is a failure instead.
pub fn skip_note(why: &str) {
    if std::env::var_os("WARREN_TEST_NO_SKIP").is_some() {
        panic!("would skip under WARREN_TEST_NO_SKIP: {why}");
    }
    eprintln!("SKIP: {why}");
}

/// The fixture, or None (with the reason printed) when prerequisites are missing.
pub fn fixture() -> Option<&'static Fixture> {
    static F: OnceLock<Result<Fixture, String>> = OnceLock::new();
    match F.get_or_init(build) {
        Ok(f) => Some(f),
        Err(why) => {
            skip_note(why);
            None
        }
    }
}

static FIXTURE_DIR: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn remove_fixture_dir() {
    if let Some(d) = FIXTURE_DIR.get() {
        let _ = std::fs::remove_dir_all(d);
    }
}

fn build() -> Result<Fixture, String> {
    // SAFETY: getuid cannot fail.
    if unsafe { libc::getuid() } != 0 {
        return Err("not root (tests run the binary as unprivileged users)".into());
    }
    for p in [
        "mksquashfs",
        "squashfuse_ll",
        "fuse-overlayfs",
        "newuidmap",
        "setpriv",
    ] {
        if !have(p) {
            return Err(format!("{p} not installed (scripts/setup-host.sh)"));
        }
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or("busybox not installed")?;
    let ci = user("warren-ci").ok_or("user warren-ci missing (scripts/setup-host.sh)")?;
    let nosub = user("warren-nosub").ok_or("user warren-nosub missing (scripts/setup-host.sh)")?;
    if !std::fs::read_to_string("/etc/subuid")
        .unwrap_or_default()
        .contains("warren-ci:")
    {
        return Err("warren-ci has no /etc/subuid range".into());
    }
    let meta = std::fs::metadata("/dev/fuse").map_err(|e| format!("/dev/fuse: {e}"))?;
    if meta.mode() & 0o006 != 0o006 {
        return Err("/dev/fuse is not 0666".into());
    }
    let dir = PathBuf::from(format!("/var/tmp/warren-run-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // Removed when the test process exits (the harness calls exit(3): atexit runs).
    FIXTURE_DIR.set(dir.clone()).ok();
    // SAFETY: registering a plain extern "C" function without arguments.
    unsafe { libc::atexit(remove_fixture_dir) };
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    // A runtime dir per user and test process: records, staging and caches of other
    // warren runs on the machine (another test suite, a benchmark) are not ours to count.
    for u in [&ci, &nosub] {
        // The runtime dir, and the cache (prefetch lists, docs/run.md): the fixture's.
        for d in [format!("rt-{}", u.uid), format!("cache-{}", u.uid)] {
            let d = dir.join(d);
            std::fs::create_dir(&d).unwrap();
            std::os::unix::fs::chown(&d, Some(u.uid), Some(u.gid)).unwrap();
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
    }
    // A private copy of the binary: the shared target dir may be rebuilt meanwhile.
    let bin = dir.join("warren");
    std::fs::copy(env!("CARGO_BIN_EXE_warren"), &bin).unwrap();
    let root = dir.join("rootfs");
    let applets = "sh id ls cat touch chown chmod rm sleep stat mount grep kill echo test true false env whoami mkdir wc head pwd trap printf readlink cut tr";
    sh(&format!(
        "R={r}; mkdir -p $R/bin $R/etc $R/tmp $R/root $R/data48 $R/u65534 $R/u1 $R/work
         cp {bb} $R/bin/busybox; for a in {applets}; do ln -sf busybox $R/bin/$a; done
         printf 'root:x:0:0:root:/root:/bin/sh\\napache:x:48:48::/:/bin/false\\nnobody:x:65534:65534:nobody:/:/bin/false\\n' > $R/etc/passwd
         printf 'root:x:0:\\ntty:x:5:\\napache:x:48:\\nnogroup:x:65534:\\n' > $R/etc/group
         echo hi > $R/data48/f; chown 48:48 $R/data48; chown 1001:65534 $R/data48/f
         chown 65534:65534 $R/u65534; chown 1:1 $R/u1; chmod 1777 $R/tmp
         cp {bb} $R/busybox-suid; chown 0:0 $R/busybox-suid; chmod 4755 $R/busybox-suid
         ln -s ../../../../../../{d}/escaped $R/escape
         mksquashfs $R {d}/img.sqfs -comp zstd -noappend -quiet -no-progress >/dev/null
         cp {d}/img.sqfs {d}/img2.sqfs
         chmod 644 {d}/img.sqfs {d}/img2.sqfs",
        r = root.display(),
        bb = busybox.display(),
        d = dir.display(),
    ));
    std::fs::remove_dir_all(&root).unwrap();
    sh(&format!(
        "R={r}; mkdir -p $R/bin $R/etc $R/usr/lib; ln -s usr/lib $R/lib
         cp {bb} $R/bin/busybox; for a in {applets}; do ln -sf busybox $R/bin/$a; done
         printf 'root:x:0:0:root:/root:/bin/sh\\n' > $R/etc/passwd
         printf 'root:x:0:\\n' > $R/etc/group
         cp {bb} $R/busybox-suid; chmod 4755 $R/busybox-suid
         chown -R 0:0 $R; chmod 755 $R $R/etc
         mksquashfs $R {d}/bare.sqfs -comp zstd -noappend -quiet -no-progress >/dev/null
         chmod 644 {d}/bare.sqfs",
        r = root.display(),
        bb = busybox.display(),
        d = dir.display(),
    ));
    std::fs::remove_dir_all(&root).unwrap();
    let config = dir.join("config.json");
    std::fs::write(
        &config,
        r#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/sbin:/usr/bin:/sbin:/bin","IMGVAR=img"],"Cmd":["/bin/sh"],"WorkingDir":"/"}}"#,
    )
    .unwrap();
    Ok(Fixture {
        sqfs: dir.join("img.sqfs"),
        bare_sqfs: dir.join("bare.sqfs"),
        config,
        dir,
        bin,
        ci,
        nosub,
    })
}

impl Fixture {
    /// `warren ARGS` as `user` (setpriv, so the child is warren itself).
    pub fn cmd(&self, user: &User, args: &[&str]) -> Command {
        self.cmd_gid(user, user.gid, args)
    }

    /// As [`cmd`] with another current GID (the newgidmap GID-mismatch case).
    pub fn cmd_gid(&self, user: &User, gid: u32, args: &[&str]) -> Command {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={}", user.uid))
            .arg(format!("--regid={gid}"))
            .arg("--clear-groups")
            .arg("--")
            .arg(&self.bin)
            .args(args)
            .env_clear()
            .env("HOME", &user.home)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("XDG_RUNTIME_DIR", format!("/run/user/{}", user.uid))
            .env("WARREN_CONFIG", "/dev/null")
            .env("WARREN_RUN_RUNTIME_DIR", self.rundir(user))
            .env(
                "XDG_CACHE_HOME",
                self.dir.join(format!("cache-{}", user.uid)),
            )
            // Shared image mounts (the default) end with their last container, so that
            // a run leaves nothing once it returned; tests of the idle time set it.
            .env("WARREN_RUN_SHARED_MOUNT_IDLE", "0")
            .current_dir("/");
        c
    }

    /// `warren run --squashfs IMG --image-config CFG ARGS…` (ARGS: options, then command).
    pub fn run_args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec![
            "run",
            "--squashfs",
            self.sqfs.to_str().unwrap(),
            "--image-config",
            self.config.to_str().unwrap(),
        ];
        v.extend_from_slice(args);
        v
    }

    /// As [`run_args`] with another squashfs (e.g. `bare_sqfs`).
    pub fn run_args_on<'a>(&'a self, sqfs: &'a Path, args: &[&'a str]) -> Vec<&'a str> {
        let mut v = self.run_args(&[]);
        v[2] = sqfs.to_str().unwrap();
        v.extend_from_slice(args);
        v
    }

    /// Run and collect output.
    pub fn run(&self, user: &User, args: &[&str]) -> Output {
        self.cmd(user, &self.run_args(args)).output().unwrap()
    }

    /// A fresh directory owned by `user`, under the fixture dir.
    pub fn user_dir(&self, user: &User, name: &str) -> PathBuf {
        let d = self.dir.join(name);
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::os::unix::fs::chown(&d, Some(user.uid), Some(user.gid)).unwrap();
        d
    }

    /// The user's runtime dir for warren (`run.runtime_dir`, private to this fixture).
    pub fn rundir(&self, user: &User) -> PathBuf {
        self.dir.join(format!("rt-{}", user.uid))
    }

    /// True when process `pid` belongs to this fixture: a `warren` running the fixture's
    /// binary, or a process whose command line names the fixture dir (its FUSE daemons).
    /// Other processes (the container's own) are judged by name by the caller.
    pub fn owns_process(&self, pid: &str) -> bool {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let dir = self.dir.to_string_lossy();
        exe.as_deref() == Some(self.bin.as_path())
            || String::from_utf8_lossy(&cmdline).contains(dir.as_ref())
    }
}

/// A host command as `user` (no warren).
pub fn host_cmd(user: &User, argv: &[&str]) -> Command {
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={}", user.uid))
        .arg(format!("--regid={}", user.gid))
        .arg("--clear-groups")
        .arg("--")
        .args(argv)
        .current_dir("/");
    c
}

/// stdout as a String; panics with stderr on a non-zero exit.
pub fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Processes of `uid` that are not zombies (PID 1 on the test VM does not reap), as
/// "pid comm" strings.
pub fn live_processes(uid: u32) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(md) = std::fs::metadata(e.path()) else {
            continue;
        };
        if md.uid() != uid {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let state = stat
            .rsplit_once(") ")
            .map(|(_, r)| r.chars().next().unwrap_or('?'));
        if state == Some('Z') {
            continue;
        }
        let comm = stat
            .split_once(" (")
            .and_then(|(_, r)| r.rsplit_once(')'))
            .map(|(c, _)| c.to_string());
        out.push(format!("{pid} {}", comm.unwrap_or_default()));
    }
    out
}

/// Mount lines mentioning warren, squashfuse or fuse-overlayfs in a fresh process's view.
pub fn leftover_mounts() -> Vec<String> {
    let out = Command::new("cat")
        .arg("/proc/self/mountinfo")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| {
            l.contains("warren") || l.contains("squashfuse") || l.contains("fuse-overlayfs")
        })
        .map(String::from)
        .collect()
}

/// Entries left in the runtime dir's per-container directories.
pub fn leftover_state(rundir: &Path) -> Vec<String> {
    let mut v = Vec::new();
    for sub in ["ctr", "mnt"] {
        if let Ok(rd) = std::fs::read_dir(rundir.join(sub)) {
            for e in rd.flatten() {
                v.push(e.path().display().to_string());
            }
        }
    }
    v
}

/// The loopback test registry (scripts/registry.sh) and the images the store tests run.
pub const REGISTRY: &str = "127.0.0.1:5000";

/// Why `test/NAME:latest` cannot be pulled from the test registry, or None when it can:
/// a HEAD of its manifest over plain HTTP (the registry answers 404 for OCI manifests
/// unless Accept lists them).
pub fn registry_lacks(name: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = match std::net::TcpStream::connect(REGISTRY) {
        Ok(s) => s,
        Err(e) => {
            return Some(format!(
                "registry {REGISTRY} is down ({e}): scripts/registry.sh start"
            ))
        }
    };
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(10)));
    let req = format!(
        "HEAD /v2/test/{name}/manifests/latest HTTP/1.1\r\nHost: {REGISTRY}\r\nAccept: application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json\r\nConnection: close\r\n\r\n"
    );
    let mut resp = String::new();
    if s.write_all(req.as_bytes()).is_err() || s.read_to_string(&mut resp).is_err() {
        return Some(format!("registry {REGISTRY} does not answer"));
    }
    if resp.starts_with("HTTP/1.1 200") || resp.starts_with("HTTP/1.0 200") {
        None
    } else {
        Some(format!(
            "{REGISTRY}/test/{name}:latest is not in the registry: scripts/test-images.sh {name}"
        ))
    }
}

/// A private image store for `user` under the fixture dir; `warren` runs against it
/// through `WARREN_STORE_PATH` (the config file stays absent).
pub struct Store {
    pub path: PathBuf,
}

impl Fixture {
    /// A fresh, empty store owned by `user`.
    pub fn store(&self, user: &User, name: &str) -> Store {
        Store {
            path: self.user_dir(user, name),
        }
    }

    /// `warren ARGS` as `user` with `store` as its store.
    pub fn store_cmd(&self, user: &User, store: &Store, args: &[&str]) -> Command {
        let mut c = self.cmd(user, args);
        c.env("WARREN_STORE_PATH", &store.path);
        c
    }

    /// `warren run ARGS` as `user` with `store`, output collected.
    pub fn store_run(&self, user: &User, store: &Store, args: &[&str]) -> Output {
        let mut a = vec!["run"];
        a.extend_from_slice(args);
        self.store_cmd(user, store, &a).output().unwrap()
    }
}

/// `REGISTRY/test/NAME:latest`.
pub fn image_ref(name: &str) -> String {
    format!("{REGISTRY}/test/{name}:latest")
}

//! The OCI runtime tests' fixture (tests/oci_runtime.rs, tests/oci_slurm.rs): a bundle
//! built from the host's static busybox whose rootfs is owned by the test user and by
//! its subordinate IDs, configs like `runc spec --rootless` writes, and checks that
//! nothing is left behind.
#![allow(dead_code)]

use crate::support::{self, need_programs, need_user, Env, User, TEST_USER};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Output;

pub const BUSYBOX_IMAGE: &str = "127.0.0.1:5000/test/busybox:latest";
pub const OS_RELEASE: &str = "PRETTY_NAME=\"warren test bundle\"\nID=warren-bundle\n";

/// A test environment with a bundle directory `DIR/b` (rootfs + config.json).
pub struct Fixture {
    pub env: Env,
    pub user: User,
}

impl Fixture {
    pub fn new() -> Result<Fixture, String> {
        let user = need_user(TEST_USER)?;
        need_programs(&["/bin/busybox", "newuidmap", "squashfuse_ll"])?;
        let env = Env::new();
        let f = Fixture { env, user };
        f.make_rootfs()?;
        f.write_config(&f.config(&["sh", "-c", "true"]));
        Ok(f)
    }

    pub fn bundle(&self) -> PathBuf {
        self.env.path().join("b")
    }

    /// rootfs/ with busybox, an os-release of its own, and files owned by other IDs
    /// (chowned in the user's namespace, so on the host by subordinate IDs).
    pub fn make_rootfs(&self) -> Result<(), String> {
        let r = self.bundle().join("rootfs");
        for d in ["bin", "etc", "data", "tmp", "proc", "sys", "dev"] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", r.join("bin/busybox")).unwrap();
        for a in [
            "sh", "cat", "ls", "id", "stat", "sleep", "echo", "true", "hostname", "env",
        ] {
            std::os::unix::fs::symlink("busybox", r.join("bin").join(a)).unwrap();
        }
        std::fs::write(r.join("etc/os-release"), OS_RELEASE).unwrap();
        std::fs::write(r.join("data/a"), "a").unwrap();
        std::fs::write(r.join("data/n"), "n").unwrap();
        self.env.give(&self.bundle());
        let o = self
            .env
            .cmd(&[
                "unshare",
                "--remap-root",
                "sh",
                "-c",
                "chown 1000:1001 b/rootfs/data/a && chown 65534:65534 b/rootfs/data/n",
            ])
            .output()
            .unwrap();
        if !o.status.success() {
            return Err(format!("warren unshare chown: {}", support::stderr(&o)));
        }
        Ok(())
    }

    /// A config like `runc spec --rootless` writes, minus what warren refuses.
    pub fn config(&self, args: &[&str]) -> Value {
        json!({
            "ociVersion": "1.0.2",
            "process": {"terminal": false, "user": {"uid": 0, "gid": 0}, "args": args,
                        "env": ["PATH=/bin", "A=bundle", "A=job"], "cwd": "/",
                        "noNewPrivileges": true,
                        "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"]},
                        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]},
            "root": {"path": "rootfs", "readonly": false},
            "hostname": "oci-test",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
                {"destination": "/dev/pts", "type": "devpts", "source": "devpts"},
                {"destination": "/dev/shm", "type": "tmpfs", "source": "shm"},
                {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue"},
                {"destination": "/sys", "type": "none", "source": "/sys", "options": ["rbind", "nosuid", "ro"]}
            ],
            "linux": {"namespaces": [{"type": "mount"}, {"type": "uts"}, {"type": "ipc"}, {"type": "user"}],
                      "maskedPaths": ["/proc/kcore"], "readonlyPaths": ["/proc/sys"]}
        })
    }

    pub fn write_config(&self, v: &Value) {
        let p = self.bundle().join("config.json");
        std::fs::write(&p, serde_json::to_vec_pretty(v).unwrap()).unwrap();
        self.env.give(&p);
    }

    pub fn oci(&self, args: &[&str]) -> Output {
        let mut a = vec!["oci"];
        a.extend_from_slice(args);
        self.env.run(&a)
    }

    /// `warren oci create`, its output in files: the container keeps the standard
    /// streams it inherits (as runc's does), so pipes would stay open while it lives.
    pub fn create(&self, args: &[&str]) -> Output {
        let (out, err) = (self.env.path().join("c.out"), self.env.path().join("c.err"));
        let mut a = vec!["oci", "create"];
        a.extend_from_slice(args);
        let status = self
            .env
            .cmd(&a)
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .status()
            .unwrap();
        Output {
            status,
            stdout: std::fs::read(&out).unwrap(),
            stderr: std::fs::read(&err).unwrap(),
        }
    }

    pub fn run_bundle(&self, id: &str) -> Output {
        let b = self.bundle();
        self.oci(&["run", "--bundle", b.to_str().unwrap(), id])
    }

    /// The user's OCI state directory of container `id` (the runtime dir is found from
    /// the UID: /run/user/UID/warren when it exists, else /tmp/warren-UID).
    pub fn state_dir(&self, id: &str) -> PathBuf {
        let run_user = PathBuf::from(format!("/run/user/{}", self.user.uid));
        let base = if run_user.is_dir() {
            run_user.join("warren")
        } else {
            PathBuf::from(format!("/tmp/warren-{}", self.user.uid))
        };
        base.join("oci").join(id)
    }

    pub fn status(&self, id: &str) -> Option<String> {
        let o = self.oci(&["state", id]);
        if !o.status.success() {
            return None;
        }
        let v = support::json(&o);
        assert_eq!(v["id"], id);
        assert_eq!(v["ociVersion"], "1.0.2");
        if v["status"] != "creating" {
            assert_eq!(v["bundle"], self.bundle().to_str().unwrap());
        }
        Some(v["status"].as_str().unwrap().to_string())
    }
}

/// Processes of `uid` whose command line mentions `needle`.
pub fn processes_of(uid: u32, needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let p = e.path();
        let Ok(md) = std::fs::metadata(&p) else {
            continue;
        };
        use std::os::unix::fs::MetadataExt;
        if md.uid() != uid {
            continue;
        }
        let cmd = std::fs::read(p.join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(needle) {
            out.push(cmd);
        }
    }
    out
}

pub fn one_line_error(o: &Output) -> String {
    assert!(!o.status.success(), "should have failed");
    let e = support::stderr(o);
    assert_eq!(e.trim().lines().count(), 1, "not one line: {e:?}");
    assert!(e.starts_with("warren: "), "{e:?}");
    e
}

pub fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if f() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("gave up waiting for {what}");
}

//! The three-node test cluster (scripts/slurm.sh) with warren's SPANK plugin built from
//! this tree installed (scripts/install-plugin.sh --dev), shared by the tests/slurm_*.rs
//! binaries: srun/sbatch as the unprivileged test user, job clean-up checks.
#![allow(dead_code)]
use crate::support::{self, need_user, registry, stderr, stdout, TestDir, User, TEST_USER};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const IMAGE: &str = "127.0.0.1:5000/test/busybox:latest";
/// Built by scripts/test-images.sh debian (debootstrap): has /etc/os-release.
pub const DEBIAN: &str = "127.0.0.1:5000/test/debian:latest";
pub const NODES: [&str; 3] = ["n1", "n2", "n3"];
pub const RUNTIME: &str = "/run/warren";

pub struct Cluster {
    pub user: User,
    /// Where jobs run (srun's working directory), the user's.
    pub work: TestDir,
}

static WORK_DIR: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn remove_work_dir() {
    if let Some(d) = WORK_DIR.get() {
        let _ = std::fs::remove_dir_all(d);
    }
}

pub fn sh(cmd: &str) -> Output {
    Command::new("sh").arg("-c").arg(cmd).output().expect("sh")
}

fn setup(kernel_mount: bool, shared_root: bool) -> Result<Cluster, String> {
    let user = need_user(TEST_USER)?;
    support::need_programs(&["srun", "sbatch", "sinfo", "scontrol", "squeue", "scancel"])?;
    registry::need_registry(&[registry::PLAIN])?;
    let nodes = stdout(&sh("sinfo -h -N -o '%N %t' 2>/dev/null"));
    if !NODES.iter().all(|n| nodes.contains(n)) {
        return Err(format!(
            "the test cluster is not up (sinfo: {nodes:?}; run scripts/slurm.sh start)"
        ));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let store_base = registry::state_dir().join("slurm-store");
    std::fs::create_dir_all(&store_base).map_err(|e| e.to_string())?;
    std::fs::set_permissions(&store_base, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())?;
    let store = store_base.join(&user.name);
    if !store.exists() {
        std::fs::create_dir(&store).map_err(|e| e.to_string())?;
        std::os::unix::fs::chown(&store, Some(user.uid), Some(user.gid))
            .map_err(|e| e.to_string())?;
    }
    // An admin-owned shared store (root's, as `warren pull --shared` by the store's
    // owner makes it) with the small image: kernel_mount=yes serves it with the kernel's
    // squashfs driver.
    let shared = registry::state_dir().join("slurm-shared");
    std::fs::create_dir_all(&shared).map_err(|e| e.to_string())?;
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())?;
    let out = Command::new(support::warren_bin())
        .args(["pull", "--shared", "--quiet", IMAGE])
        .env("WARREN_STORE_SHARED", &shared)
        .env_remove("WARREN_CONFIG")
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("pull into the shared store: {}", stderr(&out)));
    }
    let conf = Path::new("/etc/slurm/plugstack.conf.d/warren.conf");
    let before = std::fs::read_to_string(conf).unwrap_or_default();
    let out = Command::new("bash")
        .arg(root.join("scripts/install-plugin.sh"))
        .args(["--dev", "--no-binary"])
        .arg(format!("warren={}", support::warren_bin().display()))
        .arg(format!("store={}/%u", store_base.display()))
        .arg(format!("runtime_path={RUNTIME}"))
        .arg(format!("shared_store={}", shared.display()))
        // scripts/slurm.sh gives each simulated node its own PMIxCliTmpDirBase.
        .arg("pmix_appdir_base=/tmp/pmix-%n")
        .arg(format!(
            "kernel_mount={}",
            if kernel_mount { "yes" } else { "no" }
        ))
        .arg(format!(
            "shared_root={}",
            if shared_root { "yes" } else { "no" }
        ))
        .current_dir(root)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("install-plugin.sh failed: {}", stderr(&out)));
    }
    // slurmd looks for a plugin's job epilog only when it starts: restart it after the
    // first install. Other changes of the line need none (srun and each slurmstepd read
    // plugstack.conf when they start), and a restart would disturb other jobs.
    let now = std::fs::read_to_string(conf).unwrap_or_default();
    if now != before && !before.contains("libwarren_spank.so") {
        let out = Command::new("bash")
            .arg(root.join("scripts/slurm.sh"))
            .arg("restart")
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("slurm.sh restart failed: {}", stderr(&out)));
        }
    }
    let work = TestDir::owned_by("warren-slurm-", Some(user.clone()));
    // The fixture lives in a static, never dropped: remove its dir when the test binary
    // exits (the harness calls exit(), so atexit handlers run).
    WORK_DIR.set(work.path().to_path_buf()).ok();
    // SAFETY: registering a plain extern "C" function without arguments.
    unsafe { libc::atexit(remove_work_dir) };
    Ok(Cluster { user, work })
}

/// The cluster with the plugin installed for this test binary (`kernel_mount` on or off:
/// cargo runs test binaries one after the other, so each sees its own plugstack line).
pub fn cluster(kernel_mount: bool) -> Result<&'static Cluster, String> {
    cluster_with(kernel_mount, false)
}

/// As [`cluster`], with the `shared_root` plugstack switch too.
pub fn cluster_with(kernel_mount: bool, shared_root: bool) -> Result<&'static Cluster, String> {
    static C: OnceLock<Result<Cluster, String>> = OnceLock::new();
    C.get_or_init(|| setup(kernel_mount, shared_root))
        .as_ref()
        .map_err(Clone::clone)
}

impl Cluster {
    /// `prog args…` as the test user in the work dir, without PYXIS_* from our own
    /// environment.
    pub fn cmd(&self, prog: &str, args: &[&str]) -> Command {
        let mut c = self.user.command(prog);
        c.args(args).current_dir(self.work.path());
        for (k, _) in std::env::vars() {
            if k.starts_with("PYXIS_") || k.starts_with("SLURM_") || k.starts_with("WARREN_") {
                c.env_remove(k);
            }
        }
        c
    }

    pub fn srun(&self, args: &[&str]) -> Output {
        self.cmd("srun", args).output().expect("srun")
    }

    /// Submit `script` with sbatch and wait for the job to end; its output file's text.
    pub fn sbatch(&self, script: &str) -> (u32, String) {
        let file = self.work.path().join(format!("job-{}.sh", unique()));
        std::fs::write(&file, script).unwrap();
        self.work.give(&file);
        let out = self
            .cmd("sbatch", &["--parsable", "--wait", "-o", "%x-%j.out"])
            .arg(&file)
            .output()
            .expect("sbatch");
        let id: u32 = stdout(&out)
            .trim()
            .split(';')
            .next()
            .unwrap_or("")
            .parse()
            .unwrap_or_else(|_| panic!("sbatch: {}{}", stdout(&out), stderr(&out)));
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let log = self.work.path().join(format!("{name}-{id}.out"));
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            out.status.success(),
            "job {id} failed: {}\n{text}",
            stderr(&out)
        );
        (id, text)
    }

    /// Submit `script` with sbatch without waiting for it (its output discarded); the
    /// job is cancelled when the returned guard drops.
    pub fn submit(&self, script: &str) -> Cancel {
        let file = self.work.path().join(format!("bg-{}.sh", unique()));
        std::fs::write(&file, script).unwrap();
        self.work.give(&file);
        let out = self
            .cmd("sbatch", &["--parsable", "-o", "/dev/null"])
            .arg(&file)
            .output()
            .expect("sbatch");
        let job = stdout(&out)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("sbatch: {}{}", stdout(&out), stderr(&out)));
        Cancel(job)
    }

    /// Wait (bounded) until `job` has left the queue.
    pub fn wait_job(&self, job: u32) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            let q = stdout(&sh(&format!("squeue -h -j {job} -o %T 2>/dev/null")));
            if q.trim().is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("job {job} did not end");
    }

    /// Every node's runtime dir of `job` is gone (the epilog runs after srun returns):
    /// waits for it, bounded, then reports what is left.
    pub fn assert_job_cleaned(&self, job: u32) {
        let dirs: Vec<PathBuf> = NODES
            .iter()
            .map(|n| {
                Path::new(RUNTIME)
                    .join(n)
                    .join(self.user.uid.to_string())
                    .join(job.to_string())
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        while dirs.iter().any(|d| d.exists()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let left: Vec<_> = dirs.iter().filter(|d| d.exists()).collect();
        assert!(left.is_empty(), "job {job} left {left:?}");
        // No holder or FUSE daemon of this job runs any more.
        let procs = self.processes_of_job(job);
        assert!(procs.is_empty(), "job {job} left processes: {procs:?}");
    }

    /// Processes started for `job` (warren and its FUSE daemons inherit the job's warren
    /// runtime dir in their environment).
    pub fn processes_of_job(&self, job: u32) -> Vec<String> {
        let mut v = vec![];
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let p = e.path();
            let env = std::fs::read(p.join("environ")).unwrap_or_default();
            let env = String::from_utf8_lossy(&env);
            let ours = env.split('\0').any(|kv| {
                kv.strip_prefix(&format!("WARREN_RUN_RUNTIME_DIR={RUNTIME}/"))
                    .is_some_and(|rest| rest.contains(&format!("/{}/{job}/", self.user.uid)))
            });
            if ours {
                let cmd = std::fs::read(p.join("cmdline")).unwrap_or_default();
                // comm too: warren's image server is a fork with its parent's cmdline.
                let comm = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
                v.push(format!(
                    "{}: ({}) {}",
                    p.display(),
                    comm.trim(),
                    String::from_utf8_lossy(&cmd).replace('\0', " ")
                ));
            }
        }
        v
    }
}

/// Cancels a job when dropped (a failed assertion must not leave it running).
pub struct Cancel(pub u32);

impl Drop for Cancel {
    fn drop(&mut self) {
        let _ = Command::new("scancel").arg(self.0.to_string()).output();
    }
}

pub fn unique() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// An image whose entrypoint (`/ep.sh`) prints a line on stdout and stderr, exports
/// `EP_VAR`, changes to `/tmp/ep-work`, fails with 3 when `EP_FAIL` is set, and ends with
/// `exec "$@"`: the busybox image plus one layer, pushed once to the plain test registry.
pub fn entrypoint_image() -> Result<String, String> {
    static R: OnceLock<Result<String, String>> = OnceLock::new();
    R.get_or_init(|| {
        support::need_programs(&["skopeo", "umoci", "tar"])?;
        let reference = format!("{}/test/slurm-entrypoint:v2", registry::PLAIN);
        let t = TestDir::new("warren-ep-image-");
        let script = "#!/bin/sh\necho EP-RAN-OUT\necho EP-RAN-ERR >&2\n\
                      [ -n \"$EP_FAIL\" ] && exit 3\nexport EP_VAR=from-entrypoint\n\
                      mkdir -p /tmp/ep-work && cd /tmp/ep-work\nexec \"$@\"\n";
        std::fs::create_dir(t.join("add")).map_err(|e| e.to_string())?;
        std::fs::write(t.join("add/ep.sh"), script).map_err(|e| e.to_string())?;
        std::fs::set_permissions(t.join("add/ep.sh"), std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
        let cmds = format!(
            "set -e; cd {d}; \
             skopeo copy -q --src-tls-verify=false docker://{IMAGE} oci:l:latest; \
             tar --owner=0 --group=0 -C add -cf layer.tar ep.sh; \
             umoci raw add-layer --image l:latest layer.tar; \
             umoci config --image l:latest --config.entrypoint /ep.sh; \
             skopeo copy -q --dest-tls-verify=false oci:l:latest docker://{reference}",
            d = t.path().display()
        );
        let out = sh(&cmds);
        if !out.status.success() {
            return Err(format!("build the entrypoint image: {}", stderr(&out)));
        }
        Ok(reference)
    })
    .clone()
}

/// Two tasks on n1 each write a file into their container's root, wait (bounded) until
/// both have, then report how many of those files their root shows and their mount
/// namespace: `(seen, mount namespace)` per task.
pub fn two_tasks_write_into_their_roots(c: &Cluster, image: &str) -> Vec<(u32, String)> {
    let work = c.work.path().join(format!("roots-{}", unique()));
    std::fs::create_dir(&work).unwrap();
    c.work.give(&work);
    let task = "touch /mine-$SLURM_PROCID; touch /work/in-$SLURM_PROCID; \
                for i in $(seq 600); do [ $(ls /work | grep -c in-) -ge 2 ] && break; sleep 0.1; done; \
                echo SEEN $(ls / | grep -c mine-) $(readlink /proc/self/ns/mnt)";
    let out = c.srun(&[
        "-w",
        "n1",
        "-N1",
        "-n2",
        &format!("--container-image={image}"),
        "--container-remap-root",
        &format!("--container-mounts={}:/work", work.display()),
        "sh",
        "-c",
        task,
    ]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    let seen: Vec<(u32, String)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("SEEN "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, ns)| (n.parse().unwrap(), ns.to_string()))
        .collect();
    assert_eq!(seen.len(), 2, "{text}");
    seen
}

//! Slurm's own `srun --container=BUNDLE` with warren behind the shipped slurm/oci.conf,
//! on the project's test cluster (scripts/slurm.sh), as the unprivileged test user:
//! the bundle's OS and owners inside, exit codes, `scancel` leaving nothing, a bundle
//! naming a warren image, and create/start mode. oci.conf is put beside every
//! slurm.conf of the cluster for the test and removed after (Slurm reads it per step).

mod oci_support;
mod support;

use oci_support::{processes_of, wait_for, Fixture, BUSYBOX_IMAGE, OS_RELEASE};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use support::need_programs;

/// oci.conf files this test wrote; removed on drop (then the lock is released).
struct OciConf {
    files: Vec<PathBuf>,
    _lock: nix::fcntl::Flock<std::fs::File>,
}

impl OciConf {
    /// The shipped slurm/oci.conf with the test's warren and config (`config`: Slurm
    /// gives the runtime its own environment, not the job's), optionally in create/start
    /// mode, beside each slurm.conf (the cluster's nodes may each have a config dir).
    /// The tests of this file take turns (a lock file).
    fn install(create_start: bool, config: &Path) -> Result<OciConf, String> {
        let lock =
            std::fs::File::create("/var/tmp/warren-oci-slurm.lock").map_err(|e| e.to_string())?;
        let lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| e.to_string())?;
        let shipped =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("slurm/oci.conf"))
                .map_err(|e| e.to_string())?;
        let mut text = shipped.replace(
            "/usr/bin/warren",
            &format!(
                "WARREN_CONFIG={} {}",
                config.display(),
                support::warren_bin().display()
            ),
        );
        if create_start {
            text = text
                .lines()
                .map(|l| {
                    if l.starts_with("RunTimeRun=") {
                        format!("#{l}")
                    } else if l.starts_with("#RunTimeCreate=") || l.starts_with("#RunTimeStart=") {
                        l[1..].to_string()
                    } else {
                        l.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n");
        }
        let mut dirs = vec![PathBuf::from("/etc/slurm")];
        for e in std::fs::read_dir("/etc")
            .map_err(|e| e.to_string())?
            .flatten()
        {
            if e.file_name().to_string_lossy().starts_with("slurm-") {
                dirs.push(e.path());
            }
        }
        let mut conf = OciConf {
            files: vec![],
            _lock: lock,
        };
        for d in dirs.iter().filter(|d| d.join("slurm.conf").is_file()) {
            let f = d.join("oci.conf");
            if f.exists() {
                return Err(format!("{} exists already (not this test's)", f.display()));
            }
            std::fs::write(&f, &text).map_err(|e| e.to_string())?;
            conf.files.push(f);
        }
        Ok(conf)
    }
}

impl Drop for OciConf {
    fn drop(&mut self) {
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
    }
}

fn need_cluster() -> Result<(), String> {
    need_programs(&["srun", "sinfo", "squeue", "scancel"])?;
    let o = Command::new("sinfo")
        .args(["-h", "-n", "n1", "-o", "%T"])
        .output()
        .map_err(|e| e.to_string())?;
    let state = String::from_utf8_lossy(&o.stdout).trim().to_string();
    if !o.status.success() || !["idle", "mixed", "allocated"].contains(&state.as_str()) {
        return Err(format!(
            "test cluster node n1 not up ({state:?}; scripts/slurm.sh)"
        ));
    }
    Ok(())
}

/// `srun -w n1 --container=BUNDLE ARGS` as the test user, from the bundle's directory.
fn srun(f: &Fixture, extra: &[&str], args: &[&str]) -> Command {
    let mut c = f.env.as_user("srun");
    c.args(["-w", "n1", "--container"])
        .arg(f.bundle())
        .args(extra)
        .args(args)
        .env("HOME", &f.user.home)
        .stdin(Stdio::null());
    c
}

fn output(mut c: Command) -> Output {
    c.output().expect("run srun")
}

fn nothing_left(f: &Fixture, id_part: &str) {
    wait_for("no container processes", || {
        processes_of(f.user.uid, id_part).is_empty()
            && processes_of(f.user.uid, "squashfuse").is_empty()
            && processes_of(f.user.uid, "fuse-overlayfs").is_empty()
    });
    let oci = f.state_dir("x").parent().unwrap().to_path_buf();
    let left: Vec<_> = std::fs::read_dir(&oci)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.iter().all(|n| !n.to_string_lossy().contains(id_part)),
        "state left: {left:?}"
    );
}

#[test]
fn srun_container_through_warren() {
    need!(need_cluster());
    let f = need!(Fixture::new());
    let _conf = need!(OciConf::install(false, &f.env.config()));
    let name = format!("n1.{}.", f.user.name);

    // Run mode: the bundle's OS, owners as in the bundle, the exit code, the job env
    // appended after the bundle's (the job's value wins).
    let o = output(srun(
        &f,
        &[],
        &["sh", "-c", "cat /etc/os-release; stat -c %u:%g /data/a /data/n; echo A=$A; echo J=${SLURM_JOB_ID:+set}; exit 5"],
    ));
    assert_eq!(o.status.code(), Some(5), "{}", support::stderr(&o));
    assert_eq!(
        support::stdout(&o),
        format!("{OS_RELEASE}1000:1001\n65534:65534\nA=job\nJ=set\n")
    );
    nothing_left(&f, &name);

    // scancel mid-run: nothing of the container survives.
    let job_name = format!("oci-cancel-{}", std::process::id());
    let mut c = srun(&f, &["-J", &job_name], &["sleep", "300"]);
    let mut child = c
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut job = String::new();
    wait_for("the container to run", || {
        let o = Command::new("squeue")
            .args(["-h", "-n", &job_name, "-o", "%i"])
            .output()
            .unwrap();
        job = support::stdout(&o).trim().to_string();
        !job.is_empty()
            && processes_of(f.user.uid, "sleep 300")
                .iter()
                .any(|c| c.starts_with("sleep"))
    });
    let st = Command::new("scancel").arg(&job).status().unwrap();
    assert!(st.success());
    let _ = child.wait();
    nothing_left(&f, &format!("{name}{job}."));
    assert!(processes_of(f.user.uid, "sleep 300").is_empty());

    // A bundle naming a warren image instead of a rootfs.
    f.env.ok(&["pull", "-q", BUSYBOX_IMAGE]);
    let mut v = f.config(&["true"]);
    v["annotations"] = json!({"org.warren.image": BUSYBOX_IMAGE});
    f.write_config(&v);
    let o = output(srun(
        &f,
        &[],
        &["sh", "-c", "test ! -e /data/a && ls /bin/busybox"],
    ));
    assert!(o.status.success(), "{}", support::stderr(&o));
    assert_eq!(support::stdout(&o), "/bin/busybox\n");
    nothing_left(&f, &name);
}

#[test]
fn srun_container_create_start_mode() {
    need!(need_cluster());
    let f = need!(Fixture::new());
    let _conf = need!(OciConf::install(true, &f.env.config()));
    let out = f.env.path().join("out");
    std::fs::create_dir(&out).unwrap();
    f.env.give(&out);
    let mut v = f.config(&["true"]);
    v["mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"destination": "/out", "type": "bind",
        "source": out.to_str().unwrap(), "options": ["rbind", "rw"]}));
    f.write_config(&v);
    let o = output(srun(&f, &[], &["sh", "-c", "id -u > /out/ran; exit 3"]));
    // srun gets `warren oci start`'s status (docs/oci.md), the container did run.
    assert_eq!(o.status.code(), Some(0), "{}", support::stderr(&o));
    assert_eq!(std::fs::read_to_string(out.join("ran")).unwrap(), "0\n");
    nothing_left(&f, &format!("n1.{}.", f.user.name));
}

//! CDI devices through the SPANK plugin on the real three-node test cluster
//! (scripts/slurm.sh gives each node two stand-in GPUs as GRES: /dev/warren-gpu0 and
//! /dev/warren-gpu1, character devices with /dev/null's numbers). A CDI spec naming
//! them (kind warren.test/gpu) is written to /var/run/cdi for the duration of the test.
//! Covered: per-task selection with `--gpus-per-task=1` (two tasks of one node, one user
//! namespace, each sees only its own stand-in, CUDA_VISIBLE_DEVICES renumbered to 0);
//! explicit names; a kind without GPUs allocated, an unknown device and a malformed
//! option value fail with their message.
mod slurm_support;
mod support;

use slurm_support::{Cluster, IMAGE};
use std::path::{Path, PathBuf};
use support::{stderr, stdout};

const SPEC_DIR: &str = "/var/run/cdi";

/// The test spec in /var/run/cdi, removed (with the directory when it made it) on drop.
struct Spec {
    file: PathBuf,
    made_dir: bool,
    // Two spec files of one kind in one directory are ambiguous: one test at a time.
    _one_at_a_time: std::sync::MutexGuard<'static, ()>,
}

static SPEC_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Drop for Spec {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
        if self.made_dir {
            let _ = std::fs::remove_dir(SPEC_DIR);
        }
    }
}

/// `tag` names the test's spec file.
fn setup(tag: &str) -> Result<(&'static Cluster, Spec), String> {
    let c = slurm_support::cluster(false)?;
    let gres = stdout(&slurm_support::sh("sinfo -h -o %G"));
    if !gres.contains("gpu:2") || !Path::new("/dev/warren-gpu1").exists() {
        return Err(format!(
            "the test cluster has no stand-in GPUs (sinfo %G: {gres:?}; run scripts/slurm.sh restart)"
        ));
    }
    let guard = SPEC_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let made_dir = !Path::new(SPEC_DIR).exists();
    std::fs::create_dir_all(SPEC_DIR).map_err(|e| e.to_string())?;
    let file = Path::new(SPEC_DIR).join(format!("warren-test-{}-{tag}.json", std::process::id()));
    let spec = serde_json::json!({
        "cdiVersion": "0.6.0",
        "kind": "warren.test/gpu",
        "containerEdits": {"env": ["WARREN_TEST_GPU_SPEC=yes"]},
        "devices": [
            {"name": "0", "containerEdits": {"deviceNodes": [{"path": "/dev/warren-gpu0"}]}},
            {"name": "1", "containerEdits": {"deviceNodes": [{"path": "/dev/warren-gpu1"}]}}
        ]
    });
    std::fs::write(&file, spec.to_string()).map_err(|e| e.to_string())?;
    Ok((
        c,
        Spec {
            file,
            made_dir,
            _one_at_a_time: guard,
        },
    ))
}

/// `-l` output lines of a task, sorted by task.
fn by_task(out: &str) -> Vec<String> {
    let mut l: Vec<String> = out.lines().map(String::from).collect();
    l.sort();
    l
}

#[test]
fn each_task_sees_only_its_own_gpus() {
    let (c, _spec) = need!(setup("per-task"));
    let image = format!("--container-image={IMAGE}");
    let out = c.srun(&[
        "-N1",
        "-n2",
        "--gpus-per-task=1",
        "-l",
        &image,
        "--container-devices=warren.test/gpu",
        "sh",
        "-c",
        "echo $(ls /dev | grep warren-gpu) cvd=$CUDA_VISIBLE_DEVICES step=$SLURM_STEP_GPUS $WARREN_TEST_GPU_SPEC; \
         echo x > /dev/$(ls /dev | grep warren-gpu) && echo writable; readlink /proc/self/ns/user",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = by_task(&stdout(&out));
    let (ns, rest): (Vec<&String>, Vec<&String>) = lines.iter().partition(|l| l.contains("user:["));
    assert_eq!(
        rest,
        [
            "0: warren-gpu0 cvd=0 step=0 yes",
            "0: writable",
            "1: warren-gpu1 cvd=0 step=1 yes",
            "1: writable"
        ],
        "{lines:?}"
    );
    // One user namespace for the node's tasks all the same.
    let ns: Vec<&str> = ns.iter().map(|l| l.split_once(": ").unwrap().1).collect();
    assert_eq!(ns.len(), 2, "{lines:?}");
    assert_eq!(ns[0], ns[1], "{lines:?}");
}

#[test]
fn explicit_devices_and_errors() {
    let (c, _spec) = need!(setup("explicit"));
    let image = format!("--container-image={IMAGE}");
    let out = c.srun(&[
        "-N1",
        &image,
        "--container-devices=warren.test/gpu=1",
        "sh",
        "-c",
        "ls /dev | grep warren-gpu",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "warren-gpu1\n");
    // A kind alone, no GPUs allocated.
    let out = c.srun(&["-N1", &image, "--container-devices=warren.test/gpu", "true"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("this task has no GPUs allocated"),
        "{}",
        stderr(&out)
    );
    // An unknown device.
    let out = c.srun(&[
        "-N1",
        &image,
        "--container-devices=warren.test/gpu=7",
        "true",
    ]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("CDI device warren.test/gpu=7: unknown (known: 0, 1)"),
        "{}",
        stderr(&out)
    );
    // Refused at submission: nothing runs.
    let out = c.srun(&["-N1", &image, "--container-devices=gpu0", "true"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("warren: --container-devices: "),
        "{}",
        stderr(&out)
    );
}

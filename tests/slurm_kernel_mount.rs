//! warren's SPANK plugin with `kernel_mount=yes` (its own test binary: the plugstack line
//! differs from tests/slurm_cluster.rs): an admin-owned shared-store image is mounted by
//! root with the kernel's squashfs driver inside the node holder's mount namespace.

mod slurm_support;
mod support;

use slurm_support::IMAGE;
use std::process::Command;
use std::time::{Duration, Instant};
use support::stderr;

#[test]
fn kernel_mount_serves_admin_owned_shared_images() {
    let c = need!(slurm_support::cluster(true));
    let cancel = c.submit(&format!(
        "#!/bin/sh\n#SBATCH -N1 -w n2\nsrun --container-image={IMAGE} sh -c 'cat /bin/busybox >/dev/null; sleep 300'\n"
    ));
    let job = cancel.0;
    // The step's holder: its mount namespace has the kernel's squashfs over squashfuse.
    let deadline = Instant::now() + Duration::from_secs(60);
    let holder_mounts = || {
        c.processes_of_job(job)
            .iter()
            .filter(|p| p.contains("run --holder"))
            .filter_map(|p| p.split(':').next().map(str::to_string))
            .filter_map(|proc_dir| std::fs::read_to_string(format!("{proc_dir}/mountinfo")).ok())
            .collect::<Vec<String>>()
    };
    let mut seen = String::new();
    while Instant::now() < deadline {
        if let Some(m) = holder_mounts()
            .into_iter()
            .find(|m| m.contains(" - squashfs "))
        {
            seen = m;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let line = seen
        .lines()
        .find(|l| l.contains(" - squashfs "))
        .unwrap_or_else(|| {
            panic!(
                "no kernel squashfs mount in the holder: {:?}",
                holder_mounts()
            )
        });
    assert!(line.contains("/mnt/l "), "{line}");
    assert!(line.contains(" ro,nosuid,nodev"), "{line}");
    // Not on the host.
    let host = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!host.contains(&format!("/{job}/step.0/mnt/l")), "{host}");
    let out = Command::new("scancel")
        .arg(job.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    c.assert_job_cleaned(job);
}

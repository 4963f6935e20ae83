//! Site hooks in Slurm tasks on the real test cluster: the plugin reads the system
//! config, so the test puts two hook files into /etc/warren/hooks.d for its duration
//! (removed after; each matches only a command name unique to this test process, so no
//! other job or `warren run` on the machine runs them): a prestart hook that records the
//! state it reads, a createContainer hook that writes into the container's root (found
//! through the state's bundle), and one that fails with a message; and a mounts.d
//! and an environ.d drop-in (names unique to this process).
mod slurm_support;
mod support;

use slurm_support::{Cluster, IMAGE};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use support::{stderr, stdout};

const HOOKS: &str = "/etc/warren/hooks.d";
const MOUNTS: &str = "/etc/warren/mounts.d";
const ENVIRON: &str = "/etc/warren/environ.d";

/// Files (and directories this test made) removed on drop, newest first.
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in self.0.iter().rev() {
            if p.is_dir() {
                let _ = std::fs::remove_dir(p);
            } else {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

fn script(c: &Cluster, name: &str, body: &str) -> PathBuf {
    let p = c.work.path().join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    c.work.give(&p);
    p
}

#[test]
fn prestart_runs_per_task_and_a_failing_hook_fails_the_task() {
    let c = need!(slurm_support::cluster(false));
    let mut clean = Cleanup(vec![]);
    for d in ["/etc/warren", HOOKS, MOUNTS, ENVIRON] {
        if !Path::new(d).exists() {
            std::fs::create_dir(d).unwrap();
            clean.0.push(d.into());
        }
    }
    let id = std::process::id();
    // One file per hook run: the two tasks' hooks run at the same time.
    let log = c.work.path().join("hook-log");
    let record = script(c, "record", &format!("cat > {}.$$", log.display()));
    let probe = script(
        c,
        &format!("warren-probe-{id}"),
        &format!(
            "echo probe ran $WARREN_TEST_SITE_{id} $(cat /site-{id}/file) $(cat /tmp/created)"
        ),
    );
    // createContainer, before the task's pivot_root: finds the container's root as
    // nvidia-cdi-hook does (the state's bundle, its config.json's root.path).
    let created = script(
        c,
        "created",
        "st=$(cat); b=$(printf %s \"$st\" | jq -er .bundle); \
         r=$(jq -er .root.path \"$b/config.json\"); printf %s \"$st\" | jq -er .status > \"$r/tmp/created\"",
    );
    // Drop-ins: names unique to this process (harmless to any other container).
    let site = c.work.path().join("site");
    std::fs::create_dir(&site).unwrap();
    std::fs::write(site.join("file"), "site-file\n").unwrap();
    c.work.give(&site);
    let dropins = [
        (
            Path::new(MOUNTS).join(format!("zz-warren-test-{id}.fstab")),
            format!("{} /site-{id} none bind,ro,nofail\n", site.display()),
        ),
        (
            Path::new(ENVIRON).join(format!("zz-warren-test-{id}.env")),
            format!("WARREN_TEST_SITE_{id}=from-environ.d\n"),
        ),
    ];
    for (p, text) in &dropins {
        std::fs::write(p, text).unwrap();
        clean.0.push(p.clone());
    }
    let fail = script(c, "fail", "echo 'no license for this node' >&2; exit 4");
    let failing = script(c, &format!("warren-fail-{id}"), "echo should not run");
    let files = [
        (
            format!("zz-warren-test-{id}-record.json"),
            serde_json::json!({"version": "1.0.0", "hook": {"path": record},
                "when": {"commands": [format!(".*/warren-probe-{id}")]}, "stages": ["prestart"]}),
        ),
        (
            format!("zz-warren-test-{id}-created.json"),
            serde_json::json!({"version": "1.0.0", "hook": {"path": created},
                "when": {"commands": [format!(".*/warren-probe-{id}")]}, "stages": ["createContainer"]}),
        ),
        (
            format!("zz-warren-test-{id}-fail.json"),
            serde_json::json!({"version": "1.0.0", "hook": {"path": fail},
                "when": {"commands": [format!(".*/warren-fail-{id}")]}, "stages": ["createContainer"]}),
        ),
    ];
    for (name, json) in &files {
        let p = Path::new(HOOKS).join(name);
        std::fs::write(&p, json.to_string()).unwrap();
        clean.0.push(p);
    }
    let image = format!("--container-image={IMAGE}");
    let work = c.work.path().display().to_string();
    let mounts = format!("--container-mounts={work}:{work}");
    let out = c.srun(&["-N1", "-n2", &image, &mounts, probe.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "probe ran from-environ.d site-file creating\nprobe ran from-environ.d site-file creating\n"
    );
    let mut text = String::new();
    for e in std::fs::read_dir(c.work.path()).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with("hook-log.") {
            text += &std::fs::read_to_string(e.path()).unwrap();
            text.push('\n');
        }
    }
    let states: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(states.len(), 2, "{text}");
    assert!(states
        .iter()
        .all(|s| s["status"] == "creating" && s["ociVersion"] == "1.0.2"));
    assert_ne!(states[0]["pid"], states[1]["pid"], "{text}");
    // The failing createContainer hook: the task fails with its line and stderr.
    let out = c.srun(&["-N1", &image, &mounts, failing.to_str().unwrap()]);
    assert_ne!(out.status.code(), Some(0));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "warren: hook createContainer[0] {}: failed (exit status: 4)",
            fail.display()
        )) && err.contains("no license for this node"),
        "{err}"
    );
    assert!(!stdout(&out).contains("should not run"));
}

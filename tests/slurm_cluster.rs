//! warren's SPANK plugin on the real three-node test cluster (scripts/slurm.sh: slurmctld
//! and slurmd n1, n2, n3 on this machine), driven with srun/sbatch as the unprivileged
//! test user. The fixture installs the plugin built from this tree
//! (scripts/install-plugin.sh --dev) with a store of its own; a first install restarts the
//! cluster (slurmd looks for job epilogs only when it starts).
//!
//! Covered: option checks at submission (srun, sbatch, salloc); tasks in their own
//! containers (own mount namespace and writable layer) on one user namespace and one
//! image mount per node; named containers across steps; `#SBATCH --container-image`;
//! failures, exit codes and the environment reaching srun; nothing left behind after
//! step end, job end or scancel; concurrent jobs on one image; a pyxis job script.
mod slurm_support;
mod support;

use slurm_support::{sh, unique, Cluster, DEBIAN, IMAGE, NODES, RUNTIME};
use std::process::Command;
use std::time::{Duration, Instant};
use support::{stderr, stdout};

fn cluster() -> Result<&'static Cluster, String> {
    slurm_support::cluster(false)
}

#[test]
fn bad_options_are_refused_at_submission() {
    let c = need!(cluster());
    let marker = c.work.path().join(format!("ran-{}", unique()));
    let touch = format!("touch {}", marker.display());
    // (options, PYXIS_* variables, what the refusal line says)
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 15] = [
        (
            &["--container-image="],
            &[],
            "--container-image: argument required",
        ),
        (
            &[&format!("--container-image={}", "a".repeat(5000))],
            &[],
            "longer than 4095 bytes",
        ),
        (&["--container-image=Bad/Name"], &[], "invalid repository"),
        (
            &["--container-image=busybox", "--container-mounts=/a:/b,"],
            &[],
            "empty entry",
        ),
        (
            &["--container-image=busybox", "--container-mounts=/a:rel"],
            &[],
            "destination must be an absolute path",
        ),
        (
            &[
                "--container-image=busybox",
                "--container-mounts=/a:/b/../../etc",
            ],
            &[],
            "may not contain '..'",
        ),
        (
            &[
                "--container-image=busybox",
                "--container-mounts=/a:/b:x-detach",
            ],
            &[],
            "use an umount:DST entry",
        ),
        (
            &[
                "--container-image=busybox",
                "--container-mounts=tmpfs:/t:bind",
            ],
            &[],
            "a tmpfs is a new mount, not a bind",
        ),
        (
            &[
                "--container-image=busybox",
                "--container-mounts=/a:/b:nosuid+suid",
            ],
            &[],
            "nosuid and suid contradict each other",
        ),
        (
            &["--container-image=busybox", "--container-name=bad/name"],
            &[],
            "--container-name",
        ),
        (
            &[
                "--container-image=busybox",
                "--container-readonly",
                "--container-writable",
            ],
            &[],
            "both --container-writable and --container-readonly",
        ),
        (
            &["--container-image=busybox", "--container-save=/tmp/dir/"],
            &[],
            "is a directory",
        ),
        (
            &["--container-image=busybox", "--container-env=A,"],
            &[],
            "--container-env",
        ),
        (
            &["--container-image=busybox"],
            &[("PYXIS_CONTAINER_MOUNTS", "x:/y")],
            "PYXIS_CONTAINER_MOUNTS",
        ),
        (
            &[],
            &[
                ("PYXIS_CONTAINER_IMAGE", "Bad/Name"),
                ("PYXIS_CONTAINER_WRITABLE", "1"),
            ],
            "PYXIS_CONTAINER_IMAGE",
        ),
    ];
    for (args, env, msg) in cases {
        for prog in ["srun", "sbatch", "salloc"] {
            let mut cmd = c.cmd(prog, args);
            cmd.envs(env.iter().copied());
            match prog {
                "sbatch" => cmd.args(["--wrap", &touch]),
                _ => cmd.args(["-N1", "sh", "-c", &touch]),
            };
            let out = cmd.output().unwrap();
            let err = stderr(&out);
            assert!(!out.status.success(), "{prog} {args:?} {env:?} succeeded");
            let line = err
                .lines()
                .find(|l| l.contains("warren:"))
                .unwrap_or_else(|| panic!("{prog} {args:?}: no warren line in {err}"));
            assert!(
                line.contains(msg),
                "{prog} {args:?}: {line:?} lacks {msg:?}"
            );
            assert!(
                !stdout(&out).contains("Submitted"),
                "{prog} {args:?} submitted a job"
            );
        }
    }
    // Nothing ran anywhere.
    std::thread::sleep(Duration::from_millis(200));
    assert!(!marker.exists(), "a refused job ran");
}

#[test]
fn tasks_run_in_their_own_containers_on_one_mount_per_node() {
    let c = need!(cluster());
    let work = c.work.path().join(format!("in-{}", unique()));
    std::fs::create_dir(&work).unwrap();
    c.work.give(&work);
    // 12 tasks on 3 nodes: each prints the image's OS, its node and namespaces, writes
    // into its own root (remap-root: root inside may), then waits (bounded) until all 12
    // are inside, so that the test sees them at once.
    let task = "grep PRETTY_NAME /etc/os-release; \
         echo NS $SLURMD_NODENAME $(readlink /proc/self/ns/user) $(readlink /proc/self/ns/mnt); \
         touch /mine-$SLURM_PROCID; echo LAYER $(ls / | grep -c mine-); \
         touch /work/in-$SLURM_PROCID; \
         for i in $(seq 600); do [ $(ls /work | grep -c in-) -ge 12 ] && break; sleep 0.1; done; sleep 1";
    let script = format!(
        "#!/bin/sh\n#SBATCH -N3 -n12\necho JOB=$SLURM_JOB_ID\n\
         srun -N3 -n12 --container-image={DEBIAN} --container-remap-root --container-mounts={}:/work sh -c '{task}'\n",
        work.display()
    );
    let file = c.work.path().join(format!("ns-{}.sh", unique()));
    std::fs::write(&file, script).unwrap();
    c.work.give(&file);
    let log = c.work.path().join(format!("ns-{}.out", unique()));
    let out = c
        .cmd("sbatch", &["--parsable", "-o"])
        .arg(&log)
        .arg(&file)
        .output()
        .unwrap();
    let job: u32 = stdout(&out)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{}", stderr(&out)));
    // While all 12 tasks are inside: one FUSE image mount (one image server: squashfuse_ll
    // or warren's own) per node for the whole job, however many tasks.
    let deadline = Instant::now() + Duration::from_secs(120);
    let inside = || std::fs::read_dir(&work).map_or(0, |d| d.count());
    while inside() < 12 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        inside(),
        12,
        "not all tasks started: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let fuse = c
        .processes_of_job(job)
        .into_iter()
        .filter(|p| p.contains("squashfuse") || p.contains("(warren-sqfs)"))
        .count();
    assert_eq!(fuse, 3, "{:?}", c.processes_of_job(job));
    c.wait_job(job);
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        text.matches("PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"")
            .count(),
        12,
        "{text}"
    );
    assert_eq!(
        text.matches("LAYER 1").count(),
        12,
        "own writable layer: {text}"
    );
    let host_userns = std::fs::read_link("/proc/self/ns/user").unwrap();
    let mut users: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        Default::default();
    let mut mnts = std::collections::BTreeSet::new();
    for l in text.lines().filter(|l| l.starts_with("NS ")) {
        let w: Vec<&str> = l.split_whitespace().collect();
        assert_eq!(w.len(), 4, "{l}");
        assert_ne!(w[2], host_userns.to_string_lossy(), "{l}");
        users
            .entry(w[1].to_string())
            .or_default()
            .insert(w[2].to_string());
        mnts.insert(w[3].to_string());
    }
    assert_eq!(users.len(), 3, "{text}");
    for (node, set) in &users {
        assert_eq!(
            set.len(),
            1,
            "tasks of {node} share one user namespace: {text}"
        );
    }
    assert_eq!(mnts.len(), 12, "a mount namespace per task: {text}");
    c.assert_job_cleaned(job);
}

#[test]
fn a_failed_set_up_fails_the_tasks_with_its_message() {
    let c = need!(cluster());
    let out = c.srun(&[
        "-N2",
        "--container-image=127.0.0.1:5000/test/no-such-image:latest",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("warren: start the holder failed") && err.contains("404"),
        "{err}"
    );
    // A missing named container for :exec.
    let out = c.srun(&["-N1", "--container-name=nothere:exec", "true"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no running container \"nothere\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn named_container_lives_across_steps_and_ends_with_the_job() {
    let c = need!(cluster());
    let script = format!(
        "#!/bin/sh\n#SBATCH -N1\necho JOB=$SLURM_JOB_ID\n\
         srun --container-name=dev --container-image={IMAGE} --container-remap-root sh -c 'echo kept > /state; echo A=$(id -u)'\n\
         srun --container-name=dev sh -c 'echo B=$(cat /state) $(id -u)'\n\
         srun --container-name=dev:exec sh -c 'echo C=$(grep -c . /etc/passwd)'\n\
         srun --container-name=dev:create --container-image={IMAGE} true || echo CREATE_REFUSED\n"
    );
    let (job, text) = c.sbatch(&script);
    // The second step sees the first one's writes and identity.
    assert!(text.contains("A=0"), "{text}");
    assert!(text.contains("B=kept 0"), "{text}");
    assert!(text.contains("C="), "{text}");
    assert!(text.contains("CREATE_REFUSED"), "{text}");
    assert!(text.contains("already exists"), "{text}");
    c.assert_job_cleaned(job);
}

#[test]
fn sbatch_container_image_runs_the_batch_script_in_the_container() {
    let c = need!(cluster());
    let script = format!(
        "#!/bin/sh\n#SBATCH -N1\n#SBATCH --container-image={DEBIAN}\n\
         echo JOB=$SLURM_JOB_ID; grep PRETTY_NAME /etc/os-release\n"
    );
    let (job, text) = c.sbatch(&script);
    assert!(
        text.contains("PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\""),
        "{text}"
    );
    c.assert_job_cleaned(job);
}

#[test]
fn scancel_mid_run_leaves_nothing() {
    let c = need!(cluster());
    let cancel = c.submit(&format!(
        "#!/bin/sh\n#SBATCH -N2\nsrun -N2 --container-image={IMAGE} sleep 300\n"
    ));
    let job = cancel.0;
    // Wait (bounded) until both nodes' step holders run, then cancel.
    let uid = c.user.uid;
    let deadline = Instant::now() + Duration::from_secs(60);
    let holders = || {
        NODES
            .iter()
            .filter(|n| {
                std::fs::read_dir(format!("{RUNTIME}/{n}/{uid}/{job}/step.0/ctr"))
                    .is_ok_and(|mut d| d.next().is_some())
            })
            .count()
    };
    while holders() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(holders(), 2, "the step's holders never started");
    let out = Command::new("scancel")
        .arg(job.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    c.assert_job_cleaned(job);
}

#[test]
fn concurrent_jobs_of_one_user_on_one_image_keep_their_own_holders() {
    let c = need!(cluster());
    // Both jobs on n1 at once with the same image; the second still reads its image
    // after the first job's step (and holder) ended.
    let script = |tag: &str, wait: u32| {
        format!(
            "#!/bin/sh\n#SBATCH -N1 -w n1\necho JOB=$SLURM_JOB_ID\n\
             srun --container-image={DEBIAN} sh -c 'sleep {wait}; echo {tag}=$(grep -c PRETTY /etc/os-release)'\n"
        )
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| c.sbatch(&script("FIRST", 1)));
        let b = s.spawn(|| c.sbatch(&script("SECOND", 5)));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert!(a.1.contains("FIRST=1"), "{}", a.1);
    assert!(b.1.contains("SECOND=1"), "{}", b.1);
    c.assert_job_cleaned(a.0);
    c.assert_job_cleaned(b.0);
}

#[test]
fn exit_codes_and_environment_reach_srun_as_for_bare_tasks() {
    let c = need!(cluster());
    let out = c.srun(&[
        "-N1",
        &format!("--container-image={IMAGE}"),
        "sh",
        "-c",
        "exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    // pyxis semantics: the image's variables win (PATH here) unless named in
    // --container-env; other host variables and Slurm's reach the task.
    let show = "echo PATH=$PATH FOO=$FOO JOB=$SLURM_JOB_ID";
    let run = |extra: &[&str]| {
        let mut cmd = c.cmd("srun", &["-N1", &format!("--container-image={IMAGE}")]);
        cmd.args(extra)
            .args(["sh", "-c", show])
            .env("PATH", "/hostonly:/usr/bin:/bin")
            .env("FOO", "bar");
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    let image = run(&[]);
    assert!(
        image.contains("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "),
        "{image}"
    );
    assert!(image.contains("FOO=bar JOB="), "{image}");
    assert!(!image.contains("JOB=\n"), "{image}");
    let host = run(&["--container-env=PATH"]);
    assert!(host.contains("PATH=/hostonly:/usr/bin:/bin "), "{host}");
}

#[test]
fn doctor_accepts_the_installed_plugin() {
    let _c = need!(cluster());
    let out = Command::new(support::warren_bin())
        .args(["doctor", "--json"])
        .output()
        .unwrap();
    let v = support::json(&out);
    let checks = v["checks"].as_array().cloned().unwrap_or_default();
    for id in ["spank_plugin", "spank_plugstack"] {
        let c = checks
            .iter()
            .find(|c| c["id"] == id)
            .unwrap_or_else(|| panic!("no {id} in {v}"));
        assert_eq!(c["status"], "ok", "{c}");
    }
}

#[test]
fn a_pyxis_job_script_runs_unchanged() {
    let c = need!(cluster());
    // Only pyxis flags and variables, as a pyxis user writes them.
    let script = format!(
        "#!/bin/bash\n#SBATCH -N2 --ntasks-per-node=2\necho JOB=$SLURM_JOB_ID\n\
         export PYXIS_CONTAINER_ENTRYPOINT=0\n\
         srun --container-image={pyxis_form} --container-mounts=/tmp:/host-tmp:ro+rprivate,tmpfs:/scratch:size=8m,umount:/tmp \\\n\
              --container-workdir=/ --no-container-mount-home --container-remap-root \\\n\
              --container-writable --container-env=OMP_NUM_THREADS,HOME --container-entrypoint-log \\\n\
              sh -c 'echo TASK=$SLURM_PROCID; grep -c \" /scratch tmpfs \" /proc/mounts; echo TMP=$(grep -c \" /tmp \" /proc/mounts)'\n\
         srun --container-name=keep:create --container-image={pyxis_form} --no-container-remap-root true\n\
         srun --container-name=keep:no_exec true\n\
         echo DONE\n",
        pyxis_form = "127.0.0.1:5000#test/busybox:latest"
    );
    let (job, text) = c.sbatch(&script);
    for t in 0..4 {
        assert!(text.contains(&format!("TASK={t}")), "{text}");
    }
    // tmpfs: mounted, umount: gone (warren's own /tmp), in every task.
    assert_eq!(text.lines().filter(|l| *l == "1").count(), 4, "{text}");
    assert_eq!(text.matches("TMP=0").count(), 4, "{text}");
    assert!(text.contains("DONE"), "{text}");
    assert!(!text.contains("error"), "{text}");
    c.assert_job_cleaned(job);
}

#[test]
fn a_squashfs_file_is_an_image() {
    let c = need!(cluster());
    need!(support::need_programs(&["mksquashfs", "busybox"]));
    // A tiny root: a static busybox and an os-release of its own.
    let tree = c.work.path().join(format!("tree-{}", unique()));
    std::fs::create_dir_all(tree.join("bin")).unwrap();
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    let busybox = stdout(&sh("command -v busybox"));
    std::fs::copy(busybox.trim(), tree.join("bin/busybox")).unwrap();
    for l in ["sh", "cat"] {
        std::os::unix::fs::symlink("busybox", tree.join("bin").join(l)).unwrap();
    }
    std::fs::write(tree.join("etc/os-release"), "NAME=from-a-file\n").unwrap();
    let name = format!("img-{}.sqfs", unique());
    let out = Command::new("mksquashfs")
        .arg(&tree)
        .arg(c.work.path().join(&name))
        .args(["-quiet", "-noappend", "-all-root"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    c.work.give(&c.work.path().join(&name));
    // Relative to the job's working directory, as pyxis takes it.
    let out = c.srun(&[
        "-N2",
        &format!("--container-image=./{name}"),
        "cat",
        "/etc/os-release",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).matches("NAME=from-a-file").count(),
        2,
        "{}",
        stdout(&out)
    );
    // A missing file fails the tasks with warren's message.
    let out = c.srun(&["-N1", "--container-image=/nonexistent/x.sqfs", "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("x.sqfs"), "{}", stderr(&out));
}

#[test]
fn container_save_then_run_the_saved_file() {
    let c = need!(cluster());
    let name = format!("saved-{}.sqfs", unique());
    // Step one writes into its root (remap-root: root inside may) and saves the container.
    let out = c.srun(&[
        "-N1",
        &format!("--container-image={IMAGE}"),
        "--container-remap-root",
        &format!("--container-save=./{name}"),
        "sh",
        "-c",
        "echo written-in-step-one > /saved-file",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Saved before srun returned: the next step runs the file as its image.
    let saved = c.work.path().join(&name);
    assert!(saved.is_file(), "{}", stderr(&out));
    let out = c.srun(&[
        "-N2",
        &format!("--container-image=./{name}"),
        "cat",
        "/saved-file",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).matches("written-in-step-one").count(),
        2,
        "{}",
        stdout(&out)
    );
    assert!(!c.work.path().join(format!("{name}.warren-tmp")).exists());
}

#[test]
fn pmix_server_directory_is_visible_in_the_container() {
    let c = need!(cluster());
    let out = c.srun(&[
        "--mpi=pmix",
        "-N2",
        &format!("--container-image={IMAGE}"),
        "sh",
        "-c",
        "test -d \"$PMIX_SERVER_TMPDIR\" && echo PMIX_DIR_OK",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).matches("PMIX_DIR_OK").count(),
        2,
        "{}",
        stdout(&out)
    );
}

#[test]
fn three_nodes_download_each_blob_once() {
    let c = need!(cluster());
    // An image no other test uses, removed from the suite's store first: a cold pull.
    let proxy = support::proxy::CountingProxy::start();
    let image = format!("{}/test/killme:latest", proxy.addr);
    let store = support::registry::state_dir()
        .join("slurm-store")
        .join(&c.user.name);
    let warren = |args: &[&str]| {
        c.cmd(support::warren_bin().to_str().unwrap(), args)
            .env("WARREN_STORE_PATH", &store)
            .output()
            .unwrap()
    };
    let images = support::json(&warren(&["images", "--json"]));
    for img in images.as_array().cloned().unwrap_or_default() {
        let name = img["name"].as_str().unwrap_or_default();
        if name.contains("/test/killme:") {
            let out = warren(&["rmi", name]);
            assert!(out.status.success(), "{}", stderr(&out));
        }
    }
    // The image has no programs: the tasks fail to exec; the three nodes' pulls are what
    // is counted.
    let out = c.srun(&["-N3", &format!("--container-image={image}"), "/data/f0"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(!err.contains("start the holder failed"), "{err}");
    let blobs: Vec<String> = proxy
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.starts_with("GET ") && r.contains("/blobs/"))
        .cloned()
        .collect();
    assert!(!blobs.is_empty(), "nothing downloaded: {err}");
    let mut unique = blobs.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        blobs.len(),
        unique.len(),
        "a blob was downloaded twice: {blobs:?}"
    );
    // The next step on the three nodes downloads nothing.
    let before = blobs.len();
    let _ = c.srun(&["-N3", &format!("--container-image={image}"), "/data/f0"]);
    assert_eq!(
        proxy.count("/blobs/"),
        before,
        "{:?}",
        proxy.seen.lock().unwrap()
    );
}

#[test]
fn bind_flags_nosuid_nodev_noexec_take_effect() {
    let c = need!(cluster());
    use std::os::unix::fs::PermissionsExt;
    let dir = c.work.path().join(format!("bin-{}", unique()));
    std::fs::create_dir(&dir).unwrap();
    let prog = dir.join("hi");
    std::fs::write(&prog, "#!/bin/sh\necho HI\n").unwrap();
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
    c.work.give(&dir);
    let d = dir.display();
    // The same directory twice: plain at /y (runs), noexec+nosuid+nodev at /x (refused).
    let out = c.srun(&[
        "-w",
        "n1",
        "-n",
        "1",
        &format!("--container-image={IMAGE}"),
        &format!("--container-mounts={d}:/y,{d}:/x:noexec+nosuid+nodev+rprivate"),
        "sh",
        "-c",
        "/y/hi; /x/hi || echo DENIED; cat /proc/self/mountinfo",
    ]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(text.contains("HI\n"), "{text}");
    assert!(text.contains("DENIED"), "{text}");
    let opts = |dst: &str| {
        text.lines()
            .find(|l| l.split(' ').nth(4) == Some(dst))
            .and_then(|l| l.split(' ').nth(5))
            .unwrap_or_else(|| panic!("no {dst} in {text}"))
            .to_string()
    };
    let x = opts("/x");
    for f in ["noexec", "nosuid", "nodev"] {
        assert!(x.split(',').any(|o| o == f), "/x: {x}");
    }
    assert!(!opts("/y").split(',').any(|o| o == "noexec"), "{text}");
}

#[test]
fn container_mounts_apply_in_the_given_order_with_their_flags() {
    let c = need!(cluster());
    let dir = c.work.path().join(format!("m-{}", unique()));
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("f"), "FILE\n").unwrap();
    c.work.give(&dir);
    c.work.give(&dir.join("f"));
    let d = dir.display();
    let mounts = [
        // A bind inside a tmpfs: only visible if the tmpfs is mounted first.
        "tmpfs:/m".to_string(),
        format!("{d}:/m/in:ro"),
        // Mounted, then unmounted again.
        format!("{d}:/u"),
        "umount:/u".to_string(),
        // A file destination the image lacks, created as a file.
        format!("{d}/f:/files/f:x-create=file"),
        // /dev's submounts (pts) come with rbind (the default); bind of a plain dir.
        "/dev:/rdev".to_string(),
        format!("{d}:/bd:bind"),
        format!("{d}:/sl:rslave"),
        format!("{d}:/sh:shared"),
        format!("{d}:/pr:private"),
        "/nonexistent-source:/nf:nofail".to_string(),
    ]
    .join(",");
    let out = c.srun(&[
        "-w",
        "n1",
        "-n",
        "1",
        &format!("--container-image={IMAGE}"),
        &format!("--container-mounts={mounts}"),
        "sh",
        "-c",
        "echo IN=$(cat /m/in/f); touch /m/in/new 2>/dev/null || echo RO; \
         test -e /u/f || echo UMOUNTED; test -f /files/f && echo FILE=$(cat /files/f); \
         test -e /rdev/pts/ptmx && echo RBIND; test -f /bd/f && echo BIND; \
         test -e /nf || echo NOFAIL; cat /proc/self/mountinfo",
    ]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    for want in [
        "IN=FILE",
        "RO",
        "UMOUNTED",
        "FILE=FILE",
        "RBIND",
        "BIND",
        "NOFAIL",
    ] {
        assert!(text.lines().any(|l| l == want), "{want}: {text}");
    }
    // The propagation asked for: mountinfo's optional fields (field 7 on).
    let fields = |dst: &str| -> Vec<String> {
        let l = text
            .lines()
            .find(|l| l.split(' ').nth(4) == Some(dst))
            .unwrap_or_else(|| panic!("no {dst} in {text}"));
        l.split(' ')
            .skip(6)
            .take_while(|f| *f != "-")
            .map(String::from)
            .collect()
    };
    // rslave: not shared (a master only exists when the host source is a shared mount:
    // this machine's / is not, so it is a slave of nothing, i.e. private).
    let sl = fields("/sl");
    assert!(!sl.iter().any(|f| f.starts_with("shared:")), "/sl: {sl:?}");
    assert!(
        fields("/sh").iter().any(|f| f.starts_with("shared:")),
        "{text}"
    );
    assert!(fields("/pr").is_empty(), "/pr: {:?}", fields("/pr"));
    // Nothing was written into the read-only source.
    assert!(!dir.join("new").exists());
    // Rootless limit: a directory cannot be bound without the mounts below it.
    let out = c.srun(&[
        "-w",
        "n1",
        "-n",
        "1",
        &format!("--container-image={IMAGE}"),
        "--container-mounts=/dev:/bdev:bind",
        "true",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            "/dev has mounts below it, which a rootless container cannot leave out (use rbind)"
        ),
        "{}",
        stderr(&out)
    );
}

#[test]
fn container_entrypoint_runs_before_each_task_as_in_pyxis() {
    let c = need!(cluster());
    let img = need!(slurm_support::entrypoint_image());
    let image = format!("--container-image={img}");
    let run = |extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec!["-w", "n1", "-n", "2", image.as_str()];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["sh", "-c", "echo V=$EP_VAR D=$(pwd)"]);
        let out = c
            .cmd("srun", &args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (out.status.success(), stdout(&out), stderr(&out))
    };
    let count = |text: &str, line: &str| text.lines().filter(|l| *l == line).count();
    // Default (pyxis ≥ 0.12 too): the entrypoint does not run.
    let (ok, out, err) = run(&[], &[]);
    assert!(ok, "{out}{err}");
    assert_eq!(count(&out, "V= D=/"), 2, "{out}{err}");
    // --container-entrypoint: it runs in each task first; its output is hidden; what it
    // exported and its directory are the task's.
    let (ok, out, err) = run(&["--container-entrypoint"], &[]);
    assert!(ok, "{out}{err}");
    assert_eq!(
        count(&out, "V=from-entrypoint D=/tmp/ep-work"),
        2,
        "{out}{err}"
    );
    assert!(
        !out.contains("EP-RAN") && !err.contains("EP-RAN"),
        "{out}{err}"
    );
    // --container-workdir wins over its directory; the variable form; the log shows its
    // output.
    let (ok, out, err) = run(
        &["--container-entrypoint-log", "--container-workdir=/etc"],
        &[("PYXIS_CONTAINER_ENTRYPOINT", "1")],
    );
    assert!(ok, "{out}{err}");
    assert_eq!(count(&out, "V=from-entrypoint D=/etc"), 2, "{out}{err}");
    assert_eq!(count(&out, "EP-RAN-OUT"), 2, "{out}{err}");
    assert_eq!(count(&err, "EP-RAN-ERR"), 2, "{out}{err}");
    // An entrypoint that fails before running the command fails the task with its code.
    let (ok, out, err) = run(&["--container-entrypoint"], &[("EP_FAIL", "1")]);
    assert!(!ok, "{out}{err}");
    assert!(!out.contains("V="), "{out}");
    assert!(
        err.contains(
            "the image's entrypoint (/ep.sh): ended (exit code 3) without running the command"
        ),
        "{err}"
    );
}

#[test]
fn without_shared_root_each_task_has_its_own_root() {
    let c = need!(cluster());
    let seen = slurm_support::two_tasks_write_into_their_roots(c, IMAGE);
    assert!(seen.iter().all(|(n, _)| *n == 1), "{seen:?}");
    assert_ne!(seen[0].1, seen[1].1, "{seen:?}");
}

#[test]
fn exec_enters_the_running_named_container() {
    let c = need!(cluster());
    let ready = c.work.path().join(format!("ready-{}", unique()));
    let w = c.work.path().display().to_string();
    // Step 1 writes into its root and keeps running; step 2 (concurrent, :exec) reads it.
    let script = format!(
        "#!/bin/sh\n#SBATCH -N1 -n2 -w n1\necho JOB=$SLURM_JOB_ID\n\
         srun -n1 --container-name=live --container-image={IMAGE} --container-remap-root \
         --container-mounts={w}:{w} sh -c 'echo running > /live; touch {r}; sleep 10' &\n\
         for i in $(seq 600); do [ -e {r} ] && break; sleep 0.1; done\n\
         srun -n1 --overlap --container-name=live:exec sh -c 'echo EXEC=$(cat /live)'\n\
         wait\n",
        r = ready.display()
    );
    let (job, text) = c.sbatch(&script);
    assert!(text.contains("EXEC=running"), "{text}");
    c.assert_job_cleaned(job);
}

/// Processes of `job` (its tasks: `SLURM_JOB_ID` in their environment) that live in a
/// user namespace other than the host's (in a container): (pid, command).
fn container_tasks_of_job(job: u32) -> Vec<(i32, String)> {
    let host = std::fs::read_link("/proc/self/ns/user").unwrap();
    let mut v = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let env = std::fs::read(e.path().join("environ")).unwrap_or_default();
        let ours = String::from_utf8_lossy(&env)
            .split('\0')
            .any(|kv| kv == format!("SLURM_JOB_ID={job}"));
        let ns = std::fs::read_link(e.path().join("ns/user"));
        if ours && ns.is_ok_and(|n| n != host) {
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            v.push((pid, String::from_utf8_lossy(&cmd).replace('\0', " ")));
        }
    }
    v
}

#[test]
fn a_task_killed_like_by_the_oom_killer_leaves_nothing() {
    // The test cluster enforces no memory limit (TaskPlugin=task/none, no cgroup.conf,
    // jobacct_gather/none: `--mem` is not enforced), so a real OOM kill cannot be
    // provoked; the kernel's OOM killer ends a task with SIGKILL, as this task does to
    // itself, while the other task of the node goes on.
    let c = need!(cluster());
    let script = format!(
        "#!/bin/sh\n#SBATCH -N1 -n2 -w n1\necho JOB=$SLURM_JOB_ID\n\
         srun -n2 --container-image={IMAGE} sh -c '[ $SLURM_PROCID = 0 ] && kill -9 $$; sleep 1; echo SURVIVOR'\n\
         echo STEP=$?\n"
    );
    let (job, text) = c.sbatch(&script);
    assert_eq!(text.matches("SURVIVOR").count(), 1, "{text}");
    assert!(!text.contains("STEP=0"), "{text}");
    c.assert_job_cleaned(job);
    assert!(container_tasks_of_job(job).is_empty());
}

#[test]
fn a_sigkilled_slurmstepd_leaves_nothing_after_job_end() {
    let c = need!(cluster());
    let cancel = c.submit(&format!(
        "#!/bin/sh\n#SBATCH -N1 -w n1\nsrun --container-image={IMAGE} sleep 300\n"
    ));
    let job = cancel.0;
    // Wait (bounded) until the task runs in its container.
    let deadline = Instant::now() + Duration::from_secs(60);
    while container_tasks_of_job(job).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !container_tasks_of_job(job).is_empty(),
        "the task never started"
    );
    let stepd = stdout(&sh(&format!("pgrep -f '^slurmstepd: \\[{job}\\.0\\]'")));
    let pid: i32 = stepd.trim().parse().unwrap_or_else(|_| panic!("{stepd:?}"));
    // SAFETY: kill(2) of the step's slurmstepd, found just above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    // Its task keeps running, orphaned: Slurm's proctrack/linuxproc no longer finds it.
    let out = Command::new("scancel")
        .arg(job.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    c.wait_job(job);
    // The job epilog stopped the holder the dead slurmstepd left, removed the job's
    // dirs and killed what was left in the container's user namespace.
    c.assert_job_cleaned(job);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !container_tasks_of_job(job).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(container_tasks_of_job(job), vec![]);
}

/// The user's prefetch lists of the command `cmd` (`DIGEST.cmd` in `~/.cache/warren/prefetch`).
fn lists_of(c: &Cluster, cmd: &str) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(c.user.home.join(".cache/warren/prefetch"))
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == cmd))
                .collect()
        })
        .unwrap_or_default()
}

/// Wait (bounded) for a list of `cmd`: it is written as the step's holder ends.
fn wait_for_list_of(c: &Cluster, cmd: &str) -> Vec<std::path::PathBuf> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let lists = lists_of(c, cmd);
        if !lists.is_empty() {
            return lists;
        }
        assert!(
            Instant::now() < deadline,
            "no list of `{cmd}` in the user's cache"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_step_records_its_commands_prefetch_list() {
    // docs/run.md, "The prefetch list": a step's holder is started with the tasks'
    // command; on its fresh mount it records what they read, under that command's name,
    // in the user's cache, and writes it when the step ends. `tac` names it: no other
    // test runs it.
    let c = need!(cluster());
    for p in lists_of(c, "tac") {
        std::fs::remove_file(p).unwrap();
    }
    let out = c.srun(&[
        "-N1",
        &format!("--container-image={DEBIAN}"),
        "tac",
        "/etc/os-release",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("PRETTY_NAME"), "{}", stdout(&out));
    let lists = wait_for_list_of(c, "tac");
    assert_eq!(lists.len(), 1, "{lists:?}");
    let text = String::from_utf8_lossy(&std::fs::read(&lists[0]).unwrap()).into_owned();
    assert!(text.starts_with("warren-prefetch-list 1\n"), "{text:?}");
    assert!(
        text.contains("/usr/bin/tac") && text.contains("os-release"),
        "{text:?}"
    );
    let md = std::fs::metadata(&lists[0]).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&md), c.user.uid);
}

#[test]
fn a_fresh_step_holder_reads_the_commands_list_ahead() {
    // docs/slurm.md: a holder the plugin starts on a fresh image mount records the tasks'
    // command's prefetch list when there is none yet, and reads it ahead when there is
    // one (its reader locks `prefetch/LIST.lock` in the holder's runtime dir, there
    // while the job runs). `nl` names the list: no other test runs it. A named container's holder
    // outlives its step, so the batch script can look into its runtime dir.
    let c = need!(cluster());
    for p in lists_of(c, "nl") {
        std::fs::remove_file(p).unwrap();
    }
    // Files of the image, so that the list is long enough to be read ahead (8 entries).
    let files = "/etc/os-release /etc/debian_version /etc/issue /etc/shells /etc/login.defs \
                 /etc/host.conf /etc/nsswitch.conf /etc/profile";
    let script = format!(
        "#!/bin/sh\n\
         srun -N1 --container-image={DEBIAN} --container-name=plist nl {files} >/dev/null \
         || exit 1\n\
         echo LOCKS: $(ls /run/warren/$SLURMD_NODENAME/$(id -u)/$SLURM_JOB_ID/name.plist/prefetch \
         2>/dev/null)\n"
    );
    // No list yet: the holder records one (written when the job's holder ends).
    let (_, text) = c.sbatch(&script);
    assert!(text.contains("LOCKS:"), "{text}");
    assert!(
        !text.contains(".nl.lock"),
        "nothing to read ahead yet: {text}"
    );
    let lists = wait_for_list_of(c, "nl");
    let list = String::from_utf8_lossy(&std::fs::read(&lists[0]).unwrap()).into_owned();
    assert!(list.matches('\0').count() >= 8, "{list:?}");
    assert!(
        list.contains("/usr/bin/nl") && list.contains("/etc/shells"),
        "{list:?}"
    );
    // The next job's fresh holder reads it ahead.
    let (_, text) = c.sbatch(&script);
    let name = lists[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        text.contains(&format!("{name}.lock")),
        "no reader of {name}: {text}"
    );
}

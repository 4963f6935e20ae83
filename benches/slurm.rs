//! Slurm benchmark (harness = false) on the three-node test cluster (scripts/slurm.sh),
//! with warren's SPANK plugin built from this tree (release) installed the way the tests
//! install it (scripts/install-plugin.sh, warren= this bench's own warren binary).
//! Rows, all as the user warren-ci, interleaved round by round, medians of the same run:
//!   `srun -n 16 true` vs `srun -n 16 --container-image=DEBIAN true`        (warm store)
//!   `srun -N 3 -n 48 true` vs `srun -N 3 -n 48 --container-image=DEBIAN true`
//!   cold vs warm first use: `srun -N 3 -n 3 --container-image=DEBIAN true` after
//!     `warren rmi DEBIAN` (the user's store lacks it: three nodes pull and squash at once)
//!   Python imports (`import email, json, http.client, xml.dom.minidom, asyncio, unittest,
//!     argparse, logging`, timed inside python3, in a fresh holder per step on n1) over
//!     the same squashfs file: kernel squashfs (shared store, kernel_mount=yes) vs
//!     squashfuse (a copy of the file, `--container-image=PATH`) vs the tree unpacked in
//!     a local directory (`unshare -r chroot DIR`, no overlay).
//! Needs the test images debian and python (scripts/test-images.sh debian python).
//!   cargo bench --bench slurm [-- ROUNDS]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

const DEBIAN: &str = "127.0.0.1:5000/test/debian:latest";
const PYTHON: &str = "127.0.0.1:5000/test/python:latest";
const USER: &str = "warren-ci";
const IMPORTS: &str = "import time; t = time.perf_counter(); \
    import email, json, http.client, xml.dom.minidom, asyncio, unittest, argparse, logging; \
    print((time.perf_counter() - t) * 1e3)";

fn sh(cmd: &str) -> Result<String, String> {
    let o = Command::new("sh")
        .args(["-ec", cmd])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if !o.status.success() {
        return Err(format!(
            "`{cmd}` failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// What one sample measures: the wall time of `argv`, or the number (ms) it prints.
#[derive(Clone, Copy, PartialEq)]
enum Measure {
    Wall,
    Printed,
}

struct Row {
    name: String,
    argv: Vec<String>,
    /// Run before each sample, not timed (e.g. remove the image for a cold start).
    before: Option<Vec<String>>,
    measure: Measure,
    samples: Vec<f64>,
    error: Option<String>,
}

fn run(argv: &[String]) -> Result<(f64, String), String> {
    let t = Instant::now();
    let o = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", argv[0]))?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    if !o.status.success() {
        return Err(format!(
            "{} failed: {}",
            argv.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    Ok((ms, String::from_utf8_lossy(&o.stdout).into_owned()))
}

fn sample(r: &Row) -> Result<f64, String> {
    if let Some(b) = &r.before {
        run(b)?;
    }
    let (ms, out) = run(&r.argv)?;
    match r.measure {
        Measure::Wall => Ok(ms),
        Measure::Printed => out
            .lines()
            .last()
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| format!("{}: no number in output {out:?}", r.argv.join(" "))),
    }
}

/// Every row once per round, round after round (a change of the machine's load hits all
/// rows alike); the first round only warms caches.
fn run_rounds(rows: &mut [Row], rounds: usize) {
    for round in 0..=rounds {
        for r in rows.iter_mut().filter(|r| r.error.is_none()) {
            match sample(r) {
                Ok(v) if round > 0 => r.samples.push(v),
                Ok(_) => {}
                Err(e) => r.error = Some(e),
            }
        }
    }
}

fn median(v: &[f64]) -> Option<f64> {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied()
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn row(name: &str, argv: Vec<String>, measure: Measure) -> Row {
    Row {
        name: name.into(),
        argv,
        before: None,
        measure,
        samples: vec![],
        error: None,
    }
}

/// As root: install the plugin built from this tree (release), warren= this bench's
/// binary, kernel_mount=yes with the python image in the shared store.
fn install(root: &Path, state: &Path, warren: &Path) -> Result<(), String> {
    for d in ["slurm-store", "slurm-shared"] {
        sh(&format!(
            "mkdir -p {0}/{d} && chmod 755 {0}/{d}",
            state.display()
        ))?;
    }
    sh(&format!(
        "d={s}/slurm-store/{USER}; [ -d $d ] || {{ mkdir $d && chown {USER}: $d; }}",
        s = state.display()
    ))?;
    sh(&format!(
        "WARREN_STORE_SHARED={}/slurm-shared WARREN_CONFIG=/dev/null {} pull --shared --quiet {PYTHON}",
        state.display(),
        warren.display()
    ))?;
    let conf = "/etc/slurm/plugstack.conf.d/warren.conf";
    let before = std::fs::read_to_string(conf).unwrap_or_default();
    sh(&format!(
        "cd {r} && bash scripts/install-plugin.sh --no-binary warren={w} \
         store={s}/slurm-store/%u runtime_path=/run/warren \
         shared_store={s}/slurm-shared kernel_mount=yes",
        r = root.display(),
        w = warren.display(),
        s = state.display()
    ))?;
    // Only a first install needs slurmd restarted (it looks for job epilogs when it
    // starts); a changed line is read by every new srun and slurmstepd.
    if std::fs::read_to_string(conf).unwrap_or_default() != before
        && !before.contains("libwarren_spank.so")
    {
        sh(&format!("bash {}/scripts/slurm.sh restart", root.display()))?;
    }
    Ok(())
}

/// Become `user` (its IDs and environment), without Slurm variables of our own.
fn drop_to(user: &str) -> Result<(u32, u32), String> {
    let line = sh(&format!("getent passwd {user}"))?;
    let f: Vec<&str> = line.trim().split(':').collect();
    let (Some(uid), Some(gid)) = (
        f.get(2).and_then(|v| v.parse().ok()),
        f.get(3).and_then(|v| v.parse().ok()),
    ) else {
        return Err(format!("user {user} missing (scripts/setup-host.sh)"));
    };
    // SAFETY: plain credential syscalls in a single-threaded process.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0
            || libc::setresgid(gid, gid, gid) != 0
            || libc::setresuid(uid, uid, uid) != 0
        {
            return Err(format!(
                "become {user}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    for (k, _) in std::env::vars() {
        if k.starts_with("SLURM_") || k.starts_with("PYXIS_") || k.starts_with("WARREN_") {
            std::env::remove_var(k);
        }
    }
    std::env::set_var("HOME", f.get(5).unwrap_or(&"/"));
    std::env::set_var("USER", user);
    Ok((uid, gid))
}

/// Report `msg`, remove the bench's work dir, exit 1.
fn fail(work: &Path, msg: &str) -> ! {
    eprintln!("slurm bench: {msg}");
    let _ = std::fs::remove_dir_all(work);
    std::process::exit(1);
}

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let state = std::env::var_os("WARREN_TEST_STATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/warren-test"));
    let warren = PathBuf::from(env!("CARGO_BIN_EXE_warren"));
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("slurm bench: run as root (it installs the plugin, then runs as {USER})");
        std::process::exit(2);
    }
    let nodes = sh("sinfo -h -N -o %N").unwrap_or_default();
    if !["n1", "n2", "n3"].iter().all(|n| nodes.contains(n)) {
        eprintln!("slurm bench: the test cluster is not up (bash scripts/slurm.sh start)");
        std::process::exit(2);
    }
    if let Err(e) = install(&root, &state, &warren) {
        eprintln!("slurm bench: set-up: {e}");
        std::process::exit(1);
    }
    // The user's work dir, the squashfuse copy of the python image and its unpacked tree.
    let work = PathBuf::from("/var/tmp/warren-bench-slurm");
    let shared = state.join("slurm-shared");
    let prep = sh(&format!(
        "rm -rf {w} && mkdir -p {w} && \
         f=$(WARREN_STORE_SHARED={sh} WARREN_CONFIG=/dev/null {b} inspect {PYTHON} | \
             sed -n 's/.*\"squashfs\": *\"\\([^\"]*\\)\".*/\\1/p') && \
         cp \"$f\" {w}/python.sqfs && unsquashfs -q -no-xattrs -d {w}/python-tree {w}/python.sqfs >/dev/null && \
         chown -R {USER}: {w}",
        w = work.display(),
        sh = shared.display(),
        b = warren.display(),
    ));
    if let Err(e) = prep {
        fail(&work, &format!("preparing the python image: {e}"));
    }
    if let Err(e) = drop_to(USER) {
        fail(&work, &e);
    }
    let _ = std::env::set_current_dir(&work);
    let store = state.join("slurm-store").join(USER);
    // Warm the user's store with the Debian image.
    let warm = run(&s(&[
        "srun",
        "-N",
        "3",
        "-n",
        "3",
        "--container-image",
        DEBIAN,
        "true",
    ]));
    if let Err(e) = warm {
        fail(&work, &format!("warming: {e}"));
    }
    let img = format!("--container-image={DEBIAN}");
    let py_path = format!("--container-image={}/python.sqfs", work.display());
    let py_shared = format!("--container-image={PYTHON}");
    let tree = format!("{}/python-tree", work.display());
    let mut cold = row(
        "srun -N 3 -n 3 --container-image=DEBIAN true (cold: not in the store)",
        s(&["srun", "-N", "3", "-n", "3", &img, "true"]),
        Measure::Wall,
    );
    // Untag, then drop its blobs and squashfs: nothing of it is left in the store.
    cold.before = Some(s(&[
        "sh",
        "-ec",
        &format!(
            "export WARREN_STORE_PATH={st} WARREN_CONFIG=/dev/null; {w} rmi {DEBIAN}; {w} prune >/dev/null",
            st = store.display(),
            w = warren.display()
        ),
    ]));
    let mut rows = vec![
        row(
            "srun -n 16 true",
            s(&["srun", "-n", "16", "true"]),
            Measure::Wall,
        ),
        row(
            "srun -n 16 --container-image=DEBIAN true",
            s(&["srun", "-n", "16", &img, "true"]),
            Measure::Wall,
        ),
        row(
            "srun -N 3 -n 48 true",
            s(&["srun", "-N", "3", "-n", "48", "true"]),
            Measure::Wall,
        ),
        row(
            "srun -N 3 -n 48 --container-image=DEBIAN true",
            s(&["srun", "-N", "3", "-n", "48", &img, "true"]),
            Measure::Wall,
        ),
        cold,
        row(
            "srun -N 3 -n 3 --container-image=DEBIAN true (warm)",
            s(&["srun", "-N", "3", "-n", "3", &img, "true"]),
            Measure::Wall,
        ),
        row(
            "python imports, kernel squashfs (shared store, kernel_mount=yes)",
            s(&[
                "srun", "-w", "n1", "-n", "1", &py_shared, "python3", "-c", IMPORTS,
            ]),
            Measure::Printed,
        ),
        row(
            "python imports, squashfuse (--container-image=PATH)",
            s(&[
                "srun", "-w", "n1", "-n", "1", &py_path, "python3", "-c", IMPORTS,
            ]),
            Measure::Printed,
        ),
        row(
            "python imports, unpacked local dir (unshare -r chroot)",
            s(&[
                "srun", "-w", "n1", "-n", "1", "unshare", "-r", "chroot", &tree, "python3", "-c",
                IMPORTS,
            ]),
            Measure::Printed,
        ),
    ];
    run_rounds(&mut rows, rounds);
    // The next user of the cluster finds the image warm again.
    let _ = run(&s(&["srun", "-N", "3", "-n", "3", &img, "true"]));
    println!("slurm bench: {rounds} rounds (after one warm-up round), medians in ms");
    println!("{:<72} {:>10}  samples", "what", "median");
    for r in &rows {
        match (&r.error, median(&r.samples)) {
            (None, Some(m)) => {
                let all: Vec<String> = r.samples.iter().map(|v| format!("{v:.0}")).collect();
                println!("{:<72} {:>10.1}  {}", r.name, m, all.join(" "));
            }
            (Some(e), _) => println!("{:<72} {:>10}  {e}", r.name, "failed"),
            (None, None) => println!("{:<72} {:>10}", r.name, "no samples"),
        }
    }
    let m = |i: usize| {
        rows[i]
            .error
            .is_none()
            .then(|| median(&rows[i].samples))
            .flatten()
    };
    for (what, bare, cont) in [("-n 16", 0, 1), ("-N 3 -n 48", 2, 3), ("cold/warm", 5, 4)] {
        if let (Some(a), Some(b)) = (m(bare), m(cont)) {
            println!("ratio {what}: {:.2}x", b / a);
        }
    }
    let _ = std::fs::remove_dir_all(&work);
}

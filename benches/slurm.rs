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
//!     warren's image server (a copy of the file, `--container-image=PATH`; a first step
//!     without the command's prefetch list, later steps with it) vs the tree unpacked in
//!     a local directory (`unshare -r chroot DIR`, no overlay).
//! Needs the test images debian and python (scripts/test-images.sh debian python).
//!   cargo bench --bench slurm [-- ROUNDS]

#[path = "support/cluster.rs"]
mod cluster;

use cluster::{median, need_root_and_cluster, rounds, s, sh, USER};

/// Wall time (ms) and stdout of `argv`.
fn run(argv: &[String]) -> Result<(f64, String), String> {
    cluster::run(argv, &[])
}
use std::path::{Path, PathBuf};

const DEBIAN: &str = "127.0.0.1:5000/test/debian:latest";
const PYTHON: &str = "127.0.0.1:5000/test/python:latest";
const IMPORTS: &str = "import time; t = time.perf_counter(); \
    import email, json, http.client, xml.dom.minidom, asyncio, unittest, argparse, logging; \
    print((time.perf_counter() - t) * 1e3)";

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
    cluster::prepare_stores(state)?;
    sh(&format!(
        "WARREN_STORE_SHARED={}/slurm-shared WARREN_CONFIG=/dev/null {} pull --shared --quiet {PYTHON}",
        state.display(),
        warren.display()
    ))?;
    cluster::install_plugin(root, state, warren, "kernel_mount=yes")
}

fn fail(work: &Path, msg: &str) -> ! {
    cluster::fail("slurm", work, msg)
}

fn main() {
    let rounds = rounds(5);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let state = std::env::var_os("WARREN_TEST_STATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/warren-test"));
    let warren = PathBuf::from(env!("CARGO_BIN_EXE_warren"));
    need_root_and_cluster("slurm");
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
    if let Err(e) = cluster::drop_to(USER, &["SLURM_", "PYXIS_", "WARREN_"]) {
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
    // warren's image server under a step's fresh holder: the first step of an image and
    // command (no prefetch list: removed before each sample; the step records one), and
    // the later ones (the holder reads the list the step before wrote ahead). The command
    // is called `python3.11` here, a name no other row or test uses, so that removing
    // its lists removes no other list of the user's.
    let py_step = s(&[
        "srun",
        "-w",
        "n1",
        "-n",
        "1",
        &py_path,
        "python3.11",
        "-c",
        IMPORTS,
    ]);
    let lists = "\"$HOME\"/.cache/warren/prefetch/*.python3.11";
    let mut first_step = row(
        "python imports, warren's server (PATH), first step (no prefetch list)",
        py_step.clone(),
        Measure::Printed,
    );
    first_step.before = Some(s(&["sh", "-c", &format!("rm -f {lists}")]));
    let mut later_step = row(
        "python imports, warren's server (PATH), later steps (prefetch list)",
        py_step,
        Measure::Printed,
    );
    // The list is written as the step before ends on the node: wait for it (untimed).
    later_step.before = Some(s(&[
        "sh",
        "-c",
        &format!(
            "for i in $(seq 100); do ls {lists} >/dev/null 2>&1 && exit 0; sleep 0.1; done; \
             echo no prefetch list >&2; exit 1"
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
        first_step,
        later_step,
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

//! MPI benchmark (harness = false): containers against bare metal in the same run,
//! interleaved round by round, medians, as the user warren-ci (docs/performance.md):
//!   2-rank intra-node ping-pong (tests/fixtures/mpi/pingpong.c: half round trip of
//!     8-byte messages, bandwidth of 1 MiB messages) with Open MPI's shared-memory
//!     transport and CMA single copy, ranks started by the host's `mpirun`:
//!     bare `mpi-pingpong` vs each rank a `warren run -q test/openmpi mpi-pingpong`
//!     joining one holder (one user namespace); targets ≤ 1.1× latency, ≥ 0.95× bandwidth.
//!   `srun -n 32 --mpi=pmix` MPI hello wall time, bare (host-built) vs
//!     `--container-image=test/openmpi` (plugin from this tree, release; 2-core VM: 32
//!     tasks oversubscribe the nodes' CPUs=16 of scripts/slurm.sh); target ≤ 1.25×.
//! Verdicts use the median of per-round ratios (the two rows of a round run back to back
//! under the same load), the ratio of medians is printed beside it.
//! Needs the test image openmpi (scripts/test-images.sh openmpi), mpicc, the cluster.
//!   cargo bench --bench mpi [-- ROUNDS]

#[path = "support/cluster.rs"]
mod cluster;

use cluster::{need_root_and_cluster, rounds, run, s, sh, USER};
use std::path::{Path, PathBuf};

const OPENMPI: &str = "127.0.0.1:5000/test/openmpi:latest";
const ITERS: &str = "2000";

fn printed(out: &str, prefix: &str) -> Result<f64, String> {
    out.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no {prefix:?} in {out:?}"))
}

/// As root: the plugin built from this tree (release) with warren= this bench's binary.
fn install(root: &Path, state: &Path, warren: &Path) -> Result<(), String> {
    cluster::prepare_stores(state)?;
    cluster::install_plugin(root, state, warren, "")
}

/// The median of `v`, NaN when empty.
fn median(v: &[f64]) -> f64 {
    cluster::median(v).unwrap_or(f64::NAN)
}

fn fail(work: &Path, msg: &str) -> ! {
    cluster::fail("mpi", work, msg)
}

fn main() {
    let rounds = rounds(11);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let state = std::env::var_os("WARREN_TEST_STATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/warren-test"));
    let warren = PathBuf::from(env!("CARGO_BIN_EXE_warren"));
    need_root_and_cluster("mpi");
    if let Err(e) = install(&root, &state, &warren) {
        eprintln!("mpi bench: set-up: {e}");
        std::process::exit(1);
    }
    // The user's work dir: our programs built against the host's Open MPI, a store.
    let work = PathBuf::from("/var/tmp/warren-bench-mpi");
    let prep = sh(&format!(
        "rm -rf {w} && mkdir -p {w}/store && for p in hello pingpong; do \
         mpicc -O2 -o {w}/$p {r}/tests/fixtures/mpi/$p.c; done && \
         printf '[store]\\npath = \"{w}/store\"\\n' > {w}/warren.toml && chown -R {USER}: {w}",
        w = work.display(),
        r = root.display()
    ));
    if let Err(e) = prep {
        fail(&work, &format!("preparing: {e}"));
    }
    if let Err(e) = cluster::drop_to(USER, &["SLURM_", "WARREN_", "OMPI_"]) {
        fail(&work, &e);
    }
    let _ = std::env::set_current_dir(&work);
    std::env::set_var("WARREN_CONFIG", work.join("warren.toml"));
    let w = warren.display().to_string();
    let holder = run(
        &s(&[&w, "run", "-q", "--holder", "--name", "mpi-bench", OPENMPI]),
        &[],
    );
    if let Err(e) = holder {
        fail(&work, &format!("holder: {e}"));
    }
    let stop_holder = || {
        let _ = run(&s(&[&w, "rm", "mpi-bench"]), &[]);
    };
    // Warm the Slurm user's store too.
    let img = format!("--container-image={OPENMPI}");
    if let Err(e) = run(&s(&["srun", "-N", "2", "-n", "2", &img, "true"]), &[]) {
        stop_holder();
        fail(&work, &format!("warming: {e}"));
    }
    let mpirun = |rank: &[&str]| {
        let mut v = s(&[
            "timeout",
            "300",
            "mpirun",
            "-n",
            "2",
            "--mca",
            "btl",
            "self,vader",
            "--mca",
            "btl_vader_single_copy_mechanism",
            "cma",
        ]);
        v.extend(s(rank));
        v
    };
    let pp_bare = mpirun(&[&format!("{}/pingpong", work.display()), ITERS]);
    let pp_cont = mpirun(&[&w, "run", "-q", OPENMPI, "mpi-pingpong", ITERS]);
    let hello_bare = s(&[
        "srun",
        "-n",
        "32",
        "--mpi=pmix",
        &format!("{}/hello", work.display()),
    ]);
    let hello_cont = s(&["srun", "-n", "32", "--mpi=pmix", &img, "mpi-hello"]);
    let tcp = [("OMPI_MCA_btl", "self,tcp")];
    let (mut lat, mut bw, mut wall) = ([vec![], vec![]], [vec![], vec![]], [vec![], vec![]]);
    let mut err = None;
    'rounds: for round in 0..=rounds {
        for (i, argv) in [&pp_bare, &pp_cont].into_iter().enumerate() {
            match run(argv, &[]).and_then(|(_, out)| {
                Ok((
                    printed(&out, "latency_us 8 ")?,
                    printed(&out, "bandwidth_mbs 1048576 ")?,
                ))
            }) {
                Ok((l, b)) if round > 0 => {
                    lat[i].push(l);
                    bw[i].push(b);
                }
                Ok(_) => {}
                Err(e) => {
                    err = Some(e);
                    break 'rounds;
                }
            }
        }
        for (i, argv) in [&hello_bare, &hello_cont].into_iter().enumerate() {
            match run(argv, &tcp) {
                Ok((ms, out)) if out.lines().count() == 32 => {
                    if round > 0 {
                        wall[i].push(ms)
                    }
                }
                Ok((_, out)) => {
                    err = Some(format!("{}: {} lines", argv.join(" "), out.lines().count()));
                    break 'rounds;
                }
                Err(e) => {
                    err = Some(e);
                    break 'rounds;
                }
            }
        }
    }
    stop_holder();
    let _ = std::fs::remove_dir_all(&work);
    if let Some(e) = err {
        eprintln!("mpi bench: {e}");
        std::process::exit(1);
    }
    let (lb, lc) = (median(&lat[0]), median(&lat[1]));
    let (bb, bc) = (median(&bw[0]), median(&bw[1]));
    let (hb, hc) = (median(&wall[0]), median(&wall[1]));
    // Per-round ratios: both rows of a round ran back to back under the same load.
    let ratio = |v: &[Vec<f64>; 2]| {
        median(
            &v[0]
                .iter()
                .zip(&v[1])
                .map(|(b, c)| c / b)
                .collect::<Vec<_>>(),
        )
    };
    let (rl, rb, rh) = (ratio(&lat), ratio(&bw), ratio(&wall));
    let verdict = |ok: bool| if ok { "meets" } else { "MISSES" };
    println!("MPI, container vs bare metal ({rounds} rounds, interleaved; medians)");
    println!("| what | bare metal | container | ratio of medians | median of per-round ratios | target |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| 2-rank ping-pong latency, 8 B (µs, half round trip) | {lb:.3} | {lc:.3} | {:.2}× | {rl:.2}× | ≤ 1.1× ({}) |",
        lc / lb,
        verdict(rl <= 1.1)
    );
    println!(
        "| 2-rank ping-pong bandwidth, 1 MiB (MB/s) | {bb:.0} | {bc:.0} | {:.2}× | {rb:.2}× | ≥ 0.95× ({}) |",
        bc / bb,
        verdict(rb >= 0.95)
    );
    println!(
        "| `srun -n 32 --mpi=pmix` hello (ms, wall) | {hb:.0} | {hc:.0} | {:.2}× | {rh:.2}× | ≤ 1.25× ({}) |",
        hc / hb,
        verdict(rh <= 1.25)
    );
    println!(
        "samples: latency bare {:?} container {:?}; bandwidth bare {:?} container {:?}; hello bare {:?} container {:?}",
        lat[0], lat[1], bw[0], bw[1], wall[0], wall[1]
    );
}

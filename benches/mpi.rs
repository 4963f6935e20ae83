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

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

const OPENMPI: &str = "127.0.0.1:5000/test/openmpi:latest";
const USER: &str = "warren-ci";
const ITERS: &str = "2000";

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

/// Wall time (ms) and stdout of `argv` with `env` added.
fn run(argv: &[String], env: &[(&str, &str)]) -> Result<(f64, String), String> {
    let t = Instant::now();
    let o = Command::new(&argv[0])
        .args(&argv[1..])
        .envs(env.iter().copied())
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

fn printed(out: &str, prefix: &str) -> Result<f64, String> {
    out.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no {prefix:?} in {out:?}"))
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// As root: the plugin built from this tree (release) with warren= this bench's binary.
fn install(root: &Path, state: &Path, warren: &Path) -> Result<(), String> {
    sh(&format!(
        "mkdir -p {0}/slurm-store {0}/slurm-shared && chmod 755 {0}/slurm-store {0}/slurm-shared && \
         d={0}/slurm-store/{USER}; [ -d $d ] || {{ mkdir $d && chown {USER}: $d; }}",
        state.display()
    ))?;
    let conf = "/etc/slurm/plugstack.conf.d/warren.conf";
    let before = std::fs::read_to_string(conf).unwrap_or_default();
    sh(&format!(
        "cd {r} && bash scripts/install-plugin.sh --no-binary warren={w} \
         store={s}/slurm-store/%u runtime_path=/run/warren shared_store={s}/slurm-shared",
        r = root.display(),
        w = warren.display(),
        s = state.display()
    ))?;
    if std::fs::read_to_string(conf).unwrap_or_default() != before {
        sh(&format!("bash {}/scripts/slurm.sh restart", root.display()))?;
    }
    Ok(())
}

/// Become `user` (IDs, HOME), without Slurm or warren variables of our own.
fn drop_to(user: &str) -> Result<(), String> {
    let line = sh(&format!("getent passwd {user}"))?;
    let f: Vec<&str> = line.trim().split(':').collect();
    let (Some(uid), Some(gid)) = (
        f.get(2).and_then(|v| v.parse::<u32>().ok()),
        f.get(3).and_then(|v| v.parse::<u32>().ok()),
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
        if k.starts_with("SLURM_") || k.starts_with("WARREN_") || k.starts_with("OMPI_") {
            std::env::remove_var(k);
        }
    }
    std::env::set_var("HOME", f.get(5).unwrap_or(&"/"));
    std::env::set_var("USER", user);
    Ok(())
}

fn fail(work: &Path, msg: &str) -> ! {
    eprintln!("mpi bench: {msg}");
    let _ = std::fs::remove_dir_all(work);
    std::process::exit(1);
}

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(11);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let state = std::env::var_os("WARREN_TEST_STATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/warren-test"));
    let warren = PathBuf::from(env!("CARGO_BIN_EXE_warren"));
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("mpi bench: run as root (it installs the plugin, then runs as {USER})");
        std::process::exit(2);
    }
    let nodes = sh("sinfo -h -N -o %N").unwrap_or_default();
    if !["n1", "n2", "n3"].iter().all(|n| nodes.contains(n)) {
        eprintln!("mpi bench: the test cluster is not up (bash scripts/slurm.sh start)");
        std::process::exit(2);
    }
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
    if let Err(e) = drop_to(USER) {
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

//! Image I/O benchmark (harness = false), as root: what a metadata-heavy start costs
//! through warren against the same tree in a local directory and against ch-run on the
//! very same squashfs file, and the fuse-overlayfs back end against kernel overlay.
//!
//! Image: 127.0.0.1:5000/test/python:latest (`scripts/test-images.sh python`), pulled into
//! a private store by `warren-ci`; its squashfs is unpacked (`unsquashfs`, as warren-ci)
//! into a local directory for the baseline. Every command runs as `warren-ci`.
//!   py    `python3 -c 'import email, json, http.client, xml.dom.minidom, asyncio,
//!          unittest, argparse, logging'`
//!   find  `sh -c 'find / -xdev | wc -l'`
//! through: warren's own image server (first container: a fresh mount; without and with
//! the image's prefetch list, which the row's first run makes), squashfuse_ll
//! (`run.image_server = squashfuse`), a container joining a holder of the image (warm
//! mount, built-in server), the local directory (`unshare -r chroot DIR`), ch-run.
//! Warm: page cache hot (rounds interleaved, medians); cold: `echo 3 >
//! /proc/sys/vm/drop_caches` before every run. Then `true` with `--overlay native` and
//! `--overlay fuse` (median and p90, 30 runs each, interleaved).
//! With WARREN_BENCH_CPUS=LIST (e.g. `0`, or `0,1`), every command runs on those CPUs
//! only (its image server and holder too, which inherit it): FUSE round trips between
//! processes on one CPU need no wake-up of another, idle CPU.
//!   cargo bench --bench image_io [-- ROUNDS]     (warm rounds; cold: a third of them)

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

const IMAGE: &str = "127.0.0.1:5000/test/python:latest";
const PY: &str =
    "import email, json, http.client, xml.dom.minidom, asyncio, unittest, argparse, logging";
const FIND: &str = "find / -xdev | wc -l";

/// Who runs the commands, and their environment.
#[derive(Clone)]
struct User {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

fn user(name: &str) -> Result<User, String> {
    let out = Command::new("getent")
        .args(["passwd", name])
        .output()
        .map_err(|e| e.to_string())?;
    let line = String::from_utf8_lossy(&out.stdout).to_string();
    let f: Vec<&str> = line.trim().split(':').collect();
    if f.len() < 7 {
        return Err(format!("user {name} missing (scripts/setup-host.sh)"));
    }
    Ok(User {
        name: name.to_string(),
        uid: f[2].parse().map_err(|_| "bad uid")?,
        gid: f[3].parse().map_err(|_| "bad gid")?,
        home: f[5].to_string(),
    })
}

/// One command of a row: argv and extra environment.
#[derive(Clone)]
struct Cmd {
    argv: Vec<String>,
    env: Vec<(String, String)>,
    /// Run as this user instead of the bench's.
    user: Option<User>,
}

fn cmd(argv: &[&str]) -> Cmd {
    Cmd {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: Vec::new(),
        user: None,
    }
}

impl Cmd {
    fn with(mut self, k: &str, v: &str) -> Cmd {
        self.env.push((k.into(), v.into()));
        self
    }
    /// As `u`, with its own store and runtime directory under the bench dir.
    fn by(mut self, u: &User, dir: &Path) -> Cmd {
        let own = |what: &str| dir.join(format!("{what}-{}", u.name)).display().to_string();
        self = self
            .with("WARREN_STORE_PATH", &own("store"))
            .with("WARREN_RUN_RUNTIME_DIR", &own("run"));
        self.user = Some(u.clone());
        self
    }
    fn shown(&self) -> String {
        let env: Vec<String> = self.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let argv: Vec<String> = self
            .argv
            .iter()
            .map(|a| {
                if a.contains(' ') {
                    format!("'{a}'")
                } else {
                    a.clone()
                }
            })
            .collect();
        [env, argv].concat().join(" ")
    }
}

/// WARREN_BENCH_CPUS as a CPU set (None: unset or unreadable).
fn bench_cpus() -> Option<libc::cpu_set_t> {
    let list = std::env::var("WARREN_BENCH_CPUS").ok()?;
    // SAFETY: an all-zero cpu_set_t is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for c in list.split(',') {
        let n: usize = c.trim().parse().ok()?;
        if n >= libc::CPU_SETSIZE as usize {
            return None;
        }
        // SAFETY: n is within the set's size.
        unsafe { libc::CPU_SET(n, &mut set) };
    }
    Some(set)
}

struct Bench {
    u: User,
    w: String,
    dir: PathBuf,
}

impl Bench {
    fn command(&self, c: &Cmd) -> Command {
        let u = c.user.as_ref().unwrap_or(&self.u);
        let mut k = Command::new(&c.argv[0]);
        k.args(&c.argv[1..])
            .uid(u.uid)
            .gid(u.gid)
            .current_dir(&self.dir)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .env("HOME", &u.home)
            .env("USER", &u.name)
            .env("XDG_RUNTIME_DIR", format!("/run/user/{}", u.uid))
            .env("WARREN_CONFIG", "/dev/null")
            .env("WARREN_STORE_PATH", self.dir.join("store"))
            .env("WARREN_RUN_RUNTIME_DIR", self.dir.join("run"))
            // Prefetch lists (docs/run.md) in the bench's directory: the first run of a
            // row that keeps them makes its list, the later ones read it ahead.
            .env("XDG_CACHE_HOME", self.dir.join("cache"))
            .stdin(Stdio::null());
        for (a, b) in &c.env {
            k.env(a, b);
        }
        if let Some(cpus) = bench_cpus() {
            use std::os::unix::process::CommandExt;
            // SAFETY: sched_setaffinity on the child between fork and exec, with a set
            // built before the fork; no allocation, no lock.
            unsafe {
                k.pre_exec(move || {
                    if libc::sched_setaffinity(0, std::mem::size_of_val(&cpus), &cpus) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        k
    }

    /// One timed run in ms.
    fn time(&self, c: &Cmd) -> Result<f64, String> {
        let t = Instant::now();
        let o = self
            .command(c)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| format!("{}: {e}", c.argv[0]))?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        if !o.status.success() {
            return Err(format!(
                "{} failed: {}",
                c.shown(),
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
        Ok(ms)
    }

    fn run_ok(&self, c: &Cmd) -> Result<String, String> {
        let o = self.command(c).output().map_err(|e| e.to_string())?;
        if !o.status.success() {
            return Err(format!(
                "{}: {}",
                c.shown(),
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    }
}

fn drop_caches() {
    let _ = Command::new("sync").status();
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
}

/// Rows run round by round (a change of load hits all alike), `warmup` unmeasured
/// rounds first; `cold` drops the page cache before each run. Returns sorted samples.
fn rounds(
    b: &Bench,
    rows: &[(String, Cmd)],
    n: usize,
    warmup: usize,
    cold: bool,
) -> Vec<Result<Vec<f64>, String>> {
    let mut out: Vec<Result<Vec<f64>, String>> = vec![Ok(Vec::new()); rows.len()];
    for round in 0..n + warmup {
        for (k, (_, c)) in rows.iter().enumerate() {
            if out[k].is_err() {
                continue;
            }
            if cold {
                drop_caches();
            }
            match b.time(c) {
                Ok(ms) if round >= warmup => {
                    if let Ok(v) = &mut out[k] {
                        v.push(ms)
                    }
                }
                Ok(_) => {}
                Err(e) => out[k] = Err(e),
            }
        }
    }
    for v in out.iter_mut().flatten() {
        v.sort_by(|a, b| a.total_cmp(b));
    }
    out
}

fn pct(v: &[f64], p: f64) -> f64 {
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn table(title: &str, rows: &[(String, Cmd)], res: &[Result<Vec<f64>, String>], base: usize) {
    println!("\n### {title}\n");
    println!(
        "| what | median ms | p90 ms | × row {} | command |",
        base + 1
    );
    println!("|---|---:|---:|---:|---|");
    let base_med = res[base].as_ref().ok().map(|v| pct(v, 0.5));
    for (k, (name, c)) in rows.iter().enumerate() {
        match &res[k] {
            Ok(v) if !v.is_empty() => {
                let m = pct(v, 0.5);
                let ratio = base_med.map_or("".into(), |b| format!("{:.2}", m / b));
                println!(
                    "| {} {name} | {m:.1} | {:.1} | {ratio} | `{}` |",
                    k + 1,
                    pct(v, 0.9),
                    c.shown()
                );
            }
            Ok(_) => println!("| {} {name} | – | – | | no samples |", k + 1),
            Err(e) => println!("| {} {name} | – | – | | {e} |", k + 1),
        }
    }
}

fn have(p: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {p} >/dev/null")])
        .status()
        .is_ok_and(|s| s.success())
}

/// ch-run and warren's first start as warren-nosub (no subordinate IDs), each on its own
/// pull of the image.
fn single_id_rows(b: &Bench, dir: &Path) -> Result<Vec<(String, Cmd)>, String> {
    if !have("ch-run") {
        return Err("no ch-run".into());
    }
    let u = user("warren-nosub")?;
    for what in ["store", "run", "ch-mnt"] {
        let d = dir.join(format!("{what}-{}", u.name));
        std::fs::create_dir_all(&d).map_err(|e| e.to_string())?;
        std::os::unix::fs::chown(&d, Some(u.uid), Some(u.gid)).map_err(|e| e.to_string())?;
    }
    let w = b.w.as_str();
    b.run_ok(&cmd(&[w, "pull", "-q", IMAGE]).by(&u, dir))?;
    let sqfs = b
        .run_ok(&cmd(&[w, "inspect", IMAGE]).by(&u, dir))
        .ok()
        .and_then(|o| serde_json::from_str::<serde_json::Value>(&o).ok())
        .and_then(|v| v["squashfs"].as_str().map(String::from))
        .ok_or("warren inspect gives no squashfs")?;
    let mnt = format!(
        "--mount={}",
        dir.join(format!("ch-mnt-{}", u.name)).display()
    );
    Ok(vec![
        (
            "true, ch-run on the same squashfs".to_string(),
            cmd(&["ch-run", &mnt, &sqfs, "--", "true"]).by(&u, dir),
        ),
        (
            "true, warren first container (kernel overlay)".to_string(),
            cmd(&[w, "run", "--no-join", IMAGE, "true"]).by(&u, dir),
        ),
        (
            "true, warren first container, --read-only (as ch-run: no writable layer)".to_string(),
            cmd(&[w, "run", "--no-join", "--read-only", IMAGE, "true"]).by(&u, dir),
        ),
    ])
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(15);
    // SAFETY: getuid cannot fail.
    if unsafe { libc::getuid() } != 0 {
        println!("image_io bench: SKIP: run as root (it drops caches and acts as warren-ci)");
        return;
    }
    let u = match user("warren-ci") {
        Ok(u) => u,
        Err(e) => {
            println!("image_io bench: SKIP: {e}");
            return;
        }
    };
    let dir = PathBuf::from("/var/tmp/warren-bench-io");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("run")).unwrap();
    let _ = Command::new("chown")
        .args(["-R", &format!("{}:{}", u.uid, u.gid)])
        .arg(&dir)
        .status();
    let _ = std::fs::create_dir_all(format!("/run/user/{}", u.uid));
    // The warren binary of this build, somewhere warren-ci can execute it.
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/warren");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(|t| PathBuf::from(t).join("release/warren"))
        .unwrap_or(built);
    let w = dir.join("warren");
    if std::fs::copy(&target, &w).is_err() {
        println!(
            "image_io bench: SKIP: no release binary at {} (cargo build --release)",
            target.display()
        );
        return;
    }
    let b = Bench {
        u,
        w: w.display().to_string(),
        dir: dir.clone(),
    };
    if let Err(e) = b.run_ok(&cmd(&[&b.w, "pull", "-q", IMAGE])) {
        println!("image_io bench: SKIP: {e} (scripts/registry.sh start && scripts/test-images.sh python)");
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    let sqfs = b
        .run_ok(&cmd(&[&b.w, "inspect", IMAGE]))
        .ok()
        .and_then(|o| serde_json::from_str::<serde_json::Value>(&o).ok())
        .and_then(|v| v["squashfs"].as_str().map(String::from))
        .expect("warren inspect gives the squashfs");
    let tree = dir.join("tree");
    b.run_ok(&cmd(&[
        "unsquashfs",
        "-q",
        "-no-xattrs",
        "-d",
        &tree.display().to_string(),
        &sqfs,
    ]))
    .expect("unsquashfs the image");
    let tree = tree.display().to_string();
    let ch_mnt = dir.join("ch-mnt");
    std::fs::create_dir_all(&ch_mnt).unwrap();
    let _ = Command::new("chown")
        .arg(format!("{}:{}", b.u.uid, b.u.gid))
        .arg(&ch_mnt)
        .status();
    let ch_mount = format!("--mount={}", ch_mnt.display());
    let holder = b
        .run_ok(&cmd(&[
            &b.w, "run", "--holder", "--name", "bench-io", IMAGE,
        ]))
        .is_ok();

    let w = b.w.as_str();
    let workload = |what: &str, args: &[&str]| -> Vec<(String, Cmd)> {
        let with = |pre: &[&str]| -> Vec<String> {
            pre.iter()
                .chain(args.iter())
                .map(|s| s.to_string())
                .collect()
        };
        let c = |v: Vec<String>| Cmd {
            argv: v,
            env: Vec::new(),
            user: None,
        };
        let mut rows = vec![
            (
                format!("{what}: warren, first container (own server, no prefetch list)"),
                c(with(&[w, "run", "--no-join", IMAGE])).with("WARREN_RUN_PREFETCH_LIST", "0"),
            ),
            (
                format!("{what}: warren, first container (own server, prefetch list)"),
                c(with(&[w, "run", "--no-join", IMAGE])),
            ),
            (
                format!("{what}: warren, first container (squashfuse_ll, no list)"),
                c(with(&[w, "run", "--no-join", IMAGE]))
                    .with("WARREN_RUN_IMAGE_SERVER", "squashfuse")
                    .with("WARREN_RUN_PREFETCH_LIST", "0"),
            ),
            (
                format!("{what}: local directory"),
                c(with(&["unshare", "-r", "chroot", &tree])),
            ),
        ];
        if holder {
            rows.push((
                format!("{what}: warren, joins a holder (own server, warm mount)"),
                c(with(&[w, "run", IMAGE])),
            ));
        }
        if have("ch-run") {
            rows.push((
                format!("{what}: ch-run on the same squashfs"),
                c(with(&["ch-run", &ch_mount, &sqfs, "--"])),
            ));
        }
        rows
    };
    // The row the ratios are to: the local directory (fourth of each workload's rows).
    const LOCAL: usize = 3;
    let mut meta = workload("py", &["python3", "-c", PY]);
    meta.extend(workload("find", &["sh", "-c", FIND]));
    println!(
        "image_io bench: {IMAGE}, {} warm rounds, {} cold, as warren-ci{}",
        n,
        n.div_ceil(3),
        match std::env::var("WARREN_BENCH_CPUS") {
            Ok(c) if bench_cpus().is_some() => format!(", every command on CPUs {c} only"),
            _ => String::new(),
        }
    );
    let warm = rounds(&b, &meta, n, 2, false);
    let split = meta.len() / 2;
    table(
        "metadata-heavy start, warm (page cache hot)",
        &meta[..split],
        &warm[..split],
        LOCAL,
    );
    table("metadata walk, warm", &meta[split..], &warm[split..], LOCAL);
    let cold = rounds(&b, &meta, n.div_ceil(3), 0, true);
    table(
        "metadata-heavy start, cold (drop_caches before each run)",
        &meta[..split],
        &cold[..split],
        LOCAL,
    );
    table("metadata walk, cold", &meta[split..], &cold[split..], LOCAL);

    let ov = vec![
        (
            "true, kernel overlay".to_string(),
            cmd(&[w, "run", "--no-join", "--overlay", "native", IMAGE, "true"]),
        ),
        (
            "true, fuse-overlayfs".to_string(),
            cmd(&[w, "run", "--no-join", "--overlay", "fuse", IMAGE, "true"]),
        ),
        (
            "true, fuse-overlayfs, squashfuse_ll".to_string(),
            cmd(&[w, "run", "--no-join", "--overlay", "fuse", IMAGE, "true"])
                .with("WARREN_RUN_IMAGE_SERVER", "squashfuse"),
        ),
    ];
    let res = rounds(&b, &ov, 30, 2, false);
    table("first start by overlay back end (30 runs)", &ov, &res, 0);

    // ch-run maps one ID and needs no newuidmap/newgidmap: at its settings, warren is run
    // by a user without subordinate IDs (its single-ID map), from its own store.
    match single_id_rows(&b, &dir) {
        Ok(rows) => {
            let res = rounds(&b, &rows, 30, 2, false);
            table(
                "first start at ch-run's settings: one ID mapped (warren-nosub, 30 runs)",
                &rows,
                &res,
                0,
            );
        }
        Err(e) => println!("\n(single-ID rows skipped: {e})"),
    }

    if holder {
        let _ = b.run_ok(&cmd(&[w, "rm", "bench-io"]));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

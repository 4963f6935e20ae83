//! Container start benchmark (harness = false): median wall time of
//!   floor   `unshare --user --map-root-user --mount true`
//!   warren  `warren run --no-join IMG true`  (first container of the image, private mount)
//!   shared  `warren run IMG true` with `run.shared_mount_idle = 0` (the default path for
//!           a first container: starts the shared image mount, joins it, ends it)
//!   join    `warren run IMG true`            (joins a namespace holder of IMG)
//!   32      32 concurrent `warren run IMG true` (default settings, no mount of IMG before)
//!           against 32 concurrent floors: wall time, added cost per container, mounts
//!   ch-run  `ch-run STORE/…/image.sqfs -- true` (Charliecloud on warren's own squashfs)
//!   podman  `podman run --rm --network=host IMG true` (rootless)
//! IMG is a busybox-static tree with the standard mount points (ch-run needs them), made
//! an OCI layout with umoci and pulled into a private store (`warren pull oci:DIR`): warren
//! runs it by name, as users do, and ch-run mounts the very squashfs file warren runs.
//! When the test registry serves test/debian (scripts/test-images.sh debian), warren and
//! ch-run also start the debootstrap Debian (dynamically linked `true`).
//! As root it builds the image, then drops to the user `warren-ci` (a subuid range);
//! otherwise it runs as the calling user. Unavailable peers are skipped with the reason.
//! With WARREN_BENCH_BASELINE=PATH (another build of warren, e.g. of an earlier commit),
//! its first container (busybox, Debian) and its join run interleaved with this build's,
//! on the same store and holder: an A/B of a change in one run.
//!   cargo bench --bench start [-- ITERATIONS]

#[path = "support/timing.rs"]
mod timing;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

fn sh(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-ec", cmd])
        .status()
        .is_ok_and(|s| s.success())
}

fn have(p: &str) -> bool {
    sh(&format!("command -v {p} >/dev/null"))
}

/// `argv` as a command; leading `NAME=VALUE` words are its environment (no `env` exec
/// in the timed path).
fn command(argv: &[String]) -> Command {
    let vars = argv.iter().take_while(|a| a.contains('=')).count();
    let mut c = Command::new(&argv[vars]);
    c.args(&argv[vars + 1..]);
    for v in &argv[..vars] {
        if let Some((k, val)) = v.split_once('=') {
            c.env(k, val);
        }
    }
    c
}

/// One timed run of `argv` in ms, or its error.
fn time_once(argv: &[String]) -> Result<f64, String> {
    let mut c = command(argv);
    c.stdout(Stdio::null());
    timing::timed(c, argv).map(|(ms, _)| ms)
}

/// Run every planned command once per round, round after round (so that a change in
/// the machine's load affects all of them alike), each `n + 2` times; the first two runs
/// warm caches. Fills each row with the median.
fn run_rounds(rows: &mut Rows, plan: &Plan) {
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); plan.len()];
    let rounds = plan.iter().map(|p| p.2).max().unwrap_or(0) + 2;
    for round in 0..rounds {
        for (k, (row, argv, n)) in plan.iter().enumerate() {
            if round >= n + 2 || rows[*row].2.is_err() && round > 0 {
                continue;
            }
            match time_once(argv) {
                Ok(ms) if round >= 2 => samples[k].push(ms),
                Ok(_) => {}
                Err(e) => {
                    rows[*row].2 = Err(e);
                    samples[k].clear();
                }
            }
        }
    }
    for (k, (row, _, _)) in plan.iter().enumerate() {
        let v = &mut samples[k];
        if rows[*row].2.is_ok() && !v.is_empty() {
            v.sort_by(|a, b| a.total_cmp(b));
            rows[*row].2 = Ok(v[v.len() / 2]);
        }
    }
}

fn build_image(dir: &Path) -> Result<(), String> {
    let bb = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .ok_or("busybox-static not installed")?;
    if !have("umoci") {
        return Err("umoci not installed (scripts/setup-host.sh)".into());
    }
    let r = dir.join("rootfs");
    let ok = sh(&format!(
        "R={r}; L={d}/oci; rm -rf $R $L; mkdir -p $R/bin $R/etc $R/tmp $R/root $R/dev $R/proc $R/sys $R/home $R/run $R/mnt $R/var/tmp
         cp {bb} $R/bin/busybox; for a in sh true ls cat id; do ln -sf busybox $R/bin/$a; done
         printf 'root:x:0:0:root:/root:/bin/sh\\n' > $R/etc/passwd; printf 'root:x:0:\\n' > $R/etc/group
         touch $R/etc/hosts $R/etc/resolv.conf $R/etc/hostname; chmod 1777 $R/tmp
         umoci init --layout $L >/dev/null && umoci new --image $L:latest >/dev/null
         umoci insert --image $L:latest $R / >/dev/null
         umoci config --image $L:latest --config.cmd /bin/sh --config.env PATH=/bin >/dev/null",
        r = r.display(),
        d = dir.display()
    ));
    if !ok {
        return Err("building the bench image failed".into());
    }
    // A tar of the same tree for podman (imported as a local image).
    sh(&format!(
        "tar -C {} -cf {}/rootfs.tar . && chmod 644 {}/rootfs.tar",
        r.display(),
        dir.display(),
        dir.display()
    ));
    Ok(())
}

/// Pull the layout into the bench store; returns (reference, path of its squashfs).
fn pull_image(w: &str, dir: &Path) -> Result<(String, String), String> {
    pull_ref(w, &format!("oci:{}/oci:latest", dir.display()))
}

/// Pull `reference` into the bench store; returns it and the path of its squashfs.
fn pull_ref(w: &str, reference: &str) -> Result<(String, String), String> {
    let reference = reference.to_string();
    let pull = Command::new(w)
        .args(["pull", "-q", &reference])
        .output()
        .map_err(|e| e.to_string())?;
    if !pull.status.success() {
        return Err(format!(
            "warren pull {reference}: {}",
            String::from_utf8_lossy(&pull.stderr).trim()
        ));
    }
    let out = Command::new(w)
        .args(["inspect", &reference])
        .output()
        .map_err(|e| e.to_string())?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("warren inspect {reference}: {e}"))?;
    let sq = v["squashfs"]
        .as_str()
        .ok_or("warren inspect: no squashfs")?
        .to_string();
    Ok((reference, sq))
}

/// As root: become warren-ci (its IDs, its environment).
fn drop_to(user: &str) -> Result<(), String> {
    let out = Command::new("getent")
        .args(["passwd", user])
        .output()
        .map_err(|e| e.to_string())?;
    let line = String::from_utf8_lossy(&out.stdout).to_string();
    let f: Vec<&str> = line.trim().split(':').collect();
    if f.len() < 7 {
        return Err(format!("user {user} missing (scripts/setup-host.sh)"));
    }
    let (uid, gid): (u32, u32) = (f[2].parse().unwrap(), f[3].parse().unwrap());
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
    std::env::set_var("HOME", f[5]);
    std::env::set_var("USER", user);
    std::env::set_var("XDG_RUNTIME_DIR", format!("/run/user/{uid}"));
    std::env::set_current_dir("/").map_err(|e| e.to_string())?;
    Ok(())
}

/// The loopback test registry (scripts/registry.sh) holding test/debian.
const DEBIAN_REGISTRY: &str = "127.0.0.1:5000";

/// What [`concurrent`] measured.
struct Batch {
    rounds: usize,
    floor_ms: f64,
    warren_ms: f64,
    max_mounts: usize,
}

/// Start all of `cmds` at once; the wall time until all exited, in ms.
fn batch_once(cmds: Vec<Command>, watch: Option<(&str, &str)>) -> Result<(f64, usize), String> {
    let t = Instant::now();
    let mut kids = Vec::new();
    for mut c in cmds {
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        kids.push(c.spawn().map_err(|e| e.to_string())?);
    }
    // Image daemons serving `watch` (image, squashfs), sampled while the batch runs (one
    // per mount).
    let mut max_mounts = 0;
    let mut ok = true;
    for mut k in kids {
        if let Some((img, sqfs)) = watch {
            max_mounts = max_mounts.max(daemons_of(img, sqfs));
        }
        ok &= k.wait().is_ok_and(|s| s.success());
    }
    let ms = t.elapsed().as_secs_f64() * 1e3;
    if !ok {
        return Err("a run of the batch failed".into());
    }
    Ok((ms, max_mounts))
}

/// Image servers of image `img` (one per mount): `squashfuse_ll` naming its squashfs
/// `sqfs`, or warren's own `warren-sqfs`, a fork of the process that mounted it, whose
/// command line names `img` (it is not dumpable: its descriptors are not readable).
fn daemons_of(img: &str, sqfs: &str) -> usize {
    std::fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter(|e| {
                    let p = e.path();
                    let comm = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
                    let want = match comm.trim() {
                        "squashfuse_ll" => sqfs,
                        "warren-sqfs" => img,
                        _ => return false,
                    };
                    std::fs::read(p.join("cmdline"))
                        .is_ok_and(|c| String::from_utf8_lossy(&c).contains(want))
                })
                .count()
        })
        .unwrap_or(0)
}

/// 32 concurrent `warren run IMG true` (default settings: the first starts the shared
/// mount, the others join it) against 32 concurrent floors, `rounds` batches
/// interleaved; the holder is removed after each warren batch so that every batch starts
/// without a mount.
fn concurrent(w: &str, img: &str, sqfs: &str, rounds: usize) -> Result<Batch, String> {
    let (mut floors, mut warrens, mut max_mounts) = (Vec::new(), Vec::new(), 0);
    for _ in 0..rounds {
        let floor = (0..32)
            .map(|_| {
                let mut c = Command::new("unshare");
                c.args(["--user", "--map-root-user", "--mount", "true"]);
                c
            })
            .collect();
        floors.push(batch_once(floor, None)?.0);
        let runs = (0..32)
            .map(|_| {
                let mut c = Command::new(w);
                c.args(["run", "--pull=never", img, "true"]);
                c
            })
            .collect();
        let (ms, mounts) = batch_once(runs, Some((img, sqfs)))?;
        warrens.push(ms);
        max_mounts = max_mounts.max(mounts);
        remove_holders(w);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    Ok(Batch {
        rounds,
        floor_ms: median(&mut floors),
        warren_ms: median(&mut warrens),
        max_mounts,
    })
}

/// `warren rm` every holder of the bench's runtime dir.
fn remove_holders(w: &str) {
    let Ok(o) = Command::new(w).args(["ps", "--json"]).output() else {
        return;
    };
    let recs: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap_or_default();
    for r in recs.iter().filter(|r| r["kind"] == "holder") {
        if let Some(id) = r["id"].as_str() {
            let _ = Command::new(w)
                .args(["rm", id])
                .stdout(Stdio::null())
                .status();
        }
    }
}

type Rows = Vec<(String, String, Result<f64, String>)>;
/// (row, argv, runs) for each command to time.
type Plan = Vec<(usize, Vec<String>, usize)>;

fn measure(rows: &mut Rows, plan: &mut Plan, name: &str, argv: Vec<String>, n: usize) {
    rows.push((name.to_string(), argv.join(" "), Ok(0.0)));
    plan.push((rows.len() - 1, argv, n));
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(30);
    let dir = PathBuf::from("/var/tmp/warren-bench");
    let _ = std::fs::create_dir_all(&dir);
    let _ = sh(&format!("chmod 755 {}", dir.display()));
    let bin = dir.join("warren");
    std::fs::copy(env!("CARGO_BIN_EXE_warren"), &bin).expect("copy warren");
    // Copied into the bench dir, which the user of the runs can read.
    let baseline = std::env::var_os("WARREN_BENCH_BASELINE").map(|b| {
        let to = dir.join("warren-baseline");
        std::fs::copy(&b, &to).expect("copy WARREN_BENCH_BASELINE");
        to.display().to_string()
    });
    if let Err(e) = build_image(&dir) {
        println!("start bench: SKIP: {e}");
        return;
    }
    // SAFETY: getuid cannot fail.
    if unsafe { libc::getuid() } == 0 {
        // Hand the bench dir to the user so it can remove it at the end.
        sh(&format!(
            "rm -rf {d}/rootfs; chown -R warren-ci: {d}",
            d = dir.display()
        ));
        if let Err(e) = drop_to("warren-ci") {
            println!("start bench: SKIP: {e}");
            return;
        }
    }
    // A private store and no config file, whoever runs the bench.
    std::env::set_var("WARREN_CONFIG", "/dev/null");
    std::env::set_var("WARREN_STORE_PATH", dir.join("store"));
    // Prefetch lists (docs/run.md) in the bench's directory too: made by its first runs.
    std::env::set_var("XDG_CACHE_HOME", dir.join("cache"));
    let w = bin.display().to_string();
    let (img, sqfs) = match pull_image(&w, &dir) {
        Ok(x) => x,
        Err(e) => {
            println!("start bench: SKIP: {e}");
            let _ = std::fs::remove_dir_all(&dir);
            return;
        }
    };
    let mut rows: Rows = Vec::new();
    let mut plan: Plan = Vec::new();
    let mut podman_plan: Plan = Vec::new();
    measure(
        &mut rows,
        &mut plan,
        "floor",
        s(&["unshare", "--user", "--map-root-user", "--mount", "true"]),
        n,
    );
    let wrun = |extra: &[&str]| {
        let mut v = s(&[&w, "run", "--pull=never"]);
        v.extend(s(extra));
        v.push(img.clone());
        v.push("true".into());
        v
    };
    measure(
        &mut rows,
        &mut plan,
        "warren run (first container, native overlay)",
        wrun(&["--no-join", "--overlay", "native"]),
        n,
    );
    // The baseline build's rows: the same command line with the other binary.
    let on_baseline = |argv: &[String]| -> Option<Vec<String>> {
        let b = baseline.as_ref()?;
        Some(
            argv.iter()
                .map(|a| if *a == w { b.clone() } else { a.clone() })
                .collect(),
        )
    };
    if let Some(argv) = on_baseline(&wrun(&["--no-join", "--overlay", "native"])) {
        measure(
            &mut rows,
            &mut plan,
            "baseline build: first container, native overlay",
            argv,
            n,
        );
    }
    let mut shared = vec!["WARREN_RUN_SHARED_MOUNT_IDLE=0".to_string()];
    shared.extend(wrun(&["--overlay", "native"]));
    measure(
        &mut rows,
        &mut plan,
        "warren run (first container: starts, joins, ends its shared mount)",
        shared,
        n,
    );
    measure(
        &mut rows,
        &mut plan,
        "warren run --read-only (no overlay)",
        wrun(&["--no-join", "--read-only"]),
        n,
    );
    measure(
        &mut rows,
        &mut plan,
        "warren run (fuse-overlayfs)",
        wrun(&["--no-join", "--overlay", "fuse"]),
        n.min(15),
    );
    if have("ch-run") {
        // Its squashfs mount point inside the bench dir (default /var/tmp/USER.ch/mnt).
        let mnt = dir.join("ch-mnt");
        let _ = std::fs::create_dir_all(&mnt);
        let m = format!("--mount={}", mnt.display());
        measure(
            &mut rows,
            &mut plan,
            "ch-run on squashfs",
            s(&["ch-run", &m, &sqfs, "--", "true"]),
            n,
        );
    } else {
        rows.push((
            "ch-run on squashfs".into(),
            String::new(),
            Err("ch-run not installed".into()),
        ));
    }
    // A real distribution image whose `true` is dynamically linked (libc is paged in
    // through FUSE): the debootstrap Debian of the test registry, when it is there.
    let debian = format!("{DEBIAN_REGISTRY}/test/debian:latest");
    match pull_ref(&w, &debian) {
        Ok((r, sq)) => {
            let argv = s(&[&w, "run", "--pull=never", "--no-join", &r, "true"]);
            if let Some(b) = on_baseline(&argv) {
                measure(
                    &mut rows,
                    &mut plan,
                    "baseline build: Debian (first container)",
                    b,
                    n,
                );
            }
            measure(
                &mut rows,
                &mut plan,
                "warren run, Debian (first container)",
                argv,
                n,
            );
            if have("ch-run") {
                let mnt = dir.join("ch-mnt-debian");
                let _ = std::fs::create_dir_all(&mnt);
                let m = format!("--mount={}", mnt.display());
                measure(
                    &mut rows,
                    &mut plan,
                    "ch-run on squashfs, Debian",
                    s(&["ch-run", &m, &sq, "--", "true"]),
                    n,
                );
            }
        }
        Err(e) => rows.push((
            "warren run, Debian".into(),
            String::new(),
            Err(format!(
                "{e} (scripts/registry.sh start; scripts/test-images.sh debian)"
            )),
        )),
    }
    // Rootless podman leaves a pause process: stop it afterwards if the bench started it.
    let pause_file = format!(
        "{}/libpod/tmp/pause.pid",
        std::env::var("XDG_RUNTIME_DIR").unwrap_or_default()
    );
    let pause_before = std::fs::read_to_string(&pause_file)
        .ok()
        .filter(|p| Path::new(&format!("/proc/{}", p.trim())).exists());
    // Podman's configuration and storage live in the bench dir (LAB.md settings), not in
    // the user's home: CONTAINERS_CONF and CONTAINERS_STORAGE_CONF point there.
    let pdir = dir.join("podman");
    // Podman also writes under $HOME whatever its configuration says: note what existed.
    let home = PathBuf::from(std::env::var_os("HOME").unwrap_or_default());
    let run = PathBuf::from(std::env::var_os("XDG_RUNTIME_DIR").unwrap_or_default());
    let podman_home: Vec<PathBuf> = [".config/cni", ".local/share/containers"]
        .iter()
        .map(|p| home.join(p))
        .chain(["containers", "libpod", "runc"].iter().map(|p| run.join(p)))
        .filter(|p| !p.exists())
        .collect();
    if have("podman") {
        let _ = std::fs::create_dir_all(&pdir);
        let conf = pdir.join("containers.conf");
        let storage = pdir.join("storage.conf");
        let _ = std::fs::write(
            &conf,
            "[engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
        );
        let _ = std::fs::write(
            &storage,
            format!(
                "[storage]\ndriver = \"overlay\"\ngraphroot = \"{0}/graph\"\nrunroot = \"{0}/run\"\n",
                pdir.display()
            ),
        );
        std::env::set_var("CONTAINERS_CONF", &conf);
        std::env::set_var("CONTAINERS_STORAGE_CONF", &storage);
        let ok = sh(&format!(
            "podman import -q {d}/rootfs.tar localhost/warren-bench:latest >/dev/null 2>&1",
            d = dir.display()
        ));
        if ok {
            // Timed after the others: its conmon and pause processes linger after each
            // run and would slow whatever runs next.
            measure(
                &mut rows,
                &mut podman_plan,
                "podman run --rm (rootless)",
                s(&[
                    "podman",
                    "run",
                    "--rm",
                    "--network=host",
                    "localhost/warren-bench:latest",
                    "true",
                ]),
                n.min(10),
            );
        } else {
            rows.push((
                "podman run --rm (rootless)".into(),
                String::new(),
                Err("podman import failed".into()),
            ));
        }
    } else {
        rows.push((
            "podman run --rm (rootless)".into(),
            String::new(),
            Err("podman not installed".into()),
        ));
    }
    // The joins: a second pass with a holder of IMG running (the rows above must not
    // find it: the shared first start would join it), against its own floor.
    run_rounds(&mut rows, &plan);
    let mut join_plan: Plan = Vec::new();
    measure(
        &mut rows,
        &mut join_plan,
        "floor (second pass, with the joins)",
        s(&["unshare", "--user", "--map-root-user", "--mount", "true"]),
        n,
    );
    let holder = Command::new(&w)
        .args([
            "run",
            "--pull=never",
            "--holder",
            "--name",
            "bench-holder",
            &img,
        ])
        .stdout(Stdio::null())
        .status();
    let holder_up = holder.is_ok_and(|s| s.success());
    if holder_up {
        measure(
            &mut rows,
            &mut join_plan,
            "warren run (joins a holder)",
            wrun(&[]),
            n,
        );
        measure(
            &mut rows,
            &mut join_plan,
            "warren run --read-only (joins a holder)",
            wrun(&["--read-only"]),
            n,
        );
        if let Some(argv) = on_baseline(&wrun(&[])) {
            measure(
                &mut rows,
                &mut join_plan,
                "baseline build: joins a holder",
                argv,
                n,
            );
        }
    } else {
        rows.push((
            "warren run (joins a holder)".into(),
            String::new(),
            Err("holder did not start".into()),
        ));
    }
    run_rounds(&mut rows, &join_plan);
    if holder_up {
        let _ = Command::new(&w)
            .args(["rm", "bench-holder"])
            .stdout(Stdio::null())
            .status();
    }
    let batch = concurrent(&w, &img, &sqfs, n.clamp(3, 10));
    run_rounds(&mut rows, &podman_plan);
    if have("podman") && pause_before.is_none() {
        if let Some(pid) = std::fs::read_to_string(&pause_file)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            // SAFETY: signalling the pause process this bench's podman started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let _ = std::fs::remove_file(&pause_file);
        }
    }
    // Everything the bench made; podman's storage holds files of subordinate IDs, which
    // only the user namespace can delete: `warren unshare` is the tool for that.
    if pdir.exists() {
        let _ = Command::new(&bin)
            .args(["unshare", "rm", "-rf"])
            .arg(&pdir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    for p in &podman_home {
        let _ = Command::new(&bin)
            .args(["unshare", "rm", "-rf"])
            .arg(p)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        println!("note: could not remove {}: {e}", dir.display());
    }
    println!(
        "container start, median of {n} runs (podman 10, fuse-overlayfs 15) after 2 warm-up runs; all but podman interleaved round by round (ms):"
    );
    match batch {
        Ok(b) => println!(
            "32 concurrent runs, median of {} batches: floor {:.1} ms, warren {:.1} ms per batch \
             (added {:.2} ms per container); at most {} image mount(s) of IMG during a batch\n\
             (batch = 32 × `warren run --pull=never IMG true` started at once, default settings, \
             no mount of IMG before; floor = 32 × `unshare --user --map-root-user --mount true`)",
            b.rounds,
            b.floor_ms,
            b.warren_ms,
            (b.warren_ms - b.floor_ms) / 32.0,
            b.max_mounts
        ),
        Err(e) => println!("     SKIP  32 concurrent runs: {e}"),
    }
    // Ratios against the floor of the same pass (the last floor row above).
    let mut floor = None;
    for (name, cmd, r) in &rows {
        if name.starts_with("floor") {
            floor = r.clone().ok();
        }
        match (r, floor) {
            (Ok(ms), Some(f)) => println!(
                "{ms:>9.2}  {:>5.1}x floor  {name}\n           {cmd}",
                ms / f
            ),
            (Ok(ms), None) => println!("{ms:>9.2}  {name}\n           {cmd}"),
            (Err(e), _) => println!("     SKIP  {name}: {e}"),
        }
    }
}

//! warren as an OCI runtime against rootless runc, in one run (docs/performance.md):
//!
//! - `warren oci run --bundle B ID` vs `runc --rootless=true run --bundle B ID` on the
//!   same busybox rootfs, as warren-ci (target: warren ≤ 0.8× runc);
//! - `srun --container=B true` through warren's oci.conf vs through runc's (Slurm's
//!   documented rootless runc example, Run mode) vs bare `srun true` (target: warren ≤
//!   runc), on the test cluster's node n1 (skipped when it is not up).
//!
//! Run as root (it swaps /etc/slurm*/oci.conf for the srun rows and removes it after):
//! `cargo bench --bench oci [RUNS]` (default 20; the srun rows use a third of it).
//! Rounds interleave the commands so load changes hit all of them alike.

#[path = "support/timing.rs"]
mod timing;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const USER: &str = "warren-ci";

fn sh(cmd: &str) -> Result<(), String> {
    let o = Command::new("sh")
        .args(["-ec", cmd])
        .output()
        .map_err(|e| e.to_string())?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd}: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ))
    }
}

/// `argv` as the bench user (setpriv), with a login-like environment.
fn as_user(uid: u32, home: &str, argv: &[String]) -> Vec<String> {
    let mut v: Vec<String> = [
        "setpriv",
        &format!("--reuid={uid}"),
        &format!("--regid={uid}"),
        "--clear-groups",
        "--",
        "env",
        &format!("HOME={home}"),
        &format!("XDG_RUNTIME_DIR=/run/user/{uid}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(argv.iter().cloned());
    v
}

fn time_once(argv: &[String]) -> Result<f64, String> {
    let mut c = Command::new(&argv[0]);
    c.args(&argv[1..]).current_dir("/tmp").stdout(Stdio::null());
    timing::timed(c, argv).map(|(ms, _)| ms)
}

/// Two bundles on one rootfs copy each: warren's (no maps: its own from the range) and
/// runc's (`runc spec --rootless`: the single own-ID map).
fn bundles(dir: &Path, uid: u32) -> Result<(PathBuf, PathBuf), String> {
    let (w, r) = (dir.join("bundle-warren"), dir.join("bundle-runc"));
    for b in [&w, &r] {
        sh(&format!(
            "R={b}/rootfs; mkdir -p $R/bin $R/etc $R/tmp $R/proc $R/sys $R/dev
             cp /bin/busybox $R/bin/busybox; for a in sh true; do ln -sf busybox $R/bin/$a; done",
            b = b.display()
        ))?;
    }
    sh(&format!("cd {} && runc spec --rootless", r.display()))?;
    let cfg = |p: &Path| -> Result<serde_json::Value, String> {
        serde_json::from_slice(&std::fs::read(p.join("config.json")).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())
    };
    let mut rc = cfg(&r)?;
    rc["process"]["terminal"] = false.into();
    rc["process"]["args"] = serde_json::json!(["true"]);
    rc["root"]["readonly"] = false.into();
    for m in ["uidMappings", "gidMappings"] {
        rc["linux"][m][0]["hostID"] = uid.into();
    }
    let mut wc = rc.clone();
    wc["linux"].as_object_mut().unwrap().remove("uidMappings");
    wc["linux"].as_object_mut().unwrap().remove("gidMappings");
    // warren refuses a pid namespace (docs/oci.md).
    if let Some(ns) = wc["linux"]["namespaces"].as_array_mut() {
        ns.retain(|n| n["type"] != "pid");
    }
    for (b, c) in [(&w, &wc), (&r, &rc)] {
        std::fs::write(b.join("config.json"), serde_json::to_vec(c).unwrap())
            .map_err(|e| e.to_string())?;
    }
    sh(&format!("chown -R {uid}:{uid} {}", dir.display()))?;
    Ok((w, r))
}

/// oci.conf beside every slurm.conf; returns the files written.
fn install_oci_conf(text: &str) -> Result<Vec<PathBuf>, String> {
    let mut out = vec![];
    let mut dirs = vec![PathBuf::from("/etc/slurm")];
    for e in std::fs::read_dir("/etc")
        .map_err(|e| e.to_string())?
        .flatten()
    {
        if e.file_name().to_string_lossy().starts_with("slurm-") {
            dirs.push(e.path());
        }
    }
    for d in dirs.iter().filter(|d| d.join("slurm.conf").is_file()) {
        let f = d.join("oci.conf");
        std::fs::write(&f, text).map_err(|e| e.to_string())?;
        out.push(f);
    }
    Ok(out)
}

/// (name, argv, samples in ms, last error).
type Row = (String, Vec<String>, Vec<f64>, Option<String>);

fn median(v: &mut [f64]) -> Option<f64> {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied()
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20);
    // SAFETY: getuid cannot fail.
    if unsafe { libc::getuid() } != 0 {
        println!("oci bench: SKIP: run as root (it acts as {USER} and edits oci.conf)");
        return;
    }
    let Some(u) = nix::unistd::User::from_name(USER).ok().flatten() else {
        println!("oci bench: SKIP: user {USER} missing (scripts/setup-host.sh)");
        return;
    };
    let (uid, home) = (u.uid.as_raw(), u.dir.display().to_string());
    let dir = PathBuf::from("/var/tmp/warren-bench-oci");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let bin = dir.join("warren");
    std::fs::copy(env!("CARGO_BIN_EXE_warren"), &bin).expect("copy warren");
    let (wb, rb) = match bundles(&dir, uid) {
        Ok(b) => b,
        Err(e) => {
            println!("oci bench: SKIP: {e}");
            let _ = std::fs::remove_dir_all(&dir);
            return;
        }
    };
    let w = bin.display().to_string();
    let runc_root = format!("/tmp/warren-bench-runc-{uid}");
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<String>>();
    let mut rows: Vec<Row> = vec![
        (
            "warren oci run".into(),
            as_user(
                uid,
                &home,
                &s(&[
                    &w,
                    "oci",
                    "run",
                    "--bundle",
                    wb.to_str().unwrap(),
                    "bench-w",
                ]),
            ),
            vec![],
            None,
        ),
        (
            "runc --rootless=true run".into(),
            as_user(
                uid,
                &home,
                &s(&[
                    "runc",
                    "--rootless=true",
                    "--root",
                    &runc_root,
                    "run",
                    "--bundle",
                    rb.to_str().unwrap(),
                    "bench-r",
                ]),
            ),
            vec![],
            None,
        ),
    ];
    for _round in 0..n + 2 {
        for r in rows.iter_mut() {
            match time_once(&r.1) {
                Ok(ms) => r.2.push(ms),
                Err(e) => r.3 = Some(e),
            }
        }
    }
    // srun rows: the same bundles through Slurm's oci.conf, Run mode.
    let cluster_up = Command::new("sinfo")
        .args(["-h", "-n", "n1", "-o", "%T"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "idle");
    let confs_exist = Path::new("/etc/slurm/oci.conf").exists();
    let mut srun_rows: Vec<Row> = vec![];
    if cluster_up && !confs_exist {
        let warren_conf = format!(
            "RunTimeQuery=\"{w} oci state %n.%u.%j.%s.%t\"\nRunTimeKill=\"{w} oci kill --all %n.%u.%j.%s.%t TERM\"\nRunTimeDelete=\"{w} oci delete --force %n.%u.%j.%s.%t\"\nRunTimeRun=\"{w} oci run --bundle %b %n.%u.%j.%s.%t\"\n"
        );
        // Slurm's documented rootless runc example (with %u: 22.05 has no %U).
        let runc_conf = format!(
            "RunTimeQuery=\"runc --rootless=true --root={runc_root}/ state %n.%u.%j.%s.%t\"\nRunTimeKill=\"runc --rootless=true --root={runc_root}/ kill -a %n.%u.%j.%s.%t\"\nRunTimeDelete=\"runc --rootless=true --root={runc_root}/ delete --force %n.%u.%j.%s.%t\"\nRunTimeRun=\"runc --rootless=true --root={runc_root}/ run %n.%u.%j.%s.%t -b %b\"\n"
        );
        let srun = |extra: &[&str]| {
            let mut v = s(&["srun", "-w", "n1"]);
            v.extend(s(extra));
            v.push("true".into());
            as_user(uid, &home, &v)
        };
        srun_rows = vec![
            ("srun true (bare)".into(), srun(&[]), vec![], None),
            (
                "srun --container (warren)".into(),
                srun(&["--container", wb.to_str().unwrap()]),
                vec![],
                None,
            ),
            (
                "srun --container (runc)".into(),
                srun(&["--container", rb.to_str().unwrap()]),
                vec![],
                None,
            ),
        ];
        let m = (n / 3).max(3);
        for _round in 0..m + 1 {
            for (k, r) in srun_rows.iter_mut().enumerate() {
                let conf = match k {
                    1 => install_oci_conf(&warren_conf),
                    2 => install_oci_conf(&runc_conf),
                    _ => Ok(vec![]),
                };
                let res = time_once(&r.1);
                for f in conf.unwrap_or_default() {
                    let _ = std::fs::remove_file(f);
                }
                match res {
                    Ok(ms) => r.2.push(ms),
                    Err(e) => r.3 = Some(e),
                }
            }
        }
    } else {
        println!("oci bench: srun rows skipped (node n1 not idle, or an oci.conf exists)");
    }
    println!("| what | median ms | command |\n|---|---|---|");
    for (name, argv, mut v, err) in rows.into_iter().chain(srun_rows) {
        // The first two samples warm caches.
        let warm: Vec<f64> = v.drain(..).skip(2).collect();
        let mut warm = warm;
        match (err, median(&mut warm)) {
            (Some(e), _) => println!("| {name} | failed: {e} | |"),
            (None, Some(ms)) => {
                let cmd = argv.iter().skip(8).cloned().collect::<Vec<_>>().join(" ");
                println!("| {name} | {ms:.1} | `{cmd}` |")
            }
            (None, None) => println!("| {name} | no samples | |"),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&runc_root);
}

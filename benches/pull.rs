//! Pull + squash benchmark, in one run, against the peers (docs/performance.md):
//!
//! - warren pull into an empty store (cold), then again (cached re-pull);
//! - charliecloud: `ch-image pull` + `ch-convert -o squash` (HTTPS + basic auth on
//!   127.0.0.1:5001, as it requires);
//! - `skopeo copy` + `umoci unpack` + `mksquashfs -comp zstd`, at mksquashfs's default
//!   level (15) and at warren's level 3 (`-Xcompression-level 3`): both rows;
//! - the squash back ends on the same flattened tree: tar2sqfs fed a tar stream (what
//!   warren does) vs extracting to disk + mksquashfs.
//!
//! Run: `scripts/registry.sh start; scripts/test-images.sh python;
//!       cargo bench --bench pull` (as root: umoci unpack keeps owners, like the peers).
//! Env: WARREN_BENCH_IMAGE (default test/python), WARREN_BENCH_RUNS (default 3),
//! WARREN_BENCH_SKIP (comma list of: charliecloud, skopeo, backends).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const PLAIN: &str = "127.0.0.1:5000";
const TLS: &str = "127.0.0.1:5001";
const USER: &str = "warren";
const PASS: &str = "warren-pass";

fn sh(cmd: &str) -> Result<(), String> {
    let o = Command::new("bash")
        .args(["-c", cmd])
        .output()
        .map_err(|e| e.to_string())?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd}: {}{}",
            String::from_utf8_lossy(&o.stderr),
            String::from_utf8_lossy(&o.stdout)
        ))
    }
}

fn timed(cmd: &str) -> Result<Duration, String> {
    let t = Instant::now();
    sh(cmd)?;
    Ok(t.elapsed())
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1000.0)
}

struct Row {
    what: String,
    cmd: String,
    times: Vec<Duration>,
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let image = std::env::var("WARREN_BENCH_IMAGE").unwrap_or_else(|_| "test/python".into());
    let runs: usize = std::env::var("WARREN_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let skip = std::env::var("WARREN_BENCH_SKIP").unwrap_or_default();
    let warren = env!("CARGO_BIN_EXE_warren");
    // Private to this run: other benches use /var/tmp too.
    let work = PathBuf::from(format!("/var/tmp/warren-bench-pull.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let reference = format!("{PLAIN}/{image}:latest");
    if sh(&format!("curl -fsS -o /dev/null http://{PLAIN}/v2/{image}/manifests/latest -H 'Accept: application/vnd.oci.image.manifest.v1+json'")).is_err() {
        eprintln!("bench pull: {reference} not found; run scripts/registry.sh start && scripts/test-images.sh python");
        return;
    }
    let cfg = work.join("warren.toml");
    std::fs::write(
        &cfg,
        format!("[store]\npath = \"{}/store\"\n", work.display()),
    )
    .unwrap();
    let mut rows: Vec<Row> = Vec::new();

    // warren: cold, then cached.
    let mut cold = Vec::new();
    let mut cached = Vec::new();
    let pull = format!(
        "WARREN_CONFIG={} {warren} pull -q {reference} >/dev/null",
        cfg.display()
    );
    for _ in 0..runs {
        let _ = std::fs::remove_dir_all(work.join("store"));
        cold.push(timed(&pull).expect("warren pull"));
        for _ in 0..3 {
            cached.push(timed(&pull).expect("warren pull (cached)"));
        }
    }
    rows.push(Row {
        what: "warren pull (cold store)".into(),
        cmd: format!("warren pull {reference}"),
        times: cold,
    });
    rows.push(Row {
        what: "warren pull (cached re-pull)".into(),
        cmd: format!("warren pull {reference}"),
        times: cached,
    });

    // skopeo + umoci + mksquashfs: at mksquashfs's default zstd level (15 in 4.5.1) and
    // at warren's level 3, so that the comparison also holds on equal compression.
    if !skip.contains("skopeo") {
        for (level, label) in [
            ("", "level 15 (mksquashfs's default)"),
            (" -Xcompression-level 3", "level 3 (warren's)"),
        ] {
            let mut t = Vec::new();
            let d = work.join("skopeo");
            let cmd = format!(
                "rm -rf {d} && mkdir -p {d} && skopeo copy -q --src-tls-verify=false docker://{reference} oci:{d}/oci:latest \
                 && umoci unpack --image {d}/oci:latest {d}/bundle >/dev/null \
                 && mksquashfs {d}/bundle/rootfs {d}/img.sqfs -comp zstd{level} -noappend -quiet >/dev/null",
                d = d.display()
            );
            for _ in 0..runs {
                match timed(&cmd) {
                    Ok(x) => t.push(x),
                    Err(e) => {
                        eprintln!("skopeo pipeline failed: {e}");
                        break;
                    }
                }
            }
            let _ = std::fs::remove_dir_all(&d);
            if !t.is_empty() {
                rows.push(Row {
                    what: format!("skopeo copy + umoci unpack + mksquashfs -comp zstd, {label}"),
                    cmd,
                    times: t,
                });
            }
        }
    }

    // charliecloud over HTTPS + basic auth.
    if !skip.contains("charliecloud") {
        match charliecloud(&work, &image, runs) {
            Ok(r) => rows.push(r),
            Err(e) => eprintln!("charliecloud: not measured: {e}"),
        }
    }

    // Squash back ends on the same flattened tree.
    if !skip.contains("backends") {
        match backends(&work, &cfg, warren, &reference, runs) {
            Ok(mut r) => rows.append(&mut r),
            Err(e) => eprintln!("back ends: not measured: {e}"),
        }
    }

    println!("| what | median ms | runs (ms) |");
    println!("|---|---:|---|");
    for r in &mut rows {
        let all: Vec<String> = r.times.iter().map(|d| ms(*d)).collect();
        let m = median(&mut r.times);
        println!("| {} | {} | {} |", r.what, ms(m), all.join(", "));
    }
    println!();
    for r in &rows {
        println!("- {}: `{}`", r.what, r.cmd);
    }
    let _ = std::fs::remove_dir_all(&work);
}

fn charliecloud(work: &Path, image: &str, runs: usize) -> Result<Row, String> {
    sh("command -v ch-image && command -v ch-convert")?;
    // charliecloud pulls over HTTPS only: copy the image to the TLS registry once.
    let tls_ref = format!("{TLS}/{image}:latest");
    if sh(&format!("curl -fsSk -u {USER}:{PASS} -o /dev/null https://{TLS}/v2/{image}/manifests/latest -H 'Accept: application/vnd.oci.image.manifest.v1+json'")).is_err() {
        sh(&format!(
            "skopeo copy -q --src-tls-verify=false --dest-tls-verify=false --dest-creds {USER}:{PASS} docker://{PLAIN}/{image}:latest docker://{tls_ref}"
        ))?;
    }
    let st = work.join("ch");
    // TLS verified against the test CA; /usr/bin first so ch-image finds Debian's
    // python3 with lark; --no-cache: its default build cache is git.
    let cmd = format!(
        "rm -rf {st} && mkdir -p {st} && export CH_IMAGE_STORAGE={st}/storage \
         REQUESTS_CA_BUNDLE={ca} CH_IMAGE_USERNAME={USER} CH_IMAGE_PASSWORD={PASS} \
         PATH=/usr/bin:/bin:$PATH USER=${{USER:-$(id -un)}} \
         && ch-image --auth --no-cache pull {tls_ref} >/dev/null \
         && ch-convert -i ch-image -o squash {tls_ref} {st}/img.sqfs >/dev/null",
        st = st.display(),
        ca = "/var/tmp/warren-test/registry/certs/ca.pem",
    );
    let mut t = Vec::new();
    for _ in 0..runs {
        t.push(timed(&cmd)?);
    }
    let _ = std::fs::remove_dir_all(&st);
    Ok(Row {
        what: "charliecloud: ch-image pull + ch-convert -o squash".into(),
        cmd,
        times: t,
    })
}

fn backends(
    work: &Path,
    cfg: &Path,
    warren: &str,
    reference: &str,
    runs: usize,
) -> Result<Vec<Row>, String> {
    let b = work.join("backends");
    std::fs::create_dir_all(&b).map_err(|e| e.to_string())?;
    let b = b.display();
    // The flattened tree as warren squashed it, back as one tar.
    let _ = std::fs::remove_dir_all(work.join("store"));
    sh(&format!(
        "WARREN_CONFIG={} {warren} pull -q {reference} > {b}/digest",
        cfg.display()
    ))?;
    let digest = std::fs::read_to_string(format!("{b}/digest")).map_err(|e| e.to_string())?;
    let sqfs = work
        .join("store/images")
        .join(digest.trim().trim_start_matches("sha256:"))
        .join("image.sqfs");
    sh(&format!("sqfs2tar -r . {} > {b}/flat.tar", sqfs.display()))?;
    let jobs = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let t2s = format!("tar2sqfs -q -f -c zstd -X level=3 -j {jobs} {b}/t2s.sqfs < {b}/flat.tar");
    let mks = format!(
        "rm -rf {b}/root && mkdir {b}/root && tar -C {b}/root --numeric-owner -xpf {b}/flat.tar \
         && mksquashfs {b}/root {b}/mks.sqfs -comp zstd -Xcompression-level 3 -processors {jobs} -noappend -quiet >/dev/null"
    );
    let mut rows = Vec::new();
    for (what, cmd) in [
        ("back end: tar2sqfs from a tar stream (zstd 3)", t2s),
        ("back end: extract to disk + mksquashfs (zstd 3)", mks),
    ] {
        let mut t = Vec::new();
        for _ in 0..runs {
            t.push(timed(&cmd)?);
        }
        rows.push(Row {
            what: what.into(),
            cmd,
            times: t,
        });
    }
    sh(&format!("ls -l {b}/t2s.sqfs {b}/mks.sqfs >&2"))?;
    Ok(rows)
}

//! Cached re-pull cost on the registry side: a fresh `open_source` + `current_digest`
//! (one HEAD, as a new `warren pull` process does) against the loopback test registry
//! (scripts/registry.sh start). Target: well under 50 ms.
//!
//!     cargo bench --bench registry_head
//!
//! Reports the median and minimum over 50 runs for three set-ups: default (loopback:
//! HTTPS tried first, then HTTP), `http = true` in config, and the bearer-token registry
//! on :5002 (401 → token → HEAD). Then blob throughput: a 64 MiB pseudo-random blob (fixed seed) pushed to
//! 127.0.0.1:5000/bench/blob, fetched 5 times with `fetch_blob` (streamed, hashed, written
//! to a temp file).

use std::time::{Duration, Instant};
use warren::config::Config;
use warren::reference::ImageRef;
use warren::registry::credentials::AuthFiles;
use warren::registry::open_source_with;

fn run(name: &str, cfg: &str, image: &str) {
    let cfg = Config::from_toml(cfg).expect("config");
    let r = ImageRef::parse(image).expect("reference");
    let mut times: Vec<Duration> = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        let src = open_source_with(&cfg, &r, AuthFiles::new(vec![])).expect("open");
        src.current_digest().expect("current_digest");
        times.push(t.elapsed());
    }
    times.sort();
    println!(
        "{name:<40} median {:>7.2} ms   min {:>7.2} ms",
        times[times.len() / 2].as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3
    );
}

/// Push `data` as a blob with the raw v2 API (monolithic upload).
fn push_blob(repo: &str, data: &[u8]) -> warren::digest::Digest {
    let d = warren::digest::Digest::of(data);
    let http = reqwest::blocking::Client::new();
    let r = http
        .post(format!("http://127.0.0.1:5000/v2/{repo}/blobs/uploads/"))
        .send()
        .expect("start upload");
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let loc = if loc.starts_with('/') {
        format!("http://127.0.0.1:5000{loc}")
    } else {
        loc
    };
    let sep = if loc.contains('?') { '&' } else { '?' };
    let r = http
        .put(format!("{loc}{sep}digest={d}"))
        .header("content-type", "application/octet-stream")
        .body(data.to_vec())
        .send()
        .expect("finish upload");
    assert!(r.status().is_success(), "upload: {}", r.status());
    d
}

fn blob_throughput() {
    const SIZE: usize = 64 << 20;
    // Fixed-seed xorshift bytes: incompressible, and the same blob on every run, so
    // repeated runs do not pile up data in the test registry.
    let mut data = vec![0u8; SIZE];
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let d = push_blob("bench/blob", &data);
    let desc = oci_spec::image::Descriptor::new(
        oci_spec::image::MediaType::ImageLayer,
        SIZE as u64,
        d.to_string().parse::<oci_spec::image::Digest>().unwrap(),
    );
    let cfg = Config::from_toml("").unwrap();
    let r = ImageRef::parse("127.0.0.1:5000/bench/blob:latest").unwrap();
    let src = open_source_with(&cfg, &r, AuthFiles::new(vec![])).expect("open");
    let dir = std::env::temp_dir().join(format!("warren-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut times = Vec::new();
    for i in 0..5 {
        let dest = dir.join(format!("b{i}"));
        let t = Instant::now();
        src.fetch_blob(&desc, &dest, &|_| {}).expect("fetch");
        times.push(t.elapsed());
        std::fs::remove_file(&dest).unwrap();
    }
    std::fs::remove_dir(&dir).unwrap();
    times.sort();
    let med = times[times.len() / 2].as_secs_f64();
    println!(
        "{:<40} median {:>7.1} ms   {:>6.0} MiB/s",
        "fetch_blob 64 MiB (loopback)",
        med * 1e3,
        64.0 / med
    );
}

fn main() {
    if std::net::TcpStream::connect("127.0.0.1:5000").is_err() {
        eprintln!("registry_head: SKIP, no registry on 127.0.0.1:5000 (scripts/registry.sh start)");
        return;
    }
    run(
        "loopback, https then http",
        "",
        "127.0.0.1:5000/test/busybox:latest",
    );
    run(
        "loopback, http = true",
        "[[registry]]\nhost = \"127.0.0.1:5000\"\nhttp = true\n",
        "127.0.0.1:5000/test/busybox:latest",
    );
    if std::net::TcpStream::connect("127.0.0.1:5002").is_ok() {
        run(
            "bearer token registry (anonymous)",
            "",
            "127.0.0.1:5002/test/busybox:latest",
        );
    }
    blob_throughput();
}

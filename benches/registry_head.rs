//! Cached re-pull cost on the registry side: a fresh `open_source` + `current_digest`
//! (one HEAD, as a new `warren pull` process does) against the loopback test registry
//! (scripts/registry.sh start). Target: well under 50 ms.
//!
//!     cargo bench --bench registry_head
//!
//! Reports the median and minimum over 50 runs for three set-ups: default (loopback:
//! HTTPS tried first, then HTTP), `http = true` in config, and the bearer-token registry
//! on :5002 (401 → token → HEAD).

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
}

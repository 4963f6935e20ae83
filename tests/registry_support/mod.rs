//! Shared helpers for the registry integration tests: the test registries started by
//! `scripts/registry.sh start`, their credentials, and checks on downloaded blobs.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;
use warren::config::Config;
use warren::digest::{digest_reader, Digest};

pub const PLAIN: &str = "127.0.0.1:5000";
pub const BASIC: &str = "127.0.0.1:5001";
pub const TOKEN: &str = "127.0.0.1:5002";
pub const TOKEN_SERVER: &str = "127.0.0.1:5003";
pub const BASIC_USER: (&str, &str) = ("warren", "warren-pass");
pub const TOKEN_USER: (&str, &str) = ("tokenuser", "tokenpass");

/// `WARREN_TEST_STATE` or the scripts' default.
pub fn state_dir() -> PathBuf {
    std::env::var_os("WARREN_TEST_STATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/warren-test"))
}

/// The test CA that signed the TLS registry's certificate.
pub fn ca_file() -> PathBuf {
    state_dir().join("registry/certs/ca.pem")
}

fn listening(addr: &str) -> bool {
    let a: SocketAddr = match addr.parse() {
        Ok(a) => a,
        Err(_) => return false,
    };
    TcpStream::connect_timeout(&a, Duration::from_millis(300)).is_ok()
}

/// True when all `addrs` accept connections; otherwise prints why the test is skipped.
pub fn require(test: &str, addrs: &[&str]) -> bool {
    for a in addrs {
        if !listening(a) {
            eprintln!("SKIP {test}: nothing listens on {a} (run scripts/registry.sh start)");
            return false;
        }
    }
    if addrs.contains(&BASIC) && !ca_file().exists() {
        eprintln!(
            "SKIP {test}: {} missing (run scripts/registry.sh start)",
            ca_file().display()
        );
        return false;
    }
    true
}

/// A config from TOML text; few retries so failure tests are quick.
pub fn config(toml: &str) -> Config {
    Config::from_toml(toml).expect("test config")
}

/// `[[registry]]` for the TLS registry trusting the test CA.
pub fn basic_tls_config() -> String {
    format!(
        "[[registry]]\nhost = \"{BASIC}\"\nca_file = \"{}\"\n",
        ca_file().display()
    )
}

/// Write an auth.json with `entries` (host, user, password) into `dir`.
pub fn auth_file(dir: &Path, entries: &[(&str, &str, &str)]) -> PathBuf {
    use base64::Engine as _;
    let auths: serde_json::Map<String, serde_json::Value> = entries
        .iter()
        .map(|(h, u, p)| {
            let a = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
            (h.to_string(), serde_json::json!({ "auth": a }))
        })
        .collect();
    let p = dir.join("auth.json");
    std::fs::write(&p, serde_json::json!({ "auths": auths }).to_string()).expect("auth file");
    p
}

/// The file's digest and length.
pub fn file_digest(p: &Path) -> (Digest, u64) {
    digest_reader(std::fs::File::open(p).expect("open blob")).expect("hash blob")
}

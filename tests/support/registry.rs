//! The test registries started by `scripts/registry.sh start`, their credentials, and
//! checks on downloaded blobs.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;
use warren::config::Config;
use warren::digest::{digest_reader, Digest};
use warren::reference::ImageRef;
use warren::registry::credentials::AuthFiles;
use warren::registry::open_source_with;
use warren::source::Source;

/// Plain HTTP, anonymous.
pub const PLAIN: &str = "127.0.0.1:5000";
/// HTTPS with the test CA, basic auth.
pub const BASIC: &str = "127.0.0.1:5001";
/// Bearer tokens from [`TOKEN_SERVER`].
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
    let Ok(a) = addr.parse::<SocketAddr>() else {
        return false;
    };
    TcpStream::connect_timeout(&a, Duration::from_millis(300)).is_ok()
}

/// All of `addrs` accept connections (and the TLS registry's CA exists), or why not.
pub fn need_registry(addrs: &[&str]) -> Result<(), String> {
    if let Some(a) = addrs.iter().find(|a| !listening(a)) {
        return Err(format!(
            "nothing listens on {a} (run scripts/registry.sh start)"
        ));
    }
    if addrs.contains(&BASIC) && !ca_file().exists() {
        return Err(format!(
            "{} missing (run scripts/registry.sh start)",
            ca_file().display()
        ));
    }
    Ok(())
}

/// A config from TOML text.
pub fn config(toml: &str) -> Config {
    Config::from_toml(toml).expect("test config")
}

/// A registry source for reference `r` with config `toml`, credentials from `auth` only.
pub fn open(toml: &str, r: &str, auth: Vec<PathBuf>) -> Box<dyn Source> {
    open_source_with(
        &config(toml),
        &ImageRef::parse(r).expect("reference"),
        AuthFiles::new(auth),
    )
    .expect("open source")
}

/// `[[registry]]` for the TLS registry trusting the test CA.
pub fn basic_tls_config() -> String {
    format!(
        "[[registry]]\nhost = \"{BASIC}\"\nca_file = \"{}\"\n",
        ca_file().display()
    )
}

/// base64 of `user:password`, as in auth.json and a Basic Authorization header.
pub fn basic_auth(user: &str, password: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

/// Write an auth.json with `entries` (host, user, password) into `dir`.
pub fn auth_file(dir: &Path, entries: &[(&str, &str, &str)]) -> PathBuf {
    let auths: serde_json::Map<String, serde_json::Value> = entries
        .iter()
        .map(|(h, u, p)| {
            (
                h.to_string(),
                serde_json::json!({ "auth": basic_auth(u, p) }),
            )
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

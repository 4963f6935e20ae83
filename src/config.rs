//! Configuration: `/etc/warren/warren.toml`, then `$XDG_CONFIG_HOME/warren/warren.toml`,
//! then `WARREN_<SECTION>_<KEY>` environment variables, then command-line flags (applied
//! by the commands themselves). Later sources override earlier ones key by key.
//!
//! `WARREN_CONFIG=FILE` replaces the two files (used by tests and by admins who keep
//! the file elsewhere). Every key is documented in `config/warren.toml`.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The whole configuration. Unknown keys are an error, so typos do not pass silently.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub store: StoreConfig,
    pub pull: PullConfig,
    pub run: RunConfig,
    /// Per-registry settings, matched by host[:port].
    #[serde(rename = "registry")]
    pub registries: Vec<RegistryConfig>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// The user's own writable store. Default: `$XDG_DATA_HOME/warren` (`~/.local/share/warren`).
    pub path: Option<PathBuf>,
    /// Shared read-only stores, searched in order after the user's store.
    pub shared: Vec<PathBuf>,
    /// Keep compressed layer blobs after squashing (speeds up pulls of related images).
    pub keep_layers: bool,
}

/// The squashfs compressors `pull.compression` may name: those tar2sqfs offers (it
/// cannot write uncompressed images; lz4 is the fastest to read).
pub const COMPRESSORS: &[&str] = &["zstd", "gzip", "xz", "lz4"];

/// `[pull]`: downloading layers and squashing them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PullConfig {
    /// Blobs downloaded at once.
    pub parallel: usize,
    /// Attempts per request on 5xx, 429, timeouts and resets.
    pub retries: u32,
    /// Per-request timeout for connecting and for each read, in seconds.
    pub timeout_secs: u64,
    /// `os/arch[/variant]`; default: the host's.
    pub platform: Option<String>,
    /// Registries tried, in order, for a reference without a registry host.
    pub short_name_registries: Vec<String>,
    /// squashfs compressor, one of [`COMPRESSORS`]; default "zstd".
    pub compression: String,
    /// Compressor level (zstd 1..22, gzip and xz 1..9; ignored for lz4); 0 = compressor
    /// default.
    pub compression_level: u32,
    /// Entry count above which a layer is rejected (hostile-input bound).
    pub max_entries: u64,
    /// Size in bytes above which a single file is rejected.
    pub max_file_size: u64,
}

impl Default for PullConfig {
    fn default() -> Self {
        PullConfig {
            parallel: 4,
            retries: 5,
            timeout_secs: 60,
            platform: None,
            short_name_registries: vec!["docker.io".into()],
            compression: "zstd".into(),
            compression_level: 3,
            max_entries: 5_000_000,
            max_file_size: 256 << 30,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Writable layer: "auto" (probe kernel overlayfs, else fuse-overlayfs), "native", "fuse".
    pub overlay: String,
    /// Size of the tmpfs holding the writable layer (tmpfs `size=` syntax).
    pub tmpfs_size: String,
    /// Runtime state; default `$XDG_RUNTIME_DIR/warren`, else `/tmp/warren-UID`.
    pub runtime_dir: Option<PathBuf>,
    /// Host environment variables passed into containers: exact names or `PREFIX*`.
    pub env_allowlist: Vec<String>,
    /// Bind-mount the user's home directory by default.
    pub mount_home: bool,
    /// Without a subuid range, make chown/setuid-family calls succeed without effect.
    pub fake_chown: bool,
    /// Paths of the helper programs (looked up in PATH when relative).
    pub squashfuse: String,
    pub fuse_overlayfs: String,
    pub newuidmap: String,
    pub newgidmap: String,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            overlay: "auto".into(),
            tmpfs_size: "50%".into(),
            runtime_dir: None,
            env_allowlist: [
                "TERM",
                "LANG",
                "LC_*",
                "TZ",
                "SLURM_*",
                "SLURMD_*",
                "PMI_*",
                "PMIX_*",
                "OMPI_*",
                "PRTE_*",
                "UCX_*",
                "NCCL_*",
                "CUDA_VISIBLE_DEVICES",
                "NVIDIA_*",
                "HOSTNAME",
                "OMP_*",
                "http_proxy",
                "https_proxy",
                "no_proxy",
                "HTTP_PROXY",
                "HTTPS_PROXY",
                "NO_PROXY",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            mount_home: true,
            fake_chown: false,
            squashfuse: "squashfuse_ll".into(),
            fuse_overlayfs: "fuse-overlayfs".into(),
            newuidmap: "newuidmap".into(),
            newgidmap: "newgidmap".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// `host[:port]` as written in image references (`docker.io` for Docker Hub).
    pub host: String,
    /// Skip TLS certificate verification (like `--tls-verify=false`).
    pub insecure: bool,
    /// Speak plain HTTP (loopback registries do so automatically).
    pub http: bool,
    /// PEM file of extra CA certificates for this registry.
    pub ca_file: Option<PathBuf>,
    /// Host to contact instead (a mirror); references keep their original name.
    pub mirror: Option<String>,
}

impl Config {
    /// Load from the standard locations and the environment.
    pub fn load() -> Result<Config> {
        let mut merged = toml::Table::new();
        let files: Vec<PathBuf> = match std::env::var_os("WARREN_CONFIG") {
            Some(p) => vec![PathBuf::from(p)],
            None => {
                let mut v = vec![PathBuf::from("/etc/warren/warren.toml")];
                if let Some(d) = xdg_dir("XDG_CONFIG_HOME", ".config") {
                    v.push(d.join("warren/warren.toml"));
                }
                v
            }
        };
        for f in &files {
            match std::fs::read_to_string(f) {
                Ok(text) => {
                    let t: toml::Table = toml::from_str(&text)
                        .with_context(|| format!("config {}: invalid TOML", f.display()))?;
                    merge(&mut merged, t);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("config {}", f.display())),
            }
        }
        apply_env(&mut merged, std::env::vars())?;
        Config::from_table(merged)
    }

    /// Parse one TOML text (tests, `--config`).
    pub fn from_toml(text: &str) -> Result<Config> {
        let t: toml::Table = toml::from_str(text).context("invalid TOML")?;
        Config::from_table(t)
    }

    fn from_table(t: toml::Table) -> Result<Config> {
        let cfg: Config = toml::Value::Table(t)
            .try_into()
            .map_err(|e: toml::de::Error| anyhow::anyhow!("config: {}", e.message()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<()> {
        if !matches!(self.run.overlay.as_str(), "auto" | "native" | "fuse") {
            bail!(
                "config run.overlay: {:?} is not one of auto, native, fuse",
                self.run.overlay
            );
        }
        if !COMPRESSORS.contains(&self.pull.compression.as_str()) {
            bail!(
                "config pull.compression: {:?} is not one of {} (tar2sqfs writes no uncompressed images)",
                self.pull.compression,
                COMPRESSORS.join(", ")
            );
        }
        let max_level = match self.pull.compression.as_str() {
            "zstd" => 22,
            "gzip" | "xz" => 9,
            // lz4 has no levels: the setting (default 3, for zstd) is ignored.
            _ => u32::MAX,
        };
        if self.pull.compression_level > max_level {
            bail!(
                "config pull.compression_level: {} is not in 0..={max_level} for {} (0: its default)",
                self.pull.compression_level,
                self.pull.compression
            );
        }
        if self.pull.parallel == 0 || self.pull.parallel > 64 {
            bail!(
                "config pull.parallel: {} is not in 1..=64",
                self.pull.parallel
            );
        }
        Ok(())
    }

    /// The settings for one registry host, if any.
    pub fn registry(&self, host: &str) -> Option<&RegistryConfig> {
        self.registries.iter().find(|r| r.host == host)
    }

    /// The user's writable store directory.
    pub fn user_store(&self) -> Result<PathBuf> {
        if let Some(p) = &self.store.path {
            return Ok(p.clone());
        }
        xdg_dir("XDG_DATA_HOME", ".local/share")
            .map(|d| d.join("warren"))
            .context("no store: set store.path, XDG_DATA_HOME or HOME")
    }
}

/// `$VAR` if set and absolute, else `$HOME/FALLBACK`.
pub fn xdg_dir(var: &str, fallback: &str) -> Option<PathBuf> {
    if let Some(v) = std::env::var_os(var) {
        let p = PathBuf::from(v);
        if p.is_absolute() {
            return Some(p);
        }
    }
    home_dir().map(|h| h.join(fallback))
}

/// `$HOME`, else the passwd entry's home.
pub fn home_dir() -> Option<PathBuf> {
    if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return Some(PathBuf::from(h));
    }
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.dir)
}

fn merge(into: &mut toml::Table, from: toml::Table) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

/// `WARREN_PULL_PARALLEL=8` → `pull.parallel = 8`. Values parse as TOML when they can
/// (numbers, booleans, arrays), else they are strings. `WARREN_STORE_SHARED` takes a
/// colon-separated list like PATH.
fn apply_env(t: &mut toml::Table, vars: impl Iterator<Item = (String, String)>) -> Result<()> {
    const SECTIONS: [&str; 3] = ["store", "pull", "run"];
    for (name, value) in vars {
        let Some(rest) = name.strip_prefix("WARREN_") else {
            continue;
        };
        let lower = rest.to_ascii_lowercase();
        let Some((section, key)) = lower.split_once('_') else {
            continue;
        };
        if !SECTIONS.contains(&section) {
            continue;
        }
        let v = if section == "store" && key == "shared" {
            toml::Value::Array(
                value
                    .split(':')
                    .filter(|s| !s.is_empty())
                    .map(|s| s.into())
                    .collect(),
            )
        } else {
            parse_scalar(&value)
        };
        let sec = t
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()));
        match sec {
            toml::Value::Table(s) => {
                s.insert(key.to_string(), v);
            }
            _ => bail!("config: [{section}] is not a table"),
        }
    }
    Ok(())
}

fn parse_scalar(s: &str) -> toml::Value {
    let doc = format!("v = {s}");
    match toml::from_str::<toml::Table>(&doc) {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| s.into()),
        Err(_) => toml::Value::String(s.to_string()),
    }
}

/// Expand a leading `~/` (config files are written by people).
pub fn expand_tilde(p: &Path) -> PathBuf {
    match (p.strip_prefix("~"), home_dir()) {
        (Ok(rest), Some(h)) => h.join(rest),
        _ => p.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.pull.parallel, 4);
        assert_eq!(c.run.overlay, "auto");
    }

    #[test]
    fn unknown_key_is_an_error() {
        let e = Config::from_toml("[pull]\nparalel = 3\n").unwrap_err();
        assert!(format!("{e:#}").contains("paralel"), "{e:#}");
    }

    #[test]
    fn uncompressed_images_are_refused() {
        let e = Config::from_toml("[pull]\ncompression = \"none\"\n").unwrap_err();
        let e = format!("{e:#}");
        assert!(
            e.contains("pull.compression") && e.contains("zstd, gzip, xz, lz4"),
            "{e}"
        );
        for c in COMPRESSORS {
            // The default level (3) with lz4 too, which ignores it.
            let level = if *c == "lz4" { 3 } else { 9 };
            Config::from_toml(&format!(
                "[pull]\ncompression = \"{c}\"\ncompression_level = {level}\n"
            ))
            .unwrap();
        }
    }

    #[test]
    fn compression_level_out_of_range_is_refused() {
        for (c, bad) in [("zstd", 23), ("gzip", 10), ("xz", 10)] {
            let e = Config::from_toml(&format!(
                "[pull]\ncompression = \"{c}\"\ncompression_level = {bad}\n"
            ))
            .unwrap_err();
            assert!(format!("{e:#}").contains("pull.compression_level"), "{e:#}");
        }
    }

    #[test]
    fn bad_overlay_named() {
        let e = Config::from_toml("[run]\noverlay = \"kernel\"\n").unwrap_err();
        assert!(format!("{e:#}").contains("run.overlay"));
    }

    #[test]
    fn env_overrides_file() {
        let mut t: toml::Table = toml::from_str("[pull]\nparallel = 2\n").unwrap();
        let vars = vec![
            ("WARREN_PULL_PARALLEL".to_string(), "8".to_string()),
            ("WARREN_STORE_SHARED".to_string(), "/a:/b".to_string()),
            ("WARREN_RUN_OVERLAY".to_string(), "fuse".to_string()),
            ("UNRELATED".to_string(), "x".to_string()),
        ];
        apply_env(&mut t, vars.into_iter()).unwrap();
        let c = Config::from_table(t).unwrap();
        assert_eq!(c.pull.parallel, 8);
        assert_eq!(
            c.store.shared,
            vec![PathBuf::from("/a"), PathBuf::from("/b")]
        );
        assert_eq!(c.run.overlay, "fuse");
    }

    #[test]
    fn registries_parse() {
        let c = Config::from_toml(
            "[[registry]]\nhost = \"127.0.0.1:5000\"\nhttp = true\n[[registry]]\nhost = \"r.example\"\ninsecure = true\n",
        )
        .unwrap();
        assert!(c.registry("127.0.0.1:5000").unwrap().http);
        assert!(c.registry("r.example").unwrap().insecure);
        assert!(c.registry("other").is_none());
    }
}

#[cfg(test)]
mod example_tests {
    /// The shipped example must parse and match the defaults it documents.
    #[test]
    fn example_config_parses() {
        let text = include_str!("../config/warren.toml");
        let c = super::Config::from_toml(text).unwrap();
        let d = super::Config::default();
        assert_eq!(c.pull.parallel, d.pull.parallel);
        assert_eq!(c.pull.max_file_size, d.pull.max_file_size);
        assert_eq!(c.run.env_allowlist, d.run.env_allowlist);
        assert_eq!(c.store.keep_layers, d.store.keep_layers);
    }
}

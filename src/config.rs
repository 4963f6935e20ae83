//! Configuration: `/etc/warren/warren.toml`, then `$XDG_CONFIG_HOME/warren/warren.toml`,
//! then `WARREN_<SECTION>_<KEY>` environment variables, then command-line flags (applied
//! by the commands themselves). Later sources override earlier ones key by key.
//!
//! `WARREN_CONFIG=FILE` replaces the two files (used by tests and by admins who keep
//! the file elsewhere); unlike the standard files it must exist. Every key is documented
//! in `config/warren.toml`.
//!
//! Each source is checked on its own first, so an error names the file (with line and
//! column) or the variable it came from; only checks spanning keys run on the merge.

use serde::{Deserialize, Deserializer};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// A configuration that cannot be used; one line, naming its source.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file that could not be read (`WARREN_CONFIG` naming a missing file, EACCES…).
    #[error("config {origin}: {err}")]
    Read { origin: String, err: std::io::Error },
    /// A file that is not valid TOML or has a bad key or value, at `line:col` (1-based).
    #[error("{file}:{line}:{col}: {message}")]
    File {
        file: String,
        line: usize,
        col: usize,
        message: String,
    },
    /// A bad value from a source without positions (an environment variable) or a
    /// check that spans keys (`origin` then says so).
    #[error("config {origin}: {message}")]
    Invalid { origin: String, message: String },
}

impl ConfigError {
    fn invalid(origin: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            origin: origin.to_string(),
            message: one_line(&message.into()),
        }
    }
}

/// serde and toml messages may span lines; ours are one line.
fn one_line(s: &str) -> String {
    s.trim()
        .split('\n')
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The one boolean parser for configuration values and `WARREN_*` switches: `1`, `yes`,
/// `true` and `0`, `no`, `false`, in any case, surrounding blanks ignored.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "yes" | "true" => Some(true),
        "0" | "no" | "false" => Some(false),
        _ => None,
    }
}

/// What [`parse_bool`] accepts, for error messages.
pub const BOOL_VALUES: &str = "1/0, yes/no, true/false";

/// A boolean key: a TOML boolean, `0`/`1`, or a [`parse_bool`] string (env values arrive
/// as strings or numbers).
fn flex_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = bool;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "a boolean ({BOOL_VALUES})")
        }
        fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<bool, E> {
            Ok(v)
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<bool, E> {
            match v {
                0 => Ok(false),
                1 => Ok(true),
                _ => Err(E::invalid_value(serde::de::Unexpected::Signed(v), &self)),
            }
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<bool, E> {
            self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<bool, E> {
            parse_bool(v).ok_or_else(|| E::invalid_value(serde::de::Unexpected::Str(v), &self))
        }
    }
    d.deserialize_any(V)
}

/// Longest `run.shared_mount_idle`: one day.
pub const MAX_IDLE_SECS: u64 = 86_400;

/// Pure: a duration in seconds: `N`, `Ns`, `Nm` or `Nh` (blanks around ignored), at most
/// [`MAX_IDLE_SECS`].
pub fn parse_seconds(s: &str) -> Option<u64> {
    let t = s.trim();
    let (num, unit) = match t.char_indices().last()? {
        (i, 's') => (&t[..i], 1),
        (i, 'm') => (&t[..i], 60),
        (i, 'h') => (&t[..i], 3600),
        _ => (t, 1),
    };
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    num.parse::<u64>()
        .ok()?
        .checked_mul(unit)
        .filter(|&v| v <= MAX_IDLE_SECS)
}

/// A duration key: a TOML integer (seconds) or a [`parse_seconds`] string.
fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = u64;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(
                f,
                "seconds: N, \"Ns\", \"Nm\" or \"Nh\", at most {MAX_IDLE_SECS} s"
            )
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v)
                .ok()
                .filter(|&v| v <= MAX_IDLE_SECS)
                .ok_or_else(|| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<u64, E> {
            self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<u64, E> {
            parse_seconds(v).ok_or_else(|| E::invalid_value(serde::de::Unexpected::Str(v), &self))
        }
    }
    d.deserialize_any(V)
}

/// The whole configuration. Unknown keys are an error, so typos do not pass silently.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub store: StoreConfig,
    pub pull: PullConfig,
    pub run: RunConfig,
    /// Container Device Interface specs (`--device`, docs/devices.md).
    pub cdi: CdiConfig,
    /// Site hooks and drop-ins (docs/hooks.md).
    pub hooks: HooksConfig,
    /// Host MPI / interconnect injection (docs/mpi.md).
    pub mpi: MpiConfig,
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
    #[serde(deserialize_with = "flex_bool")]
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
    #[serde(deserialize_with = "flex_bool")]
    pub mount_home: bool,
    /// Without a subuid range, make chown/setuid-family calls succeed without effect.
    #[serde(deserialize_with = "flex_bool")]
    pub fake_chown: bool,
    /// Run every container as `--contain` (untrusted images: own PID namespace and
    /// /proc, private IPC, no home, only fds 0-2, no host environment).
    #[serde(deserialize_with = "flex_bool")]
    pub contain: bool,
    /// Share one image mount (a namespace holder started on demand) among the user's
    /// containers of one image and identity (docs/run.md, "Shared image mounts").
    #[serde(deserialize_with = "flex_bool")]
    pub shared_mount: bool,
    /// Seconds a shared image mount stays after its last container ended (`60`, `"90s"`,
    /// `"5m"`); 0: it ends with its last container.
    #[serde(deserialize_with = "seconds")]
    pub shared_mount_idle: u64,
    /// What serves images: "builtin" (warren's own multi-threaded squashfs server,
    /// falling back to `squashfuse` for images it does not read) or "squashfuse".
    pub image_server: String,
    /// Keep a prefetch list per image (what a fresh mount's first container read) and
    /// read it ahead on later fresh mounts (docs/run.md, "The prefetch list").
    #[serde(deserialize_with = "flex_bool")]
    pub prefetch_list: bool,
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
            contain: false,
            shared_mount: true,
            shared_mount_idle: 60,
            image_server: "builtin".into(),
            prefetch_list: true,
            squashfuse: "squashfuse_ll".into(),
            fuse_overlayfs: "fuse-overlayfs".into(),
            newuidmap: "newuidmap".into(),
            newgidmap: "newgidmap".into(),
        }
    }
}

/// `[cdi]`: where CDI spec files are read from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CdiConfig {
    /// Spec directories, lowest priority first (a later one overrides an earlier one for
    /// a device of the same name).
    pub spec_dirs: Vec<PathBuf>,
}

impl Default for CdiConfig {
    fn default() -> Self {
        CdiConfig {
            spec_dirs: vec!["/etc/cdi".into(), "/var/run/cdi".into()],
        }
    }
}

/// `[hooks]`: the site's OCI hooks (`*.json`, podman's hooks.d format) and drop-ins
/// (enroot's `*.fstab` mounts and `*.env` environment), each directory read in order,
/// its files in lexical order.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HooksConfig {
    pub dirs: Vec<PathBuf>,
    pub mounts_dirs: Vec<PathBuf>,
    pub environ_dirs: Vec<PathBuf>,
    /// Seconds a hook without its own `timeout` may run.
    pub timeout_secs: u32,
}

impl Default for HooksConfig {
    fn default() -> Self {
        HooksConfig {
            dirs: vec!["/etc/warren/hooks.d".into()],
            mounts_dirs: vec!["/etc/warren/mounts.d".into()],
            environ_dirs: vec!["/etc/warren/environ.d".into()],
            timeout_secs: 60,
        }
    }
}

/// The values `mpi.inject` and `--mpi-inject` take.
pub const MPI_INJECT_MODES: &[&str] = &["off", "on", "force"];

/// `[mpi]`: the host MPI and interconnect a site brings into containers when injection
/// is on (Apptainer's hybrid/bind model); `runtime::mpi_inject` applies it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MpiConfig {
    /// Default of `--mpi-inject` (and the plugin's `--container-mpi-inject`): one of
    /// [`MPI_INJECT_MODES`]. Off by default.
    pub inject: String,
    /// Host library files (their ELF dependencies come along, glibc's own excepted),
    /// bound read-only into `lib_dir`.
    pub libraries: Vec<PathBuf>,
    /// Host directories bound read-only at the same path (MCA plugin and config dirs).
    pub directories: Vec<PathBuf>,
    /// Host device nodes, or directories of them (`/dev/infiniband`), bound at the same
    /// path with device access.
    pub devices: Vec<PathBuf>,
    /// `NAME=VALUE` set in the container.
    pub env: Vec<String>,
    /// Where the libraries appear inside; put first in `LD_LIBRARY_PATH`.
    pub lib_dir: PathBuf,
}

impl Default for MpiConfig {
    fn default() -> Self {
        MpiConfig {
            inject: "off".into(),
            libraries: vec![],
            directories: vec![],
            devices: vec![],
            env: vec![],
            lib_dir: PathBuf::from("/usr/lib/warren-mpi"),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// `host[:port]` as written in image references (`docker.io` for Docker Hub).
    pub host: String,
    /// Skip TLS certificate verification (like `--tls-verify=false`).
    #[serde(deserialize_with = "flex_bool")]
    pub insecure: bool,
    /// Speak plain HTTP (loopback registries do so automatically).
    #[serde(deserialize_with = "flex_bool")]
    pub http: bool,
    /// PEM file of extra CA certificates for this registry.
    pub ca_file: Option<PathBuf>,
    /// Host to contact instead (a mirror); references keep their original name.
    pub mirror: Option<String>,
}

/// Sections that `WARREN_<SECTION>_<KEY>` variables set (others, like `WARREN_TIMING`,
/// belong to the commands).
const ENV_SECTIONS: [&str; 6] = ["store", "pull", "run", "mpi", "cdi", "hooks"];

impl Config {
    /// Load from the standard locations and the process environment.
    pub fn load() -> Result<Config, ConfigError> {
        Config::load_from(std::env::vars_os())
    }

    /// Load with `vars` as the environment (`WARREN_CONFIG`, `WARREN_*`); the standard
    /// file locations still come from `XDG_CONFIG_HOME`/`HOME` of the process.
    pub fn load_from(
        vars: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Result<Config, ConfigError> {
        let vars: Vec<(OsString, OsString)> = vars.into_iter().collect();
        let explicit = vars.iter().find(|(k, _)| k == "WARREN_CONFIG");
        let files: Vec<(PathBuf, bool)> = match explicit {
            Some((_, p)) if p.is_empty() => {
                return Err(ConfigError::invalid(
                    "WARREN_CONFIG",
                    "is empty; name a file or unset it",
                ))
            }
            Some((_, p)) => vec![(PathBuf::from(p), true)],
            None => {
                let mut v = vec![(PathBuf::from("/etc/warren/warren.toml"), false)];
                if let Some(d) = xdg_dir("XDG_CONFIG_HOME", ".config") {
                    v.push((d.join("warren/warren.toml"), false));
                }
                v
            }
        };
        let mut merged = toml::Table::new();
        for (f, required) in &files {
            let origin = if *required {
                format!("WARREN_CONFIG={}", f.display())
            } else {
                f.display().to_string()
            };
            let text = match std::fs::read_to_string(f) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => continue,
                Err(err) => return Err(ConfigError::Read { origin, err }),
            };
            merge(&mut merged, parse_file(&f.display().to_string(), &text)?);
        }
        for (name, value) in &vars {
            if let Some(t) = env_table(name, value)? {
                merge(&mut merged, t);
            }
        }
        let cfg = Config::from_table_unchecked(merged)
            .map_err(|e| ConfigError::invalid("(merged sources)", e.message()))?;
        cfg.check_combined()?;
        Ok(cfg)
    }

    /// Parse one TOML text (tests, `--config`); errors are located as `<text>:LINE:COL`.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let t = parse_file("<text>", text)?;
        let cfg = Config::from_table_unchecked(t)
            .map_err(|e| ConfigError::invalid("<text>", e.message()))?;
        cfg.check_combined()?;
        Ok(cfg)
    }

    fn from_table_unchecked(t: toml::Table) -> Result<Config, toml::de::Error> {
        toml::Value::Table(t).try_into()
    }

    /// Checks of single keys, run on each source alone so that errors name it.
    fn check_keys(&self) -> Result<(), String> {
        if !matches!(self.run.overlay.as_str(), "auto" | "native" | "fuse") {
            return Err(format!(
                "run.overlay: {:?} is not one of auto, native, fuse",
                self.run.overlay
            ));
        }
        if !matches!(self.run.image_server.as_str(), "builtin" | "squashfuse") {
            return Err(format!(
                "run.image_server: {:?} is not one of builtin, squashfuse",
                self.run.image_server
            ));
        }
        if !COMPRESSORS.contains(&self.pull.compression.as_str()) {
            return Err(format!(
                "pull.compression: {:?} is not one of {} (tar2sqfs writes no uncompressed images)",
                self.pull.compression,
                COMPRESSORS.join(", ")
            ));
        }
        if self.hooks.timeout_secs == 0 {
            return Err("hooks.timeout_secs: 0 is not allowed (a hook must have a limit)".into());
        }
        if !MPI_INJECT_MODES.contains(&self.mpi.inject.as_str()) {
            return Err(format!(
                "mpi.inject: {:?} is not one of {}",
                self.mpi.inject,
                MPI_INJECT_MODES.join(", ")
            ));
        }
        let host_paths = self
            .mpi
            .libraries
            .iter()
            .map(|p| ("mpi.libraries", p))
            .chain(self.mpi.directories.iter().map(|p| ("mpi.directories", p)))
            .chain(self.mpi.devices.iter().map(|p| ("mpi.devices", p)))
            .chain(std::iter::once(("mpi.lib_dir", &self.mpi.lib_dir)));
        for (key, p) in host_paths {
            let s = p.to_string_lossy();
            if !p.is_absolute() || s.contains(':') || s.split('/').any(|c| c == "..") {
                return Err(format!(
                    "{key}: {s:?} must be an absolute path without ':' or '..'"
                ));
            }
        }
        if self.mpi.lib_dir == Path::new("/") {
            return Err("mpi.lib_dir: / is not allowed".into());
        }
        for e in &self.mpi.env {
            let name = e
                .split_once('=')
                .map(|(k, _)| k)
                .ok_or_else(|| format!("mpi.env: {e:?} is not NAME=VALUE"))?;
            crate::runtime::env::check_name(name)
                .map_err(|why| format!("mpi.env: {name:?}: {why}"))?;
        }
        if self.pull.parallel == 0 || self.pull.parallel > 64 {
            return Err(format!(
                "pull.parallel: {} is not in 1..=64",
                self.pull.parallel
            ));
        }
        let paths = self
            .store
            .path
            .iter()
            .map(|p| ("store.path", p))
            .chain(self.store.shared.iter().map(|p| ("store.shared", p)))
            .chain(self.run.runtime_dir.iter().map(|p| ("run.runtime_dir", p)))
            .chain(self.cdi.spec_dirs.iter().map(|p| ("cdi.spec_dirs", p)))
            .chain(self.hooks.dirs.iter().map(|p| ("hooks.dirs", p)))
            .chain(
                self.hooks
                    .mounts_dirs
                    .iter()
                    .map(|p| ("hooks.mounts_dirs", p)),
            )
            .chain(
                self.hooks
                    .environ_dirs
                    .iter()
                    .map(|p| ("hooks.environ_dirs", p)),
            );
        for (key, p) in paths {
            // Relative to what? The directory warren happens to start in differs per
            // job step; `~/` is fine (expanded against HOME).
            if !(p.is_absolute() || p == Path::new("~") || p.starts_with("~/")) {
                return Err(format!(
                    "{key}: {:?} is a relative path; give an absolute one (or ~/…)",
                    p.display().to_string()
                ));
            }
        }
        Ok(())
    }

    /// Checks spanning keys that several sources may set, run on the merge.
    fn check_combined(&self) -> Result<(), ConfigError> {
        self.check_keys()
            .map_err(|m| ConfigError::invalid("(merged sources)", m))?;
        let max_level = match self.pull.compression.as_str() {
            "zstd" => 22,
            "gzip" | "xz" => 9,
            // lz4 has no levels: the setting (default 3, for zstd) is ignored.
            _ => u32::MAX,
        };
        if self.pull.compression_level > max_level {
            return Err(ConfigError::invalid(
                "(merged sources)",
                format!(
                    "pull.compression_level: {} is not in 0..={max_level} for {} (0: its default)",
                    self.pull.compression_level, self.pull.compression
                ),
            ));
        }
        Ok(())
    }

    /// The settings for one registry host, if any.
    pub fn registry(&self, host: &str) -> Option<&RegistryConfig> {
        self.registries.iter().find(|r| r.host == host)
    }

    /// The user's writable store directory.
    pub fn user_store(&self) -> anyhow::Result<PathBuf> {
        if let Some(p) = &self.store.path {
            return Ok(p.clone());
        }
        xdg_dir("XDG_DATA_HOME", ".local/share")
            .map(|d| d.join("warren"))
            .ok_or_else(|| anyhow::anyhow!("no store: set store.path, XDG_DATA_HOME or HOME"))
    }
}

/// 1-based line and column of byte `at` in `text`.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let at = at.min(text.len());
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// One config file: syntax, then its keys and values alone (typed, single-key checks),
/// every error located `FILE:LINE:COL` when the parser knows where.
fn parse_file(name: &str, text: &str) -> Result<toml::Table, ConfigError> {
    let located = |e: toml::de::Error| {
        let (line, col) = e.span().map_or((1, 1), |s| line_col(text, s.start));
        ConfigError::File {
            file: name.to_string(),
            line,
            col,
            message: one_line(e.message()),
        }
    };
    let table: toml::Table = toml::from_str(text).map_err(located)?;
    let alone: Config = toml::from_str(text).map_err(located)?;
    alone
        .check_keys()
        .map_err(|m| ConfigError::invalid(name, m))?;
    Ok(table)
}

/// `WARREN_PULL_PARALLEL=8` → `[pull] parallel = 8`, checked alone so that an error
/// names the variable. Values parse as TOML when they can (numbers, booleans, arrays),
/// else, or when the key wants a string, they are strings. Lists (`WARREN_STORE_SHARED`,
/// `WARREN_CDI_SPEC_DIRS`, `WARREN_HOOKS_DIRS`…) are colon-separated like PATH. `None` for variables that are not configuration.
fn env_table(name: &OsString, value: &OsString) -> Result<Option<toml::Table>, ConfigError> {
    let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("WARREN_")) else {
        return Ok(None);
    };
    let lower = rest.to_ascii_lowercase();
    let Some((section, key)) = lower.split_once('_') else {
        return Ok(None);
    };
    if !ENV_SECTIONS.contains(&section) {
        return Ok(None);
    }
    let origin = format!("WARREN_{rest}");
    let Some(value) = value.to_str() else {
        return Err(ConfigError::invalid(&origin, "value is not UTF-8"));
    };
    let one = |v: toml::Value| {
        let mut sec = toml::Table::new();
        sec.insert(key.to_string(), v);
        let mut t = toml::Table::new();
        t.insert(section.to_string(), toml::Value::Table(sec));
        t
    };
    let check = |t: &toml::Table| -> Result<(), String> {
        let c = Config::from_table_unchecked(t.clone())
            .map_err(|e| format!("{section}.{key}: {}", e.message()))?;
        c.check_keys()
    };
    let candidates = if section == "store" && key == "shared" {
        vec![toml::Value::Array(
            value
                .split(':')
                .filter(|s| !s.is_empty())
                .map(|s| s.into())
                .collect(),
        )]
    } else {
        // A list of paths (`cdi.spec_dirs`, `hooks.dirs`, `mpi.libraries`…) is
        // colon-separated, like PATH.
        let paths = toml::Value::Array(
            value
                .split(':')
                .filter(|s| !s.is_empty())
                .map(|s| s.into())
                .collect(),
        );
        vec![
            parse_scalar(value),
            toml::Value::String(value.to_string()),
            paths,
        ]
    };
    // The error told is the scalar's or the string's (what most keys want).
    let mut told = String::new();
    for (i, v) in candidates.into_iter().enumerate() {
        let t = one(v);
        match check(&t) {
            Ok(()) => return Ok(Some(t)),
            Err(m) if i < 2 => told = m,
            Err(_) => {}
        }
    }
    Err(ConfigError::invalid(&origin, told))
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
    fn image_server_is_builtin_or_squashfuse() {
        assert_eq!(Config::default().run.image_server, "builtin");
        let c = Config::from_toml("[run]\nimage_server = \"squashfuse\"\n").unwrap();
        assert_eq!(c.run.image_server, "squashfuse");
        let e = Config::from_toml("[run]\nimage_server = \"fast\"\n").unwrap_err();
        assert!(
            format!("{e:#}")
                .contains("run.image_server: \"fast\" is not one of builtin, squashfuse"),
            "{e:#}"
        );
    }

    /// `load_from` with the config file `text` (through WARREN_CONFIG) and `vars`.
    fn load(text: &str, vars: &[(&str, &str)]) -> Result<Config, String> {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("w.toml");
        std::fs::write(&f, text).unwrap();
        let mut v: Vec<(OsString, OsString)> =
            vec![("WARREN_CONFIG".into(), f.clone().into_os_string())];
        v.extend(vars.iter().map(|(k, v)| (k.into(), v.into())));
        // The file by a fixed name, so that messages can be compared.
        Config::load_from(v).map_err(|e| e.to_string().replace(&f.display().to_string(), "W"))
    }

    #[test]
    fn env_overrides_file() {
        let c = load(
            "[pull]\nparallel = 2\n",
            &[
                ("WARREN_PULL_PARALLEL", "8"),
                ("WARREN_STORE_SHARED", "/a:/b"),
                ("WARREN_RUN_OVERLAY", "fuse"),
                // A string key given a number-like value stays a string.
                ("WARREN_RUN_TMPFS_SIZE", "4096"),
                ("WARREN_TIMING", "1"),
                ("UNRELATED", "x"),
            ],
        )
        .unwrap();
        assert_eq!(c.pull.parallel, 8);
        assert_eq!(
            c.store.shared,
            vec![PathBuf::from("/a"), PathBuf::from("/b")]
        );
        assert_eq!(c.run.overlay, "fuse");
        assert_eq!(c.run.tmpfs_size, "4096");
        // [cdi] and [hooks]: lists colon-separated.
        let c = load(
            "",
            &[
                ("WARREN_CDI_SPEC_DIRS", "/etc/cdi:/site/cdi"),
                ("WARREN_HOOKS_DIRS", "/site/hooks.d"),
                ("WARREN_HOOKS_MOUNTS_DIRS", ""),
                ("WARREN_HOOKS_TIMEOUT_SECS", "5"),
                ("WARREN_MPI_LIBRARIES", "/opt/mpi/lib/libmpi.so.40"),
            ],
        )
        .unwrap();
        assert_eq!(
            c.cdi.spec_dirs,
            vec![PathBuf::from("/etc/cdi"), PathBuf::from("/site/cdi")]
        );
        assert_eq!(c.hooks.dirs, vec![PathBuf::from("/site/hooks.d")]);
        assert!(c.hooks.mounts_dirs.is_empty());
        assert_eq!(c.hooks.timeout_secs, 5);
        assert_eq!(
            c.mpi.libraries,
            vec![PathBuf::from("/opt/mpi/lib/libmpi.so.40")]
        );
        let e = load("", &[("WARREN_HOOKS_TIMEOUT_SECS", "soon")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("WARREN_HOOKS_TIMEOUT_SECS"), "{e}");
    }

    #[test]
    fn booleans_take_every_spelling_in_files_and_env() {
        for (v, want) in [
            ("1", true),
            ("yes", true),
            ("TRUE", true),
            ("Yes", true),
            ("0", false),
            ("no", false),
            ("False", false),
        ] {
            let c = load("", &[("WARREN_STORE_KEEP_LAYERS", v)]).unwrap();
            assert_eq!(c.store.keep_layers, want, "{v}");
            let c = load(&format!("[run]\nmount_home = \"{v}\"\n"), &[]).unwrap();
            assert_eq!(c.run.mount_home, want, "{v}");
        }
        let c = load("[run]\nfake_chown = 1\nmount_home = false\n", &[]).unwrap();
        assert!(c.run.fake_chown && !c.run.mount_home);
        assert!(!c.run.contain);
        assert!(load("[run]\ncontain = true\n", &[]).unwrap().run.contain);
        let c = load("", &[]).unwrap();
        assert!(c.run.shared_mount && c.run.shared_mount_idle == 60);
        let c = load(
            "[run]\nshared_mount = false\nshared_mount_idle = \"2m\"\n",
            &[],
        )
        .unwrap();
        assert!(!c.run.shared_mount && c.run.shared_mount_idle == 120);
        assert_eq!(
            load("[run]\nshared_mount_idle = 0\n", &[])
                .unwrap()
                .run
                .shared_mount_idle,
            0
        );
        for bad in ["-1", "\"1d\"", "\"x\"", "86401", "\"\"", "\"1.5s\""] {
            let e = load(&format!("[run]\nshared_mount_idle = {bad}\n"), &[])
                .unwrap_err()
                .to_string();
            assert!(e.contains("seconds") && !e.contains('\n'), "{bad}: {e}");
        }
        for bad in ["2", "maybe", "on", ""] {
            let e = load("", &[("WARREN_RUN_FAKE_CHOWN", bad)])
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("WARREN_RUN_FAKE_CHOWN") && e.contains("1/0, yes/no, true/false"),
                "{e}"
            );
        }
    }

    #[test]
    fn env_errors_name_the_variable() {
        let e = load("", &[("WARREN_PULL_PARALLEL", "lots")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("WARREN_PULL_PARALLEL") && e.contains("lots"),
            "{e}"
        );
        let e = load("", &[("WARREN_RUN_OVERLAY", "kernel")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("WARREN_RUN_OVERLAY: run.overlay"), "{e}");
        let e = load("", &[("WARREN_RUN_NOPE", "1")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("WARREN_RUN_NOPE") && e.contains("nope"), "{e}");
    }

    #[test]
    fn file_errors_are_one_line_with_position() {
        let e = load("[pull]\nparallel = 2\nretries = = 3\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("W:3:11: "), "{e}");
        assert!(!e.contains('\n'), "{e}");
        // A type error is located too.
        let e = load("[pull]\n\nparallel = \"x\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("W:3:12: "), "{e}");
        let e = load("[store]\nkeep_layers = 7\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("W:2:15: ") && e.contains("1/0"), "{e}");
    }

    #[test]
    fn relative_paths_are_refused_naming_key_and_source() {
        let e = load("[store]\npath = \"data/warren\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("config W: store.path: \"data/warren\" is a relative path"),
            "{e}"
        );
        let e = load("", &[("WARREN_RUN_RUNTIME_DIR", "run")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("WARREN_RUN_RUNTIME_DIR: run.runtime_dir"), "{e}");
        let e = load("", &[("WARREN_STORE_SHARED", "/a:b")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("WARREN_STORE_SHARED: store.shared"), "{e}");
        let c = load(
            "[store]\npath = \"~/w\"\n[run]\nruntime_dir = \"/r\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.store.path, Some(PathBuf::from("~/w")));
    }

    #[test]
    fn warren_config_must_exist() {
        let e = Config::load_from([("WARREN_CONFIG".into(), "/nonexistent/w.toml".into())])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("config WARREN_CONFIG=/nonexistent/w.toml: "),
            "{e}"
        );
        let e = Config::load_from([("WARREN_CONFIG".into(), "".into())])
            .unwrap_err()
            .to_string();
        assert!(e.contains("WARREN_CONFIG"), "{e}");
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 3), (2, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("ab", 99), (1, 3));
    }

    proptest::proptest! {
        #[test]
        fn parse_bool_is_case_insensitive(
            w in proptest::sample::select(vec!["1", "0", "yes", "no", "true", "false"]),
            mask in proptest::prelude::any::<u8>(),
            pad in "[ \t]{0,2}",
        ) {
            // Each letter upper- or lower-case as the mask's bits say (ASCII only).
            let s: String = w
                .chars()
                .enumerate()
                .map(|(i, c)| if mask >> i & 1 == 1 { c.to_ascii_uppercase() } else { c })
                .collect();
            let s = format!("{pad}{s}{pad}");
            let want = matches!(w, "1" | "yes" | "true");
            proptest::prop_assert_eq!(parse_bool(&s), Some(want));
        }

        #[test]
        fn parse_seconds_takes_only_bounded_durations(s in "\\PC{0,12}") {
            if let Some(v) = parse_seconds(&s) {
                let t = s.trim();
                proptest::prop_assert!(v <= MAX_IDLE_SECS);
                proptest::prop_assert!(t.trim_end_matches(['s', 'm', 'h']).bytes().all(|b| b.is_ascii_digit()));
            }
        }

        #[test]
        fn parse_seconds_round_trips(n in 0u64..=MAX_IDLE_SECS) {
            proptest::prop_assert_eq!(parse_seconds(&n.to_string()), Some(n));
            proptest::prop_assert_eq!(parse_seconds(&format!("{n}s")), Some(n));
            proptest::prop_assert_eq!(parse_seconds(&format!(" {}m ", n / 60)), Some(n / 60 * 60));
        }

        #[test]
        fn parse_bool_refuses_everything_else(s in "\\PC*") {
            let known = ["1", "0", "yes", "no", "true", "false"]
                .contains(&s.trim().to_ascii_lowercase().as_str());
            proptest::prop_assert_eq!(parse_bool(&s).is_some(), known);
        }

        /// Any text as a config file: an error or a config, never a panic, and errors
        /// are one line.
        #[test]
        fn any_text_is_an_error_or_a_config(s in "\\PC*(\n\\PC*){0,4}") {
            if let Err(e) = Config::from_toml(&s) {
                proptest::prop_assert!(!e.to_string().contains('\n'), "{}", e);
            }
        }
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
        assert_eq!(c.mpi.inject, d.mpi.inject);
        assert_eq!(c.mpi.lib_dir, d.mpi.lib_dir);
    }
}

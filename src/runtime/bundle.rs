//! An OCI runtime bundle's `config.json` → a checked plan (`Bundle`). Pure: the caller
//! reads the file (at most [`MAX_CONFIG`] bytes) and passes the bytes; nothing here
//! touches the file system. Every field of the runtime spec is either honoured, refused
//! with one line naming it, or (rootless only) documented as ignored in docs/oci.md.

use super::caps;
use super::idmap::Extent;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use thiserror::Error;

/// Largest `config.json` accepted (a real one is a few KiB).
pub const MAX_CONFIG: u64 = 1 << 20;

/// The annotation naming a warren image to use as the root instead of `root.path`.
pub const IMAGE_ANNOTATION: &str = "org.warren.image";

/// What is wrong with a config.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BundleError {
    #[error("config.json: {0}")]
    Json(String),
    #[error("config.json: {0} is not supported by warren")]
    Unsupported(String),
    #[error("config.json: {field}: {why}")]
    Invalid { field: String, why: String },
}

fn invalid(field: impl Into<String>, why: impl Into<String>) -> BundleError {
    BundleError::Invalid {
        field: field.into(),
        why: why.into(),
    }
}

// ---- the JSON shape (only what the runtime spec defines; unknown keys are refused) ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Config {
    oci_version: String,
    process: Option<Process>,
    root: Option<Root>,
    hostname: Option<String>,
    domainname: Option<String>,
    #[serde(default)]
    mounts: Vec<Mount>,
    hooks: Option<Hooks>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    linux: Option<Linux>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Process {
    #[serde(default)]
    terminal: bool,
    console_size: Option<serde_json::Value>,
    user: User,
    #[serde(default)]
    args: Vec<String>,
    command_line: Option<String>,
    #[serde(default)]
    env: Vec<String>,
    cwd: String,
    capabilities: Option<Capabilities>,
    #[serde(default)]
    rlimits: Vec<Rlimit>,
    // Always on in warren; `false` cannot be honoured and is documented.
    #[serde(default)]
    #[allow(dead_code)]
    no_new_privileges: bool,
    apparmor_profile: Option<String>,
    oom_score_adj: Option<i32>,
    selinux_label: Option<String>,
    io_priority: Option<serde_json::Value>,
    scheduler: Option<serde_json::Value>,
    exec_cpu_affinity: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct User {
    uid: u32,
    gid: u32,
    umask: Option<u32>,
    #[serde(default)]
    additional_gids: Vec<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Capabilities {
    #[serde(default)]
    bounding: Vec<String>,
    #[serde(default)]
    effective: Vec<String>,
    #[serde(default)]
    inheritable: Vec<String>,
    #[serde(default)]
    permitted: Vec<String>,
    #[serde(default)]
    ambient: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rlimit {
    #[serde(rename = "type")]
    kind: String,
    hard: u64,
    soft: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Root {
    path: String,
    #[serde(default)]
    readonly: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Mount {
    destination: String,
    source: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    options: Vec<String>,
    uid_mappings: Option<serde_json::Value>,
    gid_mappings: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Hooks {
    #[serde(default)]
    prestart: Vec<HookJson>,
    #[serde(default)]
    create_runtime: Vec<HookJson>,
    #[serde(default)]
    create_container: Vec<HookJson>,
    #[serde(default)]
    start_container: Vec<HookJson>,
    #[serde(default)]
    poststart: Vec<HookJson>,
    #[serde(default)]
    poststop: Vec<HookJson>,
}

/// One OCI hook as a bundle's `config.json` and podman's `hooks.d` files write it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HookJson {
    path: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: Vec<String>,
    timeout: Option<i64>,
}

impl HookJson {
    /// Checked: an absolute path, no NUL byte, `NAME=VALUE` entries, a positive timeout.
    pub(crate) fn check(&self) -> Result<Hook, String> {
        if !self.path.starts_with('/') || self.path.contains('\0') {
            return Err(format!("path {:?} must be an absolute path", self.path));
        }
        if self.args.iter().chain(&self.env).any(|a| a.contains('\0')) {
            return Err("contains a NUL byte".into());
        }
        if let Some(e) = self
            .env
            .iter()
            .find(|e| e.split_once('=').is_none_or(|(k, _)| k.is_empty()))
        {
            return Err(format!("env entry {e:?} is not NAME=VALUE"));
        }
        let timeout = match self.timeout {
            None => None,
            Some(t) if t > 0 => Some(u32::try_from(t).unwrap_or(u32::MAX)),
            Some(t) => return Err(format!("timeout {t} must be greater than zero")),
        };
        Ok(Hook {
            path: PathBuf::from(&self.path),
            args: self.args.clone(),
            env: self.env.clone(),
            timeout,
        })
    }
}

// Some fields are only accepted and ignored rootless (docs/oci.md).
#[allow(dead_code)]
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Linux {
    #[serde(default)]
    namespaces: Vec<Namespace>,
    uid_mappings: Option<Vec<Mapping>>,
    gid_mappings: Option<Vec<Mapping>>,
    // Ignored rootless (docs/oci.md): no cgroup delegation, no mknod.
    devices: Option<serde_json::Value>,
    cgroups_path: Option<String>,
    resources: Option<serde_json::Value>,
    sysctl: Option<BTreeMap<String, String>>,
    // Paths the unprivileged user cannot read or write on the host anyway.
    masked_paths: Option<Vec<String>>,
    readonly_paths: Option<Vec<String>>,
    rootfs_propagation: Option<String>,
    mount_label: Option<String>,
    // Refused.
    seccomp: Option<serde_json::Value>,
    personality: Option<serde_json::Value>,
    intel_rdt: Option<serde_json::Value>,
    time_offsets: Option<serde_json::Value>,
    unified: Option<serde_json::Value>,
    memory_policy: Option<serde_json::Value>,
    net_devices: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Namespace {
    #[serde(rename = "type")]
    kind: String,
    path: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Mapping {
    #[serde(rename = "containerID")]
    container_id: u32,
    #[serde(rename = "hostID")]
    host_id: u32,
    size: u32,
}

// ---- the checked plan ----

/// Where the root file system comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootSource {
    /// A directory (`root.path`, relative to the bundle unless absolute).
    Dir(PathBuf),
    /// A warren image reference (the `org.warren.image` annotation).
    Image(String),
}

/// A bind mount from `mounts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    pub source: PathBuf,
    pub dest: PathBuf,
    pub read_only: bool,
}

/// One hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    pub path: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<String>,
    /// Seconds; `None`: no limit.
    pub timeout: Option<u32>,
}

/// The hooks, by phase.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HookSet {
    pub prestart: Vec<Hook>,
    pub create_runtime: Vec<Hook>,
    pub create_container: Vec<Hook>,
    pub start_container: Vec<Hook>,
    pub poststart: Vec<Hook>,
    pub poststop: Vec<Hook>,
}

/// Namespaces besides user and mount (which warren always creates).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Namespaces {
    pub network: bool,
    pub ipc: bool,
    pub uts: bool,
    pub cgroup: bool,
    /// A PID namespace: warren's `contain` mode (which also makes IPC private).
    pub pid: bool,
}

/// A resource limit to set (`RLIMIT_*` name without the prefix, as in the spec).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    pub resource: String,
    pub soft: u64,
    pub hard: u64,
}

/// A checked bundle config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    pub args: Vec<String>,
    /// `K=V`, duplicates resolved: the last definition of a name wins (Slurm appends the
    /// job's environment after the bundle's).
    pub env: Vec<(String, String)>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (container GIDs), set before the identity change.
    pub additional_gids: Vec<u32>,
    /// `process.capabilities`; None: warren's default sets.
    pub capabilities: Option<caps::Sets>,
    pub root: RootSource,
    pub readonly: bool,
    pub hostname: Option<String>,
    pub binds: Vec<BindMount>,
    pub namespaces: Namespaces,
    /// Given maps (`None`: warren's own from the subordinate ranges).
    pub uid_map: Option<Vec<Extent>>,
    pub gid_map: Option<Vec<Extent>>,
    pub rlimits: Vec<Limit>,
    pub annotations: BTreeMap<String, String>,
    pub hooks: HookSet,
}

/// Mount destinations warren's standard mounts already provide (with the types a
/// config usually gives them): accepted and left to warren.
const STANDARD: &[(&str, &[&str])] = &[
    ("/proc", &["proc"]),
    ("/dev", &["tmpfs"]),
    ("/dev/pts", &["devpts"]),
    ("/dev/shm", &["tmpfs"]),
    ("/dev/mqueue", &["mqueue", "tmpfs"]),
    ("/sys", &["sysfs", "none", "bind"]),
    ("/sys/fs/cgroup", &["cgroup", "cgroup2", "none", "bind"]),
];

/// Bind options accepted (propagation and atime flags are harmless; warren's binds are
/// always private, nosuid).
const BIND_OPTIONS: &[&str] = &[
    "bind",
    "rbind",
    "ro",
    "rw",
    "nosuid",
    "nodev",
    "noexec",
    "private",
    "rprivate",
    "slave",
    "rslave",
    "relatime",
    "norelatime",
    "strictatime",
];

/// Resource limits a process may set for itself.
const RLIMITS: &[&str] = &[
    "RLIMIT_AS",
    "RLIMIT_CORE",
    "RLIMIT_CPU",
    "RLIMIT_DATA",
    "RLIMIT_FSIZE",
    "RLIMIT_LOCKS",
    "RLIMIT_MEMLOCK",
    "RLIMIT_MSGQUEUE",
    "RLIMIT_NICE",
    "RLIMIT_NOFILE",
    "RLIMIT_NPROC",
    "RLIMIT_RSS",
    "RLIMIT_RTPRIO",
    "RLIMIT_RTTIME",
    "RLIMIT_SIGPENDING",
    "RLIMIT_STACK",
];

/// Parse and check `config.json`'s bytes.
pub fn parse(bytes: &[u8]) -> Result<Bundle, BundleError> {
    if bytes.len() as u64 > MAX_CONFIG {
        return Err(BundleError::Json(format!(
            "larger than {} bytes",
            MAX_CONFIG
        )));
    }
    let c: Config = serde_json::from_slice(bytes).map_err(|e| BundleError::Json(e.to_string()))?;
    check(c)
}

fn unsupported<T>(v: &Option<T>, name: &str) -> Result<(), BundleError> {
    match v {
        Some(_) => Err(BundleError::Unsupported(name.into())),
        None => Ok(()),
    }
}

fn check(c: Config) -> Result<Bundle, BundleError> {
    if !c.oci_version.starts_with("1.") {
        return Err(invalid(
            "ociVersion",
            format!("{:?} is not a 1.x version", c.oci_version),
        ));
    }
    let p = c.process.ok_or_else(|| invalid("process", "missing"))?;
    if p.terminal {
        return Err(BundleError::Unsupported(
            "process.terminal=true (use false; Slurm always does)".into(),
        ));
    }
    unsupported(&p.console_size, "process.consoleSize")?;
    unsupported(&p.command_line, "process.commandLine")?;
    unsupported(&p.apparmor_profile, "process.apparmorProfile")?;
    unsupported(&p.selinux_label, "process.selinuxLabel")?;
    unsupported(&p.io_priority, "process.ioPriority")?;
    unsupported(&p.scheduler, "process.scheduler")?;
    unsupported(&p.exec_cpu_affinity, "process.execCPUAffinity")?;
    unsupported(&p.oom_score_adj, "process.oomScoreAdj")?;
    unsupported(&p.user.umask, "process.user.umask")?;
    if p.args.is_empty() || p.args[0].is_empty() {
        return Err(invalid("process.args", "missing or empty"));
    }
    if p.args.iter().any(|a| a.contains('\0')) {
        return Err(invalid("process.args", "contains a NUL byte"));
    }
    if !p.cwd.starts_with('/') || p.cwd.contains('\0') {
        return Err(invalid("process.cwd", "must be an absolute path"));
    }
    let capabilities = p.capabilities.as_ref().map(cap_sets).transpose()?;
    let env = env_pairs(&p.env)?;
    let mut rlimits = Vec::new();
    for r in &p.rlimits {
        if !RLIMITS.contains(&r.kind.as_str()) {
            return Err(invalid(
                "process.rlimits",
                format!("unknown type {:?}", r.kind),
            ));
        }
        if r.soft > r.hard {
            return Err(invalid(
                "process.rlimits",
                format!("{}: soft limit above hard limit", r.kind),
            ));
        }
        rlimits.push(Limit {
            resource: r.kind.clone(),
            soft: r.soft,
            hard: r.hard,
        });
    }

    let root_json = c.root.ok_or_else(|| invalid("root", "missing"))?;
    let root = match c.annotations.get(IMAGE_ANNOTATION) {
        Some(img) if img.is_empty() || img.contains('\0') => {
            return Err(invalid(
                format!("annotations.{IMAGE_ANNOTATION}"),
                "empty image reference",
            ))
        }
        Some(img) => RootSource::Image(img.clone()),
        None => {
            if root_json.path.is_empty() || root_json.path.contains('\0') {
                return Err(invalid("root.path", "empty"));
            }
            RootSource::Dir(PathBuf::from(&root_json.path))
        }
    };
    if let Some(h) = &c.hostname {
        if h.is_empty() || h.len() > 64 || h.contains(['\0', '/']) {
            return Err(invalid("hostname", "must be 1 to 64 characters, no '/'"));
        }
    }
    unsupported(&c.domainname, "domainname")?;

    let mut binds = Vec::new();
    for (i, m) in c.mounts.iter().enumerate() {
        if let Some(b) = mount(i, m)? {
            binds.push(b);
        }
    }

    let mut namespaces = Namespaces::default();
    let (mut uid_map, mut gid_map) = (None, None);
    if let Some(l) = c.linux {
        unsupported(&l.seccomp, "linux.seccomp")?;
        unsupported(&l.personality, "linux.personality")?;
        unsupported(&l.intel_rdt, "linux.intelRdt")?;
        unsupported(&l.time_offsets, "linux.timeOffsets")?;
        unsupported(&l.unified, "linux.unified")?;
        unsupported(&l.memory_policy, "linux.memoryPolicy")?;
        unsupported(&l.net_devices, "linux.netDevices")?;
        if l.sysctl.as_ref().is_some_and(|s| !s.is_empty()) {
            return Err(BundleError::Unsupported("linux.sysctl".into()));
        }
        for ns in &l.namespaces {
            if ns.path.is_some() {
                return Err(BundleError::Unsupported(format!(
                    "linux.namespaces: joining an existing {} namespace (path)",
                    ns.kind
                )));
            }
            match ns.kind.as_str() {
                "user" | "mount" => {}
                "network" => namespaces.network = true,
                "ipc" => namespaces.ipc = true,
                "uts" => namespaces.uts = true,
                "cgroup" => namespaces.cgroup = true,
                "pid" => namespaces.pid = true,
                other => {
                    return Err(invalid(
                        "linux.namespaces",
                        format!("unknown type {other:?}"),
                    ))
                }
            }
        }
        uid_map = l
            .uid_mappings
            .as_deref()
            .map(|m| extents("linux.uidMappings", m))
            .transpose()?;
        gid_map = l
            .gid_mappings
            .as_deref()
            .map(|m| extents("linux.gidMappings", m))
            .transpose()?;
        if uid_map.is_some() != gid_map.is_some() {
            return Err(invalid(
                "linux.uidMappings",
                "give both uidMappings and gidMappings, or neither",
            ));
        }
    }
    if c.hostname.is_some() && !namespaces.uts {
        return Err(invalid(
            "hostname",
            "needs a uts namespace in linux.namespaces",
        ));
    }
    let hooks = match c.hooks {
        Some(h) => HookSet {
            prestart: hooks("hooks.prestart", &h.prestart)?,
            create_runtime: hooks("hooks.createRuntime", &h.create_runtime)?,
            create_container: hooks("hooks.createContainer", &h.create_container)?,
            start_container: hooks("hooks.startContainer", &h.start_container)?,
            poststart: hooks("hooks.poststart", &h.poststart)?,
            poststop: hooks("hooks.poststop", &h.poststop)?,
        },
        None => HookSet::default(),
    };
    Ok(Bundle {
        args: p.args,
        env,
        cwd: p.cwd,
        uid: p.user.uid,
        gid: p.user.gid,
        additional_gids: p.user.additional_gids,
        capabilities,
        root,
        readonly: root_json.readonly,
        hostname: c.hostname,
        binds,
        namespaces,
        uid_map,
        gid_map,
        rlimits,
        annotations: c.annotations,
        hooks,
    })
}

/// The plan for a bare image reference as the bundle (Slurm 23.02+ with
/// `IgnoreFileConfigJson=true`: no config.json, `%b` is what `--container` named): the
/// image's command unless `args` are given, its environment then `extra_env` (Slurm's
/// environment file; last definition wins), its working directory, root (0:0) inside,
/// user/mount/ipc/uts namespaces, no hooks.
pub fn for_image(
    image: &str,
    argv: Vec<String>,
    image_env: &[String],
    extra_env: &[String],
    working_dir: Option<&str>,
) -> Result<Bundle, BundleError> {
    if image.is_empty() || image.contains('\0') {
        return Err(invalid("image", "empty reference"));
    }
    if argv.first().is_none_or(|a| a.is_empty()) || argv.iter().any(|a| a.contains('\0')) {
        return Err(invalid(
            "command",
            "none given and the image has no Entrypoint or Cmd",
        ));
    }
    let mut env: Vec<String> = image_env.to_vec();
    env.extend(extra_env.iter().cloned());
    let cwd = working_dir.filter(|w| w.starts_with('/')).unwrap_or("/");
    Ok(Bundle {
        args: argv,
        env: env_pairs(&env)?,
        cwd: cwd.to_string(),
        uid: 0,
        gid: 0,
        additional_gids: vec![],
        capabilities: None,
        root: RootSource::Image(image.to_string()),
        readonly: false,
        hostname: None,
        binds: vec![],
        namespaces: Namespaces {
            ipc: true,
            uts: true,
            ..Default::default()
        },
        uid_map: None,
        gid_map: None,
        rlimits: vec![],
        annotations: BTreeMap::new(),
        hooks: HookSet::default(),
    })
}

/// Slurm's environment file (`CreateEnvFile`): `K=V` entries separated by NUL bytes
/// (`null`) or newlines (`newline`); entries that are not `K=V` are skipped.
pub fn env_file_entries(bytes: &[u8]) -> Vec<String> {
    let sep = if bytes.contains(&0) { b'\0' } else { b'\n' };
    bytes
        .split(|b| *b == sep)
        .filter_map(|e| std::str::from_utf8(e).ok())
        .filter(|e| e.split_once('=').is_some_and(|(k, _)| !k.is_empty()))
        .map(String::from)
        .collect()
}

/// `process.capabilities` → masks; unknown names and sets the kernel would refuse
/// (effective or ambient outside permitted, ambient outside inheritable) are errors.
fn cap_sets(c: &Capabilities) -> Result<caps::Sets, BundleError> {
    let mask = |set: &str, names: &[String]| -> Result<u64, BundleError> {
        names.iter().try_fold(0u64, |m, n| match caps::number(n) {
            Some(b) => Ok(m | 1 << b),
            None => Err(invalid(
                "process.capabilities",
                format!("{n:?} in {set} is not a capability name"),
            )),
        })
    };
    let s = caps::Sets {
        bounding: mask("bounding", &c.bounding)?,
        effective: mask("effective", &c.effective)?,
        permitted: mask("permitted", &c.permitted)?,
        inheritable: mask("inheritable", &c.inheritable)?,
        ambient: mask("ambient", &c.ambient)?,
    };
    let outside =
        |set: &str, bits: u64, of: &str, within: u64| match caps::bits(bits & !within).first() {
            Some(b) => Err(invalid(
                "process.capabilities",
                format!("{} is {set} but not {of}", caps::NAMES[*b as usize]),
            )),
            None => Ok(()),
        };
    outside("effective", s.effective, "permitted", s.permitted)?;
    outside("ambient", s.ambient, "permitted", s.permitted)?;
    outside("ambient", s.ambient, "inheritable", s.inheritable)?;
    Ok(s)
}

/// `K=V` strings → pairs, the last definition of a name winning (in its first place).
fn env_pairs(env: &[String]) -> Result<Vec<(String, String)>, BundleError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for e in env {
        let Some((k, v)) = e.split_once('=') else {
            return Err(invalid("process.env", format!("{e:?} is not K=V")));
        };
        if k.is_empty() || e.contains('\0') {
            return Err(invalid("process.env", format!("{e:?} is not K=V")));
        }
        match out.iter_mut().find(|(n, _)| n == k) {
            Some(slot) => slot.1 = v.to_string(),
            None => out.push((k.to_string(), v.to_string())),
        }
    }
    Ok(out)
}

/// An absolute destination, normalised, with no `..` (it is resolved inside the root
/// with openat2 later, which also stops symlinks out of the root).
pub fn destination(field: &str, d: &str) -> Result<PathBuf, BundleError> {
    if !d.starts_with('/') || d.contains('\0') {
        return Err(invalid(field, format!("{d:?} must be an absolute path")));
    }
    let mut out = PathBuf::from("/");
    for c in Path::new(d).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                return Err(invalid(field, format!("{d:?} must not contain '..'")))
            }
            _ => {}
        }
    }
    Ok(out)
}

fn mount(i: usize, m: &Mount) -> Result<Option<BindMount>, BundleError> {
    let field = format!("mounts[{i}]");
    let dest = destination(&format!("{field}.destination"), &m.destination)?;
    if m.uid_mappings.is_some() || m.gid_mappings.is_some() {
        return Err(BundleError::Unsupported(format!(
            "{field}: idmapped mounts"
        )));
    }
    let kind = m.kind.as_deref().unwrap_or("");
    let is_bind = kind == "bind" || m.options.iter().any(|o| o == "bind" || o == "rbind");
    if is_bind {
        let src = m
            .source
            .as_deref()
            .filter(|s| s.starts_with('/') && !s.contains('\0'))
            .ok_or_else(|| invalid(&field, "a bind needs an absolute source"))?;
        if dest == Path::new("/") {
            return Err(invalid(&field, "bind onto / is not allowed"));
        }
        let mut read_only = false;
        for o in &m.options {
            match o.as_str() {
                "ro" => read_only = true,
                "rw" => read_only = false,
                o if BIND_OPTIONS.contains(&o) => {}
                o => return Err(invalid(&field, format!("unsupported bind option {o:?}"))),
            }
        }
        // /sys bound from the host (rootless runc's config) is what warren does anyway.
        if dest == Path::new("/sys") && src == "/sys" {
            return Ok(None);
        }
        return Ok(Some(BindMount {
            source: PathBuf::from(src),
            dest,
            read_only,
        }));
    }
    let d = dest.to_string_lossy();
    match STANDARD.iter().find(|(p, _)| *p == d) {
        Some((_, kinds)) if kinds.contains(&kind) => Ok(None),
        _ => Err(BundleError::Unsupported(format!(
            "{field}: a {kind:?} mount on {d} (supported: binds, and the standard /proc, /dev, /dev/pts, /dev/shm, /dev/mqueue, /sys, /sys/fs/cgroup, which warren provides)"
        ))),
    }
}

fn extents(field: &str, m: &[Mapping]) -> Result<Vec<Extent>, BundleError> {
    if m.is_empty() || m.len() > 340 {
        return Err(invalid(field, "between 1 and 340 entries"));
    }
    let mut out: Vec<Extent> = Vec::new();
    for e in m {
        if e.size == 0
            || e.container_id as u64 + e.size as u64 > u32::MAX as u64
            || e.host_id as u64 + e.size as u64 > u32::MAX as u64
        {
            return Err(invalid(field, "an entry has size 0 or overflows"));
        }
        let x = Extent {
            inside: e.container_id,
            outside: e.host_id,
            count: e.size,
        };
        // Half-open intervals [a, a+b) and [c, c+d) intersect.
        let overlaps = |a: u32, b: u32, c: u32, d: u32| {
            (a as u64) < c as u64 + d as u64 && (c as u64) < a as u64 + b as u64
        };
        if out.iter().any(|o| {
            overlaps(o.inside, o.count, x.inside, x.count)
                || overlaps(o.outside, o.count, x.outside, x.count)
        }) {
            return Err(invalid(field, "entries overlap"));
        }
        out.push(x);
    }
    Ok(out)
}

/// Check given maps against what the user may map: the own ID and the subordinate
/// ranges `(start, count)`.
pub fn check_map(
    field: &str,
    map: &[Extent],
    own: u32,
    ranges: &[(u64, u64)],
) -> Result<(), BundleError> {
    for e in map {
        let (lo, hi) = (e.outside as u64, e.outside as u64 + e.count as u64);
        let own_only = lo == own as u64 && hi == own as u64 + 1;
        let in_range = ranges.iter().any(|&(s, c)| lo >= s && hi <= s + c);
        if !own_only && !in_range {
            return Err(invalid(
                field,
                format!(
                    "host IDs {lo}..{hi} are neither your own ID {own} nor in your subordinate ranges"
                ),
            ));
        }
    }
    Ok(())
}

fn hooks(field: &str, hs: &[HookJson]) -> Result<Vec<Hook>, BundleError> {
    hs.iter()
        .map(|h| h.check().map_err(|why| invalid(field, why)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn base() -> serde_json::Value {
        serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {"terminal": false, "user": {"uid": 0, "gid": 0},
                        "args": ["sh", "-c", "true"], "env": ["PATH=/bin", "A=1"], "cwd": "/",
                        "noNewPrivileges": true,
                        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]},
            "root": {"path": "rootfs", "readonly": true},
            "hostname": "c1",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid"]},
                {"destination": "/sys", "type": "none", "source": "/sys", "options": ["rbind", "nosuid", "ro"]},
                {"destination": "/data", "type": "bind", "source": "/srv/data", "options": ["rbind", "ro"]}
            ],
            "linux": {"namespaces": [{"type": "mount"}, {"type": "uts"}, {"type": "ipc"}],
                      "maskedPaths": ["/proc/kcore"], "resources": {"devices": []}},
            "hooks": {"prestart": [{"path": "/bin/true", "args": ["true"], "timeout": 5}]}
        })
    }

    fn parse_v(v: &serde_json::Value) -> Result<Bundle, BundleError> {
        parse(&serde_json::to_vec(v).unwrap())
    }

    #[test]
    fn a_typical_config() {
        let b = parse_v(&base()).unwrap();
        assert_eq!(b.args, vec!["sh", "-c", "true"]);
        assert_eq!(b.root, RootSource::Dir("rootfs".into()));
        assert!(b.readonly);
        assert_eq!(b.hostname.as_deref(), Some("c1"));
        assert_eq!(
            b.binds,
            vec![BindMount {
                source: "/srv/data".into(),
                dest: "/data".into(),
                read_only: true
            }]
        );
        assert!(b.namespaces.uts && b.namespaces.ipc && !b.namespaces.network);
        assert_eq!(b.hooks.prestart[0].timeout, Some(5));
        assert_eq!(b.rlimits[0].resource, "RLIMIT_NOFILE");
    }

    #[test]
    fn pid_namespace_and_additional_gids_are_kept() {
        let mut v = base();
        v["linux"]["namespaces"] = serde_json::json!([{"type": "pid"}, {"type": "uts"}]);
        v["process"]["user"]["additionalGids"] = serde_json::json!([5, 100]);
        let b = parse_v(&v).unwrap();
        assert!(b.namespaces.pid && !b.namespaces.ipc);
        assert_eq!(b.additional_gids, vec![5, 100]);
        assert!(!parse_v(&base()).unwrap().namespaces.pid);
    }

    #[test]
    fn capability_sets() {
        let mut v = base();
        v["process"]["capabilities"] = serde_json::json!({
            "bounding": ["CAP_CHOWN", "CAP_NET_BIND_SERVICE", "CAP_KILL"],
            "effective": ["CAP_CHOWN"], "permitted": ["CAP_CHOWN", "CAP_KILL"],
            "inheritable": ["CAP_KILL"], "ambient": ["CAP_KILL"]});
        let s = parse_v(&v).unwrap().capabilities.unwrap();
        assert_eq!(
            (
                s.bounding,
                s.effective,
                s.permitted,
                s.inheritable,
                s.ambient
            ),
            (1 | 1 << 10 | 1 << 5, 1, 1 | 1 << 5, 1 << 5, 1 << 5)
        );
        assert!(parse_v(&base()).unwrap().capabilities.is_none());
        for (caps, want) in [
            (
                serde_json::json!({"bounding": ["CAP_FOO"]}),
                "\"CAP_FOO\" in bounding",
            ),
            (
                serde_json::json!({"effective": ["CAP_KILL"]}),
                "CAP_KILL is effective but not permitted",
            ),
            (
                serde_json::json!({"permitted": ["CAP_KILL"], "ambient": ["CAP_KILL"]}),
                "CAP_KILL is ambient but not inheritable",
            ),
        ] {
            let mut v = base();
            v["process"]["capabilities"] = caps;
            let e = parse_v(&v).unwrap_err().to_string();
            assert!(e.contains(want), "{e:?} lacks {want:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_capability_names_parse_or_fail_in_one_line(names in proptest::collection::vec("CAP_[A-Z_]{0,20}|.{0,8}", 0..6)) {
            let mut v = base();
            v["process"]["capabilities"] = serde_json::json!({"bounding": names, "permitted": names, "effective": names});
            match parse_v(&v) {
                Ok(b) => {
                    let s = b.capabilities.unwrap();
                    proptest::prop_assert_eq!(s.bounding.count_ones() as usize, {
                        let mut n = names.clone();
                        n.sort();
                        n.dedup();
                        n.len()
                    });
                }
                Err(e) => proptest::prop_assert!(!e.to_string().contains('\n')),
            }
        }
    }

    #[test]
    fn last_env_definition_wins() {
        let mut v = base();
        v["process"]["env"] = serde_json::json!(["A=1", "B=2", "A=3"]);
        let b = parse_v(&v).unwrap();
        assert_eq!(
            b.env,
            vec![("A".into(), "3".into()), ("B".into(), "2".into())]
        );
    }

    #[test]
    fn image_annotation_replaces_root_path() {
        let mut v = base();
        v["annotations"] = serde_json::json!({IMAGE_ANNOTATION: "busybox:latest"});
        assert_eq!(
            parse_v(&v).unwrap().root,
            RootSource::Image("busybox:latest".into())
        );
    }

    #[test]
    fn refusals_name_the_field() {
        type Mutation = fn(&mut serde_json::Value);
        let cases: Vec<(Mutation, &str)> = vec![
            (
                |v| v["process"]["args"] = serde_json::json!([]),
                "process.args",
            ),
            (
                |v| v["process"]["cwd"] = serde_json::json!(5),
                "invalid type",
            ),
            (
                |v| {
                    v.as_object_mut().unwrap().remove("root");
                },
                "root: missing",
            ),
            (
                |v| v["process"]["terminal"] = serde_json::json!(true),
                "terminal",
            ),
            (
                |v| v["mounts"][3]["destination"] = serde_json::json!("/a/../../etc"),
                "'..'",
            ),
            (
                |v| v["mounts"][3]["destination"] = serde_json::json!("rel"),
                "absolute",
            ),
            (
                |v| v["mounts"][0]["destination"] = serde_json::json!("/x"),
                "mounts[0]",
            ),
            (
                |v| v["linux"]["namespaces"][0]["path"] = serde_json::json!("/proc/1/ns/pid"),
                "path",
            ),
            (
                |v| v["linux"]["seccomp"] = serde_json::json!({}),
                "linux.seccomp",
            ),
            (|v| v["bogus"] = serde_json::json!(1), "unknown field"),
            (|v| v["ociVersion"] = serde_json::json!("2.0"), "ociVersion"),
            (
                |v| v["process"]["user"]["additionalGids"] = serde_json::json!([-5]),
                "invalid value",
            ),
            (
                |v| v["hooks"]["poststop"] = serde_json::json!([{"path": "x"}]),
                "hooks.poststop",
            ),
            (
                |v| v["process"]["env"] = serde_json::json!(["NOEQUALS"]),
                "process.env",
            ),
            (
                |v| {
                    v["linux"]["uidMappings"] =
                        serde_json::json!([{"containerID": 0, "hostID": 1, "size": 1}])
                },
                "both",
            ),
        ];
        for (f, want) in cases {
            let mut v = base();
            f(&mut v);
            let e = parse_v(&v).unwrap_err().to_string();
            assert!(e.contains(want), "{e:?} lacks {want:?}");
            assert!(!e.contains('\n'), "{e:?} spans lines");
        }
    }

    #[test]
    fn too_big_is_refused_before_parsing() {
        let big = vec![b' '; MAX_CONFIG as usize + 1];
        assert!(parse(&big).unwrap_err().to_string().contains("larger"));
    }

    #[test]
    fn maps_are_checked_against_the_ranges() {
        let mut v = base();
        v["linux"]["uidMappings"] = serde_json::json!([{"containerID": 0, "hostID": 1001, "size": 1},
                               {"containerID": 1, "hostID": 100000, "size": 65536}]);
        v["linux"]["gidMappings"] = v["linux"]["uidMappings"].clone();
        let b = parse_v(&v).unwrap();
        let m = b.uid_map.unwrap();
        assert!(check_map("u", &m, 1001, &[(100000, 65536)]).is_ok());
        assert!(check_map("u", &m, 1002, &[(100000, 65536)]).is_err());
        assert!(check_map("u", &m, 1001, &[(100000, 65535)]).is_err());
        v["linux"]["uidMappings"] = serde_json::json!([{"containerID": 0, "hostID": 5, "size": 10},
                               {"containerID": 5, "hostID": 100, "size": 1}]);
        assert!(parse_v(&v).unwrap_err().to_string().contains("overlap"));
    }

    #[test]
    fn image_references_as_bundles() {
        let b = for_image(
            "busybox",
            vec!["sh".into()],
            &["PATH=/bin".into(), "A=1".into()],
            &["A=2".into()],
            Some("/w"),
        )
        .unwrap();
        assert_eq!(b.root, RootSource::Image("busybox".into()));
        assert_eq!(
            b.env,
            vec![("PATH".into(), "/bin".into()), ("A".into(), "2".into())]
        );
        assert_eq!((b.cwd.as_str(), b.uid), ("/w", 0));
        assert!(for_image("busybox", vec![], &[], &[], None).is_err());
        assert_eq!(
            env_file_entries(b"A=1\0B=x=y\0junk\0"),
            vec!["A=1".to_string(), "B=x=y".to_string()]
        );
        assert_eq!(env_file_entries(b"A=1\nB=2\n"), vec!["A=1", "B=2"]);
    }

    proptest! {
        #[test]
        fn env_files_never_panic_and_give_pairs(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            for e in env_file_entries(&bytes) {
                prop_assert!(e.contains('=') && !e.starts_with('='));
                prop_assert!(!e.contains('\0'));
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn destinations_never_escape(parts in proptest::collection::vec("[a-z.]{0,3}|\\.\\.", 0..6)) {
            let d = format!("/{}", parts.join("/"));
            if let Ok(p) = destination("d", &d) {
                prop_assert!(p.is_absolute());
                prop_assert!(p.components().all(|c| !matches!(c, Component::ParentDir)));
            }
        }

        #[test]
        fn mutated_configs_never_panic(key in "[a-zA-Z]{1,12}", val in any::<i64>(), which in 0usize..6) {
            let mut v = base();
            let target = match which {
                0 => &mut v,
                1 => &mut v["process"],
                2 => &mut v["root"],
                3 => &mut v["linux"],
                4 => &mut v["mounts"][0],
                _ => &mut v["process"]["user"],
            };
            target[key.as_str()] = serde_json::json!(val);
            if let Err(e) = parse_v(&v) {
                prop_assert!(!e.to_string().contains('\n'));
            }
        }

        #[test]
        fn env_last_wins(pairs in proptest::collection::vec(("[A-C]", "[a-z]{0,3}"), 0..8)) {
            let env: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let out = env_pairs(&env).unwrap();
            for (k, v) in &out {
                let last = pairs.iter().rev().find(|(n, _)| n == k).unwrap();
                prop_assert_eq!(&last.1, v);
            }
            let mut names: Vec<_> = out.iter().map(|(k, _)| k).collect();
            names.dedup();
            prop_assert_eq!(names.len(), out.len());
        }
    }
}

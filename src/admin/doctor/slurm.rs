//! SPANK plugin checks: warren's plugin listed in plugstack.conf (or an included file),
//! its .so present, built for the running Slurm (`plugin_version` vs `slurmd -V`), and
//! its arguments on the line valid (the parser the plugin itself uses, `plugstack`).

use super::{elf, Check, Options};
use std::path::{Path, PathBuf};

/// Where Slurm looks for relative plugin paths on common distributions.
const PLUGIN_DIRS: [&str; 4] = [
    "/usr/lib/x86_64-linux-gnu/slurm-wlm",
    "/usr/lib64/slurm",
    "/usr/lib/slurm",
    "/usr/local/lib/slurm",
];

/// A plugstack line that names warren.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginLine {
    /// The config file and 1-based line.
    pub conf: PathBuf,
    /// Line number.
    pub line: usize,
    /// `required` (slurmd refuses to start without it) or `optional`.
    pub required: bool,
    /// The .so as written.
    pub so: String,
    /// Resolved existing file.
    pub resolved: Option<PathBuf>,
    /// Its `plugin_version` symbol.
    pub version: Option<u32>,
    /// The plugin arguments after the .so.
    pub args: Vec<String>,
}

/// What was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// plugstack.conf checked.
    pub plugstack: PathBuf,
    /// Whether it exists.
    pub conf_found: bool,
    /// Lines naming warren.
    pub lines: Vec<PluginLine>,
    /// `slurmd -V` (or `scontrol --version`) output, e.g. `slurm-wlm 22.05.8`.
    pub slurm: Option<String>,
}

/// `include` targets: a path whose file name may contain one `*`.
fn expand(pattern: &str) -> Vec<PathBuf> {
    let p = Path::new(pattern);
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Some((pre, post)) = name.split_once('*') else {
        return vec![p.to_path_buf()];
    };
    let dir = p.parent().unwrap_or(Path::new("/"));
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| {
                    n.starts_with(pre) && n.ends_with(post) && n.len() >= pre.len() + post.len()
                })
                .map(|n| dir.join(n))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn scan(conf: &Path, depth: usize, out: &mut Vec<PluginLine>) {
    let Ok(text) = std::fs::read_to_string(conf) else {
        return;
    };
    for (i, raw) in text.lines().enumerate() {
        let t = raw.split('#').next().unwrap_or("").trim();
        let mut w = t.split_whitespace();
        match (w.next(), w.next()) {
            (Some("include"), Some(pat)) if depth < 4 => {
                for f in expand(pat) {
                    scan(&f, depth + 1, out);
                }
            }
            (Some(kind @ ("required" | "optional")), Some(so)) if so.contains("warren") => {
                let resolved = if so.starts_with('/') {
                    Some(PathBuf::from(so)).filter(|p| p.is_file())
                } else {
                    PLUGIN_DIRS
                        .iter()
                        .map(|d| Path::new(d).join(so))
                        .find(|p| p.is_file())
                };
                let version = resolved
                    .as_ref()
                    .and_then(|p| std::fs::read(p).ok())
                    .and_then(|b| elf::u32_symbol(&b, "plugin_version"));
                out.push(PluginLine {
                    conf: conf.to_path_buf(),
                    line: i + 1,
                    required: kind == "required",
                    so: so.to_string(),
                    resolved,
                    version,
                    args: w.map(str::to_string).collect(),
                });
            }
            _ => {}
        }
    }
}

/// Read the facts.
pub fn gather(opts: &Options) -> Facts {
    let mut lines = Vec::new();
    scan(&opts.plugstack, 0, &mut lines);
    // slurmd on compute nodes; scontrol on login nodes (it needs a reachable config).
    let slurm = [("slurmd", "-V"), ("scontrol", "--version")]
        .iter()
        .find_map(|(prog, arg)| {
            let p = crate::util::which(prog)?;
            let o = std::process::Command::new(p)
                .arg(arg)
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .output()
                .ok()?;
            let s = String::from_utf8_lossy(&o.stdout).trim().to_string();
            version_number(&s).map(|_| s)
        });
    Facts {
        plugstack: opts.plugstack.clone(),
        conf_found: opts.plugstack.is_file(),
        lines,
        slurm,
    }
}

/// `slurm-wlm 22.05.8` → `0x160508` (SLURM_VERSION_NUMBER).
pub fn version_number(s: &str) -> Option<u32> {
    let v = s
        .split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))?;
    let mut it = v
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty());
    let (a, b, c): (u32, u32, u32) = (
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
        it.next().unwrap_or("0").parse().ok()?,
    );
    Some(a << 16 | b << 8 | c)
}

fn show(v: u32) -> String {
    format!("{}.{:02}.{}", v >> 16, (v >> 8) & 0xff, v & 0xff)
}

/// Judge the facts.
pub fn judge(f: &Facts) -> Vec<Check> {
    let conf = f.plugstack.display();
    let install = format!(
        "as root, from warren's sources: bash scripts/install-plugin.sh (builds libwarren_spank.so against this Slurm and writes {}.d/warren.conf; add --optional until it is on every node: slurmd refuses to start without a required plugin)",
        conf
    );
    if f.slurm.is_none() && !f.conf_found {
        return vec![Check::warn(
            "spank_plugin",
            "not installed (no slurmd and no plugstack.conf on this node)",
            install,
        )];
    }
    let Some(l) = f.lines.first() else {
        return vec![Check::warn(
            "spank_plugin",
            format!("not installed: {conf} (and its includes) does not mention warren"),
            install,
        )];
    };
    let at = format!("{}:{}", l.conf.display(), l.line);
    let Some(so) = &l.resolved else {
        let why = if l.required {
            " and it is `required`: slurmd will refuse to start"
        } else {
            ""
        };
        return vec![Check::fail(
            "spank_plugin",
            format!("{at} lists {} but the file does not exist{why}", l.so),
            format!(
                "install {} on this node, or remove the line from {}",
                l.so,
                l.conf.display()
            ),
        )];
    };
    let running = f.slurm.as_deref().and_then(version_number);
    let version = match (l.version, running) {
        (None, _) => Check::warn("spank_plugin", format!("{} ({at}) has no readable plugin_version symbol", so.display()), "rebuild the plugin from warren's sources against this Slurm's headers"),
        (Some(v), None) => Check::warn("spank_plugin", format!("{} built for Slurm {}; slurmd not found to compare", so.display(), show(v)), "run doctor on a compute node with slurmd installed"),
        (Some(v), Some(r)) if v >> 8 != r >> 8 => Check::fail("spank_plugin",
            format!("{} was built for Slurm {} but this node runs {}: Slurm will refuse to load it", so.display(), show(v), show(r)),
            "rebuild the SPANK plugin against this node's Slurm headers (libslurm-dev / slurm-devel): bash scripts/install-plugin.sh"),
        (Some(v), Some(r)) if v != r => Check::warn("spank_plugin",
            format!("{} was built for Slurm {}, this node runs {}: it loads (same release series) but plugin_version should equal SLURM_VERSION_NUMBER", so.display(), show(v), show(r)),
            "rebuild the SPANK plugin against this node's Slurm headers: bash scripts/install-plugin.sh"),
        (Some(v), Some(r)) => Check::ok("spank_plugin", format!("{} ({at}) built for Slurm {}, running {}", so.display(), show(v), show(r))),
    };
    let args = match plugstack::parse(&l.args) {
        Ok(_) => Check::ok(
            "spank_plugstack",
            format!("{at}: {} argument(s) valid", l.args.len()),
        ),
        Err(e) => Check::fail(
            "spank_plugstack",
            format!(
                "{at}: {e}{}",
                if l.required {
                    " (required: every step fails to start)"
                } else {
                    " (optional: the plugin stays inert)"
                }
            ),
            "fix the argument; every key is documented in warren's slurm/plugstack.conf",
        ),
    };
    vec![version, args]
}

/// The plugin's arguments on its plugstack.conf line, e.g.
/// `required /usr/lib/x86_64-linux-gnu/slurm-wlm/libwarren_spank.so runtime_path=/run/warren shared_store=/shared/warren`.
/// Each is `KEY=VALUE`; an unknown key or a bad value is an error (slurmd logs one line;
/// the plugin then stays inert, and Slurm fails the load only for a `required` line).
/// `slurm/plugstack.conf` documents every key. Defined here, where `warren doctor` checks
/// the line, and read by the plugin (`slurm/`) through the library: one parser for both.
pub mod plugstack {
    use std::path::PathBuf;

    /// The admin's settings.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Config {
        /// The `warren` binary run on the nodes (pull, holders). Default: /usr/bin/warren if
        /// it exists, else the first `warren` on slurmstepd's PATH.
        pub warren: Option<PathBuf>,
        /// Root-owned directory for per-node, per-user, per-job runtime state.
        pub runtime_path: PathBuf,
        /// The users' store (`store.path`); `%u` is the user name, `%U` the uid. Default: each
        /// user's own default store (`$XDG_DATA_HOME/warren` or `~/.local/share/warren`).
        pub store: Option<String>,
        /// Shared read-only stores searched first (`store.shared`), colon-separated.
        pub shared_store: Option<String>,
        /// Defaults for the user options that have a `--no-` form.
        pub remap_root: bool,
        pub mount_home: bool,
        pub entrypoint: bool,
        /// Containers writable by default (pyxis: yes).
        pub writable: bool,
        /// `#SBATCH --container-image` runs the batch script in the container.
        pub sbatch_support: bool,
        /// Mount images from shared admin-owned stores with the kernel's squashfs driver
        /// (root, read-only, nosuid, nodev) instead of squashfuse.
        pub kernel_mount: bool,
        /// One shared writable root for all tasks of a node (pyxis's behaviour) instead of a
        /// layer per task.
        pub shared_root: bool,
        /// A CDI kind (`nvidia.com/gpu`): every containerized task gets the devices of
        /// the GPUs Slurm allocated to it (docs/devices.md). Default: none.
        pub cdi_gpus: Option<String>,
        /// Default of `--container-mpi-inject`: `off`, `on` or `force` (docs/mpi.md).
        /// `None`: the nodes' `mpi.inject` (/etc/warren/warren.toml).
        pub mpi_inject: Option<crate::runtime::mpi_inject::Mode>,
        /// Where Slurm's mpi/pmix makes the PMIx clients' directory
        /// (`spmix_appdir_[UID_]JOB.STEP`): `PMIxCliTmpDirBase` of mpi.conf, else
        /// `TmpFS` of slurm.conf; `%n` is the node's name. Default `/tmp`.
        pub pmix_appdir_base: String,
    }

    impl Default for Config {
        fn default() -> Config {
            Config {
                warren: None,
                runtime_path: PathBuf::from("/run/warren"),
                store: None,
                shared_store: None,
                remap_root: false,
                mount_home: false,
                entrypoint: false,
                writable: true,
                sbatch_support: true,
                kernel_mount: false,
                shared_root: false,
                cdi_gpus: None,
                mpi_inject: None,
                pmix_appdir_base: "/tmp".into(),
            }
        }
    }

    /// pyxis's booleans: 1/true/yes/y and 0/false/no/n.
    pub fn parse_bool(s: &str) -> Option<bool> {
        match s {
            "1" | "true" | "yes" | "y" => Some(true),
            "0" | "false" | "no" | "n" => Some(false),
            _ => None,
        }
    }

    /// A bad plugstack argument.
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    #[error("warren: plugstack argument {arg:?}: {why}")]
    pub struct ConfigError {
        pub arg: String,
        pub why: String,
    }

    fn abs_path(arg: &str, v: &str) -> Result<PathBuf, ConfigError> {
        if !v.starts_with('/') || v.len() > 4095 || v.chars().any(|c| c.is_control()) {
            return Err(ConfigError {
                arg: arg.into(),
                why: "needs an absolute path".into(),
            });
        }
        Ok(PathBuf::from(v))
    }

    /// Parse the arguments after the .so path.
    pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<Config, ConfigError> {
        let mut c = Config::default();
        for a in args {
            let a = a.as_ref();
            let bad = |why: &str| ConfigError {
                arg: a.into(),
                why: why.into(),
            };
            let Some((k, v)) = a.split_once('=') else {
                return Err(bad("expected KEY=VALUE"));
            };
            let boolean = || parse_bool(v).ok_or_else(|| bad("expected yes or no"));
            match k {
                "warren" => c.warren = Some(abs_path(a, v)?),
                "runtime_path" => c.runtime_path = abs_path(a, v)?,
                "store" => {
                    abs_path(a, v)?;
                    c.store = Some(v.to_string());
                }
                "shared_store" => {
                    for p in v.split(':') {
                        abs_path(a, p)?;
                    }
                    c.shared_store = Some(v.to_string());
                }
                "remap_root" => c.remap_root = boolean()?,
                "mount_home" => c.mount_home = boolean()?,
                "execute_entrypoint" => c.entrypoint = boolean()?,
                "writable" => c.writable = boolean()?,
                "sbatch_support" => c.sbatch_support = boolean()?,
                "kernel_mount" => c.kernel_mount = boolean()?,
                "shared_root" => c.shared_root = boolean()?,
                "cdi_gpus" => {
                    crate::runtime::cdi::check_kind(v).map_err(|w| bad(&w))?;
                    c.cdi_gpus = Some(v.to_string());
                }
                "mpi_inject" => {
                    c.mpi_inject = Some(
                        crate::runtime::mpi_inject::Mode::parse(v, "mpi_inject")
                            .map_err(|_| bad("expected off, on or force"))?,
                    )
                }
                "pmix_appdir_base" => {
                    abs_path(a, v)?;
                    c.pmix_appdir_base = v.to_string();
                }
                _ => return Err(bad("unknown key (see warren's slurm/plugstack.conf)")),
            }
        }
        Ok(c)
    }

    /// `store` with `%u`/`%U` replaced.
    pub fn expand_store(template: &str, user: &str, uid: u32) -> String {
        template.replace("%u", user).replace("%U", &uid.to_string())
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use proptest::prelude::*;

        #[test]
        fn keys() {
            assert_eq!(parse::<&str>(&[]).unwrap(), Config::default());
            let c = parse(&[
                "runtime_path=/run/w",
                "shared_store=/a:/b",
                "remap_root=yes",
                "sbatch_support=0",
                "kernel_mount=y",
                "shared_root=true",
                "mpi_inject=force",
                "pmix_appdir_base=/tmp/pmix-%n",
                "store=/scratch/%u/warren",
                "warren=/opt/warren/bin/warren",
            ])
            .unwrap();
            assert_eq!(c.runtime_path, PathBuf::from("/run/w"));
            assert!(c.remap_root && !c.sbatch_support && c.kernel_mount && c.shared_root);
            assert_eq!(c.mpi_inject, Some(crate::runtime::mpi_inject::Mode::Force));
            assert_eq!(c.pmix_appdir_base, "/tmp/pmix-%n");
            assert_eq!(
                expand_store(c.store.as_deref().unwrap(), "ann", 7),
                "/scratch/ann/warren"
            );
            for bad in [
                "runtime_path=rel",
                "remap_root=maybe",
                "bogus=1",
                "noequals",
                "shared_store=/a:b",
                "cdi_gpus=gpu",
                "mpi_inject=yes",
                "pmix_appdir_base=tmp",
            ] {
                let e = parse(&[bad]).unwrap_err();
                assert_eq!(e.arg, bad);
                assert!(!e.to_string().contains('\n'));
            }
        }

        proptest! {
            #[test]
            fn never_panics(v in proptest::collection::vec(any::<String>(), 0..4)) {
                let _ = parse(&v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::doctor::Status;

    #[test]
    fn versions() {
        assert_eq!(version_number("slurm-wlm 22.05.8"), Some(0x160508));
        assert_eq!(version_number("slurm 23.11.1"), Some(0x170b01));
        assert_eq!(version_number("nothing"), None);
    }

    #[test]
    fn judges_install_states() {
        let d = tempfile::tempdir().unwrap();
        let conf = d.path().join("plugstack.conf");
        std::fs::create_dir(d.path().join("plugstack.conf.d")).unwrap();
        std::fs::write(
            &conf,
            "include ".to_string()
                + d.path().join("plugstack.conf.d/*.conf").to_str().unwrap()
                + "\n",
        )
        .unwrap();
        let opts = Options {
            plugstack: conf.clone(),
            ..Options::default()
        };
        let mut f = gather(&opts);
        f.slurm = Some("slurm-wlm 22.05.8".into());
        let c = &judge(&f)[0];
        assert_eq!(c.status, Status::Warn);
        assert!(c.detail.starts_with("not installed"), "{}", c.detail);
        // Listed (required) but missing.
        std::fs::write(
            d.path().join("plugstack.conf.d/warren.conf"),
            "required /nonexistent/spank_warren.so\n",
        )
        .unwrap();
        let mut f = gather(&opts);
        f.slurm = Some("slurm-wlm 22.05.8".into());
        let c = &judge(&f)[0];
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("refuse to start"));
        // A real Slurm plugin stands in for warren's: version compared against slurmd.
        let real = "/usr/lib/x86_64-linux-gnu/slurm-wlm/proctrack_linuxproc.so";
        if Path::new(real).exists() {
            let so = d.path().join("spank_warren.so");
            std::fs::copy(real, &so).unwrap();
            std::fs::write(
                d.path().join("plugstack.conf.d/warren.conf"),
                format!("optional {}\n", so.display()),
            )
            .unwrap();
            let mut f = gather(&opts);
            f.slurm = Some("slurm-wlm 22.05.8".into());
            assert_eq!(judge(&f)[0].status, Status::Ok, "{:?}", judge(&f));
            assert_eq!(judge(&f)[1].status, Status::Ok, "{:?}", judge(&f));
            f.slurm = Some("slurm-wlm 22.05.9".into());
            assert_eq!(judge(&f)[0].status, Status::Warn);
            f.slurm = Some("slurm 23.11.1".into());
            assert_eq!(judge(&f)[0].status, Status::Fail);
            // A bad argument on the line.
            std::fs::write(
                d.path().join("plugstack.conf.d/warren.conf"),
                format!(
                    "required {} runtime_path=/run/w remap_root=maybe\n",
                    so.display()
                ),
            )
            .unwrap();
            let mut f = gather(&opts);
            f.slurm = Some("slurm-wlm 22.05.8".into());
            let c = &judge(&f)[1];
            assert_eq!(c.status, Status::Fail);
            assert!(c.detail.contains("remap_root=maybe"), "{}", c.detail);
        }
    }
}

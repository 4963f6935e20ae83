//! The plugin's arguments on its plugstack.conf line, e.g.
//! `required /usr/lib/x86_64-linux-gnu/slurm-wlm/libwarren_spank.so runtime_path=/run/warren shared_store=/shared/warren`.
//! Each is `KEY=VALUE`; an unknown key or a bad value is an error (slurmd logs one line;
//! the plugin then stays inert, and Slurm fails the load only for a `required` line).
//! `slurm/plugstack.conf` documents every key.

use crate::args::parse_bool;
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
        }
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
            "store=/scratch/%u/warren",
            "warren=/opt/warren/bin/warren",
        ])
        .unwrap();
        assert_eq!(c.runtime_path, PathBuf::from("/run/w"));
        assert!(c.remap_root && !c.sbatch_support && c.kernel_mount && c.shared_root);
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

//! The user's `--container-*` options, with pyxis 0.24's names, values and meaning, and
//! their `PYXIS_CONTAINER_*` environment forms (a flag wins). Pure: the SPANK glue feeds
//! option callbacks and environment look-ups in; every value is checked here, so that srun
//! and sbatch refuse a bad one before any node does work.
//!
//! Where this is stricter than pyxis (docs/slurm.md lists each difference): container
//! names follow warren's name rule, `--container-workdir` must be absolute,
//! `--container-env` names must be variable names, an unparsable boolean in a
//! `PYXIS_CONTAINER_*` variable is an error (pyxis ignores it), and mounts as in
//! `mounts.rs`.

use crate::image::{self, Image};
use crate::mounts::{self, Mount};

/// Longest accepted path or image value (PATH_MAX without its NUL).
pub const MAX_VALUE: usize = 4095;

/// The options, in the order pyxis registers them. The discriminant is the `val` the
/// SPANK option table passes back to the callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opt {
    Image = 0,
    Mounts,
    Workdir,
    Name,
    Save,
    MountHome,
    NoMountHome,
    RemapRoot,
    NoRemapRoot,
    Entrypoint,
    NoEntrypoint,
    EntrypointLog,
    Writable,
    Readonly,
    Env,
    Devices,
    MpiInject,
}

/// Name, argument description and usage text of each option, as `srun --help` shows them.
pub struct OptInfo {
    pub opt: Opt,
    pub name: &'static str,
    /// `None` for a flag without argument.
    pub arginfo: Option<&'static str>,
    pub usage: &'static str,
}

/// Every option (the SPANK table is built from this).
pub const OPTIONS: [OptInfo; 17] = [
    OptInfo { opt: Opt::Image, name: "container-image", arginfo: Some("[USER@][REGISTRY#]IMAGE[:TAG]|PATH"),
        usage: "[warren] the image to use for the container filesystem: a registry reference (enroot/pyxis or docker form, tag or digest) or a squashfs file on the node (a path starting with / or .)" },
    OptInfo { opt: Opt::Mounts, name: "container-mounts", arginfo: Some("SRC:DST[:FLAGS][,SRC:DST...]"),
        usage: "[warren] bind mount[s] inside the container; mount flags are separated with \"+\", e.g. \"ro+rprivate\"; SRC may be tmpfs or umount" },
    OptInfo { opt: Opt::Workdir, name: "container-workdir", arginfo: Some("PATH"),
        usage: "[warren] working directory inside the container" },
    OptInfo { opt: Opt::Name, name: "container-name", arginfo: Some("NAME[:auto|create|exec|no_exec]"),
        usage: "[warren] name of a container kept across the steps of the job (removed at job end); an existing one is reused" },
    OptInfo { opt: Opt::Save, name: "container-save", arginfo: Some("PATH"),
        usage: "[warren] save the container (image and writable layer) to a squashfs file on the node" },
    OptInfo { opt: Opt::MountHome, name: "container-mount-home", arginfo: None,
        usage: "[warren] bind mount the user's home directory" },
    OptInfo { opt: Opt::NoMountHome, name: "no-container-mount-home", arginfo: None,
        usage: "[warren] do not bind mount the user's home directory" },
    OptInfo { opt: Opt::RemapRoot, name: "container-remap-root", arginfo: None,
        usage: "[warren] be UID 0 inside the container (no privilege on the host)" },
    OptInfo { opt: Opt::NoRemapRoot, name: "no-container-remap-root", arginfo: None,
        usage: "[warren] keep your own UID inside the container" },
    OptInfo { opt: Opt::Entrypoint, name: "container-entrypoint", arginfo: None,
        usage: "[warren] execute the entrypoint from the container image" },
    OptInfo { opt: Opt::NoEntrypoint, name: "no-container-entrypoint", arginfo: None,
        usage: "[warren] do not execute the entrypoint from the container image" },
    OptInfo { opt: Opt::EntrypointLog, name: "container-entrypoint-log", arginfo: None,
        usage: "[warren] print the output of the entrypoint" },
    OptInfo { opt: Opt::Writable, name: "container-writable", arginfo: None,
        usage: "[warren] make the container filesystem writable (a layer per task)" },
    OptInfo { opt: Opt::Readonly, name: "container-readonly", arginfo: None,
        usage: "[warren] make the container filesystem read-only" },
    OptInfo { opt: Opt::Env, name: "container-env", arginfo: Some("NAME[,NAME...]"),
        usage: "[warren] names of environment variables whose host values override the image's" },
    OptInfo { opt: Opt::Devices, name: "container-devices", arginfo: Some("VENDOR/CLASS[=NAME][,...]"),
        usage: "[warren] CDI devices for every task (e.g. nvidia.com/gpu=0, or =all); a kind alone (nvidia.com/gpu) gives each task the GPUs Slurm allocated to it" },
    OptInfo { opt: Opt::MpiInject, name: "container-mpi-inject", arginfo: Some("off|on|force"),
        usage: "[warren] bring in the host MPI and interconnect the site configured; on refuses an image whose MPI is ABI-incompatible, force injects anyway" },
];

impl Opt {
    /// The option for a callback's `val`.
    pub fn from_val(v: i32) -> Option<Opt> {
        OPTIONS.iter().map(|o| o.opt).find(|o| *o as i32 == v)
    }

    /// `--name` as the user typed it.
    pub fn flag(self) -> String {
        format!("--{}", OPTIONS[self as usize].name)
    }
}

/// What `--container-name=NAME:FLAG` asks for (pyxis semantics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameMode {
    /// Use the container if it exists, else create it.
    Auto,
    /// Create it; an existing one is an error.
    Create,
    /// Enter the running container (its namespaces), do not start a new one.
    Exec,
    /// Use the existing container's file system, never enter a running one.
    NoExec,
}

/// The user's options after parsing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Args {
    pub image: Option<Image>,
    /// The raw value, to tell a repeated identical `--container-image` from a second one.
    image_raw: Option<String>,
    pub mounts: Vec<Mount>,
    pub workdir: Option<String>,
    pub name: Option<(String, NameMode)>,
    name_raw: Option<String>,
    pub save: Option<String>,
    pub mount_home: Option<bool>,
    pub remap_root: Option<bool>,
    pub entrypoint: Option<bool>,
    pub entrypoint_log: Option<bool>,
    pub writable: Option<bool>,
    pub env: Vec<String>,
    /// `--container-devices` entries: CDI names, or a kind alone (the task's GPUs).
    pub devices: Vec<String>,
    /// `--container-mpi-inject` (docs/mpi.md).
    pub mpi_inject: Option<warren::runtime::mpi_inject::Mode>,
}

/// A refused option value; the message is the one line srun/sbatch print.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("warren: {0}")]
pub struct ArgError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, ArgError> {
    Err(ArgError(msg.into()))
}

pub use crate::plugstack::parse_bool;

fn check_path(flag: &str, v: &str) -> Result<(), ArgError> {
    if v.len() > MAX_VALUE {
        return err(format!("{flag}: longer than {MAX_VALUE} bytes"));
    }
    if v.chars().any(|c| c.is_control()) {
        return err(format!("{flag}: {v:?} contains a control character"));
    }
    Ok(())
}

/// A variable name as POSIX shells take it.
fn env_name_ok(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && n.len() <= 256
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

impl Args {
    /// Apply one option: `value` is the argument (`None` for flags). Slurm may call a
    /// callback twice with the same value (pyxis notes it); that is accepted, a different
    /// second value is not.
    pub fn set(&mut self, opt: Opt, value: Option<&str>) -> Result<(), ArgError> {
        let flag = opt.flag();
        let arg = || -> Result<&str, ArgError> {
            match value {
                Some(v) if !v.is_empty() => Ok(v),
                _ => err(format!("{flag}: argument required")),
            }
        };
        let once = |slot: &Option<String>, v: &str| -> Result<bool, ArgError> {
            match slot {
                Some(old) if old == v => Ok(false),
                Some(_) => err(format!("{flag} specified multiple times")),
                None => Ok(true),
            }
        };
        match opt {
            Opt::Image => {
                let v = arg()?;
                if once(&self.image_raw, v)? {
                    let img = image::parse(v).map_err(|e| ArgError(format!("{flag}: {e}")))?;
                    self.image = Some(img);
                    self.image_raw = Some(v.to_string());
                }
            }
            Opt::Mounts => {
                let v = arg()?;
                let list = mounts::parse_list(v).map_err(|e| ArgError(format!("{flag}: {e}")))?;
                for m in list {
                    if !self.mounts.contains(&m) {
                        self.mounts.push(m);
                    }
                }
            }
            Opt::Workdir => {
                let v = arg()?;
                check_path(&flag, v)?;
                if !v.starts_with('/') {
                    return err(format!("{flag}: {v:?} is not an absolute path"));
                }
                if once(&self.workdir, v)? {
                    self.workdir = Some(v.to_string());
                }
            }
            Opt::Name => {
                let v = arg()?;
                if once(&self.name_raw, v)? {
                    let (name, mode) = v.split_once(':').unwrap_or((v, ""));
                    if name.is_empty() {
                        return err(format!("{flag}: empty name"));
                    }
                    warren::runtime::state::check_name(name)
                        .map_err(|e| ArgError(format!("{flag}: {e}")))?;
                    let mode = match mode {
                        "" | "auto" => NameMode::Auto,
                        "create" => NameMode::Create,
                        "exec" => NameMode::Exec,
                        "no_exec" => NameMode::NoExec,
                        m => {
                            return err(format!(
                                "{flag}: flag {m:?} must be \"auto\", \"create\", \"exec\" or \"no_exec\""
                            ))
                        }
                    };
                    self.name = Some((name.to_string(), mode));
                    self.name_raw = Some(v.to_string());
                }
            }
            Opt::Save => {
                let v = arg()?;
                check_path(&flag, v)?;
                let last = v.rsplit('/').next().unwrap_or(v);
                if v.ends_with('/') || last == "." || last == ".." {
                    return err(format!("{flag}: {v:?} is a directory; give a file name"));
                }
                if once(&self.save, v)? {
                    self.save = Some(v.to_string());
                }
            }
            Opt::MountHome | Opt::NoMountHome => pair(
                &mut self.mount_home,
                opt == Opt::MountHome,
                "--container-mount-home and --no-container-mount-home",
            )?,
            Opt::RemapRoot | Opt::NoRemapRoot => pair(
                &mut self.remap_root,
                opt == Opt::RemapRoot,
                "--container-remap-root and --no-container-remap-root",
            )?,
            Opt::Entrypoint | Opt::NoEntrypoint => pair(
                &mut self.entrypoint,
                opt == Opt::Entrypoint,
                "--container-entrypoint and --no-container-entrypoint",
            )?,
            Opt::EntrypointLog => self.entrypoint_log = Some(true),
            Opt::Writable | Opt::Readonly => pair(
                &mut self.writable,
                opt == Opt::Writable,
                "--container-writable and --container-readonly",
            )?,
            Opt::MpiInject => {
                let v = arg()?;
                let m = warren::runtime::mpi_inject::Mode::parse(v, &flag)
                    .map_err(|e| ArgError(e.to_string()))?;
                match self.mpi_inject {
                    Some(old) if old != m => {
                        return err(format!("{flag} specified multiple times"))
                    }
                    _ => self.mpi_inject = Some(m),
                }
            }
            Opt::Env => {
                let v = arg()?;
                if v.len() > MAX_VALUE {
                    return err(format!("{flag}: longer than {MAX_VALUE} bytes"));
                }
                for n in v.split(',') {
                    if !env_name_ok(n) {
                        return err(format!(
                            "{flag}: {n:?} in {v:?} is not a variable name (NAME[,NAME...], no empty entries)"
                        ));
                    }
                    if !self.env.iter().any(|e| e == n) {
                        self.env.push(n.to_string());
                    }
                }
            }
            Opt::Devices => {
                let v = arg()?;
                if v.len() > MAX_VALUE {
                    return err(format!("{flag}: longer than {MAX_VALUE} bytes"));
                }
                for d in v.split(',') {
                    crate::gpus::check_entry(d).map_err(|e| ArgError(format!("{flag}: {e}")))?;
                    if !self.devices.iter().any(|x| x == d) {
                        self.devices.push(d.to_string());
                    }
                }
            }
        }
        Ok(())
    }

    /// Apply the `PYXIS_CONTAINER_*` variables for what no flag set (`get` reads the
    /// environment of srun/sbatch or of the job).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ArgError> {
        let text = [
            ("PYXIS_CONTAINER_IMAGE", Opt::Image, self.image.is_none()),
            (
                "PYXIS_CONTAINER_MOUNTS",
                Opt::Mounts,
                self.mounts.is_empty(),
            ),
            (
                "PYXIS_CONTAINER_WORKDIR",
                Opt::Workdir,
                self.workdir.is_none(),
            ),
            ("PYXIS_CONTAINER_NAME", Opt::Name, self.name.is_none()),
            ("PYXIS_CONTAINER_SAVE", Opt::Save, self.save.is_none()),
            ("PYXIS_CONTAINER_ENV", Opt::Env, self.env.is_empty()),
        ];
        for (var, opt, unset) in text {
            if let (true, Some(v)) = (unset, get(var)) {
                self.set(opt, Some(&v))
                    .map_err(|e| ArgError(format!("{var}: {}", e.0)))?;
            }
        }
        let bools = [
            (
                "PYXIS_CONTAINER_MOUNT_HOME",
                Opt::MountHome,
                Opt::NoMountHome,
                self.mount_home.is_none(),
            ),
            (
                "PYXIS_CONTAINER_REMAP_ROOT",
                Opt::RemapRoot,
                Opt::NoRemapRoot,
                self.remap_root.is_none(),
            ),
            (
                "PYXIS_CONTAINER_ENTRYPOINT",
                Opt::Entrypoint,
                Opt::NoEntrypoint,
                self.entrypoint.is_none(),
            ),
            (
                "PYXIS_CONTAINER_WRITABLE",
                Opt::Writable,
                Opt::Readonly,
                self.writable.is_none(),
            ),
            // READONLY=1 means not writable.
            (
                "PYXIS_CONTAINER_READONLY",
                Opt::Readonly,
                Opt::Writable,
                self.writable.is_none(),
            ),
        ];
        for (var, yes, no, unset) in bools {
            let Some(v) = get(var) else { continue };
            let Some(b) = parse_bool(&v) else {
                return err(format!(
                    "{var}={v:?}: not a boolean (1/true/yes/y or 0/false/no/n)"
                ));
            };
            if unset {
                self.set(if b { yes } else { no }, None)
                    .map_err(|e| ArgError(format!("{var}: {}", e.0)))?;
            }
        }
        if self.entrypoint_log.is_none() {
            if let Some(v) = get("PYXIS_CONTAINER_ENTRYPOINT_LOG") {
                match parse_bool(&v) {
                    Some(b) => self.entrypoint_log = Some(b),
                    None => return err(format!("PYXIS_CONTAINER_ENTRYPOINT_LOG={v:?}: not a boolean (1/true/yes/y or 0/false/no/n)")),
                }
            }
        }
        Ok(())
    }

    /// A container is asked for (pyxis: an image or a name).
    pub fn enabled(&self) -> bool {
        self.image.is_some() || self.name.is_some()
    }

    /// Options that do nothing without `--container-image`/`--container-name`, for the
    /// warning pyxis also prints.
    pub fn ignored(&self) -> Vec<&'static str> {
        if self.enabled() {
            return vec![];
        }
        let mut v = vec![];
        if !self.mounts.is_empty() {
            v.push("--container-mounts");
        }
        if self.workdir.is_some() {
            v.push("--container-workdir");
        }
        if self.save.is_some() {
            v.push("--container-save");
        }
        if self.mount_home.is_some() {
            v.push("--[no-]container-mount-home");
        }
        if self.remap_root.is_some() {
            v.push("--[no-]container-remap-root");
        }
        if self.entrypoint.is_some() {
            v.push("--[no-]container-entrypoint");
        }
        if self.writable.is_some() {
            v.push("--container-writable/--container-readonly");
        }
        if !self.env.is_empty() {
            v.push("--container-env");
        }
        if self.mpi_inject.is_some() {
            v.push("--container-mpi-inject");
        }
        v
    }

    /// Combinations that cannot work, checked once every option and variable is in.
    pub fn check(&self) -> Result<(), ArgError> {
        if let Some((n, NameMode::Exec)) = &self.name {
            if self.save.is_some() {
                return err(format!("--container-name={n}:exec enters a running container: --container-save cannot be used with it"));
            }
        }
        if self.save.is_some() && self.writable == Some(false) {
            return err("--container-save needs a writable container (drop --container-readonly)");
        }
        Ok(())
    }
}

fn pair(slot: &mut Option<bool>, v: bool, both: &str) -> Result<(), ArgError> {
    match slot {
        Some(old) if *old != v => err(format!("both {both} were specified")),
        _ => {
            *slot = Some(v);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn set(a: &mut Args, o: Opt, v: &str) -> Result<(), ArgError> {
        a.set(o, Some(v))
    }

    #[test]
    fn table_matches_enum() {
        for (i, o) in OPTIONS.iter().enumerate() {
            assert_eq!(o.opt as usize, i, "{}", o.name);
            assert_eq!(Opt::from_val(i as i32), Some(o.opt));
            assert!(o.name.len() <= 75, "SPANK_OPTION_MAXLEN");
        }
        assert_eq!(Opt::from_val(99), None);
    }

    #[test]
    fn values_and_refusals() {
        let mut a = Args::default();
        set(&mut a, Opt::Image, "127.0.0.1:5000#test/busybox:latest").unwrap();
        // Slurm repeats callbacks with the same value.
        set(&mut a, Opt::Image, "127.0.0.1:5000#test/busybox:latest").unwrap();
        assert!(set(&mut a, Opt::Image, "other")
            .unwrap_err()
            .0
            .contains("multiple times"));
        assert!(a
            .set(Opt::Image, Some(""))
            .unwrap_err()
            .0
            .contains("argument required"));
        assert!(a.set(Opt::Image, None).is_err());
        set(&mut a, Opt::Mounts, "/a:/a").unwrap();
        set(&mut a, Opt::Mounts, "/a:/a,/b:/c:ro").unwrap();
        assert_eq!(a.mounts.len(), 2);
        assert!(set(&mut a, Opt::Mounts, "/a:/a,")
            .unwrap_err()
            .0
            .contains("empty entry"));
        a.set(Opt::Writable, None).unwrap();
        let e = a.set(Opt::Readonly, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "warren: both --container-writable and --container-readonly were specified"
        );
        set(&mut a, Opt::Name, "dev:exec").unwrap();
        assert_eq!(a.name, Some(("dev".into(), NameMode::Exec)));
        let mut b = Args::default();
        assert!(set(&mut b, Opt::Name, "dev:bogus").is_err());
        assert!(set(&mut b, Opt::Name, ":auto")
            .unwrap_err()
            .0
            .contains("empty name"));
        assert!(set(&mut b, Opt::Name, "a/b").is_err());
        assert!(set(&mut b, Opt::Save, "/tmp/out/")
            .unwrap_err()
            .0
            .contains("directory"));
        assert!(set(&mut b, Opt::Save, "/tmp/..").is_err());
        set(&mut b, Opt::Save, "/tmp/out.sqfs").unwrap();
        assert!(set(&mut b, Opt::Workdir, "rel").is_err());
        assert!(set(&mut b, Opt::Env, "A,,B").is_err());
        assert!(set(&mut b, Opt::Env, "A,").is_err());
        set(&mut b, Opt::Env, "A,B_2").unwrap();
        assert_eq!(b.env, ["A", "B_2"]);
        assert!(set(&mut b, Opt::Image, &"a".repeat(5000)).is_err());
        assert!(set(&mut b, Opt::Image, "UPPER/case").is_err());
        set(&mut b, Opt::Image, "./img.sqfs").unwrap();
        assert!(matches!(b.image, Some(Image::Squashfs(_))));
        use warren::runtime::mpi_inject::Mode;
        assert_eq!(
            set(&mut b, Opt::MpiInject, "yes").unwrap_err().to_string(),
            "warren: --container-mpi-inject \"yes\": expected off, on or force"
        );
        set(&mut b, Opt::MpiInject, "force").unwrap();
        set(&mut b, Opt::MpiInject, "force").unwrap();
        assert_eq!(b.mpi_inject, Some(Mode::Force));
        assert!(set(&mut b, Opt::MpiInject, "on")
            .unwrap_err()
            .0
            .contains("multiple times"));
    }

    #[test]
    fn environment_forms_and_flag_wins() {
        let env: HashMap<&str, &str> = [
            ("PYXIS_CONTAINER_IMAGE", "busybox"),
            ("PYXIS_CONTAINER_MOUNTS", "/x:/y"),
            ("PYXIS_CONTAINER_REMAP_ROOT", "yes"),
            ("PYXIS_CONTAINER_READONLY", "1"),
            ("PYXIS_CONTAINER_NAME", "n1"),
        ]
        .into();
        let get = |k: &str| env.get(k).map(|v| v.to_string());
        let mut a = Args::default();
        set(&mut a, Opt::Image, "127.0.0.1:5000/test/busybox").unwrap();
        a.set(Opt::NoRemapRoot, None).unwrap();
        a.apply_env(get).unwrap();
        assert_eq!(a.image_raw.as_deref(), Some("127.0.0.1:5000/test/busybox"));
        assert_eq!(a.remap_root, Some(false));
        assert_eq!(a.writable, Some(false));
        assert_eq!(a.mounts.len(), 1);
        assert_eq!(a.name.as_ref().unwrap().0, "n1");
        let mut b = Args::default();
        let bad = |k: &str| (k == "PYXIS_CONTAINER_WRITABLE").then(|| "maybe".to_string());
        assert!(b
            .apply_env(bad)
            .unwrap_err()
            .0
            .contains("PYXIS_CONTAINER_WRITABLE"));
        let mut c = Args::default();
        let bad = |k: &str| (k == "PYXIS_CONTAINER_MOUNTS").then(|| "rel:/x".to_string());
        assert_eq!(
            c.apply_env(bad).unwrap_err().to_string(),
            "warren: PYXIS_CONTAINER_MOUNTS: --container-mounts: \"rel:/x\": source must be an absolute path, a relative path starting with '.', \"tmpfs\" or \"umount\""
        );
    }

    #[test]
    fn cross_checks() {
        let mut a = Args::default();
        a.set(Opt::Mounts, Some("/a:/b")).unwrap();
        assert!(!a.enabled());
        assert_eq!(a.ignored(), ["--container-mounts"]);
        a.set(Opt::Name, Some("x:exec")).unwrap();
        a.set(Opt::Save, Some("/o.sqfs")).unwrap();
        assert!(a.check().is_err());
    }

    proptest! {
        #[test]
        fn any_value_never_panics(v in any::<String>(), i in 0i32..15) {
            let mut a = Args::default();
            let _ = a.set(Opt::from_val(i).unwrap(), Some(&v));
            let _ = a.set(Opt::from_val(i).unwrap(), Some(&v));
            let _ = a.check();
        }

        #[test]
        fn any_env_never_panics(v in any::<String>()) {
            let mut a = Args::default();
            let _ = a.apply_env(|_| Some(v.clone()));
        }
    }
}

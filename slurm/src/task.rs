//! A task enters its node's container (`slurm_spank_task_init`: in the task process, as
//! the job's user, before slurmstepd execs the command). It joins the holder's user and
//! mount namespaces (so the tasks of a node share one user namespace and one image
//! mount), takes a private mount namespace with its own writable layer, pivots, and takes
//! the container's identity, capabilities and no_new_privs: everything but the exec,
//! which stays slurmstepd's, so Slurm remains the parent of every task (accounting,
//! signals, exit codes as for bare tasks).
//!
//! slurmstepd then execs with the job environment, which gets the container's variables
//! here ([`env_changes`], pyxis semantics), and resolves a relative argv[0] with that
//! PATH *after* task_init, inside the container's namespaces (Slurm 22.05
//! `exec_task`: "handle this late so that SPANK ... change the filesystem namespaces").

use crate::args::Args;
use crate::mounts::{Mount, Source};
use crate::node::Job;
use crate::plugstack::Config as PlugConfig;
use std::path::{Path, PathBuf};
use warren::config::Config;
use warren::digest::Digest;
use warren::runtime::caller::Caller;
use warren::runtime::holder::Scope;
use warren::runtime::idmap::Identity;
use warren::runtime::image_config::ImageConfig;
use warren::runtime::spec::{self, Mode, RunOptions, Writable};
use warren::runtime::{mpi_inject, overlay, process, setup, state, sys};

/// Variables that always come from the host: Slurm's, the MPI launchers' and the
/// accelerator selections Slurm makes per task (pyxis semantics).
pub fn always_host(name: &str) -> bool {
    [
        "SLURM_", "SLURMD_", "SPANK_", "PMI", "PMIX_", "OMPI_", "PRTE_",
    ]
    .iter()
    .any(|p| name.starts_with(p))
        || matches!(
            name,
            "CUDA_VISIBLE_DEVICES"
                | "NVIDIA_VISIBLE_DEVICES"
                | "ROCR_VISIBLE_DEVICES"
                | "GPU_DEVICE_ORDINAL"
                | "ZE_AFFINITY_MASK"
        )
}

/// Pure: what to set in the job environment for the task to see the container's: every
/// image variable wins over the host's, except those named in `--container-env` and the
/// ones that always come from the host; the rest of the host environment stays.
pub fn env_changes(image_env: &[String], keep_host: &[String]) -> Vec<(String, String)> {
    image_env
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| !k.is_empty() && !always_host(k) && !keep_host.iter().any(|h| h == k))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Pure: pyxis's path mounts as warren binds (`SRC:DST:ro|rw`), relative sources against
/// the job's working directory. `tmpfs` and `umount` entries are [`special_mounts`].
pub fn volumes(mounts: &[Mount], cwd: &Path) -> Vec<String> {
    mounts
        .iter()
        .filter_map(|m| {
            let src = match &m.source {
                Source::Path(p) if p.starts_with('/') => PathBuf::from(p),
                Source::Path(p) => cwd.join(p),
                Source::Tmpfs | Source::Umount => return None,
            };
            let mode = if m.read_only() { "ro" } else { "rw" };
            Some(format!("{}:{}:{mode}", src.display(), m.target))
        })
        .collect()
}

/// Pure: the `nosuid`/`nodev`/`noexec` flags of the path binds, by destination, in the
/// given order (binds without any are left out): added by a remount once the bind is in
/// place.
pub fn bind_flags(mounts: &[Mount]) -> Vec<(String, libc::c_ulong)> {
    mounts
        .iter()
        .filter(|m| matches!(m.source, Source::Path(_)))
        .filter_map(|m| {
            let f = m.flags.iter().fold(0, |acc, f| {
                acc | match f.as_str() {
                    "nosuid" => libc::MS_NOSUID,
                    "nodev" => libc::MS_NODEV,
                    "noexec" => libc::MS_NOEXEC,
                    _ => 0,
                }
            });
            (f != 0).then(|| (m.target.clone(), f))
        })
        .collect()
}

/// Pure: the mount flags a bind remount must repeat (statvfs `f_flag`): in a user
/// namespace the kernel refuses a remount that would clear a locked flag.
pub fn kept_flags(f_flag: libc::c_ulong) -> libc::c_ulong {
    [
        (libc::ST_RDONLY, libc::MS_RDONLY),
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ]
    .iter()
    .filter(|(st, _)| f_flag & st != 0)
    .fold(0, |acc, (_, ms)| acc | ms)
}

/// Add `flags` to the bind at `target` (in the container, after pivot_root).
fn restrict_bind(target: &str, flags: libc::c_ulong) -> Result<(), String> {
    let err = |e: std::io::Error| format!("warren: --container-mounts {target}: {e}");
    let c = std::ffi::CString::new(target)
        .map_err(|_| format!("warren: --container-mounts {target}: NUL byte"))?;
    // SAFETY: statvfs is plain data; zeroed is a valid value that the call overwrites.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a pointer to a statvfs we own.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    let all = libc::MS_REMOUNT | libc::MS_BIND | kept_flags(st.f_flag) | flags;
    sys::mount("none", Path::new(target), "", all, None).map_err(err)
}

/// A `tmpfs` or `umount` entry, applied inside the new root before the capabilities go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Special {
    Tmpfs {
        target: String,
        flags: libc::c_ulong,
        data: String,
    },
    Umount(String),
}

/// Pure: the `tmpfs:` and `umount:` entries, in order, with their mount flags and options.
pub fn special_mounts(mounts: &[Mount]) -> Vec<Special> {
    mounts
        .iter()
        .filter_map(|m| match m.source {
            Source::Path(_) => None,
            Source::Umount => Some(Special::Umount(m.target.clone())),
            Source::Tmpfs => {
                let mut flags = libc::MS_NOSUID | libc::MS_NODEV;
                let mut data = vec![];
                for f in &m.flags {
                    match f.as_str() {
                        "ro" => flags |= libc::MS_RDONLY,
                        "noexec" => flags |= libc::MS_NOEXEC,
                        f if f.starts_with("size=")
                            || f.starts_with("mode=")
                            || f.starts_with("nr_inodes=") =>
                        {
                            data.push(f.to_string())
                        }
                        _ => {}
                    }
                }
                Some(Special::Tmpfs {
                    target: m.target.clone(),
                    flags,
                    data: data.join(","),
                })
            }
        })
        .collect()
}

/// Apply [`special_mounts`] in the container (after pivot_root, still privileged in the
/// user namespace, in the task's own mount namespace).
fn apply_special(specials: &[Special]) -> Result<(), String> {
    for sp in specials {
        match sp {
            Special::Tmpfs {
                target,
                flags,
                data,
            } => {
                // pyxis's default for tmpfs entries is x-create=dir.
                let _ = std::fs::create_dir_all(target);
                sys::mount("tmpfs", Path::new(target), "tmpfs", *flags, Some(data))
                    .map_err(|e| format!("warren: --container-mounts tmpfs:{target}: {e}"))?;
            }
            Special::Umount(target) => {
                let c = std::ffi::CString::new(target.as_str())
                    .map_err(|_| format!("warren: umount:{target}: NUL byte"))?;
                // SAFETY: a valid C string; detaching a mount of our own mount namespace.
                if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
                    return Err(format!(
                        "warren: --container-mounts umount:{target}: {}",
                        std::io::Error::last_os_error()
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Everything the task needs, gathered by the SPANK glue.
pub struct TaskInput<'a> {
    pub cfg: &'a PlugConfig,
    pub args: &'a Args,
    pub job: &'a Job,
    /// The holder's warren runtime dir (its scope dir).
    pub rundir: &'a Path,
    /// The holder's scope (`warren run --job`).
    pub scope: Scope,
    /// The job environment (`S_JOB_ENV`).
    pub env: Vec<(String, String)>,
    /// The task's command (`S_JOB_ARGV`), for the plan only: slurmstepd execs it.
    pub argv: Vec<String>,
    /// The job's working directory (relative mount sources).
    pub cwd: PathBuf,
    /// The batch step's script (slurmstepd execs it from its spool dir, which the
    /// container must see: bound read-only at the same path).
    pub batch_script: Option<PathBuf>,
    /// A named container's writable layer for this task, kept across the job's steps
    /// (`None`: a fresh layer per task, discarded at exit).
    pub layer: Option<PathBuf>,
}

/// warren's configuration for the job: the system file (a user's own file is not read:
/// slurmstepd's environment is not the user's), then the plugstack's stores.
fn config(t: &TaskInput) -> Result<Config, String> {
    let mut c = match std::fs::read_to_string("/etc/warren/warren.toml") {
        Ok(text) => {
            Config::from_toml(&text).map_err(|e| format!("/etc/warren/warren.toml: {e}"))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Config::default(),
        Err(e) => return Err(format!("/etc/warren/warren.toml: {e}")),
    };
    c.store.path = Some(match &t.cfg.store {
        Some(s) => PathBuf::from(crate::plugstack::expand_store(s, &t.job.user, t.job.uid)),
        None => {
            let xdg = t
                .env
                .iter()
                .find(|(k, v)| k == "XDG_DATA_HOME" && v.starts_with('/'))
                .map(|(_, v)| PathBuf::from(v));
            xdg.unwrap_or_else(|| t.job.home.join(".local/share"))
                .join("warren")
        }
    });
    if let Some(s) = &t.cfg.shared_store {
        c.store.shared = s.split(':').map(PathBuf::from).collect();
    }
    c.run.runtime_dir = Some(t.rundir.to_path_buf());
    Ok(c)
}

/// Enter the container; returns the variables to set for the exec.
pub fn enter(t: &TaskInput) -> Result<Vec<(String, String)>, String> {
    if t.args.entrypoint.unwrap_or(t.cfg.entrypoint) {
        return Err("warren: --container-entrypoint is not supported yet (slurmstepd execs the command itself)".into());
    }
    // The holder of this scope: its image and identity are the container's.
    let holder = state::list(t.rundir)
        .map_err(|e| format!("warren: {e:#}"))?
        .into_iter()
        .find(|r| r.kind == "holder")
        .ok_or_else(|| format!("warren: no running container in {}", t.rundir.display()))?;
    let config = config(t)?;
    let digest =
        Digest::parse(&holder.digest).map_err(|e| format!("warren: holder digest: {e}"))?;
    let stores = warren::store::Stores::open(&config).map_err(|e| format!("warren: {e:#}"))?;
    let entry = match stores.image(&digest) {
        Some(e) => e,
        // `--container-image=PATH`: the holder runs that file (its record names it, with a
        // stand-in digest of the file version) with the empty config of the job dir.
        None if holder.image.starts_with('/') => warren::store::ImageEntry {
            digest,
            squashfs: PathBuf::from(&holder.image),
            config: crate::node::squashfs_config_path(t.cfg, t.job),
        },
        None => {
            return Err(format!(
                "warren: image {} ({}) is not in the store",
                holder.image, holder.digest
            ))
        }
    };
    let remap = match t.args.remap_root {
        Some(r) => r,
        None => holder.identity == "remap-root",
    };
    let caller = Caller::lookup(t.job.uid, t.job.gid, t.env.clone(), t.rundir.to_path_buf());
    let mut binds = volumes(&t.args.mounts, &t.cwd);
    if let Some(dir) = t.batch_script.as_deref().and_then(Path::parent) {
        binds.push(format!("{}:{}:ro", dir.display(), dir.display()));
    }
    // PMIx: the server's directory must be visible inside at the same path, or the
    // client cannot attach (gds_ds12_lock errors).
    for d in warren::runtime::pmix::dirs(&t.env) {
        binds.push(format!("{d}:{d}:rw"));
    }
    // Host MPI injection: the option, else the plugstack's default, else the nodes'
    // warren.toml (`mpi.inject`).
    let inject_mode = match t.args.mpi_inject.or(t.cfg.mpi_inject) {
        Some(m) => m,
        None => mpi_inject::Mode::parse(&config.mpi.inject, "/etc/warren/warren.toml mpi.inject")
            .map_err(|e| format!("warren: {e}"))?,
    };
    let injection =
        mpi_inject::plan(&config.mpi, inject_mode).map_err(|e| format!("warren: {e}"))?;
    let opts = RunOptions {
        volumes: binds,
        env: vec![],
        env_files: vec![],
        workdir: t.args.workdir.clone(),
        identity: if remap {
            Identity::RemapRoot
        } else {
            Identity::KeepId
        },
        mount_home: Some(t.args.mount_home.unwrap_or(t.cfg.mount_home)),
        writable: match (&t.layer, t.args.writable.unwrap_or(t.cfg.writable)) {
            (_, false) => Writable::ReadOnly,
            (Some(d), true) => Writable::Dir(d.clone()),
            (None, true) => Writable::Tmpfs,
        },
        overlay: None,
        name: None,
        entrypoint: Some(String::new()),
        command: t.argv.clone(),
        tty: false,
        fake_chown: false,
        timing: false,
        quiet: true,
        mode: Mode::Container,
        scope: t.scope.clone(),
        join: true,
        // Slurm is the parent of every task and tracks it in the host PID namespace;
        // ranks of a node share one user namespace (MPI's CMA needs host PIDs).
        contain: Some(false),
    };
    let (mut spec, _notices) =
        spec::build(&config.run, holder.image.clone(), &entry, &opts, &caller)
            .map_err(|e| format!("warren: {e:#}"))?;
    if let Some(i) = &injection {
        i.apply(&mut spec);
    }
    let Some(h) = &spec.join else {
        return Err(format!(
            "warren: the holder in {} does not match this task (identity {})",
            t.rundir.display(),
            spec::identity_name(spec.identity)
        ));
    };
    // Read on the host, before the root changes.
    let image_env = ImageConfig::read(&entry.config)
        .map_err(|e| format!("warren: image config: {e:#}"))?
        .env
        .unwrap_or_default();
    let fd = sys::pidfd_open(h.pid).map_err(|e| format!("warren: holder pid {}: {e}", h.pid))?;
    // The ID change to the user made this process non-dumpable, which makes its
    // /proc/self files root's (the same fix as the library test of this path).
    // SAFETY: prctl with integer arguments on our own process (the user's task).
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) };
    let mut log = setup::Log::default();
    setup::join_holder(&fd).map_err(|e| format!("warren: {e}"))?;
    let prepared = setup::prepare(&spec, overlay::choose(&spec), None, &mut log)
        .map_err(|e| format!("warren: {e}"))?;
    for (target, flags) in bind_flags(&t.args.mounts) {
        restrict_bind(&target, flags)?;
    }
    apply_special(&special_mounts(&t.args.mounts))?;
    process::finish(&prepared.exec).map_err(|(_, m)| format!("warren: {m}"))?;
    let mut changes = env_changes(&image_env, &t.args.env);
    if !changes.iter().any(|(k, _)| k == "PATH") && !t.env.iter().any(|(k, _)| k == "PATH") {
        changes.push(("PATH".into(), setup::DEFAULT_PATH.into()));
    }
    if let Some(i) = &injection {
        // slurmstepd execs with the job environment: the library path goes there.
        let ld = changes
            .iter()
            .chain(t.env.iter())
            .find(|(k, _)| k == "LD_LIBRARY_PATH")
            .map(|(_, v)| v.clone());
        let extra = i.env_changes(ld.as_deref());
        changes.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
        changes.extend(extra);
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn image_wins_except_named_and_slurm() {
        let image = [
            "PATH=/opt/bin:/usr/bin",
            "LANG=C.UTF-8",
            "HOME=/root",
            "SLURM_JOB_ID=0",
            "CUDA_VISIBLE_DEVICES=all",
            "PMIX_RANK=9",
            "=bad",
            "NOEQUALS",
        ]
        .map(String::from);
        let c = env_changes(&image, &["HOME".to_string()]);
        assert_eq!(
            c,
            [
                ("PATH".to_string(), "/opt/bin:/usr/bin".to_string()),
                ("LANG".to_string(), "C.UTF-8".to_string())
            ]
        );
    }

    #[test]
    fn mounts_as_binds_and_specials() {
        let m =
            crate::mounts::parse_list("/a:/b:ro,./d:/d,tmpfs:/t:size=1G+mode=1777+ro,umount:/u")
                .unwrap();
        assert_eq!(
            volumes(&m, Path::new("/work")),
            ["/a:/b:ro", "/work/./d:/d:rw"]
        );
        assert_eq!(
            special_mounts(&m),
            [
                Special::Tmpfs {
                    target: "/t".into(),
                    flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_RDONLY,
                    data: "size=1G,mode=1777".into()
                },
                Special::Umount("/u".into())
            ]
        );
    }

    #[test]
    fn bind_flags_are_added_and_kept() {
        let m = crate::mounts::parse_list(
            "/a:/a:ro+nosuid,/b:/b,/c:/c:noexec+nodev+rprivate,tmpfs:/t:noexec",
        )
        .unwrap();
        assert_eq!(
            bind_flags(&m),
            [
                ("/a".to_string(), libc::MS_NOSUID),
                ("/c".to_string(), libc::MS_NOEXEC | libc::MS_NODEV)
            ]
        );
        assert_eq!(
            kept_flags(libc::ST_RDONLY | libc::ST_NOSUID | libc::ST_RELATIME),
            libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_RELATIME
        );
        assert_eq!(kept_flags(0), 0);
    }

    proptest! {
        #[test]
        fn slurm_variables_never_change(k in "SLURM_[A-Z_]{1,10}", v in "[ -~]{0,20}") {
            let kv = format!("{}={}", k, v);
            prop_assert!(env_changes(&[kv], &[]).is_empty());
        }
    }
}

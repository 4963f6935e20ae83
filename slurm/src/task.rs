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
use crate::container_mounts;
use crate::entrypoint;
use crate::node::Job;
use crate::plugstack::Config as PlugConfig;
use crate::roots::{self, Layer};
use std::path::{Path, PathBuf};
use warren::config::Config;
use warren::digest::Digest;
use warren::runtime::caller::Caller;
use warren::runtime::holder::Scope;
use warren::runtime::idmap::Identity;
use warren::runtime::image_config::ImageConfig;
use warren::runtime::spec::{self, Mode, RunOptions, Writable};
use warren::runtime::{hooks, inject, mpi_inject, overlay, process, setup, state, sys};

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
    /// The task's writable layer (`roots::plan`).
    pub layer: Layer,
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

/// The passwd/group cache of keep-id containers (`RUNDIR/passwd`, runtime::userdb) per
/// job and node instead of per step: the scope dir's `passwd` is a link to the job dir's,
/// so the tasks of a new step find what an earlier step built (best effort: without it
/// the library builds the files, as before). Removed with the job dir.
fn share_userdb_cache(scope: &Path) {
    use std::os::unix::fs::DirBuilderExt;
    let Some(job_dir) = scope.parent() else {
        return;
    };
    let _ = std::fs::DirBuilder::new()
        .mode(0o700)
        .create(job_dir.join("passwd"));
    let _ = std::os::unix::fs::symlink("../passwd", scope.join("passwd"));
}

/// Fill the keep-id passwd/group cache once per node: the first task builds the files
/// under a lock, the node's other tasks wait and find them (all building at once, each
/// renaming its copy over the others', cost ext4 flushes). Best effort: `setup::prepare`
/// builds them itself on a miss. Called in the holder's namespaces (its image mount).
fn warm_userdb_cache(spec: &warren::runtime::spec::RunSpec) {
    use std::os::fd::AsRawFd;
    if spec.identity != Identity::KeepId {
        return;
    }
    let Ok(lock) = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(spec.rundir.join("passwd.lock"))
    else {
        return;
    };
    // SAFETY: flock on a descriptor we own; released when `lock` is dropped.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return;
    }
    let Ok(image) = warren::runtime::readonly::open_dir(&spec.rundir.join("mnt/l")) else {
        return;
    };
    let home = spec.user.home.to_string_lossy();
    let _ = warren::runtime::userdb::files(
        &spec.rundir,
        &spec.digest,
        &image,
        &setup::keep_id_user(spec, &home),
    );
}

/// Enter the container; returns the variables to set for the exec.
pub fn enter(t: &TaskInput) -> Result<Vec<(String, String)>, String> {
    share_userdb_cache(t.rundir);
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
    // The job's --container-mounts are applied after pivot_root, in the given order
    // (container_mounts); these two are the plugin's own.
    let mut binds = vec![];
    if let Some(dir) = t.batch_script.as_deref().and_then(Path::parent) {
        binds.push(format!("{}:{}:ro", dir.display(), dir.display()));
    }
    // PMIx: the server's directory must be visible inside at the same path, or the
    // client cannot attach (gds_ds12_lock errors).
    for d in warren::runtime::pmix::dirs(&t.env) {
        binds.push(format!("{d}:{d}:rw"));
    }
    // The PMIx clients' directory of the step, where slurmstepd made it (as enroot's
    // and Sarus's PMIx hooks bind it): the ranks of a node share it as on bare metal.
    let env = |k: &str| t.env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    if env("PMIX_SERVER_TMPDIR").is_some() {
        for d in warren::runtime::pmix::client_dirs(
            &t.cfg.pmix_appdir_base,
            &t.job.node,
            t.job.uid,
            &t.job.job_id.to_string(),
            env("SLURM_STEP_ID").unwrap_or_default(),
        ) {
            if Path::new(&d).is_dir() {
                binds.push(format!("{d}:{d}:rw"));
            }
        }
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
            (Layer::Kept(d), true) => Writable::Dir(d.clone()),
            // A mounted root is found once in the holder's namespace (below).
            (Layer::Fresh | Layer::Mounted { .. }, true) => Writable::Tmpfs,
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
        prefetch_for: None,
    };
    let (mut spec, _notices) =
        spec::build(&config.run, holder.image.clone(), &entry, &opts, &caller)
            .map_err(|e| format!("warren: {e:#}"))?;
    if let Some(i) = &injection {
        i.apply(&mut spec);
    }
    // CDI devices (this task's GPUs) and the site's drop-ins and hooks.
    let devices = crate::gpus::select(&t.args.devices, t.cfg.cdi_gpus.as_deref(), &t.env)
        .map_err(|e| format!("warren: {e}"))?;
    let inj = inject::gather(
        &config.cdi,
        &config.hooks,
        &devices.requests,
        &inject::Container {
            argv0: t.argv.first().map(String::as_str).unwrap_or_default(),
            annotations: &[],
            has_bind_mounts: !spec.binds.is_empty() || spec.home.is_some(),
        },
    )
    .map_err(|e| format!("warren: {e:#}"))?;
    spec.binds.extend(inj.binds.iter().cloned());
    spec.guard_libs.extend(inj.guard_libs.iter().cloned());
    if !inj.hooks.create_container.is_empty() {
        spec.hook_bundle = spec::HookBundle::Staging;
    }
    let hook_state = task_hooks_before(&inj.hooks, &spec)?;
    let in_container = task_hook_exes(&inj.hooks)?;
    let Some(h) = &spec.join else {
        return Err(format!(
            "warren: the holder in {} does not match this task (identity {})",
            t.rundir.display(),
            spec::identity_name(spec.identity)
        ));
    };
    // Read on the host, before the root changes.
    let image_config =
        ImageConfig::read(&entry.config).map_err(|e| format!("warren: image config: {e:#}"))?;
    let image_env = image_config.env.unwrap_or_default();
    let fd = sys::pidfd_open(h.pid).map_err(|e| format!("warren: holder pid {}: {e}", h.pid))?;
    // The ID change to the user made this process non-dumpable, which makes its
    // /proc/self files root's (the same fix as the library test of this path).
    // SAFETY: prctl with integer arguments on our own process (the user's task).
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) };
    let mut log = setup::Log::default();
    setup::join_holder(&fd).map_err(|e| format!("warren: {e}"))?;
    warm_userdb_cache(&spec);
    if let (Layer::Mounted { name, dir }, Writable::Tmpfs) = (&t.layer, &spec.writable) {
        spec.writable = Writable::Mounted(roots::ensure(&spec.rundir, name, dir)?);
    }
    let sources = container_mounts::open_sources(container_mounts::plan(&t.args.mounts, &t.cwd))?;
    // createContainer hooks: after the container's mounts, before its pivot_root.
    let mut hook_failed = None;
    let mut create_container = |_: &std::path::Path, _: &mut setup::Log| {
        hooks::run_all_opened(
            "createContainer",
            &inj.hooks.create_container,
            &in_container[0],
            &hook_state,
        )
        .map_err(|e| {
            let line = e.to_string();
            hook_failed = Some(hook_failure(e));
            setup::SetupError::new(line)
        })
    };
    let prepared = setup::prepare(
        &spec,
        overlay::choose(&spec),
        None,
        &mut log,
        &mut create_container,
    )
    .map_err(|e| hook_failed.take().unwrap_or_else(|| format!("warren: {e}")))?;
    container_mounts::apply(sources)?;
    hooks::run_all_opened(
        "startContainer",
        &inj.hooks.start_container,
        &in_container[1],
        &hook_state,
    )
    .map_err(hook_failure)?;
    process::finish(&prepared.exec).map_err(|(_, m)| format!("warren: {m}"))?;
    let mut changes = env_changes(&image_env, &t.args.env);
    // Site environment and CDI env (a bare `K` keeps the host's value: nothing to set),
    // then the renumbered GPU selection.
    changes.extend(
        inj.env
            .iter()
            .filter_map(|e| e.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    changes.extend(devices.env);
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
    let ep = image_config.entrypoint.unwrap_or_default();
    if t.args.entrypoint.unwrap_or(t.cfg.entrypoint) && !ep.is_empty() {
        // The task's environment as the entrypoint sees it: the job's with the changes.
        let mut env = t.env.clone();
        for (k, v) in &changes {
            match env.iter_mut().find(|(ek, _)| ek == k) {
                Some(e) => e.1 = v.clone(),
                None => env.push((k.clone(), v.clone())),
            }
        }
        let o = entrypoint::run(&ep, &env, t.args.entrypoint_log.unwrap_or(false))?;
        for (k, v) in entrypoint::env_delta(&env, &o.env, &t.args.env) {
            changes.retain(|(ck, _)| *ck != k);
            changes.push((k, v));
        }
        if let (None, Some(d)) = (&t.args.workdir, &o.cwd) {
            std::env::set_current_dir(d)
                .map_err(|e| format!("warren: the entrypoint's directory {}: {e}", d.display()))?;
        }
    }
    Ok(changes)
}

/// A hook failure as the one line (and the hook's stderr) the task fails with.
fn hook_failure(e: hooks::HookError) -> String {
    if e.stderr.is_empty() {
        format!("warren: {e}")
    } else {
        format!("warren: {e}\n{}", e.stderr)
    }
}

/// The site's and CDI's hooks for a task, first part: prestart and createRuntime run
/// here, in the task before its container is set up, with the OCI state (status
/// `creating`, the task's PID: slurmstepd execs the command in this process). poststart
/// and poststop need a process outside the container after the exec, which Slurm does
/// not give a plugin: they are refused (docs/hooks.md) rather than silently skipped.
/// Returns the state for the others: createContainer hooks run in the task's container
/// before its pivot_root (its root named by `BUNDLE/config.json`), startContainer hooks
/// after it.
fn task_hooks_before(
    h: &warren::runtime::bundle::HookSet,
    spec: &spec::RunSpec,
) -> Result<Vec<u8>, String> {
    if let Some((stage, hs)) = [("poststart", &h.poststart), ("poststop", &h.poststop)]
        .into_iter()
        .find(|(_, hs)| !hs.is_empty())
    {
        return Err(format!(
            "warren: {stage} hook {} cannot run in a Slurm task (docs/hooks.md)",
            hs[0].path.display()
        ));
    }
    let st = serde_json::json!({
        "ociVersion": warren::runtime::oci_state::OCI_VERSION,
        "id": spec.name.clone().unwrap_or_else(|| format!("{}", std::process::id())),
        "status": "creating",
        "pid": std::process::id(),
        "bundle": setup::staging_dir(spec),
        "annotations": {},
    })
    .to_string()
    .into_bytes();
    for (phase, hs) in [
        ("prestart", &h.prestart),
        ("createRuntime", &h.create_runtime),
    ] {
        hooks::run_all(phase, hs, &st, None).map_err(hook_failure)?;
    }
    Ok(st)
}

/// The executables of the hooks run inside the container, opened while host paths
/// still resolve.
fn task_hook_exes(
    h: &warren::runtime::bundle::HookSet,
) -> Result<[Vec<std::os::fd::OwnedFd>; 2], String> {
    Ok([
        hooks::open_exes("createContainer", &h.create_container).map_err(hook_failure)?,
        hooks::open_exes("startContainer", &h.start_container).map_err(hook_failure)?,
    ])
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

    proptest! {
        #[test]
        fn slurm_variables_never_change(k in "SLURM_[A-Z_]{1,10}", v in "[ -~]{0,20}") {
            let kv = format!("{}={}", k, v);
            prop_assert!(env_changes(&[kv], &[]).is_empty());
        }
    }
}

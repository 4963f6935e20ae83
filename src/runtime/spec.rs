//! The plan: from what a caller asks for (`RunOptions`: the CLI's flags, or the Slurm
//! plugin's options), who the caller is (`Caller`) and a stored image to the complete
//! `RunSpec` that `setup` (in the container's process) and a front end's supervisor
//! execute: ID map, environment, bind mounts, writable layer, helpers, holder to join.
//! No I/O beyond reading the image config and env files, checking paths, and making the
//! image daemon's execute-only copy in the runtime directory once (`execonly`).

use super::caller::Caller;
use super::env;
use super::holder::{self, Scope};
use super::idmap::{IdMap, Identity};
use super::image_config::ImageConfig;
use super::mounts::{self, Bind};
use super::{execonly, state, userns};
use crate::config::RunConfig;
use crate::store::ImageEntry;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// The writable layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Writable {
    /// Overlay with its upper layer on a private tmpfs (default; gone at exit).
    Tmpfs,
    /// Overlay with its upper layer in this host directory (kept).
    Dir(PathBuf),
    /// No overlay: the image itself, read-only.
    ReadOnly,
    /// A writable root already mounted at this path (in a holder's mount namespace that
    /// the caller joined), shared with whoever else uses it: taken as is, no overlay made.
    Mounted(PathBuf),
}

/// Overlay back end as asked for (`run.overlay`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverlayChoice {
    Auto,
    Native,
    Fuse,
}

/// What to do after the image is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Run a container.
    Container,
    /// Become a namespace holder named by the record and return at once.
    Holder,
}

/// Everything decided before the fork.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// The image's squashfs, or (an OCI bundle's) root file system directory, bound
    /// read-only as the lower layer.
    pub squashfs: PathBuf,
    pub image: String,
    pub digest: String,
    pub argv: Vec<String>,
    pub env: super::env::Env,
    /// `-w`, else the image's WorkingDir, else `/`.
    pub workdir: Option<String>,
    /// The image's `User` (used with --remap-root; keep-id always runs as the user).
    pub image_user: Option<String>,
    pub identity: Identity,
    pub map: IdMap,
    pub writable: Writable,
    pub overlay: OverlayChoice,
    pub binds: Vec<Bind>,
    pub home: Option<PathBuf>,
    /// Whose container it is (explicit: never read from the process).
    pub user: Caller,
    pub rundir: PathBuf,
    pub tmpfs_size: String,
    /// The image daemon to exec (an execute-only copy of `squashfuse_configured`).
    pub squashfuse: PathBuf,
    /// `run.squashfuse` as found in PATH: what messages name.
    pub squashfuse_configured: PathBuf,
    /// Serve the image with warren's own server when it can (`run.image_server`).
    pub builtin_server: bool,
    pub fuse_overlayfs: PathBuf,
    pub fake_chown: bool,
    pub timing: bool,
    /// Do not print the set-up's notices.
    pub quiet: bool,
    pub tty: bool,
    pub name: Option<String>,
    pub mode: Mode,
    /// Who owns the container or holder (the CLI's user, or a Slurm job).
    pub scope: Scope,
    /// Holder to join (its record).
    pub join: Option<state::Record>,
    /// The holder in `join` was started for this run: its image mount has nothing
    /// cached yet, so the set-up prefetches beside its other work as for a private mount.
    pub fresh_holder: bool,
    /// This user's prefetch list of the image (`prefetch_list`): read ahead on a fresh
    /// image mount when it exists, recorded by warren's image server when it does not.
    /// None: neither (`run.prefetch_list = false`, or no place for it).
    pub prefetch_list: Option<PathBuf>,
    /// Isolation for an untrusted image (`--contain`, docs/security.md): the front end
    /// gives the command its own PID namespace and /proc and private IPC, and passes only
    /// fds 0-2; the plan already left out the home directory and the host environment.
    pub contain: bool,
    /// Capability sets asked for (an OCI config's `process.capabilities`); None:
    /// warren's (root inside: the default container set; others: none).
    pub caps: Option<super::caps::Sets>,
    /// Host MPI injection: the check of the image's own MPI the set-up runs
    /// (`mpi_inject::check_image`) before anything is bound over the image.
    pub mpi: Option<super::mpi_inject::ImageCheck>,
    /// How createContainer hooks (run before pivot_root, in the container's mount
    /// namespace, as runc runs them) find the container's root through a bundle.
    pub hook_bundle: HookBundle,
    /// Host libraries inside injected directories (MPI plugins, CDI library
    /// directories): the glibc guard checks them with the bound library files.
    pub guard_libs: Vec<PathBuf>,
}

/// What the container's createContainer hooks are given as the bundle: they read
/// `BUNDLE/config.json` and its `root.path` (NVIDIA's `nvidia-cdi-hook` does).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum HookBundle {
    /// No createContainer hooks: nothing to write.
    #[default]
    None,
    /// `warren run` and Slurm tasks: a `config.json` naming the root is written into the
    /// container's staging directory ([`super::setup::staging_dir`]), the state's bundle.
    Staging,
    /// `warren oci`: the bundle is the user's; the container's root is bound over its
    /// `root.path` (this absolute path) in the container's mount namespace, so the hooks
    /// see there what the container will see.
    Root(PathBuf),
}

/// Exit code when warren could not start the container (bad options, image, set-up).
pub const EXIT_NOT_STARTED: i32 = 125;

/// Helper paths from config, looked up in PATH.
pub fn helper(prog: &str, what: &str) -> Result<PathBuf> {
    crate::util::which(prog)
        .with_context(|| format!("{prog} not found in PATH (needed for {what})"))
}

/// The execute-only copy of the image daemon (non-dumpable: not a door to the host, see
/// `execonly`), or the program itself with a notice when no copy can be made.
pub(crate) fn hardened_squashfuse(
    prog: &Path,
    rundir: &Path,
    uid: u32,
    notices: &mut Vec<String>,
) -> PathBuf {
    match execonly::copy(rundir, prog, uid) {
        Ok(p) => p,
        Err(e) => {
            notices.push(format!(
                "{} runs unhardened (no execute-only copy in {}: {e}); see docs/security.md",
                prog.display(),
                rundir.display()
            ));
            prog.to_path_buf()
        }
    }
}

/// "keep-id" or "remap-root".
pub fn identity_name(i: Identity) -> &'static str {
    match i {
        Identity::KeepId => "keep-id",
        Identity::RemapRoot => "remap-root",
    }
}

/// The `ps`/`rm` record of a container run by `pid` (the process that waits for it).
pub fn container_record(spec: &RunSpec, pid: i32) -> state::Record {
    state::Record {
        id: state::new_id(),
        name: spec.name.clone(),
        pid,
        image: spec.image.clone(),
        digest: spec.digest.clone(),
        command: spec.argv.clone(),
        started: state::now(),
        kind: "container".into(),
        identity: identity_name(spec.identity).into(),
        holder: spec
            .join
            .as_ref()
            .map(|h| h.name.clone().unwrap_or(h.id.clone())),
        scope: spec.scope.clone(),
        idle: None,
        key: String::new(),
    }
}

/// What the caller asks for; `None` means "the configured default".
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// `SRC:DST[:ro|rw]` specs.
    pub volumes: Vec<String>,
    /// `K=V` or `K` (host value).
    pub env: Vec<String>,
    pub env_files: Vec<PathBuf>,
    pub workdir: Option<String>,
    pub identity: Identity,
    pub mount_home: Option<bool>,
    pub writable: Writable,
    pub overlay: Option<OverlayChoice>,
    pub name: Option<String>,
    pub entrypoint: Option<String>,
    pub command: Vec<String>,
    pub tty: bool,
    pub fake_chown: bool,
    pub timing: bool,
    /// No notices from the set-up (the `-q` of the CLI).
    pub quiet: bool,
    pub mode: Mode,
    /// Who owns the container or holder (`Scope::User` from the CLI).
    pub scope: Scope,
    /// Join a running holder of the same image and identity when there is one.
    pub join: bool,
    /// Isolation for an untrusted image (`None`: `run.contain`).
    pub contain: Option<bool>,
    /// A holder's: the command its containers will run, whose prefetch list it records
    /// or reads ahead (a holder runs no command of its own).
    pub prefetch_for: Option<String>,
}

/// Build the spec; also returns the notices to show the user (degraded maps, malformed
/// subid lines).
pub fn build(
    cfg: &RunConfig,
    image: String,
    entry: &ImageEntry,
    opts: &RunOptions,
    caller: &Caller,
) -> Result<(RunSpec, Vec<String>)> {
    let ic = ImageConfig::read(&entry.config)?;
    let user = caller.clone();
    let plan = userns::plan(&user, opts.identity)?;
    let mut notices = plan.problems.clone();
    notices.extend(plan.notice.clone());
    let rundir = user.runtime_dir.clone();
    let stage = rundir.join("mnt");
    let s = stage.to_string_lossy();
    if s.contains([',', ':', '\\']) {
        bail!("runtime dir {s} contains ',', ':' or '\\', which overlay options cannot carry; set run.runtime_dir");
    }
    state::ensure_runtime_dir(&rundir, user.uid)?;
    let binds = opts
        .volumes
        .iter()
        .map(|v| {
            mounts::parse(v)
                .map_err(anyhow::Error::from)
                .and_then(|b| b.resolve_source())
        })
        .collect::<Result<Vec<_>>>()?;
    let env_files = opts
        .env_files
        .iter()
        .map(|p| env::read_env_file(p))
        .collect::<Result<Vec<_>>>()?;
    let contain = opts.contain.unwrap_or(cfg.contain);
    // Contained: nothing of the host environment but what -e/--env-file name explicitly.
    let allowlist: &[String] = if contain { &[] } else { &cfg.env_allowlist };
    let env = env::compose(
        ic.env.as_deref().unwrap_or_default(),
        &user.env,
        allowlist,
        &env_files,
        &opts.env,
    )?;
    let writable = match &opts.writable {
        Writable::Dir(d) => {
            for sub in ["upper", "work"] {
                std::fs::create_dir_all(d.join(sub))
                    .with_context(|| format!("--writable-dir {}", d.display()))?;
            }
            Writable::Dir(
                std::fs::canonicalize(d)
                    .with_context(|| format!("--writable-dir {}", d.display()))?,
            )
        }
        w => w.clone(),
    };
    let overlay = opts.overlay.unwrap_or(match cfg.overlay.as_str() {
        "native" => OverlayChoice::Native,
        "fuse" => OverlayChoice::Fuse,
        _ => OverlayChoice::Auto,
    });
    let digest = entry.digest.to_string();
    let identity = identity_name(opts.identity);
    let join = match opts.mode {
        // A contained container never shares a user namespace with others (security.md).
        Mode::Container if opts.join && !contain => {
            holder::find(&rundir, &opts.scope, &digest, identity)?
        }
        Mode::Container => None,
        Mode::Holder => {
            if let Some(h) = holder::find(&rundir, &opts.scope, &digest, identity)? {
                bail!(
                    "holder {} already keeps this image for this identity",
                    h.name.unwrap_or(h.id)
                );
            }
            None
        }
    };
    // Also a read-only root may need it (a skeleton of mount points over the image).
    let needs_fuse_overlay = overlay != OverlayChoice::Native;
    let single = plan.map.single;
    if opts.fake_chown && !single {
        notices.push(
            "--fake-chown ignored: you have a subordinate ID range, so chown really works".into(),
        );
    }
    if contain && opts.mount_home == Some(true) {
        bail!("--contain never mounts the home directory: drop --mount-home, or bind what the job needs with -v");
    }
    let mount_home = !contain && opts.mount_home.unwrap_or(cfg.mount_home);
    let argv = ic.argv(opts.entrypoint.as_deref(), &opts.command);
    if opts.mode == Mode::Container && argv.is_empty() {
        bail!("no command: the image has no Entrypoint or Cmd; give one after IMAGE");
    }
    let squashfuse_configured = helper(&cfg.squashfuse, "mounting images")?;
    let squashfuse = hardened_squashfuse(&squashfuse_configured, &rundir, user.uid, &mut notices);
    // A container's command's; a holder's when it was told its containers' (a Slurm
    // step's), else none.
    let list_for = match opts.mode {
        Mode::Container => argv.first().cloned(),
        Mode::Holder => opts.prefetch_for.clone(),
    };
    let prefetch_list = list_for
        .filter(|_| cfg.prefetch_list)
        .and_then(|c| prefetch_list_path(&user, &digest, &c));
    let spec = RunSpec {
        squashfs: entry.squashfs.clone(),
        image,
        digest,
        argv,
        env,
        workdir: opts.workdir.clone().or(ic.working_dir.clone()),
        image_user: ic.user.clone(),
        identity: opts.identity,
        map: plan.map,
        writable,
        overlay,
        binds,
        home: mount_home
            .then(|| user.home.clone())
            .filter(|h| h.is_dir() && h != Path::new("/")),
        user,
        rundir,
        tmpfs_size: cfg.tmpfs_size.clone(),
        squashfuse,
        squashfuse_configured,
        builtin_server: cfg.image_server == "builtin",
        fuse_overlayfs: if needs_fuse_overlay {
            helper(&cfg.fuse_overlayfs, "the FUSE overlay")
                .unwrap_or_else(|_| PathBuf::from(&cfg.fuse_overlayfs))
        } else {
            PathBuf::from(&cfg.fuse_overlayfs)
        },
        // Only in the single-ID mode: with a real range chown must really work.
        fake_chown: (opts.fake_chown || cfg.fake_chown) && single,
        timing: opts.timing,
        quiet: opts.quiet,
        tty: opts.tty,
        name: opts.name.clone(),
        mode: opts.mode.clone(),
        scope: opts.scope.clone(),
        join,
        fresh_holder: false,
        prefetch_list,
        contain,
        caps: None,
        mpi: None,
        hook_bundle: Default::default(),
        guard_libs: vec![],
    };
    Ok((spec, notices))
}

/// Where `user`'s prefetch list of the image `digest` started with the command
/// `argv0` is kept: a cache, shared by the user's nodes where home directories are
/// (`$XDG_CACHE_HOME/warren/prefetch/HEX.NAME`, `~/.cache/…` by default; NAME is the
/// command's file name: a Python start and a `find` read different files). None without
/// a usable place or a plain command name.
pub fn prefetch_list_path(user: &Caller, digest: &str, argv0: &str) -> Option<PathBuf> {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let name = argv0.rsplit('/').next().unwrap_or_default();
    let plain = |b: u8| b.is_ascii_alphanumeric() || b"._+-".contains(&b);
    if name.is_empty() || name.len() > 64 || name.starts_with('.') || !name.bytes().all(plain) {
        return None;
    }
    Some(prefetch_dir(user)?.join(format!("{hex}.{name}")))
}

/// The directory of `user`'s prefetch lists (`$XDG_CACHE_HOME/warren/prefetch`,
/// `~/.cache/…` by default); None without a home or `XDG_CACHE_HOME`.
pub fn prefetch_dir(user: &Caller) -> Option<PathBuf> {
    let cache = user
        .env_var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            (user.home.is_absolute() && user.home != Path::new("/"))
                .then(|| user.home.join(".cache"))
        })?;
    Some(cache.join("warren").join("prefetch"))
}

/// A plain spec for unit tests: user 1001 with a subordinate range, keep-id, tmpfs layer.
#[cfg(test)]
pub(crate) fn sample(identity: Identity) -> RunSpec {
    RunSpec {
        squashfs: "/i".into(),
        image: "i".into(),
        digest: "d".into(),
        argv: vec![],
        env: Default::default(),
        workdir: None,
        image_user: None,
        identity,
        map: super::idmap::choose(identity, 1001, 1001, &[(100000, 65536)], &[(100000, 65536)]),
        writable: Writable::Tmpfs,
        overlay: OverlayChoice::Auto,
        binds: vec![],
        home: None,
        user: Caller {
            uid: 1001,
            gid: 1001,
            name: "a".into(),
            passwd_gid: Some(1001),
            home: "/home/a".into(),
            gecos: String::new(),
            shell: "/bin/sh".into(),
            env: vec![],
            runtime_dir: "/r".into(),
        },
        rundir: "/r".into(),
        tmpfs_size: "1m".into(),
        squashfuse: "s".into(),
        squashfuse_configured: "s".into(),
        builtin_server: true,
        fuse_overlayfs: "f".into(),
        fake_chown: false,
        timing: false,
        quiet: false,
        tty: false,
        name: None,
        mode: Mode::Container,
        scope: Scope::User,
        join: None,
        fresh_holder: false,
        prefetch_list: None,
        contain: false,
        caps: None,
        mpi: None,
        hook_bundle: Default::default(),
        guard_libs: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_record_names_its_holder_and_scope() {
        let mut s = sample(Identity::RemapRoot);
        s.argv = vec!["true".into()];
        s.scope = Scope::Job {
            job_id: 9,
            step_id: Some(1),
            name: None,
        };
        let r = container_record(&s, 42);
        assert_eq!(
            (
                r.pid,
                r.kind.as_str(),
                r.identity.as_str(),
                r.holder.clone()
            ),
            (42, "container", "remap-root", None)
        );
        assert_eq!(
            (r.command.clone(), r.scope.job_id()),
            (vec!["true".to_string()], Some(9))
        );
        let mut h = r.clone();
        h.name = Some("h1".into());
        s.join = Some(h);
        assert_eq!(container_record(&s, 1).holder.as_deref(), Some("h1"));
        s.join.as_mut().unwrap().name = None;
        assert_eq!(container_record(&s, 1).holder, Some(r.id));
    }

    #[test]
    fn prefetch_lists_live_in_the_cache_per_image_and_command() {
        let mut u = sample(Identity::KeepId).user;
        let d = "sha256:99e5d1f9";
        let p = |u: &Caller, a: &str| prefetch_list_path(u, d, a).map(|p| p.display().to_string());
        assert_eq!(
            p(&u, "/usr/bin/python3").as_deref(),
            Some("/home/a/.cache/warren/prefetch/99e5d1f9.python3")
        );
        u.env = vec![("XDG_CACHE_HOME".into(), "/scratch/c".into())];
        assert_eq!(
            p(&u, "find").as_deref(),
            Some("/scratch/c/warren/prefetch/99e5d1f9.find")
        );
        u.env = vec![("XDG_CACHE_HOME".into(), "relative".into())];
        assert_eq!(
            p(&u, "g++").as_deref(),
            Some("/home/a/.cache/warren/prefetch/99e5d1f9.g++")
        );
        for bad in [
            "",
            "/usr/bin/",
            "..",
            ".hidden",
            "a b",
            "x\n",
            &"a".repeat(65),
        ] {
            assert_eq!(p(&u, bad), None, "{bad:?}");
        }
        assert_eq!(prefetch_list_path(&u, "sha256:../x", "sh"), None);
        u.home = "/".into();
        assert_eq!(p(&u, "sh"), None, "no home, no XDG_CACHE_HOME: no list");
    }
}

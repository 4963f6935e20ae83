//! Preparing a container in the calling process, pipe-free: given a `RunSpec` whose user
//! namespace is already in place (created by the caller, or joined from a holder with
//! [`join_holder`]), make a private mount namespace, the staging tmpfs, the image mount,
//! the writable layer, the user files, the standard mounts and pivot_root, and return
//! what to exec (`Prepared`). No pipes, no printing, no signal mask or other
//! process-global change beyond this process's own namespaces and working directory: the
//! CLI's forked child calls it and then `process::exec`; the Slurm plugin's task_init
//! calls it after `join_holder` and then `process::finish`.
//!
//! All per-container mounts live on a tmpfs mounted in the private mount namespace over
//! the (always empty) `RUNDIR/mnt`, so nothing is ever left on the host file system.

use super::idmap::Identity;
use super::overlay::{Backend, Choice};
use super::probe::OverlayProbe;
use super::process::ExecSpec;
use super::resolve::{self, Kind};
use super::spec::{HookBundle, OverlayChoice, RunSpec, Writable};
use super::{caps, identity, prefetch, readonly, rootfs, squashfuse, sys, userdb};
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// `PATH` inside when neither the image nor the caller sets one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A set-up failure: the exit code to use (125: not started; 126/127: exec) and one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}")]
pub struct SetupError {
    pub code: i32,
    pub msg: String,
}

impl SetupError {
    /// A "could not start" (125) error.
    pub fn new(msg: impl Into<String>) -> SetupError {
        SetupError {
            code: 125,
            msg: msg.into(),
        }
    }
}

fn err<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> SetupError + '_ {
    move |e| SetupError::new(format!("{what}: {e:#}"))
}

fn os_err(what: &str) -> SetupError {
    err(what)(std::io::Error::last_os_error())
}

/// What the set-up observed, for the front end to report: step times, notices, and the
/// native overlay attempt (kept even when a later step fails).
#[derive(Debug, Default, Clone)]
pub struct Log {
    /// (step, CLOCK_MONOTONIC ns when it finished).
    pub times: Vec<(&'static str, u64)>,
    pub notices: Vec<String>,
    /// Outcome of a native overlay attempt to record in the per-boot cache.
    pub probe: Option<OverlayProbe>,
}

impl Log {
    /// Mark the end of a step.
    pub fn mark(&mut self, step: &'static str) {
        self.times.push((step, sys::monotonic_ns()));
    }
}

/// Create this process's user namespace (its maps are written next, by the caller).
pub fn new_user_namespace() -> Result<(), SetupError> {
    // SAFETY: unshare on the calling process.
    if unsafe { libc::unshare(libc::CLONE_NEWUSER) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(SetupError::new(format!("create a user namespace: {e} (are unprivileged user namespaces disabled? see warren doctor)")));
    }
    Ok(())
}

/// Join a holder's user and mount namespaces through its pidfd (one setns for both).
pub fn join_holder(pidfd: &OwnedFd) -> Result<(), SetupError> {
    // SAFETY: pidfd is a pidfd of the holder; setns with a pidfd joins several at once.
    if unsafe { libc::setns(pidfd.as_raw_fd(), libc::CLONE_NEWUSER | libc::CLONE_NEWNS) } != 0 {
        return Err(os_err("join the holder's namespaces"));
    }
    Ok(())
}

/// The staging tmpfs and (unless joining) the image, in a new private mount namespace.
pub struct Staged {
    /// The staging tmpfs (also this process's working directory).
    pub base: PathBuf,
    /// Where the image is mounted.
    pub lower: PathBuf,
    /// PID of this process's squashfuse daemon (0 when joining a holder's image).
    pub daemon: i32,
    /// The daemon is warren's image server recording the image's prefetch list.
    pub recording: bool,
}

/// The container's staging directory: a private tmpfs in its mount namespace (the
/// writable layer, user files; the bundle of its createContainer hooks).
pub fn staging_dir(spec: &RunSpec) -> PathBuf {
    let stage = spec.rundir.join("mnt");
    if spec.join.is_some() {
        stage.join("j")
    } else {
        stage
    }
}

/// Called with the container's root just before pivot_root, in the container's user and
/// mount namespaces: where createContainer hooks run (the OCI runtime spec's order).
pub type BeforePivot<'a> = &'a mut dyn FnMut(&Path, &mut Log) -> Result<(), SetupError>;

/// Step 1 of set-up, all a holder needs: private mount namespace, staging tmpfs, image.
pub fn stage(spec: &RunSpec, log: &mut Log) -> Result<Staged, SetupError> {
    // SAFETY: unshare on the calling process.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(os_err("new mount namespace"));
    }
    let stage = spec.rundir.join("mnt");
    let base = staging_dir(spec);
    let lower = stage.join("l");
    let tmpfs_opts = format!("mode=0700,size={}", spec.tmpfs_size);
    sys::mount(
        "tmpfs",
        &base,
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        Some(&tmpfs_opts),
    )
    .map_err(err("mount the staging tmpfs"))?;
    std::env::set_current_dir(&base).map_err(err("enter the staging tmpfs"))?;
    for d in ["u", "w", "r", "j", "etc"] {
        std::fs::create_dir(d).map_err(err("staging directory"))?;
    }
    let mut daemon = 0;
    let mut recording = false;
    if spec.join.is_none() {
        std::fs::create_dir(&lower).map_err(err("staging directory"))?;
        if spec.squashfs.is_dir() {
            // An OCI bundle's root file system directory: a read-only bind is the lower.
            bind_lower(&spec.squashfs, &lower).map_err(err("bind the root file system"))?;
            log.mark("bind");
        } else {
            let served = squashfuse::mount(
                &spec.squashfuse,
                &spec.squashfuse_configured,
                &spec.squashfs,
                &lower,
                spec.builtin_server,
                record_target(spec),
            )
            .map_err(|e| SetupError::new(format!("{e:#}")))?;
            (daemon, recording) = (served.pid, served.recording);
            log.mark("squashfuse");
        }
    }
    Ok(Staged {
        base,
        lower,
        daemon,
        recording,
    })
}

/// Where warren's image server is to record the image's prefetch list: only when the
/// user has none for it yet, or only one older than a week (a replayed mount would
/// record its own replay: the stale list is removed, so that this mount does not read
/// it). Best effort: no place for it, no list.
fn record_target(spec: &RunSpec) -> Option<super::sqfs_record::Target> {
    use std::os::unix::fs::DirBuilderExt;
    let path = spec
        .prefetch_list
        .as_ref()
        .filter(|_| spec.builtin_server)?;
    match path.symlink_metadata() {
        Ok(md) if !super::prefetch_list::stale(&md) => return None,
        Ok(_) => {
            let _ = std::fs::remove_file(path);
        }
        Err(_) => {}
    }
    let (dir, name) = (path.parent()?, path.file_name()?.to_str()?);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .ok()?;
    let fd = nix::fcntl::open(
        dir,
        nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ok()?;
    Some(super::sqfs_record::Target {
        dir: super::fuse::above_stdio(fd).ok()?,
        name: name.to_string(),
    })
}

/// The image's prefetch list read ahead beside the set-up and the command
/// (`prefetch_replay`); its reader's PID when one started. A list that does not parse is
/// removed (it is a cache: the next fresh mount makes it again), with a notice.
fn replay_list(spec: &RunSpec, image: &OwnedFd, log: &mut Log) -> Option<i32> {
    let path = spec.prefetch_list.as_ref()?;
    match super::prefetch_list::load(path) {
        Ok(Some(list)) => {
            // One reader of a list per node at a time: the tasks of a Slurm step, or
            // containers joining one cold mount at once, would each read it all again.
            let lock = replay_lock(spec, path)?;
            let started = super::prefetch_replay::start(image, list, Some(&lock));
            if started.is_some() {
                log.mark("replay");
            }
            started
        }
        Ok(None) => None,
        Err(e) => {
            let _ = std::fs::remove_file(path);
            log.notices.push(format!(
                "prefetch list {e}: removed (the next first start makes it again)"
            ));
            None
        }
    }
}

/// The node-local lock of the prefetch list `path` (`RUNDIR/prefetch/NAME.lock`, taken
/// without waiting): None when another container is reading that list ahead. The
/// runtime directory is the node's own (a lock on the list itself, in a shared home,
/// would exclude the other nodes); with no lock file to be had, the list is read.
fn replay_lock(spec: &RunSpec, path: &Path) -> Option<OwnedFd> {
    let name = path.file_name()?.to_str()?;
    let dir = spec.rundir.join("prefetch");
    let _ = std::fs::create_dir(&dir);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(format!("{name}.lock")));
    let Ok(file) = file else {
        // Nowhere to lock: read it all the same (a descriptor nobody else locks).
        return std::fs::File::open("/dev/null").ok().map(OwnedFd::from);
    };
    // Not nix's Flock: its drop unlocks, and the lock must stay with the reader child
    // (it shares this open file) after this process closes its descriptor.
    // SAFETY: flock on a descriptor we own.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    (r == 0).then(|| OwnedFd::from(file))
}

/// A holder's image mount is fresh: read its prefetch list ahead from now on (beside the
/// containers that join it at once: a Slurm step's tasks, a shared mount's first run,
/// which then leave the list to it). Best effort; the reader's PID, for the holder to
/// reap.
pub fn read_list_ahead(spec: &RunSpec, staged: &Staged) -> Option<i32> {
    let image = readonly::open_dir(&staged.lower).ok()?;
    replay_list(spec, &image, &mut Log::default())
}

/// A holder's last step before it is ready: its image answers (the first FUSE request
/// waits for the daemon to serve). A daemon that died is named, as in [`prepare_root`].
pub fn check_image(spec: &RunSpec, staged: &Staged) -> Result<(), SetupError> {
    let r = std::fs::metadata(&staged.lower).map_err(err("the image root"));
    r.map(|_| ()).map_err(|e| {
        let why = image_daemon_death(spec, staged.daemon, &e.msg);
        why.map_or(e.clone(), |w| {
            SetupError::new(format!("{w} (then: {})", e.msg))
        })
    })
}

/// Why the image's server `pid` is gone, if it is: warren's own, or squashfuse.
fn image_daemon_death(spec: &RunSpec, pid: i32, failure: &str) -> Option<String> {
    if spec.builtin_server {
        super::fuse::daemon_death(pid, "warren's image server", None, failure)
    } else {
        let prog = Some(spec.squashfuse_configured.as_path());
        super::fuse::daemon_death(pid, "squashfuse", prog, failure)
    }
}

/// Bind the directory `dir` read-only (recursively) onto `lower`.
fn bind_lower(dir: &Path, lower: &Path) -> std::io::Result<()> {
    let tree = sys::open_tree_clone(dir, true)?;
    sys::mount_setattr(
        &tree,
        sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV,
        true,
    )?;
    let target = std::fs::File::open(lower)?;
    sys::move_mount(&tree, &OwnedFd::from(target))
}

/// A prepared container: what to exec, and the files being prefetched (kept open until
/// exec: closing a FUSE file costs a round trip).
pub struct Prepared {
    pub exec: ExecSpec,
    pub prefetch: Vec<OwnedFd>,
    /// PID of this container's own image server when it records the image's prefetch
    /// list: at the command's end the front end asks it to write the list
    /// (`sqfs_record::write_signal`) before it ends what is left.
    pub recorder: Option<i32>,
}

/// The whole set-up: [`stage`], then the root. `parent` is the PID whose death must kill
/// the container (the CLI's warren), if any.
pub fn prepare(
    spec: &RunSpec,
    choice: Choice,
    parent: Option<i32>,
    log: &mut Log,
    before_pivot: BeforePivot,
) -> Result<Prepared, SetupError> {
    let staged = stage(spec, log)?;
    prepare_root(spec, &staged, choice, parent, log, before_pivot)
}

/// Step 2: writable layer, user files, mounts, pivot_root; returns what to exec. A
/// failure caused by a FUSE daemon that died (a misconfigured `run.squashfuse` or
/// `run.fuse_overlayfs`) is reported as such.
pub fn prepare_root(
    spec: &RunSpec,
    staged: &Staged,
    choice: Choice,
    parent: Option<i32>,
    log: &mut Log,
    before_pivot: BeforePivot,
) -> Result<Prepared, SetupError> {
    let mut overlay_daemon = None;
    let inner = prepare_root_inner(
        spec,
        staged,
        choice,
        parent,
        log,
        &mut overlay_daemon,
        before_pivot,
    );
    inner.map_err(|e| {
        let why = image_daemon_death(spec, staged.daemon, &e.msg).or_else(|| {
            super::fuse::daemon_death(
                overlay_daemon.unwrap_or(0),
                "fuse-overlayfs",
                Some(&spec.fuse_overlayfs),
                &e.msg,
            )
        });
        match why {
            Some(why) => SetupError::new(format!("{why} (then: {})", e.msg)),
            None => e,
        }
    })
}

fn prepare_root_inner(
    spec: &RunSpec,
    staged: &Staged,
    choice: Choice,
    parent: Option<i32>,
    log: &mut Log,
    overlay_daemon: &mut Option<i32>,
    before_pivot: BeforePivot,
) -> Result<Prepared, SetupError> {
    let (base, lower) = (&staged.base, &staged.lower);
    let (upper, work) = match &spec.writable {
        Writable::Dir(d) => (d.join("upper"), d.join("work")),
        _ => (base.join("u"), base.join("w")),
    };
    let writable = spec.writable != Writable::ReadOnly;
    let ops = rootfs::plan(&rootfs::Plan {
        tty_gid: spec.map.maps_gid(5),
        root_mapped: spec.map.maps_uid(0) && spec.map.maps_gid(0),
        // Not with --contain: the host's /dev/pts holds every terminal of the user; the
        // inherited descriptors still work, the terminal only has no name inside.
        // SAFETY: isatty on the standard descriptors is a harmless query.
        host_pts: !spec.contain && (0..3).any(|fd| unsafe { libc::isatty(fd) } == 1),
        tmp_size: &spec.tmpfs_size,
        home: spec.home.as_deref(),
        binds: &spec.binds,
        etc_dir: Path::new("/etc"),
        private_ipc: spec.contain,
    });
    let image = readonly::open_dir(lower).map_err(err("open the image root"))?;
    // Host MPI injection: the image's own MPI, seen before anything hides it.
    if let Some(check) = &spec.mpi {
        if let Some(n) = super::mpi_inject::check_image(&image, check)
            .map_err(|e| SetupError::new(e.to_string()))?
        {
            log.notices.push(n);
        }
    }
    let cwd = spec
        .workdir
        .clone()
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());
    // On a fresh image mount (nothing cached), resolving the command and its libraries
    // takes a round trip per name and a decompressed block per header: it runs beside
    // the set-up below, through the image itself, whose page cache kernel overlay reads
    // and fuse-overlayfs copies from (a first Debian `true`: ~3 ms that the passwd,
    // overlay and mount steps now cover).
    // On a warm (held) mount it is ~0.1 ms, and a bundle's root directory is no image
    // mount: done in line below.
    let fresh = (spec.join.is_none() || spec.fresh_holder)
        && !matches!(spec.writable, Writable::Mounted(_));
    let cap = if spec.builtin_server {
        prefetch::MAX_BYTES_BESIDE
    } else {
        prefetch::MAX_BYTES
    };
    let background = prefetch_target(spec, &cwd, cap)
        .filter(|_| fresh)
        .and_then(|t| prefetch::Background::start(&image, &t));
    // A fresh shared mount's list is read by its holder from the mount on
    // (`read_list_ahead`); a private one's here.
    if fresh && spec.join.is_none() {
        replay_list(spec, &image, log);
    }
    // Users (keep-id): the passwd/group files, cached per image and user; with a fresh
    // upper layer and a full range, written into it before the overlay exists.
    let mut passwd_done = false;
    let user_files = if spec.identity == Identity::KeepId {
        let home_s = spec.user.home.to_string_lossy();
        let f = userdb::files(
            &spec.rundir,
            &spec.digest,
            &image,
            &keep_id_user(spec, &home_s),
        )
        .map_err(err("the container's /etc/passwd"))?;
        if spec.writable == Writable::Tmpfs && !spec.map.single {
            passwd_done = userdb::prewrite_upper(&image, &upper, &f)
                .map_err(err("write /etc/passwd into the writable layer"))?;
        }
        Some(f)
    } else {
        None
    };
    // With the full range, write them through the writable layer (so useradd works);
    // else (read-only, or unmapped owners of /etc) bind copies from the staging tmpfs.
    let bind_passwd = user_files.is_some() && !passwd_done && (!writable || spec.map.single);
    log.mark("passwd");

    // Mount points the image lacks come from a skeleton stacked on top of it: no copy-up
    // of the image's directories (impossible for unmapped owners in the single-ID mode).
    let passwd_targets = [
        (Path::new("/etc/passwd"), Kind::File),
        (Path::new("/etc/group"), Kind::File),
    ];
    let wanted = super::skeleton::wanted(
        ops.iter()
            .filter_map(|op| match op {
                rootfs::Op::Bind { dst, kind, .. } => Some((dst.as_path(), *kind)),
                rootfs::Op::Fs { dst, .. } => Some((dst.as_path(), Kind::Dir)),
                rootfs::Op::Symlink { .. } => None,
            })
            .chain(passwd_targets.into_iter().filter(|_| bind_passwd)),
    );
    let skel = base.join("k");
    let skel_made =
        std::fs::create_dir(&skel).is_ok() && super::skeleton::build(&image, &skel, &wanted);
    let layers: Vec<&Path> = if skel_made {
        vec![&skel, lower]
    } else {
        vec![lower]
    };
    // Its time counts in the next step ("overlay"; the read-only root's in "prefetch").

    let root_dir = match &spec.writable {
        Writable::Mounted(root) => root.clone(),
        Writable::ReadOnly => {
            let (r, pid) = readonly::root(&layers, base, choice.backend, &spec.fuse_overlayfs)
                .map_err(|e| SetupError::new(format!("{e:#}")))?;
            *overlay_daemon = pid;
            r
        }
        _ => {
            readonly::copy_root_attrs(lower, &upper);
            let merged = base.join("r");
            let native = if choice.backend == Backend::Native {
                let r = super::overlay::mount_native(&layers, &upper, &work, &merged);
                if choice.report_probe && spec.writable == Writable::Tmpfs {
                    log.probe = Some(match &r {
                        Ok(()) => OverlayProbe::Native,
                        Err(e) => OverlayProbe::Unsupported(e.to_string()),
                    });
                }
                match r {
                    Ok(()) => true,
                    Err(e) if spec.overlay == OverlayChoice::Native => {
                        return Err(SetupError::new(format!(
                            "kernel overlay (run.overlay = native): {e}"
                        )))
                    }
                    Err(_) => false,
                }
            } else {
                false
            };
            if !native {
                *overlay_daemon = Some(
                    super::overlay::mount_fuse(
                        &spec.fuse_overlayfs,
                        &layers,
                        Some((&upper, &work)),
                        &merged,
                    )
                    .map_err(|e| SetupError::new(format!("{e:#}")))?,
                );
            }
            log.mark("overlay");
            merged
        }
    };
    if spec.join.is_none() || overlay_daemon.is_some() {
        // The FUSE daemons stay in this mount namespace; the container moves to a copy.
        // pivot_root changes the root of every process of its namespace whose root is the
        // old one: a daemon rooted in its own file system deadlocks on its first path
        // lookup (fuse-overlayfs resolves /proc/self/fd/N). A joined container's image
        // daemon is the holder's, in the holder's namespace: only its own fuse-overlayfs
        // needs this.
        // SAFETY: unshare on the calling process.
        if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
            return Err(os_err("new mount namespace"));
        }
    }
    if spec.contain {
        super::pidns::private_ipc().map_err(err("--contain"))?;
    }
    // Start reading the command's executable now (unless the background prefetch does);
    // the mounts below take as long. Under fuse-overlayfs, first from the image itself,
    // while fuse-overlayfs starts: the image server decompresses the blocks in parallel
    // into the image mount's page cache; then through fuse-overlayfs, whose page cache is
    // its own, which now copies them from there (not one block at a time through two
    // FUSE hops when the command faults them in: busybox's `true` ran 3 ms instead of
    // 0.4). That second pass stays in line: fuse-overlayfs serves one request at a time,
    // so beside the mounts (which wait for it too) it measured no better.
    let mut prefetched = Vec::new();
    let beside = background.is_some();
    if overlay_daemon.is_some() && !beside {
        prefetched = prefetch_command(spec, &image, &cwd);
    }
    let root = readonly::open_dir(&root_dir).map_err(err("open the container root"))?;
    // The prefetch list on a held mount whose caches were dropped since it was made
    // warm (memory pressure on a long-idle mount, `drop_caches`): the command's first
    // page is not cached, and the start would pay a fresh mount's round trips. Asked
    // through the kernel overlay (which maps the image's own pages; the image mount
    // itself does not answer for files the set-up may not write), not through a
    // container's own fuse-overlayfs, whose cache is always new.
    // The command is resolved once, for that check and for its own prefetch.
    let may_be_dropped = !fresh
        && overlay_daemon.is_none()
        && spec.prefetch_list.is_some()
        && !matches!(spec.writable, Writable::Mounted(_));
    let in_line = overlay_daemon.is_some() || !beside;
    let target = prefetch_target(spec, &cwd, prefetch::MAX_BYTES);
    let exe = target
        .filter(|_| may_be_dropped || in_line)
        .and_then(|t| prefetch::executable(&root, t.argv0, t.path, t.cwd));
    // The list begins with what the command's own prefetch would read: that one is left
    // out (its reads would queue behind the list's).
    let replayed = may_be_dropped
        && exe.as_ref().is_some_and(prefetch::known_cold)
        && replay_list(spec, &image, log).is_some();
    drop(image);
    if let (true, false, Some(t), Some(exe)) = (in_line, replayed, target, exe) {
        prefetched.extend(prefetch::command_of(&root, exe, &t));
    }
    log.mark("prefetch");

    // Users, mounts.
    let image_passwd = if spec.identity == Identity::RemapRoot {
        resolve::read_in_root(&root, Path::new("/etc/passwd"))
            .map_err(err("read /etc/passwd in the image"))?
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    } else {
        String::new()
    };
    let (uid, gid, home) = identity::process_identity(spec, &image_passwd)?;
    let mut extra_binds: Vec<rootfs::Op> = Vec::new();
    if let (Some(f), false) = (&user_files, passwd_done) {
        if !bind_passwd {
            resolve::ensure_in_root(&root, Path::new("/etc"), Kind::Dir)
                .map_err(err("/etc in the container"))?;
            resolve::write_in_root(&root, Path::new("/etc/passwd"), f.passwd.as_bytes())
                .map_err(err("write /etc/passwd"))?;
            resolve::write_in_root(&root, Path::new("/etc/group"), f.group.as_bytes())
                .map_err(err("write /etc/group"))?;
        } else {
            std::fs::write("etc/passwd", &f.passwd).map_err(err("write passwd copy"))?;
            std::fs::write("etc/group", &f.group).map_err(err("write group copy"))?;
            for f in ["passwd", "group"] {
                extra_binds.push(rootfs::Op::Bind {
                    src: base.join("etc").join(f),
                    dst: PathBuf::from("/etc").join(f),
                    kind: Kind::File,
                    attrs: sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV | sys::MOUNT_ATTR_RDONLY,
                    optional: true,
                });
            }
        }
    }
    // Host libraries bound in (CDI, MPI, -v; those in injected directories): refused now if the image's glibc cannot load them.
    let libs: Vec<PathBuf> = spec
        .binds
        .iter()
        .filter(|b| !b.device && super::libguard::is_library_name(&b.source))
        .map(|b| b.source.clone())
        .chain(spec.guard_libs.iter().cloned())
        .collect();
    if !libs.is_empty() {
        super::libguard::check(&root, &libs).map_err(|e| SetupError::new(e.to_string()))?;
        log.mark("libguard");
    }
    let whole = |e: anyhow::Error| SetupError::new(format!("{e:#}"));
    let mut skipped = rootfs::apply(&root, &ops, writable).map_err(whole)?;
    skipped.extend(rootfs::apply(&root, &extra_binds, false).map_err(whole)?);
    if !skipped.is_empty() {
        log.notices.push(format!(
            "no mount point for {} in the image and none can be created: not mounted",
            skipped.join(", ")
        ));
    }
    if writable && cwd != "/" {
        // Podman creates a missing working directory; so do we (inside the root only).
        let _ = resolve::ensure_in_root(&root, Path::new(&cwd), Kind::Dir);
    }
    log.mark("mounts");
    if let Some(b) = background {
        b.wait();
        log.mark("prefetch wait");
    }

    // Process.
    let exec = exec_spec(spec, uid, gid, &home, cwd, parent)?;
    hook_bundle(spec, base, &root_dir).map_err(err("the createContainer hooks' bundle"))?;
    before_pivot(&root_dir, log)?;
    rootfs::pivot(&root).map_err(whole)?;
    drop(root);
    log.mark("pivot");
    Ok(Prepared {
        exec,
        prefetch: prefetched,
        recorder: (staged.recording && spec.join.is_none()).then_some(staged.daemon),
    })
}

/// Make the container's root findable through the hooks' bundle (`spec.hook_bundle`).
fn hook_bundle(spec: &RunSpec, base: &Path, root: &Path) -> std::io::Result<()> {
    match &spec.hook_bundle {
        HookBundle::None => Ok(()),
        HookBundle::Staging => {
            let config = serde_json::json!({
                "ociVersion": super::oci_state::OCI_VERSION,
                "root": {"path": root},
            });
            // The staging tmpfs is private to this mount namespace: nobody sees it half
            // written.
            std::fs::write(base.join("config.json"), config.to_string())
        }
        HookBundle::Root(path) => nix::mount::mount(
            Some(root),
            path,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND | nix::mount::MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(std::io::Error::from),
    }
}

/// The keep-id user's entry in the container's /etc/passwd (`home`: the spec's home as
/// text); also the key of its cache (`userdb::files`).
pub fn keep_id_user<'a>(spec: &'a RunSpec, home: &'a str) -> userdb::User<'a> {
    userdb::User {
        name: &spec.user.name,
        uid: spec.map.inside_uid,
        gid: spec.map.inside_gid,
        gecos: &spec.user.gecos,
        home,
        shell: &spec.user.shell,
    }
}

/// Warm the page cache with the command's executable and (unless it was skipped: too
/// big, or already cached by a warm holder) its loader and libraries.
fn prefetch_command(spec: &RunSpec, root: &OwnedFd, cwd: &str) -> Vec<OwnedFd> {
    prefetch_target(spec, cwd, prefetch::MAX_BYTES)
        .map(|t| prefetch::command(root, &t))
        .unwrap_or_default()
}

/// What the prefetch reads for `spec` (None: no command, as for a holder).
fn prefetch_target<'a>(
    spec: &'a RunSpec,
    cwd: &'a str,
    max_bytes: u64,
) -> Option<prefetch::Target<'a>> {
    spec.argv.first().map(|argv0| prefetch::Target {
        argv0,
        path: spec.env.get("PATH").unwrap_or(DEFAULT_PATH),
        cwd,
        max_bytes,
    })
}

/// The final environment and exec parameters.
fn exec_spec(
    spec: &RunSpec,
    uid: u32,
    gid: u32,
    home: &Path,
    cwd: String,
    parent: Option<i32>,
) -> Result<ExecSpec, SetupError> {
    let env = final_env(spec, home);
    let cstrings = |v: Vec<String>| -> Result<Vec<CString>, SetupError> {
        v.into_iter()
            .map(|s| {
                CString::new(s)
                    .map_err(|_| SetupError::new("argument or variable contains a NUL byte"))
            })
            .collect()
    };
    Ok(ExecSpec {
        argv: cstrings(spec.argv.clone())?,
        path: env.get("PATH").unwrap_or_default().to_string(),
        env: cstrings(env.to_strings())?,
        cwd: CString::new(cwd)
            .map_err(|_| SetupError::new("working directory contains a NUL byte"))?,
        uid,
        gid,
        fake_chown: spec.fake_chown,
        parent,
        last_cap: caps::last_cap(),
        caps: spec.caps,
    })
}

/// Pure: the spec's environment with HOME, PATH and (with a tty) TERM filled in.
pub fn final_env(spec: &RunSpec, home: &Path) -> super::env::Env {
    let mut env = spec.env.clone();
    if env.get("HOME").is_none() {
        env.set("HOME", &home.to_string_lossy());
    }
    if env.get("PATH").is_none() {
        env.set("PATH", DEFAULT_PATH);
    }
    if spec.tty && env.get("TERM").is_none() {
        env.set("TERM", "xterm");
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::idmap::Identity;

    fn spec(env: &[(&str, &str)], tty: bool) -> RunSpec {
        let mut spec = crate::runtime::spec::sample(Identity::KeepId);
        for (k, v) in env {
            spec.env.set(k, v);
        }
        spec.tty = tty;
        spec
    }

    #[test]
    fn final_env_fills_only_what_is_missing() {
        let e = final_env(&spec(&[], false), Path::new("/home/a"));
        assert_eq!(
            e.to_strings(),
            vec!["HOME=/home/a".to_string(), format!("PATH={DEFAULT_PATH}")]
        );
        let e = final_env(
            &spec(&[("PATH", "/bin"), ("HOME", "/h"), ("TERM", "vt100")], true),
            Path::new("/home/a"),
        );
        assert_eq!(e.to_strings(), vec!["PATH=/bin", "HOME=/h", "TERM=vt100"]);
        let e = final_env(&spec(&[], true), Path::new("/"));
        assert_eq!(e.get("TERM"), Some("xterm"));
    }

    #[test]
    fn one_reader_of_a_list_at_a_time() {
        let d = tempfile::tempdir().unwrap();
        let mut s = crate::runtime::spec::sample(Identity::KeepId);
        s.rundir = d.path().to_path_buf();
        let list = Path::new("/home/a/.cache/warren/prefetch/abc.python3");
        let first = replay_lock(&s, list).expect("free");
        assert!(replay_lock(&s, list).is_none(), "taken");
        let other = Path::new("/home/a/.cache/warren/prefetch/abc.find");
        assert!(
            replay_lock(&s, other).is_some(),
            "another list's is its own"
        );
        // The lock goes with the last descriptor of it (the reader child's).
        let child_copy = first.try_clone().unwrap();
        drop(first);
        assert!(replay_lock(&s, list).is_none(), "still held by the copy");
        drop(child_copy);
        assert!(replay_lock(&s, list).is_some());
    }

    #[test]
    fn errors_carry_their_exit_code() {
        let e = SetupError::new("x");
        assert_eq!((e.code, e.to_string()), (125, "x".to_string()));
    }
}

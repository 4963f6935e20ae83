//! Starting one container: fork, user namespace, image mount, writable layer, standard
//! mounts, pivot_root, exec — and in warren: the ID maps, the wait, the exit code and
//! the cleanup. The same sequence, stopped after the image mount, makes a namespace
//! holder (see `holder.rs`); a container that joins a holder skips the maps and the
//! image mount.
//!
//! Processes: warren (P, a child subreaper) forks the setup process C, which becomes the
//! container's first process by exec. FUSE daemons are children of C with
//! PR_SET_PDEATHSIG=SIGKILL; C has PR_SET_PDEATHSIG=SIGKILL on P. All per-container
//! mounts live on a tmpfs mounted in C's private mount namespace over the (always empty)
//! `RUNDIR/mnt`, so nothing is ever left on the host file system.

use super::idmap::{IdMap, Identity};
use super::mounts::Bind;
use super::overlay::Backend;
use super::probe::{self, OverlayProbe};
use super::process::{self, ExecSpec};
use super::resolve::{self, Kind};
use super::userns::{self, HostUser};
use super::{caps, passwd, prefetch, rootfs, squashfuse, state, sys, userdb};
use crate::config::RunConfig;
use anyhow::{bail, Context, Result};
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
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
    pub user: HostUser,
    pub rundir: PathBuf,
    pub tmpfs_size: String,
    pub squashfuse: PathBuf,
    pub fuse_overlayfs: PathBuf,
    pub fake_chown: bool,
    pub timing: bool,
    /// Do not print the set-up's notices.
    pub quiet: bool,
    pub tty: bool,
    pub name: Option<String>,
    pub mode: Mode,
    /// Holder to join (its record).
    pub join: Option<state::Record>,
}

/// `PATH` inside when neither the image nor the caller sets one.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Exit code when warren could not start the container (bad options, image, set-up).
pub const EXIT_NOT_STARTED: i32 = 125;

/// Helper paths from config, looked up in PATH.
pub fn helper(prog: &str, what: &str) -> Result<PathBuf> {
    crate::util::which(prog)
        .with_context(|| format!("{prog} not found in PATH (needed for {what})"))
}

/// Parent-side choice of backend from config and the per-boot probe cache: (backend,
/// whether the child should report a native attempt for caching).
fn backend(spec: &RunSpec) -> (Backend, bool) {
    match spec.overlay {
        OverlayChoice::Native => (Backend::Native, false),
        OverlayChoice::Fuse => (Backend::Fuse, false),
        OverlayChoice::Auto => match probe::cached(&spec.rundir) {
            Some(OverlayProbe::Native) => (Backend::Native, false),
            Some(OverlayProbe::Unsupported(_)) => (Backend::Fuse, false),
            None => (Backend::Native, true),
        },
    }
}

/// Messages from the setup process on the report pipe, one per line.
enum Report {
    Time(String, u64),
    Probe(OverlayProbe),
    Notice(String),
    Error(i32, String),
    Ready,
}

fn parse_reports(bytes: &[u8]) -> Vec<Report> {
    let text = String::from_utf8_lossy(bytes);
    let mut out = Vec::new();
    for line in text.lines() {
        let (tag, rest) = line.split_at(line.len().min(1));
        let rest = rest.trim_start();
        match tag {
            "T" => {
                if let Some((n, t)) = rest.split_once(' ') {
                    out.push(Report::Time(n.to_string(), t.parse().unwrap_or(0)));
                }
            }
            "P" => out.push(Report::Probe(if rest == "native" {
                OverlayProbe::Native
            } else {
                OverlayProbe::Unsupported(rest.to_string())
            })),
            "N" => out.push(Report::Notice(rest.to_string())),
            "E" => {
                let (code, msg) = rest.split_once(' ').unwrap_or(("125", rest));
                out.push(Report::Error(code.parse().unwrap_or(125), msg.to_string()));
            }
            "R" => out.push(Report::Ready),
            _ => {}
        }
    }
    out
}

/// Start the container (or holder) and, for a container, wait for it; returns the exit code.
pub fn run(cfg: &RunConfig, spec: &RunSpec, t_start: u64) -> Result<i32> {
    let stage = spec.rundir.join("mnt");
    let s = stage.to_string_lossy();
    if s.contains([',', ':', '\\']) {
        bail!("runtime dir {s} contains ',', ':' or '\\', which overlay options cannot carry; set run.runtime_dir");
    }
    let (backend, report_probe) = backend(spec);
    if let Writable::Dir(d) = &spec.writable {
        for sub in ["upper", "work"] {
            std::fs::create_dir_all(d.join(sub))
                .with_context(|| format!("--writable-dir {}", d.display()))?;
        }
    }
    let join_fd = match &spec.join {
        Some(h) => Some(
            sys::pidfd_open(h.pid).with_context(|| format!("holder {} (pid {})", h.id, h.pid))?,
        ),
        None => None,
    };
    let record = match spec.mode {
        Mode::Container => Some(state::register(
            &spec.rundir,
            &state::Record {
                id: state::new_id(),
                name: spec.name.clone(),
                pid: std::process::id() as i32,
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
            },
        )?),
        Mode::Holder => None,
    };
    let res = run_registered(cfg, spec, backend, report_probe, join_fd, t_start);
    if let Some(r) = record {
        r.remove();
    }
    res
}

/// "keep-id" or "remap-root".
pub fn identity_name(i: Identity) -> &'static str {
    match i {
        Identity::KeepId => "keep-id",
        Identity::RemapRoot => "remap-root",
    }
}

fn run_registered(
    cfg: &RunConfig,
    spec: &RunSpec,
    backend: Backend,
    report_probe: bool,
    join_fd: Option<OwnedFd>,
    t_start: u64,
) -> Result<i32> {
    let (sync_r, sync_w) = sys::pipe()?;
    let (go_r, go_w) = sys::pipe()?;
    let (rep_r, rep_w) = sys::pipe()?;
    let use_helpers = !spec.map.single && spec.join.is_none();
    let tty_fg = spec.mode == Mode::Container && is_foreground_tty();
    // SAFETY: prctl with integer arguments (orphaned descendants come back to us).
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let old_mask = process::block_signals();
    let me = std::process::id() as i32;
    let t_fork = sys::monotonic_ns();
    // SAFETY: warren is single-threaded at this point; the child runs `child` and never
    // returns into the caller's stack frames.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        process::restore_signals(&old_mask);
        bail!("fork: {}", std::io::Error::last_os_error());
    }
    if pid == 0 {
        drop((sync_r, go_w, rep_r));
        process::restore_signals(&old_mask);
        let rep = rep_w.as_raw_fd();
        let code = match child(
            spec,
            backend,
            report_probe,
            join_fd.as_ref(),
            me,
            tty_fg,
            &sync_w,
            &go_r,
            rep,
        ) {
            Ok(never) => match never {},
            Err((code, msg)) => {
                let _ = sys::write_all(rep, format!("E{code} {msg}\n").as_bytes());
                code
            }
        };
        // SAFETY: leave the forked child without unwinding into warren's frames.
        unsafe { libc::_exit(code) };
    }
    drop((sync_w, go_r, rep_w, join_fd));
    if tty_fg {
        // SAFETY: put the child in its own foreground process group so terminal signals
        // reach only the container; SIGTTOU is ignored while warren does so.
        unsafe {
            libc::setpgid(pid, pid);
            libc::signal(libc::SIGTTOU, libc::SIG_IGN);
            libc::tcsetpgrp(0, pid);
        }
    }
    let result = parent(
        cfg,
        spec,
        pid,
        use_helpers,
        &sync_r,
        &go_w,
        &rep_r,
        t_start,
        t_fork,
    );
    if tty_fg {
        // SAFETY: take the terminal back.
        unsafe { libc::tcsetpgrp(0, libc::getpgrp()) };
    }
    process::restore_signals(&old_mask);
    result
}

fn is_foreground_tty() -> bool {
    // SAFETY: isatty/tcgetpgrp/getpgrp on fd 0 are harmless queries.
    unsafe { libc::isatty(0) == 1 && libc::tcgetpgrp(0) == libc::getpgrp() }
}

#[allow(clippy::too_many_arguments)]
fn parent(
    cfg: &RunConfig,
    spec: &RunSpec,
    pid: i32,
    use_helpers: bool,
    sync_r: &OwnedFd,
    go_w: &OwnedFd,
    rep_r: &OwnedFd,
    t_start: u64,
    t_fork: u64,
) -> Result<i32> {
    let kill_and_reap = || {
        // SAFETY: pid is our child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        process::reap_descendants();
    };
    let mut t_map = 0;
    if use_helpers {
        match sys::read_byte(sync_r.as_raw_fd())? {
            Some(_) => {}
            None => {
                let bytes = sys::read_to_end(rep_r.as_raw_fd()).unwrap_or_default();
                kill_and_reap();
                return finish_error(parse_reports(&bytes));
            }
        }
        let t = sys::monotonic_ns();
        if let Err(e) = userns::write_with_helpers(cfg, pid, &spec.map) {
            kill_and_reap();
            return Err(e.context("write the user namespace's ID maps"));
        }
        t_map = sys::monotonic_ns() - t;
        sys::write_all(go_w.as_raw_fd(), b"g")?;
    }
    let bytes = sys::read_to_end(rep_r.as_raw_fd())?;
    let t_exec = sys::monotonic_ns();
    let reports = parse_reports(&bytes);
    for r in &reports {
        match r {
            Report::Probe(p) => probe::record(&spec.rundir, p),
            Report::Notice(n) if !spec.quiet => eprintln!("warren: {n}"),
            _ => {}
        }
    }
    if reports.iter().any(|r| matches!(r, Report::Error(..))) {
        kill_and_reap();
        return finish_error(reports);
    }
    if spec.mode == Mode::Holder {
        if reports.iter().any(|r| matches!(r, Report::Ready)) {
            return Ok(0);
        }
        kill_and_reap();
        bail!("holder exited during set-up");
    }
    if spec.timing {
        print_timing(&reports, t_start, t_fork, t_map, t_exec);
    }
    let code = process::wait_forwarding(pid);
    process::reap_descendants();
    Ok(code)
}

fn finish_error(reports: Vec<Report>) -> Result<i32> {
    for r in reports {
        if let Report::Error(code, msg) = r {
            eprintln!("warren: {msg}");
            return Ok(code);
        }
    }
    bail!("container set-up process died without a report")
}

fn print_timing(reports: &[Report], t_start: u64, t_fork: u64, t_map: u64, t_exec: u64) {
    let ms = |ns: u64| ns as f64 / 1e6;
    let mut line = format!(
        "warren timing: prepare {:.2} ms",
        ms(t_fork.saturating_sub(t_start))
    );
    let mut prev = t_fork;
    for r in reports {
        if let Report::Time(name, t) = r {
            line.push_str(&format!(", {name} {:.2} ms", ms(t.saturating_sub(prev))));
            prev = *t;
        }
    }
    line.push_str(&format!(
        " (of which newuidmap+newgidmap {:.2} ms), exec {:.2} ms, total {:.2} ms",
        ms(t_map),
        ms(t_exec.saturating_sub(prev)),
        ms(t_exec.saturating_sub(t_start))
    ));
    eprintln!("{line}");
}

type ChildErr = (i32, String);

fn err<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> ChildErr + '_ {
    move |e| (125, format!("{what}: {e:#}"))
}

/// The setup process. Returns only on error (exit code, message).
#[allow(clippy::too_many_arguments)]
fn child(
    spec: &RunSpec,
    backend: Backend,
    report_probe: bool,
    join_fd: Option<&OwnedFd>,
    parent: i32,
    tty_fg: bool,
    sync_w: &OwnedFd,
    go_r: &OwnedFd,
    rep: RawFd,
) -> Result<std::convert::Infallible, ChildErr> {
    let mut times: Vec<(&str, u64)> = vec![("fork", sys::monotonic_ns())];
    let holder = spec.mode == Mode::Holder;
    if !holder {
        sys::die_with_parent(libc::SIGKILL, parent).map_err(err("set parent-death signal"))?;
    }
    if tty_fg {
        // SAFETY: join our own new process group (the parent does the same; either wins).
        unsafe { libc::setpgid(0, 0) };
    }
    // 1. Namespaces and ID maps.
    if let Some(fd) = join_fd {
        // SAFETY: fd is a pidfd of the holder; setns with a pidfd joins several at once.
        if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWUSER | libc::CLONE_NEWNS) } != 0 {
            return Err(err("join the holder's namespaces")(
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: unshare on the calling process.
        if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
            return Err(err("new mount namespace")(std::io::Error::last_os_error()));
        }
        times.push(("join", sys::monotonic_ns()));
    } else {
        // SAFETY: unshare on the calling process.
        if unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err((125, format!("create a user namespace: {e} (are unprivileged user namespaces disabled? see warren doctor)")));
        }
        if spec.map.single {
            userns::write_self(&spec.map).map_err(err("write the single-ID map"))?;
        } else {
            sys::write_all(sync_w.as_raw_fd(), b"u").map_err(err("sync with warren"))?;
            match sys::read_byte(go_r.as_raw_fd()) {
                Ok(Some(_)) => {}
                _ => return Err((125, "warren did not write the ID maps".into())),
            }
        }
        times.push(("userns", sys::monotonic_ns()));
    }

    // 2. Staging tmpfs and the image.
    let stage = spec.rundir.join("mnt");
    let base = if spec.join.is_some() {
        stage.join("j")
    } else {
        stage.clone()
    };
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
    if spec.join.is_none() {
        std::fs::create_dir(&lower).map_err(err("staging directory"))?;
        daemon = squashfuse::mount(&spec.squashfuse, &spec.squashfs, &lower)
            .map_err(|e| (125, format!("{e:#}")))?;
        times.push(("squashfuse", sys::monotonic_ns()));
    }
    if holder {
        return holder_wait(spec, rep, daemon);
    }

    // 3. Writable layer.
    let (upper, work) = match &spec.writable {
        Writable::Dir(d) => (d.join("upper"), d.join("work")),
        _ => (base.join("u"), base.join("w")),
    };
    let ops = rootfs::plan(&rootfs::Plan {
        tty_gid: spec.map.maps_gid(5),
        root_mapped: spec.map.maps_uid(0) && spec.map.maps_gid(0),
        // SAFETY: isatty on the standard descriptors is a harmless query.
        host_pts: (0..3).any(|fd| unsafe { libc::isatty(fd) } == 1),
        tmp_size: &spec.tmpfs_size,
        home: spec.home.as_deref(),
        binds: &spec.binds,
        etc_dir: Path::new("/etc"),
    });
    // Users (keep-id): the passwd/group files, cached per image and user; with a fresh
    // upper layer and a full range, written into it before the overlay exists.
    let mut passwd_done = false;
    let user_files = if spec.identity == Identity::KeepId {
        let image = userdb::open_root(&lower).map_err(err("open the image root"))?;
        let home_s = spec.user.home.to_string_lossy();
        let user = userdb::User {
            name: &spec.user.name,
            uid: spec.map.inside_uid,
            gid: spec.map.inside_gid,
            gecos: &spec.user.gecos,
            home: &home_s,
            shell: &spec.user.shell,
        };
        let f = userdb::files(&spec.rundir, &spec.digest, &image, &user)
            .map_err(err("the container's /etc/passwd"))?;
        if spec.writable == Writable::Tmpfs && !spec.map.single {
            passwd_done = userdb::prewrite_upper(&image, &upper, &f)
                .map_err(err("write /etc/passwd into the writable layer"))?;
        }
        Some(f)
    } else {
        None
    };
    times.push(("passwd", sys::monotonic_ns()));
    let root_dir = match spec.writable {
        Writable::ReadOnly => readonly_root(
            &lower,
            &base,
            &ops,
            spec.identity == Identity::KeepId,
            backend,
        ),
        _ => {
            copy_root_attrs(&lower, &upper);
            let merged = base.join("r");
            let native = if backend == Backend::Native {
                let r = super::overlay::mount_native(&lower, &upper, &work, &merged);
                if report_probe && spec.writable == Writable::Tmpfs {
                    let line = match &r {
                        Ok(()) => "Pnative\n".to_string(),
                        Err(e) => format!("P{e}\n"),
                    };
                    let _ = sys::write_all(rep, line.as_bytes());
                }
                match r {
                    Ok(()) => true,
                    Err(e) if spec.overlay == OverlayChoice::Native => {
                        return Err((125, format!("kernel overlay (run.overlay = native): {e}")))
                    }
                    Err(_) => false,
                }
            } else {
                false
            };
            if !native {
                super::overlay::mount_fuse(&spec.fuse_overlayfs, &lower, &upper, &work, &merged)
                    .map_err(|e| (125, format!("{e:#}")))?;
            }
            times.push(("overlay", sys::monotonic_ns()));
            merged
        }
    };
    if spec.join.is_none() {
        // The FUSE daemons stay in this mount namespace; the container moves to a copy.
        // pivot_root changes the root of every process of its namespace whose root is the
        // old one: a daemon rooted in its own file system deadlocks on its first path
        // lookup (fuse-overlayfs resolves /proc/self/fd/N).
        // SAFETY: unshare on the calling process.
        if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
            return Err(err("new mount namespace")(std::io::Error::last_os_error()));
        }
    }
    let writable = spec.writable != Writable::ReadOnly;
    let root = open_dir(&root_dir).map_err(err("open the container root"))?;
    let cwd = spec
        .workdir
        .clone()
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());
    // Start reading the command's executable now; the mounts below take as long.
    // Kept open until exec: closing a FUSE file costs a round trip.
    let _prefetch: Vec<OwnedFd> = spec
        .argv
        .first()
        .and_then(|a0| {
            let path = spec.env.get("PATH").unwrap_or(DEFAULT_PATH);
            prefetch::executable(&root, a0, path, &cwd)
        })
        .map(|exe| {
            let mut files = Vec::new();
            // Its loader and libraries too, unless it was skipped (too big: likely a
            // program that reads many other files anyway; or cached: a warm holder).
            if prefetch::start(&exe) {
                files = prefetch::dependencies(&root, &exe);
                for f in &files {
                    prefetch::start(f);
                }
            }
            files.push(exe);
            files
        })
        .unwrap_or_default();
    times.push(("prefetch", sys::monotonic_ns()));

    // 4. Users, mounts.
    let image_passwd = if spec.identity == Identity::RemapRoot {
        resolve::read_in_root(&root, Path::new("/etc/passwd"))
            .map_err(err("read /etc/passwd in the image"))?
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    } else {
        String::new()
    };
    let (uid, gid, home) = identity(spec, &image_passwd)?;
    let mut extra_binds: Vec<rootfs::Op> = Vec::new();
    if let (Some(f), false) = (&user_files, passwd_done) {
        // With the full range, write them into the writable layer (so useradd works);
        // else (read-only, or unmapped owners of /etc) bind copies from the staging tmpfs.
        if writable && !spec.map.single {
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
    let mut skipped = rootfs::apply(&root, &ops, writable).map_err(|e| (125, format!("{e:#}")))?;
    skipped.extend(rootfs::apply(&root, &extra_binds, false).map_err(|e| (125, format!("{e:#}")))?);
    if !skipped.is_empty() {
        let _ = sys::write_all(
            rep,
            format!(
                "Nno mount point for {} in the image and none can be created: not mounted\n",
                skipped.join(", ")
            )
            .as_bytes(),
        );
    }
    if writable && cwd != "/" {
        // Podman creates a missing working directory; so do we (inside the root only).
        let _ = resolve::ensure_in_root(&root, Path::new(&cwd), Kind::Dir);
    }
    times.push(("mounts", sys::monotonic_ns()));

    // 5. Process.
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
    let cstrings = |v: Vec<String>| -> Result<Vec<CString>, ChildErr> {
        v.into_iter()
            .map(|s| {
                CString::new(s)
                    .map_err(|_| (125, "argument or variable contains a NUL byte".to_string()))
            })
            .collect()
    };
    let exec_spec = ExecSpec {
        argv: cstrings(spec.argv.clone())?,
        path: env.get("PATH").unwrap_or_default().to_string(),
        env: cstrings(env.to_strings())?,
        cwd: CString::new(cwd)
            .map_err(|_| (125, "working directory contains a NUL byte".to_string()))?,
        uid,
        gid,
        fake_chown: spec.fake_chown,
        parent,
        last_cap: caps::last_cap(),
    };
    rootfs::pivot(&root).map_err(|e| (125, format!("{e:#}")))?;
    drop(root);
    times.push(("pivot", sys::monotonic_ns()));
    if spec.timing {
        let mut s = String::new();
        for (n, t) in &times {
            s.push_str(&format!("T{n} {t}\n"));
        }
        let _ = sys::write_all(rep, s.as_bytes());
    }
    let (code, msg) = process::exec(&exec_spec);
    Err((code, msg))
}

/// The read-only root: the image itself, or, when it lacks mount points the container
/// needs (images built FROM scratch have no /proc, /dev…), a read-only kernel overlay of
/// a small skeleton of those mount points over the image. A mount point under a symlink
/// of the image is left out (a skeleton directory would hide the link).
fn readonly_root(
    lower: &Path,
    base: &Path,
    ops: &[rootfs::Op],
    passwd: bool,
    backend: Backend,
) -> PathBuf {
    if backend != Backend::Native {
        return lower.to_path_buf();
    }
    let Ok(lroot) = open_dir(lower) else {
        return lower.to_path_buf();
    };
    let mut wanted: Vec<(PathBuf, Kind)> = ops
        .iter()
        .filter_map(|op| match op {
            rootfs::Op::Bind { dst, kind, .. } => Some((dst.clone(), *kind)),
            rootfs::Op::Fs { dst, .. } => Some((dst.clone(), Kind::Dir)),
            rootfs::Op::Symlink { .. } => None,
        })
        .collect();
    if passwd {
        wanted.push(("/etc/passwd".into(), Kind::File));
        wanted.push(("/etc/group".into(), Kind::File));
    }
    let skel = base.join("k");
    let mut any = false;
    for (dst, kind) in wanted {
        let s = dst.to_string_lossy();
        if s.starts_with("/dev/") || s.starts_with("/tmp/") {
            continue; // inside tmpfs instances of ours
        }
        match resolve::open_in_root(&lroot, &dst) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            _ => continue,
        }
        if !no_symlink_on_the_way(&lroot, &dst) {
            continue;
        }
        let rel = dst.strip_prefix("/").unwrap_or(&dst);
        let target = skel.join(rel);
        let made = match kind {
            Kind::Dir => std::fs::create_dir_all(&target),
            Kind::File => target
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|_| std::fs::File::create(&target).map(drop)),
        };
        any |= made.is_ok();
    }
    if !any {
        return lower.to_path_buf();
    }
    let merged = base.join("r");
    match super::overlay::mount_readonly(&[Path::new("k"), lower], &merged) {
        Ok(()) => merged,
        Err(_) => lower.to_path_buf(),
    }
}

/// True when no existing component of `dst`'s parents in the image is a symlink.
fn no_symlink_on_the_way(root: &OwnedFd, dst: &Path) -> bool {
    let mut prefix = PathBuf::new();
    let parent = dst.parent().unwrap_or(Path::new("/"));
    for c in parent.strip_prefix("/").unwrap_or(parent).components() {
        prefix.push(c);
        let Ok(cp) = sys::cpath(&prefix) else {
            return false;
        };
        match sys::openat2(
            root.as_raw_fd(),
            &cp,
            (libc::O_PATH | libc::O_CLOEXEC) as u64,
            0,
            libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_SYMLINKS,
        ) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return true,
            Err(_) => return false,
        }
    }
    true
}

/// Open a directory as an O_PATH fd.
fn open_dir(p: &Path) -> std::io::Result<OwnedFd> {
    let c = sys::cpath(p)?;
    sys::openat2(
        libc::AT_FDCWD,
        &c,
        (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64,
        0,
        0,
    )
}

/// The upper layer's root takes the image root's owner and mode, so `/` inside looks
/// like the image's (best effort: an unmapped owner is left as is).
fn copy_root_attrs(lower: &Path, upper: &Path) {
    use std::os::unix::fs::MetadataExt;
    if let Ok(md) = std::fs::metadata(lower) {
        let _ = std::os::unix::fs::chown(upper, Some(md.uid()), Some(md.gid()));
        use std::os::unix::fs::PermissionsExt;
        let _ =
            std::fs::set_permissions(upper, std::fs::Permissions::from_mode(md.mode() & 0o7777));
    }
}

/// The process's IDs inside and its home.
fn identity(spec: &RunSpec, image_passwd: &str) -> Result<(u32, u32, PathBuf), ChildErr> {
    match spec.identity {
        Identity::KeepId => Ok((
            spec.map.inside_uid,
            spec.map.inside_gid,
            spec.user.home.clone(),
        )),
        Identity::RemapRoot => {
            let Some(u) = spec.image_user.as_deref().filter(|u| !u.is_empty()) else {
                return Ok((
                    0,
                    0,
                    passwd::lookup_user(image_passwd, "0").map_or("/root".into(), |u| u.2.into()),
                ));
            };
            let (user, group) = match u.split_once(':') {
                Some((a, b)) => (a, Some(b)),
                None => (u, None),
            };
            let (uid, mut gid, home) = match passwd::lookup_user(image_passwd, user) {
                Some(x) => x,
                None => match user.parse::<u32>() {
                    Ok(n) => (n, n, "/".to_string()),
                    Err(_) => {
                        return Err((
                            125,
                            format!("image user {user:?} is not in the image's /etc/passwd"),
                        ))
                    }
                },
            };
            if let Some(g) = group {
                gid = g
                    .parse()
                    .map_err(|_| (125, format!("image group {g:?}: use a number")))?;
            }
            Ok((uid, gid, home.into()))
        }
    }
}

/// The holder's end of set-up: record itself, tell warren, detach, and wait for a
/// termination signal. Its FUSE daemon dies with it.
fn holder_wait(
    spec: &RunSpec,
    rep: RawFd,
    daemon: i32,
) -> Result<std::convert::Infallible, ChildErr> {
    let rec = state::Record {
        id: state::new_id(),
        name: spec.name.clone(),
        // SAFETY: getpid cannot fail.
        pid: unsafe { libc::getpid() },
        image: spec.image.clone(),
        digest: spec.digest.clone(),
        command: vec![],
        started: state::now(),
        kind: "holder".into(),
        identity: identity_name(spec.identity).into(),
        holder: None,
    };
    let reg = state::register(&spec.rundir, &rec).map_err(|e| (125, format!("{e:#}")))?;
    // SAFETY: plain process-state syscalls: no parent-death signal (the holder outlives
    // warren), own session, quiet stdio, signals we wait for blocked.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, 0, 0, 0, 0);
        libc::setsid();
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            libc::dup2(null, 0);
            libc::dup2(null, 1);
            libc::dup2(null, 2);
            libc::close(null);
        }
        libc::chdir(c"/".as_ptr());
    }
    let _ = sys::write_all(rep, b"R\n");
    // SAFETY: closing our end of the report pipe tells warren we are ready.
    unsafe { libc::close(rep) };
    // SAFETY: wait for SIGTERM/SIGINT/SIGHUP with them blocked, then exit.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let mut sig = 0;
        libc::sigwait(&set, &mut sig);
    }
    reg.remove();
    // Stop and reap the daemon ourselves: once we are gone nobody may reap it.
    // SAFETY: daemon is our child; then exit without running destructors.
    unsafe {
        libc::kill(daemon, libc::SIGKILL);
        libc::waitpid(daemon, std::ptr::null_mut(), 0);
        libc::_exit(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_parse() {
        let r = parse_reports(b"Tfork 10\nTuserns 25\nPnative\nPEINVAL: bad\nNhello there\nE127 exec x: not found\nR\ngarbage\n");
        assert!(matches!(&r[0], Report::Time(n, 10) if n == "fork"));
        assert!(matches!(&r[1], Report::Time(n, 25) if n == "userns"));
        assert!(matches!(&r[2], Report::Probe(OverlayProbe::Native)));
        assert!(matches!(&r[3], Report::Probe(OverlayProbe::Unsupported(w)) if w == "EINVAL: bad"));
        assert!(matches!(&r[4], Report::Notice(n) if n == "hello there"));
        assert!(matches!(&r[5], Report::Error(127, m) if m == "exec x: not found"));
        assert!(matches!(&r[6], Report::Ready));
        assert_eq!(r.len(), 7);
    }

    fn spec_with(identity: Identity, image_user: Option<&str>) -> RunSpec {
        RunSpec {
            squashfs: "/i".into(),
            image: "i".into(),
            digest: "d".into(),
            argv: vec![],
            env: Default::default(),
            workdir: None,
            image_user: image_user.map(String::from),
            identity,
            map: super::super::idmap::choose(
                identity,
                1001,
                1001,
                &[(100000, 65536)],
                &[(100000, 65536)],
            ),
            writable: Writable::Tmpfs,
            overlay: OverlayChoice::Auto,
            binds: vec![],
            home: None,
            user: HostUser {
                uid: 1001,
                gid: 1001,
                name: "a".into(),
                passwd_gid: Some(1001),
                home: "/home/a".into(),
                gecos: String::new(),
                shell: "/bin/sh".into(),
            },
            rundir: "/r".into(),
            tmpfs_size: "1m".into(),
            squashfuse: "s".into(),
            fuse_overlayfs: "f".into(),
            fake_chown: false,
            timing: false,
            quiet: false,
            tty: false,
            name: None,
            mode: Mode::Container,
            join: None,
        }
    }

    #[test]
    fn process_identity() {
        let pw = "root:x:0:0:root:/root:/bin/sh\napache:x:48:48::/var/www:/bin/false\n";
        let id = |i, u| identity(&spec_with(i, u), pw).unwrap();
        assert_eq!(
            id(Identity::KeepId, Some("apache")),
            (1001, 1001, "/home/a".into())
        );
        assert_eq!(id(Identity::RemapRoot, None), (0, 0, "/root".into()));
        assert_eq!(
            id(Identity::RemapRoot, Some("apache")),
            (48, 48, "/var/www".into())
        );
        assert_eq!(
            id(Identity::RemapRoot, Some("apache:7")),
            (48, 7, "/var/www".into())
        );
        assert_eq!(
            id(Identity::RemapRoot, Some("4242")),
            (4242, 4242, "/".into())
        );
        assert!(identity(&spec_with(Identity::RemapRoot, Some("nosuch")), pw).is_err());
    }
}

//! The node side of a job, run by slurmstepd (root) and the job epilog: where a job's
//! runtime state lives, pulling the image and starting/stopping the per-node holder as
//! the job's user by running the `warren` binary with the user's credentials and a clean
//! environment. Nothing here reads the process's own identity: the caller (`Job`) is
//! passed in, since in SPANK hooks the real uid is root.
//!
//! Layout (the test "nodes" share one file system, so everything is keyed by node name):
//! `RUNTIME/NODE/` (root, 0755) → `UID/` (the user, 0700) → `JOB/` (the user, 0700) →
//! one warren runtime dir per holder scope: `step.STEP/` (the step's holder, stopped at
//! step end) or `name.NAME/` (a named container, kept until the job ends). Each holds
//! warren's own records (`ctr/`), so `warren rm` finds the holder there. Root's own files
//! in `RUNTIME/NODE/`: `squashfs-config.json` (the empty image config of squashfs-file
//! images) and `.trash/` (trees being deleted; see `beneath.rs`).

use crate::plugstack::Config;
use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Slurm's pseudo step ids (slurm.h).
pub const SLURM_BATCH_SCRIPT: u32 = 0xffff_fffb;
pub const SLURM_EXTERN_CONT: u32 = 0xffff_fffc;
pub const SLURM_INTERACTIVE_STEP: u32 = 0xffff_fffa;

/// The job's user and where the job runs; filled from SPANK items, never from the
/// process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    pub user: String,
    pub home: PathBuf,
    pub job_id: u32,
    pub node: String,
}

/// Whose holder: one step's, or a named container's (for the whole job).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Step(u32),
    Named(String),
}

impl Scope {
    fn dir_name(&self) -> String {
        match self {
            Scope::Step(SLURM_BATCH_SCRIPT) => "step.batch".into(),
            Scope::Step(s) => format!("step.{s}"),
            Scope::Named(n) => format!("name.{n}"),
        }
    }
}

/// The holder's name inside its scope dir (one holder per dir).
pub const HOLDER_NAME: &str = "holder";

/// What failed on the node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("warren: {path}: {why}")]
    Dir { path: PathBuf, why: String },
    #[error("warren: node name {0:?} is not usable as a directory name")]
    NodeName(String),
    #[error("warren: no warren binary (set warren=PATH on the plugstack line)")]
    NoBinary,
    #[error("warren: {what} as {user}: {why}")]
    Spawn {
        what: String,
        user: String,
        why: String,
    },
    #[error("warren: {what} failed (exit {code}): {msg}")]
    Failed {
        what: String,
        code: i32,
        msg: String,
    },
}

fn dir_err(path: &Path, why: impl std::fmt::Display) -> NodeError {
    NodeError::Dir {
        path: path.to_path_buf(),
        why: why.to_string(),
    }
}

/// `RUNTIME/NODE/UID/JOB`.
pub fn job_dir(cfg: &Config, job: &Job) -> Result<PathBuf, NodeError> {
    let n = &job.node;
    if n.is_empty()
        || n.len() > 255
        || n.starts_with('.')
        || !n
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(NodeError::NodeName(n.clone()));
    }
    Ok(cfg
        .runtime_path
        .join(n)
        .join(job.uid.to_string())
        .join(job.job_id.to_string()))
}

/// The warren runtime dir of one holder scope.
pub fn scope_dir(cfg: &Config, job: &Job, scope: &Scope) -> Result<PathBuf, NodeError> {
    Ok(job_dir(cfg, job)?.join(scope.dir_name()))
}

/// Create `dir` (whose parents are root's) with `mode` owned by root, or check an
/// existing one is a real directory of root's.
fn ensure_root_dir(dir: &Path, mode: u32) -> Result<(), NodeError> {
    match fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => fs::set_permissions(dir, fs::Permissions::from_mode(mode))
            .map_err(|e| dir_err(dir, e))?,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(dir_err(dir, e)),
    }
    let md = fs::symlink_metadata(dir).map_err(|e| dir_err(dir, e))?;
    if !md.is_dir() || md.uid() != 0 || md.mode() & 0o022 != 0 {
        return Err(dir_err(
            dir,
            "not a directory of root's, unwritable by others; remove it",
        ));
    }
    Ok(())
}

/// Create the directories down to the job's: root's down to the node, then the user's
/// (made and chowned through descriptors, no symlink followed).
pub fn prepare_job_dir(cfg: &Config, job: &Job) -> Result<PathBuf, NodeError> {
    let jd = job_dir(cfg, job)?;
    let node_dir = cfg.runtime_path.join(&job.node);
    ensure_root_dir(&cfg.runtime_path, 0o755)?;
    ensure_root_dir(&node_dir, 0o755)?;
    let nfd = crate::beneath::open_dir(&cfg.runtime_path, &node_dir)
        .map_err(|e| dir_err(&node_dir, e))?;
    let ufd = crate::beneath::ensure_dir_at(&nfd, &job.uid.to_string(), 0o700, job.uid, job.gid)
        .map_err(|e| dir_err(&node_dir.join(job.uid.to_string()), e))?;
    crate::beneath::ensure_dir_at(&ufd, &job.job_id.to_string(), 0o700, job.uid, job.gid)
        .map_err(|e| dir_err(&jd, e))?;
    Ok(jd)
}

/// The image config of `--container-image=PATH` (a squashfs file has none).
pub const SQUASHFS_CONFIG: &str = "squashfs-config.json";

/// Where it is: in the node's directory, root's (users read it, cannot change it).
pub fn squashfs_config_path(cfg: &Config, job: &Job) -> PathBuf {
    cfg.runtime_path.join(&job.node).join(SQUASHFS_CONFIG)
}

/// Write the empty image config for squashfs-file images (temp name, then rename; in a
/// directory of root's).
pub fn write_squashfs_config(cfg: &Config, job: &Job) -> Result<PathBuf, NodeError> {
    let path = squashfs_config_path(cfg, job);
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    fs::write(&tmp, b"{\"config\":{}}\n").map_err(|e| dir_err(&tmp, e))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)).map_err(|e| dir_err(&tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| dir_err(&path, e))?;
    Ok(path)
}

/// The warren binary to run.
pub fn warren_binary(cfg: &Config) -> Result<PathBuf, NodeError> {
    if let Some(p) = &cfg.warren {
        return Ok(p.clone());
    }
    let default = Path::new("/usr/bin/warren");
    if default.is_file() {
        return Ok(default.into());
    }
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("warren"))
                .find(|f| f.is_file())
        })
        .ok_or(NodeError::NoBinary)
}

/// The clean environment warren runs with as the user: nothing of slurmstepd's.
pub fn user_env(cfg: &Config, job: &Job, rundir: &Path) -> Vec<(String, OsString)> {
    let mut env: Vec<(String, OsString)> = vec![
        ("HOME".into(), job.home.clone().into_os_string()),
        ("USER".into(), job.user.clone().into()),
        ("LOGNAME".into(), job.user.clone().into()),
        (
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ),
        ("WARREN_RUN_RUNTIME_DIR".into(), rundir.as_os_str().into()),
    ];
    let xdg = PathBuf::from(format!("/run/user/{}", job.uid));
    if fs::symlink_metadata(&xdg).is_ok_and(|m| m.is_dir() && m.uid() == job.uid) {
        env.push(("XDG_RUNTIME_DIR".into(), xdg.into_os_string()));
    }
    if let Some(s) = &cfg.store {
        env.push((
            "WARREN_STORE_PATH".into(),
            crate::plugstack::expand_store(s, &job.user, job.uid).into(),
        ));
    }
    if let Some(s) = &cfg.shared_store {
        env.push(("WARREN_STORE_SHARED".into(), s.into()));
    }
    env
}

/// Run `warren ARGS` as the job's user; on failure the error carries the last lines warren
/// wrote to stderr. The child's stdout/stderr pipe is drained while it runs and given up
/// once it has exited: a detached holder (and its FUSE daemon) may keep it open.
pub fn run_warren(
    cfg: &Config,
    job: &Job,
    rundir: &Path,
    what: &str,
    args: &[&str],
) -> Result<(), NodeError> {
    let bin = warren_binary(cfg)?;
    let mut cmd = Command::new(&bin);
    cmd.args(args)
        .env_clear()
        .envs(user_env(cfg, job, rundir))
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let (uid, gid) = (job.uid, job.gid);
    let groups: Vec<libc::gid_t> = job.groups.clone();
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe system calls on memory prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            // Descriptors slurmstepd left open must not leak into the user's processes.
            libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setresgid(gid, gid, gid) != 0
                || libc::setresuid(uid, uid, uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let spawn_err = |why: String| NodeError::Spawn {
        what: what.into(),
        user: job.user.clone(),
        why,
    };
    let mut child = cmd
        .spawn()
        .map_err(|e| spawn_err(format!("{}: {e}", bin.display())))?;
    let mut err_pipe = child.stderr.take();
    if let Some(p) = &err_pipe {
        use std::os::fd::AsRawFd;
        // SAFETY: p is an open pipe we own; O_NONBLOCK only changes how we read it.
        unsafe {
            let fd = p.as_raw_fd();
            let fl = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
    }
    let mut msg = Vec::new();
    let drain = |pipe: &mut Option<std::process::ChildStderr>, msg: &mut Vec<u8>| {
        let Some(p) = pipe else { return };
        let mut buf = [0u8; 4096];
        loop {
            match p.read(&mut buf) {
                Ok(0) => {
                    *pipe = None;
                    return;
                }
                Ok(n) => {
                    msg.extend_from_slice(&buf[..n]);
                    // Keep the tail: the last lines say what failed.
                    if msg.len() > 8192 {
                        msg.drain(..msg.len() - 8192);
                    }
                }
                Err(_) => return,
            }
        }
    };
    let status = loop {
        drain(&mut err_pipe, &mut msg);
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(spawn_err(format!("wait: {e}"))),
        }
    };
    drain(&mut err_pipe, &mut msg);
    if status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&msg);
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("(no message)");
    Err(NodeError::Failed {
        what: what.into(),
        code: status.code().unwrap_or(-1),
        msg: last.trim().to_string(),
    })
}

/// `--container-save`: the image with the task's writable layer `layer` (upper/work) on
/// top, written as a squashfs file to `target` (temp name, then renamed; an existing
/// directory there is refused). Runs as the user inside the holder of `dir` (its user and
/// mount namespaces: the image is mounted at `dir/mnt/l` there), in a mount namespace of
/// its own with the overlay, so the files keep the container's owners.
pub fn save_container(
    cfg: &Config,
    job: &Job,
    dir: &Path,
    layer: &Path,
    target: &Path,
) -> Result<(), NodeError> {
    use std::ffi::CString;
    use std::os::fd::AsRawFd;
    let failed = |why: String| NodeError::Failed {
        what: format!("--container-save={}", target.display()),
        code: -1,
        msg: why,
    };
    if target.is_dir() {
        return Err(failed("is a directory".into()));
    }
    let holder = crate::beneath::holder_record(&cfg.runtime_path, dir)
        .ok_or_else(|| failed(format!("no running container in {}", dir.display())))?;
    let pidfd = warren::runtime::sys::pidfd_open(holder.pid)
        .map_err(|e| failed(format!("holder pid {}: {e}", holder.pid)))?;
    // Made by the user (in the pre-exec step, after the identity change): their directory.
    let merged = layer.join("root");
    let opts = format!(
        "lowerdir={},upperdir={},workdir={},userxattr",
        dir.join("mnt/l").display(),
        layer.join("upper").display(),
        layer.join("work").display()
    );
    let c = |s: &str| CString::new(s).map_err(|_| failed("path with a NUL byte".into()));
    let (c_overlay, c_merged, c_opts) = (c("overlay")?, c(&merged.to_string_lossy())?, c(&opts)?);
    let mut cmd = Command::new("/bin/sh");
    // mksquashfs writes the container's tree (owners as inside) to a temp name; mv -T
    // refuses to move it into a directory that appeared meanwhile.
    cmd.args([
        "-c",
        "mksquashfs \"$1\" \"$2.warren-tmp\" -noappend -quiet -no-progress -comp zstd && mv -T -f \"$2.warren-tmp\" \"$2\"; rc=$?; rm -f \"$2.warren-tmp\"; echo WARREN_RC=$rc",
        "sh",
    ])
    .arg(&merged)
    .arg(target)
    .env_clear()
    .envs(user_env(cfg, job, dir))
    .current_dir("/")
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let (uid, gid) = (job.uid, job.gid);
    let groups: Vec<libc::gid_t> = job.groups.clone();
    let fd = pidfd.as_raw_fd();
    // SAFETY: the closure runs in the forked child before exec and only makes system
    // calls on memory prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            // At step end slurmstepd kills what descends from it: run detached (the
            // first child exits at once, its child is reparented) and learn the result
            // from the output pipes, which stay open until it ends.
            match libc::fork() {
                -1 => return Err(std::io::Error::last_os_error()),
                0 => {}
                _ => libc::_exit(0),
            }
            libc::setsid();
            libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            let ok = libc::setgroups(groups.len(), groups.as_ptr()) == 0
                && libc::setresgid(gid, gid, gid) == 0
                && libc::setresuid(uid, uid, uid) == 0
                && (libc::mkdir(c_merged.as_ptr(), 0o700) == 0
                    || *libc::__errno_location() == libc::EEXIST)
                && libc::setns(fd, libc::CLONE_NEWUSER | libc::CLONE_NEWNS) == 0
                && libc::unshare(libc::CLONE_NEWNS) == 0
                && libc::mount(
                    c_overlay.as_ptr(),
                    c_merged.as_ptr(),
                    c_overlay.as_ptr(),
                    0,
                    c_opts.as_ptr() as *const libc::c_void,
                ) == 0;
            if ok {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let out = cmd
        .output()
        .map_err(|e| failed(format!("enter the container: {e}")))?;
    let rc = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("WARREN_RC=").map(str::to_string));
    if rc.as_deref() == Some("0") {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&out.stderr);
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("(no message)");
    Err(failed(match rc {
        Some(rc) => format!("exit {rc}: {}", last.trim()),
        None => format!("did not finish: {}", last.trim()),
    }))
}

/// `kernel_mount=yes`: where the holder's image is a file of an admin-owned shared store
/// (root's, not writable by group or others, down from the store's root; its digest was
/// verified when it was published), root mounts it with the kernel's squashfs driver
/// (read-only, nosuid, nodev) over the holder's squashfuse mount, inside the holder's
/// mount namespace: the tasks that join it then read through the kernel, not FUSE, and
/// the mount ends with that namespace. Returns whether it did; any other image keeps
/// squashfuse.
pub fn kernel_mount(cfg: &Config, job: &Job, dir: &Path) -> Result<bool, NodeError> {
    use std::os::fd::AsRawFd;
    let Some(shared) = cfg.shared_store.as_deref().filter(|_| cfg.kernel_mount) else {
        return Ok(false);
    };
    let failed = |why: String| NodeError::Failed {
        what: "kernel_mount".into(),
        code: -1,
        msg: why,
    };
    let Some(holder) = crate::beneath::holder_record(&cfg.runtime_path, dir) else {
        return Ok(false);
    };
    let Ok(digest) = warren::digest::Digest::parse(&holder.digest) else {
        return Ok(false);
    };
    let Some((root, entry)) = shared.split(':').find_map(|r| {
        let root = fs::canonicalize(r).ok()?;
        warren::store::layout::Store::at(&root)
            .image(&digest)
            .map(|e| (root, e))
    }) else {
        return Ok(false);
    };
    let file = fs::canonicalize(&entry.squashfs).map_err(|e| dir_err(&entry.squashfs, e))?;
    if !file.starts_with(&root) || !admin_owned(&file, &root) {
        return Ok(false);
    }
    let target = dir.join("mnt/l");
    // The record and the dir are the user's: never trust the PID. The mount namespace we
    // enter must belong to a user namespace owned by the job's user, so that root's mount
    // can only ever land in that user's own namespaces (never the host's).
    let mntns = user_mount_namespace(holder.pid, job.uid).map_err(failed)?;
    let ns = mntns.as_raw_fd();
    let mut cmd = Command::new("mount");
    cmd.args(["-t", "squashfs", "-o", "ro,nosuid,nodev"])
        .arg(&file)
        .arg(&target)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null());
    // SAFETY: setns on the forked child (single-threaded) before exec, with a descriptor
    // opened before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(ns, libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd
        .output()
        .map_err(|e| failed(format!("enter the holder's mount namespace: {e}")))?;
    if !out.status.success() {
        return Err(failed(format!(
            "mount {} in the holder: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(true)
}

/// The mount namespace of process `pid`, if it is owned by a user namespace that `uid`
/// owns (`NS_GET_USERNS`, `NS_GET_OWNER_UID`), checked without a PID-reuse race: the
/// namespace is opened between `pidfd_open` and a liveness check on the pidfd.
fn user_mount_namespace(pid: i32, uid: u32) -> Result<std::os::fd::OwnedFd, String> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    const NS_GET_USERNS: libc::c_ulong = 0xb701;
    const NS_GET_OWNER_UID: libc::c_ulong = 0xb704;
    let pidfd =
        warren::runtime::sys::pidfd_open(pid).map_err(|e| format!("holder pid {pid}: {e}"))?;
    let mnt = fs::File::open(format!("/proc/{pid}/ns/mnt"))
        .map_err(|e| format!("holder pid {pid}: mount namespace: {e}"))?;
    // SAFETY: signal 0 through a pidfd we hold only tests that the process still lives.
    let alive = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            0,
            std::ptr::null::<u8>(),
            0,
        )
    } == 0;
    if !alive {
        return Err(format!("holder pid {pid} exited"));
    }
    // SAFETY: ioctl on an open namespace descriptor; returns a new descriptor or -1.
    let userns = unsafe { libc::ioctl(mnt.as_raw_fd(), NS_GET_USERNS) };
    if userns < 0 {
        return Err(format!(
            "holder pid {pid}: owner of its mount namespace: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: a fresh descriptor the ioctl returned; owned from here.
    let userns = unsafe { OwnedFd::from_raw_fd(userns) };
    let mut owner: libc::uid_t = u32::MAX;
    // SAFETY: NS_GET_OWNER_UID writes one uid_t.
    if unsafe { libc::ioctl(userns.as_raw_fd(), NS_GET_OWNER_UID, &mut owner) } != 0 {
        return Err(format!(
            "holder pid {pid}: owner of its user namespace: {}",
            std::io::Error::last_os_error()
        ));
    }
    if owner != uid {
        return Err(format!(
            "holder pid {pid}: its mount namespace is not owned by a user namespace of uid {uid}"
        ));
    }
    Ok(OwnedFd::from(mnt))
}

/// `file` and every directory from it up to `root` belong to root and are not writable by
/// group or others.
fn admin_owned(file: &Path, root: &Path) -> bool {
    file.ancestors()
        .take_while(|p| p.starts_with(root))
        .all(|p| {
            fs::symlink_metadata(p)
                .is_ok_and(|m| m.uid() == 0 && m.mode() & 0o022 == 0 && !m.file_type().is_symlink())
        })
}

/// Does this scope already have a live holder? (its record is locked by the holder;
/// read as root without following the user's symlinks)
pub fn holder_running(cfg: &Config, dir: &Path) -> bool {
    crate::beneath::holder_record(&cfg.runtime_path, dir).is_some()
}

/// Stop the holder of `dir` (if any) as the user and remove the dir.
pub fn stop_scope(cfg: &Config, job: &Job, dir: &Path) -> Result<(), NodeError> {
    if holder_running(cfg, dir) {
        // As the user, in their runtime dir: `warren rm` only touches what is theirs.
        if let Err(e) = run_warren(
            cfg,
            job,
            dir,
            "stop the holder",
            &["rm", "--force", HOLDER_NAME],
        ) {
            // A holder that ended meanwhile is fine; a live one is an error.
            if holder_running(cfg, dir) {
                return Err(e);
            }
        }
    }
    remove_tree(cfg, job, dir)
}

/// Remove a directory tree below the runtime path that the user could write to (moved to
/// the node's root-owned trash first: no symlink of theirs is followed).
pub fn remove_tree(cfg: &Config, job: &Job, dir: &Path) -> Result<(), NodeError> {
    let trash = cfg.runtime_path.join(&job.node).join(".trash");
    crate::beneath::remove(&cfg.runtime_path, &trash, dir).map_err(|e| dir_err(dir, e))
}

/// Pidfds of the processes in the user namespace of the holder of `dir`, the holder
/// itself left out: the tasks that joined it and their children.
fn processes_in_holder_userns(cfg: &Config, dir: &Path) -> Vec<std::os::fd::OwnedFd> {
    let Some(h) = crate::beneath::holder_record(&cfg.runtime_path, dir) else {
        return vec![];
    };
    let Ok(ns) = std::fs::read_link(format!("/proc/{}/ns/user", h.pid)) else {
        return vec![];
    };
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != h.pid)
        // Opened first, then checked: a pidfd names the process for good, so the kill
        // below cannot reach a later process that got its number.
        .filter_map(|pid| Some((pid, warren::runtime::sys::pidfd_open(pid).ok()?)))
        .filter(|(pid, _)| {
            std::fs::read_link(format!("/proc/{pid}/ns/user")).is_ok_and(|l| l == ns)
        })
        .map(|(_, fd)| fd)
        .collect()
}

/// SIGKILL through pidfds (processes already gone are fine).
fn kill_all(fds: &[std::os::fd::OwnedFd]) {
    use std::os::fd::AsRawFd;
    for fd in fds {
        // SAFETY: pidfd_send_signal on a pidfd we own, no siginfo, no flags.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
    }
}

/// Job end on this node: every holder of the job stopped, its dirs removed, and any
/// process left in a holder's user namespace killed: task processes that escaped Slurm's
/// own clean-up (a slurmstepd killed with SIGKILL leaves its tasks running, and
/// proctrack/linuxproc no longer finds them).
pub fn cleanup_job(cfg: &Config, job: &Job) -> Result<(), NodeError> {
    let jd = job_dir(cfg, job)?;
    let mut first_err = None;
    for name in crate::beneath::list_dirs(&cfg.runtime_path, &jd) {
        let dir = jd.join(name);
        let left = processes_in_holder_userns(cfg, &dir);
        if let Err(e) = stop_scope(cfg, job, &dir) {
            first_err.get_or_insert(e);
        }
        kill_all(&left);
    }
    if first_err.is_none() {
        remove_tree(cfg, job, &jd)?;
    }
    first_err.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        Job {
            uid: 1001,
            gid: 1001,
            groups: vec![1001],
            user: "ann".into(),
            home: "/home/ann".into(),
            job_id: 42,
            node: "n2".into(),
        }
    }

    /// root's mount is only ever made in a namespace of the job's user: a record pointing
    /// at a process in the host's namespaces (here: this test, in the initial user
    /// namespace, owned by uid 0) is refused.
    #[test]
    fn kernel_mount_refuses_foreign_namespaces() {
        let me = std::process::id() as i32;
        let e = user_mount_namespace(me, 4242).unwrap_err();
        assert!(
            e.contains("not owned by a user namespace of uid 4242"),
            "{e}"
        );
        assert!(user_mount_namespace(me, 0).is_ok());
        assert!(user_mount_namespace(i32::MAX, 0).is_err());
    }

    #[test]
    fn layout() {
        let cfg = Config::default();
        let j = job();
        assert_eq!(
            scope_dir(&cfg, &j, &Scope::Step(0)).unwrap(),
            PathBuf::from("/run/warren/n2/1001/42/step.0")
        );
        assert_eq!(
            scope_dir(&cfg, &j, &Scope::Step(SLURM_BATCH_SCRIPT)).unwrap(),
            PathBuf::from("/run/warren/n2/1001/42/step.batch")
        );
        assert_eq!(
            scope_dir(&cfg, &j, &Scope::Named("dev".into())).unwrap(),
            PathBuf::from("/run/warren/n2/1001/42/name.dev")
        );
        for bad in ["", "..", "a/b", ".x"] {
            let mut j = job();
            j.node = bad.into();
            assert!(job_dir(&cfg, &j).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn clean_environment() {
        let cfg = crate::plugstack::parse(&["store=/s/%u", "shared_store=/a:/b"]).unwrap();
        let env = user_env(&cfg, &job(), Path::new("/r"));
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get("HOME"), Some("/home/ann".into()));
        assert_eq!(get("WARREN_STORE_PATH"), Some("/s/ann".into()));
        assert_eq!(get("WARREN_STORE_SHARED"), Some("/a:/b".into()));
        assert_eq!(get("WARREN_RUN_RUNTIME_DIR"), Some("/r".into()));
        assert!(get("SLURM_JOB_ID").is_none());
    }

    #[test]
    fn dirs_are_checked() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("run");
        let cfg = crate::plugstack::parse(&[format!("runtime_path={}", d.display())]).unwrap();
        // SAFETY: getuid cannot fail (tests only: the test's own identity is the owner).
        let me = unsafe { libc::getuid() };
        let mut j = job();
        j.uid = me;
        // SAFETY: getgid cannot fail.
        j.gid = unsafe { libc::getgid() };
        let jd = prepare_job_dir(&cfg, &j).unwrap();
        assert!(jd.is_dir());
        prepare_job_dir(&cfg, &j).unwrap();
        cleanup_job(&cfg, &j).unwrap();
        assert!(!jd.exists());
    }
}

//! Does kernel overlayfs (`userxattr`) work in a user namespace over a squashfuse lower
//! with a tmpfs upper? Answered by an actual mount (some kernels refuse a FUSE lower;
//! tmpfs has user xattrs only from 6.6) and cached per boot in the runtime directory,
//! keyed on /proc/sys/kernel/random/boot_id. `warren run` records its own first attempt
//! in the same cache; [`native_overlay`] (used by `warren doctor`) probes on its own.

use super::{overlay, squashfuse, state, sys, userns};
use crate::config::Config;
use anyhow::{bail, Context, Result};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Outcome of the native-overlay probe.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum OverlayProbe {
    /// Kernel overlayfs with `userxattr` works over a squashfuse lower in a user namespace.
    Native,
    /// It does not; the reason (kernel's error) is kept for `warren doctor`.
    Unsupported(String),
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn cache_path(rundir: &Path) -> PathBuf {
    rundir.join("overlay-probe")
}

/// The cached answer for this boot, if any.
pub fn cached(rundir: &Path) -> Option<OverlayProbe> {
    let text = std::fs::read_to_string(cache_path(rundir)).ok()?;
    let (boot, rest) = text.split_once('\n')?;
    if boot != boot_id() {
        return None;
    }
    match rest.trim_end().split_once(' ') {
        Some(("unsupported", why)) => Some(OverlayProbe::Unsupported(why.to_string())),
        _ if rest.trim_end() == "native" => Some(OverlayProbe::Native),
        _ => None,
    }
}

/// Record an answer for this boot (atomically; errors are ignored: it is only a cache).
pub fn record(rundir: &Path, p: &OverlayProbe) {
    let body = match p {
        OverlayProbe::Native => "native".to_string(),
        OverlayProbe::Unsupported(w) => format!("unsupported {}", w.replace('\n', " ")),
    };
    let _ = crate::util::atomic_write(
        &cache_path(rundir),
        format!("{}\n{body}\n", boot_id()).as_bytes(),
        0o600,
    );
}

/// Probe (or read the per-boot cached answer) for `warren doctor`, run by the user in
/// their own process: the one place the runtime takes the identity from the process
/// (doctor is a CLI-only diagnostic; the plugin uses [`native_overlay_for`]).
pub fn native_overlay(cfg: &Config) -> Result<OverlayProbe> {
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getegid().as_raw();
    let home = crate::config::home_dir().unwrap_or_else(|| PathBuf::from("/"));
    let xdg = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from);
    let rundir = state::runtime_dir(&cfg.run, uid, &home, xdg.as_deref())?;
    native_overlay_for(cfg, &rundir, uid, gid)
}

/// As [`native_overlay`] for an explicit caller (`rundir` is their runtime directory).
pub fn native_overlay_for(cfg: &Config, rundir: &Path, uid: u32, gid: u32) -> Result<OverlayProbe> {
    let rundir = rundir.to_path_buf();
    if let Some(p) = cached(&rundir) {
        return Ok(p);
    }
    let img = rundir.join("probe.sqfs");
    if !img.exists() {
        make_probe_image(&img)?;
    }
    // The lower is served as the containers' will be: warren's own server by default
    // (squashfuse only if it cannot serve the image).
    let builtin = cfg.run.image_server == "builtin";
    let squashfuse = match crate::util::which(&cfg.run.squashfuse) {
        Some(p) => p,
        None if builtin => PathBuf::from(&cfg.run.squashfuse),
        None => bail!("{} not found (install squashfuse)", cfg.run.squashfuse),
    };
    let p = probe_with(&rundir, &img, &squashfuse, builtin, uid, gid)?;
    record(&rundir, &p);
    Ok(p)
}

fn make_probe_image(img: &Path) -> Result<()> {
    let tmp = crate::util::temp_sibling(img);
    let dir = img.with_file_name(format!(".probe-root.{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let st = std::process::Command::new("mksquashfs")
        .arg(&dir)
        .arg(&tmp)
        .args(["-quiet", "-no-progress", "-all-root", "-noappend"])
        .stdout(std::process::Stdio::null())
        .status()
        .context("run mksquashfs (squashfs-tools) for the probe image");
    let _ = std::fs::remove_dir(&dir);
    let st = st?;
    if !st.success() {
        let _ = std::fs::remove_file(&tmp);
        bail!("mksquashfs failed for the probe image ({st})");
    }
    std::fs::rename(&tmp, img).with_context(|| format!("rename to {}", img.display()))
}

/// Fork a child that builds a single-ID user namespace, mounts a tmpfs and `img` (with
/// warren's own server when `builtin`, else `squashfuse`), and tries a userxattr overlay
/// over them.
fn probe_with(
    rundir: &Path,
    img: &Path,
    squashfuse: &Path,
    builtin: bool,
    uid: u32,
    gid: u32,
) -> Result<OverlayProbe> {
    let (r, w) = sys::pipe()?;
    let map = super::idmap::choose(super::idmap::Identity::KeepId, uid, gid, &[], &[]);
    let stage = rundir.join("mnt");
    // SAFETY: getpid cannot fail.
    let me = unsafe { libc::getpid() };
    // SAFETY: warren is single-threaded here; the child exits with _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        bail!("fork: {}", std::io::Error::last_os_error());
    }
    if pid == 0 {
        drop(r);
        let res = (|| -> Result<()> {
            sys::die_with_parent(libc::SIGKILL, me)?;
            // SAFETY: unshare on the calling process.
            if unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) } != 0 {
                bail!("unshare: {}", std::io::Error::last_os_error());
            }
            userns::write_self(&map).context("write single-ID map")?;
            sys::mount("tmpfs", &stage, "tmpfs", 0, Some("mode=0700"))?;
            std::env::set_current_dir(&stage)?;
            for d in ["l", "u", "w", "r"] {
                std::fs::create_dir(d)?;
            }
            let daemon =
                squashfuse::mount(squashfuse, squashfuse, img, Path::new("l"), builtin, None)?.pid;
            let r = overlay::mount_native(
                &[Path::new("l")],
                Path::new("u"),
                Path::new("w"),
                Path::new("r"),
            );
            // Reap the daemon here: nobody else would (the caller is no subreaper).
            // SAFETY: daemon is our child.
            unsafe {
                libc::kill(daemon, libc::SIGKILL);
                libc::waitpid(daemon, std::ptr::null_mut(), 0);
            }
            Ok(r?)
        })();
        let msg = match res {
            Ok(()) => "native".to_string(),
            Err(e) => format!("unsupported {e:#}"),
        };
        let _ = sys::write_all(w.as_raw_fd(), msg.as_bytes());
        // SAFETY: leave without running Rust destructors of the parent's state.
        unsafe { libc::_exit(0) };
    }
    drop(w);
    let out = sys::read_to_end(r.as_raw_fd())?;
    let mut st = 0;
    // SAFETY: waiting for our own child only (never any other child of the caller: in
    // slurmstepd those are the tasks); it reaped its FUSE daemon itself.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    let s = String::from_utf8_lossy(&out).to_string();
    Ok(match s.split_once(' ') {
        Some(("unsupported", why)) => OverlayProbe::Unsupported(why.to_string()),
        _ if s == "native" => OverlayProbe::Native,
        _ => OverlayProbe::Unsupported(format!("probe process failed ({s})")),
    })
}

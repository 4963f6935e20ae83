//! The writable layer: kernel overlayfs with `userxattr` (in the user namespace), or
//! `fuse-overlayfs` where the kernel refuses.

use super::probe::{self, OverlayProbe};
use super::spec::{OverlayChoice, RunSpec};
use super::{fuse, sys};
use anyhow::{Context, Result};
use std::ffi::OsStr;
use std::path::Path;

/// Which overlay implementation to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Native,
    Fuse,
}

/// How to build the writable layer, decided before the container's process exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    pub backend: Backend,
    /// Report the native attempt for the per-boot cache (`Log::probe`).
    pub report_probe: bool,
}

/// The overlay back end from the spec and the per-boot probe cache.
pub fn choose(spec: &RunSpec) -> Choice {
    let (backend, report_probe) = match spec.overlay {
        OverlayChoice::Native => (Backend::Native, false),
        OverlayChoice::Fuse => (Backend::Fuse, false),
        OverlayChoice::Auto => match probe::cached(&spec.rundir) {
            Some(OverlayProbe::Native) => (Backend::Native, false),
            Some(OverlayProbe::Unsupported(_)) => (Backend::Fuse, false),
            None => (Backend::Native, true),
        },
    };
    Choice {
        backend,
        report_probe,
    }
}

/// `lowerdir=` value: the layers, first on top.
fn lowerdir(lowers: &[&Path]) -> String {
    let l: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
    l.join(":")
}

/// The container root is never a way to gain privilege or reach devices: `nosuid` (a
/// setuid file of the image gives nothing) and `nodev`, in every mode.
const ROOT_FLAGS: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV;

/// Kernel overlay on `target`, `lowers` first on top. Paths must not contain `,`, `:` or
/// `\` (the caller passes names under its own staging directory, checked at start).
pub fn mount_native(
    lowers: &[&Path],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> std::io::Result<()> {
    let data = format!(
        "lowerdir={},upperdir={},workdir={},userxattr",
        lowerdir(lowers),
        upper.display(),
        work.display()
    );
    sys::mount("overlay", target, "overlay", ROOT_FLAGS, Some(&data))
}

/// A read-only kernel overlay of several lower layers (first on top), no upper layer.
pub fn mount_readonly(lowers: &[&Path], target: &Path) -> std::io::Result<()> {
    let data = format!("lowerdir={},userxattr", lowerdir(lowers));
    sys::mount(
        "overlay",
        target,
        "overlay",
        ROOT_FLAGS | libc::MS_RDONLY,
        Some(&data),
    )
}

/// fuse-overlayfs on `target` (absolute paths), `lowers` first on top, writable with
/// `upper_work` (upper, work), else read-only; returns the daemon's PID.
pub fn mount_fuse(
    prog: &Path,
    lowers: &[&Path],
    upper_work: Option<(&Path, &Path)>,
    target: &Path,
) -> Result<i32> {
    // noacl: with ACLs on, fuse-overlayfs 1.10 answers EOPNOTSUPP to the kernel's ACL
    // lookups over a squashfuse lower, and every non-root access fails.
    // static_nlink: a directory's link count is 1 (the "unknown" of btrfs-like file
    // systems, which find and du handle) instead of counting its subdirectories in every
    // layer at first lookup: that count was most of a first start (60 → 20 ms for
    // `true` in the Python image, docs/performance.md). Versions without it ignore it.
    let mut opts = format!("noacl,static_nlink,lowerdir={}", lowerdir(lowers));
    if let Some((upper, work)) = upper_work {
        opts.push_str(&format!(
            ",upperdir={},workdir={}",
            upper.display(),
            work.display()
        ));
    }
    fuse::mount_with_daemon(
        target,
        "fuse-overlayfs",
        upper_work.is_none(),
        true,
        prog,
        &[OsStr::new("-f"), OsStr::new("-o"), OsStr::new(&opts)],
    )
    .with_context(|| format!("mount fuse-overlayfs ({})", prog.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::idmap::Identity;

    #[test]
    fn choice_follows_config_then_the_boot_cache() {
        let d = tempfile::tempdir().unwrap();
        let mut spec = crate::runtime::spec::sample(Identity::KeepId);
        spec.rundir = d.path().to_path_buf();
        let pick = |s: &RunSpec| (choose(s).backend, choose(s).report_probe);
        // Nothing cached: try native and report the outcome.
        assert_eq!(pick(&spec), (Backend::Native, true));
        probe::record(d.path(), &OverlayProbe::Unsupported("EINVAL".into()));
        assert_eq!(pick(&spec), (Backend::Fuse, false));
        probe::record(d.path(), &OverlayProbe::Native);
        assert_eq!(pick(&spec), (Backend::Native, false));
        spec.overlay = OverlayChoice::Fuse;
        assert_eq!(pick(&spec), (Backend::Fuse, false));
        spec.overlay = OverlayChoice::Native;
        assert_eq!(pick(&spec), (Backend::Native, false));
    }
}

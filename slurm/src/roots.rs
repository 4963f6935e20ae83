//! Container roots that outlive a task: a writable overlay (upper layer in a kept
//! directory) mounted **once** in the node holder's mount namespace, at
//! `RUNDIR/mnt/roots/NAME`, and entered by every task that names it:
//!
//! - a named container's local task `i` (`--container-name`): root `i`, layer
//!   `layer.i`; a later step, and a concurrent `:exec` step, enter the same mounted root,
//!   so they see the running tasks' writes (a second overlay on an upper directory in
//!   use is refused by the kernel: the root must be shared, not re-mounted);
//! - `shared_root=yes` (pyxis's behaviour): root `shared`, layer `layer.shared`, one
//!   writable root for all the node's tasks of the step (or of the named container).
//!
//! Each task still gets its own mount namespace (a copy of the holder's, where this root
//! is mounted) with its own /proc, /dev, binds on top, and pivots into the shared root.
//! The mount ends with the holder's namespace (step end, or job end for a named
//! container); the layer directory is removed with the scope dir. Kernel overlay only
//! (a FUSE daemon started by a task would outlive nothing that could stop it).

use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use warren::runtime::{overlay, readonly};

/// Which writable layer a task gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layer {
    /// A fresh tmpfs upper layer of its own, gone with the task.
    Fresh,
    /// Its own overlay on a kept directory (`--container-save` of an unnamed container).
    Kept(PathBuf),
    /// A root mounted once in the holder's namespace (see the module doc).
    Mounted { name: String, dir: PathBuf },
}

/// Pure: the layer of local task `local_id` in the scope dir `scope`.
pub fn plan(shared_root: bool, named: bool, save: bool, local_id: u32, scope: &Path) -> Layer {
    let prefix = match (named, save) {
        (true, _) => "layer",
        (false, true) => "save",
        (false, false) => "root",
    };
    if shared_root {
        return Layer::Mounted {
            name: "shared".into(),
            dir: scope.join(format!("{prefix}.shared")),
        };
    }
    if named {
        return Layer::Mounted {
            name: local_id.to_string(),
            dir: scope.join(format!("layer.{local_id}")),
        };
    }
    if save {
        return Layer::Kept(scope.join(format!("save.{local_id}")));
    }
    Layer::Fresh
}

fn is_mount_point(p: &Path) -> bool {
    match (std::fs::metadata(p), p.parent().map(std::fs::metadata)) {
        (Ok(m), Some(Ok(parent))) => m.dev() != parent.dev(),
        _ => false,
    }
}

/// The root `name` over the holder's image (`rundir/mnt/l`), its upper layer in
/// `layer`, mounted now unless it already is. The caller has joined the holder's user
/// and mount namespaces and still has its capabilities there. Serialized by a lock file
/// in the scope dir: the node's tasks start at once.
pub fn ensure(rundir: &Path, name: &str, layer: &Path) -> Result<PathBuf, String> {
    let fail =
        |what: &str, e: std::io::Error| format!("warren: container root {name}: {what}: {e}");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(rundir.join("roots.lock"))
        .map_err(|e| fail("lock", e))?;
    // SAFETY: flock on a descriptor we own; released when `lock` is closed.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(fail("lock", std::io::Error::last_os_error()));
    }
    let stage = rundir.join("mnt");
    let root = stage.join("roots").join(name);
    std::fs::create_dir_all(&root).map_err(|e| fail("create the mount point", e))?;
    if is_mount_point(&root) {
        return Ok(root);
    }
    let (upper, work) = (layer.join("upper"), layer.join("work"));
    let fresh = !upper.exists();
    for d in [&upper, &work] {
        std::fs::create_dir_all(d).map_err(|e| fail("create the layer", e))?;
    }
    let lower = stage.join("l");
    if fresh {
        readonly::copy_root_attrs(&lower, &upper);
    }
    overlay::mount_native(&[&lower], &upper, &work, &root)
        .map_err(|e| fail("kernel overlay (a shared root needs it)", e))?;
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers() {
        let s = Path::new("/r/JOB/name.dev");
        assert_eq!(plan(false, false, false, 3, s), Layer::Fresh);
        assert_eq!(
            plan(false, false, true, 3, s),
            Layer::Kept(s.join("save.3"))
        );
        assert_eq!(
            plan(false, true, false, 3, s),
            Layer::Mounted {
                name: "3".into(),
                dir: s.join("layer.3")
            }
        );
        assert_eq!(
            plan(true, true, true, 3, s),
            Layer::Mounted {
                name: "shared".into(),
                dir: s.join("layer.shared")
            }
        );
        assert_eq!(
            plan(true, false, false, 0, s),
            Layer::Mounted {
                name: "shared".into(),
                dir: s.join("root.shared")
            }
        );
    }
}

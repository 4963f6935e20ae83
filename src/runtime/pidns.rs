//! The `--contain` namespaces of the container's processes (docs/security.md): a PID
//! namespace whose init is the next child of the calling process, that init's own /proc,
//! and a private IPC namespace. Only the calling process and its future children are
//! affected; warren's FUSE daemons, started before, stay outside (a contained process
//! cannot see them, so cannot open their `/proc/PID/root` or `/proc/PID/fd`).

use super::sys;
use std::io;
use std::path::Path;

fn unshare(flags: libc::c_int, what: &str) -> io::Result<()> {
    // SAFETY: unshare on the calling process with constant flags.
    if unsafe { libc::unshare(flags) } != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(())
}

/// A private SysV IPC and POSIX message queue namespace for this process (before the
/// rootfs mounts its own /dev/mqueue).
pub fn private_ipc() -> io::Result<()> {
    unshare(libc::CLONE_NEWIPC, "new IPC namespace")
}

/// Put this process's next child in a new PID namespace, as its PID 1.
pub fn new_for_children() -> io::Result<()> {
    unshare(libc::CLONE_NEWPID, "new PID namespace")
}

/// In the namespace's init, after pivot_root: a mount namespace of its own (the
/// parent's view of /proc stays the host's) and a procfs of the new PID namespace over
/// /proc. The kernel allows it only because the host's /proc (bound under it) is fully
/// visible; mounted over it, that one is out of reach.
pub fn mount_own_proc() -> io::Result<()> {
    unshare(libc::CLONE_NEWNS, "new mount namespace for /proc")?;
    // Private, so the new /proc never propagates back to the parent's view.
    sys::mount(
        "none",
        Path::new("/"),
        "",
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )
    .map_err(|e| io::Error::new(e.kind(), format!("make the mounts private: {e}")))?;
    sys::mount(
        "proc",
        Path::new("/proc"),
        "proc",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        None,
    )
    .map_err(|e| io::Error::new(e.kind(), format!("mount the container's own /proc: {e}")))
}

//! Mounting the image's squashfs (never unpacking it): served by warren's own server
//! (`sqfs_serve`, in a forked child) or by `squashfuse_ll`, the fallback for images the
//! server does not read (xz/lz4/lzo) and for callers with threads.

use super::{fuse, sqfs, sqfs_record, sqfs_serve};
use anyhow::{Context, Result};
use std::ffi::OsStr;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

/// The built-in server's process name (`ps`, `/proc/PID/comm`).
pub const SERVER_NAME: &std::ffi::CStr = c"warren-sqfs";

/// Threads of the built-in server: requests of one container's start arrive a few at a
/// time (readahead, parallel lookups); more threads than cores only add wake-ups.
fn server_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 4))
}

/// The image's server, once mounted.
pub struct Mounted {
    pub pid: i32,
    /// It records the image's prefetch list (warren's server, given where to).
    pub recording: bool,
}

/// Mount `image` read-only on `target`. With `builtin`, warren's own server when it
/// reads the image, else (and without `builtin`) the daemon `prog` (messages name it as
/// `shown`: the configured program, when `prog` is its execute-only copy). `record`:
/// where warren's server writes the image's prefetch list (`sqfs_record`); squashfuse
/// records nothing.
pub fn mount(
    prog: &Path,
    shown: &Path,
    image: &Path,
    target: &Path,
    builtin: bool,
    record: Option<sqfs_record::Target>,
) -> Result<Mounted> {
    let recording = record.is_some();
    if builtin {
        if let Some(pid) = mount_builtin(image, target, record)? {
            return Ok(Mounted { pid, recording });
        }
    }
    let pid = fuse::mount_with_daemon(
        target,
        "squashfuse",
        true,
        false,
        prog,
        &[OsStr::new("-f"), image.as_os_str()],
    )
    .with_context(|| format!("mount {} with {}", image.display(), shown.display()))?;
    Ok(Mounted {
        pid,
        recording: false,
    })
}

/// warren's server on `target`, or None when it does not read this image (or this
/// process has threads): the caller falls back to squashfuse_ll.
fn mount_builtin(
    image: &Path,
    target: &Path,
    record: Option<sqfs_record::Target>,
) -> Result<Option<i32>> {
    let file = std::fs::File::open(image).with_context(|| format!("open {}", image.display()))?;
    let file = std::fs::File::from(fuse::above_stdio(OwnedFd::from(file))?);
    // SAFETY: the descriptor stays open in `img`, which the server owns until it exits.
    let keep = unsafe { BorrowedFd::borrow_raw(file.as_raw_fd()) };
    // Checked here, before mounting: the superblock and ID table; the rest on demand.
    let img = match sqfs::Image::open_file(file) {
        Ok(i) => i,
        Err(sqfs::Error::Unsupported(_)) => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("image {}", image.display())),
    };
    let threads = server_threads();
    let mut kept = vec![keep];
    if let Some(r) = &record {
        // SAFETY: the descriptor stays open in `record`, which the server owns until it
        // exits.
        kept.push(unsafe { BorrowedFd::borrow_raw(r.dir.as_raw_fd()) });
    }
    fuse::mount_with_server(target, "squashfuse", SERVER_NAME, &kept, move |dev| {
        match sqfs_serve::serve(img, dev, threads, record) {
            Ok(()) => 0,
            Err(_) => 1,
        }
    })
    .with_context(|| format!("mount {} with warren's squashfs server", image.display()))
}

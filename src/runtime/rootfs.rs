//! The container's standard mounts and bind mounts on top of its root, then pivot_root.
//! [`plan`] is pure (which mounts, in which order, with which flags); [`apply`] performs
//! them, creating every mount point inside the root with `openat2(RESOLVE_IN_ROOT)`.
//!
//! Choices (see docs/run.md): host PID namespace, so /proc is a recursive bind of the
//! host's /proc (an unprivileged user cannot mount a fresh procfs without owning a PID
//! namespace); /sys is a recursive read-only bind; /dev is a small tmpfs with the host's
//! null, zero, full, random, urandom and tty bound in, a new devpts instance, and the
//! host's /dev/shm and /dev/mqueue (host IPC; with `--contain` a private tmpfs and the
//! new IPC namespace's own mqueue); /tmp is a private tmpfs.

use super::mounts::Bind;
use super::resolve::{self, Kind};
use super::sys;
use anyhow::{Context, Result};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

/// One step of the root file system's set-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Bind `src` (host) onto `dst`; directories recursively. `attrs` are MOUNT_ATTR_* bits
    /// added to the copy (read-only, nosuid, nodev). `optional`: skip if `src` is absent.
    Bind {
        src: PathBuf,
        dst: PathBuf,
        kind: Kind,
        attrs: u64,
        optional: bool,
    },
    /// Mount a new file system instance (tmpfs, devpts).
    Fs {
        fstype: &'static str,
        dst: PathBuf,
        flags: libc::c_ulong,
        data: String,
    },
    /// Create a symlink `dst -> target` (inside /dev).
    Symlink { dst: PathBuf, target: &'static str },
}

/// Inputs of [`plan`].
#[derive(Debug, Clone)]
pub struct Plan<'a> {
    /// GID 5 ("tty") is mapped, so devpts can use gid=5.
    pub tty_gid: bool,
    /// UID and GID 0 are mapped: /dev and /tmp belong to root, as in any container.
    pub root_mapped: bool,
    /// A standard stream is a host terminal: bind the host's /dev/pts and /dev/ptmx so it
    /// keeps its name inside (`tty`, job control); else a new devpts instance.
    pub host_pts: bool,
    pub tmp_size: &'a str,
    pub home: Option<&'a Path>,
    pub binds: &'a [Bind],
    /// Host paths to read /etc/hosts etc. from (tests point these elsewhere).
    pub etc_dir: &'a Path,
    /// The process is in its own IPC namespace (`--contain`): a private /dev/shm and
    /// /dev/mqueue instead of the host's.
    pub private_ipc: bool,
}

/// The ordered list of mounts.
pub fn plan(p: &Plan) -> Vec<Op> {
    use sys::{MOUNT_ATTR_NODEV as NODEV, MOUNT_ATTR_NOSUID as NOSUID, MOUNT_ATTR_RDONLY as RO};
    let bind = |src: &str, dst: &str, kind, attrs, optional| Op::Bind {
        src: src.into(),
        dst: dst.into(),
        kind,
        attrs,
        optional,
    };
    let owner = if p.root_mapped { ",uid=0,gid=0" } else { "" };
    let mut ops = vec![
        bind("/proc", "/proc", Kind::Dir, NOSUID | NODEV, true),
        bind("/sys", "/sys", Kind::Dir, RO | NOSUID | NODEV, true),
        Op::Fs {
            fstype: "tmpfs",
            dst: "/dev".into(),
            flags: libc::MS_NOSUID | libc::MS_NOEXEC | libc::MS_STRICTATIME,
            data: format!("mode=755,size=65536k{owner}"),
        },
    ];
    for n in ["null", "zero", "full", "random", "urandom", "tty"] {
        let p = format!("/dev/{n}");
        ops.push(bind(&p, &p, Kind::File, NOSUID, true));
    }
    let mut links = vec![];
    if p.host_pts {
        ops.push(bind("/dev/pts", "/dev/pts", Kind::Dir, NOSUID, true));
        ops.push(bind("/dev/ptmx", "/dev/ptmx", Kind::File, NOSUID, true));
    } else {
        let mut pts = "newinstance,ptmxmode=0666,mode=0620".to_string();
        if p.tty_gid {
            pts.push_str(",gid=5");
        }
        ops.push(Op::Fs {
            fstype: "devpts",
            dst: "/dev/pts".into(),
            flags: libc::MS_NOSUID | libc::MS_NOEXEC,
            data: pts,
        });
        links.push(("/dev/ptmx", "pts/ptmx"));
    }
    links.extend([
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ]);
    for (dst, target) in links {
        ops.push(Op::Symlink {
            dst: dst.into(),
            target,
        });
    }
    if p.private_ipc {
        // `--contain`: the caller made a new IPC namespace; nothing of the host's.
        ops.push(Op::Fs {
            fstype: "tmpfs",
            dst: "/dev/shm".into(),
            flags: libc::MS_NOSUID | libc::MS_NODEV,
            data: format!("mode=1777,size={}{owner}", p.tmp_size),
        });
        ops.push(Op::Fs {
            fstype: "mqueue",
            dst: "/dev/mqueue".into(),
            flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            data: String::new(),
        });
    } else {
        ops.push(bind(
            "/dev/shm",
            "/dev/shm",
            Kind::Dir,
            NOSUID | NODEV,
            true,
        ));
        ops.push(bind(
            "/dev/mqueue",
            "/dev/mqueue",
            Kind::Dir,
            NOSUID | NODEV,
            true,
        ));
    }
    ops.push(Op::Fs {
        fstype: "tmpfs",
        dst: "/tmp".into(),
        flags: libc::MS_NOSUID | libc::MS_NODEV,
        data: format!("mode=1777,size={}{owner}", p.tmp_size),
    });
    for f in ["hosts", "resolv.conf", "hostname"] {
        ops.push(Op::Bind {
            src: p.etc_dir.join(f),
            dst: PathBuf::from("/etc").join(f),
            kind: Kind::File,
            attrs: RO | NOSUID | NODEV,
            optional: true,
        });
    }
    if let Some(h) = p.home {
        ops.push(Op::Bind {
            src: h.to_path_buf(),
            dst: h.to_path_buf(),
            kind: Kind::Dir,
            attrs: NOSUID | NODEV,
            optional: true,
        });
    }
    for b in p.binds {
        let kind = if b.source.is_dir() {
            Kind::Dir
        } else {
            Kind::File
        };
        ops.push(Op::Bind {
            src: b.source.clone(),
            dst: b.dest.clone(),
            kind,
            // A CDI device node keeps `dev` (the host's node, with the host's permissions).
            attrs: NOSUID
                | if b.device { 0 } else { NODEV }
                | if b.read_only { RO } else { 0 }
                | if b.noexec { sys::MOUNT_ATTR_NOEXEC } else { 0 },
            optional: false,
        });
    }
    ops
}

/// Perform `ops` on the root opened as `root` (an O_PATH directory fd).
/// `can_create`: the root is writable (overlay); else a missing optional mount point is
/// skipped and a missing required one is an error naming it.
pub fn apply(root: &OwnedFd, ops: &[Op], can_create: bool) -> Result<Vec<String>> {
    let mut skipped = Vec::new();
    // Our own /dev tmpfs once mounted: its entries are created directly in it (fresh and
    // empty, nothing of the image's in it: no path resolution needed).
    let mut dev: Option<OwnedFd> = None;
    for op in ops {
        if let Some(d) = &dev {
            if apply_in_dev(d, op)? {
                continue;
            }
        }
        match op {
            Op::Bind {
                src,
                dst,
                kind,
                attrs,
                optional,
            } => {
                let Some(tree) = clone_source(src, *kind, *optional)? else {
                    continue;
                };
                let Some(target) = target(root, dst, *kind, can_create, *optional, &mut skipped)?
                else {
                    continue;
                };
                attach(&tree, &target, *attrs, src, dst)?;
            }
            Op::Fs {
                fstype,
                dst,
                flags,
                data,
            } => {
                let Some(target) = target(root, dst, Kind::Dir, can_create, true, &mut skipped)?
                else {
                    continue;
                };
                sys::mount(fstype, &sys::fd_path(&target), fstype, *flags, Some(data))
                    .with_context(|| format!("mount {fstype} on {}", dst.display()))?;
                if *fstype == "tmpfs" && dst == Path::new("/dev") {
                    dev = Some(resolve::open_in_root_flags(
                        root,
                        dst,
                        libc::O_RDONLY | libc::O_DIRECTORY,
                    )?);
                }
            }
            Op::Symlink { dst, target } => {
                // /dev was skipped (read-only image without /dev): so are its links.
                let Ok(parent) =
                    resolve::open_in_root(root, dst.parent().unwrap_or(Path::new("/")))
                else {
                    continue;
                };
                let name = sys::cpath(Path::new(dst.file_name().unwrap_or_default()))?;
                let t = std::ffi::CString::new(*target)?;
                let dir = sys::openat2(
                    parent.as_raw_fd(),
                    c".",
                    (libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64,
                    0,
                    0,
                )?;
                // SAFETY: valid C strings and an open directory fd.
                if unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), name.as_ptr()) } != 0 {
                    let e = std::io::Error::last_os_error();
                    if !matches!(e.raw_os_error(), Some(libc::EEXIST) | Some(libc::EROFS)) {
                        return Err(e).with_context(|| format!("symlink {}", dst.display()));
                    }
                }
            }
        }
    }
    Ok(skipped)
}

fn op_dst(op: &Op) -> &Path {
    match op {
        Op::Bind { dst, .. } | Op::Fs { dst, .. } | Op::Symlink { dst, .. } => dst,
    }
}

/// Perform `op` if its target is directly in our /dev tmpfs (`dev`); false (nothing
/// done) for any other target.
fn apply_in_dev(dev: &OwnedFd, op: &Op) -> Result<bool> {
    let dst = op_dst(op);
    let Ok(name) = dst.strip_prefix("/dev") else {
        return Ok(false);
    };
    let mut comps = name.components();
    let (Some(std::path::Component::Normal(n)), None) = (comps.next(), comps.next()) else {
        return Ok(false);
    };
    let cname = sys::cpath(Path::new(n))?;
    let d = dev.as_raw_fd();
    match op {
        Op::Symlink { target, .. } => {
            let t = std::ffi::CString::new(*target)?;
            // SAFETY: valid C strings and an open directory fd.
            if unsafe { libc::symlinkat(t.as_ptr(), d, cname.as_ptr()) } != 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EEXIST) {
                    return Err(e).with_context(|| format!("symlink {}", dst.display()));
                }
            }
            Ok(true)
        }
        Op::Bind {
            src,
            kind,
            attrs,
            optional,
            ..
        } => {
            let Some(tree) = clone_source(src, *kind, *optional)? else {
                return Ok(true);
            };
            let target = create_in(d, &cname, *kind)
                .with_context(|| format!("mount point {}", dst.display()))?;
            attach(&tree, &target, *attrs, src, dst)?;
            Ok(true)
        }
        Op::Fs {
            fstype,
            flags,
            data,
            ..
        } => {
            let target = create_in(d, &cname, Kind::Dir)
                .with_context(|| format!("mount point {}", dst.display()))?;
            sys::mount(fstype, &sys::fd_path(&target), fstype, *flags, Some(data))
                .with_context(|| format!("mount {fstype} on {}", dst.display()))?;
            Ok(true)
        }
    }
}

/// A bind source as a detached mount tree; `None` when an optional source is missing.
fn clone_source(src: &Path, kind: Kind, optional: bool) -> Result<Option<OwnedFd>> {
    match sys::open_tree_clone(src, kind == Kind::Dir) {
        Ok(t) => Ok(Some(t)),
        Err(e) if optional && e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("bind source {}", src.display())),
    }
}

/// Set `attrs` (nosuid, nodev, ro…) on a cloned tree and attach it on `target`.
fn attach(tree: &OwnedFd, target: &OwnedFd, attrs: u64, src: &Path, dst: &Path) -> Result<()> {
    if attrs != 0 {
        sys::mount_setattr(tree, attrs, true)
            .with_context(|| format!("set mount attributes on {}", dst.display()))?;
    }
    sys::move_mount(tree, target)
        .with_context(|| format!("bind {} on {}", src.display(), dst.display()))
}

/// Create `name` (no slash) in the directory `dir` and open it, never following a link.
fn create_in(dir: RawFd, name: &std::ffi::CStr, kind: Kind) -> std::io::Result<OwnedFd> {
    // SAFETY: dir is an open directory fd, name a valid C string without '/'.
    let r = unsafe {
        match kind {
            Kind::Dir => libc::mkdirat(dir, name.as_ptr(), 0o755),
            Kind::File => {
                let fd = libc::openat(
                    dir,
                    name.as_ptr(),
                    libc::O_CREAT | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                    0o644,
                );
                if fd >= 0 {
                    libc::close(fd);
                }
                fd.min(0)
            }
        }
    };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(e);
        }
    }
    let flags = libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    let flags = if kind == Kind::Dir {
        flags | libc::O_DIRECTORY
    } else {
        flags
    };
    sys::openat2(dir, name, flags as u64, 0, libc::RESOLVE_BENEATH)
}

/// Open (or create) a mount point; None when it is missing, cannot be created and is
/// optional (recorded in `skipped`).
fn target(
    root: &OwnedFd,
    dst: &Path,
    kind: Kind,
    can_create: bool,
    optional: bool,
    skipped: &mut Vec<String>,
) -> Result<Option<OwnedFd>> {
    // /dev and /tmp are tmpfs instances of ours: always writable.
    let under = |d: &str| {
        dst.to_str()
            .is_some_and(|s| s.len() > d.len() && s.starts_with(d))
    };
    let can_create = can_create || under("/dev/") || under("/tmp/");
    let r = if can_create {
        resolve::ensure_in_root(root, dst, kind)
    } else {
        resolve::open_in_root(root, dst)
    };
    match r {
        Ok(fd) => Ok(Some(fd)),
        // Absent and not creatable here (read-only image, or a directory owned by an
        // unmapped ID in the single-ID mode): skipped, and the user is told.
        Err(e)
            if optional
                && matches!(
                    e.raw_os_error(),
                    Some(libc::ENOENT) | Some(libc::EROFS) | Some(libc::EACCES) | Some(libc::EPERM)
                ) =>
        {
            skipped.push(dst.display().to_string());
            Ok(None)
        }
        Err(e) => Err(e).with_context(|| format!("mount point {} in the container", dst.display())),
    }
}

/// Make `root` the root directory (pivot_root, then detach the old root).
pub fn pivot(root: &OwnedFd) -> Result<()> {
    // SAFETY: root is an open directory (O_PATH fds are accepted by fchdir).
    if unsafe { libc::fchdir(root.as_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error()).context("chdir to the new root");
    }
    // SAFETY: "." names the new root; pivot_root(".", ".") stacks the old root on it.
    if unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error()).context("pivot_root");
    }
    // SAFETY: detach the old root now stacked at "."; then go to the new "/".
    unsafe {
        if libc::umount2(c".".as_ptr(), libc::MNT_DETACH) != 0 {
            return Err(std::io::Error::last_os_error()).context("detach the old root");
        }
        libc::chdir(c"/".as_ptr());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_order_and_flags() {
        let binds = vec![Bind {
            source: "/data".into(),
            dest: "/d".into(),
            read_only: true,
            device: false,
            noexec: false,
        }];
        let ops = plan(&Plan {
            tty_gid: false,
            root_mapped: true,
            host_pts: false,
            tmp_size: "1g",
            home: Some(Path::new("/home/a")),
            binds: &binds,
            etc_dir: Path::new("/etc"),
            private_ipc: false,
        });
        assert!(matches!(&ops[0], Op::Bind { src, .. } if src == Path::new("/proc")));
        let pts = ops.iter().find_map(|o| match o {
            Op::Fs {
                fstype: "devpts",
                data,
                ..
            } => Some(data.clone()),
            _ => None,
        });
        assert_eq!(pts.unwrap(), "newinstance,ptmxmode=0666,mode=0620");
        match ops.last().unwrap() {
            Op::Bind {
                dst,
                attrs,
                optional,
                ..
            } => {
                assert_eq!(dst, Path::new("/d"));
                assert_ne!(attrs & sys::MOUNT_ATTR_RDONLY, 0);
                assert!(!optional);
            }
            o => panic!("{o:?}"),
        }
        // /sys read-only; /dev nodes keep device access (no nodev).
        for o in &ops {
            if let Op::Bind { dst, attrs, .. } = o {
                if dst == Path::new("/sys") {
                    assert_ne!(attrs & sys::MOUNT_ATTR_RDONLY, 0);
                }
                if dst == Path::new("/dev/null") {
                    assert_eq!(attrs & sys::MOUNT_ATTR_NODEV, 0);
                }
            }
        }
    }

    /// Injected devices keep device access (no nodev); user binds never get it.
    #[test]
    fn devices_bind_with_device_access() {
        let binds = [
            Bind {
                source: "/dev/infiniband".into(),
                dest: "/dev/infiniband".into(),
                read_only: false,
                device: true,
                noexec: false,
            },
            Bind {
                source: "/srv".into(),
                dest: "/srv".into(),
                read_only: false,
                device: false,
                noexec: false,
            },
        ];
        let ops = plan(&Plan {
            tty_gid: false,
            root_mapped: false,
            host_pts: false,
            tmp_size: "1g",
            home: None,
            binds: &binds,
            etc_dir: Path::new("/etc"),
            private_ipc: false,
        });
        let attrs_of = |p: &str| {
            ops.iter()
                .find_map(|o| match o {
                    Op::Bind { dst, attrs, .. } if dst == Path::new(p) => Some(*attrs),
                    _ => None,
                })
                .unwrap()
        };
        assert_eq!(attrs_of("/dev/infiniband") & sys::MOUNT_ATTR_NODEV, 0);
        assert_ne!(attrs_of("/dev/infiniband") & sys::MOUNT_ATTR_NOSUID, 0);
        assert_ne!(attrs_of("/srv") & sys::MOUNT_ATTR_NODEV, 0);
    }

    #[test]
    fn private_ipc_binds_nothing_of_the_hosts_ipc() {
        let plan_with = |private_ipc| {
            plan(&Plan {
                tty_gid: false,
                root_mapped: false,
                host_pts: false,
                tmp_size: "1g",
                home: None,
                binds: &[],
                etc_dir: Path::new("/etc"),
                private_ipc,
            })
        };
        let host_ipc = |ops: &[Op]| {
            ops.iter().any(|o| {
                matches!(o, Op::Bind { src, .. }
                    if src.starts_with("/dev/shm") || src.starts_with("/dev/mqueue"))
            })
        };
        assert!(host_ipc(&plan_with(false)));
        let ops = plan_with(true);
        assert!(!host_ipc(&ops));
        let fs: Vec<_> = ops
            .iter()
            .filter_map(|o| match o {
                Op::Fs { fstype, dst, .. } => Some((*fstype, dst.clone())),
                _ => None,
            })
            .collect();
        assert!(fs.contains(&("tmpfs", "/dev/shm".into())), "{fs:?}");
        assert!(fs.contains(&("mqueue", "/dev/mqueue".into())), "{fs:?}");
    }
}

//! `--container-mounts` applied in a task's container, in the given order (binds,
//! `tmpfs:` and `umount:` entries interleaved as written, as enroot applies its fstab).
//!
//! Two phases, because the host paths are gone once the task has pivoted into its root:
//! [`open_sources`] runs after the task joined its holder's namespaces and before the
//! root is prepared: it clones each bind source as a detached mount tree (`open_tree`,
//! recursive for `rbind`, the default) as the job's user, with `ro`/`nosuid`/`nodev`/
//! `noexec` set on the tree; [`apply`] runs after pivot_root, still privileged in the user
//! namespace and in the task's own mount namespace: it creates missing destinations
//! inside the container (`x-create`), attaches the trees, mounts the tmpfs entries,
//! detaches the `umount:` ones and sets the propagation asked for.
//!
//! Rootless limits, refused rather than ignored: a user namespace cannot lift a
//! restriction the host mount of a source has (`rw`, `suid`, `dev`, `exec` on a source
//! that is mounted `ro`, `nosuid`, `nodev`, `noexec`), nor bind a source without the
//! mounts below it (`bind` of a directory with submounts): both refused on the node with
//! one line;
//! propagation is set on the container's copy only: `shared` makes the bind a peer
//! within the container, and a mount made in the container never reaches the host (the
//! host's mount namespace is more privileged), while host mounts still propagate into a
//! `slave`/`shared` bind.

use crate::mounts::{Create, Mount, Opts, Propagation, Source};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use warren::runtime::sys;

/// One entry, ready to open: a bind source resolved against the job's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Bind {
        entry: String,
        source: PathBuf,
        target: String,
        opts: Opts,
    },
    Tmpfs {
        entry: String,
        target: String,
        opts: Opts,
    },
    Umount {
        entry: String,
        target: String,
        nofail: bool,
    },
}

/// Pure: the entries as steps, in order; relative sources from the job's directory.
pub fn plan(mounts: &[Mount], cwd: &Path) -> Vec<Step> {
    mounts
        .iter()
        .map(|m| {
            let entry = m.to_string();
            let target = m.target.clone();
            match &m.source {
                Source::Path(p) => Step::Bind {
                    entry,
                    source: if p.starts_with('/') {
                        PathBuf::from(p)
                    } else {
                        cwd.join(p)
                    },
                    target,
                    opts: m.opts(),
                },
                Source::Tmpfs => Step::Tmpfs {
                    entry,
                    target,
                    opts: m.opts(),
                },
                Source::Umount => Step::Umount {
                    entry,
                    target,
                    nofail: m.opts().nofail,
                },
            }
        })
        .collect()
}

/// Pure: the `mount_setattr` attributes a bind tree gets.
pub fn bind_attrs(o: &Opts) -> u64 {
    [
        (o.read_only, sys::MOUNT_ATTR_RDONLY),
        (o.nosuid, sys::MOUNT_ATTR_NOSUID),
        (o.nodev, sys::MOUNT_ATTR_NODEV),
        (o.noexec, sys::MOUNT_ATTR_NOEXEC),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .fold(0, |acc, (_, a)| acc | a)
}

/// Pure: the mount flags of a tmpfs entry (nosuid and nodev unless `suid`; `ro`,
/// `noexec` as asked).
pub fn tmpfs_flags(o: &Opts) -> libc::c_ulong {
    let mut f = libc::MS_NODEV;
    if !o.want_suid {
        f |= libc::MS_NOSUID;
    }
    if o.read_only {
        f |= libc::MS_RDONLY;
    }
    if o.noexec {
        f |= libc::MS_NOEXEC;
    }
    f
}

/// Pure: the `mount(2)` flags of a propagation change.
pub fn propagation_flags((p, recursive): (Propagation, bool)) -> libc::c_ulong {
    let f = match p {
        Propagation::Private => libc::MS_PRIVATE,
        Propagation::Slave => libc::MS_SLAVE,
        Propagation::Shared => libc::MS_SHARED,
        Propagation::Unbindable => libc::MS_UNBINDABLE,
    };
    if recursive {
        f | libc::MS_REC
    } else {
        f
    }
}

/// Pure: the restriction of the source's host mount (statvfs `f_flag`) that an entry asks
/// to be absent, which a user namespace cannot lift.
pub fn locked_conflict(o: &Opts, f_flag: libc::c_ulong) -> Option<(&'static str, &'static str)> {
    [
        (o.want_rw, libc::ST_RDONLY, "rw", "read-only"),
        (o.want_suid, libc::ST_NOSUID, "suid", "nosuid"),
        (o.want_dev, libc::ST_NODEV, "dev", "nodev"),
        (o.want_exec, libc::ST_NOEXEC, "exec", "noexec"),
    ]
    .into_iter()
    .find(|(want, st, _, _)| *want && f_flag & st != 0)
    .map(|(_, _, flag, host)| (flag, host))
}

/// A step with its source opened.
pub enum Opened {
    Bind {
        entry: String,
        tree: OwnedFd,
        is_dir: bool,
        target: String,
        opts: Opts,
    },
    Other(Step),
    /// `nofail` and the source is missing.
    Skipped,
}

fn statvfs(path: &Path) -> std::io::Result<libc::statvfs> {
    let c = sys::cpath(path)?;
    // SAFETY: statvfs is plain data; zeroed is a valid value that the call overwrites.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a pointer to a statvfs we own.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st)
}

/// Phase 1 (host paths still visible, in the holder's user and mount namespaces, as the
/// job's user): clone every bind source as a detached tree with its attributes.
pub fn open_sources(steps: Vec<Step>) -> Result<Vec<Opened>, String> {
    steps
        .into_iter()
        .map(|s| {
            let Step::Bind {
                entry,
                source,
                target,
                opts,
            } = s
            else {
                return Ok(Opened::Other(s));
            };
            let fail = |what: String| format!("warren: --container-mounts {entry}: {what}");
            let meta = match std::fs::metadata(&source) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && opts.nofail => {
                    return Ok(Opened::Skipped)
                }
                Err(e) => return Err(fail(format!("{}: {e}", source.display()))),
            };
            let st = statvfs(&source).map_err(|e| fail(format!("{}: {e}", source.display())))?;
            if let Some((flag, host)) = locked_conflict(&opts, st.f_flag) {
                return Err(fail(format!(
                    "{flag}: {} is on a {host} mount, which a rootless container cannot lift",
                    source.display()
                )));
            }
            let tree = sys::open_tree_clone(&source, opts.recursive).map_err(|e| {
                if !opts.recursive && e.raw_os_error() == Some(libc::EINVAL) {
                    // The kernel refuses to uncover what mounts of a more privileged
                    // namespace hide: their parent can only be bound with them.
                    fail(format!("bind: {} has mounts below it, which a rootless container cannot leave out (use rbind)", source.display()))
                } else {
                    fail(format!("{}: {e}", source.display()))
                }
            })?;
            let attrs = bind_attrs(&opts);
            if attrs != 0 {
                sys::mount_setattr(&tree, attrs, true)
                    .map_err(|e| fail(format!("set the mount flags: {e}")))?;
            }
            Ok(Opened::Bind {
                entry,
                tree,
                is_dir: meta.is_dir(),
                target,
                opts,
            })
        })
        .collect()
}

/// Create a missing destination (inside the container: this runs after pivot_root).
fn ensure_target(target: &Path, dir: bool) -> std::io::Result<()> {
    if std::fs::symlink_metadata(target).is_ok() {
        return Ok(());
    }
    if dir {
        return std::fs::create_dir_all(target);
    }
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(target)
        .map(drop)
}

fn set_propagation(target: &Path, opts: &Opts) -> std::io::Result<()> {
    match opts.propagation {
        Some(p) => sys::mount("none", target, "", propagation_flags(p), None),
        None => Ok(()),
    }
}

/// Phase 2 (in the container, after pivot_root): every entry in order.
pub fn apply(opened: Vec<Opened>) -> Result<(), String> {
    for o in opened {
        match o {
            Opened::Skipped => {}
            Opened::Bind {
                entry,
                tree,
                is_dir,
                target,
                opts,
            } => {
                let fail = |what: &str, e: std::io::Error| {
                    format!("warren: --container-mounts {entry}: {what} {target}: {e}")
                };
                let dst = Path::new(&target);
                let dir = match opts.create {
                    Create::Dir => true,
                    Create::File => false,
                    Create::Auto => is_dir,
                };
                ensure_target(dst, dir).map_err(|e| fail("create", e))?;
                let t = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
                    .open(dst)
                    .map_err(|e| fail("open", e))?;
                sys::move_mount(&tree, &OwnedFd::from(t)).map_err(|e| fail("mount on", e))?;
                set_propagation(dst, &opts).map_err(|e| fail("set the propagation of", e))?;
            }
            Opened::Other(Step::Tmpfs {
                entry,
                target,
                opts,
            }) => {
                let fail = |what: &str, e: std::io::Error| {
                    format!("warren: --container-mounts {entry}: {what} {target}: {e}")
                };
                let dst = Path::new(&target);
                ensure_target(dst, true).map_err(|e| fail("create", e))?;
                let data = opts.data.join(",");
                sys::mount("tmpfs", dst, "tmpfs", tmpfs_flags(&opts), Some(&data))
                    .map_err(|e| fail("mount a tmpfs on", e))?;
                set_propagation(dst, &opts).map_err(|e| fail("set the propagation of", e))?;
            }
            Opened::Other(Step::Umount {
                entry,
                target,
                nofail,
            }) => {
                let c = sys::cpath(Path::new(&target))
                    .map_err(|e| format!("warren: --container-mounts {entry}: {e}"))?;
                // SAFETY: a valid C string; detaching a mount of our own mount namespace.
                if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
                    let e = std::io::Error::last_os_error();
                    let nothing = matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOENT));
                    if !(nofail && nothing) {
                        return Err(format!("warren: --container-mounts {entry}: {e}"));
                    }
                }
            }
            Opened::Other(Step::Bind { .. }) => {
                unreachable!("open_sources turns every bind into Opened::Bind")
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mounts::parse_list;

    #[test]
    fn plan_keeps_the_given_order() {
        let m = parse_list("tmpfs:/t,/a:/t/a:ro,umount:/t,./d:/d:bind").unwrap();
        let p = plan(&m, Path::new("/work"));
        let kinds: Vec<&str> = p
            .iter()
            .map(|s| match s {
                Step::Bind { .. } => "bind",
                Step::Tmpfs { .. } => "tmpfs",
                Step::Umount { .. } => "umount",
            })
            .collect();
        assert_eq!(kinds, ["tmpfs", "bind", "umount", "bind"]);
        match &p[3] {
            Step::Bind { source, opts, .. } => {
                assert_eq!(source, Path::new("/work/./d"));
                assert!(!opts.recursive);
            }
            _ => unreachable!(),
        }
    }

    #[test]
    fn flags_as_the_kernel_takes_them() {
        let o = |v: &str| parse_list(v).unwrap()[0].opts();
        assert_eq!(
            bind_attrs(&o("/a:/b:ro+noexec")),
            sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NOEXEC
        );
        assert_eq!(bind_attrs(&o("/a:/b")), 0);
        assert_eq!(
            tmpfs_flags(&o("tmpfs:/t")),
            libc::MS_NOSUID | libc::MS_NODEV
        );
        assert_eq!(
            tmpfs_flags(&o("tmpfs:/t:suid+ro")),
            libc::MS_NODEV | libc::MS_RDONLY
        );
        assert_eq!(
            propagation_flags((Propagation::Slave, true)),
            libc::MS_SLAVE | libc::MS_REC
        );
        assert_eq!(
            propagation_flags((Propagation::Shared, false)),
            libc::MS_SHARED
        );
        assert_eq!(
            locked_conflict(&o("/a:/b:exec"), libc::ST_NOEXEC | libc::ST_NOSUID),
            Some(("exec", "noexec"))
        );
        assert_eq!(locked_conflict(&o("/a:/b:suid"), libc::ST_NOEXEC), None);
        assert_eq!(
            locked_conflict(&o("/a:/b:rw"), libc::ST_RDONLY),
            Some(("rw", "read-only"))
        );
    }
}

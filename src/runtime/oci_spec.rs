//! A checked bundle (`bundle::Bundle`) + its root + the caller → the `RunSpec` the
//! ordinary set-up executes (one container start path for `warren run` and the OCI
//! runtime). The user is always UID 0 inside unless the config names another user; the
//! map is warren's remap-root map from the caller's subordinate ranges unless the config
//! gives maps, which must stay within the caller's own ID and ranges.

use super::bundle::{self, Bundle};
use super::caller::Caller;
use super::holder::Scope;
use super::idmap::{Extent, IdMap, Identity};
use super::mounts::Bind;
use super::spec::{self, Mode, OverlayChoice, RunSpec, Writable};
use super::{env, state, userns};
use crate::config::RunConfig;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// The root the bundle resolved to.
pub struct Root {
    /// A root file system directory (canonical) or an image's squashfs.
    pub path: PathBuf,
    /// A name for records (`warren ps`): the image reference or the bundle.
    pub name: String,
    /// The image's digest, or a stand-in naming the directory.
    pub digest: String,
}

/// `root.path` of a bundle in `dir`, as a root directory.
pub fn dir_root(bundle_dir: &Path, path: &Path) -> Result<Root> {
    let p = bundle_dir.join(path);
    let canon = std::fs::canonicalize(&p).with_context(|| format!("root.path {}", p.display()))?;
    if !canon.is_dir() {
        bail!("root.path {} is not a directory", p.display());
    }
    Ok(Root {
        name: canon.display().to_string(),
        digest: crate::digest::Digest::of(format!("dir:{}", canon.display()).as_bytes())
            .to_string(),
        path: canon,
    })
}

/// The ID maps: given ones checked against the caller's ranges, else warren's.
fn maps(b: &Bundle, user: &Caller) -> Result<(IdMap, Vec<String>)> {
    let plan = userns::plan(user, Identity::RemapRoot)?;
    let mut notices = plan.problems.clone();
    let (Some(u), Some(g)) = (&b.uid_map, &b.gid_map) else {
        notices.extend(plan.notice.clone());
        return Ok((plan.map, notices));
    };
    let su = crate::subid::read(Path::new("/etc/subuid"))?;
    let sg = crate::subid::read(Path::new("/etc/subgid"))?;
    let ranges = |f: &crate::subid::SubIdFile| -> Vec<(u64, u64)> {
        f.ranges_for(&user.name, user.uid)
            .iter()
            .map(|e| (e.start, e.count))
            .collect()
    };
    bundle::check_map("linux.uidMappings", u, user.uid, &ranges(&su))?;
    bundle::check_map("linux.gidMappings", g, user.gid, &ranges(&sg))?;
    let inside = |m: &[Extent], own: u32| {
        m.iter()
            .find(|e| own >= e.outside && (own as u64) < e.outside as u64 + e.count as u64)
            .map_or(0, |e| e.inside + (own - e.outside))
    };
    // Only the own IDs: the process writes its map itself (no setuid helper needed).
    let own_only = |m: &[Extent], own: u32| m.len() == 1 && m[0].outside == own && m[0].count == 1;
    Ok((
        IdMap {
            inside_uid: inside(u, user.uid),
            inside_gid: inside(g, user.gid),
            single: own_only(u, user.uid) && own_only(g, user.gid),
            uid: u.clone(),
            gid: g.clone(),
        },
        notices,
    ))
}

/// Build the spec; returns the notices for the user too.
pub fn build(
    cfg: &RunConfig,
    b: &Bundle,
    root: &Root,
    id: &str,
    user: &Caller,
) -> Result<(RunSpec, Vec<String>)> {
    let (map, mut notices) = maps(b, user)?;
    if !map.maps_uid(b.uid) || !map.maps_gid(b.gid) {
        bail!(
            "process.user {}:{} is not mapped in the container's user namespace",
            b.uid,
            b.gid
        );
    }
    if let Some(g) = b.additional_gids.iter().find(|g| !map.maps_gid(**g)) {
        bail!(
            "process.user.additionalGids: gid {g} is not mapped in the container's user namespace"
        );
    }
    if !b.additional_gids.is_empty() && map.single {
        // A map written without newgidmap denies setgroups(2) in the namespace.
        bail!("process.user.additionalGids needs a gid map written by newgidmap (omit linux.uidMappings/gidMappings, or map more than your own IDs)");
    }
    let rundir = user.runtime_dir.clone();
    let s = rundir.to_string_lossy();
    if s.contains([',', ':', '\\']) {
        bail!("runtime dir {s} contains ',', ':' or '\\', which overlay options cannot carry; set run.runtime_dir");
    }
    state::ensure_runtime_dir(&rundir, user.uid)?;
    let mut e = env::Env::default();
    for (k, v) in &b.env {
        e.set(k, v);
    }
    let binds = b
        .binds
        .iter()
        .map(|m| {
            Bind {
                source: m.source.clone(),
                dest: m.dest.clone(),
                read_only: m.read_only,
                device: false,
                noexec: false,
            }
            .resolve_source()
            .map_err(|e| e.context(format!("mount on {}", m.dest.display())))
        })
        .collect::<Result<Vec<_>>>()?;
    let overlay = match cfg.overlay.as_str() {
        "native" => OverlayChoice::Native,
        "fuse" => OverlayChoice::Fuse,
        _ => OverlayChoice::Auto,
    };
    let writable = if b.readonly {
        Writable::ReadOnly
    } else {
        Writable::Tmpfs
    };
    let is_image = !root.path.is_dir();
    let squashfuse_configured = if is_image {
        spec::helper(&cfg.squashfuse, "mounting images")?
    } else {
        PathBuf::from(&cfg.squashfuse)
    };
    let squashfuse = if is_image {
        spec::hardened_squashfuse(&squashfuse_configured, &rundir, user.uid, &mut notices)
    } else {
        squashfuse_configured.clone()
    };
    let spec = RunSpec {
        squashfs: root.path.clone(),
        image: root.name.clone(),
        digest: root.digest.clone(),
        argv: b.args.clone(),
        env: e,
        workdir: Some(b.cwd.clone()),
        image_user: Some(format!("{}:{}", b.uid, b.gid)),
        identity: Identity::RemapRoot,
        map,
        writable: writable.clone(),
        overlay,
        binds,
        home: None,
        user: user.clone(),
        rundir,
        tmpfs_size: cfg.tmpfs_size.clone(),
        squashfuse,
        squashfuse_configured,
        builtin_server: cfg.image_server == "builtin",
        fuse_overlayfs: crate::util::which(&cfg.fuse_overlayfs)
            .unwrap_or_else(|| PathBuf::from(&cfg.fuse_overlayfs)),
        fake_chown: false,
        timing: false,
        quiet: false,
        tty: false,
        name: Some(id.to_string()),
        mode: Mode::Container,
        scope: Scope::User,
        join: None,
        fresh_holder: false,
        // A bundle's root is a directory: no image server, nothing to read ahead.
        prefetch_list: None,
        // A pid namespace is warren's contain mode: the monitor forks a PID-namespace
        // init (which also makes IPC private and hides the host's /dev/pts).
        contain: b.namespaces.pid,
        caps: b.capabilities,
        mpi: None,
        hook_bundle: Default::default(),
        guard_libs: vec![],
    };
    Ok((spec, notices))
}

/// `clone(2)` flags of the namespaces the config asks for besides user and mount.
pub fn unshare_flags(b: &Bundle) -> libc::c_int {
    let n = &b.namespaces;
    [
        (n.network, libc::CLONE_NEWNET),
        (n.ipc, libc::CLONE_NEWIPC),
        (n.uts, libc::CLONE_NEWUTS),
        (n.cgroup, libc::CLONE_NEWCGROUP),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .fold(0, |acc, (_, f)| acc | f)
}

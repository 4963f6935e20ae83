//! Host MPI / interconnect injection (Apptainer's hybrid/bind model, Sarus's MPI hook):
//! the site's `[mpi]` configuration names host libraries, directories, devices and
//! environment; with injection on, [`plan`] resolves them on the host (the libraries'
//! ELF dependencies too, glibc's own excepted) and [`Injection::apply`] adds them to a
//! `RunSpec`: libraries bound read-only into `mpi.lib_dir` (first in `LD_LIBRARY_PATH`),
//! directories read-only at the same path, devices at the same path with device access.
//! In the set-up, [`check_image`] looks for the image's own `libmpi` and refuses an
//! ABI-incompatible one (`mpi_abi`) unless the mode is `force`. docs/mpi.md.
//!
//! Never prints; host paths are checked here, image paths only through the image root's
//! fd (`resolve`), so an image's symlinks cannot lead the check onto the host.

use super::mounts::Bind;
use super::mpi_abi::{self, Abi};
use super::resolve;
use super::spec::RunSpec;
use crate::config::MpiConfig;
use std::collections::BTreeSet;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// `--mpi-inject` / `--container-mpi-inject` / `mpi.inject`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No injection (the default): the image's own MPI, if any.
    Off,
    /// Inject; refuse an image whose MPI is ABI-incompatible with the host's.
    On,
    /// Inject even into an image whose MPI looks incompatible.
    Force,
}

impl Mode {
    /// Parse `off`, `on` or `force` (`what` names the option or key in the error).
    pub fn parse(s: &str, what: &str) -> Result<Mode, InjectError> {
        match s {
            "off" => Ok(Mode::Off),
            "on" => Ok(Mode::On),
            "force" => Ok(Mode::Force),
            _ => Err(InjectError::Mode(what.to_string(), s.to_string())),
        }
    }
}

/// Why an injection cannot be planned or an image is refused; one line each.
#[derive(Debug, Error)]
pub enum InjectError {
    #[error("{0} {1:?}: expected off, on or force")]
    Mode(String, String),
    #[error("MPI injection is on but the [mpi] configuration lists no libraries, directories or devices to inject (docs/mpi.md)")]
    Nothing,
    #[error("mpi.{key} {path}: {err}")]
    Host {
        key: &'static str,
        path: String,
        err: std::io::Error,
    },
    #[error("mpi.{key} {path}: {what}")]
    Kind {
        key: &'static str,
        path: String,
        what: &'static str,
    },
    #[error("mpi.libraries and mpi.directories: more than {MAX_LIBRARIES} dependencies or {max} ELF files", max = super::libguard::MAX_LIBRARY_FILES)]
    TooMany,
    #[error("the image's MPI, {image} in {dir}, is not ABI-compatible with the host MPI to inject, {host}: {why}; use an image built against the host's MPI, --mpi-inject=off to run the image's own MPI, or --mpi-inject=force to inject anyway")]
    Incompatible {
        image: String,
        dir: String,
        host: String,
        why: String,
    },
}

/// Bound on the injected dependencies.
pub const MAX_LIBRARIES: usize = 512;

/// glibc's own libraries: they must stay the image's (its loader and libc go together;
/// injected libraries needing a newer glibc are the glibc guard's business).
fn is_glibc(name: &str) -> bool {
    name.starts_with("ld-linux")
        || matches!(
            name,
            "libc.so.6"
                | "libm.so.6"
                | "libmvec.so.1"
                | "libpthread.so.0"
                | "libdl.so.2"
                | "librt.so.1"
                | "libresolv.so.2"
                | "libutil.so.1"
                | "libanl.so.1"
                | "libnsl.so.1"
                | "libBrokenLocale.so.1"
                | "libthread_db.so.1"
                | "libc_malloc_debug.so.0"
        )
}

/// The multiarch triplet of this build (`x86_64-linux-gnu`).
fn triplet() -> String {
    format!("{}-linux-gnu", std::env::consts::ARCH)
}

/// Host directories searched for the libraries' dependencies after the listed
/// libraries' own directories (the loader's defaults on Debian and RHEL families).
fn host_lib_dirs() -> Vec<PathBuf> {
    let t = triplet();
    vec![
        PathBuf::from(format!("/lib/{t}")),
        PathBuf::from(format!("/usr/lib/{t}")),
        PathBuf::from("/lib64"),
        PathBuf::from("/usr/lib64"),
        PathBuf::from("/lib"),
        PathBuf::from("/usr/lib"),
    ]
}

/// Directories of an image searched for its `libmpi` (after its `LD_LIBRARY_PATH`):
/// the loader's defaults and where distributions put their MPI packages.
fn image_lib_dirs() -> Vec<PathBuf> {
    let t = triplet();
    [
        format!("/usr/lib/{t}"),
        format!("/lib/{t}"),
        "/usr/lib64".into(),
        "/lib64".into(),
        "/usr/lib".into(),
        "/lib".into(),
        "/usr/local/lib".into(),
        "/usr/local/lib64".into(),
        format!("/usr/lib/{t}/openmpi/lib"),
        format!("/usr/lib/{t}/mpich/lib"),
        "/usr/lib64/openmpi/lib".into(),
        "/usr/lib64/mpich/lib".into(),
        "/opt/openmpi/lib".into(),
        "/opt/mpich/lib".into(),
    ]
    .into_iter()
    .map(PathBuf::from)
    .collect()
}

/// What the set-up checks in the image before the injected files hide anything.
#[derive(Debug, Clone)]
pub struct ImageCheck {
    /// The host MPI's ABI (`None`: no `libmpi` among the injected libraries).
    pub host: Option<Abi>,
    pub force: bool,
    /// The image's own `LD_LIBRARY_PATH` directories, searched first.
    pub search: Vec<PathBuf>,
    /// Host paths of every injected library (what the glibc guard looks at).
    pub libraries: Vec<PathBuf>,
}

/// A planned injection.
#[derive(Debug, Clone)]
pub struct Injection {
    pub mode: Mode,
    /// Libraries into `lib_dir`, directories at their own path; all read-only.
    pub binds: Vec<Bind>,
    /// Device nodes or directories of them, bound at the same path, device access kept.
    pub devices: Vec<PathBuf>,
    /// `mpi.env`, in order.
    pub env: Vec<(String, String)>,
    /// Set when libraries are injected: prepended to `LD_LIBRARY_PATH`.
    pub lib_dir: Option<PathBuf>,
    /// The host MPI's ABI, from the injected `libmpi`.
    pub host_abi: Option<Abi>,
    /// Host paths of the injected library files.
    pub libraries: Vec<PathBuf>,
    /// The libraries inside the injected directories (MCA plugins): the glibc guard
    /// checks them too.
    pub plugins: Vec<PathBuf>,
}

fn host_err<'a>(key: &'static str, p: &'a Path) -> impl FnOnce(std::io::Error) -> InjectError + 'a {
    move |err| InjectError::Host {
        key,
        path: p.display().to_string(),
        err,
    }
}

/// The `DT_NEEDED` names of a host ELF file (`None`: not a 64-bit ELF we can read).
fn needed(path: &Path) -> Option<Vec<String>> {
    let f = std::fs::File::open(path).ok()?;
    super::elfdeps::read_at_most(&f, 256).map(|d| d.needed)
}

/// Resolve the configuration on the host: `None` when the mode is off.
pub fn plan(cfg: &MpiConfig, mode: Mode) -> Result<Option<Injection>, InjectError> {
    if mode == Mode::Off {
        return Ok(None);
    }
    if cfg.libraries.is_empty() && cfg.directories.is_empty() && cfg.devices.is_empty() {
        return Err(InjectError::Nothing);
    }
    // Libraries: (name inside, host file), listed ones first, then dependencies
    // breadth-first, each name once.
    let mut libs: Vec<(String, PathBuf)> = Vec::new();
    let mut names = BTreeSet::new();
    let mut search: Vec<PathBuf> = Vec::new();
    for l in &cfg.libraries {
        let real = std::fs::canonicalize(l).map_err(host_err("libraries", l))?;
        if !real.is_file() {
            return Err(InjectError::Kind {
                key: "libraries",
                path: l.display().to_string(),
                what: "is not a file",
            });
        }
        if needed(&real).is_none() {
            return Err(InjectError::Kind {
                key: "libraries",
                path: l.display().to_string(),
                what: "is not a 64-bit ELF library",
            });
        }
        let name = l
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(d) = l.parent() {
            if !search.iter().any(|s| s == d) {
                search.push(d.to_path_buf());
            }
        }
        if names.insert(name.clone()) {
            libs.push((name, real));
        }
    }
    search.extend(host_lib_dirs());
    // The ELF files in the directories (MCA plugins) need their dependencies too.
    let mut plugins = Vec::new();
    for d in &cfg.directories {
        super::libguard::library_files(d, &mut plugins);
    }
    let listed = libs.len();
    let mut queue: Vec<PathBuf> = libs.iter().map(|(_, p)| p.clone()).collect();
    queue.extend(plugins.iter().cloned());
    let mut i = 0;
    while i < queue.len() {
        for n in needed(&queue[i]).unwrap_or_default() {
            if is_glibc(&n) || n.contains('/') || names.contains(&n) {
                continue;
            }
            // Not found on the host: the image may have it; the loader will say if not.
            if let Some(p) = search.iter().map(|d| d.join(&n)).find(|p| p.is_file()) {
                let real = std::fs::canonicalize(&p).map_err(host_err("libraries", &p))?;
                names.insert(n.clone());
                libs.push((n, real.clone()));
                queue.push(real);
            }
        }
        if libs.len() - listed > MAX_LIBRARIES || queue.len() > super::libguard::MAX_LIBRARY_FILES {
            return Err(InjectError::TooMany);
        }
        i += 1;
    }
    let mut binds: Vec<Bind> = libs
        .iter()
        .map(|(n, real)| Bind {
            source: real.clone(),
            dest: cfg.lib_dir.join(n),
            read_only: true,
            device: false,
            noexec: false,
        })
        .collect();
    for d in &cfg.directories {
        let real = std::fs::canonicalize(d).map_err(host_err("directories", d))?;
        if !real.is_dir() {
            return Err(InjectError::Kind {
                key: "directories",
                path: d.display().to_string(),
                what: "is not a directory",
            });
        }
        binds.push(Bind {
            source: real,
            dest: d.clone(),
            read_only: true,
            device: false,
            noexec: false,
        });
    }
    let mut devices = Vec::new();
    for d in &cfg.devices {
        let md = std::fs::metadata(d).map_err(host_err("devices", d))?;
        use std::os::unix::fs::FileTypeExt;
        let t = md.file_type();
        if !(t.is_char_device() || t.is_block_device() || t.is_dir()) {
            return Err(InjectError::Kind {
                key: "devices",
                path: d.display().to_string(),
                what: "is not a device node or a directory",
            });
        }
        devices.push(d.clone());
    }
    let env = cfg
        .env
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let host_abi = mpi_abi::most_precise(
        libs.iter()
            .flat_map(|(n, real)| {
                let real_name = real.file_name().map(|f| f.to_string_lossy().into_owned());
                [Some(n.clone()), real_name]
            })
            .flatten()
            .filter_map(|n| mpi_abi::from_file_name(&n)),
    );
    Ok(Some(Injection {
        mode,
        binds,
        devices,
        env,
        lib_dir: (!libs.is_empty()).then(|| cfg.lib_dir.clone()),
        host_abi,
        libraries: libs.into_iter().map(|(_, p)| p).collect(),
        plugins,
    }))
}

impl Injection {
    /// The variables to set: `mpi.env`, then `LD_LIBRARY_PATH` with `lib_dir` first
    /// (`current`: its value without injection).
    pub fn env_changes(&self, current: Option<&str>) -> Vec<(String, String)> {
        let mut v = self.env.clone();
        if let Some(d) = &self.lib_dir {
            let d = d.display().to_string();
            let ld = match current.filter(|c| !c.is_empty()) {
                Some(c) => format!("{d}:{c}"),
                None => d,
            };
            v.push(("LD_LIBRARY_PATH".into(), ld));
        }
        v
    }

    /// The check the set-up runs on the image (`image_ld`: the image's
    /// `LD_LIBRARY_PATH`, whose directories are searched first).
    pub fn image_check(&self, image_ld: Option<&str>) -> ImageCheck {
        ImageCheck {
            host: self.host_abi.clone(),
            force: self.mode == Mode::Force,
            search: image_ld
                .unwrap_or_default()
                .split(':')
                .filter(|d| d.starts_with('/'))
                .map(PathBuf::from)
                .collect(),
            libraries: self.libraries.clone(),
        }
    }

    /// Add the injection to a spec: binds, devices, environment, and the image check.
    pub fn apply(&self, spec: &mut RunSpec) {
        let image_ld = spec.env.get("LD_LIBRARY_PATH").map(str::to_string);
        spec.mpi = Some(self.image_check(image_ld.as_deref()));
        spec.binds.extend(self.binds.iter().cloned());
        spec.guard_libs.extend(self.plugins.iter().cloned());
        // Devices are binds at the same path that keep device access (as CDI's).
        spec.binds.extend(self.devices.iter().map(|d| Bind {
            source: d.clone(),
            dest: d.clone(),
            read_only: false,
            device: true,
            noexec: false,
        }));
        for (k, v) in self.env_changes(image_ld.as_deref()) {
            spec.env.set(&k, &v);
        }
    }
}

/// The image's own `libmpi`: the directory it is in and its ABI (read through `root`,
/// the image's root directory, before anything is bound over it).
pub fn image_abi(root: &OwnedFd, search: &[PathBuf]) -> Option<(PathBuf, Abi)> {
    for dir in search.iter().cloned().chain(image_lib_dirs()) {
        let Ok(fd) = resolve::open_in_root_flags(root, &dir, libc::O_RDONLY | libc::O_DIRECTORY)
        else {
            continue;
        };
        let Ok(mut d) = nix::dir::Dir::from_fd(fd) else {
            continue;
        };
        let mut found = Vec::new();
        for e in d.iter().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(abi) = mpi_abi::from_file_name(&name) else {
                continue;
            };
            found.push(abi);
        }
        // The names' link targets say more (`libmpi.so.40 -> libmpi.so.40.30.4`); only
        // their base names are read, never followed.
        let mut targets = Vec::new();
        for a in &found {
            if let Ok(t) = nix::fcntl::readlinkat(&d, a.file.as_str()) {
                let t = PathBuf::from(t);
                if let Some(b) = t
                    .file_name()
                    .and_then(|f| mpi_abi::from_file_name(&f.to_string_lossy()))
                    .filter(|b| b.soname == a.soname)
                {
                    targets.push(b);
                }
            }
        }
        // The image's MPI: `libmpi.so.N` (what programs of the MPI ABIs link), else
        // MPICH's own `libmpich.so.N` (Debian's libmpich12 ships only that).
        let soname = |prefix: &str| {
            found
                .iter()
                .filter(|a| a.file.starts_with(prefix))
                .map(|a| a.soname)
                .min()
        };
        if let Some(s) = soname("libmpi.so.").or_else(|| soname("libmpich.so.")) {
            let best =
                mpi_abi::most_precise(found.into_iter().chain(targets).filter(|a| a.soname == s))?;
            return Some((dir, best));
        }
    }
    None
}

/// The set-up's check of the image (called with the image's root before any bind):
/// `Err` when its MPI is ABI-incompatible with the host's and the mode is not `force`;
/// `Ok(Some(notice))` when `force` overrides a mismatch.
pub fn check_image(root: &OwnedFd, check: &ImageCheck) -> Result<Option<String>, InjectError> {
    let mut notice = None;
    if let Some(host) = &check.host {
        if let Some((dir, image)) = image_abi(root, &check.search) {
            if let Some(why) = mpi_abi::incompatibility(host, &image) {
                if check.force {
                    notice = Some(format!(
                        "--mpi-inject=force: injecting {host} although the image's MPI is {image} in {} ({why})",
                        dir.display()
                    ));
                } else {
                    return Err(InjectError::Incompatible {
                        image: image.to_string(),
                        dir: dir.display().to_string(),
                        host: host.to_string(),
                        why,
                    });
                }
            }
        }
    }
    // The glibc-version guard of injected host libraries (libguard) is called here,
    // with `check.libraries` and the image root: one call point for every front end.
    Ok(notice)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> MpiConfig {
        MpiConfig::default()
    }

    #[test]
    fn modes() {
        assert_eq!(Mode::parse("on", "--mpi-inject").unwrap(), Mode::On);
        assert_eq!(Mode::parse("force", "x").unwrap(), Mode::Force);
        assert_eq!(Mode::parse("off", "x").unwrap(), Mode::Off);
        let e = Mode::parse("yes", "--mpi-inject").unwrap_err().to_string();
        assert_eq!(e, "--mpi-inject \"yes\": expected off, on or force");
    }

    #[test]
    fn off_or_empty() {
        assert!(plan(&cfg(), Mode::Off).unwrap().is_none());
        assert!(matches!(plan(&cfg(), Mode::On), Err(InjectError::Nothing)));
    }

    #[test]
    fn host_paths_checked() {
        let mut c = cfg();
        c.libraries = vec!["/nonexistent/libmpi.so.40".into()];
        let e = plan(&c, Mode::On).unwrap_err().to_string();
        assert!(
            e.starts_with("mpi.libraries /nonexistent/libmpi.so.40: "),
            "{e}"
        );
        c.libraries = vec!["/etc/passwd".into()];
        let e = plan(&c, Mode::On).unwrap_err().to_string();
        assert!(e.contains("not a 64-bit ELF library"), "{e}");
        c.libraries = vec![];
        c.devices = vec!["/etc/passwd".into()];
        let e = plan(&c, Mode::On).unwrap_err().to_string();
        assert!(e.contains("not a device node"), "{e}");
    }

    /// A host library with its dependencies, glibc's left out; devices and env kept.
    #[test]
    fn closure_of_a_host_library() {
        let t = triplet();
        let Some(lib) = [
            format!("/usr/lib/{t}/libzstd.so.1"),
            format!("/lib/{t}/libzstd.so.1"),
        ]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists()) else {
            panic!("libzstd.so.1 (a dependency of zstd, installed by setup-host.sh) is missing");
        };
        let mut c = cfg();
        c.libraries = vec![lib];
        c.devices = vec!["/dev/null".into()];
        c.env = vec!["A=1".into()];
        let i = plan(&c, Mode::Force).unwrap().unwrap();
        assert_eq!(
            i.binds[0].dest,
            Path::new("/usr/lib/warren-mpi/libzstd.so.1")
        );
        assert!(i.binds.iter().all(|b| b.read_only));
        assert!(!i
            .binds
            .iter()
            .any(|b| b.dest.ends_with("libc.so.6") || b.dest.ends_with("libm.so.6")));
        assert_eq!(i.devices, [PathBuf::from("/dev/null")]);
        assert_eq!(i.host_abi, None);
        assert_eq!(
            i.env_changes(Some("/opt/x")),
            [
                ("A".to_string(), "1".to_string()),
                (
                    "LD_LIBRARY_PATH".to_string(),
                    "/usr/lib/warren-mpi:/opt/x".to_string()
                )
            ]
        );
        let chk = i.image_check(Some("/opt/x:rel:"));
        assert!(chk.force);
        assert_eq!(chk.search, [PathBuf::from("/opt/x")]);
    }

    /// The image's libmpi is found by soname, its link target read (never followed).
    #[test]
    fn image_libmpi() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("usr/lib64");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("libmpich.so.12.1.8"), b"").unwrap();
        std::os::unix::fs::symlink("libmpich.so.12.1.8", dir.join("libmpi.so.12")).unwrap();
        // A symlink pointing out of the image is only a name.
        std::os::unix::fs::symlink("/etc/passwd", dir.join("libmpi.so.40")).unwrap();
        let fd: OwnedFd = std::fs::File::open(root.path()).unwrap().into();
        let (d, abi) = image_abi(&fd, &[]).unwrap();
        assert_eq!(d, Path::new("/usr/lib64"));
        assert_eq!(abi.file, "libmpich.so.12.1.8");
        // Debian's libmpich12: libmpich.so.12 only, found in the multiarch directory.
        let deb = tempfile::tempdir().unwrap();
        let ddir = deb.path().join("usr/lib").join(triplet());
        std::fs::create_dir_all(&ddir).unwrap();
        std::fs::write(ddir.join("libmpich.so.12.2.2"), b"").unwrap();
        std::os::unix::fs::symlink("libmpich.so.12.2.2", ddir.join("libmpich.so.12")).unwrap();
        std::os::unix::fs::symlink("libmpichcxx.so.12.2.2", ddir.join("libmpichcxx.so.12"))
            .unwrap();
        let dfd: OwnedFd = std::fs::File::open(deb.path()).unwrap().into();
        assert_eq!(image_abi(&dfd, &[]).unwrap().1.file, "libmpich.so.12.2.2");
        let host = mpi_abi::from_file_name("libmpi.so.40.30.4").unwrap();
        let mut chk = ImageCheck {
            host: Some(host),
            force: false,
            search: vec![],
            libraries: vec![],
        };
        let e = check_image(&fd, &chk).unwrap_err().to_string();
        assert!(
            e.starts_with("the image's MPI, MPICH ABI (libmpich.so.12.1.8) in /usr/lib64, is not ABI-compatible with the host MPI to inject, Open MPI 4.1 (libmpi.so.40.30.4): a different MPI ABI"),
            "{e}"
        );
        chk.force = true;
        assert!(check_image(&fd, &chk).unwrap().unwrap().contains("force"));
        let empty = tempfile::tempdir().unwrap();
        let fd: OwnedFd = std::fs::File::open(empty.path()).unwrap().into();
        chk.force = false;
        assert_eq!(check_image(&fd, &chk).unwrap(), None);
    }
}

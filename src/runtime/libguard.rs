//! The library mismatch guard: host libraries brought into a container (CDI mounts of
//! `.so` files, host MPI injection) are loaded by the image's glibc. When one needs a
//! glibc symbol version newer than the image's libc defines (or the image has no glibc
//! at all), the program would fail deep inside with "version `GLIBC_2.34' not found";
//! [`check`] says so at start, in one line, naming the library, the version it needs and
//! the image's.
//!
//! Versions come from the ELF files themselves (`elfdeps::versions`): what a host library
//! needs from `.gnu.version_r` (every `GLIBC_x.y[.z]` it needs from any library), what the
//! image's `libc.so.6` defines from its `.gnu.version_d`. [`judge`] is pure.

use super::elfdeps;
use super::resolve;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// A glibc symbol version (`GLIBC_2.2.5` → [2, 2, 5]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct GlibcVersion(pub Vec<u32>);

impl std::fmt::Display for GlibcVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|n| n.to_string()).collect();
        write!(f, "{}", parts.join("."))
    }
}

/// `GLIBC_x.y[.z]` (not `GLIBC_PRIVATE`, not other libraries' version names).
pub fn parse_version(s: &str) -> Option<GlibcVersion> {
    let rest = s.strip_prefix("GLIBC_")?;
    let v = rest
        .split('.')
        .map(|p| p.parse::<u32>().ok())
        .collect::<Option<Vec<_>>>()?;
    (v.len() >= 2 && v.len() <= 4).then_some(GlibcVersion(v))
}

/// A host library the image's glibc cannot load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("host library {} needs glibc {needs} but the image has no glibc (no libc.so.6: static or musl-based image); use an image with glibc {needs} or newer", lib.display())]
    NoGlibc { lib: PathBuf, needs: GlibcVersion },
    #[error("host library {} needs glibc {needs} but the image has glibc {image}: use an image with glibc {needs} or newer (or host libraries built for {image})", lib.display())]
    TooOld {
        lib: PathBuf,
        needs: GlibcVersion,
        image: GlibcVersion,
    },
}

/// Where images keep libc.so.6 (Debian multiarch, RHEL lib64, others).
const LIBC_PATHS: &[&str] = &[
    "/lib/x86_64-linux-gnu/libc.so.6",
    "/usr/lib/x86_64-linux-gnu/libc.so.6",
    "/lib64/libc.so.6",
    "/usr/lib64/libc.so.6",
    "/lib/aarch64-linux-gnu/libc.so.6",
    "/usr/lib/aarch64-linux-gnu/libc.so.6",
    "/lib/powerpc64le-linux-gnu/libc.so.6",
    "/lib/libc.so.6",
    "/usr/lib/libc.so.6",
];

/// The newest glibc version `file` needs (from any library), if it needs one.
pub fn needed(file: &Path) -> Option<GlibcVersion> {
    use std::os::unix::fs::OpenOptionsExt;
    // Non-blocking: a FIFO named like a library must not hang the start.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(file)
        .ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    elfdeps::versions(&f)?
        .needed
        .iter()
        .filter_map(|(_, v)| parse_version(v))
        .max()
}

/// The newest version a libc defines (its glibc release).
pub fn defined<R: elfdeps::ReadAt + ?Sized>(libc: &R) -> Option<GlibcVersion> {
    elfdeps::versions(libc)?
        .defined
        .iter()
        .filter_map(|v| parse_version(v))
        .max()
}

/// The glibc of the image whose root is `image_root` (an open directory, paths resolved
/// inside it): `None` when it has no libc.so.6 (or one that is not a regular 64-bit ELF
/// file). Only the headers and version sections are read (the image is hostile input:
/// opened non-blocking, so a FIFO there cannot hang the start).
pub fn image_glibc(image_root: &OwnedFd) -> Option<GlibcVersion> {
    LIBC_PATHS.iter().find_map(|p| {
        let fd = resolve::open_in_root_flags(
            image_root,
            Path::new(p),
            libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY,
        )
        .ok()?;
        let f = std::fs::File::from(fd);
        if !f.metadata().ok()?.is_file() {
            return None;
        }
        defined(&f)
    })
}

/// Pure: the first library (in order) needing more than `image` has.
pub fn judge(
    image: Option<&GlibcVersion>,
    needs: &[(PathBuf, GlibcVersion)],
) -> Result<(), Mismatch> {
    for (lib, v) in needs {
        match image {
            None => {
                return Err(Mismatch::NoGlibc {
                    lib: lib.clone(),
                    needs: v.clone(),
                })
            }
            Some(i) if v > i => {
                return Err(Mismatch::TooOld {
                    lib: lib.clone(),
                    needs: v.clone(),
                    image: i.clone(),
                })
            }
            _ => {}
        }
    }
    Ok(())
}

/// Does this name look like a shared library (`libx.so`, `libx.so.1.2`)?
pub fn is_library_name(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".so") || n.contains(".so."))
}

/// Bound on the library files [`library_files`] collects.
pub const MAX_LIBRARY_FILES: usize = 8192;

/// The shared objects (`*.so`, `*.so.*`) under the host directory `dir`, a few levels
/// deep, at most [`MAX_LIBRARY_FILES`] in `out`; links are not followed.
pub fn library_files(dir: &Path, out: &mut Vec<PathBuf>) {
    walk(dir, 0, out)
}

fn walk(dir: &Path, depth: u32, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        if out.len() >= MAX_LIBRARY_FILES {
            return;
        }
        let Ok(t) = e.file_type() else { continue };
        if t.is_dir() && depth < 6 {
            walk(&e.path(), depth + 1, out);
        } else if t.is_file() && is_library_name(Path::new(&e.file_name())) {
            out.push(e.path());
        }
    }
}

/// Check the host libraries `host_libs` (files; others are skipped) against the image
/// whose root is `image_root`. The image's libc is read only when some library needs a
/// glibc version at all.
pub fn check(image_root: &OwnedFd, host_libs: &[PathBuf]) -> Result<(), Mismatch> {
    let needs: Vec<(PathBuf, GlibcVersion)> = host_libs
        .iter()
        .filter_map(|l| needed(l).map(|v| (l.clone(), v)))
        .collect();
    if needs.is_empty() {
        return Ok(());
    }
    judge(image_glibc(image_root).as_ref(), &needs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(s: &str) -> GlibcVersion {
        parse_version(s).unwrap()
    }

    #[test]
    fn versions_parse_and_order() {
        assert_eq!(v("GLIBC_2.2.5").0, vec![2, 2, 5]);
        assert!(v("GLIBC_2.34") > v("GLIBC_2.4"));
        assert!(v("GLIBC_2.17") < v("GLIBC_2.17.1"));
        for bad in [
            "GLIBC_PRIVATE",
            "GLIBCXX_3.4",
            "GLIBC_2",
            "GLIBC_",
            "GCC_3.0",
            "GLIBC_2.x",
        ] {
            assert_eq!(parse_version(bad), None, "{bad}");
        }
    }

    #[test]
    fn judge_names_the_library_and_both_versions() {
        let needs = vec![
            (PathBuf::from("/usr/lib/libok.so"), v("GLIBC_2.17")),
            (PathBuf::from("/usr/lib/libcuda.so.1"), v("GLIBC_2.34")),
        ];
        assert!(judge(Some(&v("GLIBC_2.36")), &needs).is_ok());
        let e = judge(Some(&v("GLIBC_2.28")), &needs)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "host library /usr/lib/libcuda.so.1 needs glibc 2.34 but the image has glibc 2.28"
            ),
            "{e}"
        );
        let e = judge(None, &needs).unwrap_err().to_string();
        assert!(e.contains("the image has no glibc"), "{e}");
        assert!(judge(None, &[]).is_ok());
    }

    #[test]
    fn the_hosts_own_libraries() {
        // The host's libc defines what its programs need.
        let libc = [
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/lib/aarch64-linux-gnu/libc.so.6",
        ]
        .into_iter()
        .find_map(|p| std::fs::read(p).ok())
        .unwrap();
        let host = defined(&libc[..]).unwrap();
        assert!(host >= v("GLIBC_2.17"), "{host}");
        let t = needed(Path::new("/bin/true")).unwrap();
        assert!(t <= host);
        assert!(is_library_name(Path::new("/x/libcuda.so.575.64.03")));
        assert!(is_library_name(Path::new("/x/libm.so")));
        assert!(!is_library_name(Path::new("/usr/bin/nvidia-smi")));
    }

    proptest! {
        #[test]
        fn any_version_string(s in ".{0,24}") {
            if let Some(g) = parse_version(&s) {
                prop_assert!(s.starts_with("GLIBC_"));
                prop_assert_eq!(parse_version(&format!("GLIBC_{g}")), Some(g));
            }
        }
    }
}

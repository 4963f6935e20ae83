//! Which MPI ABI a library file implements, from its name, and whether a host MPI can
//! stand in for an image's (host MPI injection, `mpi_inject`). Pure: names in, verdicts
//! out; finding the files is the caller's job.
//!
//! The ABI is read from the library's real file name (libtool's `.so.CURRENT.REV.AGE`
//! as installed):
//! - `libmpi.so.40.X.Y` is Open MPI 3.0 and later; libtool's X maps to the release
//!   series (0: 3.0, 10: 3.1, 20: 4.0, 30: 4.1, 40: 5.0). Open MPI keeps its ABI within
//!   a major version only: the host's must have the image's major and at least its minor.
//! - `libmpi.so.12[.X.Y]` (also `libmpich.so.12`) is the MPICH ABI of the MPICH ABI
//!   Compatibility Initiative (MPICH 3.1+, Intel MPI 5+, Cray MPICH 7+, MVAPICH2 2+): any
//!   of them may replace another if its X (interface additions) is at least the image's.
//! - any other `libmpi.so.N`: only the same N (and at least the same X) is accepted.

use std::fmt;

/// The MPI families told apart by soname.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `libmpi.so.40`: Open MPI 3.0 and later.
    OpenMpi,
    /// `libmpi.so.12`: the MPICH ABI.
    Mpich,
    /// Another soname.
    Other,
}

/// One MPI library's ABI as its file name tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Abi {
    pub family: Family,
    /// The soname's number (`libmpi.so.N`).
    pub soname: u32,
    /// libtool's second and third numbers when the name carries them.
    pub minor: Option<u32>,
    pub patch: Option<u32>,
    /// The file name it was read from.
    pub file: String,
}

impl Abi {
    /// Open MPI's release series (major, minor), when the name carries libtool's minor.
    pub fn open_mpi_release(&self) -> Option<(u32, u32)> {
        match (self.family, self.minor) {
            (Family::OpenMpi, Some(m)) => Some((3 + m / 20, (m / 10) % 2)),
            _ => None,
        }
    }
}

impl fmt::Display for Abi {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match (self.family, self.open_mpi_release()) {
            (Family::OpenMpi, Some((a, b))) => write!(f, "Open MPI {a}.{b} ({})", self.file),
            (Family::OpenMpi, None) => write!(f, "Open MPI ({})", self.file),
            (Family::Mpich, _) => write!(f, "MPICH ABI ({})", self.file),
            (Family::Other, _) => write!(f, "{}", self.file),
        }
    }
}

/// Pure: the ABI of a file named `libmpi.so.N[.X[.Y]]` or `libmpich.so.N[.X[.Y]]`
/// (a base name; anything else, `libmpi.so` without a number included, is `None`).
pub fn from_file_name(name: &str) -> Option<Abi> {
    let rest = name
        .strip_prefix("libmpi.so.")
        .or_else(|| name.strip_prefix("libmpich.so."))?;
    let mut nums = rest.split('.').map(|p| {
        (!p.is_empty() && p.len() <= 9 && p.bytes().all(|b| b.is_ascii_digit()))
            .then(|| p.parse::<u32>().ok())
            .flatten()
    });
    let soname = nums.next()??;
    let minor = match nums.next() {
        None => None,
        Some(n) => Some(n?),
    };
    let patch = match nums.next() {
        None => None,
        Some(n) => Some(n?),
    };
    if nums.next().is_some() {
        return None;
    }
    let family = match soname {
        40 => Family::OpenMpi,
        12 => Family::Mpich,
        _ => Family::Other,
    };
    Some(Abi {
        family,
        soname,
        minor,
        patch,
        file: name.to_string(),
    })
}

/// Of several names for one library (`libmpi.so.40` and the file it links to), the one
/// that says most.
pub fn most_precise(abis: impl IntoIterator<Item = Abi>) -> Option<Abi> {
    abis.into_iter()
        .max_by_key(|a| (a.minor.is_some(), a.patch.is_some()))
}

/// Pure: why the host's MPI cannot replace the image's, or `None` when it can.
pub fn incompatibility(host: &Abi, image: &Abi) -> Option<String> {
    if host.family != image.family || host.soname != image.soname {
        return Some(format!(
            "a different MPI ABI (libmpi.so.{} vs. libmpi.so.{})",
            host.soname, image.soname
        ));
    }
    match (
        host.family,
        host.open_mpi_release(),
        image.open_mpi_release(),
    ) {
        (Family::OpenMpi, Some(h), Some(i)) if h.0 != i.0 => {
            return Some(format!(
                "a different Open MPI major version ({} vs. {})",
                h.0, i.0
            ))
        }
        (Family::OpenMpi, Some(h), Some(i)) if h.1 < i.1 => {
            return Some(format!(
                "an older Open MPI ({}.{} < {}.{})",
                h.0, h.1, i.0, i.1
            ))
        }
        (Family::OpenMpi, ..) => return None,
        _ => {}
    }
    match (host.minor, image.minor) {
        (Some(h), Some(i)) if h < i => Some(format!(
            "an older interface (libmpi.so.{}.{h} < libmpi.so.{}.{i})",
            host.soname, image.soname
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn abi(n: &str) -> Abi {
        from_file_name(n).unwrap()
    }

    #[test]
    fn names() {
        let a = abi("libmpi.so.40.30.4");
        assert_eq!(
            (a.family, a.soname, a.minor, a.patch),
            (Family::OpenMpi, 40, Some(30), Some(4))
        );
        assert_eq!(a.open_mpi_release(), Some((4, 1)));
        assert_eq!(a.to_string(), "Open MPI 4.1 (libmpi.so.40.30.4)");
        assert_eq!(abi("libmpi.so.40.20.1").open_mpi_release(), Some((4, 0)));
        assert_eq!(abi("libmpi.so.40.40.0").open_mpi_release(), Some((5, 0)));
        assert_eq!(abi("libmpi.so.40.10.2").open_mpi_release(), Some((3, 1)));
        assert_eq!(abi("libmpi.so.40.0.0").open_mpi_release(), Some((3, 0)));
        assert_eq!(abi("libmpi.so.40").open_mpi_release(), None);
        let m = abi("libmpich.so.12.2.2");
        assert_eq!((m.family, m.minor), (Family::Mpich, Some(2)));
        assert_eq!(m.to_string(), "MPICH ABI (libmpich.so.12.2.2)");
        assert_eq!(abi("libmpi.so.20.10.1").family, Family::Other);
        for bad in [
            "libmpi.so",
            "libmpi.so.",
            "libmpi.so.x",
            "libmpi.so.40.",
            "libmpi.so.40.1.2.3",
            "libmpi_cxx.so.40",
            "libmpi.so.99999999999",
            "libmpi.so.+4",
        ] {
            assert_eq!(from_file_name(bad), None, "{bad}");
        }
        assert_eq!(
            most_precise([abi("libmpi.so.40"), abi("libmpi.so.40.30.4")])
                .unwrap()
                .file,
            "libmpi.so.40.30.4"
        );
    }

    #[test]
    fn verdicts() {
        let ompi41 = abi("libmpi.so.40.30.4");
        let ompi40 = abi("libmpi.so.40.20.1");
        let ompi5 = abi("libmpi.so.40.40.0");
        let mpich = abi("libmpich.so.12.2.2");
        assert_eq!(incompatibility(&ompi41, &ompi41), None);
        assert_eq!(incompatibility(&ompi41, &ompi40), None);
        assert_eq!(incompatibility(&ompi41, &abi("libmpi.so.40")), None);
        assert!(incompatibility(&ompi40, &ompi41).unwrap().contains("older"));
        assert!(incompatibility(&ompi5, &ompi41)
            .unwrap()
            .contains("major version (5 vs. 4)"));
        assert!(incompatibility(&ompi41, &mpich)
            .unwrap()
            .contains("libmpi.so.40 vs. libmpi.so.12"));
        assert_eq!(incompatibility(&mpich, &abi("libmpi.so.12")), None);
        assert_eq!(incompatibility(&mpich, &abi("libmpi.so.12.1.0")), None);
        assert!(incompatibility(&abi("libmpi.so.12.1.0"), &mpich).is_some());
    }

    proptest! {
        /// Any name: no panic; a parsed one keeps its numbers.
        #[test]
        fn any_name(s in "(libmpi|libmpich)\\.so\\.[0-9.]{0,12}", t in "\\PC{0,30}") {
            let _ = from_file_name(&t);
            if let Some(a) = from_file_name(&s) {
                prop_assert!(s.contains(&a.soname.to_string()));
                prop_assert_eq!(incompatibility(&a, &a), None);
            }
        }
    }
}

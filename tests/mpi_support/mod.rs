//! Shared by tests/mpi_*.rs: the MPI test images (scripts/test-images.sh openmpi and
//! mpich), our MPI programs (tests/fixtures/mpi) compiled with the host's `mpicc`
//! against Debian's Open MPI, and the site `[mpi]` configuration that injects that
//! host Open MPI (docs/mpi.md).
#![allow(dead_code)]
use crate::support::{self, registry, stderr, TestDir};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian's openmpi-bin and our programs in /usr/local/bin (mpi-hello, mpi-pingpong,
/// mpi-nodeshare).
pub const OPENMPI: &str = "127.0.0.1:5000/test/openmpi:latest";
/// MPICH (libmpich.so.12, the MPICH ABI): ABI-incompatible with the host's Open MPI.
pub const MPICH: &str = "127.0.0.1:5000/test/mpich:latest";
/// Debian without any MPI.
pub const DEBIAN: &str = "127.0.0.1:5000/test/debian:latest";

/// The host's Open MPI as a site injects it.
pub fn inject_config() -> String {
    let t = format!("{}-linux-gnu", std::env::consts::ARCH);
    format!(
        "[mpi]\nlibraries = [\"/usr/lib/{t}/libmpi.so.40\"]\n\
         directories = [\"/usr/lib/{t}/openmpi\", \"/usr/lib/{t}/pmix2\", \"/etc/openmpi\", \"/usr/share/openmpi\"]\n"
    )
}

/// The images are in the test registry, mpicc and mpirun are installed.
pub fn need_mpi(images: &[&str]) -> Result<(), String> {
    support::need_root("MPI tests run MPI as the test user")?;
    support::need_programs(&["mpicc", "mpirun", "curl"])?;
    registry::need_registry(&[registry::PLAIN])?;
    for i in images {
        let (host, rest) = i.split_once('/').unwrap_or(("", i));
        let repo = rest.split(':').next().unwrap_or(rest);
        let st = Command::new("curl")
            .args(["-sf", "-o", "/dev/null"])
            .arg(format!("http://{host}/v2/{repo}/tags/list"))
            .status()
            .map_err(|e| e.to_string())?;
        if !st.success() {
            return Err(format!(
                "{i} is not in the test registry (run scripts/test-images.sh {})",
                repo.trim_start_matches("test/")
            ));
        }
    }
    Ok(())
}

/// `tests/fixtures/mpi/NAME.c` compiled with the host's mpicc into `dir` (handed to its
/// owner); the program's path.
pub fn compile(dir: &TestDir, name: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/mpi/{name}.c"));
    let out = dir.join(name);
    let o = Command::new("mpicc")
        .args(["-O2", "-o"])
        .arg(&out)
        .arg(&src)
        .output()
        .expect("mpicc");
    assert!(o.status.success(), "mpicc {name}: {}", stderr(&o));
    dir.give(&out);
    out
}

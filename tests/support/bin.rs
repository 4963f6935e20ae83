//! The `warren` binary at a path the test users can execute: the build's own when every
//! directory on the way lets others through, else a private copy, removed at exit.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The binary cargo built for these tests.
pub const BUILT: &str = env!("CARGO_BIN_EXE_warren");

static COPY_DIR: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn remove_copy() {
    if let Some(d) = COPY_DIR.get() {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// True when others may execute `p` and enter every directory above it.
fn others_can_run(p: &Path) -> bool {
    let mode = |p: &Path| std::fs::metadata(p).map(|m| m.permissions().mode());
    mode(p).is_ok_and(|m| m & 0o005 == 0o005)
        && p.ancestors()
            .skip(1)
            .all(|d| mode(d).is_ok_and(|m| m & 0o001 != 0))
}

/// `warren`, executable by the test users.
pub fn warren_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let built = Path::new(BUILT);
        if others_can_run(built) {
            return built.to_path_buf();
        }
        let dir = tempfile::Builder::new()
            .prefix("warren-test-bin-")
            .tempdir_in("/var/tmp")
            .expect("temp dir for the binary")
            .keep();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        COPY_DIR.set(dir.clone()).ok();
        // Removed when the test process exits (the harness calls exit(): atexit runs).
        // SAFETY: registering a plain extern "C" function without arguments.
        unsafe { libc::atexit(remove_copy) };
        let bin = dir.join("warren");
        std::fs::copy(built, &bin).expect("copy the warren binary");
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        bin
    })
}

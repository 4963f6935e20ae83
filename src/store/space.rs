//! Telling "the store's file system is full" apart from other failures, so a pull says
//! so in one line instead of an I/O error on some file (tar2sqfs reports ENOSPC as
//! `FILE: I/O error.` and deletes its output, so the space is free again afterwards).

use std::path::{Path, PathBuf};

/// The store's file system ran out of space; what was written has been removed.
#[derive(Debug, thiserror::Error)]
#[error("no space left on device in {}", .0.display())]
pub struct NoSpace(pub PathBuf);

/// Bytes an unprivileged writer may still use on the file system holding `dir`.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let s = nix::sys::statvfs::statvfs(dir).ok()?;
    Some((s.blocks_available() as u64).saturating_mul(s.fragment_size() as u64))
}

/// True if an ENOSPC (or EDQUOT: a full quota is a full disk to the user) is anywhere
/// in the error's chain.
pub fn is_enospc(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        let code = if let Some(io) = c.downcast_ref::<std::io::Error>() {
            io.raw_os_error()
        } else {
            c.downcast_ref::<nix::errno::Errno>().map(|e| *e as i32)
        };
        matches!(code, Some(libc::ENOSPC) | Some(libc::EDQUOT))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn enospc_is_found_under_context() {
        let e = Err::<(), _>(std::io::Error::from_raw_os_error(libc::ENOSPC))
            .context("write x")
            .context("layer 1")
            .unwrap_err();
        assert!(is_enospc(&e));
        let e = Err::<(), _>(std::io::Error::from_raw_os_error(libc::EIO))
            .context("write x")
            .unwrap_err();
        assert!(!is_enospc(&e));
        assert!(free_bytes(Path::new("/")).is_some());
    }
}

//! Execute-only copies of warren's FUSE daemon programs (docs/security.md). A process
//! started without capabilities from a file it cannot read is marked non-dumpable by the
//! kernel: no other process of the user, the container's included, can open its
//! `/proc/PID/root`, `/proc/PID/fd/N` or `/proc/PID/mem`, nor ptrace it. `squashfuse_ll`
//! runs in the container's user namespace without capabilities, in a mount namespace
//! that shows the host: dumpable, it would be a door to every host file of the user.
//!
//! The copy (mode 0111) lives in the runtime directory under a name derived from the
//! original's device, inode, size and modification time, so an upgraded program gets a
//! new copy; it is written under a temporary name and renamed (never seen half-written).

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Pure: the copy's path for a program with this metadata.
pub fn copy_path(rundir: &Path, prog: &Path, md: &fs::Metadata) -> PathBuf {
    let name = prog.file_name().unwrap_or(prog.as_os_str());
    rundir
        .join("helpers")
        .join(format!(
            "{:x}-{:x}-{:x}-{}.{}",
            md.dev(),
            md.ino(),
            md.size(),
            md.mtime(),
            md.mtime_nsec()
        ))
        .join(name)
}

/// The execute-only copy of `prog` in `rundir` (made once per program version), owned
/// by `uid`. Fails when the runtime directory is mounted noexec, or for a program that
/// is not an ELF executable (a wrapper script must stay readable).
pub fn copy(rundir: &Path, prog: &Path, uid: u32) -> io::Result<PathBuf> {
    let md = fs::metadata(prog)?;
    let dst = copy_path(rundir, prog, &md);
    if let Ok(m) = fs::symlink_metadata(&dst) {
        if m.is_file() && m.uid() == uid && m.mode() & 0o7777 == 0o111 && m.size() == md.size() {
            return Ok(dst);
        }
        fs::remove_file(&dst)?;
    }
    let dir = dst.parent().unwrap_or(rundir);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let st = nix::sys::statvfs::statvfs(dir).map_err(io::Error::from)?;
    if st.flags().contains(nix::sys::statvfs::FsFlags::ST_NOEXEC) {
        return Err(io::Error::other(format!(
            "{} is on a noexec file system",
            dir.display()
        )));
    }
    let mut src = fs::File::open(prog)?;
    let mut magic = [0u8; 4];
    std::io::Read::read_exact(&mut src, &mut magic)?;
    if &magic != b"\x7fELF" {
        // A script's interpreter must read it: execute-only, it could not run at all.
        return Err(io::Error::other(format!(
            "{} is not an ELF executable",
            prog.display()
        )));
    }
    std::io::Seek::rewind(&mut src)?;
    let tmp = dir.join(format!(".tmp-{}", std::process::id()));
    let res = (|| {
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        io::copy(&mut src, &mut out)?;
        out.flush()?;
        out.set_permissions(fs::Permissions::from_mode(0o111))?;
        out.sync_all()?;
        // Closed before it gets its name: a run that finds it there and execs it while
        // our write descriptor is open would fail with ETXTBSY (exit 127).
        drop(out);
        fs::rename(&tmp, &dst)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res.map(|()| dst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_is_execute_only_reused_and_renewed() {
        let d = tempfile::tempdir().unwrap();
        let prog = d.path().join("prog");
        let elf = |tail: &[u8]| [&b"\x7fELF"[..], tail].concat();
        fs::write(&prog, elf(b"123456")).unwrap();
        let uid = nix::unistd::getuid().as_raw();
        let c = copy(d.path(), &prog, uid).unwrap();
        assert_eq!(c.file_name().unwrap(), "prog");
        let m = fs::metadata(&c).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o111);
        assert_eq!(m.size(), 10);
        assert_eq!(fs::read(&c).unwrap(), elf(b"123456"));
        // Same version: the same file, untouched.
        assert_eq!(copy(d.path(), &prog, uid).unwrap(), c);
        assert_eq!(fs::metadata(&c).unwrap().ino(), m.ino());
        // A new version of the program: a new copy.
        fs::write(&prog, elf(b"1234567890123")).unwrap();
        let c2 = copy(d.path(), &prog, uid).unwrap();
        assert_ne!(c2, c);
        assert_eq!(fs::metadata(&c2).unwrap().size(), 17);
        // No temporary file is left.
        let left: Vec<_> = fs::read_dir(c2.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("prog")]);
        // A wrapper script is refused (it could not run execute-only).
        let script = d.path().join("wrapper");
        fs::write(&script, b"#!/bin/sh\nexec squashfuse_ll \"$@\"\n").unwrap();
        assert!(copy(d.path(), &script, uid).is_err());
    }
}

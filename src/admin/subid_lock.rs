//! Locking `/etc/subuid` and `/etc/subgid` the way shadow-utils does, so a concurrent
//! `useradd`/`usermod` is excluded while warren writes:
//!
//! 1. `lckpwdf()`'s lock: a POSIX write lock (fcntl) on `.pwd.lock` in the files'
//!    directory (`/etc/.pwd.lock`, the very file glibc's lckpwdf locks);
//! 2. per file, shadow's `commonio_lock_nowait`: write our PID to `FILE.PID`, `link()` it
//!    to `FILE.lock` and require a link count of 2; a lock whose PID is dead is stale and
//!    is replaced.
//!
//! Both are retried for up to 15 seconds, as shadow does. Dropping the guard unlocks.

use anyhow::{bail, Context, Result};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long to wait for a lock held by someone else (shadow: 15 tries, 1 s apart).
pub const LOCK_WAIT: Duration = Duration::from_secs(15);

/// Held locks; released (lock files removed, fcntl lock dropped) on drop.
#[derive(Debug)]
pub struct ShadowLock {
    lock_files: Vec<PathBuf>,
    _pwd: File,
}

impl Drop for ShadowLock {
    fn drop(&mut self) {
        for l in self.lock_files.iter().rev() {
            let _ = fs::remove_file(l);
        }
    }
}

/// `FILE.lock`.
pub fn lock_path(file: &Path) -> PathBuf {
    let mut s = file.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

/// Lock `files` (all in one directory, normally `/etc`), waiting up to `wait`.
pub fn lock(files: &[&Path], wait: Duration) -> Result<ShadowLock> {
    let dir = files
        .first()
        .and_then(|f| f.parent())
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let deadline = Instant::now() + wait;
    let pwd = pwd_lock(&dir.join(".pwd.lock"), deadline)?;
    let mut guard = ShadowLock {
        lock_files: Vec::new(),
        _pwd: pwd,
    };
    for f in files {
        loop {
            match try_lock_file(f)? {
                None => break,
                Some(holder) if Instant::now() >= deadline => {
                    bail!(
                        "{} is locked by {holder}; try again later",
                        lock_path(f).display()
                    )
                }
                Some(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
        guard.lock_files.push(lock_path(f));
    }
    Ok(guard)
}

fn pwd_lock(path: &Path, deadline: Instant) -> Result<File> {
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .with_context(|| format!("open {}", path.display()))?;
    loop {
        // SAFETY: an all-zero flock is valid; we set the fields we need.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = libc::F_WRLCK as libc::c_short;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
        // SAFETY: fcntl on an fd we own with a valid flock pointer.
        let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETLK, &fl) };
        if r == 0 {
            return Ok(f);
        }
        let e = std::io::Error::last_os_error();
        if !matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EAGAIN)) {
            return Err(e).with_context(|| format!("lock {}", path.display()));
        }
        if Instant::now() >= deadline {
            bail!(
                "{} is locked (useradd, usermod or another writer is running); try again later",
                path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One attempt at shadow's link lock. `Ok(None)`: locked by us; `Ok(Some(who))`: held.
fn try_lock_file(file: &Path) -> Result<Option<String>> {
    let pid = std::process::id();
    let mut tmp = file.as_os_str().to_owned();
    tmp.push(format!(".{pid}"));
    let tmp = PathBuf::from(tmp);
    let lock = lock_path(file);
    let res = (|| -> Result<Option<String>> {
        {
            let mut t = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .with_context(|| format!("create {}", tmp.display()))?;
            // shadow writes the PID and its terminating NUL.
            t.write_all(format!("{pid}\0").as_bytes())
                .and_then(|_| t.sync_data())
                .with_context(|| format!("write {}", tmp.display()))?;
        }
        for _ in 0..2 {
            match fs::hard_link(&tmp, &lock) {
                Ok(()) => {
                    let n = fs::metadata(&tmp)
                        .with_context(|| format!("stat {}", tmp.display()))?
                        .nlink();
                    if n != 2 {
                        bail!("{}: lock file already used (nlink {n})", tmp.display());
                    }
                    return Ok(None);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e).with_context(|| format!("link {}", lock.display())),
            }
            let mut buf = String::new();
            match File::open(&lock).and_then(|mut f| f.read_to_string(&mut buf)) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).with_context(|| format!("read {}", lock.display())),
            }
            let text = buf.trim_end_matches(['\0', '\n', ' ']);
            let holder: i32 = text.parse().map_err(|_| {
                anyhow::anyhow!(
                    "existing lock file {} has no valid PID ({text:?}); remove it if no useradd is running",
                    lock.display()
                )
            })?;
            if holder <= 0 {
                bail!(
                    "existing lock file {} has an invalid PID {holder}",
                    lock.display()
                );
            }
            if process_alive(holder) {
                return Ok(Some(format!("PID {holder}")));
            }
            // Stale: its owner died (e.g. killed mid-write). Take it over, as shadow does.
            fs::remove_file(&lock)
                .or_else(|e| {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })
                .with_context(|| format!("remove stale {}", lock.display()))?;
        }
        Ok(Some("a concurrent writer".into()))
    })();
    let _ = fs::remove_file(&tmp);
    res
}

fn process_alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_excludes_and_takes_over_stale() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("subuid");
        let g = lock(&[&f], Duration::from_millis(0)).unwrap();
        assert!(lock_path(&f).exists());
        assert_eq!(
            fs::read_to_string(lock_path(&f)).unwrap(),
            format!("{}\0", std::process::id())
        );
        drop(g);
        assert!(!lock_path(&f).exists());
        // A lock held by a live process (PID 1) is respected.
        fs::write(lock_path(&f), "1\0").unwrap();
        let e = lock(&[&f], Duration::from_millis(0)).unwrap_err();
        assert!(format!("{e:#}").contains("PID 1"), "{e:#}");
        // A dead PID is stale.
        fs::write(lock_path(&f), format!("{}\0", i32::MAX - 7)).unwrap();
        let g = lock(&[&f], Duration::from_millis(0)).unwrap();
        drop(g);
        assert_eq!(
            fs::read_dir(d.path()).unwrap().count(),
            1,
            "only .pwd.lock left"
        );
    }
}

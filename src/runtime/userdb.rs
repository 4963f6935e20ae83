//! The container's `/etc/passwd` and `/etc/group` with the user's entry added (keep-id):
//! built once per image and user, then cached in `RUNDIR/passwd/KEY.{passwd,group}`
//! (KEY: a digest of the image digest and every field of the entry), so later containers
//! read two small files from the runtime dir instead of reading the image's through FUSE.
//!
//! With a fresh writable layer they are written straight into the upper directory before
//! the overlay is mounted ([`prewrite_upper`]): no copy-up through the overlay, which would
//! cost a dozen FUSE round trips (lookups, xattrs, ioctls) per container.

use super::passwd::{self, Entry};
use super::resolve;
use super::sys;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The two files' contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Files {
    pub passwd: String,
    pub group: String,
}

/// The user's entry as it goes into the container (the shell is checked in the image).
pub type User<'a> = Entry<'a>;

/// The files for `user` in the image whose root is `image` (read-only lower): from the
/// cache in `rundir` when there, else built from the image and cached (best effort).
pub fn files(rundir: &Path, digest: &str, image: &OwnedFd, user: &User) -> io::Result<Files> {
    let key = cache_key(digest, user);
    let dir = rundir.join("passwd");
    let (pf, gf) = (
        dir.join(format!("{key}.passwd")),
        dir.join(format!("{key}.group")),
    );
    if let (Ok(passwd), Ok(group)) = (std::fs::read_to_string(&pf), std::fs::read_to_string(&gf)) {
        return Ok(Files { passwd, group });
    }
    let f = build(image, user)?;
    let _ = std::fs::create_dir(&dir);
    bound(&dir);
    let _ = write_atomic(&gf, &f.group).and_then(|_| write_atomic(&pf, &f.passwd));
    Ok(f)
}

/// Build from the image's own files.
pub fn build(image: &OwnedFd, user: &User) -> io::Result<Files> {
    let text = |p: &str| -> io::Result<String> {
        Ok(resolve::read_in_root(image, Path::new(p))?
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default())
    };
    let (image_passwd, image_group) = (text("/etc/passwd")?, text("/etc/group")?);
    let shell_ok = resolve::open_in_root(image, Path::new(user.shell)).is_ok();
    Ok(Files {
        passwd: passwd::passwd(
            &image_passwd,
            &Entry {
                shell: if shell_ok { user.shell } else { "/bin/sh" },
                ..user.clone()
            },
        ),
        group: passwd::group(&image_group, user.name, user.gid),
    })
}

/// Files kept in the cache directory; beyond this (on a miss) it is emptied and refills
/// with what is in use.
const MAX_CACHED: usize = 512;

fn bound(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let files: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
    if files.len() >= MAX_CACHED {
        for f in files {
            let _ = std::fs::remove_file(f);
        }
    }
}

fn cache_key(digest: &str, u: &User) -> String {
    // Fields joined with NUL: none of them can contain one.
    let s = format!(
        "v1\0{digest}\0{}\0{}\0{}\0{}\0{}\0{}",
        u.name, u.uid, u.gid, u.gecos, u.home, u.shell
    );
    crate::digest::Digest::of(s.as_bytes()).hex()[..32].to_string()
}

fn write_atomic(path: &Path, text: &str) -> io::Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Write `files` into the empty upper directory `upper` as `etc/passwd` and `etc/group`,
/// `etc` taking the owner and mode of the image's `/etc` and each file those of the
/// image's file (or root 0644). Returns false, having written nothing, unless the image's
/// `/etc` is a real directory and its two files are regular files or absent (a symlink
/// must be replaced through the overlay, as before).
pub fn prewrite_upper(image: &OwnedFd, upper: &Path, files: &Files) -> io::Result<bool> {
    let Some(etc) = stat_nofollow(image, "etc")? else {
        return Ok(false);
    };
    if etc.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return Ok(false);
    }
    let mut metas = Vec::new();
    for f in ["etc/passwd", "etc/group"] {
        match stat_nofollow(image, f)? {
            Some(st) if st.st_mode & libc::S_IFMT != libc::S_IFREG => return Ok(false),
            Some(st) => metas.push((st.st_uid, st.st_gid, st.st_mode & 0o7777)),
            None => metas.push((0, 0, 0o644)),
        }
    }
    let dir = upper.join("etc");
    std::fs::create_dir(&dir)?;
    // Owners as in the image, best effort (an owner the map lacks keeps ours).
    let _ = std::os::unix::fs::chown(&dir, Some(etc.st_uid), Some(etc.st_gid));
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(etc.st_mode & 0o7777))?;
    for ((name, text), (uid, gid, mode)) in [("passwd", &files.passwd), ("group", &files.group)]
        .into_iter()
        .zip(metas)
    {
        let p: PathBuf = dir.join(name);
        std::fs::write(&p, text)?;
        let _ = std::os::unix::fs::chown(&p, Some(uid), Some(gid));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(true)
}

/// lstat of `rel` inside the image (parents resolved in the root, the last component not
/// followed); None when absent.
fn stat_nofollow(image: &OwnedFd, rel: &str) -> io::Result<Option<libc::stat>> {
    let c = sys::cpath(Path::new(rel))?;
    let fd = match sys::openat2(
        image.as_raw_fd(),
        &c,
        (libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC) as u64,
        0,
        libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    ) {
        Ok(fd) => fd,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat on an O_PATH fd (allowed since 3.6) fills `st` on success.
    if unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    drop(fd);
    // SAFETY: fstat succeeded.
    Ok(Some(unsafe { st.assume_init() }))
}

/// Open a directory path as an O_PATH fd (the image's root).
pub fn open_root(p: &Path) -> io::Result<OwnedFd> {
    let c = sys::cpath(p)?;
    sys::openat2(
        libc::AT_FDCWD,
        &c,
        (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64,
        0,
        0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn user() -> User<'static> {
        User {
            name: "alice",
            uid: 1001,
            gid: 1001,
            gecos: "Alice",
            home: "/home/alice",
            shell: "/bin/bash",
        }
    }

    #[test]
    fn key_depends_on_every_field() {
        let base = cache_key("sha256:a", &user());
        assert_eq!(base, cache_key("sha256:a", &user()));
        assert_ne!(base, cache_key("sha256:b", &user()));
        for u in [
            User {
                name: "bob",
                ..user()
            },
            User { uid: 1, ..user() },
            User { gid: 1, ..user() },
            User {
                gecos: "",
                ..user()
            },
            User {
                home: "/",
                ..user()
            },
            User {
                shell: "/bin/sh",
                ..user()
            },
        ] {
            assert_ne!(base, cache_key("sha256:a", &u));
        }
    }

    #[test]
    fn cache_is_bounded() {
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("img");
        std::fs::create_dir_all(img.join("etc")).unwrap();
        let root = open_root(&img).unwrap();
        let cache = d.path().join("passwd");
        std::fs::create_dir(&cache).unwrap();
        for i in 0..MAX_CACHED {
            std::fs::write(cache.join(format!("old{i}.passwd")), "").unwrap();
        }
        files(d.path(), "sha256:y", &root, &user()).unwrap();
        let left: Vec<_> = std::fs::read_dir(&cache).unwrap().flatten().collect();
        assert_eq!(left.len(), 2, "emptied, then the new pair");
    }

    #[test]
    fn built_cached_and_prewritten() {
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("img");
        std::fs::create_dir_all(img.join("etc")).unwrap();
        std::fs::create_dir_all(img.join("bin")).unwrap();
        std::fs::write(img.join("bin/bash"), "").unwrap();
        std::fs::write(img.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        std::fs::set_permissions(
            img.join("etc/passwd"),
            std::fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        let root = open_root(&img).unwrap();
        let rundir = d.path().join("run");
        std::fs::create_dir(&rundir).unwrap();
        let f = files(&rundir, "sha256:x", &root, &user()).unwrap();
        assert!(f
            .passwd
            .contains("alice:x:1001:1001:Alice:/home/alice:/bin/bash"));
        assert!(f.group.contains("alice:x:1001:"));
        // Second call: from the cache, even with the image gone.
        std::fs::remove_file(img.join("etc/passwd")).unwrap();
        assert_eq!(files(&rundir, "sha256:x", &root, &user()).unwrap(), f);
        std::fs::write(img.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        std::fs::set_permissions(
            img.join("etc/passwd"),
            std::fs::Permissions::from_mode(0o640),
        )
        .unwrap();

        let upper = d.path().join("upper");
        std::fs::create_dir(&upper).unwrap();
        assert!(prewrite_upper(&root, &upper, &f).unwrap());
        assert_eq!(
            std::fs::read_to_string(upper.join("etc/passwd")).unwrap(),
            f.passwd
        );
        let mode = |p: &str| std::fs::metadata(upper.join(p)).unwrap().mode() & 0o7777;
        assert_eq!(mode("etc/passwd"), 0o640, "the image's mode");
        assert_eq!(mode("etc/group"), 0o644, "absent in the image: 0644");

        // /etc a symlink in the image: nothing written.
        let img2 = d.path().join("img2");
        std::fs::create_dir_all(&img2).unwrap();
        std::os::unix::fs::symlink("/usr/etc", img2.join("etc")).unwrap();
        let upper2 = d.path().join("upper2");
        std::fs::create_dir(&upper2).unwrap();
        assert!(!prewrite_upper(&open_root(&img2).unwrap(), &upper2, &f).unwrap());
        assert!(!upper2.join("etc").exists());
    }
}

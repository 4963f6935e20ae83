//! Where things live in one store directory (docs/store.md):
//!
//! ```text
//! STORE/blobs/sha256/HEX            layer blobs (kept only with store.keep_layers)
//! STORE/images/HEX/image.sqfs       one image, keyed by its manifest digest
//! STORE/images/HEX/config.json      its OCI image config, as served
//! STORE/images/HEX/manifest.json    its manifest, as served
//! STORE/refs/NAME.json              a tag → digests (NAME: the reference, '/' → %2F)
//! STORE/locks/{blob,image}-HEX.lock flock files
//! STORE/tmp/                        staging, same file system as the rest
//! ```

use crate::digest::Digest;
use anyhow::{Context, Result};
use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// One store directory.
#[derive(Debug, Clone)]
pub struct Store {
    pub root: PathBuf,
}

/// Directories in every store.
const DIRS: [&str; 6] = ["blobs", "blobs/sha256", "images", "refs", "locks", "tmp"];

impl Store {
    /// A store to read; nothing is created.
    pub fn at(root: &Path) -> Store {
        Store {
            root: root.to_path_buf(),
        }
    }

    /// A store to write: its directories are created 0755 (whatever the umask, so that a
    /// shared store is readable by every user).
    pub fn create(root: &Path) -> Result<Store> {
        let s = Store::at(root);
        mkdir_0755(root)?;
        for d in DIRS {
            mkdir_0755(&root.join(d))?;
        }
        Ok(s)
    }

    /// The user's store: as [`Store::create`], after creating each missing parent
    /// directory 0700 as the XDG base directory spec asks (a new account has no
    /// `~/.local/share`). Shared stores get no parents: an administrator makes those.
    pub fn create_with_parents(root: &Path) -> Result<Store> {
        if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .with_context(|| format!("create directory {}", parent.display()))?;
        }
        Store::create(root)
    }

    /// `blobs/sha256/HEX`.
    pub fn blob(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }
    /// `images/`.
    pub fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }
    /// `images/HEX` (image keyed by manifest digest).
    pub fn image_dir(&self, d: &Digest) -> PathBuf {
        self.images_dir().join(d.hex())
    }
    /// `refs/`.
    pub fn refs_dir(&self) -> PathBuf {
        self.root.join("refs")
    }
    /// `tmp/`: staging on the same file system.
    pub fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }
    /// `locks/KIND-HEX.lock` (KIND: `image` or `blob`).
    pub fn lock_file(&self, kind: &str, d: &Digest) -> PathBuf {
        self.root
            .join("locks")
            .join(format!("{kind}-{}.lock", d.hex()))
    }
    /// The download name of a blob: fixed, so a later pull resumes it.
    pub fn partial_blob(&self, d: &Digest) -> PathBuf {
        self.tmp().join(format!("blob-{}.partial", d.hex()))
    }

    /// The digests named by `images/` (complete or not; other names are skipped).
    pub fn image_digests(&self) -> Vec<Digest> {
        digests_in(&self.images_dir())
    }

    /// The digests named by `blobs/sha256/`.
    pub fn blob_digests(&self) -> Vec<Digest> {
        digests_in(&self.root.join("blobs/sha256"))
    }

    /// The published image with manifest digest `d`, if complete.
    pub fn image(&self, d: &Digest) -> Option<super::ImageEntry> {
        let dir = self.image_dir(d);
        let squashfs = dir.join("image.sqfs");
        let config = dir.join("config.json");
        (squashfs.is_file() && config.is_file()).then(|| super::ImageEntry {
            digest: d.clone(),
            squashfs,
            config,
        })
    }
}

/// The SHA-256 digests that entries of `dir` are named by (HEX); an unreadable or
/// missing directory has none.
fn digests_in(dir: &Path) -> Vec<Digest> {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let hex = e.file_name().into_string().ok()?;
            Digest::parse(&format!("sha256:{hex}")).ok()
        })
        .collect()
}

/// `mkdir` with mode 0755 exactly (umask-independent); an existing directory is fine.
pub fn mkdir_0755(p: &Path) -> Result<()> {
    match fs::DirBuilder::new().mode(0o755).create(p) {
        Ok(()) => fs::set_permissions(p, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("chmod {}", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && p.is_dir() => Ok(()),
        Err(e) => Err(e).with_context(|| format!("create directory {}", p.display())),
    }
}

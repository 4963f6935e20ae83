//! The content-addressed image store (layout in docs/store.md): the user's writable
//! store plus shared read-only stores, searched in that order. Images are keyed by
//! manifest digest, tags map to digests, blobs are cached by digest while a pull needs
//! them. Writers stage under `tmp/` and rename into place under flock locks, so
//! concurrent pulls from many users and nodes agree and readers never see half an image.

/// Removing tags, images, unused blobs and debris (`rmi`, `prune`).
pub mod gc;
/// Integrity records of published images and their checks.
pub mod integrity;
/// Paths inside one store directory.
pub mod layout;
/// flock-based locks.
pub mod lock;
/// Atomic publication of blobs and images.
pub mod publish;
/// Tag records.
pub mod refs;
/// Recognising a full file system.
pub mod space;

use crate::config::Config;
use crate::digest::Digest;
use crate::reference::Reference;
use anyhow::{bail, Result};
use layout::Store;
use std::path::PathBuf;

/// A published image, as the runtime needs it.
#[derive(Debug, Clone)]
pub struct ImageEntry {
    /// Manifest digest: the image's identity.
    pub digest: Digest,
    /// The image's single squashfs file.
    pub squashfs: PathBuf,
    /// The OCI image config JSON beside it.
    pub config: PathBuf,
}

/// The user's store plus the shared stores, searched in order.
pub struct Stores {
    /// The user's store first, then `store.shared` in order.
    pub stores: Vec<Store>,
    /// Short-name search list, to turn `busybox` into candidate tags.
    short_names: Vec<String>,
    /// The platform tags are looked up for first (`pull.platform`, else the host's).
    platform: String,
}

/// Which store an item was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    User,
    Shared,
}

impl Stores {
    /// The configured stores; nothing is created (reading needs no write access).
    pub fn open(cfg: &Config) -> Result<Stores> {
        let mut stores = vec![Store::at(&crate::config::expand_tilde(&cfg.user_store()?))];
        for s in &cfg.store.shared {
            stores.push(Store::at(&crate::config::expand_tilde(s)));
        }
        let platform = match &cfg.pull.platform {
            Some(p) => crate::platform::Platform::parse(p)?.to_string(),
            None => crate::platform::Platform::host().to_string(),
        };
        Ok(Stores {
            stores,
            short_names: cfg.pull.short_name_registries.clone(),
            platform,
        })
    }

    /// The store `warren pull` writes to: the user's, or with `shared` the first shared.
    pub fn writable(&self, shared: bool) -> Result<Store> {
        if shared {
            match self.stores.get(1) {
                Some(s) => Store::create(&s.root),
                None => bail!("no shared store configured (store.shared in warren.toml)"),
            }
        } else {
            Store::create_with_parents(&self.stores[0].root)
        }
    }

    /// Kind of store `i` in [`Stores::stores`].
    pub fn kind(&self, i: usize) -> StoreKind {
        if i == 0 {
            StoreKind::User
        } else {
            StoreKind::Shared
        }
    }

    /// The published image `d` from the first store that has it.
    pub fn image(&self, d: &Digest) -> Option<ImageEntry> {
        self.stores.iter().find_map(|s| s.image(d))
    }

    /// The published image `d` from the first store where it passes the integrity check
    /// for use ([`integrity::quick_for_use`]); damaged copies are passed over.
    pub fn sound_image(&self, d: &Digest) -> Option<ImageEntry> {
        self.stores.iter().find_map(|s| {
            let e = s.image(d)?;
            (integrity::quick_for_use(&s.image_dir(d)) == integrity::Status::Sound).then_some(e)
        })
    }

    /// The first tag record for `name` (canonical form) on `platform`, in store order.
    pub fn find_ref(&self, name: &str, platform: &str) -> Option<(usize, refs::RefRecord)> {
        self.stores
            .iter()
            .enumerate()
            .find_map(|(i, s)| refs::read(s, name, platform).map(|r| (i, r)))
    }

    /// A tag record for `name`: the configured/host platform's first, else any.
    fn find_ref_any(&self, name: &str) -> Option<refs::RefRecord> {
        if let Some((_, r)) = self.find_ref(name, &self.platform) {
            return Some(r);
        }
        self.stores
            .iter()
            .find_map(|s| refs::named(s, name).into_iter().next())
    }

    /// Canonical tag names `image` may mean, most specific first.
    pub fn candidate_names(&self, image: &str) -> Vec<String> {
        match Reference::parse(image) {
            Ok(Reference::Registry(r)) => r
                .candidates(&self.short_names)
                .iter()
                .map(|c| c.to_string())
                .collect(),
            Ok(r @ Reference::OciLayout { .. }) => vec![canonical_oci(&r)],
            Err(_) => Vec::new(),
        }
    }

    /// Find an image by reference (as typed: tag, digest, short name) or by digest prefix.
    pub fn find(&self, image: &str) -> Result<Option<ImageEntry>> {
        for name in self.candidate_names(image) {
            if let Some(rec) = self.find_ref_any(&name) {
                if let Some(e) = self.image(&rec.manifest) {
                    return Ok(Some(e));
                }
            }
        }
        if let Ok(Reference::Registry(r)) = Reference::parse(image) {
            if let Some(d) = &r.digest {
                if let Some(e) = self.image(d) {
                    return Ok(Some(e));
                }
            }
        }
        // A digest or an unambiguous prefix of one (at least 4 hex digits).
        let hex = image.strip_prefix("sha256:").unwrap_or(image);
        if hex.len() >= 4 && hex.len() <= 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let hex = hex.to_ascii_lowercase();
            let mut found: Vec<Digest> = Vec::new();
            for s in &self.stores {
                for d in s.image_digests() {
                    if d.hex().starts_with(&hex) && !found.contains(&d) {
                        found.push(d);
                    }
                }
            }
            match found.len() {
                0 => {}
                1 => return Ok(self.image(&found[0])),
                n => bail!("{image}: digest prefix matches {n} images; give more digits"),
            }
        }
        Ok(None)
    }
}

/// An integrity status in words (`sound`, `no integrity record`, `damaged: why`).
pub fn describe(st: &integrity::Status) -> String {
    match st {
        integrity::Status::Sound => "sound".into(),
        integrity::Status::Unrecorded => {
            "no integrity record (published by an older warren)".into()
        }
        integrity::Status::Damaged(why) => format!("damaged: {why}"),
    }
}

/// `oci:/abs/dir:tag`: the tag name of a layout reference (the directory made absolute
/// so the name means the same from any working directory).
pub fn canonical_oci(r: &Reference) -> String {
    match r {
        Reference::OciLayout { dir, tag } => {
            let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
            let mut s = format!("oci:{}", abs.display());
            if let Some(t) = tag {
                s.push(':');
                s.push_str(t);
            }
            s
        }
        Reference::Registry(r) => r.to_string(),
    }
}

//! OCI image layouts for tests: built here from raw tar bytes (any path, also hostile
//! ones), or the torture layout of scripts/test-images.sh.

use super::need_programs;
use sha2::{Digest as _, Sha256};
use std::path::Path;
use std::process::Command;

/// Build the torture layout with scripts/test-images.sh into `dir`.
pub fn torture_layout(dir: &Path) -> Result<(), String> {
    need_programs(&["/usr/bin/python3", "zstd", "tar2sqfs", "sqfs2tar"])?;
    let o = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/test-images.sh"))
        .args(["layout", "torture"])
        .arg(dir)
        .output()
        .map_err(|e| e.to_string())?;
    if !o.status.success() {
        return Err(format!("test-images.sh failed: {}", super::stderr(&o)));
    }
    Ok(())
}

/// Hex SHA-256 of `b`.
pub fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Write blob `b` into layout `dir`; returns its digest.
fn blob(dir: &Path, b: &[u8]) -> String {
    let h = sha256_hex(b);
    std::fs::write(dir.join("blobs/sha256").join(&h), b).unwrap();
    format!("sha256:{h}")
}

/// An OCI layout at `dir` with one image tagged `latest` made of `layers` (plain tar
/// bytes, stored uncompressed).
pub fn write_layout(dir: &Path, layers: &[Vec<u8>]) {
    write_layout_with_config(dir, layers, None)
}

/// As [`write_layout`], with `config` as the image config blob (None: a valid one).
pub fn write_layout_with_config(dir: &Path, layers: &[Vec<u8>], config: Option<&[u8]>) {
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    let mut descs = Vec::new();
    let mut diffs = Vec::new();
    for l in layers {
        let d = blob(dir, l);
        diffs.push(d.clone());
        descs.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": d, "size": l.len()
        }));
    }
    let cfg = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": diffs}
    }))
    .unwrap();
    let cfg = config.map(<[u8]>::to_vec).unwrap_or(cfg);
    let cd = blob(dir, &cfg);
    let man = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cfg.len()},
        "layers": descs
    }))
    .unwrap();
    let md = blob(dir, &man);
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
              "digest": md, "size": man.len(),
              "annotations": {"org.opencontainers.image.ref.name": "latest"}}]
        }))
        .unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// A raw tar writer that accepts any path (the `tar` crate refuses `..`, which is the
/// point of hostile tests).
#[derive(Default)]
pub struct RawTar {
    pub buf: Vec<u8>,
}

impl RawTar {
    fn header(&mut self, path: &str, typ: tar::EntryType, mode: u32, size: u64, link: &str) {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(typ);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        let p = path.as_bytes();
        if p.len() > 100 {
            // PAX path record for long names.
            let rec_body = format!(" path={path}\n");
            let mut n = rec_body.len() + 1;
            while n != rec_body.len() + n.to_string().len() {
                n = rec_body.len() + n.to_string().len();
            }
            let rec = format!("{n}{rec_body}");
            let mut ph = tar::Header::new_ustar();
            ph.set_entry_type(tar::EntryType::XHeader);
            ph.set_size(rec.len() as u64);
            ph.set_mode(0o644);
            ph.as_old_mut().name[..9].copy_from_slice(b"PaxHeader");
            ph.set_cksum();
            self.buf.extend_from_slice(ph.as_bytes());
            self.buf.extend_from_slice(rec.as_bytes());
            self.pad(rec.len() as u64);
        } else {
            h.as_old_mut().name[..p.len()].copy_from_slice(p);
        }
        let l = link.as_bytes();
        h.as_old_mut().linkname[..l.len()].copy_from_slice(l);
        h.set_cksum();
        self.buf.extend_from_slice(h.as_bytes());
    }
    fn pad(&mut self, n: u64) {
        let pad = (512 - (n % 512) as usize) % 512;
        self.buf.extend(std::iter::repeat_n(0u8, pad));
    }
    pub fn file(mut self, path: &str, data: &[u8]) -> Self {
        self.header(path, tar::EntryType::Regular, 0o644, data.len() as u64, "");
        self.buf.extend_from_slice(data);
        self.pad(data.len() as u64);
        self
    }
    pub fn dir(mut self, path: &str) -> Self {
        self.header(path, tar::EntryType::Directory, 0o755, 0, "");
        self
    }
    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        self.header(path, tar::EntryType::Symlink, 0o777, 0, target);
        self
    }
    pub fn hardlink(mut self, path: &str, target: &str) -> Self {
        self.header(path, tar::EntryType::Link, 0o644, 0, target);
        self
    }
    pub fn done(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&[0u8; 1024]);
        self.buf
    }
}

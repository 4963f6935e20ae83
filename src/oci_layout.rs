//! A local OCI image layout directory as an image source (`oci:DIR[:TAG]`): for tests,
//! air-gapped sites and images built with umoci/skopeo. Everything read is verified
//! against its digest, as from a registry.

use crate::digest::{Digest, HashingWriter};
use crate::platform::Platform;
use crate::source::{ResolvedManifest, Source};
use anyhow::{bail, Context, Result};
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const MANIFEST_OCI: &str = "application/vnd.oci.image.manifest.v1+json";
const MANIFEST_DOCKER: &str = "application/vnd.docker.distribution.manifest.v2+json";
const INDEX_OCI: &str = "application/vnd.oci.image.index.v1+json";
const INDEX_DOCKER: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Manifests and configs larger than this are refused (hostile-input bound).
const MAX_JSON: u64 = 8 << 20;

/// An OCI layout directory and the tag chosen in it.
pub struct OciLayout {
    dir: PathBuf,
    tag: Option<String>,
}

impl OciLayout {
    /// Open `dir` (it must have `oci-layout` and `index.json`).
    pub fn open(dir: &Path, tag: Option<&str>) -> Result<OciLayout> {
        if !dir.join("oci-layout").is_file() || !dir.join("index.json").is_file() {
            bail!(
                "{}: not an OCI image layout (no oci-layout or index.json)",
                dir.display()
            );
        }
        Ok(OciLayout {
            dir: dir.to_path_buf(),
            tag: tag.map(str::to_string),
        })
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        self.dir.join("blobs/sha256").join(d.hex())
    }

    /// Read a small blob and check its digest.
    fn read_verified(&self, d: &Digest) -> Result<Vec<u8>> {
        let p = self.blob_path(d);
        let f = File::open(&p).with_context(|| format!("open blob {d}"))?;
        let mut bytes = Vec::new();
        f.take(MAX_JSON + 1)
            .read_to_end(&mut bytes)
            .with_context(|| format!("read blob {d}"))?;
        if bytes.len() as u64 > MAX_JSON {
            bail!("blob {d}: larger than {MAX_JSON} bytes, refusing to parse it");
        }
        let got = Digest::of(&bytes);
        if &got != d {
            bail!("blob {d}: content has digest {got}");
        }
        Ok(bytes)
    }

    /// The descriptor `index.json` has for our tag.
    fn top(&self) -> Result<Descriptor> {
        let p = self.dir.join("index.json");
        let bytes = std::fs::read(&p).with_context(|| format!("read {}", p.display()))?;
        let idx: ImageIndex = serde_json::from_slice(&bytes)
            .with_context(|| format!("{}: invalid image index", p.display()))?;
        let tagged = |d: &&Descriptor| {
            d.annotations()
                .as_ref()
                .and_then(|a| a.get(REF_NAME))
                .map(String::as_str)
                == self.tag.as_deref()
        };
        let found = match &self.tag {
            Some(t) => idx
                .manifests()
                .iter()
                .find(tagged)
                .cloned()
                .with_context(|| format!("{}: no image tagged {t:?}", self.dir.display()))?,
            None => match idx.manifests().as_slice() {
                [one] => one.clone(),
                _ => idx
                    .manifests()
                    .iter()
                    .find(|d| {
                        d.annotations()
                            .as_ref()
                            .and_then(|a| a.get(REF_NAME))
                            .is_some_and(|n| n == "latest")
                    })
                    .cloned()
                    .with_context(|| {
                        format!(
                            "{}: several images and no tag given (use oci:DIR:TAG)",
                            self.dir.display()
                        )
                    })?,
            },
        };
        Ok(found)
    }
}

fn digest_of(d: &Descriptor) -> Result<Digest> {
    Digest::parse(d.digest().as_ref()).map_err(Into::into)
}

/// The media type of a manifest-ish JSON document: its `mediaType` field, else the
/// descriptor's, else guessed from its shape (umoci omits `mediaType`).
fn media_type(bytes: &[u8], desc_type: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Probe>(bytes) {
        Ok(Probe {
            media_type: Some(m),
            ..
        }) => m,
        Ok(p) if desc_type.is_empty() && p.manifests.is_some() => INDEX_OCI.into(),
        Ok(_) if desc_type.is_empty() => MANIFEST_OCI.into(),
        _ => desc_type.to_string(),
    }
}

impl Source for OciLayout {
    fn describe(&self) -> String {
        match &self.tag {
            Some(t) => format!("oci:{}:{t}", self.dir.display()),
            None => format!("oci:{}", self.dir.display()),
        }
    }

    fn current_digest(&self) -> Result<Digest> {
        digest_of(&self.top()?)
    }

    fn resolve_manifest(&self, platform: &Platform) -> Result<ResolvedManifest> {
        let top = self.top()?;
        let top_digest = digest_of(&top)?;
        let mut digest = top_digest.clone();
        let mut bytes = self.read_verified(&digest)?;
        let mut mt = media_type(&bytes, top.media_type().as_ref());
        if mt == INDEX_OCI || mt == INDEX_DOCKER {
            let idx: ImageIndex =
                serde_json::from_slice(&bytes).with_context(|| format!("index {digest}"))?;
            let m = idx
                .manifests()
                .iter()
                .find(|m| match m.platform() {
                    Some(p) => platform.matches(
                        &p.os().to_string(),
                        &p.architecture().to_string(),
                        p.variant().as_deref(),
                    ),
                    None => false,
                })
                .with_context(|| format!("index {digest}: no image for platform {platform}"))?;
            digest = digest_of(m)?;
            bytes = self.read_verified(&digest)?;
            mt = media_type(&bytes, m.media_type().as_ref());
        }
        if mt != MANIFEST_OCI && mt != MANIFEST_DOCKER {
            bail!("manifest {digest}: unsupported media type {mt:?}");
        }
        let manifest: ImageManifest =
            serde_json::from_slice(&bytes).with_context(|| format!("manifest {digest}"))?;
        Ok(ResolvedManifest {
            top_digest,
            manifest_digest: digest,
            manifest,
            manifest_bytes: bytes,
        })
    }

    fn fetch_config(&self, m: &ResolvedManifest) -> Result<Vec<u8>> {
        self.read_verified(&digest_of(m.manifest.config())?)
    }

    fn fetch_blob(&self, desc: &Descriptor, dest: &Path, progress: &dyn Fn(u64)) -> Result<()> {
        let d = digest_of(desc)?;
        let want = desc.size();
        let mut src = File::open(self.blob_path(&d)).with_context(|| format!("open blob {d}"))?;
        let mut out = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(dest)
            .with_context(|| format!("open {}", dest.display()))?;
        let have = out.metadata()?.len();
        let mut prefix = File::open(dest)?;
        let mut w = HashingWriter::with_prefix(&mut out, (&mut prefix).take(have))?;
        src.seek(SeekFrom::Start(have))?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = src
                .read(&mut buf)
                .with_context(|| format!("read blob {d}"))?;
            if n == 0 {
                break;
            }
            w.write_all(&buf[..n])
                .with_context(|| format!("write {}", dest.display()))?;
            if w.written() > want {
                break;
            }
            progress(w.written());
        }
        let (_, got, n) = w.finish();
        if n != want {
            bail!("blob {d}: {n} bytes, manifest says {want}");
        }
        if got != d {
            bail!("blob {d}: content has digest {got}");
        }
        Ok(())
    }
}

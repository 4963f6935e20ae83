//! OCI Distribution API v2 client: manifests, blobs, auth, TLS, retries.
//!
//! - [`client`]: endpoint, scheme and TLS choice, auth on 401, redirects, retry loop
//! - [`auth`]: `WWW-Authenticate` parsing, bearer tokens and their cache
//! - [`credentials`]: auth.json / docker config.json lookup
//! - [`manifest`]: media types, manifest/index parsing, platform choice
//! - [`blob`]: verified, resumable blob downloads
//! - [`retry`]: backoff and `Retry-After`
//!
//! This module never writes outside the file the caller hands to `fetch_blob`, and never
//! sends credentials anywhere but the registry's own origin (and its token realm).

pub mod auth;
pub mod blob;
pub mod client;
pub mod credentials;
pub mod manifest;
pub mod retry;

use crate::config::Config;
use crate::digest::Digest;
use crate::platform::Platform;
use crate::reference::ImageRef;
use crate::source::{ResolvedManifest, Source};
use anyhow::{anyhow, bail, Context, Result};
use client::{Client, Req};
use credentials::AuthFiles;
use manifest::Kind;
use oci_spec::image::Descriptor;
use reqwest::header::{HeaderValue, ACCEPT, CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::Method;
use retry::Failure;
use std::io::Read;
use std::path::Path;

/// Largest manifest, index or token reply accepted.
pub const MAX_DOC: u64 = 4 << 20;
/// Largest image config accepted.
pub const MAX_CONFIG: u64 = 16 << 20;
/// The header registries use for a manifest's digest.
const DOCKER_CONTENT_DIGEST: &str = "docker-content-digest";

/// A registry image as a pull source. `r` is fully qualified (has a registry).
/// Credentials come from the standard auth files ([`credentials`]).
pub fn open_source(cfg: &Config, r: &ImageRef) -> Result<Box<dyn Source>> {
    open_source_with(cfg, r, AuthFiles::from_env())
}

/// Like [`open_source`] with an explicit list of auth files (`--authfile`).
pub fn open_source_with(cfg: &Config, r: &ImageRef, auth: AuthFiles) -> Result<Box<dyn Source>> {
    Ok(Box::new(RegistrySource::open(cfg, r, auth)?))
}

/// One image reference at one registry.
#[derive(Debug)]
pub struct RegistrySource {
    r: ImageRef,
    client: Client,
}

impl RegistrySource {
    /// Set up the client; no network traffic yet.
    pub fn open(cfg: &Config, r: &ImageRef, auth: AuthFiles) -> Result<RegistrySource> {
        if r.registry.is_none() {
            bail!("{r}: a registry source needs a fully qualified reference");
        }
        Ok(RegistrySource {
            client: Client::open(cfg, r, auth)?,
            r: r.clone(),
        })
    }

    fn manifest_path(&self, reference: &str) -> String {
        format!("/v2/{}/manifests/{reference}", self.client.repository())
    }

    /// GET a manifest or index; verify it against `pinned` (a digest reference) and the
    /// Docker-Content-Digest header. Returns the bytes, their digest and the Content-Type.
    fn get_manifest(
        &self,
        reference: &str,
        pinned: Option<&Digest>,
    ) -> Result<(Vec<u8>, Digest, Option<String>)> {
        let what = if reference == self.r.manifest_reference() {
            format!("manifest of {}", self.describe())
        } else {
            format!("manifest {reference} of {}", self.describe())
        };
        self.client.with_retries(&what, |_| {
            let resp = self.client.send(&Req {
                method: Method::GET,
                path: self.manifest_path(reference),
                headers: vec![(ACCEPT, HeaderValue::from_static(manifest::ACCEPT))],
                pass: &[],
            })?;
            if let Some(len) = header_u64(&resp, CONTENT_LENGTH.as_str()) {
                if len > MAX_DOC {
                    return Err(Failure::fatal(anyhow!(
                        "manifest is {len} bytes, more than the {MAX_DOC} allowed"
                    )));
                }
            }
            let ctype = header_str(&resp, CONTENT_TYPE.as_str()).map(str::to_string);
            let header_digest = match header_str(&resp, DOCKER_CONTENT_DIGEST) {
                Some(h) => Some(Digest::parse(h).map_err(|e| {
                    Failure::fatal(anyhow!("bad Docker-Content-Digest header: {e}"))
                })?),
                None => None,
            };
            let body = read_capped(resp, MAX_DOC).map_err(Failure::retry)?;
            let got = Digest::of(&body);
            if let Some(p) = pinned {
                if got != *p {
                    return Err(Failure::fatal(anyhow!(
                        "wrong content: asked for {p}, got bytes with digest {got}"
                    )));
                }
            }
            if let Some(h) = header_digest {
                if got != h {
                    return Err(Failure::fatal(anyhow!(
                        "wrong content: Docker-Content-Digest says {h}, the bytes hash to {got}"
                    )));
                }
            }
            Ok((body, got, ctype))
        })
    }
}

fn header_str<'a>(resp: &'a reqwest::blocking::Response, name: &str) -> Option<&'a str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

fn header_u64(resp: &reqwest::blocking::Response, name: &str) -> Option<u64> {
    header_str(resp, name).and_then(|v| v.trim().parse().ok())
}

/// Read a whole body, refusing more than `cap` bytes.
pub(crate) fn read_capped(resp: reqwest::blocking::Response, cap: u64) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    resp.take(cap + 1)
        .read_to_end(&mut body)
        .map_err(|e| anyhow!("reading reply: {e}"))?;
    if body.len() as u64 > cap {
        bail!("reply larger than {cap} bytes");
    }
    Ok(body)
}

/// An error and its causes on one line (reqwest hides the interesting part in sources).
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

impl Source for RegistrySource {
    fn describe(&self) -> String {
        self.r.to_string()
    }

    fn current_digest(&self) -> Result<Digest> {
        if let Some(d) = &self.r.digest {
            // Content addressed: a digest reference cannot change.
            return Ok(d.clone());
        }
        let reference = self.r.manifest_reference();
        let what = format!("manifest of {}", self.describe());
        let head = self.client.with_retries(&what, |_| {
            let resp = self.client.send(&Req {
                method: Method::HEAD,
                path: self.manifest_path(&reference),
                headers: vec![(ACCEPT, HeaderValue::from_static(manifest::ACCEPT))],
                pass: &[],
            })?;
            match header_str(&resp, DOCKER_CONTENT_DIGEST) {
                Some(h) => Digest::parse(h)
                    .map(Some)
                    .map_err(|e| Failure::fatal(anyhow!("bad Docker-Content-Digest header: {e}"))),
                None => Ok(None),
            }
        })?;
        match head {
            Some(d) => Ok(d),
            // No header: the digest is the hash of what GET returns.
            None => Ok(self.get_manifest(&reference, None)?.1),
        }
    }

    fn resolve_manifest(&self, platform: &Platform) -> Result<ResolvedManifest> {
        let reference = self.r.manifest_reference();
        let (top, top_digest, ctype) = self.get_manifest(&reference, self.r.digest.as_ref())?;
        let kind = manifest::classify(ctype.as_deref(), &top).with_context(|| self.describe())?;
        let (manifest_bytes, manifest_digest) = match kind {
            Kind::Manifest => (top, top_digest.clone()),
            Kind::Index => {
                let index = manifest::parse_index(&top).with_context(|| self.describe())?;
                let desc =
                    manifest::choose_platform(&index, platform).with_context(|| self.describe())?;
                let (d, size) = manifest::check_descriptor(&desc)
                    .with_context(|| format!("{}: index entry", self.describe()))?;
                let (bytes, _, ctype) = self.get_manifest(&d.to_string(), Some(&d))?;
                if bytes.len() as u64 != size {
                    bail!(
                        "{}: manifest {d} is {} bytes, the index says {size}",
                        self.describe(),
                        bytes.len()
                    );
                }
                let k = manifest::classify(ctype.as_deref(), &bytes)
                    .with_context(|| format!("{}: manifest {d}", self.describe()))?;
                if k != Kind::Manifest {
                    bail!(
                        "{}: index entry {d} for {platform} is itself an index (nested indexes are not supported)",
                        self.describe()
                    );
                }
                (bytes, d)
            }
        };
        let manifest = manifest::parse_manifest(&manifest_bytes)
            .with_context(|| format!("{}: manifest {manifest_digest}", self.describe()))?;
        Ok(ResolvedManifest {
            top_digest,
            manifest_digest,
            manifest,
            manifest_bytes,
        })
    }

    fn fetch_config(&self, m: &ResolvedManifest) -> Result<Vec<u8>> {
        let (cfg_digest, cfg_size) = manifest::check_descriptor(m.manifest.config())?;
        blob::fetch_small(&self.client, &cfg_digest, cfg_size, MAX_CONFIG)
            .with_context(|| format!("{}: image config", self.describe()))
    }

    fn fetch_blob(&self, desc: &Descriptor, dest: &Path, progress: &dyn Fn(u64)) -> Result<()> {
        let (digest, size) = manifest::check_descriptor(desc)
            .with_context(|| format!("{}: blob descriptor", self.describe()))?;
        let what = format!("blob {digest} ({size} bytes) of {}", self.describe());
        let mut restarted = false;
        self.client.with_retries(&what, |_| {
            blob::attempt(&self.client, &digest, size, dest, progress, &mut restarted)
        })
    }
}

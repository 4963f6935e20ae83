//! The pull pipeline: reference → source → manifest → blobs → squashfs → store.
//!
//! Blobs download in parallel (`pull.parallel`); each layer is decompressed and parsed
//! (contents to an unlinked spool file) as soon as its blob is complete, on up to one
//! thread per core, and the layers are applied in order as they become available. The
//! flattened tree then streams into tar2sqfs. Nothing is extracted to disk.
//!
//! Concurrency: the image is built under `locks/image-HEX.lock` in the target store and
//! each blob is downloaded under `locks/blob-HEX.lock`, so N pulls of one image (any
//! users, any nodes sharing the store) download once, build once, and all succeed.

use crate::config::Config;
use crate::digest::Digest;
use crate::image::flatten::Tree;
use crate::image::spool::{Spool, SpoolReader, SpoolWrite};
use crate::image::squash::{squash, SquashOptions};
use crate::image::{layer, Limits};
use crate::platform::Platform;
use crate::reference::Reference;
use crate::source::{ResolvedImage, Source};
use crate::store::gc::remove_image_dir;
use crate::store::layout::Store;
use crate::store::lock::Lock;
use crate::store::refs::RefRecord;
use crate::store::space::{self, NoSpace};
use crate::store::{canonical_oci, describe, integrity, publish, refs, ImageEntry, Stores};
use anyhow::{bail, Context, Result};
use oci_spec::image::Descriptor;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Condvar, Mutex};

/// Options a caller can set for one pull.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// `os/arch[/variant]`; default from config, then the host.
    pub platform: Option<String>,
    /// Pull into the first shared store instead of the user's.
    pub shared: bool,
    pub quiet: bool,
}

/// Pull `image` (as typed) into the store, or answer from the store when the tag still
/// resolves to the stored digest.
pub fn pull(cfg: &Config, image: &str, opts: &PullOptions) -> Result<ImageEntry> {
    let progress = Progress::new(opts.quiet);
    pull_with(cfg, image, opts, &progress)
}

fn pull_with(cfg: &Config, image: &str, opts: &PullOptions, pr: &Progress) -> Result<ImageEntry> {
    let reference = Reference::parse(image)?;
    let platform = match opts.platform.as_deref().or(cfg.pull.platform.as_deref()) {
        Some(p) => Platform::parse(p)?,
        None => Platform::host(),
    };
    let stores = Stores::open(cfg)?;
    let (source, name, current) = open_source(cfg, &reference)?;
    let wanted_store = if opts.shared { 1 } else { 0 };

    // Cached: the tag still points where it did → one request and done.
    if let Some((i, rec)) = stores.find_ref(&name, &platform.to_string()) {
        if rec.top == current {
            let found = if opts.shared {
                (i == wanted_store)
                    .then(|| stores.stores[i].image(&rec.manifest))
                    .flatten()
            } else {
                stores.image(&rec.manifest)
            };
            if let Some(e) = found {
                // The image may be kept in another store than the tag.
                let dir = e.squashfs.parent().unwrap_or(Path::new("/"));
                match integrity::quick_for_use(dir) {
                    integrity::Status::Sound => {
                        pr.line(&format!("{name}: up to date"));
                        return Ok(e);
                    }
                    st => pr.line(&format!(
                        "{name}: {}: {}; repairing",
                        dir.display(),
                        describe(&st)
                    )),
                }
            }
        }
    }

    let target = stores.writable(opts.shared)?;
    // The manifest only: a pull that finds the image stored (built meanwhile by a
    // concurrent pull it waited for) fetches nothing more.
    let m = source
        .resolve_manifest(&platform)
        .with_context(|| format!("resolve {}", source.describe()))?;
    let rec = RefRecord {
        name: name.clone(),
        top: m.top_digest.clone(),
        manifest: m.manifest_digest.clone(),
        platform: platform.to_string(),
    };
    let md = &m.manifest_digest.clone();
    // Already in some store (a shared one: no copy unless asked to publish there).
    let existing = if opts.shared {
        target
            .image(md)
            .filter(|_| integrity::quick(&target.image_dir(md)) == integrity::Status::Sound)
    } else {
        stores.sound_image(md)
    };
    if let Some(e) = existing {
        warn_stored_platform(&name, &platform, &e, pr);
        refs::write(&target, &rec)?;
        pr.line(&format!("{name}: image {md} already stored"));
        return Ok(e);
    }

    let _lock = Lock::exclusive(&target.lock_file("image", md))?;
    if let Some(e) = target.image(md) {
        match integrity::quick(&target.image_dir(md)) {
            // Someone else built (or repaired) it while we waited for the lock.
            integrity::Status::Sound => {
                warn_stored_platform(&name, &platform, &e, pr);
                refs::write(&target, &rec)?;
                return Ok(e);
            }
            // Damaged or unverifiable: replace it (running containers keep the old
            // file open; it goes when they end).
            st => {
                pr.line(&format!("{name}: rebuilding image {md}: {}", describe(&st)));
                remove_image_dir(&target, md)?;
            }
        }
    }
    let config_bytes = source
        .fetch_config(&m)
        .with_context(|| format!("resolve {}", source.describe()))?;
    crate::image::config::check(&config_bytes)
        .with_context(|| format!("{name}: image config {}", m.manifest.config().digest()))?;
    warn_platform_mismatch(&name, &platform, &config_bytes, pr);
    let resolved = ResolvedImage::new(m, config_bytes);
    publish::clean_stale_image(&target, md);
    let stage = publish::stage_image(&target, md)?;
    let built = build(
        cfg,
        source.as_ref(),
        &stores,
        &target,
        &resolved,
        &stage,
        pr,
    );
    if let Err(e) = built {
        let _ = std::fs::remove_dir_all(&stage);
        let e = out_of_space(&target, e);
        if e.is::<NoSpace>() && !cfg.store.keep_layers {
            // Do not leave the store full of this image's blobs until `prune`.
            drop_blobs(&target, &resolved.manifest);
        }
        return Err(e);
    }
    publish::publish_image(&target, &stage, md)?;
    refs::write(&target, &rec)?;
    if !cfg.store.keep_layers {
        drop_blobs(&target, &resolved.manifest);
    }
    target
        .image(md)
        .with_context(|| format!("image {md} vanished right after publishing"))
}

/// Delete the layer blobs of `m` that no other pull is using (best effort: a blob left
/// behind is only cache, which `prune` removes).
fn drop_blobs(target: &Store, m: &oci_spec::image::ImageManifest) {
    for l in m.layers() {
        if let Ok(d) = Digest::parse(l.digest().as_ref()) {
            let _ = publish::drop_blob(target, &d);
        }
    }
}

/// `e`, or [`NoSpace`] when the store's file system is what failed: an ENOSPC in the
/// chain, or a squasher failure with less free space left than the image's bytes
/// (tar2sqfs reports ENOSPC as an I/O error and deletes its output).
fn out_of_space(target: &Store, e: anyhow::Error) -> anyhow::Error {
    if let Some(SpoolWrite(dir)) = e.downcast_ref::<SpoolWrite>() {
        if space::is_enospc(&e) {
            return NoSpace(dir.clone()).into();
        }
    }
    let low = |need: u64| space::free_bytes(&target.root).is_some_and(|f| f < need);
    let squash_failed = e.downcast_ref::<SquashFailed>();
    if e.is::<NoSpace>() || space::is_enospc(&e) || squash_failed.is_some_and(|s| low(s.bytes)) {
        return NoSpace(target.root.clone()).into();
    }
    e
}

/// [`warn_platform_mismatch`] for an image already stored (its config is read from the
/// store: nothing is fetched).
fn warn_stored_platform(name: &str, want: &Platform, e: &ImageEntry, pr: &Progress) {
    if let Ok(config) = std::fs::read(&e.config) {
        warn_platform_mismatch(name, want, &config, pr);
    }
}

/// A single-platform image (no index to choose from) built for another platform than
/// the one asked for: pulled anyway, with one warning line, as podman does.
fn warn_platform_mismatch(name: &str, want: &Platform, config: &[u8], pr: &Progress) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(config) else {
        return;
    };
    let field = |k: &str| v.get(k).and_then(|x| x.as_str());
    if let (Some(os), Some(arch)) = (field("os"), field("architecture")) {
        if !want.matches(os, arch, field("variant")) {
            let have = match field("variant") {
                Some(var) => format!("{os}/{arch}/{var}"),
                None => format!("{os}/{arch}"),
            };
            pr.line(&format!(
                "warning: {name} is built for {have}, not the requested {want}"
            ));
        }
    }
}

/// The source for a reference, its canonical tag name, and what it points at now.
/// Short names try each configured registry in turn.
fn open_source(cfg: &Config, r: &Reference) -> Result<(Box<dyn Source>, String, Digest)> {
    match r {
        Reference::OciLayout { dir, tag } => {
            let src = crate::oci_layout::OciLayout::open(dir, tag.as_deref())?;
            let cur = src.current_digest()?;
            Ok((Box::new(src), canonical_oci(r), cur))
        }
        Reference::Registry(ir) => {
            let mut last = None;
            for c in ir.candidates(&cfg.pull.short_name_registries) {
                let res = crate::registry::open_source(cfg, &c).and_then(|s| {
                    let cur = s.current_digest().with_context(|| format!("look up {c}"))?;
                    Ok((s, cur))
                });
                match res {
                    Ok((s, cur)) => return Ok((s, c.to_string(), cur)),
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or_else(|| {
                anyhow::anyhow!("{ir}: no registry to try (pull.short_name_registries is empty)")
            }))
        }
    }
}

/// Layer media types we can read (compression is detected from the bytes anyway).
fn check_layer_type(i: usize, l: &Descriptor) -> Result<()> {
    let mt = l.media_type().to_string();
    let ok = mt.starts_with("application/vnd.oci.image.layer.")
        || mt.starts_with("application/vnd.docker.image.rootfs.");
    let foreign = mt.contains("foreign") || mt.contains("nondistributable");
    if !ok || foreign {
        bail!(
            "layer {} ({}): unsupported media type {mt:?}",
            i + 1,
            l.digest()
        );
    }
    Ok(())
}

/// Fetch, flatten and squash into `stage`, and write config and manifest beside.
fn build(
    cfg: &Config,
    source: &dyn Source,
    stores: &Stores,
    target: &Store,
    img: &ResolvedImage,
    stage: &Path,
    pr: &Progress,
) -> Result<()> {
    let layers = img.manifest.layers();
    for (i, l) in layers.iter().enumerate() {
        check_layer_type(i, l)?;
    }
    let limits = Limits::from_config(&cfg.pull);
    let spool_dir = std::env::temp_dir();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let downloads = Semaphore::new(cfg.pull.parallel);
    let cpu = Semaphore::new(cpus);
    // Set when a layer fails: the others stop before their next expensive step.
    let abort = AtomicBool::new(false);
    let mut tree = Tree::new();
    let mut spools: Vec<Option<SpoolReader>> = (0..layers.len()).map(|_| None).collect();
    pr.start(layers);

    std::thread::scope(|s| -> Result<()> {
        let (tx, rx) = mpsc::channel();
        for (i, desc) in layers.iter().enumerate() {
            let tx = tx.clone();
            let (downloads, cpu, limits, spool_dir, abort) =
                (&downloads, &cpu, &limits, &spool_dir, &abort);
            s.spawn(move || {
                let r = (|| -> Result<_> {
                    let d = Digest::parse(desc.digest().as_ref())?;
                    let file = {
                        let _g = downloads.acquire();
                        if abort.load(Ordering::Relaxed) {
                            bail!("abandoned: another layer failed");
                        }
                        obtain_blob(source, stores, target, desc, &d, &|n| pr.bytes(i, n))?
                    };
                    pr.unpacking(i);
                    let _g = cpu.acquire();
                    if abort.load(Ordering::Relaxed) {
                        bail!("abandoned: another layer failed");
                    }
                    let mut spool = Spool::create(spool_dir)?;
                    let reader = layer::open_decompressed(file)?;
                    let parsed =
                        layer::parse(reader, &mut spool, i as u32, limits, limits.max_entries)?;
                    Ok((parsed, spool.finish()?))
                })()
                .with_context(|| format!("layer {} ({})", i + 1, desc.digest()));
                let _ = tx.send((i, r));
            });
        }
        drop(tx);
        let mut ready: Vec<Option<layer::ParsedLayer>> = (0..layers.len()).map(|_| None).collect();
        let mut next = 0;
        let mut total = 0u64;
        let fail = |e: anyhow::Error| {
            abort.store(true, Ordering::Relaxed);
            e
        };
        for (i, r) in rx {
            let (parsed, sp) = r.map_err(fail)?;
            ready[i] = Some(parsed);
            spools[i] = Some(sp);
            while next < layers.len() {
                let Some(p) = ready[next].take() else { break };
                total += p.entries.len() as u64;
                if total > limits.max_entries {
                    abort.store(true, Ordering::Relaxed);
                    bail!(
                        "image has more than {} entries (pull.max_entries)",
                        limits.max_entries
                    );
                }
                for dev in &p.dropped_devices {
                    pr.note(&format!("layer {}: dropped device node {dev}", next + 1));
                }
                tree.apply(next as u32 + 1, p.entries)
                    .with_context(|| format!("layer {} ({})", next + 1, layers[next].digest()))
                    .map_err(fail)?;
                pr.done(next);
                next += 1;
            }
        }
        Ok(())
    })?;

    let spools: Vec<SpoolReader> = spools.into_iter().flatten().collect();
    if spools.len() != layers.len() {
        bail!("internal: a layer was not processed");
    }
    pr.finish_layers();
    pr.line(&format!("squashing {} paths", tree.len()));
    let sqfs = stage.join("image.sqfs");
    squash(
        &tree,
        &spools,
        &sqfs,
        &SquashOptions::from_config(&cfg.pull),
    )
    .map_err(|e| {
        let bytes = spools.iter().map(SpoolReader::len).sum();
        e.context(SquashFailed { bytes })
    })?;
    publish::seal_file(&sqfs)?;
    for (name, bytes) in [
        ("config.json", &img.config_bytes),
        ("manifest.json", &img.manifest_bytes),
    ] {
        let p = stage.join(name);
        std::fs::write(&p, bytes).with_context(|| format!("write {}", p.display()))?;
        publish::seal_file(&p)?;
    }
    integrity::seal(stage)?;
    Ok(())
}

/// An open handle on blob `d`: from any store that has it, else downloaded into
/// `target` under the blob's lock (waiting if another process is downloading it).
fn obtain_blob(
    source: &dyn Source,
    stores: &Stores,
    target: &Store,
    desc: &Descriptor,
    d: &Digest,
    progress: &dyn Fn(u64),
) -> Result<File> {
    for s in &stores.stores {
        if let Ok(f) = File::open(s.blob(d)) {
            return Ok(f);
        }
    }
    let _l = Lock::exclusive(&target.lock_file("blob", d))?;
    if let Ok(f) = File::open(target.blob(d)) {
        return Ok(f);
    }
    let partial = target.partial_blob(d);
    if let Err(e) = source.fetch_blob(desc, &partial, progress) {
        if space::is_enospc(&e) {
            // A partial blob would keep the store full until `prune`.
            let _ = std::fs::remove_file(&partial);
            return Err(NoSpace(target.root.clone()).into());
        }
        // Bytes that are all there but wrong cannot be resumed: start over next time.
        if std::fs::metadata(&partial).is_ok_and(|m| m.len() >= desc.size()) {
            let _ = std::fs::remove_file(&partial);
        }
        return Err(e).with_context(|| format!("download from {}", source.describe()));
    }
    let p = publish::publish_blob(target, &partial, d)?;
    File::open(&p).with_context(|| format!("open {}", p.display()))
}

/// Context of a squash failure: the bytes the image holds before compression.
#[derive(Debug, thiserror::Error)]
#[error("squash the image ({bytes} bytes of files)")]
struct SquashFailed {
    bytes: u64,
}

/// A counting semaphore (downloads at once, CPU-bound layers at once).
struct Semaphore {
    n: Mutex<usize>,
    cv: Condvar,
}

struct Permit<'a>(&'a Semaphore);

impl Semaphore {
    fn new(n: usize) -> Semaphore {
        Semaphore {
            n: Mutex::new(n.max(1)),
            cv: Condvar::new(),
        }
    }
    fn acquire(&self) -> Permit<'_> {
        let mut n = self.n.lock().unwrap_or_else(|e| e.into_inner());
        while *n == 0 {
            n = self.cv.wait(n).unwrap_or_else(|e| e.into_inner());
        }
        *n -= 1;
        Permit(self)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *self.0.n.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.0.cv.notify_one();
    }
}

/// What the user sees: per-layer bars on a terminal, plain lines otherwise, nothing
/// with `-q`. All on stderr (stdout carries the digest).
enum Progress {
    Quiet,
    Plain,
    Bars {
        multi: indicatif::MultiProgress,
        bars: Mutex<Vec<indicatif::ProgressBar>>,
    },
}

impl Progress {
    fn new(quiet: bool) -> Progress {
        use std::io::IsTerminal;
        if quiet {
            Progress::Quiet
        } else if std::io::stderr().is_terminal() {
            Progress::Bars {
                multi: indicatif::MultiProgress::new(),
                bars: Mutex::new(Vec::new()),
            }
        } else {
            Progress::Plain
        }
    }

    fn line(&self, s: &str) {
        match self {
            Progress::Quiet => {}
            Progress::Plain => eprintln!("{s}"),
            Progress::Bars { multi, .. } => {
                let _ = multi.println(s);
            }
        }
    }

    fn note(&self, s: &str) {
        self.line(s)
    }

    fn start(&self, layers: &[Descriptor]) {
        match self {
            Progress::Quiet => {}
            Progress::Plain => {
                for (i, l) in layers.iter().enumerate() {
                    eprintln!(
                        "layer {}/{}: {} ({} bytes)",
                        i + 1,
                        layers.len(),
                        l.digest(),
                        l.size()
                    );
                }
            }
            Progress::Bars { multi, bars } => {
                let style = indicatif::ProgressStyle::with_template(
                    "{prefix} {bar:30} {bytes:>10}/{total_bytes:<10} {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
                let mut v = bars.lock().unwrap_or_else(|e| e.into_inner());
                for l in layers {
                    let b = multi.add(indicatif::ProgressBar::new(l.size()));
                    b.set_style(style.clone());
                    let d = l.digest().to_string();
                    b.set_prefix(d.chars().skip(7).take(12).collect::<String>());
                    v.push(b);
                }
            }
        }
    }

    fn bar(&self, i: usize) -> Option<indicatif::ProgressBar> {
        match self {
            Progress::Bars { bars, .. } => bars
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(i)
                .cloned(),
            _ => None,
        }
    }

    fn bytes(&self, i: usize, n: u64) {
        if let Some(b) = self.bar(i) {
            b.set_position(n);
        }
    }

    fn unpacking(&self, i: usize) {
        if let Some(b) = self.bar(i) {
            b.set_position(b.length().unwrap_or(0));
            b.set_message("unpacking");
        }
    }

    /// Take the bars off the terminal (the digest goes to stdout next).
    fn finish_layers(&self) {
        if let Progress::Bars { multi, .. } = self {
            let _ = multi.clear();
        }
    }

    fn done(&self, i: usize) {
        match self {
            Progress::Plain => eprintln!("layer {}: applied", i + 1),
            _ => {
                if let Some(b) = self.bar(i) {
                    b.finish_with_message("done");
                }
            }
        }
    }
}

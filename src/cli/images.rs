//! `warren images`.

use super::Ctx;
use crate::store::{refs, StoreKind, Stores};
use anyhow::Result;
use std::collections::HashSet;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print a JSON array (stable keys: name, platform, digest, size, store, store_path).
    #[arg(long)]
    pub json: bool,
}

#[derive(serde::Serialize)]
struct Row {
    /// The tag, or null for an image no tag in its store names.
    name: Option<String>,
    /// `os/arch[/variant]` the tag was pulled for (null for untagged images).
    platform: Option<String>,
    digest: String,
    /// Bytes of the squashfs file.
    size: u64,
    /// Where the image's files are: "user" or "shared" (a tag in the user's store may
    /// name an image kept in a shared store).
    store: &'static str,
    store_path: String,
}

/// List tags and untagged images of every store.
pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let stores = Stores::open(&ctx.config)?;
    let mut rows = Vec::new();
    let kind_of = |i: usize| match stores.kind(i) {
        StoreKind::User => "user",
        StoreKind::Shared => "shared",
    };
    // A tag in several stores means what the first store says (as pull and run read
    // it); an image in several stores is listed once, where the tag finds it.
    let mut seen_tags = HashSet::new();
    let mut listed = HashSet::new();
    for (i, s) in stores.stores.iter().enumerate() {
        for r in refs::list(s) {
            if !seen_tags.insert((r.name.clone(), r.platform.clone())) {
                continue;
            }
            // The tag's own store first, then the others in order (a tag in the user's
            // store may name an image kept in a shared one).
            let Some((j, e)) = std::iter::once(i)
                .chain(0..stores.stores.len())
                .find_map(|j| stores.stores[j].image(&r.manifest).map(|e| (j, e)))
            else {
                continue;
            };
            listed.insert(r.manifest.clone());
            rows.push(Row {
                name: Some(r.name),
                platform: Some(r.platform),
                digest: r.manifest.to_string(),
                size: std::fs::metadata(&e.squashfs).map(|m| m.len()).unwrap_or(0),
                store: kind_of(j),
                store_path: stores.stores[j].root.display().to_string(),
            });
        }
    }
    for (i, s) in stores.stores.iter().enumerate() {
        for d in s.image_digests() {
            if listed.contains(&d) {
                continue;
            }
            if let Some(img) = s.image(&d) {
                listed.insert(d.clone());
                rows.push(Row {
                    name: None,
                    platform: None,
                    digest: d.to_string(),
                    size: std::fs::metadata(&img.squashfs)
                        .map(|m| m.len())
                        .unwrap_or(0),
                    store: kind_of(i),
                    store_path: s.root.display().to_string(),
                });
            }
        }
    }
    if a.json {
        super::print_json(&rows)?;
        return Ok(0);
    }
    println!(
        "{:<50} {:<15} {:<19} {:>10}  STORE",
        "NAME", "PLATFORM", "DIGEST", "SIZE"
    );
    for r in rows {
        println!(
            "{:<50} {:<15} {:<19} {:>10}  {}",
            r.name.as_deref().unwrap_or("<none>"),
            r.platform.as_deref().unwrap_or("-"),
            &r.digest[..19.min(r.digest.len())],
            // The units of pull's progress bars (KiB, MiB, ...).
            indicatif::HumanBytes(r.size).to_string(),
            r.store
        );
    }
    Ok(0)
}

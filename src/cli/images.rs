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
    for (i, s) in stores.stores.iter().enumerate() {
        let kind = kind_of(i);
        let mut named = HashSet::new();
        for r in refs::list(s) {
            // A tag may name an image kept in another store (pulled from a shared one).
            let Some((j, e)) = stores
                .stores
                .iter()
                .enumerate()
                .find_map(|(j, st)| st.image(&r.manifest).map(|e| (j, e)))
            else {
                continue;
            };
            named.insert(r.manifest.clone());
            rows.push(Row {
                name: Some(r.name),
                platform: Some(r.platform),
                digest: r.manifest.to_string(),
                size: std::fs::metadata(&e.squashfs).map(|m| m.len()).unwrap_or(0),
                store: kind_of(j),
                store_path: stores.stores[j].root.display().to_string(),
            });
        }
        for d in s.image_digests() {
            if named.contains(&d) {
                continue;
            }
            if let Some(img) = s.image(&d) {
                rows.push(Row {
                    name: None,
                    platform: None,
                    digest: d.to_string(),
                    size: std::fs::metadata(&img.squashfs)
                        .map(|m| m.len())
                        .unwrap_or(0),
                    store: kind,
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

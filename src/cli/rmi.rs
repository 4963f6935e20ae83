//! `warren rmi`.

use super::Ctx;
use crate::store::layout::Store;
use crate::store::lock::Lock;
use crate::store::{gc, refs, Stores};
use anyhow::{bail, Result};
use std::path::Path;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub store: super::store_args::StoreArgs,
    /// Tags (as pulled) or digests; an image goes when its last tag goes.
    #[arg(required = true)]
    pub images: Vec<String>,
}

/// Remove tags, and images no tag names any more.
pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let stores = Stores::open(&ctx.config)?;
    let store = stores.writable(a.store.shared()?)?;
    // Where the caller's prefetch lists are, found once for every image deleted.
    let lists = super::caller::current(&ctx.config.run)
        .ok()
        .and_then(|c| crate::runtime::spec::prefetch_dir(&c));
    let lists = lists.as_deref();
    for image in &a.images {
        let by_name = stores
            .candidate_names(image)
            .into_iter()
            .find(|n| !refs::named(&store, n).is_empty());
        if let Some(n) = by_name {
            untag(&store, &n, lists)?;
            continue;
        }
        // A digest or digest prefix: every tag naming it, then the image itself.
        let Some(e) = stores.find(image)? else {
            bail!("{image}: no such image in {}", store.root.display());
        };
        if store.image(&e.digest).is_none() {
            bail!(
                "{image}: image {} is not in {} (a shared store is read-only; admins use --shared)",
                e.digest,
                store.root.display()
            );
        }
        for r in refs::list(&store)
            .into_iter()
            .filter(|r| r.manifest == e.digest)
        {
            untag(&store, &r.name, lists)?;
        }
        if store.image(&e.digest).is_some() {
            let _l = Lock::exclusive(&store.lock_file("image", &e.digest))?;
            gc::remove_image_dir(&store, &e.digest)?;
            forget_prefetch_lists(lists, &e.digest.to_string());
            println!("deleted {}", e.digest);
        }
    }
    Ok(0)
}

fn untag(store: &Store, name: &str, lists: Option<&Path>) -> Result<()> {
    let gone = gc::rmi(store, name)?;
    println!("untagged {name}");
    for d in gone {
        forget_prefetch_lists(lists, &d.to_string());
        println!("deleted {d}");
    }
    Ok(())
}

/// The user's prefetch lists of a deleted image (docs/run.md, "The prefetch list"): a
/// cache of it, gone with it (`dir`: where they are, if anywhere). Best effort.
fn forget_prefetch_lists(dir: Option<&Path>, digest: &str) {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    let Some(dir) = dir else {
        return;
    };
    let prefix = format!("{hex}.");
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

//! `warren verify`: the full integrity check of every image in every store.

use super::Ctx;
use crate::store::integrity::{self, Status};
use crate::store::{describe, Stores};
use anyhow::Result;

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Hashes each image's squashfs and compares it with the digest recorded \
when it was published. A damaged image in a store you can write loses its record, so the \
next `warren pull` of its tag rebuilds it. Exit status 1 if any image is damaged."
)]
/// Arguments of `warren verify`.
pub struct Args {
    /// Print a JSON array (stable keys: digest, store_path, status, detail).
    #[arg(long)]
    pub json: bool,
}

#[derive(serde::Serialize)]
struct Row {
    digest: String,
    store_path: String,
    /// "sound", "unrecorded" or "damaged".
    status: &'static str,
    /// Why, for damaged and unrecorded images.
    detail: Option<String>,
}

/// Check every store, print one line per image.
pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let stores = Stores::open(&ctx.config)?;
    let mut rows = Vec::new();
    for s in &stores.stores {
        for v in integrity::verify(s) {
            let (status, mut detail) = match &v.status {
                Status::Sound => ("sound", None),
                Status::Unrecorded => ("unrecorded", Some(describe(&v.status))),
                Status::Damaged(_) => ("damaged", Some(describe(&v.status))),
            };
            if v.forgotten {
                if let Some(d) = &mut detail {
                    d.push_str("; the next pull of its tag rebuilds it");
                }
            }
            rows.push(Row {
                digest: v.digest.to_string(),
                store_path: s.root.display().to_string(),
                status,
                detail,
            });
        }
    }
    let damaged = rows.iter().any(|r| r.status == "damaged");
    if a.json {
        super::print_json(&rows)?;
    } else {
        for r in &rows {
            println!(
                "{:<10} {}  {}{}",
                r.status,
                r.digest,
                r.store_path,
                r.detail
                    .as_deref()
                    .map(|d| format!("  ({d})"))
                    .unwrap_or_default()
            );
        }
    }
    Ok(if damaged { 1 } else { 0 })
}

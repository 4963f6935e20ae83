//! `warren prune`.

use super::Ctx;
use crate::store::{gc, Stores};
use anyhow::Result;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Say what would be removed, remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub store: super::store_args::StoreArgs,
}

/// Remove what nothing refers to, or list it with `--dry-run`.
pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let stores = Stores::open(&ctx.config)?;
    let store = stores.writable(a.store.shared()?)?;
    let rep = gc::prune(&store, ctx.config.store.keep_layers, a.dry_run)?;
    if !ctx.quiet {
        let verb = if a.dry_run { "would remove" } else { "removed" };
        for p in &rep.removed {
            println!("{verb} {}", p.display());
        }
        println!("{verb} {} items, {} bytes", rep.removed.len(), rep.bytes);
    }
    Ok(0)
}

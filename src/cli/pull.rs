//! `warren pull`.

use super::Ctx;
use crate::pull::{pull, PullOptions};
use anyhow::{bail, Result};

#[derive(clap::Args, Debug)]
#[command(
    after_help = "IMAGE: NAME[:TAG], REGISTRY/NAME[:TAG][@DIGEST], docker://…, \
REGISTRY#NAME (enroot), or oci:DIR[:TAG] (a local OCI layout).\n\
Prints the image's manifest digest on stdout when done."
)]
/// Arguments of `warren pull`.
pub struct Args {
    /// Platform to pull from a multi-platform image, `os/arch[/variant]`.
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    /// Pull into the first shared store (store.shared) instead of your own (admins).
    #[arg(long)]
    pub shared: bool,
    /// Store to pull into: `user` (default) or `shared` (same as --shared).
    #[arg(long, value_name = "user|shared")]
    pub store: Option<String>,
    /// The image to pull.
    pub image: String,
}

/// Pull, print the manifest digest.
pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let shared = match a.store.as_deref() {
        None | Some("user") => a.shared,
        Some("shared") => true,
        Some(other) => bail!("--store {other:?}: expected user or shared"),
    };
    let opts = PullOptions {
        platform: a.platform,
        shared,
        quiet: ctx.quiet,
    };
    let e = pull(&ctx.config, &a.image, &opts)?;
    println!("{}", e.digest);
    Ok(0)
}

//! `warren pull`.

use super::Ctx;
use crate::pull::{pull, PullOptions};
use anyhow::Result;

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
    #[command(flatten)]
    pub store: super::store_args::StoreArgs,
    /// The image to pull.
    pub image: String,
}

/// Pull, print the manifest digest.
pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let opts = PullOptions {
        platform: a.platform,
        shared: a.store.shared()?,
    };
    let progress = super::progress::Terminal::new(ctx.quiet);
    let e = pull(&ctx.config, &a.image, &opts, &progress)?;
    println!("{}", e.digest);
    Ok(0)
}

//! `warren unshare`.

use super::Ctx;
use anyhow::Result;

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_ctx: &Ctx, _args: Args) -> Result<i32> {
    anyhow::bail!("unshare: not implemented yet")
}

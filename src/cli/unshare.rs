//! `warren unshare`: a shell or command in your user namespace (same map as `warren run`,
//! all capabilities) to inspect or delete files owned by your subordinate IDs.

use super::Ctx;
use crate::runtime::{idmap::Identity, unshare, userns};
use anyhow::Result;

#[derive(clap::Args, Debug)]
#[command(after_help = "Example: warren unshare rm -rf ~/scratch/container-output")]
pub struct Args {
    /// Use the --remap-root map (you are UID 0 inside) instead of the default keep-id map.
    #[arg(long)]
    pub remap_root: bool,
    /// Command and arguments (default: $SHELL, else /bin/sh).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<i32> {
    let user = userns::HostUser::current();
    let identity = if args.remap_root {
        Identity::RemapRoot
    } else {
        Identity::KeepId
    };
    let plan = userns::plan(&user, identity)?;
    if !ctx.quiet {
        for n in plan.problems.iter().chain(&plan.notice) {
            eprintln!("warren: {n}");
        }
    }
    let argv = if args.command.is_empty() {
        vec![std::env::var("SHELL")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "/bin/sh".into())]
    } else {
        args.command
    };
    unshare::run(&ctx.config.run, &plan.map, &argv)
}

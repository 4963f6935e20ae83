//! `warren ps`: running containers and holders of this user.

use super::Ctx;
use crate::runtime::state;
use anyhow::Result;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print JSON (one array of records).
    #[arg(long)]
    pub json: bool,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<i32> {
    let rundir = super::caller::runtime_dir(&ctx.config.run)?;
    let recs = state::list(&rundir)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&recs)?);
        return Ok(0);
    }
    if ctx.quiet {
        for r in &recs {
            println!("{}", r.id);
        }
        return Ok(0);
    }
    println!(
        "{:<12}  {:<16}  {:<9}  {:>7}  {:>8}  {:<30}  COMMAND",
        "ID", "NAME", "KIND", "PID", "UP", "IMAGE"
    );
    let now = state::now();
    for r in &recs {
        let up = now.saturating_sub(r.started);
        println!(
            "{:<12}  {:<16}  {:<9}  {:>7}  {:>7}s  {:<30}  {}",
            r.id,
            r.name.as_deref().unwrap_or("-"),
            r.kind,
            r.pid,
            up,
            r.image,
            r.command.join(" ")
        );
    }
    Ok(0)
}

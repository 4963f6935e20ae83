//! `warren ps`: running containers and holders of this user.

use super::Ctx;
use crate::runtime::{holder, state};
use anyhow::Result;
use std::path::Path;

/// A record as `ps --json` shows it: holders also say whether a container uses them and
/// (shared image mounts) when they end if none does (Unix seconds).
#[derive(serde::Serialize)]
struct Row<'a> {
    #[serde(flatten)]
    record: &'a state::Record,
    #[serde(skip_serializing_if = "Option::is_none")]
    in_use: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idle_deadline: Option<u64>,
}

/// The COMMAND column: a container's command; a holder's state.
fn what(rundir: &Path, r: &state::Record, now: u64) -> String {
    if r.kind != "holder" {
        return r.command.join(" ");
    }
    let shared = if r.idle.is_some() {
        "shared image mount"
    } else {
        "holder"
    };
    if holder::in_use(rundir, r) {
        return format!("({shared}, in use)");
    }
    match holder::idle_deadline(rundir, r) {
        Some(d) => format!("({shared}, idle, ends in {}s)", d.saturating_sub(now)),
        None => format!("({shared}, idle)"),
    }
}

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
        let rows: Vec<Row> = recs
            .iter()
            .map(|r| Row {
                in_use: (r.kind == "holder").then(|| holder::in_use(&rundir, r)),
                idle_deadline: holder::idle_deadline(&rundir, r),
                record: r,
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
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
            what(&rundir, r, now)
        );
    }
    Ok(0)
}

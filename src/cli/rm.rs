//! `warren rm NAME…`: stop running containers or holders (SIGTERM, then SIGKILL).

use super::Ctx;
use crate::runtime::{holder, state};
use anyhow::{bail, Context, Result};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Names or IDs (an ID prefix of 4+ characters is enough).
    #[arg(required_unless_present = "job")]
    pub names: Vec<String>,
    /// Stop every holder of Slurm job JOB (started with `warren run --holder --job JOB…`).
    #[arg(long, value_name = "JOB")]
    pub job: Option<u32>,
    /// Seconds to wait after SIGTERM before SIGKILL.
    #[arg(short = 't', long = "time", default_value_t = 10)]
    pub time: u64,
    /// Also stop a holder that containers still use (they lose their image).
    #[arg(short, long)]
    pub force: bool,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<i32> {
    let rundir = super::caller::runtime_dir(&ctx.config.run)?;
    if let Some(job) = args.job {
        let n = holder::stop_job(&rundir, job, args.time)?;
        if !ctx.quiet {
            println!("{n}");
        }
    }
    let recs = state::list(&rundir)?;
    let mut code = 0;
    for n in &args.names {
        let found: Vec<&state::Record> = recs
            .iter()
            .filter(|r| {
                r.name.as_deref() == Some(n)
                    || r.id == *n
                    || (n.len() >= 4 && r.id.starts_with(n.as_str()))
            })
            .collect();
        let r = match found.as_slice() {
            [r] => *r,
            [] => {
                eprintln!("warren: rm {n}: no such running container or holder");
                code = 1;
                continue;
            }
            _ => bail!("rm {n}: ambiguous ID prefix"),
        };
        if r.kind == "holder" {
            // Under the holder's write lock: no container joins while it is stopped, and
            // it is never stopped under one (unless --force).
            if !holder::stop_if_unused(&rundir, r, args.time, args.force)
                .with_context(|| format!("rm {n}"))?
            {
                let users = holder::joined(&rundir, r)?;
                eprintln!(
                    "warren: rm {n}: {} container(s) still use this holder ({}); stop them first or use --force",
                    users.len().max(1),
                    users.iter().map(|u| u.id.as_str()).collect::<Vec<_>>().join(", ")
                );
                code = 1;
                continue;
            }
        } else {
            holder::stop(r.pid, args.time).with_context(|| format!("rm {n}"))?;
        }
        if !ctx.quiet {
            println!("{}", r.name.as_deref().unwrap_or(&r.id));
        }
    }
    Ok(code)
}

//! `warren man-pages DIR` (hidden; run by `make`): one man page per command, generated
//! from the CLI definition: warren.1, warren-run.1, warren-admin-subid-plan.1, …

use crate::util::atomic_write;
use anyhow::{Context, Result};
use clap::CommandFactory;
use std::path::{Path, PathBuf};

/// `warren man-pages` arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory to write the pages into (created if missing).
    dir: PathBuf,
}

/// Writes every page; prints nothing (the build lists the directory).
pub fn run(args: &Args) -> Result<i32> {
    std::fs::create_dir_all(&args.dir).with_context(|| format!("create {}", args.dir.display()))?;
    let mut cmd = super::Cli::command().disable_help_subcommand(true);
    // Fills in every subcommand's display name (`warren-admin-subid`) and bin name.
    cmd.build();
    write_pages(&cmd, &args.dir)?;
    Ok(0)
}

fn write_pages(cmd: &clap::Command, dir: &Path) -> Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, dir)?;
    }
    // No date in the page: two builds of one commit give identical packages.
    let man = clap_mangen::Man::new(cmd.clone())
        .source(format!("warren {}", env!("CARGO_PKG_VERSION")))
        .manual("warren manual");
    let mut page = Vec::new();
    man.render(&mut page).context("render man page")?;
    let path = dir.join(man.get_filename());
    atomic_write(&path, &page, 0o644).with_context(|| format!("write {}", path.display()))?;
    Ok(())
}

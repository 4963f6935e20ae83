//! `warren completion SHELL`: the shell completion script, generated from the CLI
//! definition so it never drifts from the real options.

use anyhow::{Context, Result};
use clap::CommandFactory;
use std::io::Write;

/// `warren completion` arguments.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Install: warren completion bash > /etc/bash_completion.d/warren ; warren completion zsh > /usr/local/share/zsh/site-functions/_warren ; warren completion fish > /etc/fish/completions/warren.fish (the packages already ship all three)."
)]
pub struct Args {
    /// The shell to write the script for.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

/// Writes the script to stdout. Rendered into memory first: the generator panics on a
/// write error, and a closed pipe must be a one-line error instead.
pub fn run(args: &Args) -> Result<i32> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut visible(), "warren", &mut script);
    let mut out = std::io::stdout().lock();
    out.write_all(&script)
        .and_then(|()| out.flush())
        .context("write the completion script to stdout")?;
    Ok(0)
}

/// The CLI without its hidden subcommands (`man-pages`, for the build): the static
/// generators would offer them otherwise.
fn visible() -> clap::Command {
    let full = super::Cli::command();
    clap::Command::new("warren")
        .version(env!("WARREN_VERSION_LONG"))
        .args(full.get_arguments().cloned())
        .subcommands(full.get_subcommands().filter(|s| !s.is_hide_set()).cloned())
}

//! Command-line interface: one file per command; this file parses and dispatches, and
//! is the one place that prints errors (one line, `warren: what: why`).

use crate::config::Config;
use clap::{Parser, Subcommand};

pub mod admin;
pub mod caller;
pub mod completion;
pub mod doctor;
pub mod images;
pub mod inspect;
pub mod manpage;
pub mod monitor;
pub mod oci;
pub mod progress;
pub mod prune;
pub mod ps;
pub mod pull;
pub mod rm;
pub mod rmi;
pub mod run;
pub mod run_hooks;
pub mod shared_mount;
pub mod store_args;
pub mod supervisor;
pub mod unshare;
pub mod verify;

#[derive(Parser, Debug)]
#[command(
    name = "warren",
    version = env!("WARREN_VERSION_LONG"),
    about = "Rootless OCI containers for HPC batch jobs: pull, squash, run. No daemon, no root.",
    after_help = "Configuration: /etc/warren/warren.toml, $XDG_CONFIG_HOME/warren/warren.toml, WARREN_* variables, then flags."
)]
pub struct Cli {
    #[command(flatten)]
    pub globals: Globals,
    #[command(subcommand)]
    pub command: Command,
}

/// The options every command takes.
#[derive(clap::Args, Debug)]
pub struct Globals {
    /// Print less: no progress, no notices.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Print more (repeat for more detail). No short flag: `-v` is `run`'s bind mount.
    #[arg(long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// `warren run …` as a command line that knows only `run`. Building the whole tree (15
/// commands, some 200 options) took ~0.3 ms, a tenth of a container joining a shared
/// mount; `run` is what jobs start by the thousand. Whatever this parse does not accept
/// (help, version, errors) is parsed again by [`Cli`], so messages and help are the same.
#[derive(Parser, Debug)]
#[command(name = "warren")]
struct RunCli {
    #[command(flatten)]
    globals: Globals,
    #[command(subcommand)]
    command: RunOnly,
}

#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum RunOnly {
    Run(run::Args),
}

/// The command line parsed: by [`RunCli`] first when the command is `run`.
fn parse(args: &[std::ffi::OsString], is_run: bool) -> Result<Cli, clap::Error> {
    if is_run {
        if let Ok(RunCli {
            globals,
            command: RunOnly::Run(a),
        }) = RunCli::try_parse_from(args)
        {
            return Ok(Cli {
                globals,
                command: Command::Run(a),
            });
        }
    }
    Cli::try_parse_from(args)
}

// `run` has many options; parsed once per process, so the size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Fetch an image and squash it into the store.
    Pull(pull::Args),
    /// List stored images.
    Images(images::Args),
    /// Print an image's config (env, entrypoint, cmd, workdir, user, labels) as JSON.
    Inspect(inspect::Args),
    /// Remove image tags (and the image when no tag is left).
    Rmi(rmi::Args),
    /// Delete store data nothing refers to.
    Prune(prune::Args),
    /// Check every stored image against its integrity record (full hash).
    Verify(verify::Args),
    /// Run a command in a new rootless container.
    Run(run::Args),
    /// Run a command in the user namespace (inspect or delete subuid-owned files).
    Unshare(unshare::Args),
    /// List running containers.
    Ps(ps::Args),
    /// Stop and remove named containers.
    Rm(rm::Args),
    /// OCI runtime commands (run, create, start, state, kill, delete) for Slurm's oci.conf.
    Oci(oci::Args),
    /// Cluster administration: subuid/subgid ranges.
    Admin(admin::Args),
    /// Check that this node can run rootless containers, and say how to fix it.
    Doctor(doctor::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completion(completion::Args),
    /// Write the man pages into a directory (used by the build).
    #[command(hide = true)]
    ManPages(manpage::Args),
}

/// What every command gets.
pub struct Ctx {
    pub config: Config,
    pub quiet: bool,
    pub verbose: u8,
}

/// Exit code of a usage or configuration error: 125 for `run` (podman's "the container
/// could not be started", never a command's own code), 2 for the other commands
/// (clap's and most Unix tools' usage code).
fn usage_exit_code(is_run: bool) -> i32 {
    if is_run {
        crate::runtime::spec::EXIT_NOT_STARTED
    } else {
        2
    }
}

/// The subcommand named in `args` (after the program name), before clap has accepted
/// them: the first word not starting with `-` (warren's global flags take no value).
fn invoked_subcommand(args: &[std::ffi::OsString]) -> Option<&std::ffi::OsStr> {
    args.iter()
        .skip(1)
        .map(|a| a.as_os_str())
        .find(|a| !a.as_encoded_bytes().starts_with(b"-"))
}

/// Print a clap error or help; returns the exit code. Help and version go out as clap
/// renders them; an error is one line, with where to read more.
fn clap_exit(e: clap::Error, is_run: bool) -> i32 {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            0
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            usage_exit_code(is_run)
        }
        _ => {
            // clap's rendering spans lines (possible values, tips, usage): keep what
            // says what was wrong, on one line.
            let text = e.render().to_string();
            let what: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more"))
                .collect();
            let what = what.join("; ");
            let what = what.strip_prefix("error: ").unwrap_or(&what);
            let help = if is_run {
                "warren run --help"
            } else {
                "warren --help"
            };
            eprintln!("warren: {what} (see '{help}')");
            usage_exit_code(is_run)
        }
    }
}

/// Parse, run, print errors as one line; returns the exit code.
pub fn main() -> i32 {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let is_run = invoked_subcommand(&args).is_some_and(|c| c == "run");
    let cli = match parse(&args, is_run) {
        Ok(c) => c,
        Err(e) => return clap_exit(e, is_run),
    };
    // Generated from the CLI definition alone: needs no configuration (a build host's
    // /etc/warren/warren.toml may be absent or broken).
    let generated = match &cli.command {
        Command::Completion(a) => Some(completion::run(a)),
        Command::ManPages(a) => Some(manpage::run(a)),
        _ => None,
    };
    match generated {
        Some(Ok(code)) => return code,
        Some(Err(e)) => {
            eprintln!("warren: {}", one_line(&e));
            return 1;
        }
        None => {}
    }
    if let Command::Oci(_) = cli.command {
        oci::environment_from_uid();
    }
    let config = match Config::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("warren: {e}");
            return usage_exit_code(matches!(cli.command, Command::Run(_)));
        }
    };
    if !matches!(
        cli.command,
        Command::Pull(_) | Command::Run(_) | Command::Unshare(_) | Command::Oci(_)
    ) {
        // Listing commands piped into `head` should end quietly like other Unix tools.
        // Commands that feed pipes of their own (pull → squash tool, OCI hooks' stdin) or
        // exec containers keep Rust's SIG_IGN and handle EPIPE as an error instead.
        // SAFETY: setting a signal disposition to SIG_DFL before any thread is started.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let ctx = Ctx {
        config,
        quiet: cli.globals.quiet,
        verbose: cli.globals.verbose,
    };
    let res = match cli.command {
        Command::Pull(a) => pull::run(&ctx, a),
        Command::Images(a) => images::run(&ctx, a),
        Command::Inspect(a) => inspect::run(&ctx, a),
        Command::Rmi(a) => rmi::run(&ctx, a),
        Command::Prune(a) => prune::run(&ctx, a),
        Command::Verify(a) => verify::run(&ctx, a),
        Command::Run(a) => run::run(&ctx, a.split_image()),
        Command::Unshare(a) => unshare::run(&ctx, a),
        Command::Ps(a) => ps::run(&ctx, a),
        Command::Rm(a) => rm::run(&ctx, a),
        Command::Oci(a) => oci::run(&ctx, a),
        Command::Admin(a) => admin::run(&ctx, a),
        Command::Doctor(a) => doctor::run(&ctx, a),
        Command::Completion(_) | Command::ManPages(_) => Ok(0), // done above
    };
    match res {
        Ok(code) => code,
        Err(e) => {
            eprintln!("warren: {}", one_line(&e));
            1
        }
    }
}

/// Pretty JSON and a newline on stdout, buffered (a 100,000-user report is tens of
/// megabytes), write errors returned: what every `--json` prints through.
pub fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

/// The error chain on one line: `outer: inner: cause`.
pub fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What the full tree makes of `words` (after `warren`), and what [`parse`] does.
    fn both(words: &[&str]) -> (String, String) {
        let args: Vec<std::ffi::OsString> = std::iter::once("warren")
            .chain(words.iter().copied())
            .map(Into::into)
            .collect();
        let is_run = invoked_subcommand(&args).is_some_and(|c| c == "run");
        let show = |r: Result<Cli, clap::Error>| match r {
            Ok(c) => format!("{c:?}"),
            Err(e) => format!("{:?}: {}", e.kind(), e.render()),
        };
        (show(Cli::try_parse_from(&args)), show(parse(&args, is_run)))
    }

    #[test]
    fn run_only_parse_is_the_full_parse() {
        for words in [
            &["run", "img"][..],
            &["run", "img", "true"],
            &[
                "-q",
                "run",
                "--verbose",
                "-e",
                "A=1",
                "img",
                "sh",
                "-c",
                "echo $A",
            ],
            &[
                "run", "-v", "/a:/b:ro", "--mount", "/c:/d", "--rm", "img", "--help",
            ],
            &[
                "run",
                "--timing",
                "--no-join",
                "--overlay",
                "fuse",
                "img",
                "ls",
                "-l",
            ],
            &["run", "--holder", "img"],
            &["run", "--read-only", "--writable-dir", "/x", "img"],
            &["run", "--pull", "never", "--job", "12.3", "img"],
            &["run", "--job", "x", "img"],
            &["run", "--overlay", "nope", "img"],
            &["run", "--help"],
            &["run", "-h"],
            &["--version", "run", "img"],
            &["run"],
            &["run", "--bogus", "img"],
            &["--verbose", "--verbose", "run", "-t", "-i", "img"],
        ] {
            let (full, lean) = both(words);
            assert_eq!(full, lean, "{words:?}");
        }
    }

    proptest! {
        /// Any mix of run's options, values and words parses (or fails) the same way.
        #[test]
        fn run_only_parse_matches_on_any_words(words in proptest::collection::vec(
            prop_oneof![
                Just("-q"), Just("--verbose"), Just("-v"), Just("/a:/b"), Just("--rm"),
                Just("-e"), Just("K=V"), Just("--name"), Just("n1"), Just("--holder"),
                Just("--read-only"), Just("--writable-dir"), Just("--no-join"),
                Just("--pull"), Just("never"), Just("--overlay"), Just("native"),
                Just("--job"), Just("7"), Just("img"), Just("true"), Just("-h"),
                Just("--"), Just("--mpi-inject"), Just("on"), Just("-w"), Just("/"),
            ],
            0..8,
        )) {
            let mut all = vec!["run"];
            all.extend(words);
            let (full, lean) = both(&all);
            prop_assert_eq!(full, lean);
        }
    }
}

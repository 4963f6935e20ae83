//! `warren run`: parse the options, find (or pull) the image, build the run spec for
//! this process's caller and hand it to the supervisor (`cli::supervisor`).

use super::Ctx;
use crate::runtime::holder::Scope;
use crate::runtime::idmap::Identity;
use crate::runtime::spec::{self, Mode, OverlayChoice, RunOptions, Writable};
use crate::runtime::{inject, mpi_inject, pmix, state, sys};
use crate::store::ImageEntry;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;

/// When to pull.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    Missing,
    Always,
    Never,
}

/// Overlay back end.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverlayArg {
    Auto,
    Native,
    Fuse,
}

/// `--mpi-inject`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MpiInjectArg {
    Off,
    On,
    Force,
}

#[derive(clap::Args, Debug)]
#[command(
    override_usage = "warren run [OPTIONS] IMAGE [COMMAND [ARG...]]",
    after_help = "Identity: by default you keep your own UID/GID inside (files you write to \
bind mounts are yours on the host); --remap-root makes you UID 0 inside. See docs/run.md."
)]
pub struct Args {
    /// Bind mount SRC:DST[:ro|rw] (repeatable).
    #[arg(
        short = 'v',
        long = "volume",
        visible_alias = "mount",
        value_name = "SRC:DST[:ro|rw]"
    )]
    pub volume: Vec<String>,
    /// A CDI device: vendor.com/class=name, or =all for every device of the kind (specs
    /// from cdi.spec_dirs); or a host device node /dev/X[:/dev/Y] (repeatable; see
    /// docs/devices.md).
    #[arg(long = "device", value_name = "VENDOR/CLASS=NAME|/dev/X[:/dev/Y]")]
    pub device: Vec<String>,
    /// An annotation of the container (repeatable, podman's): in its hooks' state JSON,
    /// and matched by hooks.d files' `when.annotations` (docs/hooks.md).
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    pub annotation: Vec<String>,
    /// Set K=V (or pass K from the host) after the image env and the host allowlist.
    #[arg(short = 'e', long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Read K=V lines from a file.
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_file: Vec<PathBuf>,
    /// Working directory inside (default: the image's).
    #[arg(short = 'w', long = "workdir")]
    pub workdir: Option<String>,
    /// You are UID/GID 0 inside (your subordinate range maps 1..N).
    #[arg(long, conflicts_with = "keep_uid")]
    pub remap_root: bool,
    /// You keep your own UID/GID inside (default).
    #[arg(long)]
    pub keep_uid: bool,
    /// Bind your home directory (default from run.mount_home).
    #[arg(long, conflicts_with = "no_mount_home")]
    pub mount_home: bool,
    /// Do not bind your home directory.
    #[arg(long)]
    pub no_mount_home: bool,
    /// Isolate an untrusted image: own PID namespace and /proc, private IPC, no home, only
    /// fds 0-2, environment from the image and -e only (default from run.contain; see
    /// docs/security.md).
    #[arg(long, conflicts_with_all = ["no_contain", "mount_home", "holder"])]
    pub contain: bool,
    /// Do not isolate (overrides run.contain = true).
    #[arg(long)]
    pub no_contain: bool,
    /// Writable root on a private tmpfs overlay, discarded at exit (default).
    #[arg(long, conflicts_with_all = ["read_only", "writable_dir"])]
    pub writable: bool,
    /// Read-only root: the image itself, no overlay.
    #[arg(long, conflicts_with = "writable_dir")]
    pub read_only: bool,
    /// Keep the writable layer in DIR (DIR/upper, DIR/work), reused across runs.
    #[arg(long, value_name = "DIR")]
    pub writable_dir: Option<PathBuf>,
    /// Overlay back end (default from run.overlay).
    #[arg(long, value_enum)]
    pub overlay: Option<OverlayArg>,
    /// Bring in the host MPI and interconnect the site configured ([mpi] in warren.toml):
    /// on refuses an image whose MPI is ABI-incompatible, force injects anyway (default
    /// from mpi.inject, off; docs/mpi.md).
    #[arg(long, value_enum, value_name = "off|on|force")]
    pub mpi_inject: Option<MpiInjectArg>,
    /// Name (for warren ps / rm).
    #[arg(long)]
    pub name: Option<String>,
    /// Accepted for Podman compatibility: containers never outlive their run.
    #[arg(long)]
    pub rm: bool,
    /// Pull policy.
    #[arg(long, value_enum, default_value_t = PullPolicy::Missing)]
    pub pull: PullPolicy,
    /// Replace the image's entrypoint ("" to clear it).
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// The command uses the terminal: requires stdin to be one; sets TERM if unset.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Accepted for Podman compatibility (stdin is always passed through).
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Make chown/setuid-family calls succeed without effect (single-ID mode).
    #[arg(long)]
    pub fake_chown: bool,
    /// Print a per-step start-up breakdown to stderr.
    #[arg(long, env = "WARREN_TIMING", value_parser = timing_value)]
    pub timing: bool,
    /// Start a namespace holder for IMAGE (needs --name) and return; later runs of the
    /// same image join it. Stop it with `warren rm NAME`.
    #[arg(long, requires = "name")]
    pub holder: bool,
    /// Mount the image privately: neither join a running holder of the same image nor
    /// start a shared image mount (default from run.shared_mount; docs/run.md).
    #[arg(long, visible_alias = "no-shared-mount")]
    pub no_join: bool,
    /// With --holder: the command whose prefetch list the holder records on its fresh
    /// mount, or reads ahead (docs/run.md, "The prefetch list"); its containers run it.
    #[arg(long, value_name = "COMMAND", requires = "holder")]
    pub prefetch_for: Option<String>,
    /// Belong to Slurm job JOB (step STEP): holders started with it serve, and containers
    /// with it join, only that job's (step's) holders; `warren rm --job JOB` stops them.
    #[arg(long, value_name = "JOB[.STEP]", value_parser = parse_job)]
    pub job: Option<Scope>,
    /// (testing) Run this squashfs file directly instead of a stored image.
    #[arg(long, hide = true, requires = "image_config")]
    pub squashfs: Option<PathBuf>,
    /// (testing) The OCI image config JSON for --squashfs.
    #[arg(long, hide = true, requires = "squashfs")]
    pub image_config: Option<PathBuf>,
    /// IMAGE (tag, digest or short name; pulled first if missing, see --pull), then the
    /// command and its arguments (default: the image's entrypoint and cmd). Options end
    /// at IMAGE: what follows is the container's, as with podman.
    #[arg(value_name = "IMAGE [COMMAND [ARG...]]", trailing_var_arg = true)]
    pub command: Vec<String>,
    // Filled by `split_image` from the first positional word (one positional list is
    // what makes clap stop parsing options at IMAGE). With the hidden --squashfs there is
    // no IMAGE and the run path moves it back to the command.
    #[arg(skip)]
    pub image: Option<String>,
}

impl Args {
    /// Move the first positional word (IMAGE) from `command` to `image`.
    pub fn split_image(mut self) -> Args {
        if self.image.is_none() && !self.command.is_empty() {
            self.image = Some(self.command.remove(0));
        }
        self
    }
}

/// `WARREN_TIMING`'s value (the flag itself stores `true`), through the one boolean parser.
fn timing_value(s: &str) -> Result<bool, String> {
    crate::config::parse_bool(s).ok_or_else(|| {
        format!(
            "WARREN_TIMING (or --timing) takes {}",
            crate::config::BOOL_VALUES
        )
    })
}

fn parse_job(s: &str) -> Result<Scope, String> {
    Scope::parse_job(s).map_err(|e| e.to_string())
}

fn find_image(ctx: &Ctx, args: &mut Args) -> Result<(String, ImageEntry)> {
    if let (Some(sq), Some(cf)) = (args.squashfs.clone(), args.image_config.clone()) {
        // With --squashfs there is no IMAGE: a positional word is the command.
        if let Some(first) = args.image.take() {
            args.command.insert(0, first);
        }
        let sq =
            std::fs::canonicalize(&sq).with_context(|| format!("--squashfs {}", sq.display()))?;
        // A stand-in digest naming this very file version (path, inode, size, mtime), so
        // that caches and holders keyed by digest never mix two contents.
        let md = std::fs::metadata(&sq).with_context(|| format!("--squashfs {}", sq.display()))?;
        let digest = crate::digest::Digest::of(
            format!(
                "file:{}:{}:{}:{}.{}",
                sq.display(),
                std::os::unix::fs::MetadataExt::ino(&md),
                md.len(),
                std::os::unix::fs::MetadataExt::mtime(&md),
                std::os::unix::fs::MetadataExt::mtime_nsec(&md)
            )
            .as_bytes(),
        );
        let name = sq.display().to_string();
        return Ok((
            name,
            ImageEntry {
                digest,
                squashfs: sq,
                config: cf,
            },
        ));
    }
    let Some(image) = args.image.clone() else {
        bail!("run: no IMAGE given");
    };
    let opts = crate::pull::PullOptions::default();
    let progress = super::progress::Terminal::new(ctx.quiet);
    let entry = match args.pull {
        PullPolicy::Always => crate::pull::pull(&ctx.config, &image, &opts, &progress)?,
        PullPolicy::Missing => match crate::store::Stores::open(&ctx.config)?.find(&image)? {
            Some(e) => e,
            None => crate::pull::pull(&ctx.config, &image, &opts, &progress)?,
        },
        PullPolicy::Never => crate::store::Stores::open(&ctx.config)?
            .find(&image)?
            .with_context(|| format!("image {image} is not in the store and --pull=never"))?,
    };
    Ok((image, entry))
}

/// `warren run`; any failure before the container's command runs is one line and exit
/// code 125 (Podman's "the container could not be started"), so it cannot be mistaken
/// for the command's own exit code.
pub fn run(ctx: &Ctx, args: Args) -> Result<i32> {
    let t_start = sys::monotonic_ns();
    match start(ctx, args, t_start) {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("warren: {}", super::one_line(&e));
            super::run_hooks::print_hook_stderr(&e);
            Ok(spec::EXIT_NOT_STARTED)
        }
    }
}

fn start(ctx: &Ctx, mut args: Args, t_start: u64) -> Result<i32> {
    let cfg = &ctx.config.run;
    if let Some(n) = &args.name {
        state::check_name(n)?;
    }
    if args.tty && !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        bail!("--tty: stdin is not a terminal");
    }
    let inject = match args.mpi_inject {
        Some(MpiInjectArg::Off) => mpi_inject::Mode::Off,
        Some(MpiInjectArg::On) => mpi_inject::Mode::On,
        Some(MpiInjectArg::Force) => mpi_inject::Mode::Force,
        None => mpi_inject::Mode::parse(&ctx.config.mpi.inject, "mpi.inject")?,
    };
    // Checked before any pull. A holder runs nothing: the containers that join it
    // inject for themselves.
    let injection = match args.holder {
        true => None,
        false => mpi_inject::plan(&ctx.config.mpi, inject)?,
    };
    let (image, entry) = find_image(ctx, &mut args)?;
    let contain = if args.contain {
        true
    } else {
        !args.no_contain && cfg.contain
    };
    // The user's own containers share one image mount per image, identity and ID map
    // (never contained ones, which share nothing; never a job's, whose holders the
    // batch system starts and stops).
    let share = cfg.shared_mount && !args.no_join && !args.holder && args.job.is_none() && !contain;
    let opts = RunOptions {
        volumes: args.volume.clone(),
        env: args.env.clone(),
        env_files: args.env_file.clone(),
        workdir: args.workdir.clone(),
        identity: if args.remap_root {
            Identity::RemapRoot
        } else {
            Identity::KeepId
        },
        mount_home: if args.mount_home {
            Some(true)
        } else if args.no_mount_home {
            Some(false)
        } else {
            None
        },
        writable: if args.read_only {
            Writable::ReadOnly
        } else if let Some(d) = &args.writable_dir {
            Writable::Dir(d.clone())
        } else {
            Writable::Tmpfs
        },
        overlay: args.overlay.map(|o| match o {
            OverlayArg::Auto => OverlayChoice::Auto,
            OverlayArg::Native => OverlayChoice::Native,
            OverlayArg::Fuse => OverlayChoice::Fuse,
        }),
        name: args.name.clone(),
        entrypoint: args.entrypoint.clone(),
        command: args.command.clone(),
        tty: args.tty,
        fake_chown: args.fake_chown,
        timing: args.timing,
        quiet: ctx.quiet,
        mode: if args.holder {
            Mode::Holder
        } else {
            Mode::Container
        },
        scope: args.job.clone().unwrap_or(Scope::User),
        // The shared path below joins by itself.
        join: !args.no_join && !share,
        contain: if args.contain {
            Some(true)
        } else if args.no_contain {
            Some(false)
        } else {
            None
        },
        prefetch_for: args.prefetch_for.clone(),
    };
    let caller = super::caller::current(cfg)?;
    let mut opts = opts;
    // Started by an MPI launcher (mpirun, srun --mpi=pmix): its PMIx directories at the
    // same path inside (docs/mpi.md); never for an isolated container.
    if !opts.contain.unwrap_or(cfg.contain) && opts.mode == Mode::Container {
        for d in pmix::dirs(&caller.env) {
            if std::path::Path::new(&d).is_dir() {
                opts.volumes.push(format!("{d}:{d}:rw"));
            }
        }
    }
    let (mut spec, mut notices) = spec::build(cfg, image, &entry, &opts, &caller)?;
    if let Some(i) = &injection {
        i.apply(&mut spec);
    }
    // CDI devices and the site's drop-ins and hooks (a holder runs no command: none).
    let annotations = args
        .annotation
        .iter()
        .map(|a| inject::parse_annotation(a))
        .collect::<Result<Vec<_>>>()?;
    let inj = if spec.mode == Mode::Container {
        let container = inject::Container {
            argv0: spec.argv.first().map(String::as_str).unwrap_or_default(),
            annotations: &annotations,
            has_bind_mounts: !spec.binds.is_empty() || spec.home.is_some(),
        };
        inject::gather(&ctx.config.cdi, &ctx.config.hooks, &args.device, &container)?
    } else if !args.device.is_empty() || !annotations.is_empty() {
        bail!(
            "--device, --annotation: a holder runs no command; give them to the runs that join it"
        );
    } else {
        inject::Injection::default()
    };
    inject::apply(&mut spec, &inj, &opts)?;
    notices.extend(inj.notices.iter().cloned());
    if !ctx.quiet {
        for n in &notices {
            eprintln!("warren: {n}");
        }
    }
    // Site hooks run around a container of its own (the start gate): no shared mount.
    if share && !inj.has_hooks() {
        let t = sys::monotonic_ns();
        if let Some((u, started)) = super::shared_mount::acquire(cfg, &spec)? {
            if spec.timing {
                eprintln!(
                    "warren timing: shared image mount {} {:.2} ms (in prepare)",
                    if started {
                        "started and joined"
                    } else {
                        "joined"
                    },
                    (sys::monotonic_ns() - t) as f64 / 1e6
                );
            }
            let mut spec = spec;
            spec.join = Some(u.record.clone());
            spec.fresh_holder = started;
            let res = super::supervisor::run_joined(cfg, &spec, t_start, &u);
            // The container's exit code stands; ending the mount is the holder's business.
            if let Err(e) = u.finish(&spec.rundir) {
                eprintln!("warren: shared image mount: {}", super::one_line(&e));
            }
            return res;
        }
    }
    let code = if inj.has_hooks() {
        super::run_hooks::run(cfg, &spec, &inj.hooks, &annotations, t_start)?
    } else {
        super::supervisor::run(cfg, &spec, t_start)?
    };
    if spec.mode == Mode::Holder && code == 0 && !ctx.quiet {
        println!("{}", args.name.unwrap_or_default());
    }
    Ok(code)
}

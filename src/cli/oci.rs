//! `warren oci …`: the OCI runtime command line (runc's verbs) that Slurm's `oci.conf`
//! and runc users expect: `run`, `create`, `start`, `state`, `kill`, `delete`. The caller
//! is this process's real user, and everything else comes from the UID too (runtime
//! directory, home, config): slurmstepd gives the runtime no HOME or XDG_RUNTIME_DIR.
//! The container starts through the same supervisor as `warren run`; `create` forks a
//! monitor (a session leader) that waits for the container, which waits at a FIFO gate
//! until `start`. See docs/oci.md.

use super::Ctx;
use crate::runtime::bundle::{self, Bundle, RootSource};
use crate::runtime::caller::Caller;
use crate::runtime::oci_spec::{self, Root};
use crate::runtime::oci_state::{self, Dir, Saved, Status};
use crate::runtime::spec::EXIT_NOT_STARTED;
use crate::runtime::{hooks, process, state, sys};
use anyhow::{bail, Context, Result};
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: Verb,
}

#[derive(clap::Subcommand, Debug)]
pub enum Verb {
    /// Create and start a container, wait for it, delete it; exits with its status.
    Run(Create),
    /// Create a container that waits for `start`.
    Create(Create),
    /// Start a created container.
    Start(Id),
    /// Print the OCI state JSON (ociVersion, id, status, pid, bundle).
    State(Id),
    /// Send a signal (name or number; default TERM) to the container.
    Kill(Kill),
    /// Delete a stopped container (--force: also a running one).
    Delete(Delete),
}

#[derive(clap::Args, Debug)]
pub struct Create {
    /// The bundle directory (config.json and usually rootfs/), or an image reference
    /// (Slurm 23.02+ `IgnoreFileConfigJson=true`: `%b` is what --container named).
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// Write the container's PID to this file.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// With an image reference: K=V entries to add (Slurm's `%e`, NUL- or
    /// newline-separated).
    #[arg(long, value_name = "FILE")]
    pub env_file: Option<PathBuf>,
    pub id: String,
    /// With an image reference: the command (default: the image's).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct Id {
    pub id: String,
}

#[derive(clap::Args, Debug)]
pub struct Kill {
    /// Signal every process of the container (its process group), not only the first.
    #[arg(short, long)]
    pub all: bool,
    pub id: String,
    /// SIGTERM, TERM or 15.
    #[arg(default_value = "TERM")]
    pub signal: String,
}

#[derive(clap::Args, Debug)]
pub struct Delete {
    /// Kill a running container first.
    #[arg(short, long)]
    pub force: bool,
    pub id: String,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<i32> {
    let who = Who::current(ctx)?;
    match args.command {
        Verb::Run(c) => match run_container(ctx, &who, &c) {
            Ok(code) => Ok(code),
            Err(e) => {
                eprintln!("warren: {}", super::one_line(&e));
                super::run_hooks::print_hook_stderr(&e);
                Ok(EXIT_NOT_STARTED)
            }
        },
        Verb::Create(c) => create(ctx, &who, &c),
        Verb::Start(i) => start(&who, &i.id),
        Verb::State(i) => {
            let st = Dir::of(&who.rundir, &i.id)?.state()?;
            println!("{}", serde_json::to_string_pretty(&st)?);
            Ok(0)
        }
        Verb::Kill(k) => kill(&who, &k),
        Verb::Delete(d) => delete(&who, &d),
    }
}

/// Make HOME the passwd home of the real UID and drop the XDG base directories, before
/// the configuration is loaded: Slurm runs the runtime with slurmstepd's environment
/// (HOME=/root or none), and every verb must see the same config and state whoever
/// calls it.
pub fn environment_from_uid() {
    let uid = nix::unistd::getuid().as_raw();
    if let Some(home) = crate::runtime::caller::passwd_facts(uid).home {
        std::env::set_var("HOME", home);
    } else {
        std::env::remove_var("HOME");
    }
    for v in [
        "XDG_CONFIG_HOME",
        "XDG_DATA_HOME",
        "XDG_CACHE_HOME",
        "XDG_RUNTIME_DIR",
    ] {
        std::env::remove_var(v);
    }
}

/// The caller, found from the real UID alone.
struct Who {
    caller: Caller,
    rundir: PathBuf,
}

impl Who {
    fn current(ctx: &Ctx) -> Result<Who> {
        let uid = nix::unistd::getuid().as_raw();
        let gid = nix::unistd::getegid().as_raw();
        let pw = crate::runtime::caller::passwd_facts(uid);
        let home = pw.home.clone().unwrap_or_else(|| PathBuf::from("/"));
        // Never the environment's XDG_RUNTIME_DIR: every verb, from a shell or from
        // slurmstepd, must find the same state.
        let run_user = PathBuf::from(format!("/run/user/{uid}"));
        let rundir = state::choose_runtime_dir(&ctx.config.run, uid, &home, Some(&run_user));
        state::ensure_runtime_dir(&rundir, uid)?;
        let caller = Caller::from_facts(uid, gid, pw, None, Vec::new(), rundir.clone());
        Ok(Who { caller, rundir })
    }
}

/// config.json of a bundle: its bytes (at most `bundle::MAX_CONFIG`) and the plan.
fn read_bundle(dir: &Path) -> Result<(Vec<u8>, Bundle)> {
    let p = dir.join("config.json");
    let f = std::fs::File::open(&p).with_context(|| format!("bundle {}", dir.display()))?;
    let mut bytes = Vec::new();
    f.take(bundle::MAX_CONFIG + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("read {}", p.display()))?;
    let b = bundle::parse(&bytes)?;
    Ok((bytes, b))
}

fn resolve_root(ctx: &Ctx, dir: &Path, root: &RootSource) -> Result<Root> {
    match root {
        RootSource::Dir(p) => oci_spec::dir_root(dir, p),
        RootSource::Image(r) => {
            let entry = match crate::store::Stores::open(&ctx.config)?.find(r)? {
                Some(e) => e,
                None => crate::pull::pull(
                    &ctx.config,
                    r,
                    &crate::pull::PullOptions::default(),
                    &crate::pull::Silent,
                )?,
            };
            Ok(Root {
                path: entry.squashfs,
                name: r.clone(),
                digest: entry.digest.to_string(),
            })
        }
    }
}

/// Everything a container start needs, decided before the state directory exists.
struct Prepared {
    bundle_dir: PathBuf,
    config: Vec<u8>,
    plan: Bundle,
    spec: crate::runtime::spec::RunSpec,
}

fn prepare(ctx: &Ctx, who: &Who, c: &Create) -> Result<Prepared> {
    oci_state::check_id(&c.id)?;
    if !c.bundle.is_dir() && !c.bundle.exists() {
        return prepare_image(ctx, who, c).with_context(|| {
            format!(
                "--bundle {}: no such directory; as an image reference",
                c.bundle.display()
            )
        });
    }
    if !c.args.is_empty() || c.env_file.is_some() {
        bail!("a command or --env-file goes only with an image reference as --bundle");
    }
    let bundle_dir = std::fs::canonicalize(&c.bundle)
        .with_context(|| format!("bundle {}", c.bundle.display()))?;
    let (config, plan) = read_bundle(&bundle_dir)?;
    let root = resolve_root(ctx, &bundle_dir, &plan.root)?;
    let (mut spec, notices) = oci_spec::build(&ctx.config.run, &plan, &root, &c.id, &who.caller)?;
    if !plan.hooks.create_container.is_empty() && root.path.is_dir() {
        // createContainer hooks find the root through config.json's root.path, as with
        // runc: there they see the container's root, mounts included.
        spec.hook_bundle = crate::runtime::spec::HookBundle::Root(root.path.clone());
    }
    if !ctx.quiet {
        for n in notices {
            eprintln!("warren: {n}");
        }
    }
    Ok(Prepared {
        bundle_dir,
        config,
        plan,
        spec,
    })
}

/// An image reference as the bundle: the plan from the image's config.
fn prepare_image(ctx: &Ctx, who: &Who, c: &Create) -> Result<Prepared> {
    let image = c.bundle.to_string_lossy().into_owned();
    let root = resolve_root(ctx, Path::new("/"), &RootSource::Image(image.clone()))?;
    let entry_config = crate::store::Stores::open(&ctx.config)?
        .find(&image)?
        .with_context(|| format!("image {image}"))?
        .config;
    let ic = crate::runtime::image_config::ImageConfig::read(&entry_config)?;
    let extra = match &c.env_file {
        Some(f) => bundle::env_file_entries(
            &std::fs::read(f).with_context(|| format!("--env-file {}", f.display()))?,
        ),
        None => vec![],
    };
    let plan = bundle::for_image(
        &image,
        ic.argv(None, &c.args),
        ic.env.as_deref().unwrap_or_default(),
        &extra,
        ic.working_dir.as_deref(),
    )?;
    let (spec, _) = oci_spec::build(&ctx.config.run, &plan, &root, &c.id, &who.caller)?;
    Ok(Prepared {
        bundle_dir: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
        config: Vec::new(),
        plan,
        spec,
    })
}

/// The state as hooks see it.
fn hook_state(dir: &Dir, status: Status, pid: i32, p: &Prepared) -> Vec<u8> {
    let st = oci_state::State {
        oci_version: oci_state::OCI_VERSION.into(),
        id: dir.id(),
        status,
        pid,
        bundle: p.bundle_dir.clone(),
        annotations: p.plan.annotations.clone(),
    };
    serde_json::to_vec(&st).unwrap_or_default()
}

/// Set the config's resource limits on this process (the container inherits them).
fn set_rlimits(b: &Bundle) -> Result<()> {
    use nix::sys::resource::{setrlimit, Resource as R};
    for l in &b.rlimits {
        let r = match l.resource.as_str() {
            "RLIMIT_AS" => R::RLIMIT_AS,
            "RLIMIT_CORE" => R::RLIMIT_CORE,
            "RLIMIT_CPU" => R::RLIMIT_CPU,
            "RLIMIT_DATA" => R::RLIMIT_DATA,
            "RLIMIT_FSIZE" => R::RLIMIT_FSIZE,
            "RLIMIT_LOCKS" => R::RLIMIT_LOCKS,
            "RLIMIT_MEMLOCK" => R::RLIMIT_MEMLOCK,
            "RLIMIT_MSGQUEUE" => R::RLIMIT_MSGQUEUE,
            "RLIMIT_NICE" => R::RLIMIT_NICE,
            "RLIMIT_NOFILE" => R::RLIMIT_NOFILE,
            "RLIMIT_NPROC" => R::RLIMIT_NPROC,
            "RLIMIT_RSS" => R::RLIMIT_RSS,
            "RLIMIT_RTPRIO" => R::RLIMIT_RTPRIO,
            "RLIMIT_RTTIME" => R::RLIMIT_RTTIME,
            "RLIMIT_SIGPENDING" => R::RLIMIT_SIGPENDING,
            _ => R::RLIMIT_STACK,
        };
        setrlimit(r, l.soft, l.hard).with_context(|| {
            format!(
                "process.rlimits {} {}/{} (an unprivileged user cannot raise a hard limit)",
                l.resource, l.soft, l.hard
            )
        })?;
    }
    Ok(())
}

/// The FIFO the created container waits at, opened read-write (never blocks; a read
/// waits for `start`'s byte).
fn make_gate(dir: &Dir) -> Result<OwnedFd> {
    let f = dir.fifo();
    nix::unistd::mkfifo(&f, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .with_context(|| format!("mkfifo {}", f.display()))?;
    nix::fcntl::open(
        &f,
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .with_context(|| format!("open {}", f.display()))
}

/// Open the gate of a created container: one byte into its FIFO.
fn open_gate(dir: &Dir, msg: &[u8]) -> Result<()> {
    let fd = nix::fcntl::open(
        &dir.fifo(),
        nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .with_context(|| format!("container {} is not waiting to start", dir.id()))?;
    sys::write_all(fd.as_raw_fd(), msg)?;
    dir.mark_started()
}

/// Hooks whose failure is only a warning (poststart, poststop).
fn warn_hooks(phase: &'static str, hs: &[bundle::Hook], state: &[u8]) {
    if let Err(e) = hooks::run_all(phase, hs, state, None) {
        eprintln!("warren: {e}");
        if !e.stderr.is_empty() {
            eprintln!("{}", e.stderr);
        }
    }
}

/// What happens once the container waits at its gate: the state is saved, the create
/// hooks run, the PID file is written; `run` then opens the gate itself.
fn on_created(dir: &Dir, p: &Prepared, pid_file: Option<&Path>, pid: i32) -> Result<()> {
    let me = std::process::id() as i32;
    dir.save(&Saved {
        id: dir.id(),
        bundle: p.bundle_dir.clone(),
        pid,
        pid_start: oci_state::start_time(pid).unwrap_or(0),
        monitor: me,
        monitor_start: oci_state::start_time(me).unwrap_or(0),
        annotations: p.plan.annotations.clone(),
    })?;
    crate::util::atomic_write(&dir.path.join("config.json"), &p.config, 0o600)?;
    let st = hook_state(dir, Status::Created, pid, p);
    let h = &p.plan.hooks;
    hooks::run_all("prestart", &h.prestart, &st, None)?;
    hooks::run_all("createRuntime", &h.create_runtime, &st, None)?;
    if !h.create_container.is_empty() {
        let pidfd = sys::pidfd_open(pid).context("the container's process")?;
        hooks::run_all("createContainer", &h.create_container, &st, Some(&pidfd))?;
    }
    if let Some(f) = pid_file {
        crate::util::atomic_write(f, format!("{pid}").as_bytes(), 0o644)
            .with_context(|| format!("--pid-file {}", f.display()))?;
    }
    Ok(())
}

/// The gate message (any byte opens the gate).
const GO: &[u8] = b"g";

/// In the container's process once the gate opens: the startContainer hooks (their
/// paths resolve inside the container).
fn at_start<'a>(p: &'a Prepared, dir: &Dir) -> impl Fn(&[u8]) -> Result<(), String> + 'a {
    let st = hook_state(dir, Status::Created, std::process::id() as i32, p);
    move |msg: &[u8]| {
        let _ = msg;
        let r = hooks::run_all("startContainer", &p.plan.hooks.start_container, &st, None)
            .map_err(|e| e.to_string());
        // The container gets the default disposition back.
        // SAFETY: setting a signal disposition in this single-threaded process.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
        r?;
        // Still root in the user namespace here: the command inherits the groups.
        if p.plan.additional_gids.is_empty() {
            Ok(())
        } else {
            process::set_groups(&p.plan.additional_gids)
        }
    }
}

fn run_container(ctx: &Ctx, who: &Who, c: &Create) -> Result<i32> {
    let t_start = sys::monotonic_ns();
    let p = prepare(ctx, who, c)?;
    let dir = Dir::of(&who.rundir, &c.id)?;
    dir.create()?;
    let res = (|| -> Result<i32> {
        set_rlimits(&p.plan)?;
        let gate = make_gate(&dir)?;
        let before_exec = at_start(&p, &dir);
        let mut created = |pid: i32| -> Result<()> {
            on_created(&dir, &p, c.pid_file.as_deref(), pid)?;
            open_gate(&dir, GO)?;
            warn_hooks(
                "poststart",
                &p.plan.hooks.poststart,
                &hook_state(&dir, Status::Running, pid, &p),
            );
            Ok(())
        };
        super::supervisor::run_with(
            &ctx.config.run,
            &p.spec,
            t_start,
            Some(super::supervisor::Oci {
                unshare: oci_spec::unshare_flags(&p.plan),
                hostname: p.plan.hostname.clone(),
                gate,
                before_gate: &|| {},
                before_exec: &before_exec,
                created: &mut created,
            }),
        )
    })();
    if dir.exists() {
        warn_hooks(
            "poststop",
            &p.plan.hooks.poststop,
            &hook_state(&dir, Status::Stopped, 0, &p),
        );
    }
    dir.remove()?;
    res
}

fn create(ctx: &Ctx, who: &Who, c: &Create) -> Result<i32> {
    let t_start = sys::monotonic_ns();
    let p = prepare(ctx, who, c)?;
    let dir = Dir::of(&who.rundir, &c.id)?;
    dir.create()?;
    let res = fork_monitor(ctx, &dir, &p, c, t_start);
    if !matches!(res, Ok(0)) {
        let _ = dir.remove();
    }
    res
}

/// Fork the monitor; returns once the container waits at its gate (0), or failed.
fn fork_monitor(ctx: &Ctx, dir: &Dir, p: &Prepared, c: &Create, t_start: u64) -> Result<i32> {
    let gate = make_gate(dir)?;
    let (ready_r, ready_w) = sys::pipe()?;
    // SAFETY: warren is single-threaded here; the child never returns into our frames.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        bail!("fork: {}", std::io::Error::last_os_error());
    }
    if pid == 0 {
        drop(ready_r);
        // The monitor outlives `create`: a session of its own, away from its terminal.
        let _ = nix::unistd::setsid();
        let code = monitor(ctx, dir, p, c, gate, ready_w, t_start);
        // SAFETY: leave the forked child without unwinding into warren's frames.
        unsafe { libc::_exit(code) };
    }
    drop((ready_w, gate));
    if let Ok(Some(b'k')) = sys::read_byte(ready_r.as_raw_fd()) {
        return Ok(0);
    }
    // The monitor said why on stderr; wait for it to finish its clean-up.
    let mut status = 0;
    // SAFETY: pid is our child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    Ok(EXIT_NOT_STARTED)
}

/// The monitor of a created container: starts it through the supervisor, reports
/// "created" on `ready`, waits for it and records its exit code.
fn monitor(
    ctx: &Ctx,
    dir: &Dir,
    p: &Prepared,
    c: &Create,
    gate: OwnedFd,
    ready: OwnedFd,
    t_start: u64,
) -> i32 {
    let mut ready = Some(ready);
    let before_exec = at_start(p, dir);
    let mut created = |pid: i32| -> Result<()> {
        on_created(dir, p, c.pid_file.as_deref(), pid)?;
        if let Some(r) = ready.take() {
            sys::write_all(r.as_raw_fd(), b"k")?;
        }
        // The container has the standard streams now; the monitor lets go of them, so
        // whoever reads `create`'s output sees its end when `create` exits.
        detach_stdio();
        Ok(())
    };
    let res = set_rlimits(&p.plan).and_then(|()| {
        super::supervisor::run_with(
            &ctx.config.run,
            &p.spec,
            t_start,
            Some(super::supervisor::Oci {
                unshare: oci_spec::unshare_flags(&p.plan),
                hostname: p.plan.hostname.clone(),
                gate,
                before_gate: &detach_stdio,
                before_exec: &before_exec,
                created: &mut created,
            }),
        )
    });
    let code = match res {
        Ok(code) => code,
        Err(e) => {
            eprintln!("warren: {}", super::one_line(&e));
            super::run_hooks::print_hook_stderr(&e);
            EXIT_NOT_STARTED
        }
    };
    dir.record_exit(code);
    code
}

/// Point this process's standard streams that are pipes or sockets at /dev/null: a
/// caller reading `create`'s output (Slurm's RunTimeCreate) waits for their end. Files
/// and terminals stay (as with runc, the container writes to `create`'s).
fn detach_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..3 {
            // SAFETY: the standard descriptors stay open for this borrow.
            let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            let kind = nix::sys::stat::fstat(borrowed).map(|st| st.st_mode & libc::S_IFMT);
            if matches!(kind, Ok(libc::S_IFIFO) | Ok(libc::S_IFSOCK)) {
                // SAFETY: dup2 of a descriptor we own onto a standard one.
                unsafe { libc::dup2(null.as_raw_fd(), fd) };
            }
        }
    }
}

/// The saved config of a created container (for its hooks).
fn saved_plan(dir: &Dir) -> Option<Bundle> {
    let bytes = std::fs::read(dir.path.join("config.json")).ok()?;
    bundle::parse(&bytes).ok()
}

fn start(who: &Who, id: &str) -> Result<i32> {
    let dir = Dir::of(&who.rundir, id)?;
    let st = dir.state()?;
    if st.status != Status::Created {
        bail!("container {id} is {:?}, not created", st.status);
    }
    open_gate(&dir, GO)?;
    if let Some(b) = saved_plan(&dir) {
        let mut st = st;
        st.status = Status::Running;
        warn_hooks(
            "poststart",
            &b.hooks.poststart,
            &serde_json::to_vec(&st).unwrap_or_default(),
        );
    }
    Ok(0)
}

/// A signal by name (`TERM`, `SIGTERM`, any case) or number.
pub fn parse_signal(s: &str) -> Result<nix::sys::signal::Signal> {
    use nix::sys::signal::Signal;
    use std::str::FromStr;
    let bad = || anyhow::anyhow!("signal {s:?}: give a name (TERM, SIGKILL) or a number");
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| bad());
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    Signal::from_str(&name).map_err(|_| bad())
}

fn kill(who: &Who, k: &Kill) -> Result<i32> {
    let sig = parse_signal(&k.signal)?;
    let dir = Dir::of(&who.rundir, &k.id)?;
    let st = dir.state()?;
    if !matches!(st.status, Status::Created | Status::Running) {
        bail!("container {} is {:?}: nothing to signal", k.id, st.status);
    }
    let target = nix::unistd::Pid::from_raw(if k.all { -st.pid } else { st.pid });
    nix::sys::signal::kill(target, sig).with_context(|| format!("kill {}", k.id))?;
    Ok(0)
}

fn delete(who: &Who, d: &Delete) -> Result<i32> {
    let dir = Dir::of(&who.rundir, &d.id)?;
    let st = dir.state()?;
    match st.status {
        Status::Stopped => {}
        Status::Creating if d.force => return dir.remove().map(|()| 0),
        s if !d.force => bail!("container {} is {s:?}: stop it first, or use --force", d.id),
        _ => {
            use nix::sys::signal::{kill, Signal};
            use nix::unistd::Pid;
            let _ = kill(Pid::from_raw(-st.pid), Signal::SIGKILL);
            let _ = kill(Pid::from_raw(st.pid), Signal::SIGKILL);
        }
    }
    // Let the process that waited for the container reap it and its helpers (and, for
    // `run`, clean up itself) before the state goes.
    if let Some(s) = dir.saved()? {
        if s.monitor > 0 {
            wait_gone(s.monitor, s.monitor_start);
        }
    }
    if let Some(s) = dir.saved()? {
        oci_state::kill_leftovers(&s);
    }
    if !dir.exists() {
        return Ok(0);
    }
    if let Some(b) = saved_plan(&dir) {
        warn_hooks(
            "poststop",
            &b.hooks.poststop,
            &serde_json::to_vec(&dir.state()?).unwrap_or_default(),
        );
    }
    dir.remove()?;
    Ok(0)
}

/// Wait (up to 10 s) until the process `pid` that started at `start` is gone.
fn wait_gone(pid: i32, start: u64) {
    for _ in 0..2000 {
        if oci_state::start_time(pid) != Some(start) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals() {
        use nix::sys::signal::Signal;
        for (s, want) in [
            ("TERM", Signal::SIGTERM),
            ("sigkill", Signal::SIGKILL),
            ("9", Signal::SIGKILL),
            ("SIGUSR1", Signal::SIGUSR1),
        ] {
            assert_eq!(parse_signal(s).unwrap(), want);
        }
        for bad in ["", "FOO", "0", "999", "-1"] {
            assert!(parse_signal(bad).is_err(), "{bad}");
        }
    }
}

//! The parent side of a container started by the CLI (an OCI-runtime front end will
//! reuse it): fork, the ID maps written with newuidmap/newgidmap for the child, child
//! subreaper, signal mask and forwarding, the terminal's foreground group, reaping every
//! descendant, the exit code and the timing line. All of it changes this process's
//! global state, which is why it lives in a front end and never in the library (inside
//! slurmstepd those processes would be the other tasks).
//!
//! Processes: warren (P, a child subreaper, non-dumpable) forks the set-up process C,
//! which prepares the container with `runtime::setup`, then forks the command and stays
//! as its monitor (`cli::monitor`: kills the whole tree when the command exits or P
//! dies). FUSE daemons are children of C with PR_SET_PDEATHSIG=SIGKILL; C has
//! PR_SET_PDEATHSIG on P. C reports to P with typed `runtime::messages` on a pipe.

use crate::config::RunConfig;
use crate::runtime::messages::{self, Message};
use crate::runtime::overlay::{self, Choice};
use crate::runtime::setup::{self, Log, SetupError};
use crate::runtime::spec::{self, Mode, RunSpec};
use crate::runtime::{holder, probe, process, state, sys, userns};
use anyhow::{bail, Context, Result};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// Signals warren forwards to the container's first process.
pub const FORWARDED: [libc::c_int; 6] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGCONT,
];

/// Start the container (or holder) and, for a container, wait for it; returns the exit
/// code. Notices and the timing line go to stderr unless `spec.quiet`.
pub fn run(cfg: &RunConfig, spec: &RunSpec, t_start: u64) -> Result<i32> {
    run_with(cfg, spec, t_start, None)
}

/// What an OCI runtime front end (`cli::oci`) adds to a container start.
pub struct Oci<'a> {
    /// Namespaces to create after the user namespace (`CLONE_NEWNET` | `NEWIPC` | …).
    pub unshare: libc::c_int,
    pub hostname: Option<String>,
    /// The container's process blocks reading from this (an O_RDWR FIFO) after its
    /// set-up, before exec: `create` leaves it there, `start` writes a short message.
    pub gate: OwnedFd,
    /// Run in the container's process just before it waits at the gate.
    pub before_gate: &'a dyn Fn(),
    /// Run in the container's process with the gate's message, before exec.
    pub before_exec: &'a dyn Fn(&[u8]) -> Result<(), String>,
    /// Called in warren once the container waits at the gate, with its PID (the leader of
    /// its own process group). An error kills the container.
    pub created: &'a mut dyn FnMut(i32) -> Result<()>,
}

/// [`run`], with the OCI runtime's additions.
pub fn run_with(cfg: &RunConfig, spec: &RunSpec, t_start: u64, oci: Option<Oci>) -> Result<i32> {
    let join_fd = match &spec.join {
        Some(h) => Some(
            sys::pidfd_open(h.pid).with_context(|| format!("holder {} (pid {})", h.id, h.pid))?,
        ),
        None => None,
    };
    run_container(cfg, spec, t_start, oci, join_fd)
}

/// Run a container that joins the holder held by `u` (a shared image mount, or a holder
/// started by hand): its pidfd is the one checked under the use lock, and the lock's fd
/// stays open in warren and the container's set-up process and monitor until the
/// container has ended.
pub fn run_joined(cfg: &RunConfig, spec: &RunSpec, t_start: u64, u: &holder::Use) -> Result<i32> {
    let fd = u
        .pidfd
        .try_clone()
        .with_context(|| format!("holder {}", u.record.id))?;
    run_container(cfg, spec, t_start, None, Some(fd))
}

fn run_container(
    cfg: &RunConfig,
    spec: &RunSpec,
    t_start: u64,
    oci: Option<Oci>,
    join_fd: Option<OwnedFd>,
) -> Result<i32> {
    let choice = overlay::choose(spec);
    let record = match spec.mode {
        Mode::Container => Some(state::register(
            &spec.rundir,
            &spec::container_record(spec, std::process::id() as i32),
        )?),
        Mode::Holder => None,
    };
    let record_fd = record.as_ref().map(|r| r.file.as_raw_fd());
    let res = run_registered(
        cfg,
        spec,
        choice,
        join_fd,
        Start {
            close_in_child: record_fd,
            idle: None,
            report_errors: true,
        },
        t_start,
        oci,
    );
    if let Some(r) = record {
        r.remove();
    }
    res
}

/// Start a shared image mount's holder for `spec` (its mode must be `Holder`) that ends
/// `idle` seconds after its last container; returns once it is ready. Errors are
/// returned, not printed (the caller falls back to a private mount, whose own errors
/// say what is wrong). `close_in_child`: an fd of warren the holder must not keep (the
/// start lock). The holder stays a child of this warren, which never reaps it.
pub fn start_holder(
    cfg: &RunConfig,
    spec: &RunSpec,
    idle: u64,
    close_in_child: RawFd,
) -> Result<()> {
    let choice = overlay::choose(spec);
    let code = run_registered(
        cfg,
        spec,
        choice,
        None,
        Start {
            close_in_child: Some(close_in_child),
            idle: Some(idle),
            report_errors: false,
        },
        0,
        None,
    )?;
    if code != 0 {
        bail!("holder exited with {code}");
    }
    Ok(())
}

/// PID of a holder this warren started (a shared image mount): its child, which must
/// outlive it, so [`reap_descendants`] spares it. Front-end state, one per process.
static SPARED: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// How the set-up process is started.
struct Start {
    /// An fd of warren's the child closes at once (a record or lock that must not
    /// outlive warren).
    close_in_child: Option<RawFd>,
    /// A holder: ends after this many idle seconds (a shared image mount).
    idle: Option<u64>,
    /// Print set-up errors (else return them).
    report_errors: bool,
}

/// The pipes between warren and the set-up process.
struct Pipes {
    /// Child → parent: "the user namespace exists, write its maps".
    sync: (OwnedFd, OwnedFd),
    /// Parent → child: "maps written".
    go: (OwnedFd, OwnedFd),
    /// Child → parent: messages; EOF at exec (CLOEXEC) or exit.
    report: (OwnedFd, OwnedFd),
}

fn run_registered(
    cfg: &RunConfig,
    spec: &RunSpec,
    choice: Choice,
    join_fd: Option<OwnedFd>,
    start: Start,
    t_start: u64,
    mut oci: Option<Oci>,
) -> Result<i32> {
    let pipes = Pipes {
        sync: sys::pipe()?,
        go: sys::pipe()?,
        report: sys::pipe()?,
    };
    let use_helpers = !spec.map.single && spec.join.is_none();
    let tty_fg = spec.mode == Mode::Container && is_foreground_tty();
    // SAFETY: prctl with integer arguments (orphaned descendants come back to us).
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let old_mask = block_signals();
    let me = std::process::id() as i32;
    let t_fork = sys::monotonic_ns();
    // SAFETY: warren is single-threaded at this point; the child runs `child` and never
    // returns into the caller's stack frames.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        restore_signals(&old_mask);
        bail!("fork: {}", std::io::Error::last_os_error());
    }
    if pid == 0 {
        if let Some(fd) = start.close_in_child {
            // The record's lock is warren's: once warren is gone the record is stale,
            // even while the monitor is still killing the container. (A holder must
            // not keep the start lock either.)
            // SAFETY: closing our copy of warren's fd; this process never returns
            // to the frame that owns it (it exits with _exit).
            unsafe { libc::close(fd) };
        }
        let Pipes { sync, go, report } = pipes;
        drop((sync.0, go.1, report.0));
        restore_signals(&old_mask);
        let child = Child {
            spec,
            choice,
            join_fd: join_fd.as_ref(),
            parent: me,
            tty_fg,
            sync_w: &sync.1,
            go_r: &go.0,
            rep: Some(report.1),
            idle: start.idle,
            oci: oci.as_ref().map(|o| OciChild {
                unshare: o.unshare,
                hostname: o.hostname.as_deref(),
                gate: &o.gate,
                before_gate: o.before_gate,
                before_exec: o.before_exec,
            }),
        };
        let code = child.run().code;
        // SAFETY: leave the forked child without unwinding into warren's frames.
        unsafe { libc::_exit(code) };
    }
    let Pipes { sync, go, report } = pipes;
    drop((sync.1, go.0, report.1, join_fd));
    // Not a door: the user's other processes cannot open our /proc/PID/root, /fd, /mem
    // (after the fork: the set-up process must stay dumpable until newuidmap wrote its maps).
    super::monitor::make_non_dumpable();
    if tty_fg {
        // SAFETY: put the child in its own foreground process group so terminal signals
        // reach only the container; SIGTTOU is ignored while warren does so.
        unsafe {
            libc::setpgid(pid, pid);
            libc::signal(libc::SIGTTOU, libc::SIG_IGN);
            libc::tcsetpgrp(0, pid);
        }
    }
    let result = parent(
        cfg,
        spec,
        pid,
        use_helpers,
        &sync.0,
        &go.1,
        &report.0,
        t_start,
        t_fork,
        oci.as_mut(),
        start.report_errors,
    );
    if tty_fg {
        // SAFETY: take the terminal back.
        unsafe { libc::tcsetpgrp(0, libc::getpgrp()) };
    }
    restore_signals(&old_mask);
    result
}

fn is_foreground_tty() -> bool {
    // SAFETY: isatty/tcgetpgrp/getpgrp on fd 0 are harmless queries.
    unsafe { libc::isatty(0) == 1 && libc::tcgetpgrp(0) == libc::getpgrp() }
}

#[allow(clippy::too_many_arguments)]
fn parent(
    cfg: &RunConfig,
    spec: &RunSpec,
    pid: i32,
    use_helpers: bool,
    sync_r: &OwnedFd,
    go_w: &OwnedFd,
    rep_r: &OwnedFd,
    t_start: u64,
    t_fork: u64,
    oci: Option<&mut Oci>,
    report_errors: bool,
) -> Result<i32> {
    let finish_error = |msgs: &[Message]| {
        if report_errors {
            finish_error(msgs)
        } else {
            match messages::first_error(msgs) {
                Some((_, msg)) => bail!("{msg}"),
                None => bail!("holder set-up process died without a report"),
            }
        }
    };
    let kill_and_reap = || {
        // SAFETY: pid is our child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        reap_descendants();
    };
    let mut t_map = 0;
    if use_helpers {
        if sys::read_byte(sync_r.as_raw_fd())?.is_none() {
            let bytes = sys::read_to_end(rep_r.as_raw_fd()).unwrap_or_default();
            kill_and_reap();
            return finish_error(&messages::decode_all(&bytes));
        }
        let t = sys::monotonic_ns();
        if let Err(e) = userns::write_with_helpers(cfg, pid, &spec.map) {
            kill_and_reap();
            return Err(e.context("write the user namespace's ID maps"));
        }
        t_map = sys::monotonic_ns() - t;
        sys::write_all(go_w.as_raw_fd(), b"g")?;
    }
    let bytes = sys::read_to_end(rep_r.as_raw_fd())?;
    let t_exec = sys::monotonic_ns();
    let msgs = messages::decode_all(&bytes);
    for m in &msgs {
        match m {
            Message::Probe { probe: p } => probe::record(&spec.rundir, p),
            Message::Notice { text } if !spec.quiet => eprintln!("warren: {text}"),
            _ => {}
        }
    }
    if messages::first_error(&msgs).is_some() {
        kill_and_reap();
        return finish_error(&msgs);
    }
    if spec.mode == Mode::Holder {
        if msgs.contains(&Message::Ready) {
            if !report_errors {
                SPARED.store(pid, std::sync::atomic::Ordering::Relaxed);
            }
            return Ok(0);
        }
        kill_and_reap();
        bail!("holder exited during set-up");
    }
    if spec.timing {
        eprintln!("{}", timing_line(&msgs, t_start, t_fork, t_map, t_exec));
    }
    if let Some(oci) = oci {
        if let Err(e) = (oci.created)(pid) {
            kill_and_reap();
            return Err(e);
        }
    }
    let code = wait_forwarding(pid);
    reap_descendants();
    Ok(code)
}

fn finish_error(msgs: &[Message]) -> Result<i32> {
    match messages::first_error(msgs) {
        Some((code, msg)) => {
            eprintln!("warren: {msg}");
            Ok(code)
        }
        None => bail!("container set-up process died without a report"),
    }
}

/// Pure: the `--timing` line from the child's step marks and warren's own times.
fn timing_line(msgs: &[Message], t_start: u64, t_fork: u64, t_map: u64, t_exec: u64) -> String {
    let ms = |ns: u64| ns as f64 / 1e6;
    let mut line = format!(
        "warren timing: prepare {:.2} ms",
        ms(t_fork.saturating_sub(t_start))
    );
    let mut prev = t_fork;
    for m in msgs {
        if let Message::Time { step, ns } = m {
            line.push_str(&format!(", {step} {:.2} ms", ms(ns.saturating_sub(prev))));
            prev = *ns;
        }
    }
    line.push_str(&format!(
        " (of which newuidmap+newgidmap {:.2} ms), exec {:.2} ms, total {:.2} ms",
        ms(t_map),
        ms(t_exec.saturating_sub(prev)),
        ms(t_exec.saturating_sub(t_start))
    ));
    line
}

/// Send messages to warren (best effort: warren may be gone, then so are we).
fn send(rep: &Option<OwnedFd>, msgs: &[Message]) {
    if let Some(fd) = rep {
        let _ = sys::write_all(fd.as_raw_fd(), &Message::encode_all(msgs));
    }
}

/// What the set-up observed, as messages (the step times only with `--timing`).
fn log_messages(spec: &RunSpec, log: &Log) -> Vec<Message> {
    let mut out: Vec<Message> = log
        .probe
        .iter()
        .map(|p| Message::Probe { probe: p.clone() })
        .collect();
    out.extend(
        log.notices
            .iter()
            .map(|n| Message::Notice { text: n.clone() }),
    );
    if spec.timing {
        out.extend(log.times.iter().map(|(s, t)| Message::Time {
            step: (*s).to_string(),
            ns: *t,
        }));
    }
    out
}

/// What the forked set-up process works with.
struct Child<'a> {
    spec: &'a RunSpec,
    choice: Choice,
    /// pidfd of the holder to join.
    join_fd: Option<&'a OwnedFd>,
    /// warren's PID (the container dies with it).
    parent: i32,
    /// Become the terminal's foreground process group.
    tty_fg: bool,
    sync_w: &'a OwnedFd,
    go_r: &'a OwnedFd,
    /// The report pipe; `None` once closed (a holder closes it when ready).
    rep: Option<OwnedFd>,
    /// A holder: its idle time in seconds when it is a shared image mount.
    idle: Option<u64>,
    oci: Option<OciChild<'a>>,
}

/// The child's view of [`Oci`].
struct OciChild<'a> {
    unshare: libc::c_int,
    hostname: Option<&'a str>,
    gate: &'a OwnedFd,
    before_gate: &'a dyn Fn(),
    before_exec: &'a dyn Fn(&[u8]) -> Result<(), String>,
}

impl Child<'_> {
    /// The set-up process: namespaces and maps (with warren's help), then the library's
    /// set-up, then exec. Returns only on error, after reporting it.
    fn run(mut self) -> SetupError {
        let mut log = Log::default();
        log.mark("fork");
        let Err(e) = self.steps(&mut log);
        if self.rep.is_none() && !self.spec.quiet {
            // Past an OCI gate the report pipe is closed: the container's stderr it is.
            eprintln!("warren: {}", e.msg);
        }
        let mut msgs = log_messages(self.spec, &log);
        msgs.push(Message::Error {
            code: e.code,
            msg: e.msg.clone(),
        });
        send(&self.rep, &msgs);
        e
    }

    fn steps(&mut self, log: &mut Log) -> Result<std::convert::Infallible, SetupError> {
        let spec = self.spec;
        let holder = spec.mode == Mode::Holder;
        let err = |what: &str, e: std::io::Error| SetupError::new(format!("{what}: {e}"));
        // A holder too until it is ready (`holder::serve` clears it): a warren killed
        // while starting one leaves nothing behind.
        sys::die_with_parent(libc::SIGKILL, self.parent)
            .map_err(|e| err("set parent-death signal", e))?;
        if self.tty_fg {
            // SAFETY: join our own new process group (the parent does the same; either wins).
            unsafe { libc::setpgid(0, 0) };
        }
        // 1. The user namespace and its maps (the mount namespace is the library's).
        if let Some(fd) = self.join_fd {
            setup::join_holder(fd)?;
            log.mark("join");
        } else {
            setup::new_user_namespace()?;
            if spec.map.single {
                userns::write_self(&spec.map).map_err(|e| err("write the single-ID map", e))?;
            } else {
                sys::write_all(self.sync_w.as_raw_fd(), b"u")
                    .map_err(|e| err("sync with warren", e))?;
                if !matches!(sys::read_byte(self.go_r.as_raw_fd()), Ok(Some(_))) {
                    return Err(SetupError::new("warren did not write the ID maps"));
                }
            }
            log.mark("userns");
        }
        if let Some(oci) = &self.oci {
            oci_namespaces(oci)?;
        }
        // 2. The library's set-up, in this process.
        let staged = setup::stage(spec, log)?;
        if holder {
            setup::check_image(spec, &staged)?;
            let reader = setup::read_list_ahead(spec, &staged);
            let mut msgs = log_messages(spec, log);
            msgs.push(Message::Ready);
            let rep = &mut self.rep;
            return holder::serve(
                spec,
                staged.daemon,
                staged.recording,
                reader,
                self.idle,
                || {
                    send(rep, &msgs);
                    // Closing our end of the report pipe tells warren we are ready.
                    *rep = None;
                },
            )
            .map_err(|(code, msg)| SetupError { code, msg });
        }
        // An OCI-style start (warren oci, warren run with hooks) waits at its gate after
        // its mounts, before pivot_root: warren runs the createContainer hooks then.
        let mut gate_msg = Vec::new();
        let (oci, rep) = (&self.oci, &mut self.rep);
        let mut at_gate = |_root: &std::path::Path, log: &mut Log| -> Result<(), SetupError> {
            let Some(oci) = oci else { return Ok(()) };
            send(rep, &log_messages(spec, log));
            *log = Log::default();
            // Its own process group (after the FUSE daemons were started: `kill --all`
            // must not reach them); EOF on the report pipe tells warren it is created.
            // SAFETY: setpgid on ourselves.
            unsafe { libc::setpgid(0, 0) };
            *rep = None;
            (oci.before_gate)();
            let mut msg = [0u8; 64];
            let n = loop {
                // SAFETY: reading into a local buffer of the given size.
                let n =
                    unsafe { libc::read(oci.gate.as_raw_fd(), msg.as_mut_ptr().cast(), msg.len()) };
                if n < 0
                    && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
                {
                    continue;
                }
                break n;
            };
            if n <= 0 {
                return Err(SetupError::new("the start signal never came"));
            }
            gate_msg = msg[..n as usize].to_vec();
            Ok(())
        };
        let prepared = setup::prepare_root(
            spec,
            &staged,
            self.choice,
            Some(self.parent),
            log,
            &mut at_gate,
        )?;
        match &self.oci {
            Some(oci) => (oci.before_exec)(&gate_msg).map_err(SetupError::new)?,
            None => {
                send(&self.rep, &log_messages(spec, log));
                *log = Log::default();
            }
        }
        // 3. Fork the command and stay its monitor (the report pipe is CLOEXEC: warren
        // sees EOF when the command runs).
        let Err(e) = super::monitor::run(prepared, &mut self.rep, self.parent, spec.contain);
        Err(e)
    }
}

/// The namespaces and host name an OCI config asks for (in the new user namespace).
fn oci_namespaces(oci: &OciChild) -> Result<(), SetupError> {
    if oci.unshare != 0 {
        // SAFETY: unshare on the calling process.
        if unsafe { libc::unshare(oci.unshare) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(SetupError::new(format!("linux.namespaces: {e}")));
        }
    }
    if let Some(h) = &oci.hostname {
        nix::unistd::sethostname(h).map_err(|e| SetupError::new(format!("hostname: {e}")))?;
    }
    Ok(())
}

/// Block the forwarded signals and SIGCHLD (before fork); returns the old mask.
pub fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset operations on local, initialized sets.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in FORWARDED.iter().chain(&[libc::SIGCHLD]) {
            libc::sigaddset(&mut set, *s);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &set, &mut old);
        old
    }
}

/// Restore a mask saved by [`block_signals`].
pub fn restore_signals(old: &libc::sigset_t) {
    // SAFETY: old is a valid sigset.
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, old, std::ptr::null_mut()) };
}
/// Forward signals to `child` until it exits; returns its exit code. Signals must be
/// blocked (they are consumed with sigwaitinfo).
pub fn wait_forwarding(child: i32) -> i32 {
    // SAFETY: sigset operations and waits on local data; kill on our own child.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in FORWARDED.iter().chain(&[libc::SIGCHLD]) {
            libc::sigaddset(&mut set, *s);
        }
        loop {
            let mut status = 0;
            let r = libc::waitpid(child, &mut status, libc::WNOHANG);
            if r == child {
                return process::exit_code(status);
            }
            if r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD) {
                return 125;
            }
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let sig = libc::sigwaitinfo(&set, &mut info);
            if sig > 0 && sig != libc::SIGCHLD {
                libc::kill(child, sig);
            }
        }
    }
}

/// After the container's first process exited: kill and reap every remaining
/// descendant (warren is a child subreaper, so orphans and FUSE daemons come back to it).
pub fn reap_descendants() {
    let me = std::process::id();
    let children_file = format!("/proc/{me}/task/{me}/children");
    for _ in 0..1000 {
        let kids: Vec<i32> = std::fs::read_to_string(&children_file)
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        let spared = SPARED.load(std::sync::atomic::Ordering::Relaxed);
        let kids: Vec<i32> = kids.into_iter().filter(|&k| k != spared).collect();
        for k in &kids {
            // SAFETY: k is our own child (listed in our children file).
            unsafe { libc::kill(*k, libc::SIGKILL) };
        }
        let mut status = 0;
        // SAFETY: waiting for any child of ours.
        let r = unsafe {
            libc::waitpid(
                -1,
                &mut status,
                if kids.is_empty() { libc::WNOHANG } else { 0 },
            )
        };
        if r < 0 {
            return; // ECHILD: nothing left
        }
        if r == 0 && kids.is_empty() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_line_sums_steps() {
        let msgs = [
            Message::Time {
                step: "fork".into(),
                ns: 2_000_000,
            },
            Message::Notice { text: "x".into() },
            Message::Time {
                step: "join".into(),
                ns: 5_000_000,
            },
        ];
        assert_eq!(
            timing_line(&msgs, 0, 1_000_000, 250_000, 6_000_000),
            "warren timing: prepare 1.00 ms, fork 1.00 ms, join 3.00 ms (of which newuidmap+newgidmap 0.25 ms), exec 1.00 ms, total 6.00 ms"
        );
    }
}

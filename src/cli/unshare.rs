//! `warren unshare`: a shell or command in a fresh user + mount namespace with the same
//! ID map as `warren run`, keeping every capability (ambient) so files owned by your
//! subordinate IDs can be inspected, chowned and deleted, while new files still belong
//! to you. A front end of its own: it forks and supervises like `warren run`.

use super::{supervisor, Ctx};
use crate::config::RunConfig;
use crate::runtime::idmap::{IdMap, Identity};
use crate::runtime::{caps, process, sys, userns};
use anyhow::{bail, Result};
use std::ffi::CString;
use std::os::fd::AsRawFd;

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
    let user = super::caller::current(&ctx.config.run)?;
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
    run_in_namespace(&ctx.config.run, &plan.map, &argv)
}

/// Run `argv` in the namespace; returns its exit code.
fn run_in_namespace(cfg: &RunConfig, map: &IdMap, argv: &[String]) -> Result<i32> {
    let args: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_str()))
        .collect::<Result<_, _>>()
        .map_err(|_| anyhow::anyhow!("argument contains a NUL byte"))?;
    let (sync_r, sync_w) = sys::pipe()?;
    let (go_r, go_w) = sys::pipe()?;
    let (rep_r, rep_w) = sys::pipe()?;
    let old = supervisor::block_signals();
    let me = std::process::id() as i32;
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
    let env: Vec<CString> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let mut b = std::os::unix::ffi::OsStrExt::as_bytes(k.as_os_str()).to_vec();
            b.push(b'=');
            b.extend_from_slice(std::os::unix::ffi::OsStrExt::as_bytes(v.as_os_str()));
            CString::new(b).ok()
        })
        .chain(CString::new("WARREN_UNSHARE=1").ok())
        .collect();
    let last = caps::last_cap();
    // SAFETY: single-threaded; the child execs or _exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        supervisor::restore_signals(&old);
        bail!("fork: {}", std::io::Error::last_os_error());
    }
    if pid == 0 {
        drop((sync_r, go_w, rep_r));
        supervisor::restore_signals(&old);
        let msg = (|| -> Result<String, String> {
            sys::die_with_parent(libc::SIGKILL, me).map_err(|e| e.to_string())?;
            // SAFETY: unshare on the calling process.
            if unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) } != 0 {
                return Err(format!(
                    "create a user namespace: {}",
                    std::io::Error::last_os_error()
                ));
            }
            if map.single {
                userns::write_self(map).map_err(|e| format!("write the single-ID map: {e}"))?;
            } else {
                sys::write_all(sync_w.as_raw_fd(), b"u").map_err(|e| e.to_string())?;
                if !matches!(sys::read_byte(go_r.as_raw_fd()), Ok(Some(_))) {
                    return Err("warren did not write the ID maps".into());
                }
            }
            caps::raise_all_ambient(last).map_err(|e| format!("raise capabilities: {e}"))?;
            let spec = process::ExecSpec {
                argv: args.clone(),
                env: env.clone(),
                path: path.clone(),
                cwd: CString::new(".").unwrap_or_default(),
                // SAFETY: getuid/getgid cannot fail.
                uid: unsafe { libc::getuid() },
                // SAFETY: as above.
                gid: unsafe { libc::getgid() },
                fake_chown: false,
                parent: Some(me),
                last_cap: last,
                caps: None,
            };
            Err(exec_keep_caps(&spec))
        })();
        let m = msg.unwrap_or_else(|e| e);
        let _ = sys::write_all(rep_w.as_raw_fd(), m.as_bytes());
        // SAFETY: leave the forked child.
        unsafe { libc::_exit(127) };
    }
    drop((sync_w, go_r, rep_w));
    let res = (|| -> Result<i32> {
        if !map.single && sys::read_byte(sync_r.as_raw_fd())?.is_some() {
            userns::write_with_helpers(cfg, pid, map)?;
            sys::write_all(go_w.as_raw_fd(), b"g")?;
        }
        let msg = sys::read_to_end(rep_r.as_raw_fd())?;
        if !msg.is_empty() {
            // SAFETY: reap our child.
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
            bail!("{}", String::from_utf8_lossy(&msg));
        }
        Ok(supervisor::wait_forwarding(pid))
    })();
    supervisor::restore_signals(&old);
    if res.is_err() {
        // SAFETY: our child; it may already be gone.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        supervisor::reap_descendants();
    }
    res
}

/// exec with the PATH search but without dropping capabilities.
fn exec_keep_caps(spec: &process::ExecSpec) -> String {
    let mut argv: Vec<*const libc::c_char> = spec.argv.iter().map(|c| c.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = spec.env.iter().map(|c| c.as_ptr()).collect();
    envp.push(std::ptr::null());
    let name = spec.argv[0].to_bytes();
    let cands: Vec<CString> = if name.contains(&b'/') {
        vec![spec.argv[0].clone()]
    } else {
        spec.path
            .split(':')
            .filter_map(|d| CString::new([d.as_bytes(), b"/", name].concat()).ok())
            .collect()
    };
    for c in &cands {
        // SAFETY: NULL-terminated arrays of valid C strings.
        unsafe { libc::execve(c.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    }
    format!(
        "exec {}: {}",
        spec.argv[0].to_string_lossy(),
        std::io::Error::last_os_error()
    )
}

//! `warren rm NAME…`: stop running containers or holders (SIGTERM, then SIGKILL).

use super::Ctx;
use crate::runtime::{holder, state, sys};
use anyhow::{bail, Context, Result};
use std::os::fd::AsRawFd;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Names or IDs (an ID prefix of 4+ characters is enough).
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Seconds to wait after SIGTERM before SIGKILL.
    #[arg(short = 't', long = "time", default_value_t = 10)]
    pub time: u64,
    /// Also stop a holder that containers still use (they lose their image).
    #[arg(short, long)]
    pub force: bool,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<i32> {
    let rundir = state::runtime_dir(&ctx.config.run)?;
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
        if r.kind == "holder" && !args.force {
            let users = holder::joined(&rundir, r)?;
            if !users.is_empty() {
                eprintln!(
                    "warren: rm {n}: {} container(s) still use this holder ({}); stop them first or use --force",
                    users.len(),
                    users.iter().map(|u| u.id.as_str()).collect::<Vec<_>>().join(", ")
                );
                code = 1;
                continue;
            }
        }
        stop(r.pid, args.time).with_context(|| format!("rm {n}"))?;
        if !ctx.quiet {
            println!("{}", r.name.as_deref().unwrap_or(&r.id));
        }
    }
    Ok(code)
}

fn stop(pid: i32, secs: u64) -> Result<()> {
    let fd = match sys::pidfd_open(pid) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(()),
        Err(e) => return Err(e).context("pidfd_open"),
    };
    for (sig, wait_ms) in [(libc::SIGTERM, secs * 1000), (libc::SIGKILL, 5000)] {
        // SAFETY: pidfd_send_signal on a pidfd we hold: no PID-reuse race.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd.as_raw_fd(),
                sig,
                std::ptr::null::<u8>(),
                0,
            )
        };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ESRCH) {
                return Ok(());
            }
            return Err(e).context("signal");
        }
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: pfd is valid for the call; a pidfd is readable once the process exits.
        if unsafe { libc::poll(&mut pfd, 1, wait_ms.min(i32::MAX as u64) as i32) } > 0 {
            return Ok(());
        }
    }
    bail!("process {pid} did not exit")
}

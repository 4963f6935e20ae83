//! `warren doctor`: can this node run rootless containers for this user? Every check
//! prints OK, WARN or FAIL and, when not OK, the exact fix. Exit status 1 on any FAIL.

use super::Ctx;
use crate::admin::doctor::{self, apparmor, Options, Status};
use anyhow::Result;
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Checks: kernel, native overlay probe, user namespace sysctls (upstream, Debian, Ubuntu AppArmor), newuidmap/newgidmap, the user's subuid/subgid ranges, /dev/fuse, squashfuse, fuse-overlayfs, stores, runtime dir, cgroups, the Slurm SPANK plugin."
)]
/// `warren doctor` arguments.
pub struct Args {
    /// Check for this user instead of the caller (root only).
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
    /// Print the AppArmor profile that allows user namespaces for this binary, and exit.
    #[arg(long)]
    apparmor_profile: bool,
    /// newuidmap to check [default: config run.newuidmap].
    #[arg(long, value_name = "PATH")]
    newuidmap: Option<PathBuf>,
    /// newgidmap to check [default: config run.newgidmap].
    #[arg(long, value_name = "PATH")]
    newgidmap: Option<PathBuf>,
    /// subuid file.
    #[arg(long, value_name = "FILE", default_value = "/etc/subuid")]
    subuid: PathBuf,
    /// subgid file.
    #[arg(long, value_name = "FILE", default_value = "/etc/subgid")]
    subgid: PathBuf,
    /// login.defs (for the range suggested in fixes).
    #[arg(long, value_name = "FILE", default_value = "/etc/login.defs")]
    login_defs: PathBuf,
    /// FUSE device to check.
    #[arg(
        long,
        value_name = "PATH",
        env = "WARREN_DOCTOR_FUSE_DEV",
        default_value = "/dev/fuse"
    )]
    fuse_dev: PathBuf,
    /// Slurm plugstack.conf.
    #[arg(long, value_name = "FILE", default_value = "/etc/slurm/plugstack.conf")]
    plugstack: PathBuf,
}

/// Run the checks and print them; returns 1 when any check FAILs.
pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    if a.apparmor_profile {
        let exe = std::env::current_exe().unwrap_or_else(|_| "/usr/bin/warren".into());
        print!("{}", apparmor::profile(&exe));
        return Ok(0);
    }
    let opts = Options {
        user: a.user,
        newuidmap: a.newuidmap,
        newgidmap: a.newgidmap,
        subuid: a.subuid,
        subgid: a.subgid,
        login_defs: a.login_defs,
        fuse_dev: a.fuse_dev,
        plugstack: a.plugstack,
        ..Options::default()
    };
    let (target, checks) = doctor::run(&ctx.config, &opts)?;
    let (ok, warn, fail) = doctor::summary(&checks);
    if a.json {
        super::print_json(&serde_json::json!({
            "user": target.name,
            "uid": target.uid,
            "ok": fail == 0,
            "summary": { "ok": ok, "warn": warn, "fail": fail },
            "checks": checks,
        }))?;
    } else {
        // Buffered, with write errors (a closed pipe) reported instead of panicking.
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        writeln!(
            out,
            "warren doctor: user {} (UID {})",
            target.name, target.uid
        )?;
        for c in &checks {
            if ctx.quiet && c.status == Status::Ok {
                continue;
            }
            writeln!(out, "{} {:<26} {}", c.status.label(), c.id, c.detail)?;
            if let Some(fix) = &c.fix {
                let mut lines = fix.lines();
                if let Some(first) = lines.next() {
                    writeln!(out, "     fix: {first}")?;
                }
                for l in lines {
                    writeln!(out, "          {l}")?;
                }
            }
        }
        writeln!(out, "{ok} OK, {warn} WARN, {fail} FAIL")?;
        out.flush()?;
    }
    Ok(i32::from(fail > 0))
}

//! `warren admin`: cluster administration. `subid plan|check|apply` provision and audit
//! `/etc/subuid` and `/etc/subgid`.

use super::{print_json, Ctx};
use crate::admin::subid_apply;
use crate::admin::subid_check::{self, Finding, Input, Severity};
use crate::admin::subid_plan::{self, Params, Plan, Remark, Strategy};
use crate::admin::subid_source::{self, Paths, Selection};
use crate::subid;
use anyhow::{Context, Result};
use std::path::PathBuf;

/// `warren admin` arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    cmd: Box<AdminCmd>,
}

#[derive(clap::Subcommand, Debug)]
enum AdminCmd {
    /// Subordinate UID/GID ranges (/etc/subuid, /etc/subgid).
    Subid {
        #[command(subcommand)]
        cmd: SubidCmd,
    },
}

#[derive(clap::Subcommand, Debug)]
enum SubidCmd {
    /// Compute the ranges users are missing; print them, write nothing.
    Plan(PlanArgs),
    /// Report overlaps, unknown users, small or unparseable entries; exit 1 on any error.
    Check(CheckArgs),
    /// Plan, then write the new entries (locked like useradd, backup FILE-, atomic).
    Apply(ApplyArgs),
}

/// Which files to read and write. Tests and image builders point these elsewhere.
#[derive(clap::Args, Debug, Clone)]
struct PathArgs {
    /// Use ROOT/etc/{subuid,subgid,passwd,group,login.defs} (accounts from files, not NSS).
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// subuid file [default: /etc/subuid].
    #[arg(long, value_name = "FILE")]
    subuid: Option<PathBuf>,
    /// subgid file [default: /etc/subgid].
    #[arg(long, value_name = "FILE")]
    subgid: Option<PathBuf>,
    /// passwd-format file instead of NSS (getent passwd).
    #[arg(long, value_name = "FILE")]
    passwd: Option<PathBuf>,
    /// group-format file instead of NSS (getent group).
    #[arg(long, value_name = "FILE")]
    group: Option<PathBuf>,
    /// login.defs file [default: /etc/login.defs].
    #[arg(long, value_name = "FILE")]
    login_defs: Option<PathBuf>,
}

impl PathArgs {
    fn paths(&self) -> Paths {
        let mut p = Paths::under(self.root.as_deref());
        if let Some(f) = &self.subuid {
            p.subuid = f.clone();
        }
        if let Some(f) = &self.subgid {
            p.subgid = f.clone();
        }
        if let Some(f) = &self.passwd {
            p.passwd = Some(f.clone());
        }
        if let Some(f) = &self.group {
            p.group = Some(f.clone());
        }
        if let Some(f) = &self.login_defs {
            p.login_defs = f.clone();
        }
        p
    }
}

#[derive(clap::Args, Debug)]
struct PlanArgs {
    #[command(flatten)]
    paths: PathArgs,
    /// deterministic: SUB_UID_MIN + (UID - UID_MIN) * SUB_UID_COUNT, like shadow's
    /// SUB_UID_DETERMINISTIC (same answer on every node); first-fit: lowest free range.
    #[arg(long, value_enum, default_value = "deterministic")]
    strategy: Strategy,
    /// First subordinate ID [default: SUB_UID_MIN / SUB_GID_MIN from login.defs].
    #[arg(long, value_name = "ID")]
    base: Option<u64>,
    /// IDs per user [default: SUB_UID_COUNT / SUB_GID_COUNT, else 65536].
    #[arg(long, value_name = "N")]
    size: Option<u64>,
    /// Last subordinate ID that may be used [default: SUB_UID_MAX / SUB_GID_MAX].
    #[arg(long, value_name = "ID")]
    max: Option<u64>,
    /// Provision the users named in FILE (one per line) instead of all regular users.
    #[arg(long, value_name = "FILE", conflicts_with = "uid_range")]
    users_file: Option<PathBuf>,
    /// Provision every UID in A-B (UIDs without an account are written by number).
    #[arg(long, value_name = "A-B")]
    uid_range: Option<String>,
    /// Include system accounts (UIDs outside UID_MIN..UID_MAX from login.defs).
    #[arg(long)]
    all_users: bool,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct CheckArgs {
    #[command(flatten)]
    paths: PathArgs,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct ApplyArgs {
    #[command(flatten)]
    plan: PlanArgs,
    /// Show the diff, write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Seconds to wait for a lock held by useradd/usermod (shadow waits 15).
    #[arg(long, value_name = "SECS", default_value_t = 15)]
    lock_timeout: u64,
}

/// Run `warren admin …`; returns the exit code (1 when refusals or check errors).
pub fn run(ctx: &Ctx, args: Args) -> Result<i32> {
    match *args.cmd {
        AdminCmd::Subid { cmd } => match cmd {
            SubidCmd::Plan(a) => plan(ctx, a),
            SubidCmd::Check(a) => check(a),
            SubidCmd::Apply(a) => apply(ctx, a),
        },
    }
}

/// Everything the planner needs besides the two files.
struct Prepared {
    params: Params,
    candidates: Vec<subid_plan::Candidate>,
    real: subid_plan::RealIds,
}

fn prepare(a: &PlanArgs, paths: &Paths) -> Result<Prepared> {
    let defs = paths.load_defs(a.strategy == Strategy::Deterministic)?;
    let db = paths.load_db()?;
    let sel = if let Some(f) = &a.users_file {
        Selection::UsersFile(f.clone())
    } else if let Some(r) = &a.uid_range {
        let (x, y) = subid_source::parse_uid_range(r)?;
        Selection::UidRange(x, y)
    } else {
        Selection::Enumerated { all: a.all_users }
    };
    let candidates = subid_source::candidates(&db, &sel, &defs, paths.passwd.is_none())?;
    let mut params = Params {
        strategy: a.strategy,
        uid_min: defs.uid_min,
        sub_uid: defs.sub_uid,
        sub_gid: defs.sub_gid,
    };
    for l in [&mut params.sub_uid, &mut params.sub_gid] {
        if let Some(b) = a.base {
            l.min = b;
        }
        if let Some(s) = a.size {
            l.count = s;
        }
        if let Some(m) = a.max {
            l.max = m;
        }
    }
    Ok(Prepared {
        params,
        candidates,
        real: subid_source::real_ids(&db),
    })
}

fn make_plan(p: &Prepared, u: &subid::SubIdFile, g: &subid::SubIdFile) -> Result<Plan> {
    Ok(subid_plan::plan(&p.params, &p.candidates, u, g, &p.real)?)
}

fn print_remarks(plan: &Plan, paths: &Paths) {
    let file = |k: subid_plan::Kind| match k {
        subid_plan::Kind::Subuid => paths.subuid.display().to_string(),
        subid_plan::Kind::Subgid => paths.subgid.display().to_string(),
    };
    let line = |r: &Remark| format!("{} (UID {}) {}: {}", r.user, r.uid, file(r.kind), r.message);
    for r in &plan.notes {
        eprintln!("note: {}", line(r));
    }
    for r in &plan.errors {
        eprintln!("error: {}", line(r));
    }
    if !plan.errors.is_empty() {
        eprintln!(
            "warren: {} user(s) cannot be given a range; nothing would be written",
            plan.errors.len()
        );
    }
}

fn plan(_ctx: &Ctx, a: PlanArgs) -> Result<i32> {
    let paths = a.paths.paths();
    let prep = prepare(&a, &paths)?;
    let u = subid::read(&paths.subuid)?;
    let g = subid::read(&paths.subgid)?;
    let plan = make_plan(&prep, &u, &g)?;
    let code = i32::from(!plan.errors.is_empty());
    if a.json {
        let v = serde_json::json!({
            "strategy": a.strategy,
            "subuid_file": paths.subuid,
            "subgid_file": paths.subgid,
            "plan": plan,
        });
        print_json(&v)?;
        return Ok(code);
    }
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for (path, list) in [(&paths.subuid, &plan.subuid), (&paths.subgid, &plan.subgid)] {
        writeln!(
            out,
            "# {}: {} new entr{}",
            path.display(),
            list.len(),
            if list.len() == 1 { "y" } else { "ies" }
        )?;
        for e in list {
            writeln!(out, "{}", e.line())?;
        }
    }
    writeln!(out, "# {} user(s) already have both ranges", plan.unchanged)?;
    out.flush()?;
    print_remarks(&plan, &paths);
    Ok(code)
}

fn check(a: CheckArgs) -> Result<i32> {
    let paths = a.paths.paths();
    let db = paths.load_db()?;
    let real = subid_source::real_ids(&db);
    let u = subid::read(&paths.subuid)?;
    let g = subid::read(&paths.subgid)?;
    let (nu, ng) = (
        paths.subuid.display().to_string(),
        paths.subgid.display().to_string(),
    );
    let findings = subid_check::check(
        Input {
            file: &nu,
            parsed: &u,
            real: &real.uids,
        },
        Input {
            file: &ng,
            parsed: &g,
            real: &real.gids,
        },
        &db,
    );
    let (errors, warnings) = subid_check::counts(&findings);
    if a.json {
        let v = serde_json::json!({
            "ok": errors == 0,
            "errors": errors,
            "warnings": warnings,
            "entries": { "subuid": u.entries.len(), "subgid": g.entries.len() },
            "findings": findings,
        });
        print_json(&v)?;
    } else {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        for f in &findings {
            writeln!(out, "{}", finding_line(f))?;
        }
        writeln!(
            out,
            "{} subuid and {} subgid entries: {errors} error(s), {warnings} warning(s)",
            u.entries.len(),
            g.entries.len()
        )?;
        out.flush()?;
    }
    Ok(i32::from(errors > 0))
}

fn finding_line(f: &Finding) -> String {
    let sev = match f.severity {
        Severity::Error => "ERROR",
        Severity::Warn => "WARN ",
    };
    let at = match f.line {
        Some(l) => format!("{}:{l}", f.file),
        None => f.file.clone(),
    };
    format!("{sev} {at}: [{}] {}", f.code, f.message)
}

fn apply(ctx: &Ctx, a: ApplyArgs) -> Result<i32> {
    let paths = a.plan.paths.paths();
    let prep = prepare(&a.plan, &paths)?;
    let outcome = subid_apply::apply(
        &paths,
        a.dry_run,
        std::time::Duration::from_secs(a.lock_timeout),
        |u, g| make_plan(&prep, u, g),
    )
    .context("apply")?;
    let code = i32::from(!outcome.plan.errors.is_empty());
    if a.plan.json {
        let v = serde_json::json!({ "dry_run": a.dry_run, "outcome": outcome });
        print_json(&v)?;
        return Ok(code);
    }
    print_remarks(&outcome.plan, &paths);
    if code != 0 {
        return Ok(code);
    }
    for f in &outcome.files {
        match &f.diff {
            Some(d) => {
                if !ctx.quiet {
                    print!("{d}");
                }
                if a.dry_run {
                    println!(
                        "{}: would add {} entr{}",
                        f.path.display(),
                        f.added,
                        if f.added == 1 { "y" } else { "ies" }
                    );
                } else {
                    let b = match &f.backup {
                        Some(b) => format!("backup in {}", b.display()),
                        None => "new file".to_string(),
                    };
                    println!(
                        "{}: added {} entr{} ({b})",
                        f.path.display(),
                        f.added,
                        if f.added == 1 { "y" } else { "ies" }
                    );
                }
            }
            None => println!("{}: no change (already up to date)", f.path.display()),
        }
    }
    if a.dry_run {
        println!("dry run: nothing written");
    }
    Ok(0)
}

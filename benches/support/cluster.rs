//! What the benches on the three-node test cluster share (benches/slurm.rs,
//! benches/mpi.rs): shell steps, timing a command, the plugin installed from this tree,
//! becoming the test user, failing cleanly. Run as root.

#[path = "timing.rs"]
mod timing;

use std::path::Path;
use std::process::{Command, Stdio};

/// The unprivileged user the rows run as (scripts/setup-host.sh).
pub const USER: &str = "warren-ci";

/// Run `cmd` with `sh -e`; its stdout, or why it failed.
pub fn sh(cmd: &str) -> Result<String, String> {
    let o = Command::new("sh")
        .args(["-ec", cmd])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if !o.status.success() {
        return Err(format!(
            "`{cmd}` failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Wall time (ms) and stdout of `argv` with `env` added; a failure is an error.
pub fn run(argv: &[String], env: &[(&str, &str)]) -> Result<(f64, String), String> {
    let mut c = Command::new(&argv[0]);
    c.args(&argv[1..]).envs(env.iter().copied());
    let (ms, o) = timing::timed(c, argv)?;
    Ok((ms, String::from_utf8_lossy(&o.stdout).into_owned()))
}

/// The median of `v` (`None` when empty).
pub fn median(v: &[f64]) -> Option<f64> {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied()
}

pub fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// Rounds from the first numeric argument (`cargo bench --bench NAME -- ROUNDS`).
pub fn rounds(default: usize) -> usize {
    std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(default)
}

/// Exit 2 with a message unless we are root and the test cluster is up.
pub fn need_root_and_cluster(bench: &str) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("{bench} bench: run as root (it installs the plugin, then runs as {USER})");
        std::process::exit(2);
    }
    let nodes = sh("sinfo -h -N -o %N").unwrap_or_default();
    if !["n1", "n2", "n3"].iter().all(|n| nodes.contains(n)) {
        eprintln!("{bench} bench: the test cluster is not up (bash scripts/slurm.sh start)");
        std::process::exit(2);
    }
}

/// The stores the tests use, under `state`: the user's (`slurm-store/USER`) and the
/// admin-owned shared one (`slurm-shared`).
pub fn prepare_stores(state: &Path) -> Result<(), String> {
    sh(&format!(
        "mkdir -p {0}/slurm-store {0}/slurm-shared && chmod 755 {0}/slurm-store {0}/slurm-shared && \
         d={0}/slurm-store/{USER}; [ -d $d ] || {{ mkdir $d && chown {USER}: $d; }}",
        state.display()
    ))
    .map(drop)
}

/// Install the plugin built from the tree at `root` (release) with warren= `warren`,
/// the tests' stores and `extra` plugstack arguments.
pub fn install_plugin(root: &Path, state: &Path, warren: &Path, extra: &str) -> Result<(), String> {
    let conf = "/etc/slurm/plugstack.conf.d/warren.conf";
    let before = std::fs::read_to_string(conf).unwrap_or_default();
    sh(&format!(
        "cd {r} && bash scripts/install-plugin.sh --no-binary warren={w} \
         store={s}/slurm-store/%u runtime_path=/run/warren shared_store={s}/slurm-shared \
         pmix_appdir_base=/tmp/pmix-%n {extra}",
        r = root.display(),
        w = warren.display(),
        s = state.display()
    ))?;
    // Only a first install needs slurmd restarted (it looks for job epilogs when it
    // starts); a changed line is read by every new srun and slurmstepd.
    if !before.contains("libwarren_spank.so") {
        sh(&format!("bash {}/scripts/slurm.sh restart", root.display()))?;
    }
    Ok(())
}

/// Become `user` (IDs, HOME, USER), dropping our own variables that start with any of
/// `drop`; returns its uid and gid.
pub fn drop_to(user: &str, drop: &[&str]) -> Result<(u32, u32), String> {
    let line = sh(&format!("getent passwd {user}"))?;
    let f: Vec<&str> = line.trim().split(':').collect();
    let (Some(uid), Some(gid)) = (
        f.get(2).and_then(|v| v.parse::<u32>().ok()),
        f.get(3).and_then(|v| v.parse::<u32>().ok()),
    ) else {
        return Err(format!("user {user} missing (scripts/setup-host.sh)"));
    };
    // SAFETY: plain credential syscalls in a single-threaded process.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0
            || libc::setresgid(gid, gid, gid) != 0
            || libc::setresuid(uid, uid, uid) != 0
        {
            return Err(format!(
                "become {user}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    for (k, _) in std::env::vars() {
        if drop.iter().any(|p| k.starts_with(p)) {
            std::env::remove_var(k);
        }
    }
    std::env::set_var("HOME", f.get(5).unwrap_or(&"/"));
    std::env::set_var("USER", user);
    Ok((uid, gid))
}

/// Report `msg`, remove the bench's work dir, exit 1.
pub fn fail(bench: &str, work: &Path, msg: &str) -> ! {
    eprintln!("{bench} bench: {msg}");
    let _ = std::fs::remove_dir_all(work);
    std::process::exit(1);
}

//! Prerequisite checks: each returns `Err(reason)` when the test cannot run here, for
//! `need!` to print and skip on.

use std::path::Path;

/// The running test's name (libtest names its threads after the tests), else `module`.
pub fn test_name(module: &str) -> String {
    match std::thread::current().name() {
        Some(n) if n != "main" => n.to_string(),
        _ => module.to_string(),
    }
}

/// True when we run as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Root, or why not.
pub fn need_root(why: &str) -> Result<(), String> {
    if is_root() {
        Ok(())
    } else {
        Err(format!("not root ({why})"))
    }
}

/// True when `prog` (a name in PATH or a path) exists and is executable.
pub fn have(prog: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let exec = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if prog.contains('/') {
        return exec(Path::new(prog));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path).any(|d| exec(&d.join(prog)))
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|d| exec(&Path::new(d).join(prog)))
}

/// All of `progs` installed, or the first one missing.
pub fn need_programs(progs: &[&str]) -> Result<(), String> {
    match progs.iter().find(|p| !have(p)) {
        Some(p) => Err(format!("{p} not installed (scripts/setup-host.sh)")),
        None => Ok(()),
    }
}

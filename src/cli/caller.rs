//! The caller of the CLI is this process's user: real UID, effective GID, `$HOME`, the
//! environment and `XDG_RUNTIME_DIR`, read here (the front end) and handed to the
//! library as a `Caller`.

use crate::config::RunConfig;
use crate::runtime::caller::{self, Caller};
use crate::runtime::state;
use anyhow::Result;
use std::path::{Path, PathBuf};

/// The process's own caller (its runtime directory chosen, not yet created: `spec::build`
/// creates it; `warren unshare` needs none).
pub fn current(cfg: &RunConfig) -> Result<Caller> {
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getegid().as_raw();
    let home = crate::config::home_dir().unwrap_or_else(|| PathBuf::from("/"));
    let xdg = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from);
    let runtime_dir = state::choose_runtime_dir(cfg, uid, &home, xdg.as_deref());
    let env: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    Ok(Caller::from_facts(
        uid,
        gid,
        caller::passwd_facts(uid),
        Some(home),
        env,
        runtime_dir,
    ))
}

/// Only the runtime directory (for `ps` / `rm`, which need nothing else).
pub fn runtime_dir(cfg: &RunConfig) -> Result<PathBuf> {
    let uid = nix::unistd::getuid().as_raw();
    let home = crate::config::home_dir().unwrap_or_else(|| PathBuf::from("/"));
    let xdg = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from);
    state::runtime_dir(cfg, uid, &home, xdg.as_deref().map(Path::new))
}

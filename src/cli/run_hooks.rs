//! `warren run` with OCI hooks (site `hooks.d`, CDI specs): the container is started
//! through the supervisor's start gate, as `warren oci` does. Once its set-up is done
//! and it waits at the gate: prestart and createRuntime hooks (runtime namespace),
//! createContainer hooks (in the container's user and mount namespaces); then the gate
//! opens, the container's process runs its startContainer hooks (in the container) and
//! execs the command; poststart hooks run in warren. After exit: poststop. Each hook gets
//! the OCI state JSON on stdin (docs/hooks.md). A failing prestart/createRuntime/
//! createContainer/startContainer hook aborts the start (exit 125); poststart and
//! poststop failures are warnings.

use crate::config::RunConfig;
use crate::runtime::bundle::HookSet;
use crate::runtime::oci_state::{self, State, Status};
use crate::runtime::spec::{HookBundle, RunSpec};
use crate::runtime::{hooks, setup, sys};
use anyhow::{Context, Result};
use std::os::fd::AsRawFd;

/// The state JSON hooks read on stdin. `bundle` is the container's staging directory,
/// where a `config.json` names its root for the createContainer hooks (docs/hooks.md).
fn state(id: &str, status: Status, pid: i32, c: &Common) -> Vec<u8> {
    let st = State {
        oci_version: oci_state::OCI_VERSION.into(),
        id: id.to_string(),
        status,
        pid,
        bundle: c.bundle.clone(),
        annotations: c.annotations.clone(),
    };
    serde_json::to_vec(&st).unwrap_or_default()
}

/// What every state of one container says.
struct Common {
    bundle: std::path::PathBuf,
    annotations: std::collections::BTreeMap<String, String>,
}

/// Failures of poststart/poststop hooks are told, not fatal.
fn warn(phase: &'static str, hs: &[crate::runtime::bundle::Hook], st: &[u8], quiet: bool) {
    if let Err(e) = hooks::run_all(phase, hs, st, None) {
        if !quiet {
            eprintln!("warren: {e}");
            if !e.stderr.is_empty() {
                eprintln!("{}", e.stderr);
            }
        }
    }
}

/// Run the container of `spec` with `h`'s hooks; returns its exit code.
pub fn run(
    cfg: &RunConfig,
    spec: &RunSpec,
    h: &HookSet,
    annotations: &[(String, String)],
    t_start: u64,
) -> Result<i32> {
    let mut spec = spec.clone();
    if !h.create_container.is_empty() {
        spec.hook_bundle = HookBundle::Staging;
    }
    let spec = &spec;
    let common = Common {
        bundle: setup::staging_dir(spec),
        annotations: annotations.iter().cloned().collect(),
    };
    let id = spec
        .name
        .clone()
        .unwrap_or_else(crate::runtime::state::new_id);
    let (gate_r, gate_w) = sys::pipe().context("start gate")?;
    let quiet = spec.quiet;
    let before_exec = |_msg: &[u8]| -> Result<(), String> {
        let st = state(&id, Status::Created, std::process::id() as i32, &common);
        hooks::run_all("startContainer", &h.start_container, &st, None).map_err(|e| {
            if e.stderr.is_empty() {
                e.to_string()
            } else {
                format!("{e}\n{}", e.stderr)
            }
        })
    };
    let mut created = |pid: i32| -> Result<()> {
        let st = state(&id, Status::Created, pid, &common);
        hooks::run_all("prestart", &h.prestart, &st, None)?;
        hooks::run_all("createRuntime", &h.create_runtime, &st, None)?;
        if !h.create_container.is_empty() {
            let pidfd = sys::pidfd_open(pid).context("the container's process")?;
            hooks::run_all("createContainer", &h.create_container, &st, Some(&pidfd))?;
        }
        sys::write_all(gate_w.as_raw_fd(), b"g").context("open the start gate")?;
        warn(
            "poststart",
            &h.poststart,
            &state(&id, Status::Running, pid, &common),
            quiet,
        );
        Ok(())
    };
    let res = super::supervisor::run_with(
        cfg,
        spec,
        t_start,
        Some(super::supervisor::Oci {
            unshare: 0,
            hostname: None,
            gate: gate_r,
            before_gate: &|| {},
            before_exec: &before_exec,
            created: &mut created,
        }),
    );
    warn(
        "poststop",
        &h.poststop,
        &state(&id, Status::Stopped, 0, &common),
        quiet,
    );
    res
}

/// A hook's stderr under the error line, if the error is a hook's.
pub fn print_hook_stderr(e: &anyhow::Error) {
    if let Some(h) = e.downcast_ref::<hooks::HookError>() {
        if !h.stderr.is_empty() {
            eprintln!("{}", h.stderr);
        }
    }
}

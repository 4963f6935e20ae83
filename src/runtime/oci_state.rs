//! The OCI runtime's per-container state, under the user's runtime directory:
//! `RUNDIR/oci/ID/` with `state.json` (written once, when the container is created),
//! `exec.fifo` (the gate the created container waits at), `started` (created by `start`)
//! and `exit` (the exit code, written by the process that waited for it). The status is
//! derived from these and from the container process itself, so a killed warren never
//! leaves a container that claims to be running.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The OCI runtime spec version warren's state reports.
pub const OCI_VERSION: &str = "1.0.2";

/// Check a container ID: 1 to 128 of `A-Z a-z 0-9 _ . -`, not starting with `.` or `-`.
pub fn check_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with(['.', '-'])
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !ok {
        bail!("container ID {id:?}: use 1 to 128 letters, digits, '_', '.', '-' (not first)");
    }
    Ok(())
}

/// What `state.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Saved {
    pub id: String,
    pub bundle: PathBuf,
    /// The container's first process (0 before it exists).
    pub pid: i32,
    /// Its start time (`/proc/PID/stat` field 22), to tell it from a reused PID.
    pub pid_start: u64,
    /// The process that waits for the container (the monitor of `create`, or `run`).
    pub monitor: i32,
    pub monitor_start: u64,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// The OCI `state` output.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub oci_version: String,
    pub id: String,
    pub status: Status,
    pub pid: i32,
    pub bundle: PathBuf,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Stopped,
}

/// The state directory of one container.
pub struct Dir {
    pub path: PathBuf,
}

impl Dir {
    /// `RUNDIR/oci/ID` (ID checked).
    pub fn of(rundir: &Path, id: &str) -> Result<Dir> {
        check_id(id)?;
        Ok(Dir {
            path: rundir.join("oci").join(id),
        })
    }

    /// Make it; fails when the ID is taken.
    pub fn create(&self) -> Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        let parent = self.path.parent().context("state dir")?;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(parent)
            .with_context(|| format!("create {}", parent.display()))?;
        match std::fs::DirBuilder::new().mode(0o700).create(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                // Left by a killed warren: stopped, and nothing waits for it any more.
                if self.is_abandoned() {
                    if let Ok(Some(s)) = self.saved() {
                        kill_leftovers(&s);
                    }
                    self.remove()?;
                    return self.create();
                }
                bail!("container {} already exists", self.id())
            }
            Err(e) => Err(e).with_context(|| format!("create {}", self.path.display())),
        }
    }

    /// Stopped, and its monitor (the process that waited for it) gone too.
    fn is_abandoned(&self) -> bool {
        match self.saved() {
            Ok(Some(s)) => {
                let gone = |pid: i32, start: u64| pid <= 0 || start_time(pid) != Some(start);
                gone(s.pid, s.pid_start) && gone(s.monitor, s.monitor_start)
            }
            _ => false,
        }
    }

    pub fn id(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    pub fn exists(&self) -> bool {
        self.path.is_dir()
    }

    pub fn fifo(&self) -> PathBuf {
        self.path.join("exec.fifo")
    }

    /// Write `state.json` atomically.
    pub fn save(&self, s: &Saved) -> Result<()> {
        let bytes = serde_json::to_vec(s)?;
        crate::util::atomic_write(&self.path.join("state.json"), &bytes, 0o600)
    }

    /// The saved state; `None` while the container is being created.
    pub fn saved(&self) -> Result<Option<Saved>> {
        let p = self.path.join("state.json");
        match std::fs::read(&p) {
            Ok(b) => Ok(Some(
                serde_json::from_slice(&b).with_context(|| format!("{}", p.display()))?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if self.exists() {
                    Ok(None)
                } else {
                    bail!("container {} does not exist", self.id())
                }
            }
            Err(e) => Err(e).with_context(|| format!("{}", p.display())),
        }
    }

    /// Mark started.
    pub fn mark_started(&self) -> Result<()> {
        crate::util::atomic_write(&self.path.join("started"), b"", 0o600)
    }

    /// Record the exit code (best effort: a deleted directory is fine).
    pub fn record_exit(&self, code: i32) {
        let _ =
            crate::util::atomic_write(&self.path.join("exit"), code.to_string().as_bytes(), 0o600);
    }

    /// The current OCI state. `bundle` is the one given at creation.
    pub fn state(&self) -> Result<State> {
        let saved = self.saved()?;
        let (status, pid, bundle, annotations) = match saved {
            None => (Status::Creating, 0, PathBuf::new(), BTreeMap::new()),
            Some(s) => {
                let alive = s.pid > 0 && start_time(s.pid) == Some(s.pid_start);
                let status = if !alive {
                    Status::Stopped
                } else if self.path.join("started").exists() {
                    Status::Running
                } else {
                    Status::Created
                };
                (status, s.pid, s.bundle, s.annotations)
            }
        };
        Ok(State {
            oci_version: OCI_VERSION.into(),
            id: self.id(),
            status,
            pid: if status == Status::Stopped { 0 } else { pid },
            bundle,
            annotations,
        })
    }

    /// Remove the directory and everything in it.
    pub fn remove(&self) -> Result<()> {
        match std::fs::remove_dir_all(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("remove {}", self.path.display())),
        }
    }
}

/// SIGKILL what is left of a container's process group (its first process led it;
/// background processes outlive a killed warren without a PID namespace). Only while
/// the first process's PID is not someone else's: while a group with that ID exists the
/// PID cannot be reused, so the group is still the container's.
pub fn kill_leftovers(s: &Saved) {
    // Ours: no such PID, a zombie (it cannot be reused while it is one; init may be
    // slow to reap it), or still the container's first process; not: a reused PID.
    let ours = match std::fs::read_to_string(format!("/proc/{}/stat", s.pid)) {
        Err(_) => true,
        Ok(stat) => match parse_stat(&stat) {
            None => true,
            Some(start) => start == s.pid_start,
        },
    };
    if s.pid > 1 && ours {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(-s.pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// A process's start time, `None` when it is gone or a zombie (it has exited).
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat)
}

/// Pure: field 22 of `/proc/PID/stat` unless the state (field 3) is Z or X.
fn parse_stat(stat: &str) -> Option<u64> {
    // The command (field 2) is in parentheses and may contain anything: split after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    if matches!(f.first(), Some(&"Z") | Some(&"X")) {
        return None;
    }
    f.get(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for good in ["a", "n1.warren-ci.12.0.0", "A_b-c.9"] {
            assert!(check_id(good).is_ok(), "{good}");
        }
        let long = "a".repeat(129);
        for bad in ["", ".", "-a", "a/b", "..", "a b", long.as_str(), "é"] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn stat_start_time_and_zombies() {
        let s = "42 (a) b) c) S 1 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 12345 0 0";
        assert_eq!(parse_stat(s), Some(12345));
        assert_eq!(parse_stat(&s.replace(") S ", ") Z ")), None);
        assert_eq!(parse_stat("garbage"), None);
        assert!(start_time(std::process::id() as i32).is_some());
    }
}

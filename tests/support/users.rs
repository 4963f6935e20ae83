//! The unprivileged test users made by scripts/setup-host.sh, and commands run as them.
//! setpriv execs the program (runuser would fork), so a child's PID is the program's own:
//! `kill -9` hits it.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::Command;

/// A user with a subuid/subgid range.
pub const TEST_USER: &str = "warren-ci";
/// A user without a range.
pub const NOSUB_USER: &str = "warren-nosub";

/// A user from NSS.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

impl User {
    /// `name` from NSS, if it exists.
    pub fn lookup(name: &str) -> Option<User> {
        let u = nix::unistd::User::from_name(name).ok()??;
        Some(User {
            name: u.name,
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
            home: u.dir,
        })
    }

    /// `prog` as this user (setpriv: real and effective IDs, no supplementary groups),
    /// with HOME, USER and LOGNAME set as a login would; the rest of the environment kept.
    pub fn command(&self, prog: impl AsRef<OsStr>) -> Command {
        self.command_gid(self.gid, prog)
    }

    /// As [`User::command`] with another GID.
    pub fn command_gid(&self, gid: u32, prog: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={gid}"))
            .arg("--clear-groups")
            .arg("--")
            .arg(prog)
            .env("HOME", &self.home)
            .env("USER", &self.name)
            .env("LOGNAME", &self.name);
        c
    }
}

/// User `name` (made by scripts/setup-host.sh), or why not; needs root and setpriv to
/// act as it.
pub fn need_user(name: &str) -> Result<User, String> {
    super::need_root("tests run the binary as an unprivileged user")?;
    super::need_programs(&["setpriv"])?;
    User::lookup(name).ok_or_else(|| format!("user {name} missing (scripts/setup-host.sh)"))
}

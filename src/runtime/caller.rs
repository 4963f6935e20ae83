//! The caller: whose container this is. Passed explicitly into spec building and
//! everything below it; the library never reads it from the process (`getuid()`, `HOME`,
//! `XDG_RUNTIME_DIR`, `std::env`), because inside slurmstepd the process is root while
//! the container belongs to the job's user. Front ends build it: the CLI from its own
//! process (`cli::caller`), the Slurm plugin and OCI runtime front ends from explicit
//! values with [`Caller::lookup`].

use std::path::PathBuf;

/// The user a container runs for, as the runtime needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    /// Current GID (newgidmap compares it with `passwd_gid`).
    pub gid: u32,
    /// passwd name (or the decimal UID when there is no entry).
    pub name: String,
    /// passwd GID, when there is an entry.
    pub passwd_gid: Option<u32>,
    pub home: PathBuf,
    pub gecos: String,
    pub shell: String,
    /// The caller's environment (source of `-e K` and of the host allowlist).
    pub env: Vec<(String, String)>,
    /// warren's runtime directory for this caller (see `state::runtime_dir`).
    pub runtime_dir: PathBuf,
}

/// The passwd facts of one UID (`None` fields when there is no entry).
#[derive(Debug, Clone, Default)]
pub struct PasswdFacts {
    pub name: Option<String>,
    pub gid: Option<u32>,
    pub home: Option<PathBuf>,
    pub gecos: Option<String>,
    pub shell: Option<String>,
}

/// NSS lookup by UID (no environment involved).
pub fn passwd_facts(uid: u32) -> PasswdFacts {
    match nix::unistd::User::from_uid(uid.into()).ok().flatten() {
        Some(p) => PasswdFacts {
            name: Some(p.name),
            gid: Some(p.gid.as_raw()),
            home: Some(p.dir),
            gecos: Some(p.gecos.to_string_lossy().into_owned()),
            shell: Some(p.shell.to_string_lossy().into_owned()),
        },
        None => PasswdFacts::default(),
    }
}

impl Caller {
    /// From explicit values (Slurm plugin, OCI runtime): the passwd entry of `uid` gives
    /// name, home, gecos and shell; nothing is read from the process.
    pub fn lookup(uid: u32, gid: u32, env: Vec<(String, String)>, runtime_dir: PathBuf) -> Caller {
        Caller::from_facts(uid, gid, passwd_facts(uid), None, env, runtime_dir)
    }

    /// Assemble from passwd facts; `home` overrides the passwd home (the CLI's `$HOME`).
    pub fn from_facts(
        uid: u32,
        gid: u32,
        pw: PasswdFacts,
        home: Option<PathBuf>,
        env: Vec<(String, String)>,
        runtime_dir: PathBuf,
    ) -> Caller {
        Caller {
            uid,
            gid,
            name: pw.name.unwrap_or_else(|| uid.to_string()),
            passwd_gid: pw.gid,
            home: home.or(pw.home).unwrap_or_else(|| PathBuf::from("/")),
            gecos: pw.gecos.unwrap_or_default(),
            shell: pw.shell.unwrap_or_else(|| "/bin/sh".into()),
            env,
            runtime_dir,
        }
    }

    /// A variable of the caller's environment.
    pub fn env_var(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_and_fallbacks() {
        let c = Caller::from_facts(
            4242,
            7,
            PasswdFacts::default(),
            None,
            vec![("A".into(), "1".into())],
            "/rt".into(),
        );
        assert_eq!(c.name, "4242");
        assert_eq!(c.home, PathBuf::from("/"));
        assert_eq!(c.shell, "/bin/sh");
        assert_eq!(c.passwd_gid, None);
        assert_eq!(c.env_var("A"), Some("1"));
        assert_eq!(c.env_var("B"), None);
        let pw = PasswdFacts {
            name: Some("alice".into()),
            gid: Some(100),
            home: Some("/home/alice".into()),
            gecos: Some("Alice".into()),
            shell: Some("/bin/bash".into()),
        };
        let c = Caller::from_facts(1001, 100, pw.clone(), None, vec![], "/rt".into());
        assert_eq!(
            (c.name.as_str(), c.home.to_str()),
            ("alice", Some("/home/alice"))
        );
        let c = Caller::from_facts(1001, 100, pw, Some("/h".into()), vec![], "/rt".into());
        assert_eq!(c.home, PathBuf::from("/h"));
    }

    #[test]
    fn lookup_root_by_uid() {
        // root has a passwd entry on every system the tests run on.
        let c = Caller::lookup(0, 0, vec![], "/rt".into());
        assert_eq!(c.name, "root");
        assert_eq!(c.passwd_gid, Some(0));
    }
}

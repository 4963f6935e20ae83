//! Accounts and groups: from NSS (`getpwent`/`getgrent`, so LDAP and SSSD users count,
//! like `getent passwd`) or from passwd/group files (tests, `--root`).

use anyhow::{Context, Result};
use std::ffi::CStr;
use std::path::Path;

/// One user account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Login name.
    pub name: String,
    /// UID.
    pub uid: u32,
}

/// Users and the group IDs in use.
#[derive(Debug, Clone, Default)]
pub struct UserDb {
    /// Accounts in enumeration order; the first of duplicate names wins.
    pub users: Vec<Account>,
    /// GIDs of all groups, plus every user's primary GID.
    pub gids: Vec<u32>,
}

impl UserDb {
    /// Index by name (first wins) for lookups.
    pub fn by_name(&self) -> std::collections::HashMap<&str, &Account> {
        let mut m = std::collections::HashMap::with_capacity(self.users.len());
        for a in &self.users {
            m.entry(a.name.as_str()).or_insert(a);
        }
        m
    }
}

/// Enumerate users and groups through NSS. Not thread-safe (getpwent has one global
/// cursor); call it from the main thread only.
pub fn from_nss() -> Result<UserDb> {
    let mut db = UserDb::default();
    let mut seen = std::collections::HashSet::new();
    // SAFETY: setpwent/getpwent/endpwent are used from one thread; each returned record is
    // copied out before the next call overwrites it.
    unsafe {
        libc::setpwent();
        loop {
            let p = libc::getpwent();
            if p.is_null() {
                break;
            }
            let name = CStr::from_ptr((*p).pw_name).to_string_lossy().into_owned();
            let (uid, gid) = ((*p).pw_uid, (*p).pw_gid);
            db.gids.push(gid);
            if seen.insert(name.clone()) {
                db.users.push(Account { name, uid });
            }
        }
        libc::endpwent();
    }
    // SAFETY: as above, for the group database.
    unsafe {
        libc::setgrent();
        loop {
            let g = libc::getgrent();
            if g.is_null() {
                break;
            }
            db.gids.push((*g).gr_gid);
        }
        libc::endgrent();
    }
    Ok(db)
}

/// Read passwd-format and (optionally) group-format files.
pub fn from_files(passwd: &Path, group: Option<&Path>) -> Result<UserDb> {
    // Bytes, not text: a Latin-1 GECOS field is common and must not fail the file.
    let text = std::fs::read(passwd).with_context(|| format!("read {}", passwd.display()))?;
    let mut db = parse_passwd(&String::from_utf8_lossy(&text))
        .with_context(|| format!("{}", passwd.display()))?;
    if let Some(g) = group {
        match std::fs::read(g) {
            Ok(t) => db.gids.extend(
                parse_group(&String::from_utf8_lossy(&t))
                    .with_context(|| format!("{}", g.display()))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("read {}", g.display())),
        }
    }
    Ok(db)
}

/// Parse passwd(5) text. NIS `+`/`-` lines and comments are skipped; a malformed line is
/// an error naming its line number.
pub fn parse_passwd(text: &str) -> Result<UserDb> {
    let mut db = UserDb::default();
    let mut seen = std::collections::HashSet::new();
    for (i, raw) in text.lines().enumerate() {
        if raw.is_empty() || raw.starts_with('#') || raw.starts_with('+') || raw.starts_with('-') {
            continue;
        }
        let mut f = raw.split(':');
        let (Some(name), Some(_pw), Some(uid), Some(gid)) =
            (f.next(), f.next(), f.next(), f.next())
        else {
            anyhow::bail!("line {}: expected NAME:PW:UID:GID:…", i + 1);
        };
        let uid: u32 = uid
            .parse()
            .with_context(|| format!("line {}: UID {uid:?}", i + 1))?;
        let gid: u32 = gid
            .parse()
            .with_context(|| format!("line {}: GID {gid:?}", i + 1))?;
        db.gids.push(gid);
        if seen.insert(name) {
            db.users.push(Account {
                name: name.to_string(),
                uid,
            });
        }
    }
    Ok(db)
}

/// Parse group(5) text into the GIDs it defines.
pub fn parse_group(text: &str) -> Result<Vec<u32>> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        if raw.is_empty() || raw.starts_with('#') || raw.starts_with('+') || raw.starts_with('-') {
            continue;
        }
        let gid = raw
            .split(':')
            .nth(2)
            .with_context(|| format!("line {}: expected NAME:PW:GID:…", i + 1))?;
        out.push(
            gid.parse()
                .with_context(|| format!("line {}: GID {gid:?}", i + 1))?,
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_passwd_and_group() {
        let db = parse_passwd("root:x:0:0::/root:/bin/sh\n+nis\nalice:x:1000:1000::/h:/bin/sh\nalice:x:1005:1000::/h:/bin/sh\n").unwrap();
        assert_eq!(db.users.len(), 2);
        assert_eq!(
            db.users[1],
            Account {
                name: "alice".into(),
                uid: 1000
            }
        );
        assert!(parse_passwd("bad:x:notanumber:0::/:/\n").is_err());
        assert_eq!(parse_group("g:x:50:\nh:x:60:a,b\n").unwrap(), vec![50, 60]);
    }

    #[test]
    fn latin1_gecos_does_not_fail_the_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("passwd");
        std::fs::write(&p, b"jo:x:1000:1000:J\xe9r\xf4me:/h:/bin/sh\n").unwrap();
        let db = from_files(&p, None).unwrap();
        assert_eq!(db.users[0].uid, 1000);
    }

    use proptest::prelude::*;

    fn account() -> impl Strategy<Value = (String, u32, u32, String)> {
        (
            "[a-z_][a-z0-9_.-]{0,15}",
            any::<u32>(),
            any::<u32>(),
            "[^:\n]{0,20}",
        )
    }

    proptest! {
        #[test]
        fn passwd_round_trips(v in proptest::collection::vec(account(), 0..20)) {
            let text: String = v
                .iter()
                .map(|(n, u, g, gecos)| format!("{n}:x:{u}:{g}:{gecos}:/home/{n}:/bin/sh\n"))
                .collect();
            let db = parse_passwd(&text).unwrap();
            let mut seen = std::collections::HashSet::new();
            let want: Vec<Account> = v
                .iter()
                .filter(|a| seen.insert(a.0.clone()))
                .map(|(n, u, _, _)| Account { name: n.clone(), uid: *u })
                .collect();
            prop_assert_eq!(db.users, want);
            prop_assert_eq!(db.gids, v.iter().map(|a| a.2).collect::<Vec<_>>());
        }

        #[test]
        fn group_round_trips(v in proptest::collection::vec(
            ("[a-z_][a-z0-9_-]{0,15}", any::<u32>(), proptest::collection::vec("[a-z]{1,8}", 0..4)),
            0..20,
        )) {
            let text: String = v
                .iter()
                .map(|(n, g, m)| format!("{n}:x:{g}:{}\n", m.join(",")))
                .collect();
            prop_assert_eq!(parse_group(&text).unwrap(), v.iter().map(|a| a.1).collect::<Vec<_>>());
        }

        #[test]
        fn arbitrary_text_never_panics(t in "(?s).{0,400}", colons in "[0-9:a-z\n#+-]{0,200}") {
            for x in [&t, &colons] {
                if let Ok(db) = parse_passwd(x) {
                    prop_assert!(db.users.len() <= x.lines().count());
                }
                if let Ok(g) = parse_group(x) {
                    prop_assert!(g.len() <= x.lines().count());
                }
            }
        }
    }

    #[test]
    fn nss_lists_root() {
        let db = from_nss().unwrap();
        assert!(db.users.iter().any(|a| a.uid == 0));
    }
}

//! Writing a user namespace's maps: the setuid helpers `newuidmap`/`newgidmap` for a
//! subordinate range, or the process's own single-ID map, plus the check for the
//! "current GID differs from passwd GID" case in which newgidmap refuses to work.

use super::caller::Caller;
use super::idmap::{self, IdMap, Identity};
use crate::config::RunConfig;
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::{Command, Stdio};

/// How the maps get written, and what the user is told about it.
#[derive(Debug, Clone)]
pub struct MapPlan {
    pub map: IdMap,
    /// One line for the user when the map is degraded (single ID), else None.
    pub notice: Option<String>,
    /// Malformed lines of the subid files, as `FILE:LINE: reason` (they are skipped).
    pub problems: Vec<String>,
}

/// Read the subid files and choose the map for `user`.
pub fn plan(user: &Caller, identity: Identity) -> Result<MapPlan> {
    plan_from(
        user,
        identity,
        Path::new("/etc/subuid"),
        Path::new("/etc/subgid"),
    )
}

/// As [`plan`], with the files named (tests).
pub fn plan_from(
    user: &Caller,
    identity: Identity,
    subuid: &Path,
    subgid: &Path,
) -> Result<MapPlan> {
    let su = crate::subid::read(subuid)?;
    let sg = crate::subid::read(subgid)?;
    let ur: Vec<(u64, u64)> = su
        .ranges_for(&user.name, user.uid)
        .iter()
        .map(|e| (e.start, e.count))
        .collect();
    let gr: Vec<(u64, u64)> = sg
        .ranges_for(&user.name, user.uid)
        .iter()
        .map(|e| (e.start, e.count))
        .collect();
    let mut notice = None;
    let (ur, gr) = if ur.is_empty() || gr.is_empty() {
        notice = Some(format!(
            "no subordinate ID range for {} in {} and {}: only your own ID is mapped; files of other owners show as nobody and chown to them fails (ask your admin for a range, or set run.fake_chown)",
            user.name,
            subuid.display(),
            subgid.display()
        ));
        (vec![], vec![])
    } else if let Some(pg) = user.passwd_gid.filter(|&pg| pg != user.gid) {
        // newgidmap (shadow-utils) refuses a target whose GID is not the passwd GID.
        notice = Some(format!(
            "your current GID {} differs from your passwd GID {pg} (newgrp, sg or a batch system changed it), and newgidmap refuses that: falling back to mapping only your own IDs; run warren from a shell with GID {pg} for the full range",
            user.gid
        ));
        (vec![], vec![])
    } else {
        (ur, gr)
    };
    Ok(MapPlan {
        map: idmap::choose(identity, user.uid, user.gid, &ur, &gr),
        notice,
        problems: su
            .problems
            .iter()
            .map(|p| (subuid, p))
            .chain(sg.problems.iter().map(|p| (subgid, p)))
            .map(|(f, p)| format!("{}:{}: {} (line ignored)", f.display(), p.line, p.reason))
            .collect(),
    })
}

/// Run newuidmap and newgidmap on `pid` (both at once; they are independent).
pub fn write_with_helpers(cfg: &RunConfig, pid: i32, map: &IdMap) -> Result<()> {
    let spawn = |prog: &str, ext: &[idmap::Extent]| -> Result<std::process::Child> {
        let path = crate::util::which(prog)
            .with_context(|| format!("{prog} not found (install the uidmap package)"))?;
        Command::new(&path)
            .arg(pid.to_string())
            .args(IdMap::helper_args(ext))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("run {}", path.display()))
    };
    let u = spawn(&cfg.newuidmap, &map.uid)?;
    let g = spawn(&cfg.newgidmap, &map.gid)?;
    for (name, child) in [(&cfg.newuidmap, u), (&cfg.newgidmap, g)] {
        let out = child
            .wait_with_output()
            .with_context(|| format!("wait for {name}"))?;
        if !out.status.success() {
            let msg = String::from_utf8_lossy(&out.stderr)
                .trim()
                .replace('\n', " ");
            bail!("{name} failed ({}): {msg}", out.status);
        }
    }
    Ok(())
}

/// In the new namespace itself: deny setgroups and write a single-ID map.
pub fn write_self(map: &IdMap) -> std::io::Result<()> {
    std::fs::write("/proc/self/setgroups", "deny")?;
    std::fs::write("/proc/self/uid_map", IdMap::map_text(&map.uid))?;
    std::fs::write("/proc/self/gid_map", IdMap::map_text(&map.gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(gid: u32) -> Caller {
        Caller {
            uid: 1001,
            gid,
            name: "alice".into(),
            passwd_gid: Some(1001),
            home: "/home/alice".into(),
            gecos: String::new(),
            shell: "/bin/sh".into(),
            env: vec![],
            runtime_dir: "/r".into(),
        }
    }

    #[test]
    fn range_and_fallbacks() {
        let d = tempfile::tempdir().unwrap();
        let su = d.path().join("subuid");
        let sg = d.path().join("subgid");
        std::fs::write(&su, "alice:100000:65536\nbad line\n").unwrap();
        std::fs::write(&sg, "1001:100000:65536\n").unwrap();
        let p = plan_from(&user(1001), Identity::KeepId, &su, &sg).unwrap();
        assert!(!p.map.single && p.notice.is_none());
        assert_eq!(p.problems.len(), 1);
        assert!(p.problems[0].contains("subuid:2:"), "{:?}", p.problems);
        let p = plan_from(&user(2000), Identity::KeepId, &su, &sg).unwrap();
        assert!(p.map.single);
        assert!(p.notice.unwrap().contains("passwd GID 1001"));
        std::fs::write(&sg, "bob:100000:65536\n").unwrap();
        let p = plan_from(&user(1001), Identity::KeepId, &su, &sg).unwrap();
        assert!(p.map.single && p.notice.unwrap().contains("no subordinate ID range"));
    }
}

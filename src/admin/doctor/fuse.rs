//! FUSE checks: the device usable by the user, squashfuse and fuse-overlayfs installed.

use super::{can_open_rw, version_line, Check, Options, Target};
use crate::config::Config;
use anyhow::Result;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::PathBuf;

/// A helper program and its version banner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tool {
    /// Check id.
    pub id: &'static str,
    /// As configured.
    pub configured: String,
    /// Resolved path and version line, if found.
    pub found: Option<(PathBuf, Option<String>)>,
}

/// What was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// The device path checked.
    pub dev: PathBuf,
    /// Exists and is a character device; its mode.
    pub char_dev: Option<u32>,
    /// The user could open it read-write.
    pub usable: bool,
    /// squashfuse then fuse-overlayfs.
    pub tools: Vec<Tool>,
}

/// Read the facts; the device is opened as the target user.
pub fn gather(cfg: &Config, opts: &Options, t: &Target) -> Result<Facts> {
    let dev = opts.fuse_dev.clone();
    let char_dev = std::fs::metadata(&dev)
        .ok()
        .filter(|m| m.file_type().is_char_device())
        .map(|m| m.mode() & 0o7777);
    let usable = char_dev.is_some() && can_open_rw(t, &dev)?;
    let tools = [
        ("squashfuse", &cfg.run.squashfuse, "squashfuse"),
        ("fuse_overlayfs", &cfg.run.fuse_overlayfs, "fuse-overlayfs"),
    ]
    .into_iter()
    .map(|(id, configured, hint)| Tool {
        id,
        configured: configured.clone(),
        found: crate::util::which(configured).map(|p| {
            let v = std::process::Command::new(&p)
                .arg("--version")
                .stdin(std::process::Stdio::null())
                .output()
                .ok()
                .and_then(|o| {
                    let text = format!(
                        "{}{}",
                        String::from_utf8_lossy(&o.stdout),
                        String::from_utf8_lossy(&o.stderr)
                    );
                    version_line(&text, hint)
                });
            (p, v)
        }),
    })
    .collect();
    Ok(Facts {
        dev,
        char_dev,
        usable,
        tools,
    })
}

/// Judge the facts.
pub fn judge(f: &Facts) -> Vec<Check> {
    let d = f.dev.display();
    let mut out = vec![match (f.char_dev, f.usable) {
        (None, _) => Check::fail("fuse_device", format!("{d} is missing or not a character device"),
            format!("as root: modprobe fuse; [ -c {d} ] || mknod -m 0666 {d} c 10 229")),
        (Some(m), false) => Check::fail("fuse_device", format!("{d} (mode {m:04o}) cannot be opened read-write by the user: squashfuse cannot mount images"),
            format!("as root: chmod 0666 {d}   (persistent: a udev rule KERNEL==\"fuse\", MODE=\"0666\"; 0666 is the distribution default)")),
        (Some(m), true) => Check::ok("fuse_device", format!("{d} (mode {m:04o}) opens read-write")),
    }];
    for t in &f.tools {
        out.push(match (&t.found, t.id) {
            (Some((p, v)), _) => Check::ok(t.id, format!("{} ({})", p.display(), v.as_deref().unwrap_or("version unknown"))),
            (None, "squashfuse") => Check::fail(t.id, format!("{} not found: images cannot be mounted", t.configured),
                "as root: apt install squashfuse (Debian/Ubuntu) or dnf install squashfuse (RHEL/EPEL); or set run.squashfuse"),
            (None, _) => Check::warn(t.id, format!("{} not found: needed when native overlay is unavailable", t.configured),
                "as root: apt install fuse-overlayfs (or dnf install fuse-overlayfs); or set run.fuse_overlayfs"),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::doctor::Status;

    #[test]
    fn judge_device_and_tools() {
        let mut f = Facts {
            dev: "/dev/fuse".into(),
            char_dev: Some(0o600),
            usable: false,
            tools: vec![
                Tool {
                    id: "squashfuse",
                    configured: "squashfuse_ll".into(),
                    found: None,
                },
                Tool {
                    id: "fuse_overlayfs",
                    configured: "fuse-overlayfs".into(),
                    found: None,
                },
            ],
        };
        let v = judge(&f);
        assert_eq!(v[0].status, Status::Fail);
        assert!(v[0]
            .fix
            .as_deref()
            .unwrap()
            .starts_with("as root: chmod 0666 /dev/fuse"));
        assert_eq!((v[1].status, v[2].status), (Status::Fail, Status::Warn));
        f.usable = true;
        f.char_dev = None;
        assert!(judge(&f)[0].detail.contains("missing"));
    }
}

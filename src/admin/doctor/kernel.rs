//! Kernel checks: version, the native-overlay probe, and the sysctls that gate
//! unprivileged user namespaces (upstream, Debian, Ubuntu/AppArmor).

use super::{apparmor, Check, Options};
use crate::config::Config;
use crate::runtime::probe::{self, OverlayProbe};
use std::path::{Path, PathBuf};

/// What was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// `uname -r`.
    pub release: String,
    /// Result of `runtime::probe::native_overlay` (`Err` = could not probe).
    pub overlay: Result<OverlayProbe, String>,
    /// `user.max_user_namespaces`.
    pub max_user_namespaces: Option<u64>,
    /// Debian's `kernel.unprivileged_userns_clone` (absent on other kernels).
    pub unprivileged_userns_clone: Option<u64>,
    /// Ubuntu's `kernel.apparmor_restrict_unprivileged_userns` (absent elsewhere).
    pub apparmor_restrict: Option<u64>,
    /// Whether a loaded AppArmor profile named `warren` exists.
    pub apparmor_profile_loaded: bool,
    /// The warren binary (for the AppArmor profile).
    pub binary: PathBuf,
}

fn sysctl(root: &Path, name: &str) -> Option<u64> {
    std::fs::read_to_string(root.join(name.replace('.', "/")))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// Read the facts (runs the overlay probe).
pub fn gather(cfg: &Config, opts: &Options) -> Facts {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let profiles =
        std::fs::read_to_string("/sys/kernel/security/apparmor/profiles").unwrap_or_default();
    Facts {
        release,
        overlay: probe::native_overlay(cfg).map_err(|e| format!("{e:#}")),
        max_user_namespaces: sysctl(&opts.proc_sys, "user.max_user_namespaces"),
        unprivileged_userns_clone: sysctl(&opts.proc_sys, "kernel.unprivileged_userns_clone"),
        apparmor_restrict: sysctl(
            &opts.proc_sys,
            "kernel.apparmor_restrict_unprivileged_userns",
        ),
        apparmor_profile_loaded: profiles.lines().any(|l| l.starts_with("warren ")),
        binary: std::env::current_exe().unwrap_or_else(|_| "/usr/bin/warren".into()),
    }
}

/// `6.18.44-fc` → (6, 18).
pub fn major_minor(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// Judge the facts.
pub fn judge(f: &Facts) -> Vec<Check> {
    let mut out = Vec::new();
    out.push(match major_minor(&f.release) {
        None => Check::warn("kernel", format!("cannot parse kernel release {:?}", f.release), "none needed if the probes below pass"),
        Some(v) if v < (3, 8) => Check::fail("kernel", format!("kernel {} has no unprivileged user namespaces", f.release), "upgrade the kernel (5.11 or later recommended)"),
        Some(v) if v < (5, 11) => Check::warn("kernel", format!("kernel {}: overlayfs in a user namespace needs 5.11; fuse-overlayfs will be used (~120 ms more per start)", f.release), "upgrade to kernel 5.11 or later for native overlay"),
        Some(_) => Check::ok("kernel", format!("kernel {}", f.release)),
    });
    out.push(match &f.overlay {
        Ok(OverlayProbe::Native) => Check::ok("overlay", "kernel overlayfs with userxattr works over a FUSE image mount in a user namespace"),
        Ok(OverlayProbe::Unsupported(why)) => Check::warn("overlay", format!("native overlay unavailable ({why}); fuse-overlayfs will be used (~120 ms more per start)"), "use kernel 5.11+ with overlayfs userxattr support, or keep fuse-overlayfs installed"),
        Err(e) => Check::warn("overlay", format!("could not probe: {e}"), "run `warren doctor` again as the user; fuse-overlayfs is used when the probe fails"),
    });
    out.push(match f.max_user_namespaces {
        Some(0) => Check::fail("max_user_namespaces", "user.max_user_namespaces = 0: user namespaces are disabled", "as root: sysctl -w user.max_user_namespaces=15000; persist: echo user.max_user_namespaces=15000 > /etc/sysctl.d/90-warren.conf"),
        Some(n) if n < 100 => Check::warn("max_user_namespaces", format!("user.max_user_namespaces = {n}: few containers per node"), "as root: sysctl -w user.max_user_namespaces=15000; persist in /etc/sysctl.d/90-warren.conf"),
        Some(n) => Check::ok("max_user_namespaces", format!("user.max_user_namespaces = {n}")),
        None => Check::warn("max_user_namespaces", "user.max_user_namespaces not readable (kernel without user namespaces?)", "use a kernel built with CONFIG_USER_NS=y"),
    });
    out.push(match f.unprivileged_userns_clone {
        Some(0) => Check::fail("unprivileged_userns_clone", "kernel.unprivileged_userns_clone = 0: Debian's switch forbids unprivileged user namespaces", "as root: sysctl -w kernel.unprivileged_userns_clone=1; persist: echo kernel.unprivileged_userns_clone=1 > /etc/sysctl.d/90-warren.conf"),
        Some(n) => Check::ok("unprivileged_userns_clone", format!("kernel.unprivileged_userns_clone = {n}")),
        None => Check::ok("unprivileged_userns_clone", "kernel.unprivileged_userns_clone absent (not a Debian-patched restriction)"),
    });
    out.push(match (f.apparmor_restrict, f.apparmor_profile_loaded) {
        (Some(1), true) => Check::ok("apparmor_userns", "kernel.apparmor_restrict_unprivileged_userns = 1, and a warren AppArmor profile is loaded"),
        (Some(1), false) => Check::fail("apparmor_userns", format!("kernel.apparmor_restrict_unprivileged_userns = 1 and no AppArmor profile allows userns for {}", f.binary.display()), apparmor::fix(&f.binary)),
        (Some(n), _) => Check::ok("apparmor_userns", format!("kernel.apparmor_restrict_unprivileged_userns = {n}")),
        (None, _) => Check::ok("apparmor_userns", "kernel.apparmor_restrict_unprivileged_userns absent (no Ubuntu AppArmor restriction)"),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::doctor::Status;

    fn good() -> Facts {
        Facts {
            release: "6.18.44-fc".into(),
            overlay: Ok(OverlayProbe::Native),
            max_user_namespaces: Some(96364),
            unprivileged_userns_clone: None,
            apparmor_restrict: None,
            apparmor_profile_loaded: false,
            binary: "/usr/bin/warren".into(),
        }
    }

    fn status(v: &[Check], id: &str) -> Status {
        v.iter().find(|c| c.id == id).unwrap().status
    }

    #[test]
    fn healthy() {
        assert!(judge(&good()).iter().all(|c| c.status == Status::Ok));
    }

    #[test]
    fn crippled_kernels() {
        let mut f = good();
        f.release = "5.4.0-150-generic".into();
        f.overlay = Err("overlay probe: not implemented yet".into());
        f.max_user_namespaces = Some(0);
        f.unprivileged_userns_clone = Some(0);
        f.apparmor_restrict = Some(1);
        let v = judge(&f);
        assert_eq!(status(&v, "kernel"), Status::Warn);
        let o = v.iter().find(|c| c.id == "overlay").unwrap();
        assert_eq!(o.status, Status::Warn);
        assert!(o.detail.starts_with("could not probe: "));
        assert_eq!(status(&v, "max_user_namespaces"), Status::Fail);
        assert_eq!(status(&v, "unprivileged_userns_clone"), Status::Fail);
        let a = v.iter().find(|c| c.id == "apparmor_userns").unwrap();
        assert_eq!(a.status, Status::Fail);
        assert!(a
            .fix
            .as_deref()
            .unwrap()
            .contains("profile warren /usr/bin/warren"));
        f.apparmor_profile_loaded = true;
        assert_eq!(status(&judge(&f), "apparmor_userns"), Status::Ok);
        assert_eq!(major_minor("6.1.0-13-amd64"), Some((6, 1)));
    }
}

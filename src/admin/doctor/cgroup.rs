//! cgroup layout: unified (v2 only), hybrid (v1 controllers + v2 at `unified/`), or v1.

use super::Check;

/// The layout found under `/sys/fs/cgroup`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// cgroup2 mounted at /sys/fs/cgroup.
    Unified,
    /// v1 controllers plus cgroup2 at /sys/fs/cgroup/unified.
    Hybrid,
    /// v1 only.
    Legacy,
    /// Nothing mounted.
    None,
}

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
const TMPFS_MAGIC: i64 = 0x0102_1994;

// f_type's width differs between libcs and architectures; the cast is not always a no-op.
#[allow(clippy::unnecessary_cast)]
fn fs_type(p: &str) -> Option<i64> {
    nix::sys::statfs::statfs(p)
        .ok()
        .map(|s| s.filesystem_type().0 as i64)
}

/// Detect the layout.
pub fn gather() -> Layout {
    match fs_type("/sys/fs/cgroup") {
        Some(CGROUP2_SUPER_MAGIC) => Layout::Unified,
        Some(TMPFS_MAGIC) if fs_type("/sys/fs/cgroup/unified") == Some(CGROUP2_SUPER_MAGIC) => {
            Layout::Hybrid
        }
        Some(TMPFS_MAGIC) => Layout::Legacy,
        _ => Layout::None,
    }
}

/// Judge the layout.
pub fn judge(l: &Layout) -> Vec<Check> {
    let fix = "boot with systemd.unified_cgroup_hierarchy=1 (kernel command line) for a pure cgroup v2 hierarchy";
    vec![match l {
        Layout::Unified => Check::ok("cgroup", "cgroup v2 (unified hierarchy)"),
        Layout::Hybrid => Check::warn("cgroup", "hybrid cgroups (v1 controllers, v2 at /sys/fs/cgroup/unified): per-container resource limits are unavailable; Slurm's own limits still apply", fix),
        Layout::Legacy => Check::warn("cgroup", "cgroup v1 only: per-container resource limits are unavailable; Slurm's own limits still apply", fix),
        Layout::None => Check::warn("cgroup", "no cgroup file system mounted at /sys/fs/cgroup", "mount cgroup2 at /sys/fs/cgroup"),
    }]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::doctor::Status;

    #[test]
    fn hybrid_is_warn() {
        assert_eq!(judge(&Layout::Hybrid)[0].status, Status::Warn);
        assert_eq!(judge(&Layout::Unified)[0].status, Status::Ok);
        assert_ne!(gather(), Layout::None, "this machine has cgroups");
    }
}

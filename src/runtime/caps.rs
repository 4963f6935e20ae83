//! Capabilities of the container's process inside its user namespace: none for a
//! non-root user; Podman's default set for root; all (ambient) for `warren unshare`.

use std::io;

const CAP_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct Header {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Data {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Podman's default capabilities for root in a container (bit numbers).
pub const DEFAULT_ROOT: [u32; 11] = [
    0,  // CHOWN
    1,  // DAC_OVERRIDE
    3,  // FOWNER
    4,  // FSETID
    5,  // KILL
    6,  // SETGID
    7,  // SETUID
    8,  // SETPCAP
    10, // NET_BIND_SERVICE
    18, // SYS_CHROOT
    31, // SETFCAP
];

/// Capability names by bit number (linux/capability.h, up to CAP_CHECKPOINT_RESTORE).
pub const NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The bit number of a capability name (`CAP_CHOWN` → 0).
pub fn number(name: &str) -> Option<u32> {
    NAMES.iter().position(|n| *n == name).map(|i| i as u32)
}

/// Capability sets asked for by the caller (an OCI config), as bit masks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sets {
    pub bounding: u64,
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub ambient: u64,
}

/// The bit numbers of a mask.
pub fn bits(mask: u64) -> Vec<u32> {
    (0..64).filter(|c| mask & (1 << c) != 0).collect()
}

/// Keep the permitted set across a change to a non-zero UID (cleared by the next exec).
pub fn keep_caps() -> io::Result<()> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Set effective, permitted and inheritable to `s` and raise its ambient set (the
/// bounding set was limited by [`drop_bounding`] before). Bits above `last` are ignored.
pub fn apply(s: &Sets, last: u32) -> io::Result<()> {
    let known = if last >= 63 {
        u64::MAX
    } else {
        (1u64 << (last + 1)) - 1
    };
    set(
        s.effective & known,
        s.permitted & known,
        s.inheritable & known,
    )?;
    for c in bits(s.ambient & known) {
        raise_ambient(c)?;
    }
    Ok(())
}

/// Raise capability `c` in the ambient set (it must be permitted and inheritable).
fn raise_ambient(c: u32) -> io::Result<()> {
    // SAFETY: prctl with integer arguments.
    if unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
            c as libc::c_ulong,
            0,
            0,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Highest capability the kernel knows (read before pivot_root; host /proc).
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

fn set(eff: u64, perm: u64, inh: u64) -> io::Result<()> {
    let mut h = Header {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let d = [
        Data {
            effective: eff as u32,
            permitted: perm as u32,
            inheritable: inh as u32,
        },
        Data {
            effective: (eff >> 32) as u32,
            permitted: (perm >> 32) as u32,
            inheritable: (inh >> 32) as u32,
        },
    ];
    // SAFETY: header and two data structs as capset(2) v3 expects.
    if unsafe { libc::syscall(libc::SYS_capset, &mut h as *mut Header, d.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Limit the bounding set to `keep` (bit numbers), clear ambient, and set
/// effective/permitted to `keep` (or to nothing when `drop_all`).
pub fn restrict(keep: &[u32], last: u32, drop_all: bool) -> io::Result<()> {
    let mask = drop_bounding(keep, last)?;
    if drop_all {
        set(0, 0, 0)
    } else {
        set(mask, mask, 0)
    }
}

/// Limit the bounding set to `keep` and clear the ambient set (needs CAP_SETPCAP: before
/// a change to a non-zero UID, which empties the other sets); returns `keep` as a mask.
pub fn drop_bounding(keep: &[u32], last: u32) -> io::Result<u64> {
    let mut mask = 0u64;
    for c in 0..=last {
        if keep.contains(&c) {
            mask |= 1 << c;
            continue;
        }
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, c as libc::c_ulong, 0, 0, 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    Ok(mask)
}

/// Drop every capability of this process (effective, permitted, inheritable). Before
/// exec of an execute-only file it makes the kernel mark the new program non-dumpable
/// (with a capability the file would count as readable). No allocation: fork-safe.
pub fn clear() -> io::Result<()> {
    set(0, 0, 0)
}

/// Make every capability ambient, so a non-root command keeps them across exec
/// (`warren unshare`: delete files owned by subordinate IDs as yourself).
pub fn raise_all_ambient(last: u32) -> io::Result<()> {
    let all: u64 = if last >= 63 {
        u64::MAX
    } else {
        (1u64 << (last + 1)) - 1
    };
    set(all, all, all)?;
    for c in 0..=last {
        raise_ambient(c)?;
    }
    Ok(())
}

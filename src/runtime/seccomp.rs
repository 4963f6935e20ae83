//! Optional "fake chown" filter for the single-ID mode (as enroot and Charliecloud do):
//! chown-family and setuid-family calls return success without doing anything, so
//! package managers that chown files or drop privileges keep working. A classic BPF
//! program built here from libc constants (no libseccomp).

use std::io;

/// `AUDIT_ARCH_*` of the build target (the filter kills nothing, it only checks arch).
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

/// System calls made to succeed without effect.
fn faked() -> Vec<libc::c_long> {
    let mut v: Vec<libc::c_long> = vec![
        libc::SYS_fchown,
        libc::SYS_fchownat,
        libc::SYS_setuid,
        libc::SYS_setgid,
        libc::SYS_setreuid,
        libc::SYS_setregid,
        libc::SYS_setresuid,
        libc::SYS_setresgid,
        libc::SYS_setgroups,
        libc::SYS_setfsuid,
        libc::SYS_setfsgid,
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([libc::SYS_chown, libc::SYS_lchown]);
    v
}

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The BPF program (pure; unit-tested for shape).
pub fn program() -> Vec<libc::sock_filter> {
    const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    // offsetof(struct seccomp_data, nr) = 0, arch = 4.
    let calls = faked();
    let mut p = vec![
        stmt(LD_W_ABS, 4),
        jump(JEQ_K, AUDIT_ARCH, 1, 0),
        stmt(RET_K, libc::SECCOMP_RET_ALLOW),
        stmt(LD_W_ABS, 0),
    ];
    let n = calls.len();
    for (i, nr) in calls.iter().enumerate() {
        // Match: jump over the remaining compares and the ALLOW to the ERRNO(0) return.
        let to_fake = (n - i) as u8;
        p.push(jump(JEQ_K, *nr as u32, to_fake, 0));
    }
    p.push(stmt(RET_K, libc::SECCOMP_RET_ALLOW));
    p.push(stmt(RET_K, libc::SECCOMP_RET_ERRNO)); // errno 0: "success"
    p
}

/// Install the filter on the calling thread (no_new_privs must already be set).
pub fn install() -> io::Result<()> {
    let prog = program();
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: fprog points at prog, alive for the call; the kernel copies the program.
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            &fprog as *const libc::sock_fprog as libc::c_ulong,
            0,
            0,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jumps_land_on_errno_return() {
        let p = program();
        let last = p.len() - 1;
        assert_eq!(p[last].k, libc::SECCOMP_RET_ERRNO);
        for (i, ins) in p.iter().enumerate().skip(4).take(p.len() - 6) {
            assert_eq!(i + 1 + ins.jt as usize, last, "instruction {i}");
        }
    }
}

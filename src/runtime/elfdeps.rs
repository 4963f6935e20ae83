//! What a dynamically linked executable will load first: its ELF interpreter (`PT_INTERP`)
//! and its direct `DT_NEEDED` libraries, read from the file's headers (used to warm the
//! page cache, see `prefetch`); and the symbol versions a file defines and needs
//! (`.gnu.version_d`/`.gnu.version_r`, used by `libguard`). Anything unexpected —
//! another ELF class or byte order, odd sizes, a hostile file — just yields nothing.
//! 64-bit little-endian only.

use std::io;

/// Reads at an offset (a file, or a byte slice in tests).
pub trait ReadAt {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize>;
}

impl ReadAt for std::fs::File {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(self, buf, off)
    }
}

impl ReadAt for [u8] {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        let off = usize::try_from(off).unwrap_or(usize::MAX).min(self.len());
        let n = buf.len().min(self.len() - off);
        buf[..n].copy_from_slice(&self[off..off + n]);
        Ok(n)
    }
}

/// The interpreter's path and the needed library names (at most [`MAX_NEEDED`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Deps {
    pub interp: Option<String>,
    pub needed: Vec<String>,
}

/// Bounds on what is read from a possibly hostile file.
const MAX_PHNUM: usize = 64;
const MAX_DYN: usize = 512;
const MAX_NAME: usize = 256;
/// Libraries looked at; the first ones are those the loader maps first.
pub const MAX_NEEDED: usize = 8;

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;

fn exact<R: ReadAt + ?Sized>(r: &R, off: u64, len: usize) -> Option<Vec<u8>> {
    let mut b = vec![0u8; len];
    (r.read_at(&mut b, off).ok()? == len).then_some(b)
}

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}
fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or([0; 4]))
}
fn u64_at(b: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]))
}

/// The dependencies of the ELF file `r`; `None` when it is not a 64-bit little-endian ELF
/// or its headers do not add up (a static executable has `Some` with nothing in it).
pub fn read<R: ReadAt + ?Sized>(r: &R) -> Option<Deps> {
    read_at_most(r, MAX_NEEDED)
}

/// [`read`] with up to `max_needed` libraries (all of them, for host MPI injection).
pub fn read_at_most<R: ReadAt + ?Sized>(r: &R, max_needed: usize) -> Option<Deps> {
    let eh = exact(r, 0, 64)?;
    if &eh[..4] != b"\x7fELF" || eh[4] != 2 || eh[5] != 1 {
        return None;
    }
    let phoff = u64_at(&eh, 0x20);
    let phentsize = usize::from(u16_at(&eh, 0x36));
    let phnum = usize::from(u16_at(&eh, 0x38));
    if phentsize < 56 || phnum > MAX_PHNUM {
        return None;
    }
    let ph = exact(r, phoff, phentsize.checked_mul(phnum)?)?;
    let mut deps = Deps::default();
    let mut loads = Vec::new();
    let mut dynamic = None;
    for i in 0..phnum {
        let p = &ph[i * phentsize..(i + 1) * phentsize];
        let (ty, off, vaddr, filesz) = (u32_at(p, 0), u64_at(p, 8), u64_at(p, 16), u64_at(p, 32));
        match ty {
            PT_INTERP => {
                let len = usize::try_from(filesz).ok().filter(|&l| l <= MAX_NAME)?;
                deps.interp = cstring(&exact(r, off, len)?);
            }
            PT_DYNAMIC => dynamic = Some((off, filesz)),
            PT_LOAD => loads.push((vaddr, off, filesz)),
            _ => {}
        }
    }
    let Some((doff, dsize)) = dynamic else {
        return Some(deps);
    };
    let count = usize::try_from(dsize / 16).ok()?.min(MAX_DYN);
    let dy = exact(r, doff, count * 16)?;
    let mut strtab = None;
    let mut names = Vec::new();
    for i in 0..count {
        let (tag, val) = (u64_at(&dy, i * 16), u64_at(&dy, i * 16 + 8));
        match tag {
            0 => break,
            DT_NEEDED if names.len() < max_needed => names.push(val),
            DT_STRTAB => strtab = Some(val),
            _ => {}
        }
    }
    // DT_STRTAB is an address: find the loaded segment holding it.
    let strtab = strtab?;
    let (vaddr, off, _) = loads
        .iter()
        .find(|(v, _, sz)| strtab >= *v && strtab - *v < *sz)?;
    let stroff = off.checked_add(strtab - vaddr)?;
    for n in names {
        let Some(b) = stroff.checked_add(n).and_then(|o| {
            let mut buf = vec![0u8; MAX_NAME];
            let got = r.read_at(&mut buf, o).ok()?;
            buf.truncate(got);
            Some(buf)
        }) else {
            continue;
        };
        if let Some(s) = cstring(&b) {
            deps.needed.push(s);
        }
    }
    Some(deps)
}

/// Symbol versions of an ELF file: those it defines (`.gnu.version_d`: a glibc's
/// `GLIBC_2.36`…) and those it needs, with the library each is needed from
/// (`.gnu.version_r`: `("libc.so.6", "GLIBC_2.34")`).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Versions {
    pub defined: Vec<String>,
    pub needed: Vec<(String, String)>,
}

const SHT_GNU_VERDEF: u32 = 0x6fff_fffd;
const SHT_GNU_VERNEED: u32 = 0x6fff_fffe;
/// Bounds for version sections and their string tables.
const MAX_SHNUM: usize = 4096;
const MAX_VERSION_SECTION: u64 = 1 << 20;
const MAX_STRTAB: u64 = 16 << 20;
const MAX_VERSIONS: usize = 4096;
const MAX_VERSION_SECTIONS: usize = 4;

/// The symbol versions of the ELF file `r`; `None` when it is not a 64-bit little-endian
/// ELF or its section headers do not add up.
pub fn versions<R: ReadAt + ?Sized>(r: &R) -> Option<Versions> {
    let eh = exact(r, 0, 64)?;
    if &eh[..4] != b"\x7fELF" || eh[4] != 2 || eh[5] != 1 {
        return None;
    }
    let shoff = u64_at(&eh, 0x28);
    let shentsize = usize::from(u16_at(&eh, 0x3a));
    let shnum = usize::from(u16_at(&eh, 0x3c));
    if shnum == 0 || shentsize < 64 || shnum > MAX_SHNUM {
        return Some(Versions::default());
    }
    let sh = exact(r, shoff, shentsize.checked_mul(shnum)?)?;
    let section = |i: usize| {
        let s = &sh[i * shentsize..i * shentsize + 64];
        // (type, offset, size, link, info)
        (
            u32_at(s, 4),
            u64_at(s, 24),
            u64_at(s, 32),
            u32_at(s, 40) as usize,
            u32_at(s, 44) as usize,
        )
    };
    let strtab = |link: usize| -> Option<Vec<u8>> {
        if link >= shnum {
            return None;
        }
        let (_, off, size, _, _) = section(link);
        if size > MAX_STRTAB {
            return None;
        }
        exact(r, off, usize::try_from(size).ok()?)
    };
    let name = |tab: &[u8], at: u32| -> Option<String> {
        let at = at as usize;
        tab.get(at..tab.len().min(at.saturating_add(MAX_NAME)))
            .and_then(cstring)
    };
    let mut v = Versions::default();
    // A file has one of each; a hostile one is not read past a few.
    let mut seen = 0;
    for i in 0..shnum {
        let (ty, off, size, link, info) = section(i);
        if ty != SHT_GNU_VERDEF && ty != SHT_GNU_VERNEED {
            continue;
        }
        seen += 1;
        if seen > MAX_VERSION_SECTIONS {
            break;
        }
        if size > MAX_VERSION_SECTION {
            return None;
        }
        let data = exact(r, off, usize::try_from(size).ok()?)?;
        let tab = strtab(link)?;
        let field = |at: usize, len: usize| data.get(at..at.checked_add(len)?);
        let mut at = 0usize;
        for _ in 0..info.min(MAX_VERSIONS) {
            if ty == SHT_GNU_VERDEF {
                // Elf64_Verdef: vd_cnt @6, vd_aux @12, vd_next @16; Verdaux: vda_name @0.
                let d = field(at, 20)?;
                let aux = at.checked_add(u32_at(d, 12) as usize)?;
                if u16_at(d, 6) > 0 && v.defined.len() < MAX_VERSIONS {
                    if let Some(n) = name(&tab, u32_at(field(aux, 8)?, 0)) {
                        v.defined.push(n);
                    }
                }
                let next = u32_at(d, 16) as usize;
                if next == 0 {
                    break;
                }
                at = at.checked_add(next)?;
            } else {
                // Elf64_Verneed: vn_cnt @2, vn_file @4, vn_aux @8, vn_next @12;
                // Vernaux: vna_name @8, vna_next @12.
                let n = field(at, 16)?;
                let file = name(&tab, u32_at(n, 4)).unwrap_or_default();
                let mut aux = at.checked_add(u32_at(n, 8) as usize)?;
                for _ in 0..usize::from(u16_at(n, 2)).min(MAX_VERSIONS) {
                    let a = field(aux, 16)?;
                    if let Some(ver) = name(&tab, u32_at(a, 8)) {
                        if v.needed.len() < MAX_VERSIONS {
                            v.needed.push((file.clone(), ver));
                        }
                    }
                    let next = u32_at(a, 12) as usize;
                    if next == 0 {
                        break;
                    }
                    aux = aux.checked_add(next)?;
                }
                let next = u32_at(n, 12) as usize;
                if next == 0 {
                    break;
                }
                at = at.checked_add(next)?;
            }
        }
    }
    Some(v)
}

/// The NUL-terminated UTF-8 string at the start of `b`, if non-empty.
fn cstring(b: &[u8]) -> Option<String> {
    let end = b.iter().position(|&c| c == 0)?;
    let s = std::str::from_utf8(&b[..end]).ok()?;
    (!s.is_empty()).then(|| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_binaries() {
        // Debian's /bin/true is dynamic; busybox-static (when installed) is not.
        let f = std::fs::File::open("/bin/true").unwrap();
        let d = read(&f).unwrap();
        let interp = d.interp.unwrap();
        assert!(
            interp.contains("ld-linux") || interp.contains("ld-"),
            "{interp}"
        );
        assert!(
            d.needed.iter().any(|n| n.starts_with("libc.so")),
            "{:?}",
            d.needed
        );
        if let Ok(f) = std::fs::File::open("/bin/busybox") {
            if let Some(d) = read(&f) {
                assert_eq!(d, Deps::default());
            }
        }
    }

    #[test]
    fn versions_of_host_files() {
        let libc = [
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/lib/aarch64-linux-gnu/libc.so.6",
        ]
        .into_iter()
        .find_map(|p| std::fs::File::open(p).ok())
        .expect("the host's libc.so.6");
        let v = versions(&libc).unwrap();
        assert!(
            v.defined.iter().any(|d| d == "GLIBC_2.17"),
            "{:?}",
            v.defined
        );
        let t = versions(&std::fs::File::open("/bin/true").unwrap()).unwrap();
        assert!(
            t.needed
                .iter()
                .any(|(f, v)| f == "libc.so.6" && v.starts_with("GLIBC_2.")),
            "{:?}",
            t.needed
        );
        // Garbage and truncation: nothing, no panic.
        let b = std::fs::read("/bin/true").unwrap();
        for cut in [0, 10, 64, 1000, b.len() / 2] {
            let _ = versions(&b[..cut]);
        }
        let mut x = b.clone();
        let n = x.len();
        for i in (64..n).step_by(97) {
            x[i] = x[i].wrapping_mul(31).wrapping_add(7);
        }
        let _ = versions(&x[..]);
    }

    proptest::proptest! {
        /// Hostile section headers and version entries: bounded, no panic.
        #[test]
        fn versions_of_mangled_files_never_panic(
            cuts in proptest::collection::vec((proptest::prelude::any::<usize>(), proptest::prelude::any::<u8>()), 0..64)
        ) {
            let mut b = std::fs::read("/bin/true").unwrap();
            for (at, v) in cuts {
                let n = b.len();
                b[at % n] = v;
            }
            if let Some(v) = versions(&b[..]) {
                proptest::prop_assert!(v.needed.len() <= MAX_VERSIONS);
                proptest::prop_assert!(v.defined.len() <= MAX_VERSIONS);
                proptest::prop_assert!(v
                    .needed
                    .iter()
                    .all(|(f, n)| f.len() < MAX_NAME && n.len() < MAX_NAME));
            }
        }
    }

    #[test]
    fn garbage_and_truncation_yield_nothing() {
        assert_eq!(read(&b"#!/bin/sh\necho hi\n"[..]), None);
        assert_eq!(read(&b""[..]), None);
        let t = std::fs::read("/bin/true").unwrap();
        for cut in [4, 63, 64, 100, 200] {
            let _ = read(&t[..cut]); // must not panic
        }
        // A huge phnum is refused.
        let mut h = t.clone();
        h[0x38] = 0xff;
        h[0x39] = 0xff;
        assert_eq!(read(&h[..]), None);
        // Random bytes after a valid magic: no panic.
        let mut x = t[..64].to_vec();
        x.extend((0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
        let _ = read(&x[..]);
    }

    /// A minimal 64-bit little-endian ELF for `machine` with a `PT_INTERP`, one `PT_LOAD`
    /// over the whole file and a `PT_DYNAMIC` listing `needed`.
    fn tiny_elf(machine: u16, interp: &str, needed: &[&str]) -> Vec<u8> {
        const VADDR: u64 = 0x40_0000;
        let mut f = vec![0u8; 64 + 3 * 56];
        f[..8].copy_from_slice(b"\x7fELF\x02\x01\x01\x00");
        f[0x10..0x12].copy_from_slice(&2u16.to_le_bytes());
        f[0x12..0x14].copy_from_slice(&machine.to_le_bytes());
        f[0x14..0x18].copy_from_slice(&1u32.to_le_bytes());
        f[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        f[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        f[0x38..0x3a].copy_from_slice(&3u16.to_le_bytes());
        let interp_off = f.len() as u64;
        f.extend_from_slice(interp.as_bytes());
        f.push(0);
        let strtab = f.len() as u64;
        f.push(0);
        let mut offs = Vec::new();
        for n in needed {
            offs.push(f.len() as u64 - strtab);
            f.extend_from_slice(n.as_bytes());
            f.push(0);
        }
        while !f.len().is_multiple_of(8) {
            f.push(0);
        }
        let dyn_off = f.len() as u64;
        let mut entries: Vec<(u64, u64)> = offs.iter().map(|&o| (DT_NEEDED, o)).collect();
        entries.push((DT_STRTAB, VADDR + strtab));
        entries.push((0, 0));
        for (t, v) in &entries {
            f.extend_from_slice(&t.to_le_bytes());
            f.extend_from_slice(&v.to_le_bytes());
        }
        let len = f.len() as u64;
        let phs = [
            (
                PT_INTERP,
                interp_off,
                VADDR + interp_off,
                interp.len() as u64 + 1,
            ),
            (PT_LOAD, 0, VADDR, len),
            (
                PT_DYNAMIC,
                dyn_off,
                VADDR + dyn_off,
                entries.len() as u64 * 16,
            ),
        ];
        for (i, (ty, off, vaddr, size)) in phs.into_iter().enumerate() {
            let p = 64 + i * 56;
            f[p..p + 4].copy_from_slice(&ty.to_le_bytes());
            f[p + 8..p + 16].copy_from_slice(&off.to_le_bytes());
            f[p + 16..p + 24].copy_from_slice(&vaddr.to_le_bytes());
            f[p + 32..p + 40].copy_from_slice(&size.to_le_bytes());
            f[p + 40..p + 48].copy_from_slice(&size.to_le_bytes());
        }
        f
    }

    /// The reader does not look at `e_machine`: an aarch64 executable (EM_AARCH64 183)
    /// reads like an x86_64 one (EM_X86_64 62), so prefetch works on both hosts.
    #[test]
    fn any_machine_of_the_format_is_read() {
        for (machine, interp) in [
            (62u16, "/lib64/ld-linux-x86-64.so.2"),
            (183, "/lib/ld-linux-aarch64.so.1"),
        ] {
            let f = tiny_elf(machine, interp, &["libc.so.6", "libm.so.6"]);
            assert_eq!(
                read(&f[..]),
                Some(Deps {
                    interp: Some(interp.into()),
                    needed: vec!["libc.so.6".into(), "libm.so.6".into()],
                }),
                "machine {machine}"
            );
        }
        // Big-endian or 32-bit files are not read.
        let mut f = tiny_elf(183, "/x", &[]);
        f[5] = 2;
        assert_eq!(read(&f[..]), None);
        f[5] = 1;
        f[4] = 1;
        assert_eq!(read(&f[..]), None);
    }

    /// A reader that counts the reads and the bytes asked for.
    struct Counting<'a> {
        data: &'a [u8],
        calls: std::cell::Cell<usize>,
        bytes: std::cell::Cell<usize>,
    }

    impl ReadAt for Counting<'_> {
        fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
            self.calls.set(self.calls.get() + 1);
            self.bytes.set(self.bytes.get() + buf.len());
            self.data.read_at(buf, off)
        }
    }

    /// Work bounds whatever the input: header, program headers, one interpreter per
    /// program header, the dynamic section and the needed names.
    const MAX_CALLS: usize = 2 + MAX_PHNUM + 1 + MAX_NEEDED;
    const MAX_BYTES: usize =
        64 + 0xffff * MAX_PHNUM + MAX_PHNUM * MAX_NAME + MAX_DYN * 16 + MAX_NEEDED * MAX_NAME;

    fn bounded(data: &[u8]) -> Result<Option<Deps>, proptest::test_runner::TestCaseError> {
        let c = Counting {
            data,
            calls: 0.into(),
            bytes: 0.into(),
        };
        let d = read(&c);
        proptest::prop_assert!(c.calls.get() <= MAX_CALLS, "{} reads", c.calls.get());
        proptest::prop_assert!(c.bytes.get() <= MAX_BYTES, "{} bytes", c.bytes.get());
        if let Some(d) = &d {
            proptest::prop_assert!(d.needed.len() <= MAX_NEEDED);
        }
        Ok(d)
    }

    proptest::proptest! {
        /// Arbitrary bytes: no panic, bounded work.
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4096)) {
            bounded(&data)?;
        }

        /// A valid file with bytes overwritten at random: no panic, bounded work (this
        /// reaches the program headers and the dynamic section, which random bytes
        /// rarely do).
        #[test]
        fn corrupted_files_never_panic(
            edits in proptest::collection::vec((0usize..512, proptest::prelude::any::<u8>()), 1..16),
            cut in 0usize..600,
        ) {
            let mut f = tiny_elf(62, "/lib64/ld-linux-x86-64.so.2", &["libc.so.6", "libz.so.1"]);
            for (at, b) in edits {
                if let Some(x) = f.get_mut(at) {
                    *x = b;
                }
            }
            f.truncate(cut.max(1));
            bounded(&f)?;
        }

        /// What is written is read back, up to MAX_NEEDED names.
        #[test]
        fn written_deps_read_back(
            interp in "/[a-z0-9._/-]{1,60}",
            needed in proptest::collection::vec("[a-z0-9._+-]{1,40}", 0..12),
        ) {
            let names: Vec<&str> = needed.iter().map(String::as_str).collect();
            let f = tiny_elf(183, &interp, &names);
            let d = bounded(&f)?.expect("a valid file is read");
            proptest::prop_assert_eq!(d.interp, Some(interp));
            let want: Vec<String> = needed.into_iter().take(MAX_NEEDED).collect();
            proptest::prop_assert_eq!(d.needed, want);
        }
    }
}

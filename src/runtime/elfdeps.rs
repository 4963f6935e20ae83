//! What a dynamically linked executable will load first: its ELF interpreter (`PT_INTERP`)
//! and its direct `DT_NEEDED` libraries, read from the file's headers. Used only to warm
//! the page cache (see `prefetch`), so anything unexpected — another ELF class or byte
//! order, odd sizes, a hostile file — just yields nothing. 64-bit little-endian only.

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
            DT_NEEDED if names.len() < MAX_NEEDED => names.push(val),
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
}

//! Reading one 32-bit data symbol (Slurm's `plugin_version`) from an ELF64 little-endian
//! shared object without loading it. Pure over bytes; hostile input yields `None`.

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(o..o.checked_add(2)?)?.try_into().ok()?,
    ))
}
fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(o..o.checked_add(4)?)?.try_into().ok()?,
    ))
}
fn u64_at(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(o..o.checked_add(8)?)?.try_into().ok()?,
    ))
}

struct Section {
    kind: u32,
    addr: u64,
    offset: u64,
    size: u64,
    link: u32,
}

fn sections(b: &[u8]) -> Option<Vec<Section>> {
    // ELF64 (class 2), little-endian (data 1).
    if b.get(0..4)? != b"\x7fELF" || *b.get(4)? != 2 || *b.get(5)? != 1 {
        return None;
    }
    let shoff = usize::try_from(u64_at(b, 0x28)?).ok()?;
    let shentsize = u16_at(b, 0x3A)? as usize;
    let shnum = u16_at(b, 0x3C)? as usize;
    if shentsize < 64 {
        return None;
    }
    (0..shnum)
        .map(|i| {
            let h = shoff.checked_add(i.checked_mul(shentsize)?)?;
            Some(Section {
                kind: u32_at(b, h + 4)?,
                addr: u64_at(b, h + 16)?,
                offset: u64_at(b, h + 24)?,
                size: u64_at(b, h + 32)?,
                link: u32_at(b, h + 40)?,
            })
        })
        .collect()
}

/// The 32-bit value of data symbol `name` (from `.dynsym`, else `.symtab`).
pub fn u32_symbol(b: &[u8], name: &str) -> Option<u32> {
    const SHT_SYMTAB: u32 = 2;
    const SHT_DYNSYM: u32 = 11;
    const SHT_NOBITS: u32 = 8;
    let secs = sections(b)?;
    for want in [SHT_DYNSYM, SHT_SYMTAB] {
        for s in secs.iter().filter(|s| s.kind == want) {
            let strtab = secs.get(s.link as usize)?;
            let (off, size) = (
                usize::try_from(s.offset).ok()?,
                usize::try_from(s.size).ok()?,
            );
            for i in 0..size / 24 {
                let e = off.checked_add(i * 24)?;
                let name_off = u32_at(b, e)? as usize;
                let shndx = u16_at(b, e + 6)? as usize;
                let value = u64_at(b, e + 8)?;
                let start = usize::try_from(strtab.offset).ok()?.checked_add(name_off)?;
                let rest = b.get(start..)?;
                let end = rest.iter().position(|&c| c == 0)?;
                if &rest[..end] != name.as_bytes() {
                    continue;
                }
                let sec = secs.get(shndx)?;
                if sec.kind == SHT_NOBITS || value < sec.addr {
                    return None;
                }
                let fo = usize::try_from(value - sec.addr + sec.offset).ok()?;
                return u32_at(b, fo);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_input_is_none() {
        assert_eq!(u32_symbol(b"", "x"), None);
        assert_eq!(u32_symbol(b"\x7fELF\x02\x01\0\0", "x"), None);
        let mut b = vec![0u8; 128];
        b[..6].copy_from_slice(b"\x7fELF\x02\x01");
        b[0x28] = 0xff; // section headers past the end
        b[0x3A] = 64;
        b[0x3C] = 3;
        assert_eq!(u32_symbol(&b, "plugin_version"), None);
    }

    #[test]
    fn reads_slurm_plugin_version() {
        let p = "/usr/lib/x86_64-linux-gnu/slurm-wlm/proctrack_linuxproc.so";
        let Ok(b) = std::fs::read(p) else {
            eprintln!("SKIP: {p} not installed");
            return;
        };
        let v = u32_symbol(&b, "plugin_version").expect("plugin_version");
        assert_eq!(v >> 16, 22, "Slurm 22.x: {v:#x}");
    }
}

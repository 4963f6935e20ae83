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
                kind: u32_at(b, h.checked_add(4)?)?,
                addr: u64_at(b, h.checked_add(16)?)?,
                offset: u64_at(b, h.checked_add(24)?)?,
                size: u64_at(b, h.checked_add(32)?)?,
                link: u32_at(b, h.checked_add(40)?)?,
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
                let shndx = u16_at(b, e.checked_add(6)?)? as usize;
                let value = u64_at(b, e.checked_add(8)?)?;
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
                let fo = usize::try_from((value - sec.addr).checked_add(sec.offset)?).ok()?;
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

    /// A minimal ELF64 LE object: section 0 null, 1 `.data` holding the value, 2 the
    /// string table, 3 `.dynsym` with one symbol `name` pointing into `.data`.
    fn tiny_elf(name: &str, value: u32) -> Vec<u8> {
        let mut b = vec![0u8; 64];
        b[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let data_off = b.len();
        b.extend_from_slice(&value.to_le_bytes());
        let str_off = b.len();
        b.push(0);
        b.extend_from_slice(name.as_bytes());
        b.push(0);
        let sym_off = b.len();
        let mut sym = [0u8; 24];
        sym[0..4].copy_from_slice(&1u32.to_le_bytes());
        sym[6..8].copy_from_slice(&1u16.to_le_bytes());
        sym[8..16].copy_from_slice(&0x1000u64.to_le_bytes());
        b.extend_from_slice(&sym);
        let shoff = b.len();
        let sh = |kind: u32, addr: u64, off: usize, size: usize, link: u32| {
            let mut h = [0u8; 64];
            h[4..8].copy_from_slice(&kind.to_le_bytes());
            h[16..24].copy_from_slice(&addr.to_le_bytes());
            h[24..32].copy_from_slice(&(off as u64).to_le_bytes());
            h[32..40].copy_from_slice(&(size as u64).to_le_bytes());
            h[40..44].copy_from_slice(&link.to_le_bytes());
            h
        };
        b.extend_from_slice(&sh(0, 0, 0, 0, 0));
        b.extend_from_slice(&sh(1, 0x1000, data_off, 4, 0));
        b.extend_from_slice(&sh(3, 0, str_off, name.len() + 2, 0));
        b.extend_from_slice(&sh(11, 0, sym_off, 24, 2));
        b[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        b[0x3A..0x3C].copy_from_slice(&64u16.to_le_bytes());
        b[0x3C..0x3E].copy_from_slice(&4u16.to_le_bytes());
        b
    }

    #[test]
    fn reads_a_symbol() {
        let b = tiny_elf("plugin_version", 0x160508);
        assert_eq!(u32_symbol(&b, "plugin_version"), Some(0x160508));
        assert_eq!(u32_symbol(&b, "plugin_versio"), None);
    }

    // The installed Slurm plugins are read in tests/doctor_crippled.rs, against the
    // version in slurm/slurm_version.h (skipped through the suite's mechanism).

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4096)) {
            let _ = u32_symbol(&b, "plugin_version");
        }

        /// A valid object with any of its bytes changed: never a panic (offsets and sizes
        /// become hostile, e.g. near usize::MAX).
        #[test]
        fn mutated_objects_never_panic(
            edits in proptest::collection::vec((0usize..400, proptest::prelude::any::<u8>()), 1..16),
            wide in proptest::prop_oneof![proptest::prelude::any::<u64>(), u64::MAX - 64..=u64::MAX],
            // Often the section header offset (0x28) or a section's offset/size field.
            at in proptest::prop_oneof![proptest::strategy::Just(0x28usize), 0usize..400],
        ) {
            let mut b = tiny_elf("plugin_version", 7);
            for (i, v) in edits {
                if let Some(x) = b.get_mut(i) {
                    *x = v;
                }
            }
            if let Some(w) = b.get_mut(at..at + 8) {
                w.copy_from_slice(&wide.to_le_bytes());
            }
            let _ = u32_symbol(&b, "plugin_version");
        }
    }
}

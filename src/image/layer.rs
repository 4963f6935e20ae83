//! One layer blob → a list of [`Entry`]s, file contents spooled. Detects gzip, zstd or
//! plain tar by magic bytes (media types lie; bytes do not).
//!
//! Rules applied here (documented in docs/store.md, "Layer rules"):
//! - paths normalise (`/`, `./` prefixes); `..`, NUL, over-long paths/names are refused;
//! - `.wh.NAME` → whiteout of NAME, `.wh..wh..opq` → opaque directory; any other
//!   `.wh.`-prefixed name is refused (reserved by the OCI spec);
//! - char device 0:0 → whiteout (overlayfs form); other char and block devices are
//!   dropped (an unprivileged container cannot use them; the runtime provides /dev);
//!   fifos are kept;
//! - owners, modes (incl. setuid/setgid/sticky), mtimes and xattrs (PAX `SCHILY.xattr.*`)
//!   are kept; PAX `uid`/`gid`/`mtime` override the header fields;
//! - entry count and file size bounded by [`Limits`].

use super::entry::{normalise, show, DataRef, Entry, Kind, Meta};
use super::spool::{Spool, SpoolWrite};
use super::Limits;
use anyhow::{bail, Context, Result};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use tar::EntryType;

/// Layer compression, by magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
    Plain,
}

/// Sniff the first bytes of a blob.
pub fn detect(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::Plain
    }
}

/// A reader of the uncompressed tar stream of an open blob.
pub fn open_decompressed(f: File) -> Result<Box<dyn Read + Send>> {
    let mut r = BufReader::with_capacity(1 << 20, f);
    let head = r.fill_buf().context("read layer")?;
    Ok(match detect(head) {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(r)?),
        Compression::Plain => Box::new(r),
    })
}

/// What reading one layer yields.
pub struct ParsedLayer {
    pub entries: Vec<Entry>,
    /// Devices dropped by rule (path shown), for a notice.
    pub dropped_devices: Vec<String>,
}

/// Parse the tar stream `r` of layer `index` (0-based), spooling file contents to
/// `spool` (whose id is `spool_id`). `entry_budget` is how many entries may still come.
pub fn parse(
    r: impl Read,
    spool: &mut Spool,
    spool_id: u32,
    limits: &Limits,
    entry_budget: u64,
) -> Result<ParsedLayer> {
    let mut ar = tar::Archive::new(r);
    let mut out = ParsedLayer {
        entries: Vec::new(),
        dropped_devices: Vec::new(),
    };
    let mut count = 0u64;
    for e in ar.entries().context("read tar stream")? {
        let mut e = e.with_context(|| format!("read tar entry after entry {count}"))?;
        count += 1;
        if count > entry_budget {
            bail!(
                "more than {} entries (pull.max_entries)",
                limits.max_entries
            );
        }
        let raw = e.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let parsed = parse_entry(&mut e, &raw, spool, spool_id, limits)
            .with_context(|| format!("entry {shown:?}"))?;
        match parsed {
            Parsed::Entry(en) => out.entries.push(en),
            Parsed::Dropped => out
                .dropped_devices
                .push(show(&normalise(&raw).unwrap_or_default())),
            Parsed::Skip => {}
        }
    }
    Ok(out)
}

enum Parsed {
    Entry(Entry),
    Dropped,
    Skip,
}

fn parse_entry<R: Read>(
    e: &mut tar::Entry<R>,
    raw: &[u8],
    spool: &mut Spool,
    spool_id: u32,
    limits: &Limits,
) -> Result<Parsed> {
    let path = normalise(raw)?;
    let h = e.header();
    let et = h.entry_type();
    let mut meta = Meta {
        mode: h.mode().context("mode field")? & 0o7777,
        uid: h.uid().context("uid field")?,
        gid: h.gid().context("gid field")?,
        mtime: h.mtime().context("mtime field")? as i64,
        xattrs: Vec::new(),
    };
    let (major, minor) = (
        h.device_major().ok().flatten().unwrap_or(0),
        h.device_minor().ok().flatten().unwrap_or(0),
    );
    if let Some(exts) = e.pax_extensions().context("PAX header")? {
        for ext in exts {
            let ext = ext.context("PAX record")?;
            let key = ext.key_bytes();
            let val = ext.value_bytes();
            if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                meta.xattrs.push((name.to_vec(), val.to_vec()));
            } else if key == b"uid" {
                meta.uid = pax_int(val).context("PAX uid")?;
            } else if key == b"gid" {
                meta.gid = pax_int(val).context("PAX gid")?;
            } else if key == b"mtime" {
                let s = std::str::from_utf8(val).unwrap_or("");
                let int = s.split('.').next().unwrap_or("");
                meta.mtime = int.parse().unwrap_or(meta.mtime);
            }
        }
    }
    let (dir, name) = super::entry::split_parent(&path);
    // `.wh.` names are markers, never directories: `.wh..wh..opq/x` would otherwise
    // create a directory of that name in the image (found by flatten_props).
    if dir.split(|&b| b == b'/').any(|c| c.starts_with(b".wh.")) {
        bail!("reserved whiteout name in a parent directory");
    }
    if let Some(target) = name.strip_prefix(b".wh.") {
        if target == b".wh..opq" {
            return Ok(Parsed::Entry(Entry {
                path: dir.to_vec(),
                kind: Kind::Opaque,
                meta,
            }));
        }
        if target.starts_with(b".wh.") || target.is_empty() {
            bail!("reserved whiteout name");
        }
        let mut p = dir.to_vec();
        if !p.is_empty() {
            p.push(b'/');
        }
        p.extend_from_slice(target);
        return Ok(Parsed::Entry(Entry {
            path: p,
            kind: Kind::Whiteout,
            meta,
        }));
    }
    let kind = match et {
        EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
            if et == EntryType::GNUSparse {
                bail!("GNU sparse files are not supported");
            }
            let size = e.size();
            if size > limits.max_file_size {
                bail!(
                    "file of {size} bytes exceeds pull.max_file_size ({})",
                    limits.max_file_size
                );
            }
            let (offset, len) = spool
                .append(e)
                .map_err(|err| anyhow::Error::new(err).context(SpoolWrite(spool.dir().into())))?;
            if len != size {
                bail!("truncated: {len} of {size} bytes");
            }
            Kind::File(DataRef {
                spool: spool_id,
                offset,
                len,
            })
        }
        EntryType::Directory => Kind::Dir,
        EntryType::Symlink => {
            let t = e.link_name_bytes().context("symlink without a target")?;
            if t.is_empty() || t.len() > super::MAX_PATH || t.contains(&0) {
                bail!("symlink target empty, too long or with a NUL byte");
            }
            Kind::Symlink(t.into_owned())
        }
        EntryType::Link => {
            let t = e.link_name_bytes().context("hard link without a target")?;
            let t = normalise(&t).context("hard link target")?;
            if t.is_empty() {
                bail!("hard link to the root directory");
            }
            Kind::Hardlink(t)
        }
        EntryType::Fifo => Kind::Fifo,
        EntryType::Char if major == 0 && minor == 0 => Kind::Whiteout,
        EntryType::Char | EntryType::Block => return Ok(Parsed::Dropped),
        EntryType::XGlobalHeader => return Ok(Parsed::Skip),
        other => bail!("unsupported tar entry type {:?}", other.as_byte() as char),
    };
    if path.is_empty() && kind != Kind::Dir {
        bail!("the root must be a directory");
    }
    Ok(Parsed::Entry(Entry { path, kind, meta }))
}

fn pax_int(v: &[u8]) -> Result<u64> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .context("not a number")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects() {
        assert_eq!(detect(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(detect(&[0x28, 0xb5, 0x2f, 0xfd, 0]), Compression::Zstd);
        assert_eq!(detect(b"etc/\0\0"), Compression::Plain);
        assert_eq!(detect(b""), Compression::Plain);
    }
}

#[cfg(test)]
mod parse_tests {
    use super::*;

    fn header(path: &str, t: EntryType, size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_path(path).unwrap();
        h.set_entry_type(t);
        h.set_size(size);
        h.set_mode(0o4755);
        h.set_uid(1);
        h.set_gid(2);
        h.set_mtime(5);
        h.set_cksum();
        h
    }

    fn parse_bytes(tar: &[u8], limits: Limits) -> Result<ParsedLayer> {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::create(dir.path()).unwrap();
        parse(tar, &mut spool, 0, &limits, limits.max_entries)
    }

    const BIG: Limits = Limits {
        max_entries: 100,
        max_file_size: 1 << 20,
    };

    #[test]
    fn pax_overrides_devices_and_whiteouts() {
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([
            ("uid", &b"3000000"[..]),
            ("gid", &b"3000001"[..]),
            ("mtime", &b"1700000000.5"[..]),
            ("SCHILY.xattr.security.capability", &[1u8, 0, 0, 2][..]),
        ])
        .unwrap();
        b.append(&header("./bin/x", EntryType::Regular, 3), &b"abc"[..])
            .unwrap();
        let mut dev = header("dev/null", EntryType::Char, 0);
        dev.set_device_major(1).unwrap();
        dev.set_device_minor(3).unwrap();
        dev.set_cksum();
        b.append(&dev, &[][..]).unwrap();
        b.append(&header("gone", EntryType::Char, 0), &[][..])
            .unwrap();
        b.append(&header("d/.wh..wh..opq", EntryType::Regular, 0), &[][..])
            .unwrap();
        b.append(&header("d/.wh.f", EntryType::Regular, 0), &[][..])
            .unwrap();
        b.append(&header("p", EntryType::Fifo, 0), &[][..]).unwrap();
        let p = parse_bytes(&b.into_inner().unwrap(), BIG).unwrap();
        assert_eq!(p.dropped_devices, ["/dev/null"]);
        let e: Vec<(String, &Kind)> = p
            .entries
            .iter()
            .map(|e| (String::from_utf8_lossy(&e.path).into_owned(), &e.kind))
            .collect();
        assert_eq!(e[0].0, "bin/x");
        assert!(matches!(e[0].1, Kind::File(DataRef { len: 3, .. })));
        assert_eq!(
            (
                p.entries[0].meta.uid,
                p.entries[0].meta.gid,
                p.entries[0].meta.mtime
            ),
            (3000000, 3000001, 1700000000)
        );
        assert_eq!(p.entries[0].meta.mode, 0o4755);
        assert_eq!(
            p.entries[0].meta.xattrs,
            vec![(b"security.capability".to_vec(), vec![1u8, 0, 0, 2])]
        );
        assert_eq!(e[1], ("gone".into(), &Kind::Whiteout));
        assert_eq!(e[2], ("d".into(), &Kind::Opaque));
        assert_eq!(e[3], ("d/f".into(), &Kind::Whiteout));
        assert_eq!(e[4], ("p".into(), &Kind::Fifo));
        // The PAX record applied to one entry only.
        assert_eq!(p.entries[4].meta.uid, 1);
    }

    #[test]
    fn limits_and_reserved_names() {
        let mut b = tar::Builder::new(Vec::new());
        b.append(&header("a", EntryType::Regular, 10), &[0u8; 10][..])
            .unwrap();
        let t = b.into_inner().unwrap();
        let e = parse_bytes(
            &t,
            Limits {
                max_entries: 100,
                max_file_size: 9,
            },
        )
        .err()
        .unwrap();
        assert!(format!("{e:#}").contains("max_file_size"), "{e:#}");

        let mut b = tar::Builder::new(Vec::new());
        b.append(&header(".wh..wh.x", EntryType::Regular, 0), &[][..])
            .unwrap();
        let e = parse_bytes(&b.into_inner().unwrap(), BIG).err().unwrap();
        assert!(format!("{e:#}").contains("reserved whiteout"), "{e:#}");

        let mut b = tar::Builder::new(Vec::new());
        b.append(&header("f", EntryType::Regular, 100), &[0u8; 10][..])
            .unwrap_or(());
        let mut v = b.into_inner().unwrap_or_default();
        v.truncate(600);
        assert!(parse_bytes(&v, BIG).is_err(), "truncated layer accepted");
    }
}

//! A minimal POSIX (ustar + PAX) tar writer for the flattened image, as tar2sqfs reads
//! it: PAX records carry long paths, large ids/sizes, and xattrs (`SCHILY.xattr.*`,
//! binary values allowed).

use std::io::{self, Write};

/// Tar type flags used here.
#[derive(Debug, Clone, Copy)]
pub enum TarType {
    File,
    Hardlink,
    Symlink,
    Dir,
    Fifo,
}

impl TarType {
    fn flag(self) -> u8 {
        match self {
            TarType::File => b'0',
            TarType::Hardlink => b'1',
            TarType::Symlink => b'2',
            TarType::Dir => b'5',
            TarType::Fifo => b'6',
        }
    }
}

/// One header's worth of fields.
pub struct TarHeader<'a> {
    pub path: &'a [u8],
    pub typ: TarType,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    pub size: u64,
    pub link: &'a [u8],
    pub xattrs: &'a [(Vec<u8>, Vec<u8>)],
}

const OCT7: u64 = 0o7777777;
const OCT11: u64 = 0o77777777777;

/// Write one header (with a PAX header before it when needed). File data follows via
/// [`write_data_padding`] after the caller writes `size` bytes.
pub fn write_header(w: &mut impl Write, h: &TarHeader) -> io::Result<()> {
    let mut pax = Vec::new();
    if h.path.len() > 100 {
        record(&mut pax, b"path", h.path);
    }
    if h.link.len() > 100 {
        record(&mut pax, b"linkpath", h.link);
    }
    if h.uid > OCT7 {
        record(&mut pax, b"uid", h.uid.to_string().as_bytes());
    }
    if h.gid > OCT7 {
        record(&mut pax, b"gid", h.gid.to_string().as_bytes());
    }
    let mtime = h.mtime.max(0) as u64;
    if mtime > OCT11 {
        record(&mut pax, b"mtime", mtime.to_string().as_bytes());
    }
    if h.size > OCT11 {
        record(&mut pax, b"size", h.size.to_string().as_bytes());
    }
    for (k, v) in h.xattrs {
        let mut key = b"SCHILY.xattr.".to_vec();
        key.extend_from_slice(k);
        record(&mut pax, &key, v);
    }
    if !pax.is_empty() {
        let ph = raw_header(
            b"././@PaxHeader",
            b'x',
            0o644,
            0,
            0,
            0,
            pax.len() as u64,
            b"",
        );
        w.write_all(&ph)?;
        w.write_all(&pax)?;
        write_data_padding(w, pax.len() as u64)?;
    }
    let hdr = raw_header(
        trunc(h.path, 100),
        h.typ.flag(),
        h.mode & 0o7777,
        h.uid.min(OCT7),
        h.gid.min(OCT7),
        mtime.min(OCT11),
        h.size.min(OCT11),
        trunc(h.link, 100),
    );
    w.write_all(&hdr)
}

/// Pad file data of `size` bytes to a 512-byte boundary.
pub fn write_data_padding(w: &mut impl Write, size: u64) -> io::Result<()> {
    let pad = (512 - (size % 512) as usize) % 512;
    w.write_all(&[0u8; 512][..pad])
}

/// The end-of-archive marker.
pub fn write_end(w: &mut impl Write) -> io::Result<()> {
    w.write_all(&[0u8; 1024])
}

fn trunc(b: &[u8], n: usize) -> &[u8] {
    &b[..b.len().min(n)]
}

/// `"LEN KEY=VALUE\n"` where LEN counts the whole record, itself included.
fn record(out: &mut Vec<u8>, key: &[u8], val: &[u8]) {
    let body = key.len() + val.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(val);
    out.push(b'\n');
}

#[allow(clippy::too_many_arguments)]
fn raw_header(
    name: &[u8],
    flag: u8,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    size: u64,
    link: &[u8],
) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name);
    octal(&mut h[100..108], mode as u64);
    octal(&mut h[108..116], uid);
    octal(&mut h[116..124], gid);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], mtime);
    h[156] = flag;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

/// Zero-padded octal, NUL-terminated, filling `field`.
fn octal(field: &mut [u8], v: u64) {
    let s = format!("{:0width$o}\0", v, width = field.len() - 1);
    field.copy_from_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_length_counts_itself() {
        let mut v = Vec::new();
        record(&mut v, b"path", &[b'a'; 95]);
        let s = String::from_utf8(v).unwrap();
        let (n, _) = s.split_once(' ').unwrap();
        assert_eq!(n.parse::<usize>().unwrap(), s.len());
        let mut v = Vec::new();
        record(&mut v, b"k", b"v");
        assert_eq!(v, b"6 k=v\n");
    }

    #[test]
    fn tar_crate_reads_what_we_write() {
        let long = "d/".repeat(80) + "file";
        let mut buf = Vec::new();
        let xattrs = vec![(b"security.capability".to_vec(), vec![1u8, 0, 0, 2, 0xff])];
        write_header(
            &mut buf,
            &TarHeader {
                path: long.as_bytes(),
                typ: TarType::File,
                mode: 0o4755,
                uid: 3_000_000,
                gid: 48,
                mtime: 1_700_000_000,
                size: 3,
                link: b"",
                xattrs: &xattrs,
            },
        )
        .unwrap();
        buf.extend_from_slice(b"abc");
        write_data_padding(&mut buf, 3).unwrap();
        write_end(&mut buf).unwrap();
        let mut ar = tar::Archive::new(&buf[..]);
        let mut n = 0;
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            assert_eq!(&*e.path_bytes(), long.as_bytes());
            assert_eq!(e.header().mode().unwrap(), 0o4755);
            assert_eq!(e.header().gid().unwrap(), 48);
            let exts: Vec<_> = e
                .pax_extensions()
                .unwrap()
                .unwrap()
                .map(|x| x.unwrap())
                .map(|x| (x.key_bytes().to_vec(), x.value_bytes().to_vec()))
                .collect();
            assert!(exts.contains(&(b"uid".to_vec(), b"3000000".to_vec())));
            assert!(exts.contains(&(
                b"SCHILY.xattr.security.capability".to_vec(),
                vec![1u8, 0, 0, 2, 0xff]
            )));
            let mut s = String::new();
            std::io::Read::read_to_string(&mut e, &mut s).unwrap();
            assert_eq!(s, "abc");
            n += 1;
        }
        assert_eq!(n, 1);
    }
}

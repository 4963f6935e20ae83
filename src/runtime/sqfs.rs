//! A read-only squashfs 4.0 reader for warren's own image server (`sqfs_serve`): the
//! superblock, metadata blocks, inodes, directory listings, extended attributes, file
//! data and fragments of the images warren's squash code writes (zstd, gzip or lz4;
//! see `image/squash.rs`).
//!
//! The image file is external input (a store can hold a corrupt or hostile file): every
//! offset, size and count is checked before use, allocations are bounded by what was
//! read, and bad bytes give [`Error::Corrupt`], never a panic. Decoded metadata and
//! fragment blocks are cached (bounded): the image is immutable.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

/// Why the image cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("read the squashfs image: {0}")]
    Io(#[from] io::Error),
    #[error("corrupt squashfs image: {0}")]
    Corrupt(String),
    #[error("squashfs image {0}: not read by warren's squashfs server")]
    Unsupported(String),
}

pub type Result<T> = std::result::Result<T, Error>;

fn corrupt<T>(what: impl Into<String>) -> Result<T> {
    Err(Error::Corrupt(what.into()))
}

/// Where the image's bytes come from: a file, or memory in tests.
pub trait Source: Send + Sync {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize>;
}

impl Source for std::fs::File {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        FileExt::read_at(self, buf, off)
    }
}

impl Source for Vec<u8> {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        let Ok(start) = usize::try_from(off) else {
            return Ok(0);
        };
        let Some(src) = self.get(start..) else {
            return Ok(0);
        };
        let n = src.len().min(buf.len());
        buf[..n].copy_from_slice(&src[..n]);
        Ok(n)
    }
}

const MAGIC: u32 = 0x7371_7368;
const NONE: u64 = u64::MAX;
const NO_FRAGMENT: u32 = u32::MAX;
const META_SIZE: usize = 8192;
/// Bit of a data block's or fragment's size word: stored uncompressed.
const UNCOMPRESSED: u32 = 1 << 24;
const FLAG_NO_XATTRS: u16 = 0x200;
/// Decoded metadata kept at most (the tables of a large image are a few MB).
const META_CACHE_BYTES: usize = 64 << 20;
/// Decoded fragment blocks kept at most.
const FRAG_CACHE_BYTES: usize = 32 << 20;
/// Recently decoded data blocks kept: the kernel asks for a block in pieces while its
/// readahead window grows (4, 16, 32 KiB… of one 128 KiB block), each of which would
/// otherwise decompress the whole block again.
const DATA_CACHE_BLOCKS: usize = 32;
/// Bytes one [`Image::read`] returns at most (FUSE asks for 128 KiB).
pub const MAX_READ: u32 = 4 << 20;
/// Parsed inodes kept at most.
const INODE_CACHE: usize = 1 << 18;

thread_local! {
    static ZSTD: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// The decompressors the server reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Gzip,
    Zstd,
    Lz4,
}

impl Codec {
    fn from_id(id: u16) -> Result<Codec> {
        match id {
            1 => Ok(Codec::Gzip),
            6 => Ok(Codec::Zstd),
            2 => Err(Error::Unsupported("compressed with lzma".into())),
            3 => Err(Error::Unsupported("compressed with lzo".into())),
            4 => Err(Error::Unsupported("compressed with xz".into())),
            5 => Ok(Codec::Lz4),
            n => corrupt(format!("unknown compressor {n}")),
        }
    }

    /// `src` decompressed; more than `max` bytes is corruption.
    fn decompress(self, src: &[u8], max: usize) -> Result<Vec<u8>> {
        match self {
            Codec::Zstd => ZSTD.with(|slot| {
                // One decompression context per server thread, reused: a new one per
                // block (`zstd::bulk::decompress`) allocated and set up ~100 KiB of
                // context for every 128 KiB decoded.
                let mut slot = slot.borrow_mut();
                let mut d = match slot.take() {
                    Some(d) => d,
                    None => zstd::bulk::Decompressor::new()
                        .or_else(|e| corrupt(format!("zstd context: {e}")))?,
                };
                let out = d.decompress(src, max);
                *slot = Some(d);
                out.or_else(|e| corrupt(format!("zstd block: {e}")))
            }),
            Codec::Lz4 => super::lz4::decompress(src, max).or_else(|e| corrupt(e.to_string())),
            Codec::Gzip => {
                let mut d = flate2::Decompress::new(true);
                let mut out = Vec::with_capacity(max);
                match d.decompress_vec(src, &mut out, flate2::FlushDecompress::Finish) {
                    Ok(flate2::Status::StreamEnd) => Ok(out),
                    Ok(_) => corrupt("gzip block larger than its block size, or truncated"),
                    Err(e) => corrupt(format!("gzip block: {e}")),
                }
            }
        }
    }
}

/// The superblock fields the reader uses.
#[derive(Debug, Clone)]
pub struct Super {
    pub inode_count: u32,
    pub block_size: u32,
    pub frag_count: u32,
    pub codec: Codec,
    pub id_count: u16,
    pub root_inode: u64,
    pub bytes_used: u64,
    pub id_table: u64,
    pub xattr_table: u64,
    pub inode_table: u64,
    pub dir_table: u64,
    pub frag_table: u64,
    pub flags: u16,
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn le64(b: &[u8], at: usize) -> u64 {
    (le32(b, at) as u64) | ((le32(b, at + 4) as u64) << 32)
}

impl Super {
    /// Parse and check the 96-byte superblock against the file's `len`.
    pub fn parse(b: &[u8; 96], len: u64) -> Result<Super> {
        if le32(b, 0) != MAGIC {
            return corrupt("no squashfs magic (not a squashfs file)");
        }
        let (major, minor) = (le16(b, 28), le16(b, 30));
        if (major, minor) != (4, 0) {
            return Err(Error::Unsupported(format!("version {major}.{minor}")));
        }
        let s = Super {
            inode_count: le32(b, 4),
            block_size: le32(b, 12),
            frag_count: le32(b, 16),
            codec: Codec::from_id(le16(b, 20))?,
            flags: le16(b, 24),
            id_count: le16(b, 26),
            root_inode: le64(b, 32),
            bytes_used: le64(b, 40),
            id_table: le64(b, 48),
            xattr_table: le64(b, 56),
            inode_table: le64(b, 64),
            dir_table: le64(b, 72),
            frag_table: le64(b, 80),
        };
        let log = le16(b, 22);
        if !(12..=20).contains(&log) || s.block_size != 1 << log {
            return corrupt(format!("block size {} (log {log})", s.block_size));
        }
        if s.bytes_used > len {
            return corrupt(format!(
                "{} bytes used but the file has {len} (truncated)",
                s.bytes_used
            ));
        }
        let inside = |v: u64| v < s.bytes_used;
        if !(inside(s.inode_table) && inside(s.dir_table) && s.inode_table <= s.dir_table) {
            return corrupt("inode or directory table outside the image");
        }
        if s.id_count == 0 || !inside(s.id_table) {
            return corrupt("no ID table");
        }
        if s.frag_count > 0 && !inside(s.frag_table) {
            return corrupt("fragment table outside the image");
        }
        if (s.root_inode >> 16) >= s.dir_table - s.inode_table {
            return corrupt("root inode outside the inode table");
        }
        Ok(s)
    }

    /// Whether the image stores extended attributes (the server does not serve them).
    pub fn has_xattrs(&self) -> bool {
        self.xattr_table != NONE && self.flags & FLAG_NO_XATTRS == 0
    }
}

/// What an inode is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
    BlockDev,
    CharDev,
    Fifo,
    Socket,
}

impl Kind {
    /// The `S_IFMT` bits.
    pub fn mode_bits(self) -> u32 {
        match self {
            Kind::Dir => libc::S_IFDIR,
            Kind::File => libc::S_IFREG,
            Kind::Symlink => libc::S_IFLNK,
            Kind::BlockDev => libc::S_IFBLK,
            Kind::CharDev => libc::S_IFCHR,
            Kind::Fifo => libc::S_IFIFO,
            Kind::Socket => libc::S_IFSOCK,
        }
    }

    /// From a basic type number (1–7; extended types are these + 7).
    fn from_basic(t: u16) -> Option<Kind> {
        Some(match t {
            1 => Kind::Dir,
            2 => Kind::File,
            3 => Kind::Symlink,
            4 => Kind::BlockDev,
            5 => Kind::CharDev,
            6 => Kind::Fifo,
            7 => Kind::Socket,
            _ => return None,
        })
    }
}

/// One inode, parsed.
#[derive(Debug, Clone)]
pub struct Inode {
    pub kind: Kind,
    /// Permission bits (`0o7777`).
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u32,
    /// The inode number (stable, unique in the image).
    pub ino: u32,
    pub nlink: u32,
    pub size: u64,
    /// Device number as Linux encodes it (`new_encode_dev`), for devices.
    pub rdev: u32,
    /// Index into the xattr ID table ([`NO_XATTR`]: none).
    pub xattr: u32,
    pub body: Body,
}

/// An inode without extended attributes.
pub const NO_XATTR: u32 = u32::MAX;
/// Largest attribute value Linux takes (`XATTR_SIZE_MAX`).
const XATTR_VALUE_MAX: u32 = 64 << 10;

/// The type-specific part of an inode.
#[derive(Debug, Clone)]
pub enum Body {
    Dir {
        /// Metadata block of the listing, relative to the directory table.
        start: u32,
        offset: u16,
        /// Bytes of listing (the stored size minus 3).
        listing: u32,
    },
    File {
        /// Offset of each full block in the file and its size word.
        blocks: Vec<(u64, u32)>,
        fragment: u32,
        frag_offset: u32,
    },
    Symlink(Vec<u8>),
    Other,
}

impl Inode {
    /// `st_mode`.
    pub fn mode(&self) -> u32 {
        self.kind.mode_bits() | (self.perm as u32 & 0o7777)
    }
}

/// One directory entry.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: Vec<u8>,
    /// Inode reference (metadata block << 16 | offset).
    pub inode: u64,
    pub kind: Kind,
    pub ino: u32,
}

/// A decoded metadata block and where the next one starts.
struct Meta {
    data: Vec<u8>,
    next: u64,
}

#[derive(Default)]
struct Caches {
    meta: HashMap<u64, Arc<Meta>>,
    meta_bytes: usize,
    frags: HashMap<u32, Arc<Vec<u8>>>,
    frag_bytes: usize,
    inodes: HashMap<u64, Arc<Inode>>,
    dirs: HashMap<u64, Arc<Vec<Entry>>>,
    dir_entries: usize,
    /// (position in the image, decoded block), oldest first.
    data: std::collections::VecDeque<(u64, Arc<Vec<u8>>)>,
}

/// An open image: thread-safe, caches shared.
pub struct Image {
    src: Box<dyn Source>,
    pub sb: Super,
    ids: Vec<u32>,
    /// The xattr ID table: (key/value list reference, count, size) per index, and where
    /// the key/value metadata blocks start.
    xattr_ids: Vec<(u64, u32, u32)>,
    xattr_start: u64,
    cache: Mutex<Caches>,
}

/// Reading `buf.len()` bytes at `off` or failing with a clear "truncated".
fn read_exact(src: &dyn Source, buf: &mut [u8], off: u64) -> Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let n = src.read_at(&mut buf[done..], off + done as u64)?;
        if n == 0 {
            return corrupt(format!(
                "{} bytes at offset {off}: the file ends first",
                buf.len()
            ));
        }
        done += n;
    }
    Ok(())
}

/// A position in a metadata table: the block's absolute offset and an offset in its
/// decoded bytes.
struct Cursor<'a> {
    img: &'a Image,
    block: Arc<Meta>,
    off: usize,
}

impl Cursor<'_> {
    fn take(&mut self, out: &mut [u8]) -> Result<()> {
        let mut done = 0;
        while done < out.len() {
            if self.off >= self.block.data.len() {
                if self.off > self.block.data.len() {
                    return corrupt("metadata offset past its block");
                }
                self.block = self.img.meta(self.block.next)?;
                self.off = 0;
                continue;
            }
            let n = (self.block.data.len() - self.off).min(out.len() - done);
            out[done..done + n].copy_from_slice(&self.block.data[self.off..self.off + n]);
            self.off += n;
            done += n;
        }
        Ok(())
    }
    fn u16(&mut self) -> Result<u16> {
        let mut b = [0; 2];
        self.take(&mut b)?;
        Ok(u16::from_le_bytes(b))
    }
    fn u32(&mut self) -> Result<u32> {
        let mut b = [0; 4];
        self.take(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn u64(&mut self) -> Result<u64> {
        let mut b = [0; 8];
        self.take(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn bytes(&mut self, n: usize) -> Result<Vec<u8>> {
        let mut v = vec![0; n];
        self.take(&mut v)?;
        Ok(v)
    }
}

impl Image {
    /// Open an image: superblock and ID table read and checked.
    pub fn open(src: Box<dyn Source>, len: u64) -> Result<Image> {
        let mut b = [0u8; 96];
        read_exact(src.as_ref(), &mut b, 0)?;
        let sb = Super::parse(&b, len)?;
        let mut img = Image {
            src,
            sb,
            ids: Vec::new(),
            xattr_ids: Vec::new(),
            xattr_start: 0,
            cache: Mutex::new(Caches::default()),
        };
        img.ids = img
            .read_table(img.sb.id_table, img.sb.id_count as usize, 4)?
            .chunks_exact(4)
            .map(|c| le32(c, 0))
            .collect();
        if img.sb.has_xattrs() {
            img.read_xattr_table()?;
        }
        Ok(img)
    }

    /// Open the image file at `path`.
    pub fn open_file(file: std::fs::File) -> Result<Image> {
        let len = file.metadata()?.len();
        Image::open(Box::new(file), len)
    }

    /// `count` entries of `size` bytes of a table whose block pointers start at `at`.
    fn read_table(&self, at: u64, count: usize, size: usize) -> Result<Vec<u8>> {
        let bytes = count * size;
        let blocks = bytes.div_ceil(META_SIZE);
        let mut ptrs = vec![0u8; blocks * 8];
        read_exact(self.src.as_ref(), &mut ptrs, at)?;
        let mut out = Vec::with_capacity(bytes);
        for p in ptrs.chunks_exact(8) {
            let m = self.meta(le64(p, 0))?;
            let want = (bytes - out.len()).min(META_SIZE);
            if m.data.len() < want {
                return corrupt("table block shorter than its entries");
            }
            out.extend_from_slice(&m.data[..want]);
        }
        Ok(out)
    }

    /// The xattr ID table's header (where the key/value blocks start, how many IDs)
    /// and its entries.
    fn read_xattr_table(&mut self) -> Result<()> {
        let at = self.sb.xattr_table;
        if at.checked_add(16).is_none_or(|e| e > self.sb.bytes_used) {
            return corrupt(format!("xattr table at {at} outside the image"));
        }
        let mut h = [0u8; 16];
        read_exact(self.src.as_ref(), &mut h, at)?;
        let (start, count) = (le64(&h, 0), le32(&h, 8) as usize);
        // Each ID is 16 bytes of the image: more than the image holds is corrupt, and
        // the allocation below stays bounded by the image's size.
        if start >= at || count as u64 * 16 > self.sb.bytes_used {
            return corrupt(format!("xattr table: start {start}, {count} IDs"));
        }
        self.xattr_start = start;
        self.xattr_ids = self
            .read_table(at + 16, count, 16)?
            .chunks_exact(16)
            .map(|c| (le64(c, 0), le32(c, 8), le32(c, 12)))
            .collect();
        Ok(())
    }

    /// The extended attributes of `i` (full names such as `security.capability`, and
    /// values), in the image's order.
    pub fn xattrs(&self, i: &Inode) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        if i.xattr == NO_XATTR {
            return Ok(Vec::new());
        }
        let &(r, count, size) = self
            .xattr_ids
            .get(i.xattr as usize)
            .ok_or_else(|| Error::Corrupt(format!("inode {}: xattr index {}", i.ino, i.xattr)))?;
        // `size` is the bytes of the whole list: a count it cannot hold is corrupt (each
        // pair takes at least 8 bytes), which also bounds the loop.
        if count as u64 * 8 > size as u64 {
            return corrupt(format!("inode {}: {count} xattrs in {size} bytes", i.ino));
        }
        let mut c = self.cursor(self.xattr_start, r >> 16, (r & 0xffff) as u16)?;
        let mut out = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let t = c.u16()?;
            let prefix: &[u8] = match t & 0xff {
                0 => b"user.",
                1 => b"trusted.",
                2 => b"security.",
                p => return corrupt(format!("inode {}: xattr prefix {p}", i.ino)),
            };
            let n = c.u16()? as usize;
            let mut name = prefix.to_vec();
            name.extend_from_slice(&c.bytes(n)?);
            let value = if t & 0x100 != 0 {
                // Out of line: the value is elsewhere, referenced by 8 bytes.
                if c.u32()? != 8 {
                    return corrupt(format!("inode {}: out-of-line xattr reference", i.ino));
                }
                let vr = c.u64()?;
                let mut v = self.cursor(self.xattr_start, vr >> 16, (vr & 0xffff) as u16)?;
                Self::xattr_value(&mut v, i.ino)?
            } else {
                Self::xattr_value(&mut c, i.ino)?
            };
            out.push((name, value));
        }
        Ok(out)
    }

    fn xattr_value(c: &mut Cursor, ino: u32) -> Result<Vec<u8>> {
        let n = c.u32()?;
        if n > XATTR_VALUE_MAX {
            return corrupt(format!("inode {ino}: xattr value of {n} bytes"));
        }
        c.bytes(n as usize)
    }

    /// The decoded metadata block at absolute offset `pos`.
    fn meta(&self, pos: u64) -> Result<Arc<Meta>> {
        if let Some(m) = self.lock().meta.get(&pos) {
            return Ok(m.clone());
        }
        if pos.checked_add(2).is_none_or(|e| e > self.sb.bytes_used) {
            return corrupt(format!("metadata block at {pos} outside the image"));
        }
        let mut h = [0u8; 2];
        read_exact(self.src.as_ref(), &mut h, pos)?;
        let h = u16::from_le_bytes(h);
        let size = (h & 0x7fff) as usize;
        if size == 0 || size > META_SIZE || pos + 2 + size as u64 > self.sb.bytes_used {
            return corrupt(format!("metadata block at {pos}: size {size}"));
        }
        let mut raw = vec![0u8; size];
        read_exact(self.src.as_ref(), &mut raw, pos + 2)?;
        let data = if h & 0x8000 != 0 {
            raw
        } else {
            self.sb.codec.decompress(&raw, META_SIZE)?
        };
        let m = Arc::new(Meta {
            data,
            next: pos + 2 + size as u64,
        });
        let mut c = self.lock();
        if c.meta_bytes > META_CACHE_BYTES {
            c.meta.clear();
            c.meta_bytes = 0;
        }
        c.meta_bytes += m.data.len();
        c.meta.insert(pos, m.clone());
        Ok(m)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Caches> {
        // A panic elsewhere cannot leave the caches inconsistent: each update is whole.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cursor(&self, table: u64, block: u64, off: u16) -> Result<Cursor<'_>> {
        let pos = table
            .checked_add(block)
            .filter(|p| *p < self.sb.bytes_used)
            .ok_or_else(|| {
                Error::Corrupt(format!("metadata reference {block} outside the image"))
            })?;
        let m = self.meta(pos)?;
        if off as usize > m.data.len() {
            return corrupt("metadata offset past its block");
        }
        Ok(Cursor {
            img: self,
            block: m,
            off: off as usize,
        })
    }

    fn id(&self, idx: u16) -> Result<u32> {
        self.ids
            .get(idx as usize)
            .copied()
            .ok_or_else(|| Error::Corrupt(format!("ID index {idx} of {}", self.ids.len())))
    }

    /// The root directory's inode reference.
    pub fn root(&self) -> u64 {
        self.sb.root_inode
    }

    /// The inode at reference `r` (metadata block << 16 | offset).
    pub fn inode(&self, r: u64) -> Result<Arc<Inode>> {
        if let Some(i) = self.lock().inodes.get(&r) {
            return Ok(i.clone());
        }
        let i = Arc::new(self.parse_inode(r)?);
        let mut c = self.lock();
        if c.inodes.len() >= INODE_CACHE {
            c.inodes.clear();
        }
        c.inodes.insert(r, i.clone());
        Ok(i)
    }

    fn parse_inode(&self, r: u64) -> Result<Inode> {
        let mut c = self.cursor(self.sb.inode_table, r >> 16, (r & 0xffff) as u16)?;
        let t = c.u16()?;
        let perm = c.u16()? & 0o7777;
        let uid = self.id(c.u16()?)?;
        let gid = self.id(c.u16()?)?;
        let mtime = c.u32()?;
        let ino = c.u32()?;
        let ext = t > 7;
        let kind = Kind::from_basic(if ext { t.wrapping_sub(7) } else { t })
            .ok_or_else(|| Error::Corrupt(format!("inode type {t}")))?;
        let mut i = Inode {
            kind,
            perm,
            uid,
            gid,
            mtime,
            ino,
            nlink: 1,
            size: 0,
            rdev: 0,
            xattr: NO_XATTR,
            body: Body::Other,
        };
        match (kind, ext) {
            (Kind::Dir, false) => {
                let start = c.u32()?;
                i.nlink = c.u32()?;
                let size = c.u16()? as u32;
                let offset = c.u16()?;
                let _parent = c.u32()?;
                i.body = dir_body(start, offset, size)?;
                i.size = size as u64;
            }
            (Kind::Dir, true) => {
                i.nlink = c.u32()?;
                let size = c.u32()?;
                let start = c.u32()?;
                let _parent = c.u32()?;
                let _index_count = c.u16()?;
                let offset = c.u16()?;
                i.xattr = c.u32()?;
                i.body = dir_body(start, offset, size)?;
                i.size = size as u64;
            }
            (Kind::File, _) => {
                let (start, frag, frag_offset, size) = if ext {
                    let start = c.u64()?;
                    let size = c.u64()?;
                    let _sparse = c.u64()?;
                    i.nlink = c.u32()?;
                    let frag = c.u32()?;
                    let off = c.u32()?;
                    i.xattr = c.u32()?;
                    (start, frag, off, size)
                } else {
                    let start = c.u32()? as u64;
                    let frag = c.u32()?;
                    let off = c.u32()?;
                    let size = c.u32()? as u64;
                    (start, frag, off, size)
                };
                let bs = self.sb.block_size as u64;
                let n = if frag == NO_FRAGMENT {
                    size.div_ceil(bs)
                } else {
                    if frag >= self.sb.frag_count || frag_offset >= self.sb.block_size {
                        return corrupt(format!("inode {ino}: fragment {frag} at {frag_offset}"));
                    }
                    size / bs
                };
                // Each block costs 4 bytes of metadata: a size larger than the inode
                // table can describe fails on the read below, not on an allocation.
                let mut blocks = Vec::new();
                let mut at = start;
                for _ in 0..n {
                    let w = c.u32()?;
                    blocks.push((at, w));
                    at = at
                        .checked_add((w & (UNCOMPRESSED - 1)) as u64)
                        .ok_or_else(|| Error::Corrupt(format!("inode {ino}: block offsets")))?;
                }
                i.size = size;
                i.body = Body::File {
                    blocks,
                    fragment: frag,
                    frag_offset,
                };
            }
            (Kind::Symlink, _) => {
                i.nlink = c.u32()?;
                let n = c.u32()?;
                if n == 0 || n > 4096 {
                    return corrupt(format!("inode {ino}: symlink target of {n} bytes"));
                }
                let target = c.bytes(n as usize)?;
                i.size = n as u64;
                i.body = Body::Symlink(target);
                if ext {
                    i.xattr = c.u32()?;
                }
            }
            (Kind::BlockDev | Kind::CharDev, _) => {
                i.nlink = c.u32()?;
                i.rdev = c.u32()?;
                if ext {
                    i.xattr = c.u32()?;
                }
            }
            (Kind::Fifo | Kind::Socket, _) => {
                i.nlink = c.u32()?;
                if ext {
                    i.xattr = c.u32()?;
                }
            }
        }
        Ok(i)
    }

    /// The entries of directory `dir` (without `.` and `..`), in the image's order
    /// (sorted by name).
    pub fn read_dir(&self, r: u64, dir: &Inode) -> Result<Arc<Vec<Entry>>> {
        let Body::Dir {
            start,
            offset,
            listing,
        } = dir.body
        else {
            return corrupt("not a directory");
        };
        if let Some(d) = self.lock().dirs.get(&r) {
            return Ok(d.clone());
        }
        let mut out = Vec::new();
        if listing > 0 {
            let mut c = self.cursor(self.sb.dir_table, start as u64, offset)?;
            let mut left = listing as i64;
            while left > 0 {
                let count = c.u32()? as usize + 1;
                let block = c.u32()? as u64;
                let base = c.u32()?;
                left -= 12;
                if count > 256 {
                    return corrupt(format!("directory header of {count} entries"));
                }
                for _ in 0..count {
                    let off = c.u16()?;
                    let delta = c.u16()? as i16;
                    let t = c.u16()?;
                    let len = c.u16()? as usize + 1;
                    let name = c.bytes(len)?;
                    left -= 8 + len as i64;
                    if left < 0 {
                        return corrupt("directory listing longer than its size");
                    }
                    let kind = Kind::from_basic(t)
                        .ok_or_else(|| Error::Corrupt(format!("directory entry type {t}")))?;
                    if name.contains(&b'/') || name == b"." || name == b".." {
                        return corrupt("directory entry name with '/' or a dot entry");
                    }
                    out.push(Entry {
                        name,
                        inode: (block << 16) | off as u64,
                        kind,
                        ino: base.wrapping_add(delta as i32 as u32),
                    });
                }
            }
        }
        let out = Arc::new(out);
        let mut c = self.lock();
        if c.dir_entries > INODE_CACHE {
            c.dirs.clear();
            c.dir_entries = 0;
        }
        c.dir_entries += out.len() + 1;
        c.dirs.insert(r, out.clone());
        Ok(out)
    }

    /// The entry named `name` in directory `dir` (reference `r`).
    pub fn lookup(&self, r: u64, dir: &Inode, name: &[u8]) -> Result<Option<Entry>> {
        let d = self.read_dir(r, dir)?;
        Ok(d.binary_search_by(|e| e.name.as_slice().cmp(name))
            .ok()
            .or_else(|| d.iter().position(|e| e.name == name))
            .map(|k| d[k].clone()))
    }

    /// Up to `size` bytes (at most [`MAX_READ`]) of file `f` from `off`.
    pub fn read(&self, f: &Inode, off: u64, size: u32) -> Result<Vec<u8>> {
        let size = size.min(MAX_READ);
        let Body::File {
            blocks,
            fragment,
            frag_offset,
        } = &f.body
        else {
            return corrupt("not a regular file");
        };
        if off >= f.size {
            return Ok(Vec::new());
        }
        let end = f.size.min(off.saturating_add(size as u64));
        let bs = self.sb.block_size as u64;
        let mut out = Vec::with_capacity((end - off) as usize);
        let mut pos = off;
        while pos < end {
            let k = pos / bs;
            let block_start = k * bs;
            let block_len = bs.min(f.size - block_start) as usize;
            let data = if let Some(&(at, w)) = blocks.get(k as usize) {
                self.data_block(at, w, block_len)?
            } else {
                let frag = self.fragment(*fragment)?;
                let s = *frag_offset as usize;
                let piece = frag.get(s..s + block_len).ok_or_else(|| {
                    Error::Corrupt(format!("inode {}: tail past its fragment", f.ino))
                })?;
                Arc::new(piece.to_vec())
            };
            let from = (pos - block_start) as usize;
            let to = ((end - block_start) as usize).min(block_len);
            out.extend_from_slice(&data[from..to]);
            pos = block_start + to as u64;
        }
        Ok(out)
    }

    /// A data block of `len` bytes stored at `at` with size word `w` (0: a hole).
    fn data_block(&self, at: u64, w: u32, len: usize) -> Result<Arc<Vec<u8>>> {
        let stored = (w & (UNCOMPRESSED - 1)) as usize;
        if stored == 0 {
            return Ok(Arc::new(vec![0; len]));
        }
        let cached = |c: &Caches| {
            c.data
                .iter()
                .find(|(p, _)| *p == at)
                .map(|(_, d)| d.clone())
        };
        // (The guard must be dropped before decoding: a match on `cached(&self.lock())`
        // would hold it through the arm.)
        let hit = cached(&self.lock());
        let data = match hit {
            Some(d) => d,
            None => {
                let d = Arc::new(self.raw_block(at, w)?);
                let mut c = self.lock();
                if cached(&c).is_none() {
                    if c.data.len() >= DATA_CACHE_BLOCKS {
                        c.data.pop_front();
                    }
                    c.data.push_back((at, d.clone()));
                }
                d
            }
        };
        // Checked on every use: a block shared by files of different sizes (the
        // deduplicated tail of one is not the block of another) must still fit each.
        if data.len() != len {
            return corrupt(format!(
                "data block at {at}: {} bytes, {len} expected",
                data.len()
            ));
        }
        Ok(data)
    }

    /// The block at `at` with size word `w`, decompressed (up to a block size).
    fn raw_block(&self, at: u64, w: u32) -> Result<Vec<u8>> {
        let stored = (w & (UNCOMPRESSED - 1)) as usize;
        if stored > self.sb.block_size as usize
            || at
                .checked_add(stored as u64)
                .is_none_or(|e| e > self.sb.bytes_used)
        {
            return corrupt(format!("data block at {at} of {stored} bytes"));
        }
        let mut raw = vec![0u8; stored];
        read_exact(self.src.as_ref(), &mut raw, at)?;
        if w & UNCOMPRESSED != 0 {
            Ok(raw)
        } else {
            self.sb.codec.decompress(&raw, self.sb.block_size as usize)
        }
    }

    /// Fragment block `k`, decoded (cached).
    fn fragment(&self, k: u32) -> Result<Arc<Vec<u8>>> {
        if k >= self.sb.frag_count {
            return corrupt(format!("fragment {k} of {}", self.sb.frag_count));
        }
        if let Some(f) = self.lock().frags.get(&k) {
            return Ok(f.clone());
        }
        let byte = k as u64 * 16;
        let mut p = [0u8; 8];
        read_exact(
            self.src.as_ref(),
            &mut p,
            self.sb.frag_table + (byte / META_SIZE as u64) * 8,
        )?;
        let m = self.meta(u64::from_le_bytes(p))?;
        let o = (byte % META_SIZE as u64) as usize;
        let e = m
            .data
            .get(o..o + 16)
            .ok_or_else(|| Error::Corrupt(format!("fragment entry {k}")))?;
        let f = Arc::new(self.raw_block(le64(e, 0), le32(e, 8))?);
        let mut c = self.lock();
        if c.frag_bytes > FRAG_CACHE_BYTES {
            c.frags.clear();
            c.frag_bytes = 0;
        }
        c.frag_bytes += f.len();
        c.frags.insert(k, f.clone());
        Ok(f)
    }
}

fn dir_body(start: u32, offset: u16, size: u32) -> Result<Body> {
    if size < 3 {
        return corrupt(format!("directory size {size}"));
    }
    Ok(Body::Dir {
        start,
        offset,
        listing: size - 3,
    })
}

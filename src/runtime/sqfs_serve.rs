//! warren's own squashfs FUSE server: serves an [`Image`] on a `/dev/fuse` connection
//! that `fuse` mounted, with several threads, attributes and entries (negative ones too)
//! valid for a year (the image is immutable), no OPEN/RELEASE or OPENDIR/RELEASEDIR
//! round trips (`FUSE_NO_OPEN(DIR)_SUPPORT`: the kernel then keeps files' page cache
//! across opens), READDIRPLUS (a directory's entries and attributes in one reply),
//! extended attributes from the image's table. Chosen over `squashfuse_ll` by
//! measurement (docs/performance.md, "Image I/O").
//!
//! Speaks the kernel's FUSE protocol directly (7.31 subset, read-only); requests come
//! from the kernel, replies are built from checked image data (`sqfs`).

use super::sqfs::{Body, Entry, Error, Image, Inode, Kind};
use super::sqfs_record::Recorder;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

// Opcodes (include/uapi/linux/fuse.h).
const LOOKUP: u32 = 1;
const FORGET: u32 = 2;
const GETATTR: u32 = 3;
const READLINK: u32 = 5;
const OPEN: u32 = 14;
const READ: u32 = 15;
const STATFS: u32 = 17;
const RELEASE: u32 = 18;
const GETXATTR: u32 = 22;
const LISTXATTR: u32 = 23;
const FLUSH: u32 = 25;
const INIT: u32 = 26;
const OPENDIR: u32 = 27;
const READDIR: u32 = 28;
const RELEASEDIR: u32 = 29;
const ACCESS: u32 = 34;
const INTERRUPT: u32 = 36;
const DESTROY: u32 = 38;
const IOCTL: u32 = 39;
const BATCH_FORGET: u32 = 42;
const READDIRPLUS: u32 = 44;

// INIT flags.
const ASYNC_READ: u32 = 1 << 0;
const DO_READDIRPLUS: u32 = 1 << 13;
const READDIRPLUS_AUTO: u32 = 1 << 14;
const NO_OPEN_SUPPORT: u32 = 1 << 17;
const PARALLEL_DIROPS: u32 = 1 << 18;
const MAX_PAGES: u32 = 1 << 22;
const CACHE_SYMLINKS: u32 = 1 << 23;
const NO_OPENDIR_SUPPORT: u32 = 1 << 24;

/// How long the kernel may trust an entry or attributes: the image never changes.
const VALID_SECS: u64 = 365 * 24 * 3600;
const ROOT_ID: u64 = 1;
const IN_HEADER: usize = 40;
/// Read requests of up to this many pages (128 KiB: a squashfs block).
const PAGES: u16 = 32;
/// Request buffer: the largest request is a header and a name, well under this.
const BUF: usize = 64 << 10;

/// The FUSE node ID of inode reference `r` (1 is the root; 0 means "no entry").
fn node_of(img: &Image, r: u64) -> u64 {
    if r == img.root() {
        ROOT_ID
    } else {
        r + 2
    }
}

fn ref_of(img: &Image, node: u64) -> u64 {
    if node == ROOT_ID {
        img.root()
    } else {
        node.wrapping_sub(2)
    }
}

fn errno(e: &Error) -> i32 {
    match e {
        Error::Io(e) => e.raw_os_error().unwrap_or(libc::EIO),
        _ => libc::EIO,
    }
}

/// Serve `img` on the FUSE connection `dev` until it is unmounted: the INIT handshake,
/// then `threads` threads answering requests. With `record`, what is read is recorded
/// (the image's prefetch list, `sqfs_record`). Returns when the mount is gone.
pub fn serve(
    img: Image,
    dev: OwnedFd,
    threads: usize,
    record: Option<super::sqfs_record::Target>,
) -> io::Result<()> {
    let rec = record.map(|t| {
        Arc::new(Recorder::new(
            t,
            node_of(&img, img.root()),
            super::sqfs_record::WINDOW,
        ))
    });
    let watcher = match &rec {
        Some(r) => Some(super::sqfs_record::Watcher::start(r.clone())?),
        None => None,
    };
    let img = Arc::new(img);
    let dev = Arc::new(dev);
    let mut buf = vec![0u8; BUF];
    // The kernel's first request is INIT.
    loop {
        let n = match read_req(&dev, &mut buf)? {
            Some(n) => n,
            None => return Ok(()),
        };
        let (op, unique) = (le32(&buf, 4), le64(&buf, 8));
        if op == INIT {
            reply(&dev, unique, 0, &init_reply(&buf[IN_HEADER..n]));
            break;
        }
        reply(&dev, unique, libc::EIO, &[]);
    }
    let mut handles = Vec::new();
    for _ in 1..threads.max(1) {
        let (img, dev, rec) = (img.clone(), dev.clone(), rec.clone());
        handles.push(std::thread::spawn(move || {
            worker(&img, &dev, rec.as_deref())
        }));
    }
    let r = worker(&img, &dev, rec.as_deref());
    for h in handles {
        let _ = h.join();
    }
    if let Some(rec) = rec {
        rec.finish();
    }
    if let Some(w) = watcher {
        w.stop();
    }
    r
}

/// One request into `buf`; None once the connection is gone (unmounted).
fn read_req(dev: &OwnedFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
    loop {
        // SAFETY: reading into a buffer we own, of its length.
        let n = unsafe { libc::read(dev.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            if (n as usize) < IN_HEADER {
                return Err(io::Error::other("short FUSE request"));
            }
            return Ok(Some(n as usize));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            // An interrupted request, or a signal: read the next one.
            Some(libc::ENOENT) | Some(libc::EINTR) | Some(libc::EAGAIN) => continue,
            Some(libc::ENODEV) => return Ok(None),
            _ => return Err(e),
        }
    }
}

fn worker(img: &Image, dev: &OwnedFd, rec: Option<&Recorder>) -> io::Result<()> {
    let mut buf = vec![0u8; BUF];
    while let Some(n) = read_req(dev, &mut buf)? {
        let req = &buf[..n];
        let (op, unique, node) = (le32(req, 4), le64(req, 8), le64(req, 16));
        let arg = &req[IN_HEADER..];
        match op {
            FORGET | BATCH_FORGET | INTERRUPT => {}
            DESTROY => {
                reply(dev, unique, 0, &[]);
                return Ok(());
            }
            _ => match handle(img, op, node, arg, rec) {
                Ok(out) => reply(dev, unique, 0, &out),
                Err(e) => reply(dev, unique, e, &[]),
            },
        }
    }
    Ok(())
}

/// Write a reply; a reply to an interrupted request (ENOENT) is dropped by the kernel.
fn reply(dev: &OwnedFd, unique: u64, error: i32, body: &[u8]) {
    let len = 16 + body.len();
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&(len as u32).to_le_bytes());
    h[4..8].copy_from_slice(&(-error).to_le_bytes());
    h[8..16].copy_from_slice(&unique.to_le_bytes());
    let iov = [
        libc::iovec {
            iov_base: h.as_ptr() as *mut _,
            iov_len: 16,
        },
        libc::iovec {
            iov_base: body.as_ptr() as *mut _,
            iov_len: body.len(),
        },
    ];
    // SAFETY: two valid iovecs over live buffers; one writev is one reply.
    unsafe { libc::writev(dev.as_raw_fd(), iov.as_ptr(), 2) };
}

fn le32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}
fn le64(b: &[u8], at: usize) -> u64 {
    le32(b, at) as u64 | (le32(b, at + 4) as u64) << 32
}

fn init_reply(arg: &[u8]) -> Vec<u8> {
    let (major, minor, readahead, offered) =
        (le32(arg, 0), le32(arg, 4), le32(arg, 8), le32(arg, 12));
    let want = ASYNC_READ
        | DO_READDIRPLUS
        | READDIRPLUS_AUTO
        | NO_OPEN_SUPPORT
        | PARALLEL_DIROPS
        | MAX_PAGES
        | CACHE_SYMLINKS
        | NO_OPENDIR_SUPPORT;
    let mut o = Vec::with_capacity(64);
    o.extend_from_slice(&major.min(7).to_le_bytes());
    o.extend_from_slice(&(if major > 7 { 31 } else { minor.min(31) }).to_le_bytes());
    o.extend_from_slice(&readahead.to_le_bytes());
    o.extend_from_slice(&(offered & want).to_le_bytes());
    o.extend_from_slice(&16u16.to_le_bytes()); // max_background
    o.extend_from_slice(&12u16.to_le_bytes()); // congestion_threshold
    o.extend_from_slice(&4096u32.to_le_bytes()); // max_write (read-only)
    o.extend_from_slice(&1u32.to_le_bytes()); // time_gran
    o.extend_from_slice(&PAGES.to_le_bytes()); // max_pages
    o.extend_from_slice(&0u16.to_le_bytes()); // map_alignment
    o.resize(64, 0);
    o
}

/// `struct fuse_attr` of `i`.
fn attr(i: &Inode, blksize: u32) -> [u8; 88] {
    let mut a = [0u8; 88];
    let mut put = |at: usize, v: &[u8]| a[at..at + v.len()].copy_from_slice(v);
    put(0, &(i.ino as u64).to_le_bytes());
    put(8, &i.size.to_le_bytes());
    put(16, &i.size.div_ceil(512).to_le_bytes());
    for t in [24, 32, 40] {
        put(t, &(i.mtime as u64).to_le_bytes());
    }
    put(60, &i.mode().to_le_bytes());
    put(64, &i.nlink.max(1).to_le_bytes());
    put(68, &i.uid.to_le_bytes());
    put(72, &i.gid.to_le_bytes());
    put(76, &i.rdev.to_le_bytes());
    put(80, &blksize.to_le_bytes());
    a
}

/// `struct fuse_entry_out` for node `node` (0: a negative entry, cached as long).
fn entry_out(node: u64, i: Option<&Inode>, blksize: u32) -> Vec<u8> {
    let mut o = Vec::with_capacity(128);
    o.extend_from_slice(&node.to_le_bytes());
    o.extend_from_slice(&0u64.to_le_bytes()); // generation
    o.extend_from_slice(&VALID_SECS.to_le_bytes());
    o.extend_from_slice(&VALID_SECS.to_le_bytes());
    o.extend_from_slice(&[0u8; 8]);
    o.extend_from_slice(&i.map_or([0u8; 88], |i| attr(i, blksize)));
    o
}

/// The NUL-terminated name at the start of `arg`.
fn name(arg: &[u8]) -> Result<&[u8], i32> {
    let end = arg.iter().position(|&b| b == 0).ok_or(libc::EINVAL)?;
    Ok(&arg[..end])
}

fn handle(
    img: &Image,
    op: u32,
    node: u64,
    arg: &[u8],
    rec: Option<&Recorder>,
) -> Result<Vec<u8>, i32> {
    let r = ref_of(img, node);
    let blksize = img.sb.block_size;
    let get = |r: u64| img.inode(r).map_err(|e| errno(&e));
    match op {
        LOOKUP => {
            let dir = get(r)?;
            if dir.kind != Kind::Dir {
                return Err(libc::ENOTDIR);
            }
            let nm = name(arg)?;
            match img.lookup(r, &dir, nm).map_err(|e| errno(&e))? {
                Some(e) => {
                    let i = get(e.inode)?;
                    let child = node_of(img, e.inode);
                    if let Some(rec) = rec {
                        rec.named(node, nm, child);
                    }
                    Ok(entry_out(child, Some(&i), blksize))
                }
                None => Ok(entry_out(0, None, blksize)),
            }
        }
        GETATTR => {
            let i = get(r)?;
            let mut o = Vec::with_capacity(104);
            o.extend_from_slice(&VALID_SECS.to_le_bytes());
            o.extend_from_slice(&[0u8; 8]);
            o.extend_from_slice(&attr(&i, blksize));
            Ok(o)
        }
        READLINK => match &get(r)?.body {
            Body::Symlink(t) => Ok(t.clone()),
            _ => Err(libc::EINVAL),
        },
        // Files: ENOSYS once makes the kernel skip OPEN and RELEASE from then on and
        // keep the page cache across opens (the image is immutable): a warm mount
        // serves a file's pages to every later container without a request.
        OPEN => Err(libc::ENOSYS),
        // Directories likewise: the kernel then skips OPENDIR and RELEASEDIR (two round
        // trips per directory; measured: half of a cold `find /`'s requests).
        OPENDIR => Err(libc::ENOSYS),
        RELEASE | RELEASEDIR => Ok(Vec::new()),
        READ => {
            let (off, size) = (le64(arg, 8), le32(arg, 16));
            let i = get(r)?;
            if i.kind != Kind::File {
                return Err(libc::EISDIR);
            }
            let out = img
                .read(&i, off, size.min(1 << 20))
                .map_err(|e| errno(&e))?;
            if let Some(rec) = rec {
                rec.read(node, off.saturating_add(out.len() as u64));
            }
            Ok(out)
        }
        READDIR | READDIRPLUS => {
            let (off, size) = (le64(arg, 8), le32(arg, 16).min(1 << 20) as usize);
            let dir = get(r)?;
            if dir.kind != Kind::Dir {
                return Err(libc::ENOTDIR);
            }
            let entries = img.read_dir(r, &dir).map_err(|e| errno(&e))?;
            if let (Some(rec), 0) = (rec, off) {
                rec.listed(node);
            }
            let plus = op == READDIRPLUS;
            let out = readdir(img, node, &entries, off, size, plus, blksize);
            if let Some(rec) = rec {
                // The names the reply gave (the kernel's next requests use their nodes).
                let from = off.saturating_sub(2) as usize;
                let names = entries.iter().skip(from);
                rec.named_in(node, names.map(|e| (&e.name[..], node_of(img, e.inode))));
            }
            out
        }
        STATFS => {
            let mut o = vec![0u8; 80];
            o[0..8].copy_from_slice(&img.sb.bytes_used.div_ceil(blksize as u64).to_le_bytes());
            o[24..32].copy_from_slice(&(img.sb.inode_count as u64).to_le_bytes());
            o[40..44].copy_from_slice(&blksize.to_le_bytes());
            o[44..48].copy_from_slice(&256u32.to_le_bytes());
            o[48..52].copy_from_slice(&blksize.to_le_bytes());
            Ok(o)
        }
        // An image without extended attributes: ENOSYS once and the kernel stops asking
        // (overlay probes every directory, exec asks for security.capability).
        GETXATTR | LISTXATTR if !img.sb.has_xattrs() => Err(libc::ENOSYS),
        GETXATTR | LISTXATTR => {
            // fuse_getxattr_in: the caller's buffer size (0: asks for the size), padding;
            // GETXATTR's name follows.
            let size = le32(arg, 0) as usize;
            let attrs = img.xattrs(&*get(r)?).map_err(|e| errno(&e))?;
            let value = if op == GETXATTR {
                let want = name(arg.get(8..).ok_or(libc::EINVAL)?)?;
                match attrs.into_iter().find(|(n, _)| n == want) {
                    Some((_, v)) => v,
                    None => return Err(libc::ENODATA),
                }
            } else {
                attrs
                    .into_iter()
                    .flat_map(|(mut n, _)| {
                        n.push(0);
                        n
                    })
                    .collect()
            };
            if size == 0 {
                // fuse_getxattr_out: the size, padding.
                let mut o = (value.len() as u32).to_le_bytes().to_vec();
                o.extend_from_slice(&[0u8; 4]);
                Ok(o)
            } else if value.len() > size {
                Err(libc::ERANGE)
            } else {
                Ok(value)
            }
        }
        IOCTL => Err(libc::ENOTTY),
        ACCESS | FLUSH => Err(libc::ENOSYS),
        _ => Err(if is_write(op) {
            libc::EROFS
        } else {
            libc::ENOSYS
        }),
    }
}

/// Operations that would change the file system (SETATTR, MKNOD … RENAME2, FALLOCATE …).
fn is_write(op: u32) -> bool {
    matches!(op, 4 | 6..=13 | 16 | 21 | 24 | 30 | 35 | 43 | 45 | 47)
}

/// READDIR(PLUS) reply: entries after offset `off` (0 = start; `.` and `..` are 1 and
/// 2), as many as fit in `size` bytes.
fn readdir(
    img: &Image,
    node: u64,
    entries: &[Entry],
    off: u64,
    size: usize,
    plus: bool,
    blksize: u32,
) -> Result<Vec<u8>, i32> {
    let mut o = Vec::with_capacity(size);
    let total = entries.len() as u64 + 2;
    let mut k = off;
    while k < total {
        let (nm, ino, dtype, child): (&[u8], u64, u32, Option<u64>) = match k {
            0 => (b".", node, libc::DT_DIR as u32, None),
            1 => (b"..", 0, libc::DT_DIR as u32, None),
            _ => {
                let e = &entries[(k - 2) as usize];
                (
                    &e.name,
                    e.ino as u64,
                    e.kind.mode_bits() >> 12,
                    Some(e.inode),
                )
            }
        };
        let dirent = (24 + nm.len()).div_ceil(8) * 8;
        let need = dirent + if plus { 128 } else { 0 };
        if o.len() + need > size {
            break;
        }
        if plus {
            // `.` and `..` get no entry (node 0): the kernel skips them.
            match child {
                Some(c) => {
                    let i = img.inode(c).map_err(|e| errno(&e))?;
                    o.extend_from_slice(&entry_out(node_of(img, c), Some(&i), blksize));
                }
                None => o.extend_from_slice(&entry_out(0, None, blksize)),
            }
        }
        o.extend_from_slice(&ino.max(1).to_le_bytes());
        o.extend_from_slice(&(k + 1).to_le_bytes());
        o.extend_from_slice(&(nm.len() as u32).to_le_bytes());
        o.extend_from_slice(&dtype.to_le_bytes());
        o.extend_from_slice(nm);
        o.resize(o.len() + (dirent - 24 - nm.len()), 0);
        k += 1;
    }
    Ok(o)
}

//! Reading a squashfs back: every entry through `sqfs2tar` (owners, modes, xattrs, link
//! targets, contents), and trees of paths to compare with an oracle's.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::Command;

/// One file of a squashfs, as sqfs2tar reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ent {
    /// 'f' file, 'd' dir, 'l' symlink, 'h' hard link, 'p' fifo, 'c'/'b' devices.
    pub kind: char,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    /// Symlink or hard link target.
    pub link: String,
    pub data: Vec<u8>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

/// Every path of squashfs `img` (root as "."), via `sqfs2tar -r .`.
pub fn read_sqfs(img: &Path) -> BTreeMap<String, Ent> {
    let o = Command::new("sqfs2tar")
        .args(["-r", "."])
        .arg(img)
        .output()
        .expect("run sqfs2tar");
    assert!(o.status.success(), "sqfs2tar: {}", super::stderr(&o));
    let mut ar = tar::Archive::new(&o.stdout[..]);
    let mut out = BTreeMap::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let path = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let path = path
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        let path = if path.is_empty() || path == "." {
            ".".to_string()
        } else {
            path
        };
        let h = e.header().clone();
        let mut xattrs = BTreeMap::new();
        let mut uid = h.uid().unwrap();
        let mut gid = h.gid().unwrap();
        if let Ok(Some(exts)) = e.pax_extensions() {
            for x in exts.flatten() {
                let k = String::from_utf8_lossy(x.key_bytes()).into_owned();
                if let Some(n) = k.strip_prefix("SCHILY.xattr.") {
                    xattrs.insert(n.to_string(), x.value_bytes().to_vec());
                } else if k == "uid" {
                    uid = x.value().unwrap().parse().unwrap();
                } else if k == "gid" {
                    gid = x.value().unwrap().parse().unwrap();
                }
            }
        }
        let kind = match h.entry_type() {
            tar::EntryType::Regular => 'f',
            tar::EntryType::Directory => 'd',
            tar::EntryType::Symlink => 'l',
            tar::EntryType::Link => 'h',
            tar::EntryType::Fifo => 'p',
            tar::EntryType::Char => 'c',
            tar::EntryType::Block => 'b',
            other => panic!("unexpected entry type {other:?}"),
        };
        let link = e
            .link_name_bytes()
            .map(|l| {
                String::from_utf8_lossy(&l)
                    .trim_start_matches("./")
                    .to_string()
            })
            .unwrap_or_default();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.insert(
            path,
            Ent {
                kind,
                mode: h.mode().unwrap() & 0o7777,
                uid,
                gid,
                mtime: h.mtime().unwrap(),
                link,
                data,
                xattrs,
            },
        );
    }
    out
}

/// One path of a tree to compare: (kind, mode, uid, gid, link target or content hash).
/// Kinds: 'f' file (hard links too), 'd', 'l', 'p' fifo, 'c'/'b' devices, 's' socket.
pub type Node = (char, u32, u64, u64, String);

/// The tree of squashfs `img` (root as "."); a hard link is the file it links to.
pub fn sqfs_tree(img: &Path) -> BTreeMap<String, Node> {
    let raw = read_sqfs(img);
    let mut out = BTreeMap::new();
    for (p, e) in &raw {
        let (kind, what, src) = match e.kind {
            'h' => ('f', super::sha256_hex(&raw[&e.link].data), &raw[&e.link]),
            'f' => ('f', super::sha256_hex(&e.data), e),
            'l' => ('l', e.link.clone(), e),
            k => (k, String::new(), e),
        };
        out.insert(p.clone(), (kind, src.mode, src.uid, src.gid, what));
    }
    out
}

/// The tree of directory `root` (root as "."), symlinks not followed.
pub fn dir_tree(root: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let rel = if rel.is_empty() { ".".to_string() } else { rel };
        let ft = m.file_type();
        let (kind, what) = if ft.is_dir() {
            for e in std::fs::read_dir(&p).unwrap().flatten() {
                stack.push(e.path());
            }
            ('d', String::new())
        } else if ft.is_symlink() {
            let t = std::fs::read_link(&p).unwrap();
            ('l', t.to_string_lossy().into_owned())
        } else if ft.is_file() {
            ('f', super::sha256_hex(&std::fs::read(&p).unwrap()))
        } else if ft.is_fifo() {
            ('p', String::new())
        } else if ft.is_char_device() {
            ('c', String::new())
        } else if ft.is_block_device() {
            ('b', String::new())
        } else {
            ('s', String::new())
        };
        let node = (
            kind,
            m.mode() & 0o7777,
            m.uid().into(),
            m.gid().into(),
            what,
        );
        out.insert(rel, node);
    }
    out
}

/// Paths whose nodes differ between `want` and `got`: (path, want, got).
pub fn tree_diff(
    want: &BTreeMap<String, Node>,
    got: &BTreeMap<String, Node>,
) -> Vec<(String, Option<Node>, Option<Node>)> {
    let keys: std::collections::BTreeSet<&String> = want.keys().chain(got.keys()).collect();
    keys.into_iter()
        .filter(|k| want.get(*k) != got.get(*k))
        .map(|k| (k.clone(), want.get(k).cloned(), got.get(k).cloned()))
        .collect()
}

//! The pure core of squashing: apply layers' entries in order with OCI semantics and
//! keep the resulting tree in memory (metadata plus spool references, never bytes).
//!
//! Semantics (OCI image-spec "Applying changesets"):
//! - an entry replaces whatever was at its path (file↔dir↔symlink); a directory over a
//!   directory only updates the metadata and keeps the children;
//! - `.wh.NAME` hides NAME from lower layers; `DIR/.wh..wh..opq` hides everything lower
//!   layers put under DIR, wherever the marker comes in its layer (entries of its own
//!   layer stay);
//! - a hard link shares the inode of its target as the target was when the link was
//!   applied; a target that appears later in the same layer is waited for until the end
//!   of that layer; a missing, whited-out or directory target is an error;
//! - symlinks are never followed: an entry whose parent is a symlink is refused (the
//!   layer would write through it), as is one whose parent is any other non-directory;
//! - missing parent directories are created (0755, root, mtime 0).

use super::entry::{show, DataRef, Entry, Kind, Meta};
use anyhow::{bail, Result};
use std::collections::BTreeMap;

/// What an inode is, once layers are applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InodeKind {
    File(DataRef),
    Dir,
    Symlink(Vec<u8>),
    Fifo,
}

/// One file of the result; several paths share one when hard-linked.
#[derive(Debug, Clone)]
pub struct Inode {
    pub kind: InodeKind,
    pub meta: Meta,
}

#[derive(Debug, Clone, Copy)]
struct Node {
    inode: usize,
    /// The highest layer that created, replaced or put something under this path:
    /// whiteouts and opaque markers of layer L hide only what is older than L.
    seen: u32,
}

/// The flattened image.
#[derive(Debug)]
pub struct Tree {
    /// Path → node. Byte order puts a directory right before its descendants, and all of
    /// `d`'s descendants are in the range `d/` .. `d0` ('0' follows '/').
    nodes: BTreeMap<Vec<u8>, Node>,
    inodes: Vec<Inode>,
}

impl Default for Tree {
    fn default() -> Self {
        Tree::new()
    }
}

impl Tree {
    /// An empty image: only a root directory.
    pub fn new() -> Tree {
        let mut t = Tree {
            nodes: BTreeMap::new(),
            inodes: Vec::new(),
        };
        let root = t.new_inode(InodeKind::Dir, default_dir_meta());
        t.nodes.insert(
            Vec::new(),
            Node {
                inode: root,
                seen: 0,
            },
        );
        t
    }

    fn new_inode(&mut self, kind: InodeKind, meta: Meta) -> usize {
        self.inodes.push(Inode { kind, meta });
        self.inodes.len() - 1
    }

    /// Apply layer `layer` (1-based: 0 is "before any layer").
    pub fn apply(&mut self, layer: u32, entries: Vec<Entry>) -> Result<()> {
        let mut pending = Vec::new();
        for e in entries {
            match &e.kind {
                Kind::Whiteout => self.hide_lower(&e.path, layer),
                Kind::Opaque => {
                    if self.is_dir(&e.path) {
                        for child in self.children(&e.path) {
                            self.hide_lower(&child, layer);
                        }
                    }
                }
                Kind::Hardlink(target) => {
                    if self.nodes.contains_key(target.as_slice()) {
                        self.link(layer, &e.path, target)?;
                    } else {
                        self.prepare_parents(layer, &e.path)?;
                        pending.push(e);
                    }
                }
                _ => self.put(layer, e)?,
            }
        }
        for e in pending {
            if let Kind::Hardlink(target) = &e.kind {
                if !self.nodes.contains_key(target.as_slice()) {
                    bail!(
                        "entry {}: hard link to {}, which is not in the image",
                        show(&e.path),
                        show(target)
                    );
                }
                self.link(layer, &e.path, target)?;
            }
        }
        Ok(())
    }

    fn is_dir(&self, path: &[u8]) -> bool {
        self.nodes
            .get(path)
            .is_some_and(|n| self.inodes[n.inode].kind == InodeKind::Dir)
    }

    /// Direct children of `dir`.
    fn children(&self, dir: &[u8]) -> Vec<Vec<u8>> {
        let depth = |p: &[u8]| p.iter().filter(|&&b| b == b'/').count();
        let want = if dir.is_empty() { 0 } else { depth(dir) + 1 };
        self.descendants(dir)
            .filter(|p| depth(p) == want)
            .cloned()
            .collect()
    }

    fn descendants<'a>(&'a self, dir: &[u8]) -> impl Iterator<Item = &'a Vec<u8>> + 'a {
        let (lo, hi) = subtree_bounds(dir);
        self.nodes
            .range::<[u8], _>((
                std::ops::Bound::Included(lo.as_slice()),
                match &hi {
                    Some(h) => std::ops::Bound::Excluded(h.as_slice()),
                    None => std::ops::Bound::Unbounded,
                },
            ))
            .map(|(k, _)| k)
            .filter(move |k| !k.is_empty())
    }

    fn remove_subtree(&mut self, path: &[u8]) {
        let doomed: Vec<Vec<u8>> = self.descendants(path).cloned().collect();
        for d in doomed {
            self.nodes.remove(&d);
        }
        if !path.is_empty() {
            self.nodes.remove(path);
        }
    }

    /// Remove what layers older than `layer` put at `path`, keeping what `layer` itself
    /// put there (and the directories leading to it).
    fn hide_lower(&mut self, path: &[u8], layer: u32) {
        let Some(n) = self.nodes.get(path).copied() else {
            return;
        };
        if n.seen < layer {
            self.remove_subtree(path);
        } else if self.inodes[n.inode].kind == InodeKind::Dir {
            for c in self.children(path) {
                self.hide_lower(&c, layer);
            }
        }
    }

    /// Make sure every proper ancestor of `path` is a directory (creating missing ones)
    /// and mark them as touched by `layer`.
    fn prepare_parents(&mut self, layer: u32, path: &[u8]) -> Result<()> {
        let mut end = 0;
        while let Some(i) = path[end..].iter().position(|&b| b == b'/') {
            let anc = &path[..end + i];
            end += i + 1;
            match self.nodes.get_mut(anc) {
                Some(n) => {
                    let ino = n.inode;
                    match &self.inodes[ino].kind {
                        InodeKind::Dir => n.seen = n.seen.max(layer),
                        InodeKind::Symlink(_) => bail!(
                            "entry {}: parent {} is a symlink (layers may not write through symlinks)",
                            show(path),
                            show(anc)
                        ),
                        _ => bail!(
                            "entry {}: parent {} is not a directory",
                            show(path),
                            show(anc)
                        ),
                    }
                }
                None => {
                    let ino = self.new_inode(InodeKind::Dir, default_dir_meta());
                    self.nodes.insert(
                        anc.to_vec(),
                        Node {
                            inode: ino,
                            seen: layer,
                        },
                    );
                }
            }
        }
        if let Some(root) = self.nodes.get_mut(&[][..]) {
            root.seen = root.seen.max(layer);
        }
        Ok(())
    }

    fn put(&mut self, layer: u32, e: Entry) -> Result<()> {
        self.prepare_parents(layer, &e.path)?;
        let kind = match e.kind {
            Kind::File(d) => InodeKind::File(d),
            Kind::Dir => InodeKind::Dir,
            Kind::Symlink(t) => InodeKind::Symlink(t),
            Kind::Fifo => InodeKind::Fifo,
            Kind::Hardlink(_) | Kind::Whiteout | Kind::Opaque => unreachable!("handled in apply"),
        };
        if let Some(n) = self.nodes.get_mut(e.path.as_slice()) {
            let ino = n.inode;
            if kind == InodeKind::Dir && self.inodes[ino].kind == InodeKind::Dir {
                // Directory over directory: new metadata, children stay.
                n.seen = layer;
                self.inodes[ino].meta = e.meta;
                return Ok(());
            }
            self.remove_subtree(&e.path);
        }
        let ino = self.new_inode(kind, e.meta);
        self.nodes.insert(
            e.path,
            Node {
                inode: ino,
                seen: layer,
            },
        );
        Ok(())
    }

    fn link(&mut self, layer: u32, path: &[u8], target: &[u8]) -> Result<()> {
        if path == target {
            bail!("entry {}: hard link to itself", show(path));
        }
        let t = self.nodes[target];
        if self.inodes[t.inode].kind == InodeKind::Dir {
            bail!(
                "entry {}: hard link to directory {}",
                show(path),
                show(target)
            );
        }
        self.prepare_parents(layer, path)?;
        if self.nodes.contains_key(path) {
            self.remove_subtree(path);
        }
        self.nodes.insert(
            path.to_vec(),
            Node {
                inode: t.inode,
                seen: layer,
            },
        );
        Ok(())
    }

    /// Entries of the result in path order (a directory before its contents), with the
    /// root first as the empty path.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], usize, &Inode)> + '_ {
        self.nodes
            .iter()
            .map(|(p, n)| (p.as_slice(), n.inode, &self.inodes[n.inode]))
    }

    /// Number of paths, root included.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Never: the root is always there.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The inode at `path`, for tests and checks.
    pub fn get(&self, path: &str) -> Option<&Inode> {
        self.nodes
            .get(path.as_bytes())
            .map(|n| &self.inodes[n.inode])
    }

    /// Whether two paths share an inode (hard links).
    pub fn same_inode(&self, a: &str, b: &str) -> bool {
        match (self.nodes.get(a.as_bytes()), self.nodes.get(b.as_bytes())) {
            (Some(x), Some(y)) => x.inode == y.inode,
            _ => false,
        }
    }
}

fn default_dir_meta() -> Meta {
    Meta {
        mode: 0o755,
        ..Meta::default()
    }
}

/// `[dir/, dir0)` for a non-root dir; everything for the root.
fn subtree_bounds(dir: &[u8]) -> (Vec<u8>, Option<Vec<u8>>) {
    if dir.is_empty() {
        return (Vec::new(), None);
    }
    let mut lo = dir.to_vec();
    lo.push(b'/');
    let mut hi = dir.to_vec();
    hi.push(b'0');
    (lo, Some(hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(mode: u32) -> Meta {
        Meta {
            mode,
            ..Meta::default()
        }
    }
    fn file(p: &str, off: u64) -> Entry {
        Entry {
            path: p.into(),
            kind: Kind::File(DataRef {
                spool: 0,
                offset: off,
                len: 1,
            }),
            meta: m(0o644),
        }
    }
    fn dir(p: &str) -> Entry {
        Entry {
            path: p.into(),
            kind: Kind::Dir,
            meta: m(0o755),
        }
    }
    fn sym(p: &str, t: &str) -> Entry {
        Entry {
            path: p.into(),
            kind: Kind::Symlink(t.into()),
            meta: m(0o777),
        }
    }
    fn link(p: &str, t: &str) -> Entry {
        Entry {
            path: p.into(),
            kind: Kind::Hardlink(t.into()),
            meta: m(0o644),
        }
    }
    fn wh(p: &str) -> Entry {
        Entry {
            path: p.into(),
            kind: Kind::Whiteout,
            meta: m(0),
        }
    }
    fn opq(p: &str) -> Entry {
        Entry {
            path: p.into(),
            kind: Kind::Opaque,
            meta: m(0),
        }
    }
    fn paths(t: &Tree) -> Vec<String> {
        t.iter()
            .map(|(p, _, _)| String::from_utf8_lossy(p).into_owned())
            .collect()
    }

    #[test]
    fn whiteout_hides_lower_only() {
        let mut t = Tree::new();
        t.apply(
            1,
            vec![dir("a"), file("a/x", 0), file("a/y", 1), file("b", 2)],
        )
        .unwrap();
        t.apply(2, vec![wh("a/x"), wh("b"), wh("nothere/z")])
            .unwrap();
        assert_eq!(paths(&t), ["", "a", "a/y"]);
    }

    #[test]
    fn opaque_after_new_files_keeps_them() {
        let mut t = Tree::new();
        t.apply(
            1,
            vec![dir("d"), file("d/old", 0), dir("d/sub"), file("d/sub/o", 1)],
        )
        .unwrap();
        t.apply(2, vec![file("d/new", 2), file("d/sub/n", 3), opq("d")])
            .unwrap();
        assert_eq!(paths(&t), ["", "d", "d/new", "d/sub", "d/sub/n"]);
    }

    #[test]
    fn replacement_kinds() {
        let mut t = Tree::new();
        t.apply(
            1,
            vec![dir("x"), file("x/f", 0), file("y", 1), sym("z", "/etc")],
        )
        .unwrap();
        t.apply(2, vec![file("x", 2), dir("y"), dir("z"), file("z/in", 3)])
            .unwrap();
        assert_eq!(paths(&t), ["", "x", "y", "z", "z/in"]);
        assert!(matches!(t.get("x").unwrap().kind, InodeKind::File(_)));
    }

    #[test]
    fn dir_over_dir_keeps_children_and_takes_meta() {
        let mut t = Tree::new();
        t.apply(1, vec![dir("d"), file("d/f", 0)]).unwrap();
        let mut d = dir("d");
        d.meta.mode = 0o555;
        d.meta.uid = 1001;
        t.apply(2, vec![d]).unwrap();
        assert_eq!(paths(&t), ["", "d", "d/f"]);
        assert_eq!(t.get("d").unwrap().meta.uid, 1001);
    }

    #[test]
    fn hardlinks_across_layers_and_forward() {
        let mut t = Tree::new();
        t.apply(1, vec![file("a", 0)]).unwrap();
        t.apply(2, vec![link("b", "a"), link("c", "d"), file("d", 1)])
            .unwrap();
        assert!(t.same_inode("a", "b"));
        assert!(t.same_inode("c", "d"));
        // Replacing the target later leaves the link with the old content.
        t.apply(3, vec![file("a", 5)]).unwrap();
        assert!(!t.same_inode("a", "b"));
    }

    #[test]
    fn bad_hardlinks_refused() {
        let mut t = Tree::new();
        t.apply(1, vec![file("a", 0), dir("dd")]).unwrap();
        t.apply(2, vec![wh("a")]).unwrap();
        let e = t.apply(3, vec![link("b", "a")]).unwrap_err();
        assert!(format!("{e}").contains("not in the image"), "{e}");
        let e = t.apply(3, vec![link("c", "dd")]).unwrap_err();
        assert!(format!("{e}").contains("directory"), "{e}");
    }

    #[test]
    fn writing_through_symlink_refused() {
        let mut t = Tree::new();
        t.apply(1, vec![sym("etc", "/host/etc")]).unwrap();
        let e = t.apply(2, vec![file("etc/passwd", 0)]).unwrap_err();
        assert!(format!("{e}").contains("symlink"), "{e}");
        // Same layer too.
        let mut t = Tree::new();
        let e = t.apply(1, vec![sym("l", "/"), file("l/x", 0)]).unwrap_err();
        assert!(format!("{e}").contains("/l is a symlink"), "{e}");
    }

    #[test]
    fn implicit_parents_created() {
        let mut t = Tree::new();
        t.apply(1, vec![file("a/b/c", 0)]).unwrap();
        assert_eq!(paths(&t), ["", "a", "a/b", "a/b/c"]);
        assert_eq!(t.get("a").unwrap().meta.mode, 0o755);
    }

    #[test]
    fn root_entry_sets_root_meta() {
        let mut t = Tree::new();
        let mut r = dir("");
        r.meta.mode = 0o700;
        t.apply(1, vec![r, file("f", 0)]).unwrap();
        assert_eq!(t.get("").unwrap().meta.mode, 0o700);
        assert_eq!(paths(&t), ["", "f"]);
    }

    #[test]
    fn siblings_with_prefix_names_unaffected() {
        let mut t = Tree::new();
        t.apply(
            1,
            vec![dir("a"), file("a/x", 0), file("a.b", 1), file("a0", 2)],
        )
        .unwrap();
        t.apply(2, vec![wh("a")]).unwrap();
        assert_eq!(paths(&t), ["", "a.b", "a0"]);
    }
}

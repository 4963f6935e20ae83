//! Property-based tests of the layer pipeline a hostile image goes through: arbitrary
//! tar entries (names with `..`, absolute paths, `./`, whiteouts, opaque markers, hard
//! links and symlinks pointing anywhere) parsed by [`super::layer`] and applied in
//! layers by [`super::flatten`]. Whatever comes in: no panic, and on success no path of
//! the tree escapes the root (no `..`, no absolute or empty component, every ancestor a
//! real directory, never a symlink) and the root stays a directory.

use super::entry::normalise;
use super::flatten::{InodeKind, Tree};
use super::layer;
use super::spool::Spool;
use super::Limits;
use proptest::prelude::*;

/// One raw tar entry: a type and name bytes (and a link target).
#[derive(Debug, Clone)]
enum Raw {
    File(String, Vec<u8>),
    Dir(String),
    Symlink(String, String),
    Hardlink(String, String),
    Fifo(String),
    Whiteout(String),
}

/// Path components drawn from a small alphabet so that entries collide often, with the
/// hostile ones mixed in.
fn name() -> impl Strategy<Value = String> {
    // Weighted so that most layers parse (a `..` anywhere refuses the whole layer).
    let comp = prop_oneof![
        12 => "[abc]",
        3 => ".wh.[abc]",
        1 => Just("..".to_string()),
        1 => Just(".".to_string()),
        1 => Just("".to_string()),
        2 => Just(".wh..wh..opq".to_string()),
        1 => "[a-z.]{1,4}",
    ];
    (any::<bool>(), proptest::collection::vec(comp, 1..4)).prop_map(|(abs, v)| {
        let p = v.join("/");
        if abs {
            format!("/{p}")
        } else {
            p
        }
    })
}

fn raw() -> impl Strategy<Value = Raw> {
    prop_oneof![
        (name(), proptest::collection::vec(any::<u8>(), 0..8)).prop_map(|(n, d)| Raw::File(n, d)),
        name().prop_map(Raw::Dir),
        (name(), name()).prop_map(|(n, t)| Raw::Symlink(n, t)),
        (name(), name()).prop_map(|(n, t)| Raw::Hardlink(n, t)),
        name().prop_map(Raw::Fifo),
        name().prop_map(Raw::Whiteout),
    ]
}

/// A tar stream of `entries`, names written raw (the tar crate refuses `..`).
fn tar_of(entries: &[Raw]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let (path, typ, data, link): (&str, tar::EntryType, &[u8], &str) = match e {
            Raw::File(p, d) => (p, tar::EntryType::Regular, d, ""),
            Raw::Dir(p) => (p, tar::EntryType::Directory, &[], ""),
            Raw::Symlink(p, t) => (p, tar::EntryType::Symlink, &[], t),
            Raw::Hardlink(p, t) => (p, tar::EntryType::Link, &[], t),
            Raw::Fifo(p) => (p, tar::EntryType::Fifo, &[], ""),
            // A 0:0 character device is an overlayfs-style whiteout.
            Raw::Whiteout(p) => (p, tar::EntryType::Char, &[], ""),
        };
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(typ);
        h.set_mode(0o755);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        let n = path.as_bytes();
        let l = link.as_bytes();
        if n.len() > 100 || l.len() > 100 {
            continue;
        }
        h.as_old_mut().name[..n.len()].copy_from_slice(n);
        h.as_old_mut().linkname[..l.len()].copy_from_slice(l);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

fn check_tree(t: &Tree) -> Result<(), TestCaseError> {
    let mut root_seen = false;
    for (path, _, inode) in t.iter() {
        if path.is_empty() {
            root_seen = true;
            prop_assert_eq!(&inode.kind, &InodeKind::Dir, "the root is not a directory");
            continue;
        }
        // Already normal: normalising changes nothing and finds no `..`.
        let again = normalise(path).ok();
        prop_assert_eq!(again.as_deref(), Some(path), "path {:?}", path);
        prop_assert!(!path.split(|&b| b == b'/').any(|c| c.starts_with(b".wh.")));
        let mut end = 0;
        while let Some(i) = path[end..].iter().position(|&b| b == b'/') {
            let anc = String::from_utf8_lossy(&path[..end + i]).into_owned();
            let a = t.get(&anc);
            prop_assert!(
                a.is_some_and(|a| a.kind == InodeKind::Dir),
                "ancestor {anc} of {:?} is {:?}",
                String::from_utf8_lossy(path),
                a.map(|a| &a.kind)
            );
            end += i + 1;
        }
    }
    prop_assert!(root_seen);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn layers_never_escape_the_root(
        layers in proptest::collection::vec(proptest::collection::vec(raw(), 0..12), 1..4)
    ) {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits { max_entries: 1000, max_file_size: 1 << 20 };
        let mut tree = Tree::new();
        for (i, l) in layers.iter().enumerate() {
            let mut spool = Spool::create(dir.path()).unwrap();
            let Ok(parsed) = layer::parse(&tar_of(l)[..], &mut spool, i as u32, &limits, 1000)
            else {
                continue;
            };
            // A refused layer fails the pull; the tree is not used after that.
            if tree.apply(i as u32 + 1, parsed.entries).is_err() {
                return Ok(());
            }
            check_tree(&tree)?;
        }
    }

    #[test]
    fn normalised_paths_have_no_dot_components(raw in proptest::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(p) = normalise(&raw) {
            prop_assert!(!p.starts_with(b"/") && !p.ends_with(b"/"));
            for c in p.split(|&b| b == b'/') {
                prop_assert!(!p.is_empty() || c.is_empty());
                prop_assert!(p.is_empty() || (c != b"." && c != b".." && !c.is_empty()));
            }
            let again = normalise(&p);
            prop_assert_eq!(again.as_ref(), Ok(&p), "idempotent");
        }
    }
}

/// The case proptest found: a marker name as a parent directory.
#[test]
fn whiteout_names_are_no_parents() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_entries: 10,
        max_file_size: 10,
    };
    for p in [".wh..wh..opq/a", "x/.wh.y/z"] {
        let mut spool = Spool::create(dir.path()).unwrap();
        let t = tar_of(&[Raw::File(p.into(), vec![])]);
        let Err(e) = layer::parse(&t[..], &mut spool, 0, &limits, 10) else {
            panic!("{p}: accepted");
        };
        assert!(
            format!("{e:#}").contains("reserved whiteout name"),
            "{p}: {e:#}"
        );
    }
}

//! Choosing the user namespace's ID maps from the user's subordinate ID ranges. Pure:
//! no I/O, so every table in docs/run.md is a unit test here.
//!
//! * keep-id (default): inside ID `U` is the user's own host ID `U`; the ranges fill the
//!   other inside IDs from 0 upward, skipping `U` (so 0, 48, 1001, 65534 of an image all
//!   exist inside and files written to bind mounts belong to the user on the host).
//! * remap-root: inside 0 is the user's own ID; the ranges fill 1, 2, … upward.
//! * single: no range; only the user's own ID is mapped (inside `U`, or 0 with remap-root).

/// One line of `/proc/PID/uid_map`: `inside outside count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub inside: u32,
    pub outside: u32,
    pub count: u32,
}

/// Who the user is inside the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// Inside UID/GID equal the host ones (Podman's `--userns=keep-id`).
    KeepId,
    /// The user is UID/GID 0 inside (Podman's default rootless map).
    RemapRoot,
}

/// The maps for one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdMap {
    pub uid: Vec<Extent>,
    pub gid: Vec<Extent>,
    /// The user's own UID and GID as seen inside.
    pub inside_uid: u32,
    pub inside_gid: u32,
    /// True when no range was available for UIDs or GIDs: only the own ID is mapped and
    /// the map is written by the process itself (no setuid helper, setgroups denied).
    pub single: bool,
}

/// The kernel accepts at most 340 extents per map; leave room for the own ID.
const MAX_EXTENTS: usize = 300;
/// IDs above this are never mapped (2^32-1 is "no ID").
const INSIDE_LIMIT: u64 = u32::MAX as u64 - 1;

/// The extents for one kind of ID (UID or GID).
fn extents(identity: Identity, own: u32, ranges: &[(u64, u64)]) -> (Vec<Extent>, u32) {
    let inside_own = match identity {
        Identity::KeepId => own,
        Identity::RemapRoot => 0,
    };
    let mut out = vec![Extent {
        inside: inside_own,
        outside: own,
        count: 1,
    }];
    let mut next: u64 = match identity {
        Identity::KeepId => 0,
        Identity::RemapRoot => 1,
    };
    for &(start, count) in ranges {
        let (mut start, mut count) = (start, count);
        while count > 0 && out.len() < MAX_EXTENTS && next <= INSIDE_LIMIT {
            if identity == Identity::KeepId && next == own as u64 {
                next += 1;
                continue;
            }
            let mut chunk = count.min(INSIDE_LIMIT + 1 - next);
            if identity == Identity::KeepId && next < own as u64 {
                chunk = chunk.min(own as u64 - next);
            }
            out.push(Extent {
                inside: next as u32,
                outside: start as u32,
                count: chunk as u32,
            });
            next += chunk;
            start += chunk;
            count -= chunk;
        }
    }
    (out, inside_own)
}

/// Build the maps. `uid_ranges`/`gid_ranges` are `(start, count)` from /etc/subuid and
/// /etc/subgid in file order; if either is empty, both maps fall back to the single ID.
pub fn choose(
    identity: Identity,
    uid: u32,
    gid: u32,
    uid_ranges: &[(u64, u64)],
    gid_ranges: &[(u64, u64)],
) -> IdMap {
    let single = uid_ranges.is_empty() || gid_ranges.is_empty();
    let none: &[(u64, u64)] = &[];
    let (ur, gr) = if single {
        (none, none)
    } else {
        (uid_ranges, gid_ranges)
    };
    let (u, inside_uid) = extents(identity, uid, ur);
    let (g, inside_gid) = extents(identity, gid, gr);
    IdMap {
        uid: u,
        gid: g,
        inside_uid,
        inside_gid,
        single,
    }
}

impl IdMap {
    /// The text written to `/proc/PID/uid_map` (or `gid_map`).
    pub fn map_text(extents: &[Extent]) -> String {
        extents
            .iter()
            .map(|e| format!("{} {} {}\n", e.inside, e.outside, e.count))
            .collect()
    }

    /// Arguments for newuidmap/newgidmap after the PID: `inside outside count …`.
    pub fn helper_args(extents: &[Extent]) -> Vec<String> {
        extents
            .iter()
            .flat_map(|e| [e.inside, e.outside, e.count])
            .map(|n| n.to_string())
            .collect()
    }

    /// True when the inside ID is mapped (e.g. to decide whether `gid=5` is usable).
    pub fn maps_gid(&self, inside: u32) -> bool {
        mapped(&self.gid, inside)
    }

    /// True when the inside UID is mapped.
    pub fn maps_uid(&self, inside: u32) -> bool {
        mapped(&self.uid, inside)
    }
}

fn mapped(ext: &[Extent], inside: u32) -> bool {
    ext.iter()
        .any(|e| inside >= e.inside && (inside as u64) < e.inside as u64 + e.count as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(inside: u32, outside: u32, count: u32) -> Extent {
        Extent {
            inside,
            outside,
            count,
        }
    }

    #[test]
    fn keep_id_splits_range_around_own_id() {
        let m = choose(
            Identity::KeepId,
            1001,
            1001,
            &[(100000, 65536)],
            &[(100000, 65536)],
        );
        assert_eq!(
            m.uid,
            vec![
                ex(1001, 1001, 1),
                ex(0, 100000, 1001),
                ex(1002, 101001, 64535)
            ]
        );
        assert_eq!(m.inside_uid, 1001);
        assert!(!m.single);
        for id in [0, 48, 1001, 65534, 65536] {
            assert!(m.maps_uid(id), "{id}");
        }
        assert!(!m.maps_uid(65537));
    }

    #[test]
    fn keep_id_with_large_uid() {
        let m = choose(
            Identity::KeepId,
            5_000_000,
            5_000_000,
            &[(100000, 65536)],
            &[(100000, 65536)],
        );
        assert_eq!(
            m.uid,
            vec![ex(5_000_000, 5_000_000, 1), ex(0, 100000, 65536)]
        );
    }

    #[test]
    fn remap_root() {
        let m = choose(
            Identity::RemapRoot,
            1001,
            1001,
            &[(100000, 65536)],
            &[(100000, 65536)],
        );
        assert_eq!(m.uid, vec![ex(0, 1001, 1), ex(1, 100000, 65536)]);
        assert_eq!(m.inside_uid, 0);
    }

    #[test]
    fn several_ranges_are_concatenated() {
        let m = choose(
            Identity::RemapRoot,
            7,
            7,
            &[(100, 10), (500, 5)],
            &[(100, 10)],
        );
        assert_eq!(m.uid, vec![ex(0, 7, 1), ex(1, 100, 10), ex(11, 500, 5)]);
    }

    #[test]
    fn no_range_is_single() {
        let m = choose(Identity::KeepId, 1002, 1002, &[], &[(1, 2)]);
        assert!(m.single);
        assert_eq!(m.uid, vec![ex(1002, 1002, 1)]);
        assert_eq!(m.gid, vec![ex(1002, 1002, 1)]);
        assert_eq!(IdMap::map_text(&m.uid), "1002 1002 1\n");
    }

    #[test]
    fn helper_args_flatten() {
        assert_eq!(
            IdMap::helper_args(&[ex(0, 7, 1), ex(1, 100, 10)]),
            ["0", "7", "1", "1", "100", "10"]
        );
    }
}

//! Sets of IDs as sorted, merged half-open intervals `[start, end)`: occupancy for the
//! first-fit planner and overlap lookups for the checker. Pure.

use std::collections::BTreeMap;

/// Disjoint, merged intervals keyed by start.
#[derive(Debug, Clone, Default)]
pub struct IdSet {
    map: BTreeMap<u64, u64>,
}

impl IdSet {
    /// An empty set.
    pub fn new() -> IdSet {
        IdSet::default()
    }

    /// Add `[start, end)`, merging with neighbours it touches or overlaps.
    pub fn insert(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let (mut s, mut e) = (start, end);
        // The interval starting at or before `s` may reach into it.
        if let Some((&ps, &pe)) = self.map.range(..=s).next_back() {
            if pe >= s {
                s = ps;
                e = e.max(pe);
                self.map.remove(&ps);
            }
        }
        // Intervals starting inside `[s, e]` are absorbed.
        let inside: Vec<(u64, u64)> = self.map.range(s..=e).map(|(&a, &b)| (a, b)).collect();
        for (a, b) in inside {
            e = e.max(b);
            self.map.remove(&a);
        }
        self.map.insert(s, e);
    }

    /// Add one ID.
    pub fn insert_id(&mut self, id: u64) {
        self.insert(id, id + 1);
    }

    /// The first stored interval that overlaps `[start, end)`, if any.
    pub fn overlap(&self, start: u64, end: u64) -> Option<(u64, u64)> {
        if start >= end {
            return None;
        }
        if let Some((&a, &b)) = self.map.range(..=start).next_back() {
            if b > start {
                return Some((a, b));
            }
        }
        self.map.range(start..end).next().map(|(&a, &b)| (a, b))
    }

    /// Lowest `s >= from` with `[s, s+size)` free and `s+size <= limit`.
    pub fn first_fit(&self, from: u64, size: u64, limit: u64) -> Option<u64> {
        let mut s = from;
        if let Some((_, &b)) = self.map.range(..=s).next_back() {
            s = s.max(b);
        }
        for (&a, &b) in self.map.range(s..) {
            if a >= s.checked_add(size)? {
                break;
            }
            s = s.max(b);
        }
        (s.checked_add(size)? <= limit).then_some(s)
    }

    /// Number of merged intervals.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when no ID is in the set.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_and_finds_overlaps() {
        let mut s = IdSet::new();
        s.insert(10, 20);
        s.insert(20, 30);
        s.insert(40, 50);
        s.insert(5, 12);
        assert_eq!(s.len(), 2);
        assert_eq!(s.overlap(0, 5), None);
        assert_eq!(s.overlap(0, 6), Some((5, 30)));
        assert_eq!(s.overlap(30, 40), None);
        assert_eq!(s.overlap(35, 41), Some((40, 50)));
        assert_eq!(s.overlap(45, 46), Some((40, 50)));
        s.insert(25, 45);
        assert_eq!(s.len(), 1);
        assert_eq!(s.overlap(49, 60), Some((5, 50)));
    }

    #[test]
    fn first_fit_fills_gaps() {
        let mut s = IdSet::new();
        s.insert(100, 110);
        s.insert(120, 200);
        assert_eq!(s.first_fit(100, 10, 1000), Some(110));
        assert_eq!(s.first_fit(100, 11, 1000), Some(200));
        assert_eq!(s.first_fit(0, 100, 1000), Some(0));
        assert_eq!(s.first_fit(0, 101, 1000), Some(200));
        assert_eq!(s.first_fit(150, 10, 205), None);
        assert_eq!(s.first_fit(150, 5, 205), Some(200));
    }
}

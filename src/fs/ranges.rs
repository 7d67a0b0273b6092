//! A set of byte ranges, kept sorted and merged: which parts of a file are
//! written locally, or present in its staging file.

use std::ops::Range;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    ranges: Vec<Range<u64>>,
}

impl RangeSet {
    pub fn new() -> Self {
        RangeSet::default()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Range<u64>> {
        self.ranges.iter()
    }

    pub fn insert(&mut self, r: Range<u64>) {
        if r.start >= r.end {
            return;
        }
        let mut merged = r;
        let mut out = Vec::with_capacity(self.ranges.len() + 1);
        let mut placed = false;
        for cur in self.ranges.drain(..) {
            if cur.end < merged.start {
                out.push(cur);
            } else if merged.end < cur.start {
                if !placed {
                    out.push(merged.clone());
                    placed = true;
                }
                out.push(cur);
            } else {
                merged = merged.start.min(cur.start)..merged.end.max(cur.end);
            }
        }
        if !placed {
            out.push(merged);
        }
        self.ranges = out;
    }

    /// Drops everything at or beyond `len`.
    pub fn truncate(&mut self, len: u64) {
        self.ranges.retain(|r| r.start < len);
        if let Some(last) = self.ranges.last_mut() {
            last.end = last.end.min(len);
        }
    }

    /// The parts of `r` not in the set.
    pub fn gaps(&self, r: Range<u64>) -> Vec<Range<u64>> {
        let mut out = Vec::new();
        let mut pos = r.start;
        for cur in &self.ranges {
            if cur.end <= pos {
                continue;
            }
            if cur.start >= r.end {
                break;
            }
            if cur.start > pos {
                out.push(pos..cur.start.min(r.end));
            }
            pos = pos.max(cur.end);
            if pos >= r.end {
                break;
            }
        }
        if pos < r.end {
            out.push(pos..r.end);
        }
        out
    }

    /// Whether the set holds all of `r`.
    pub fn covers(&self, r: Range<u64>) -> bool {
        r.start >= r.end || self.gaps(r).is_empty()
    }

    /// Whether the set holds any byte of `r`.
    pub fn overlaps(&self, r: &Range<u64>) -> bool {
        self.ranges
            .iter()
            .any(|c| c.start < r.end && r.start < c.end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_merges_and_gaps_complement() {
        let mut s = RangeSet::new();
        s.insert(10..20);
        s.insert(30..40);
        s.insert(15..32);
        assert_eq!(s.iter().cloned().collect::<Vec<_>>(), vec![10..40]);
        s.insert(40..45);
        s.insert(0..5);
        assert_eq!(s.iter().cloned().collect::<Vec<_>>(), [0..5, 10..45]);
        assert_eq!(s.gaps(0..50), [5..10, 45..50]);
        assert_eq!(s.gaps(12..20), Vec::<Range<u64>>::new());
        assert!(s.covers(11..44));
        assert!(!s.covers(4..6));
        assert!(s.overlaps(&(44..100)));
        assert!(!s.overlaps(&(5..10)));
        s.truncate(12);
        assert_eq!(s.iter().cloned().collect::<Vec<_>>(), [0..5, 10..12]);
    }
}

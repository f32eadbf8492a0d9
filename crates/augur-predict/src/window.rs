//! One metric's recent samples, oldest first, in 6 bytes a sample.
//!
//! A node keeps a window for every metric of every component (a million components × 8
//! metrics × 64 samples), so the layout is what the memory target rests on:
//!
//! - values are f32, in a ring of `capacity` slots;
//! - timestamps are not stored: each slot holds its **gap** from the sample before it, in ms,
//!   as a u16 (scrapes up to 65.5 s apart), and the window keeps the newest timestamp and the
//!   oldest. A gap that does not fit a u16 widens the gaps to u32 (49 days) for as long as
//!   such a gap is in the window; a sample more than 49 days after the newest starts the
//!   window afresh.
//!
//! Timestamps come back exact: every reader walks the window in order ([`Window::iter`]).

/// A ring of `(ts_ms, value)` in time order, with at most `capacity` samples.
#[derive(Debug, Clone)]
pub struct Window {
    values: Box<[f32]>,
    /// Gap (ms) from the sample before, per slot; the oldest's is 0. One u16 a slot, or two
    /// (low, high) while wide.
    gaps: Box<[u16]>,
    head: u32,
    len: u32,
    first_ms: i64,
    last_ms: i64,
    /// Gaps in the window that need more than a u16.
    wide_gaps: u32,
}

impl Window {
    /// An empty window of `capacity` samples (at least 2).
    pub fn new(capacity: usize) -> Self {
        let cap = capacity.clamp(2, u32::MAX as usize);
        Self {
            values: vec![0.0; cap].into_boxed_slice(),
            gaps: vec![0; cap].into_boxed_slice(),
            head: 0,
            len: 0,
            first_ms: 0,
            last_ms: 0,
            wide_gaps: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.values.len()
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.values.len() * 4 + self.gaps.len() * 2
    }

    /// The newest timestamp.
    pub fn last_ms(&self) -> Option<i64> {
        (self.len > 0).then_some(self.last_ms)
    }

    /// Whether a sample at `ts_ms` is in the window.
    pub fn contains(&self, ts_ms: i64) -> bool {
        self.len > 0
            && (self.first_ms..=self.last_ms).contains(&ts_ms)
            && self.iter().rev().any(|(t, _)| t == ts_ms)
    }

    /// The samples, oldest first.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            w: self,
            front: 0,
            back: self.len,
            t_front: self.first_ms,
            t_back: self.last_ms,
        }
    }

    /// Puts a sample in time order (the caller rejects a timestamp already held). When the
    /// window is full the oldest sample goes, which is the new one when it is older than all:
    /// then, or when it is too far before the oldest to be held, `false` and nothing changed.
    pub fn insert(&mut self, ts_ms: i64, value: f32) -> bool {
        if self.len == 0 {
            self.start(ts_ms, value);
        } else if ts_ms > self.last_ms {
            let Some(gap) = gap_ms(ts_ms, self.last_ms) else {
                // More than 49 days after the newest: the window is history.
                self.start(ts_ms, value);
                return true;
            };
            if self.len() == self.capacity() {
                self.pop_front();
            }
            let i = self.len;
            self.len += 1;
            self.values[self.slot(i)] = value;
            self.set_gap(i, gap);
            self.last_ms = ts_ms;
        } else if ts_ms < self.first_ms {
            let Some(gap) = gap_ms(self.first_ms, ts_ms) else {
                return false;
            };
            if self.len() == self.capacity() {
                return false;
            }
            self.head = (self.head + self.capacity() as u32 - 1) % self.capacity() as u32;
            self.len += 1;
            self.values[self.slot(0)] = value;
            self.set_gap(0, 0);
            self.set_gap(1, gap);
            self.first_ms = ts_ms;
        } else {
            if self.len() == self.capacity() {
                self.pop_front();
                return self.insert(ts_ms, value);
            }
            // The first sample after `ts_ms`, from the newest back.
            let (mut j, mut t) = (self.len - 1, self.last_ms);
            while j > 0 && t - i64::from(self.gap(j)) > ts_ms {
                t -= i64::from(self.gap(j));
                j -= 1;
            }
            let before = t - i64::from(self.gap(j));
            for k in (j..self.len).rev() {
                let (from, to) = (self.slot(k), self.slot(k + 1));
                self.values[to] = self.values[from];
                let g = self.gap(k);
                self.set_gap(k + 1, g);
            }
            self.len += 1;
            self.values[self.slot(j)] = value;
            // Gaps of `ts_ms` from `before` and to `t`: both fit, as their sum did.
            self.set_gap(j, (ts_ms - before) as u32);
            self.set_gap(j + 1, (t - ts_ms) as u32);
        }
        true
    }

    fn start(&mut self, ts_ms: i64, value: f32) {
        self.head = 0;
        self.len = 1;
        self.first_ms = ts_ms;
        self.last_ms = ts_ms;
        self.values[0] = value;
        self.wide_gaps = 0;
        self.narrow();
        self.gaps.fill(0);
    }

    fn pop_front(&mut self) {
        if self.len > 1 {
            self.first_ms += i64::from(self.gap(1));
            self.set_gap(1, 0);
        }
        self.head = (self.head + 1) % self.capacity() as u32;
        self.len -= 1;
    }

    fn slot(&self, i: u32) -> usize {
        (self.head as usize + i as usize) % self.capacity()
    }

    fn is_wide(&self) -> bool {
        self.gaps.len() > self.values.len()
    }

    fn gap(&self, i: u32) -> u32 {
        let s = self.slot(i);
        if self.is_wide() {
            u32::from(self.gaps[2 * s]) | (u32::from(self.gaps[2 * s + 1]) << 16)
        } else {
            u32::from(self.gaps[s])
        }
    }

    /// Sets gap `i` (logical), widening or narrowing the gaps as the window needs. Slots
    /// outside the window hold gap 0, so the count of wide gaps stays exact.
    fn set_gap(&mut self, i: u32, gap: u32) {
        let big = |g: u32| u32::from(g > u32::from(u16::MAX));
        self.wide_gaps = self.wide_gaps + big(gap) - big(self.gap(i));
        if self.wide_gaps > 0 && !self.is_wide() {
            let wide: Vec<u16> = self.gaps.iter().flat_map(|&g| [g, 0]).collect();
            self.gaps = wide.into_boxed_slice();
        }
        let s = self.slot(i);
        if self.is_wide() {
            self.gaps[2 * s] = gap as u16;
            self.gaps[2 * s + 1] = (gap >> 16) as u16;
            if self.wide_gaps == 0 {
                self.narrow();
            }
        } else {
            self.gaps[s] = gap as u16;
        }
    }

    /// Back to one u16 a gap (every gap fits one).
    fn narrow(&mut self) {
        if self.is_wide() {
            let narrow: Vec<u16> = self.gaps.chunks(2).map(|p| p[0]).collect();
            self.gaps = narrow.into_boxed_slice();
        }
    }
}

/// The samples of a [`Window`], oldest first; walks either way.
#[derive(Debug, Clone)]
pub struct Iter<'a> {
    w: &'a Window,
    front: u32,
    back: u32,
    /// The timestamp of sample `front`.
    t_front: i64,
    /// The timestamp of sample `back - 1`.
    t_back: i64,
}

impl Iterator for Iter<'_> {
    type Item = (i64, f32);

    fn next(&mut self) -> Option<(i64, f32)> {
        if self.front == self.back {
            return None;
        }
        let item = (self.t_front, self.w.values[self.w.slot(self.front)]);
        self.front += 1;
        if self.front < self.back {
            self.t_front += i64::from(self.w.gap(self.front));
        }
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = (self.back - self.front) as usize;
        (n, Some(n))
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<(i64, f32)> {
        if self.front == self.back {
            return None;
        }
        self.back -= 1;
        let item = (self.t_back, self.w.values[self.w.slot(self.back)]);
        if self.back > self.front {
            self.t_back -= i64::from(self.w.gap(self.back));
        }
        Some(item)
    }
}

impl ExactSizeIterator for Iter<'_> {}

/// `later − earlier` in ms when it fits a gap (u32: about 49 days), for any two timestamps.
fn gap_ms(later: i64, earlier: i64) -> Option<u32> {
    later
        .checked_sub(earlier)
        .and_then(|d| u32::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    /// What the window must hold: the newest `cap` of the samples taken, where a sample older
    /// than everything in a full window is not taken.
    fn model(ops: &[(i64, f32)], cap: usize) -> Vec<(i64, f32)> {
        let mut m: BTreeMap<i64, f32> = BTreeMap::new();
        for &(t, v) in ops {
            if m.contains_key(&t) {
                continue;
            }
            if let Some((&last, _)) = m.last_key_value() {
                if t - last > i64::from(u32::MAX) {
                    m.clear();
                }
            }
            if let Some((&first, _)) = m.first_key_value() {
                if t < first && (m.len() == cap || first - t > i64::from(u32::MAX)) {
                    continue;
                }
            }
            m.insert(t, v);
            if m.len() > cap {
                m.pop_first();
            }
        }
        m.into_iter().collect()
    }

    fn run(ops: &[(i64, f32)], cap: usize) -> Window {
        let mut w = Window::new(cap);
        for &(t, v) in ops {
            if !w.contains(t) {
                w.insert(t, v);
            }
        }
        w
    }

    #[test]
    fn in_order_samples_come_back_exactly_and_the_oldest_go() {
        let ops: Vec<(i64, f32)> = (0..10).map(|i| (1_000 * i, i as f32)).collect();
        let w = run(&ops, 4);
        assert_eq!(w.iter().collect::<Vec<_>>(), ops[6..].to_vec());
        assert_eq!(w.iter().rev().count(), 4);
        assert_eq!(w.last_ms(), Some(9_000));
        assert_eq!(w.heap_bytes(), 4 * 4 + 4 * 2);
    }

    #[test]
    fn a_long_gap_widens_the_gaps_until_it_leaves_the_window() {
        let ops = [(0, 1.0), (100_000, 2.0), (100_500, 3.0), (101_000, 4.0)];
        let mut w = run(&ops[..2], 3);
        assert!(w.is_wide());
        assert_eq!(w.iter().collect::<Vec<_>>(), ops[..2].to_vec());
        w.insert(100_500, 3.0);
        w.insert(101_000, 4.0);
        assert!(!w.is_wide(), "the 100 s gap left with the oldest sample");
        assert_eq!(w.iter().collect::<Vec<_>>(), ops[1..].to_vec());
    }

    /// Timestamps at the ends of i64 (a bad clock, a unit mistake) neither overflow nor
    /// panic: the far one starts the window afresh, the far older one is dropped.
    #[test]
    fn extreme_timestamps_do_not_overflow() {
        let w = run(&[(i64::MIN, 1.0), (i64::MAX, 2.0)], 4);
        assert_eq!(w.iter().collect::<Vec<_>>(), vec![(i64::MAX, 2.0)]);
        let w = run(&[(i64::MAX, 1.0), (i64::MIN, 2.0)], 4);
        assert_eq!(w.iter().collect::<Vec<_>>(), vec![(i64::MAX, 1.0)]);
    }

    #[test]
    fn a_sample_fifty_days_on_starts_afresh() {
        let day = 86_400_000;
        let w = run(&[(0, 1.0), (1, 2.0), (50 * day, 3.0)], 4);
        assert_eq!(w.iter().collect::<Vec<_>>(), vec![(50 * day, 3.0)]);
    }

    proptest! {
        #[test]
        fn it_holds_what_a_sorted_map_would(
            cap in 2usize..8,
            ops in prop::collection::vec(
                (prop_oneof![0i64..2_000, 0i64..200_000, 0i64..10_000_000_000], -1e3f32..1e3),
                0..60,
            ),
        ) {
            let w = run(&ops, cap);
            let want = model(&ops, cap);
            prop_assert_eq!(w.iter().collect::<Vec<_>>(), want.clone());
            let mut back: Vec<_> = w.iter().rev().collect();
            back.reverse();
            prop_assert_eq!(back, want.clone());
            prop_assert_eq!(w.iter().len(), want.len());
            prop_assert_eq!(w.last_ms(), want.last().map(|p| p.0));
            prop_assert_eq!(w.is_wide(), want.windows(2).any(|p| p[1].0 - p[0].0 > 65_535));
        }
    }
}

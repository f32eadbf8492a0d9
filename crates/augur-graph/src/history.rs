//! The node's recent metric history on a fixed time grid: what root-cause ranking and the
//! causal-strength tests read. One ring of `f32` per (component, metric), one slot per grid
//! step (the last sample in a step wins, a step with no sample is NaN), so a window of every
//! series is a [`MetricFrame`] without any resampling.
//!
//! Memory is bounded: a series holds at most `retention / step` slots of 4 bytes, at most
//! `max_metrics` series per component. A series whose values fill fewer than half its slots
//! (a metric sent less often than every other step) keeps only its values, 8 bytes each: a
//! metric scraped every 15 s on the default 1 s grid holds 60 values, not 900 slots. A series
//! turns dense once it holds more than that (or its first nine values come that often) and
//! stays dense until a gap longer than the ring resets it. Thread-safe: the map is split in shards, each behind its own lock,
//! so concurrent pushes of different components rarely meet.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::rca::{MetricFrame, RcaError};

const SHARDS: usize = 16;

/// The separator between component and metric in the columns of [`MetricHistory::frame`].
/// Component ids cannot contain it (ids are `[A-Za-z0-9._:-]`), so the split is exact.
pub const COLUMN_SEP: char = '/';

/// The component of a column of [`MetricHistory::frame`].
pub fn history_component(column: &str) -> &str {
    column.split_once(COLUMN_SEP).map_or(column, |(c, _)| c)
}

/// Settings of a [`MetricHistory`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryConfig {
    /// Grid step, ms.
    pub step_ms: i64,
    /// Slots kept per series (`retention / step`).
    pub slots: usize,
    /// Series kept per component; samples of further metrics are not kept.
    pub max_metrics: usize,
}

#[derive(Debug)]
struct Series {
    metric: String,
    /// The ring's first step: nothing older is kept.
    first: i64,
    /// One past the newest step held (`first` while empty).
    end: i64,
    slots: Slots,
}

/// A series' values over `[first, end)`, stored by how many there are.
#[derive(Debug)]
enum Slots {
    /// Fewer values than half the ring's slots (a metric sent less often than the grid's
    /// step, say every 15 s on a 1 s grid): `(step, value)` in step order, the step as its
    /// low 32 bits (a ring spans fewer than 2³¹ steps, so `step − first` is exact).
    Sparse(VecDeque<(u32, f32)>),
    /// One value per step from `first`, NaN where none came.
    Dense(VecDeque<f32>),
}

impl Series {
    fn new(metric: &str, step: i64) -> Self {
        Self {
            metric: metric.to_owned(),
            first: step,
            end: step,
            slots: Slots::Sparse(VecDeque::new()),
        }
    }

    /// Puts a value in its slot; false when the slot is older than the ring.
    fn put(&mut self, step: i64, value: f32, slots: usize) -> bool {
        let ring = slots as i64;
        if self.end == self.first || step - self.end >= ring {
            // Empty, or a gap longer than the ring: nothing of the old series would survive.
            self.slots = Slots::Sparse(VecDeque::new());
            self.first = step;
            self.end = step;
        } else if step < self.first {
            return false;
        }
        // The ring moves on first, so a dense ring never holds more than `slots` values.
        let end = self.end.max(step + 1);
        let first = self.first.max(end - ring);
        self.make_room(first, end, slots);
        match &mut self.slots {
            Slots::Dense(values) => {
                let gone = (first - self.first) as usize;
                values.drain(..gone.min(values.len()));
                values.resize((end - first) as usize, f32::NAN);
                values[(step - first) as usize] = value;
            }
            Slots::Sparse(points) => {
                let step_of = step_from(self.first);
                while points.front().is_some_and(|p| step_of(p) < first) {
                    points.pop_front();
                }
                // In order, the usual case, touches the newest point only.
                let newest = points.back().map(&step_of);
                if newest.is_none_or(|t| t < step) {
                    points.push_back((step as u32, value));
                } else {
                    match points.binary_search_by(|p| step_of(p).cmp(&step)) {
                        Ok(i) => points[i].1 = value,
                        Err(i) => points.insert(i, (step as u32, value)),
                    }
                }
                if points.len() > slots / 2 {
                    let values = to_dense(points, self.first, first, end, slots);
                    self.slots = Slots::Dense(values);
                }
            }
        }
        self.first = first;
        self.end = end;
        true
    }

    /// A full sparse ring is sized for the whole ring at the density seen so far, once,
    /// rather than doubling (a million series doubling in step leave every smaller size
    /// behind in the allocator), or goes dense when that would be over half. Eight points
    /// first: fewer say too little about the density. `[first, end)` is the ring the put
    /// moves to.
    fn make_room(&mut self, first: i64, end: i64, slots: usize) {
        let Slots::Sparse(points) = &mut self.slots else {
            return;
        };
        if points.len() < points.capacity() {
            return;
        }
        let ring = slots as i64;
        let held = points.len() as i64 + 1;
        let expected = held.saturating_mul(ring) / (end - first).max(1);
        if held <= 8 {
            points.reserve_exact(8);
        } else if expected.saturating_mul(2) > ring {
            let values = to_dense(points, self.first, self.first, self.end, slots);
            self.slots = Slots::Dense(values);
        } else {
            // Past 1,024 points at most doubling, so a long ring (a day at 15 s) is not
            // committed at its ninth sample.
            let len = points.len() as i64;
            let want = (expected + expected / 4)
                .min(ring / 2 + 1)
                .min(len + len.max(1024))
                .max(held);
            points.reserve_exact((want - len) as usize);
        }
    }

    fn get(&self, step: i64) -> f32 {
        if step < self.first || step >= self.end {
            return f32::NAN;
        }
        match &self.slots {
            Slots::Dense(values) => values[(step - self.first) as usize],
            Slots::Sparse(points) => {
                let step_of = step_from(self.first);
                points
                    .binary_search_by(|p| step_of(p).cmp(&step))
                    .map_or(f32::NAN, |i| points[i].1)
            }
        }
    }

    /// The values of steps `from..=to`, NaN where none is held; a sparse series walks its
    /// points once instead of looking each step up.
    fn column(&self, from: i64, to: i64) -> Vec<f64> {
        match &self.slots {
            Slots::Dense(_) => (from..=to).map(|t| f64::from(self.get(t))).collect(),
            Slots::Sparse(points) => {
                let mut col = vec![f64::NAN; (to - from + 1).max(0) as usize];
                let step_of = step_from(self.first);
                for p in points {
                    let t = step_of(p);
                    if (from..=to).contains(&t) {
                        col[(t - from) as usize] = f64::from(p.1);
                    }
                }
                col
            }
        }
    }
}

/// Sparse points (steps decoded from `base`) as one value per step over `[from, end)`, NaN
/// where none.
fn to_dense(
    points: &VecDeque<(u32, f32)>,
    base: i64,
    from: i64,
    end: i64,
    slots: usize,
) -> VecDeque<f32> {
    let step_of = step_from(base);
    // The whole ring at once when it is small (the default's 900 slots), else room to double:
    // a year-long ring is not committed when a series turns dense.
    let len = (end - from) as usize;
    let mut values = VecDeque::with_capacity(if slots <= 4096 { slots } else { 2 * len });
    values.resize(len, f32::NAN);
    for p in points {
        let t = step_of(p);
        if (from..end).contains(&t) {
            values[(t - from) as usize] = p.1;
        }
    }
    values
}

/// A sparse point's step, from the low 32 bits it keeps: exact for the steps of a ring that
/// starts at `first`.
fn step_from(first: i64) -> impl Fn(&(u32, f32)) -> i64 + Copy {
    move |p| first + i64::from(p.0.wrapping_sub(first as u32))
}

/// Recent samples of every component's metrics, on a grid. See the module docs.
#[derive(Debug)]
pub struct MetricHistory {
    cfg: HistoryConfig,
    /// The newest timestamp kept, ms (`i64::MIN` while empty).
    newest_ms: AtomicI64,
    hasher: std::collections::hash_map::RandomState,
    shards: Vec<Mutex<HashMap<String, Vec<Series>>>>,
}

/// What [`MetricHistory::record`] did with a batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recorded {
    pub kept: u64,
    /// Not finite, older than the ring, or a metric beyond `max_metrics`.
    pub skipped: u64,
}

/// A shard, locked. Its lock survives a panic while held (at worst one series is left half
/// updated): the history keeps serving rather than failing every later caller (every ingest,
/// warm-up and root-cause read that touches the shard).
fn locked<T>(shard: &Mutex<T>) -> MutexGuard<'_, T> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MetricHistory {
    /// An empty history. The step is at least a second (frames count in seconds); `slots`
    /// must be positive.
    pub fn new(cfg: HistoryConfig) -> Result<Self, RcaError> {
        if cfg.step_ms < 1000 {
            return Err(RcaError::BadOption {
                name: "history step_ms",
                value: cfg.step_ms as f64,
                expected: "it must be at least 1000",
            });
        }
        if cfg.slots == 0 {
            return Err(RcaError::BadOption {
                name: "history slots",
                value: 0.0,
                expected: "it must be positive",
            });
        }
        Ok(Self {
            cfg,
            newest_ms: AtomicI64::new(i64::MIN),
            hasher: Default::default(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        })
    }

    pub fn config(&self) -> HistoryConfig {
        self.cfg
    }

    fn shard(&self, component: &str) -> &Mutex<HashMap<String, Vec<Series>>> {
        &self.shards[(self.hasher.hash_one(component) as usize) % SHARDS]
    }

    /// Records samples `(component, metric, ts_ms, value)`. A run of samples of one
    /// component (as batches usually come) takes its shard's lock and finds its series once,
    /// and each metric is looked for first where the previous one was found plus one.
    pub fn record<'a>(
        &self,
        samples: impl IntoIterator<Item = (&'a str, &'a str, i64, f64)>,
    ) -> Recorded {
        let mut out = Recorded::default();
        let mut newest = i64::MIN;
        let mut samples = samples.into_iter().peekable();
        while let Some(first) = samples.next() {
            let component = first.0;
            let mut shard = locked(self.shard(component));
            let series = match shard.get_mut(component) {
                Some(s) => s,
                None => shard.entry(component.to_owned()).or_default(),
            };
            let mut hint = 0;
            let run = std::iter::once(first)
                .chain(std::iter::from_fn(|| samples.next_if(|s| s.0 == component)));
            for (_, metric, ts_ms, value) in run {
                if !value.is_finite() {
                    out.skipped += 1;
                    continue;
                }
                let step = ts_ms.div_euclid(self.cfg.step_ms);
                let found = match series.get(hint) {
                    Some(s) if s.metric == metric => Some(hint),
                    _ => series.iter().position(|s| s.metric == metric),
                };
                let i = match found {
                    Some(i) => i,
                    None if series.len() < self.cfg.max_metrics => {
                        series.push(Series::new(metric, step));
                        series.len() - 1
                    }
                    None => {
                        out.skipped += 1;
                        continue;
                    }
                };
                hint = i + 1;
                if series[i].put(step, value as f32, self.cfg.slots) {
                    out.kept += 1;
                    newest = newest.max(ts_ms);
                } else {
                    out.skipped += 1;
                }
            }
        }
        self.newest_ms.fetch_max(newest, Ordering::Relaxed);
        out
    }

    /// The newest timestamp recorded, ms; `None` while nothing was.
    pub fn newest_ms(&self) -> Option<i64> {
        let t = self.newest_ms.load(Ordering::Relaxed);
        (t != i64::MIN).then_some(t)
    }

    /// Drops the components none of whose series holds a step the ring still reaches (from
    /// the newest timestamp recorded): a component that stopped sending (one never
    /// registered, say) holds no memory once its samples have aged out. How many went.
    pub fn prune(&self) -> usize {
        let Some(newest) = self.newest_ms() else {
            return 0;
        };
        let oldest_kept = newest.div_euclid(self.cfg.step_ms) - self.cfg.slots as i64 + 1;
        let mut gone = 0;
        for shard in &self.shards {
            let mut shard = locked(shard);
            let before = shard.len();
            shard.retain(|_, series| series.iter().any(|s| s.end > oldest_kept));
            gone += before - shard.len();
        }
        gone
    }

    /// Drops every series of `components`.
    pub fn forget<'a>(&self, components: impl IntoIterator<Item = &'a str>) {
        for c in components {
            locked(self.shard(c)).remove(c);
        }
    }

    /// Every series over `[from_ms, to_ms]`, one row per grid step (times in unix seconds,
    /// rounded down, as [`MetricFrame`] holds them), columns `<component>/<metric>` sorted by
    /// name. Series with no value in the range are left out, and so are the rows before the
    /// first value of any series.
    pub fn frame(&self, from_ms: i64, to_ms: i64) -> Result<MetricFrame, RcaError> {
        let (first, last) = (
            from_ms.div_euclid(self.cfg.step_ms),
            to_ms.div_euclid(self.cfg.step_ms),
        );
        if last < first {
            return Err(RcaError::ColumnMismatch(format!(
                "the window ends ({to_ms} ms) before it starts ({from_ms} ms)"
            )));
        }
        // Never more rows than the ring holds: older steps are gone anyway.
        let first = first.max(last - self.cfg.slots as i64 + 1);
        let mut columns: Vec<(String, Vec<f64>)> = Vec::new();
        for shard in &self.shards {
            let shard = locked(shard);
            for (component, series) in shard.iter() {
                for s in series {
                    let col = s.column(first, last);
                    if col.iter().any(|v| v.is_finite()) {
                        columns.push((format!("{component}{COLUMN_SEP}{}", s.metric), col));
                    }
                }
            }
        }
        columns.sort_by(|a, b| a.0.cmp(&b.0));
        // Rows before the first value of any series carry nothing: they are left out.
        let skip = columns
            .iter()
            .filter_map(|(_, c)| c.iter().position(|v| v.is_finite()))
            .min()
            .unwrap_or(0);
        for (_, c) in &mut columns {
            c.drain(..skip);
        }
        let times = (first + skip as i64..=last)
            .map(|t| (t * self.cfg.step_ms).div_euclid(1000))
            .collect();
        MetricFrame::new(times, columns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Series held.
    fn series(h: &MetricHistory) -> usize {
        h.shards
            .iter()
            .map(|s| s.lock().unwrap().values().map(Vec::len).sum::<usize>())
            .sum()
    }

    fn history(step_ms: i64, slots: usize) -> MetricHistory {
        MetricHistory::new(HistoryConfig {
            step_ms,
            slots,
            max_metrics: 2,
        })
        .unwrap()
    }

    #[test]
    fn samples_land_on_the_grid_and_gaps_are_nan() {
        let h = history(1000, 10);
        let r = h.record([
            ("a", "cpu", 10_000, 1.0),
            ("a", "cpu", 10_400, 2.0), // same step: the last wins
            ("a", "cpu", 13_000, 3.0),
            ("b", "lat", 11_000, 7.0),
        ]);
        assert_eq!(
            r,
            Recorded {
                kept: 4,
                skipped: 0
            }
        );
        assert_eq!(h.newest_ms(), Some(13_000));
        let f = h.frame(10_000, 13_999).unwrap();
        assert_eq!(f.times(), &[10, 11, 12, 13]);
        assert_eq!(f.names(), &["a/cpu".to_string(), "b/lat".to_string()]);
        let a = f.column("a/cpu").unwrap();
        assert_eq!(a[0], 2.0);
        assert!(a[1].is_nan() && a[2].is_nan());
        assert_eq!(a[3], 3.0);
        assert_eq!(history_component("my_db.1/cpu_total"), "my_db.1");
    }

    #[test]
    fn components_whose_samples_aged_out_of_the_ring_are_pruned() {
        let h = history(1000, 10);
        assert_eq!(h.prune(), 0, "empty");
        h.record([("old", "cpu", 10_000, 1.0), ("b", "cpu", 10_000, 1.0)]);
        h.record([("b", "cpu", 19_000, 1.0)]);
        // Steps 10..=19 are in the ring: nothing has aged out.
        assert_eq!(h.prune(), 0);
        h.record([("b", "cpu", 20_000, 1.0)]);
        // Step 10 has: "old" holds nothing the ring reaches; "b" still does.
        assert_eq!(h.prune(), 1);
        let f = h.frame(0, 20_999).unwrap();
        assert_eq!(f.names(), &["b/cpu".to_string()]);
    }

    #[test]
    fn bad_samples_are_skipped_and_change_nothing() {
        let h = history(1000, 4);
        h.record([("a", "cpu", 10_000, 1.0)]);
        let r = h.record([
            ("a", "cpu", 11_000, f64::NAN),
            ("a", "cpu", 11_000, f64::INFINITY),
            ("a", "mem", 11_000, 1.0),
            ("a", "disk", 11_000, 1.0), // third metric, max is 2
        ]);
        assert_eq!(
            r,
            Recorded {
                kept: 1,
                skipped: 3
            }
        );
        // Far ahead: the ring moves on; the old step is now too old.
        h.record([("a", "cpu", 20_000, 5.0)]);
        let r = h.record([("a", "cpu", 10_000, 9.0)]);
        assert_eq!(r.skipped, 1);
        assert_eq!(series(&h), 2);
        h.forget(["a"]);
        assert_eq!(series(&h), 0);
        assert!(h.frame(20_000, 10_000).is_err());
    }

    /// The ring as it was before sparse series: one `f32` per step from `first`.
    struct DenseRing {
        first: i64,
        values: VecDeque<f32>,
    }

    impl DenseRing {
        fn put(&mut self, step: i64, value: f32, slots: usize) -> bool {
            let end = self.first + self.values.len() as i64;
            if self.values.is_empty() || step - end >= slots as i64 {
                self.values.clear();
                self.first = step;
            } else if step < self.first {
                return false;
            }
            let end = self.first + self.values.len() as i64;
            for _ in end..=step {
                self.values.push_back(f32::NAN);
            }
            let i = (step - self.first) as usize;
            self.values[i] = value;
            while self.values.len() > slots {
                self.values.pop_front();
                self.first += 1;
            }
            true
        }

        fn get(&self, step: i64) -> f32 {
            if step < self.first {
                return f32::NAN;
            }
            let i = (step - self.first) as usize;
            self.values.get(i).copied().unwrap_or(f32::NAN)
        }
    }

    #[test]
    fn a_series_sent_less_often_than_the_grid_holds_only_its_samples() {
        // Every 15th step of a 900-slot ring: 60 points, not 900 slots.
        let mut s = Series::new("cpu", 0);
        for i in 0..200 {
            assert!(s.put(i * 15, i as f32, 900));
        }
        let Slots::Sparse(points) = &s.slots else {
            panic!("a ring a fifteenth full stays sparse");
        };
        assert_eq!(points.len(), 60);
        assert_eq!(s.get(199 * 15), 199.0);
        assert!(s.get(199 * 15 - 1).is_nan());
        // Every step: dense once more than half the ring is held, no larger than the ring.
        let mut d = Series::new("cpu", 0);
        for i in 0..2_000 {
            d.put(i, i as f32, 900);
        }
        let Slots::Dense(values) = &d.slots else {
            panic!("a full ring is dense");
        };
        assert_eq!((values.len(), values.capacity()), (900, 900));
    }

    proptest! {
        /// Sparse or dense, a series holds what the plain dense ring held: the same answer to
        /// every put, the same value at every step, the same end.
        #[test]
        fn a_series_holds_what_a_dense_ring_holds(
            base in prop::sample::select(vec![
                0i64, -1_000, (1 << 32) - 100, -(1 << 32) - 50, (1 << 31) - 60, 1 << 45,
            ]),
            slots in prop::sample::select(vec![1usize, 2, 3, 7, 16, 39, 120, 300]),
            stride in 1i64..20,
            puts in proptest::collection::vec((0i64..240, -1e3f32..1e3), 1..160),
        ) {
            // Steps from `base`, spread by `stride` (sparse rings) and across the u32 wrap.
            let at = |i: i64| base + i * stride;
            let (lo, hi) = (at(0) - 5, at(240) + 5);
            let mut s = Series::new("m", at(puts[0].0));
            let mut r = DenseRing { first: 0, values: VecDeque::new() };
            for (k, &(i, v)) in puts.iter().enumerate() {
                let step = at(i);
                prop_assert_eq!(s.put(step, v, slots), r.put(step, v, slots), "put {}", k);
                prop_assert_eq!(s.end, r.first + r.values.len() as i64);
                match &s.slots {
                    Slots::Dense(values) => prop_assert!(values.len() <= slots),
                    Slots::Sparse(points) => prop_assert!(points.len() <= slots / 2),
                }
                let (from, to) = (r.first - 3, r.first + slots as i64 + 3);
                let col = s.column(from, to);
                for t in (from..=to).chain([lo, hi]) {
                    let (a, b) = (s.get(t), r.get(t));
                    prop_assert!(a == b || (a.is_nan() && b.is_nan()), "step {}: {} vs {}", t, a, b);
                    if t <= to && t >= from {
                        let c = col[(t - from) as usize];
                        prop_assert!(c == f64::from(b) || (c.is_nan() && b.is_nan()), "column at {}", t);
                    }
                }
            }
        }
    }

    proptest! {
        /// A batch recorded at once leaves the history as recording its samples one by one
        /// does, whatever the order of components and metrics in it.
        #[test]
        fn a_batch_is_recorded_as_its_samples_one_by_one(
            samples in proptest::collection::vec((0usize..3, 0usize..3, 0i64..20_000), 1..60),
        ) {
            let (comps, metrics) = (["a", "b", "c"], ["cpu", "mem", "lat"]);
            let batch: Vec<(&str, &str, i64, f64)> = samples
                .iter()
                .enumerate()
                .map(|(i, &(c, m, t))| (comps[c], metrics[m], t, i as f64))
                .collect();
            let (whole, one_by_one) = (history(1000, 30), history(1000, 30));
            let r = whole.record(batch.iter().copied());
            let mut kept = 0;
            for s in &batch {
                kept += one_by_one.record([*s]).kept;
            }
            prop_assert_eq!(r.kept, kept);
            prop_assert_eq!(whole.newest_ms(), one_by_one.newest_ms());
            let (fa, fb) = (whole.frame(0, 19_999), one_by_one.frame(0, 19_999));
            match (fa, fb) {
                (Ok(fa), Ok(fb)) => {
                    prop_assert_eq!(fa.names(), fb.names());
                    for n in fa.names() {
                        let (x, y) = (fa.column(n).unwrap(), fb.column(n).unwrap());
                        prop_assert_eq!(x.len(), y.len());
                        for (u, v) in x.iter().zip(y) {
                            prop_assert!(u == v || (u.is_nan() && v.is_nan()));
                        }
                    }
                }
                (a, b) => prop_assert_eq!(a.is_err(), b.is_err()),
            }
        }

        /// Samples in time order (the usual case): every step the ring still covers holds
        /// the last value recorded in it, and a step with none is NaN.
        #[test]
        fn frame_is_the_last_value_per_step(
            mut samples in proptest::collection::vec((0i64..60_000, -1e6f64..1e6), 1..200),
        ) {
            samples.sort_by_key(|s| s.0);
            let h = history(1000, 30);
            for &(t, v) in &samples {
                h.record([("c", "m", t, v)]);
            }
            let mut expected = std::collections::BTreeMap::new();
            for &(t, v) in &samples {
                expected.insert(t / 1000, (v as f32) as f64);
            }
            let newest = samples.last().unwrap().0 / 1000;
            let f = h.frame(0, 59_999).unwrap();
            // Rows start at the first kept value in the range; a series with nothing in the
            // range is left out of the frame.
            let kept = |t: &i64| expected.contains_key(t) && *t > newest - 30;
            let Some(start) = (30..60).find(kept) else {
                prop_assert!(f.column("c/m").is_none());
                return Ok(());
            };
            let rows: Vec<i64> = (start..60).collect();
            prop_assert_eq!(f.times(), rows.as_slice());
            let col = f.column("c/m").unwrap();
            for (row, &t) in f.times().iter().enumerate() {
                match expected.get(&t) {
                    Some(&v) if t > newest - 30 => prop_assert_eq!(col[row], v),
                    _ => prop_assert!(col[row].is_nan(), "step {} holds {}", t, col[row]),
                }
            }
        }
    }
}

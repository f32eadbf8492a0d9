//! Novelty alarms: sparse, early alarms for a series, for a person or a benchmark to act on.
//!
//! The node's per-metric ensemble ([`MetricDetector`]) answers "how unusual is the recent
//! surprise?", continuously, and a heavy-tailed series keeps answering "quite" for hours. This
//! detector turns that into *events*:
//!
//! - **a never-visited band**: the range of the first [`NoveltyConfig::range_rows`] rows is cut
//!   into [`NoveltyConfig::levels`] equal bands (bands of the same width continue above and
//!   below it); the next [`NoveltyConfig::mark_rows`] rows only mark the bands they visit; from
//!   then on a row in a band the series has never visited is an alarm. It catches a jump, a
//!   drop to a new floor and a level the series has never held, whatever its statistics;
//! - **an extreme likelihood**: the ensemble's anomaly likelihood at or above
//!   [`NoveltyConfig::likelihood`];
//! - after an alarm the detector is silent for [`NoveltyConfig::rest_rows`] rows: one event is
//!   reported once;
//! - **an early new band** ([`NoveltyConfig::early_range_rows`], 0 turns it off): a second
//!   band tracker that learns over fewer rows (75 + 38 by default), so it is armed while the
//!   first is still learning, and alarms only until the first is armed. Its alarm silences only its own next
//!   alarms for [`NoveltyConfig::rest_rows`] rows, not the likelihood alarm: an early tracker
//!   learnt on few rows raises false alarms, and a rest that hid the likelihood alarm from an
//!   anomaly right after one would turn a false alarm into a missed anomaly too.
//!
//! The score is `0.5 + 0.5·likelihood` on an alarm row, `0.49·likelihood` on any other row
//! (below every alarm, still ordered), and 0 while resting. Constant memory:
//! the band state is 24 bytes beside the ensemble (about 90 more with the early tracker: its
//! bands, its configuration and its rest counter).

use crate::ensemble::MetricDetector;
use crate::Detector;

/// Bands told apart below the learnt range (lower values share the lowest one).
const BELOW: i32 = 24;
/// Bands tracked in all (one bit each): `BELOW` under the range, the range, the rest above.
const BANDS: i32 = 64;
/// The most bands the learnt range may be cut into: as many above it as below.
pub const MAX_LEVELS: usize = (BANDS - 2 * BELOW) as usize;

/// The knobs, with the values `docs/evaluation.md` measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoveltyConfig {
    /// Bands across the learnt range, 1 to [`MAX_LEVELS`].
    pub levels: usize,
    /// Rows that learn the range.
    pub range_rows: usize,
    /// Rows after those that only mark the bands they visit (at least 1).
    pub mark_rows: usize,
    /// Rows of silence after an alarm.
    pub rest_rows: usize,
    /// An ensemble likelihood at or above this is an alarm on its own.
    pub likelihood: f64,
    /// Rows that learn the early tracker's range; 0: no early tracker.
    pub early_range_rows: usize,
    /// Rows after those that only mark the early tracker's bands (at least 1).
    pub early_mark_rows: usize,
}

impl NoveltyConfig {
    /// Levels in 1 ..= [`MAX_LEVELS`]; range and marking rows in 1 ..= 32,767 each (a row
    /// count is a u16; at least one marking row, so the first scored row does not find every
    /// band unvisited).
    fn clamped(self) -> Self {
        let rows = usize::from(u16::MAX) / 2;
        Self {
            levels: self.levels.clamp(1, MAX_LEVELS),
            range_rows: self.range_rows.clamp(1, rows),
            mark_rows: self.mark_rows.clamp(1, rows),
            early_range_rows: self.early_range_rows.min(rows),
            early_mark_rows: self.early_mark_rows.clamp(1, rows),
            ..self
        }
    }
}

impl Default for NoveltyConfig {
    fn default() -> Self {
        Self {
            levels: 16,
            range_rows: 400,
            mark_rows: 200,
            rest_rows: 100,
            likelihood: 0.9999,
            early_range_rows: 75,
            early_mark_rows: 38,
        }
    }
}

/// The bands a series has visited, in 24 bytes.
#[derive(Debug, Clone, Default)]
struct Bands {
    /// While learning the range: its low end; then the low end of band 0.
    lo: f64,
    /// While learning the range: its width; then one band's width.
    step: f32,
    rows: u16,
    /// One bit per band, band `b` of the learnt range at bit `b + BELOW`.
    visited: u64,
}

impl Bands {
    fn band(&self, x: f64) -> u32 {
        let b = ((x - self.lo) / f64::from(self.step)).floor();
        // In range for the shift: the clamp bounds it to [0, 64).
        (b.clamp(-f64::from(BELOW), f64::from(BANDS - BELOW - 1)) as i32 + BELOW) as u32
    }

    /// Folds finite `x` in: `None` while learning, else whether its band was never visited.
    /// `cfg` is as [`NoveltyConfig::clamped`] leaves it.
    fn observe(&mut self, x: f64, cfg: &NoveltyConfig) -> Option<bool> {
        let row = usize::from(self.rows) + 1;
        self.rows = self.rows.saturating_add(1);
        if row <= cfg.range_rows {
            if row == 1 {
                self.lo = x;
            } else if x < self.lo {
                self.step += (self.lo - x) as f32;
                self.lo = x;
            } else {
                self.step = self.step.max((x - self.lo) as f32);
            }
            if row == cfg.range_rows {
                // No band finer than a thousandth of the level (1e-9 at level 0), so a flat
                // start does not make every later wobble a new band.
                let floor = (self.lo.abs() * 1e-3).max(1e-9) as f32;
                self.step = (self.step / cfg.levels as f32).max(floor);
            }
            return None;
        }
        let bit = 1u64 << self.band(x);
        let new = self.visited & bit == 0;
        self.visited |= bit;
        (row > cfg.range_rows + cfg.mark_rows).then_some(new)
    }
}

/// The `novelty` detector. See the module docs.
#[derive(Debug, Clone)]
pub struct Novelty {
    cfg: NoveltyConfig,
    ensemble: MetricDetector,
    bands: Bands,
    rest_left: usize,
    /// The early tracker: its bands, its configuration (the range and marking rows swapped
    /// in), the rows its own rest has left.
    early: Bands,
    early_cfg: NoveltyConfig,
    early_rest_left: usize,
}

impl Novelty {
    /// `period`: the seasonal period the ensemble's Holt-Winters uses (0 for none).
    pub fn new(period: usize, cfg: NoveltyConfig) -> Self {
        let cfg = cfg.clamped();
        Self {
            cfg,
            ensemble: MetricDetector::new(period),
            bands: Bands::default(),
            rest_left: 0,
            early: Bands::default(),
            early_cfg: NoveltyConfig {
                range_rows: cfg.early_range_rows,
                mark_rows: cfg.early_mark_rows,
                ..cfg
            }
            .clamped(),
            early_rest_left: 0,
        }
    }
}

impl Detector for Novelty {
    fn score(&mut self, _t: i64, value: f64) -> f64 {
        if !value.is_finite() {
            return 0.0;
        }
        let likelihood = self.ensemble.update(value);
        let main = self.bands.observe(value, &self.cfg);
        let new_band = main.unwrap_or(false);
        // The early tracker speaks only while the main one is not armed.
        let early_new = self.cfg.early_range_rows > 0
            && self.early.observe(value, &self.early_cfg) == Some(true)
            && main.is_none();
        let early_resting = self.early_rest_left > 0;
        self.early_rest_left = self.early_rest_left.saturating_sub(1);
        if self.rest_left > 0 {
            self.rest_left -= 1;
            return 0.0;
        }
        if new_band || likelihood >= self.cfg.likelihood {
            self.rest_left = self.cfg.rest_rows;
            0.5 + 0.5 * likelihood
        } else if early_new && !early_resting {
            self.early_rest_left = self.cfg.rest_rows;
            0.5 + 0.5 * likelihood
        } else {
            0.49 * likelihood
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scores(values: impl IntoIterator<Item = f64>, cfg: NoveltyConfig) -> Vec<f64> {
        let mut d = Novelty::new(0, cfg);
        values
            .into_iter()
            .enumerate()
            .map(|(i, v)| d.score(i as i64 * 60, v))
            .collect()
    }

    #[test]
    fn bands_are_24_bytes() {
        assert_eq!(std::mem::size_of::<Bands>(), 24);
    }

    #[test]
    fn learning_rows_never_alarm_and_a_new_band_after_them_does() {
        let cfg = NoveltyConfig {
            range_rows: 10,
            mark_rows: 10,
            ..Default::default()
        };
        // A sawtooth over [0, 9] while learning, then a value far above it.
        let mut v: Vec<f64> = (0..40).map(|i| f64::from(i % 10)).collect();
        v.push(30.0);
        let s = scores(v, cfg);
        assert!(s[..40].iter().all(|&x| x < 0.5), "{s:?}");
        assert!(s[40] >= 0.5, "{s:?}");
    }

    #[test]
    fn an_alarm_is_followed_by_rest() {
        let cfg = NoveltyConfig {
            range_rows: 10,
            mark_rows: 10,
            rest_rows: 5,
            ..Default::default()
        };
        let mut v: Vec<f64> = (0..20).map(|i| f64::from(i % 10)).collect();
        // New bands row after row (a band is 9/16 wide): one alarm, silence, the next alarm.
        v.extend([10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 16.0]);
        let s = scores(v, cfg);
        assert!(s[20] >= 0.5);
        assert!(s[21..26].iter().all(|&x| x == 0.0), "{s:?}");
        assert!(s[26] >= 0.5, "{s:?}");
    }

    #[test]
    fn a_gap_inside_the_range_is_a_new_band() {
        let cfg = NoveltyConfig {
            levels: 10,
            range_rows: 10,
            mark_rows: 10,
            ..Default::default()
        };
        // Two modes at the ends of [0, 10]; the middle was never visited.
        let mut v: Vec<f64> = (0..40)
            .map(|i| if i % 2 == 0 { 0.0 } else { 10.0 })
            .collect();
        v.push(5.0);
        let s = scores(v, cfg);
        assert!(s[40] >= 0.5, "{s:?}");
    }

    #[test]
    fn the_early_tracker_alarms_only_while_the_main_one_learns() {
        let main = NoveltyConfig {
            range_rows: 40,
            mark_rows: 20,
            early_range_rows: 0,
            ..Default::default()
        };
        let early = NoveltyConfig {
            early_range_rows: 10,
            early_mark_rows: 10,
            ..main
        };
        // A sawtooth over [0, 9], a jump at row 30 (the main tracker still learns), the
        // sawtooth again, and a second, higher jump at row 70 (the main tracker armed).
        let mut v: Vec<f64> = (0..30).map(|i| f64::from(i % 10)).collect();
        v.push(30.0);
        v.extend((31..70).map(|i| f64::from(i % 10)));
        v.push(100.0);
        let off = scores(v.iter().copied(), main);
        let on = scores(v.iter().copied(), early);
        assert!(off[30] < 0.5, "{off:?}");
        assert!(on[30] >= 0.5, "{on:?}");
        // After the early tracker's alarm the rows are not silenced as after a main alarm.
        assert!(on[31..40].iter().all(|&x| x < 0.5), "{on:?}");
        assert!(on[31..40].iter().any(|&x| x > 0.0), "{on:?}");
        assert!(off[70] >= 0.5 && on[70] >= 0.5, "{off:?} {on:?}");
    }

    #[test]
    fn non_finite_values_are_skipped() {
        let mut d = Novelty::new(0, NoveltyConfig::default());
        assert_eq!(d.score(0, f64::NAN), 0.0);
        assert_eq!(d.score(60, f64::INFINITY), 0.0);
        assert_eq!(d.bands.rows, 0);
    }

    #[test]
    fn a_flat_series_gets_bands_of_a_thousandth_of_its_level() {
        let cfg = NoveltyConfig {
            range_rows: 10,
            mark_rows: 10,
            ..Default::default()
        };
        let mut v = vec![100.0; 30];
        v.push(100.05);
        v.push(100.2);
        let s = scores(v, cfg);
        assert!(s[..31].iter().all(|&x| x < 0.5), "{s:?}");
        assert!(s[31] >= 0.5, "{s:?}");
    }
}

//! Online statistical detectors. Each turns a series into a *surprise* (a non-negative
//! z-like number) and [`Likelihood`] turns surprises into a score in `[0, 1]`: how unusual the
//! recent surprise is against the detector's own history, so one threshold fits every series.

use std::collections::VecDeque;

use crate::Detector;

/// A raw online scorer: feeds a value, returns how surprising it was (≥ 0), using the rows
/// before it for the expectation.
pub trait Surprise: Send {
    fn surprise(&mut self, value: f64) -> f64;
}

/// Exponentially weighted mean and variance; the surprise is |z| against the state before
/// the value is folded in. Kept to 24 bytes (two sit in every metric of every component):
/// the weight is an f32.
#[derive(Debug, Clone)]
pub struct Ewma {
    mean: f64,
    var: f64,
    alpha: f32,
    seen: u32,
}

impl Ewma {
    /// `alpha` in (0, 1]: the weight of the newest value.
    pub fn new(alpha: f64) -> Self {
        Self {
            mean: 0.0,
            var: 0.0,
            alpha: alpha.clamp(1e-6, 1.0) as f32,
            seen: 0,
        }
    }

    pub fn mean(&self) -> f64 {
        self.mean
    }

    pub fn std(&self) -> f64 {
        self.var.sqrt()
    }

    /// Folds `x` in and returns its z-score against the state before it (0 while warming up).
    pub fn update(&mut self, x: f64) -> f64 {
        if !x.is_finite() {
            return 0.0;
        }
        self.seen = self.seen.saturating_add(1);
        if self.seen == 1 {
            self.mean = x;
            return 0.0;
        }
        let d = x - self.mean;
        let scale = self.var.sqrt().max(1e-3 * self.mean.abs()).max(1e-9);
        let z = if self.seen > 3 { d / scale } else { 0.0 };
        // Faster adaptation while young, then the configured rate.
        let a = f64::from(self.alpha).max(1.0 / f64::from(self.seen));
        self.mean += a * d;
        self.var = (1.0 - a) * (self.var + a * d * d);
        if !(self.mean.is_finite() && self.var.is_finite()) {
            // Finite samples near f64::MAX overflow the difference or its square: start
            // again from this sample rather than carry an infinity (then NaN z-scores) on.
            self.mean = x;
            self.var = 0.0;
            self.seen = 1;
        }
        if z.is_nan() {
            0.0
        } else {
            z
        }
    }
}

impl Surprise for Ewma {
    fn surprise(&mut self, value: f64) -> f64 {
        self.update(value).abs()
    }
}

/// Robust z-score over a sliding window: |x − median| / (1.4826 · MAD), with a floor of 1%
/// of the median's magnitude so a flat series does not divide by zero (the same floor as the
/// root-cause ranking uses).
#[derive(Debug, Clone)]
pub struct RobustZ {
    window: VecDeque<f64>,
    cap: usize,
    scratch: Vec<f64>,
}

impl RobustZ {
    pub fn new(cap: usize) -> Self {
        let cap = cap.max(8);
        Self {
            window: VecDeque::with_capacity(cap),
            cap,
            scratch: Vec::with_capacity(cap),
        }
    }

    /// The robust z of `x` against the window before it; then `x` joins the window.
    pub fn update(&mut self, x: f64) -> f64 {
        let z = if self.window.len() >= 8 {
            self.scratch.clear();
            self.scratch.extend(self.window.iter().copied());
            let med = median_in_place(&mut self.scratch);
            for v in self.scratch.iter_mut() {
                *v = (*v - med).abs();
            }
            let mad = median_in_place(&mut self.scratch);
            let scale = (1.4826 * mad).max(0.01 * med.abs()).max(1e-9);
            (x - med) / scale
        } else {
            0.0
        };
        if self.window.len() == self.cap {
            self.window.pop_front();
        }
        self.window.push_back(x);
        z
    }
}

impl Surprise for RobustZ {
    fn surprise(&mut self, value: f64) -> f64 {
        self.update(value).abs()
    }
}

/// The median of `v`, reordering it.
pub fn median_in_place(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mid = v.len() / 2;
    let (_, m, _) = v.select_nth_unstable_by(mid, f64::total_cmp);
    let m = *m;
    if v.len() % 2 == 1 {
        m
    } else {
        let lower = v[..mid].iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lower + m) / 2.0
    }
}

/// Additive Holt-Winters (level, trend, season of `period` rows; no season when `period` < 2).
/// The surprise is the one-step-ahead residual over an EW mean absolute residual.
///
/// This sits in every metric of every component, so it is kept small: the smoothing weights
/// are constants ([`HoltWinters::ALPHA`] and the next two), and one buffer serves as the
/// first season's rows while warming up and then as the season itself (empty, and freed,
/// without a season).
#[derive(Debug, Clone)]
pub struct HoltWinters {
    level: f64,
    trend: f64,
    abs_err: f64,
    /// The rows seen so far while warming up; then the season (`period` values, or none).
    season: Vec<f64>,
    period: u32,
    idx: u32,
    seen: u64,
}

impl HoltWinters {
    /// The level's smoothing weight.
    pub const ALPHA: f64 = 0.3;
    /// The trend's.
    pub const BETA: f64 = 0.01;
    /// The season's.
    pub const GAMMA: f64 = 0.1;

    pub fn new(period: usize) -> Self {
        Self {
            level: 0.0,
            trend: 0.0,
            abs_err: 0.0,
            season: Vec::new(),
            period: if period >= 2 {
                u32::try_from(period).unwrap_or(u32::MAX)
            } else {
                0
            },
            idx: 0,
            seen: 0,
        }
    }

    /// Rows that only initialise the state: the first season, or the first row.
    fn init_len(&self) -> u64 {
        u64::from(self.period.max(1))
    }

    fn season_now(&self) -> f64 {
        if self.period == 0 || self.seen < self.init_len() {
            0.0
        } else {
            self.season[self.idx as usize]
        }
    }

    /// The forecast for the next row.
    pub fn forecast(&self) -> f64 {
        self.level + self.trend + self.season_now()
    }

    /// Heap bytes held (the season).
    pub fn heap_bytes(&self) -> usize {
        self.season.capacity() * std::mem::size_of::<f64>()
    }

    /// Folds `x` in; returns its signed residual over the scale of recent residuals.
    pub fn update(&mut self, x: f64) -> f64 {
        let init_len = self.init_len();
        if self.seen < init_len {
            self.seen += 1;
            if init_len == 1 {
                self.level = x;
                return 0.0;
            }
            self.season.push(x);
            if self.seen == init_len {
                let mean = self.season.iter().sum::<f64>() / init_len as f64;
                self.level = mean;
                self.abs_err =
                    self.season.iter().map(|v| (v - mean).abs()).sum::<f64>() / init_len as f64;
                for v in &mut self.season {
                    *v -= mean;
                }
            }
            return 0.0;
        }
        let s = self.season_now();
        self.seen += 1;
        let forecast = self.level + self.trend + s;
        let err = x - forecast;
        let scale = self.abs_err.max(1e-3 * self.level.abs()).max(1e-9);
        let z = err / (1.2533 * scale);
        let prev_level = self.level;
        let (alpha, beta, gamma) = (Self::ALPHA, Self::BETA, Self::GAMMA);
        self.level = alpha * (x - s) + (1.0 - alpha) * (self.level + self.trend);
        self.trend = beta * (self.level - prev_level) + (1.0 - beta) * self.trend;
        if self.period > 0 {
            self.season[self.idx as usize] = gamma * (x - self.level) + (1.0 - gamma) * s;
            self.idx = (self.idx + 1) % self.period;
        }
        self.abs_err = 0.98 * self.abs_err + 0.02 * err.abs();
        z
    }
}

impl Surprise for HoltWinters {
    fn surprise(&mut self, value: f64) -> f64 {
        self.update(value).abs()
    }
}

/// The longest short window a [`Likelihood`] averages.
pub const MAX_SHORT: usize = 5;

/// Numenta-style anomaly likelihood: the mean of the last `short` surprises against the
/// long-run distribution of such means (exponentially weighted over about `long` rows, so the
/// memory is constant); the score is the normal CDF of that z, 0.5 while learning.
#[derive(Debug, Clone)]
pub struct Likelihood<S> {
    inner: S,
    /// The last `short_len` surprises, a ring in a fixed array (no heap: this sits in every
    /// metric of every component; f32 is ample for a surprise capped at 1e6).
    short: [f32; MAX_SHORT],
    mean: f64,
    var: f64,
    /// Rows of history the long-run distribution forgets over (its weight is `1 / long`).
    long: u16,
    learn: u16,
    seen: u32,
    short_pos: u8,
    short_fill: u8,
    short_len: u8,
}

impl<S: Surprise> Likelihood<S> {
    pub fn new(inner: S) -> Self {
        Self::with_windows(inner, 5, 4032, 300)
    }

    /// `short` rows averaged (at most [`MAX_SHORT`]), about `long` rows of history, `learn`
    /// rows before any score (each 16 to 65,535).
    pub fn with_windows(inner: S, short: usize, long: usize, learn: usize) -> Self {
        let count = |n: usize| u16::try_from(n.max(16)).unwrap_or(u16::MAX);
        Self {
            inner,
            short: [0.0; MAX_SHORT],
            mean: 0.0,
            var: 0.0,
            long: count(long),
            learn: count(learn),
            seen: 0,
            short_pos: 0,
            short_fill: 0,
            short_len: short.clamp(1, MAX_SHORT) as u8,
        }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    pub fn inner_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Feeds a value and returns its likelihood score in `[0, 1]`.
    pub fn update(&mut self, value: f64) -> f64 {
        let raw = self.inner.surprise(value);
        self.push_surprise(raw)
    }

    /// Feeds an already computed surprise.
    pub fn push_surprise(&mut self, raw: f64) -> f64 {
        let raw = if raw.is_finite() { raw.min(1e6) } else { 1e6 } as f32;
        self.seen = self.seen.saturating_add(1);
        let slot = usize::from(self.short_pos);
        if self.short_fill < self.short_len {
            self.short_fill += 1;
        }
        self.short[slot] = raw;
        self.short_pos = (self.short_pos + 1) % self.short_len;
        // Summed afresh (at most five adds): no running sum to drift, or to store.
        let filled = &self.short[..usize::from(self.short_fill)];
        let avg = filled.iter().map(|&v| f64::from(v)).sum::<f64>() / filled.len() as f64;
        let score = if self.seen > u32::from(self.learn) {
            let std = self.var.sqrt().max(1e-3 * self.mean.abs()).max(1e-6);
            tail_score((avg - self.mean) / std)
        } else {
            0.5
        };
        // Learn fast at first (a plain mean), then forget slowly.
        let a = (1.0 / f64::from(self.long)).max(1.0 / f64::from(self.seen));
        let d = avg - self.mean;
        self.mean += a * d;
        self.var = (1.0 - a) * (self.var + a * d * d);
        score
    }
}

impl<S: Surprise> Detector for Likelihood<S> {
    fn score(&mut self, _t: i64, value: f64) -> f64 {
        self.update(value)
    }
}

/// A detector that never fires: NAB's null.
#[derive(Debug, Clone, Default)]
pub struct Null;

impl Detector for Null {
    fn score(&mut self, _t: i64, _value: f64) -> f64 {
        0.0
    }
}

/// Φ(z), the standard normal CDF.
pub fn normal_cdf(z: f64) -> f64 {
    0.5 * libm::erfc(-z / std::f64::consts::SQRT_2)
}

/// A z-score as a score in `[0, 1]`: Φ(z) up to z = 3, then `1 − c/z²` (continuous at 3),
/// which keeps far tails apart where Φ would round them all to 1.0 (a threshold sweep needs
/// them ordered).
pub fn tail_score(z: f64) -> f64 {
    const Z0: f64 = 3.0;
    if z <= Z0 {
        return normal_cdf(z);
    }
    let c = (1.0 - normal_cdf(Z0)) * Z0 * Z0;
    1.0 - c / (z * z)
}

/// The season length for a series sampled every `step_s` seconds: one day, when a day is at
/// most 2,000 rows; otherwise none.
pub fn daily_period(step_s: i64) -> usize {
    if step_s <= 0 {
        return 0;
    }
    let p = (86_400 / step_s) as usize;
    if (2..=2_000).contains(&p) {
        p
    } else {
        0
    }
}

/// The median spacing of `timestamps` (seconds), 0 for fewer than two rows.
pub fn median_step(timestamps: &[i64]) -> i64 {
    let mut d: Vec<f64> = timestamps
        .windows(2)
        .map(|w| (w[1] - w[0]) as f64)
        .collect();
    if d.is_empty() {
        return 0;
    }
    median_in_place(&mut d) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Finite samples at the edge of f64 overflow a difference; the z-scores stay numbers,
    /// and the series is scored again from the next samples on.
    #[test]
    fn extreme_finite_samples_never_give_nan() {
        let mut e = Ewma::new(0.01);
        for x in [0.0, 1.0, 1e308, -1e308, f64::MAX, f64::MIN, 0.0] {
            assert!(!e.update(x).is_nan(), "{x}");
        }
        assert!(e.mean().is_finite() && e.std().is_finite());
        for i in 0..50 {
            assert!(e.update(f64::from(i % 3)).is_finite());
        }
        assert_eq!(
            e.update(f64::INFINITY),
            0.0,
            "a non-finite sample is not folded in"
        );
        assert!(e.mean().is_finite());
    }

    #[test]
    fn normal_cdf_matches_known_values() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_cdf(1.96) - 0.975).abs() < 1e-4);
        assert!((normal_cdf(-1.0) - 0.158_655).abs() < 1e-5);
    }

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median_in_place(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median_in_place(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn holt_winters_holds_no_heap_without_a_season_and_one_season_with() {
        let mut flat = HoltWinters::new(0);
        let mut seasonal = HoltWinters::new(24);
        for i in 0..100 {
            flat.update(i as f64);
            seasonal.update(i as f64);
        }
        assert_eq!(flat.heap_bytes(), 0);
        assert!(seasonal.heap_bytes() >= 24 * 8 && seasonal.heap_bytes() <= 32 * 8);
        // The first row only initialises: the forecast after it is that row.
        let mut one = HoltWinters::new(0);
        assert_eq!(one.update(7.0), 0.0);
        assert_eq!(one.forecast(), 7.0);
    }

    #[test]
    fn holt_winters_learns_a_season() {
        let mut hw = HoltWinters::new(24);
        let f = |i: usize| 10.0 + 3.0 * ((i % 24) as f64 / 24.0 * std::f64::consts::TAU).sin();
        for i in 0..24 * 20 {
            hw.update(f(i));
        }
        assert!(
            (hw.forecast() - f(24 * 20)).abs() < 0.05,
            "{}",
            hw.forecast()
        );
    }
}

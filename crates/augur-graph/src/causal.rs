//! Failure influence between components, learned from their metric series with a lagged
//! Granger test: does the past of `x` (lags `1..=p`) predict `y` better than `y`'s own past?
//!
//! For one ordered pair the test fits two least-squares models on the same sample
//! `t = max_lag .. n`:
//!
//! - restricted:   `y_t ~ 1 + y_{t-1} + … + y_{t-p}`
//! - unrestricted: `y_t ~ 1 + y_{t-1} + … + y_{t-p} + x_{t-1} + … + x_{t-p}`
//!
//! and compares their residual sums of squares with an F statistic on `(p, m - 2p - 1)`
//! degrees of freedom, `m = n - max_lag` being the number of fitted points. The p-value is the
//! upper tail of the F distribution. The lag `p` is either `max_lag` or the one whose
//! unrestricted model has the smallest BIC ([`LagSelection`]).
//!
//! Everything is computed from cross-products: each series is prepared once (differenced,
//! standardised, its lagged sums and Gram matrix, and the restricted model for every lag, which
//! does not depend on the cause), and each pair only adds the `(max_lag + 1) · max_lag`
//! cross-products of its two series and a Cholesky factorisation of a `(2p + 2)`-square matrix.
//!
//! Pure and deterministic: no clock, no randomness, and the same output for any thread count.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use thiserror::Error;

use crate::{EdgeSource, EdgeUpdate, Observation};

/// The largest `max_lag` accepted: a metric's influence over more steps than this is better
/// found on a coarser series.
pub const MAX_LAG_LIMIT: usize = 24;

/// Why a causal analysis was refused. Nothing is computed when one is returned.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum CausalError {
    #[error("max_lag {0} is outside 1..={MAX_LAG_LIMIT}")]
    BadMaxLag(usize),
    #[error("alpha {0} is outside (0, 1)")]
    BadAlpha(f64),
    #[error("min_strength {0} is outside [0, 1]")]
    BadMinStrength(f64),
    #[error("threads is 0; it must be at least 1")]
    ZeroThreads,
    #[error("series {index} has an empty component name")]
    EmptyComponent { index: usize },
    #[error(
        "series {index} ({component}) has {len} points but series 0 ({first}) has {expected}; \
         all series must have the same length"
    )]
    LengthMismatch {
        index: usize,
        component: String,
        len: usize,
        first: String,
        expected: usize,
    },
    #[error(
        "series {index} ({component}) has {len} points; max_lag {max_lag} needs at least {need}"
    )]
    TooShort {
        index: usize,
        component: String,
        len: usize,
        max_lag: usize,
        need: usize,
    },
    #[error("series {index} ({component}) has the non-finite value {value} at point {at}")]
    NotFinite {
        index: usize,
        component: String,
        at: usize,
        value: f64,
    },
}

/// How the lag of a test is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LagSelection {
    /// The lag `1..=max_lag` whose unrestricted model has the smallest Bayesian information
    /// criterion `m · ln(RSS / m) + (2p + 1) · ln m`, all lags fitted on the same sample.
    #[default]
    MinBic,
    /// Always `max_lag`.
    Fixed,
}

/// Knobs of [`causal_links`] and [`granger_test`].
#[derive(Debug, Clone, PartialEq)]
pub struct CausalOptions {
    /// Largest lag tried, in samples, `1..=`[`MAX_LAG_LIMIT`].
    pub max_lag: usize,
    pub lag_selection: LagSelection,
    /// Significance level: a link needs a p-value below it. With many series, expect about
    /// `alpha` times the number of ordered pairs of false links before `min_strength` applies.
    pub alpha: f64,
    /// Smallest strength (partial R², see [`GrangerTest::strength`]) a link must have. Guards
    /// against links that are significant only because the series are long.
    pub min_strength: f64,
    /// Test on first differences `s_t - s_{t-1}`: metric series usually wander (counters,
    /// queue depths), and a Granger test on two independent random walks finds spurious links.
    pub difference: bool,
    /// Threads [`causal_links`] spreads the effects over; the output does not depend on it.
    pub threads: usize,
}

impl Default for CausalOptions {
    fn default() -> Self {
        Self {
            max_lag: 3,
            lag_selection: LagSelection::MinBic,
            alpha: 0.01,
            min_strength: 0.05,
            difference: true,
            threads: 1,
        }
    }
}

impl CausalOptions {
    /// Checks the options alone.
    pub fn validate(&self) -> Result<(), CausalError> {
        if !(1..=MAX_LAG_LIMIT).contains(&self.max_lag) {
            return Err(CausalError::BadMaxLag(self.max_lag));
        }
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            return Err(CausalError::BadAlpha(self.alpha));
        }
        if !(0.0..=1.0).contains(&self.min_strength) {
            return Err(CausalError::BadMinStrength(self.min_strength));
        }
        if self.threads == 0 {
            return Err(CausalError::ZeroThreads);
        }
        Ok(())
    }

    /// The fewest points a series needs: the differencing step, `max_lag` points of history
    /// before the first fitted one, and at least as many residual degrees of freedom as the
    /// unrestricted model has parameters (`2 · max_lag + 1`).
    pub fn min_len(&self) -> usize {
        usize::from(self.difference) + self.max_lag + 2 * (2 * self.max_lag + 1)
    }
}

/// The outcome of one Granger test of "`cause` helps predict `effect`".
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GrangerTest {
    /// The lag the test was run at. `max_lag` when there was nothing to test.
    pub lag: usize,
    /// `((RSS_r - RSS_u) / p) / (RSS_u / (m - 2p - 1))`; infinite when the unrestricted model
    /// fits exactly.
    pub f_stat: f64,
    /// Upper tail of F(p, m - 2p - 1) at `f_stat`.
    pub p_value: f64,
    /// Partial R² of the cause's past, `(RSS_r - RSS_u) / RSS_r` in [0, 1]: the share of what
    /// the effect's own past leaves unexplained that the cause's past explains. For a fixed
    /// lag and length it grows monotonically with `f_stat`: `p·F / (p·F + m - 2p - 1)`.
    pub strength: f64,
}

impl GrangerTest {
    /// No evidence either way: a flat series, an effect its own past predicts exactly, or a
    /// cause that is collinear with the effect's past.
    pub fn no_evidence(lag: usize) -> Self {
        Self {
            lag,
            f_stat: 0.0,
            p_value: 1.0,
            strength: 0.0,
        }
    }

    /// Whether the test supports a link under `opts`: `p_value < alpha` and
    /// `strength >= min_strength`.
    pub fn is_link(&self, opts: &CausalOptions) -> bool {
        self.p_value < opts.alpha && self.strength >= opts.min_strength
    }
}

/// A failure influence found between two components: failures of `cause` precede and predict
/// failures of `effect`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CausalLink {
    pub cause: String,
    pub effect: String,
    /// [`GrangerTest::strength`], the partial R² in [0, 1].
    pub strength: f64,
    /// In samples of the input series.
    pub lag: usize,
    pub p_value: f64,
    pub f_stat: f64,
}

/// Tests whether the past of `cause` helps predict `effect`. Errors name the series `cause`
/// (index 0) or `effect` (index 1).
pub fn granger_test(
    cause: &[f64],
    effect: &[f64],
    opts: &CausalOptions,
) -> Result<GrangerTest, CausalError> {
    let series = [("cause", cause), ("effect", effect)];
    validate(&series, opts)?;
    let x = Prepared::new(cause, opts);
    let y = Prepared::new(effect, opts);
    let mut scratch = Scratch::new(opts.max_lag);
    Ok(
        test_pair(&x, &y, opts, 0.0, &mut scratch)
            .unwrap_or(GrangerTest::no_evidence(opts.max_lag)),
    )
}

/// Runs the Granger test on every ordered pair of series that belong to different components
/// and returns the links that pass [`GrangerTest::is_link`].
///
/// Several series may belong to one component (latency, error rate, queue depth…): each pair
/// of series is tested and only the strongest link per ordered component pair is kept (ties:
/// smaller p-value, then the earlier series). Series of one component are never tested
/// against each other. Flat series carry no information and give no link.
///
/// When both directions between two components are significant, both are returned; the one
/// with the larger strength is the dominant direction, and the sort puts it first.
///
/// Sorted by strength (descending), then cause, then effect.
pub fn causal_links(
    series: &[(&str, &[f64])],
    opts: &CausalOptions,
) -> Result<Vec<CausalLink>, CausalError> {
    validate(series, opts)?;
    let prepared: Vec<Prepared> = series.iter().map(|(_, s)| Prepared::new(s, opts)).collect();
    let n = series.len();

    // Contiguous blocks of effects per thread, concatenated in order: the candidate order, and
    // so every tie-break below, does not depend on the thread count.
    let threads = opts.threads.min(n.max(1));
    let per = n.div_ceil(threads.max(1)).max(1);
    let work = |effects: std::ops::Range<usize>| {
        let mut scratch = Scratch::new(opts.max_lag);
        let mut found = Vec::new();
        for e in effects {
            let y = &prepared[e];
            if y.flat {
                continue;
            }
            for (c, x) in prepared.iter().enumerate() {
                if x.flat || series[c].0 == series[e].0 {
                    continue;
                }
                if let Some(t) = test_pair(x, y, opts, opts.min_strength, &mut scratch) {
                    if t.is_link(opts) {
                        found.push((c, e, t));
                    }
                }
            }
        }
        found
    };
    let candidates: Vec<(usize, usize, GrangerTest)> = if threads <= 1 {
        work(0..n)
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..n)
                .step_by(per)
                .map(|start| {
                    let work = &work;
                    s.spawn(move || work(start..(start + per).min(n)))
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        })
    };

    let mut best: BTreeMap<(&str, &str), GrangerTest> = BTreeMap::new();
    for (c, e, t) in candidates {
        let key = (series[c].0, series[e].0);
        match best.get(&key) {
            Some(held) if !stronger(&t, held) => {}
            _ => {
                best.insert(key, t);
            }
        }
    }
    let mut links: Vec<CausalLink> = best
        .into_iter()
        .map(|((cause, effect), t)| CausalLink {
            cause: cause.to_owned(),
            effect: effect.to_owned(),
            strength: t.strength,
            lag: t.lag,
            p_value: t.p_value,
            f_stat: t.f_stat,
        })
        .collect();
    links.sort_by(|a, b| {
        b.strength
            .total_cmp(&a.strength)
            .then_with(|| a.cause.cmp(&b.cause))
            .then_with(|| a.effect.cmp(&b.effect))
    });
    Ok(links)
}

/// Turns links into causal edge observations. A cause's failure reaches its effect, and an
/// edge `a → b` means "`a` depends on `b`" (failure of `b` reaches `a`), so the link
/// `cause → effect` becomes the edge `effect → cause`. Order follows `links`.
pub fn links_to_edges(links: &[CausalLink], now_ms: u64) -> Vec<EdgeUpdate> {
    links
        .iter()
        .map(|l| EdgeUpdate {
            from: l.effect.clone(),
            to: l.cause.clone(),
            observation: Observation::new(EdgeSource::Causal, l.strength.clamp(0.0, 1.0), now_ms),
        })
        .collect()
}

/// `a` beats `b`: larger strength, then smaller p-value. Equal is not stronger, so the first
/// seen wins a full tie.
fn stronger(a: &GrangerTest, b: &GrangerTest) -> bool {
    match a.strength.total_cmp(&b.strength) {
        Ordering::Greater => true,
        Ordering::Less => false,
        Ordering::Equal => a.p_value < b.p_value,
    }
}

fn validate(series: &[(&str, &[f64])], opts: &CausalOptions) -> Result<(), CausalError> {
    opts.validate()?;
    let Some(&(first, first_values)) = series.first() else {
        return Ok(());
    };
    let need = opts.min_len();
    for (index, &(component, values)) in series.iter().enumerate() {
        if component.is_empty() {
            return Err(CausalError::EmptyComponent { index });
        }
        if values.len() != first_values.len() {
            return Err(CausalError::LengthMismatch {
                index,
                component: component.to_owned(),
                len: values.len(),
                first: first.to_owned(),
                expected: first_values.len(),
            });
        }
        if values.len() < need {
            return Err(CausalError::TooShort {
                index,
                component: component.to_owned(),
                len: values.len(),
                max_lag: opts.max_lag,
                need,
            });
        }
        if let Some((at, &value)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(CausalError::NotFinite {
                index,
                component: component.to_owned(),
                at,
                value,
            });
        }
    }
    Ok(())
}

/// Relative size under which a pivot of the normal equations counts as zero (collinear).
const PIVOT_TOL: f64 = 1e-9;
/// Share of the effect's variance under which its own past is taken to predict it exactly.
const EXACT_TOL: f64 = 1e-10;

/// What is computed once per series.
struct Prepared {
    /// Differenced (if asked) and standardised values.
    z: Vec<f64>,
    /// No variance: nothing to learn from or about it.
    flat: bool,
    /// `sums[k] = Σ_t z[t-k]` over the sample `t = L..len`, `k = 0..=L`.
    sums: Vec<f64>,
    /// `gram[i·(L+1) + j] = Σ_t z[t-i]·z[t-j]`, `i, j = 0..=L`.
    gram: Vec<f64>,
    /// Restricted model's RSS as effect, per lag `p = 1..=L` at index `p - 1`; `None` when it
    /// cannot be fitted or predicts the series exactly.
    rss_r: Vec<Option<f64>>,
}

impl Prepared {
    fn new(values: &[f64], opts: &CausalOptions) -> Self {
        let l = opts.max_lag;
        let mut z: Vec<f64> = if opts.difference {
            values.windows(2).map(|w| w[1] - w[0]).collect()
        } else {
            values.to_vec()
        };
        let len = z.len() as f64;
        let mean = z.iter().sum::<f64>() / len;
        let var = z.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / len;
        let sd = var.sqrt();
        let scale = values.iter().fold(0.0_f64, |a, v| a.max(v.abs()));
        let flat = !sd.is_finite() || sd <= 1e-12 * scale;
        let m = z.len() - l;
        let mut sums = vec![0.0; l + 1];
        let mut gram = vec![0.0; (l + 1) * (l + 1)];
        let mut rss_r = vec![None; l];
        if !flat {
            for v in &mut z {
                *v = (*v - mean) / sd;
            }
            for (k, s) in sums.iter_mut().enumerate() {
                *s = lagged(&z, l, k, m).iter().sum();
            }
            for i in 0..=l {
                for j in i..=l {
                    let g = dot(lagged(&z, l, i, m), lagged(&z, l, j, m));
                    gram[i * (l + 1) + j] = g;
                    gram[j * (l + 1) + i] = g;
                }
            }
            // Total sum of squares of the target about its mean, for the exact-fit test.
            let tss = gram[0] - sums[0] * sums[0] / m as f64;
            let mut a = vec![0.0; (l + 2) * (l + 2)];
            for p in 1..=l {
                let k = p + 2;
                // Variables: 0 intercept, 1..=p own lags, p+1 the target (lag 0).
                let lag_of = |v: usize| if v == p + 1 { 0 } else { v };
                for r in 0..k {
                    for c in 0..k {
                        a[r * k + c] = match (r, c) {
                            (0, 0) => m as f64,
                            (0, v) | (v, 0) => sums[lag_of(v)],
                            (u, v) => gram[lag_of(u) * (l + 1) + lag_of(v)],
                        };
                    }
                }
                rss_r[p - 1] = augmented_rss(&mut a[..k * k], k).filter(|&r| r > EXACT_TOL * tss);
            }
            // The models are nested: a series its longest own past predicts exactly (a sine,
            // a period) leaves nothing for any cause to explain, at whatever lag.
            if rss_r[l - 1].is_none() {
                rss_r.fill(None);
            }
        }
        Self {
            z,
            flat,
            sums,
            gram,
            rss_r,
        }
    }
}

/// The column of lag `k` over the sample `t = l .. l + m`.
fn lagged(z: &[f64], l: usize, k: usize, m: usize) -> &[f64] {
    &z[l - k..l - k + m]
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0_f64; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// Per-thread buffers, so a pair allocates nothing.
struct Scratch {
    /// `cross[i·(L+1) + j] = Σ_t y[t-i]·x[t-j]`, `i = 0..=L`, `j = 1..=L`.
    cross: Vec<f64>,
    a: Vec<f64>,
}

impl Scratch {
    fn new(l: usize) -> Self {
        Self {
            cross: vec![0.0; (l + 1) * (l + 1)],
            a: vec![0.0; (2 * l + 2) * (2 * l + 2)],
        }
    }
}

/// The test of `x → y` at the lag chosen by `opts`; `None` when there is nothing to test.
/// Below strength `p_value_from` the p-value is not computed and reads 1.
fn test_pair(
    x: &Prepared,
    y: &Prepared,
    opts: &CausalOptions,
    p_value_from: f64,
    scratch: &mut Scratch,
) -> Option<GrangerTest> {
    let l = opts.max_lag;
    if x.flat || y.flat || y.rss_r[l - 1].is_none() {
        return None;
    }
    let m = y.z.len() - l;
    cross_products(&x.z, &y.z, l, m, &mut scratch.cross);
    let lags = match opts.lag_selection {
        LagSelection::MinBic => 1..=l,
        LagSelection::Fixed => l..=l,
    };
    let ln_m = (m as f64).ln();
    let mut chosen: Option<(f64, usize, f64, f64)> = None;
    for p in lags {
        let Some(rss_r) = y.rss_r[p - 1] else {
            continue;
        };
        let k = 2 * p + 2;
        // Variables: 0 intercept, 1..=p effect lags, p+1..=2p cause lags, 2p+1 the target.
        let a = &mut scratch.a[..k * k];
        for r in 0..k {
            for c in r..k {
                let v = entry(x, y, &scratch.cross, l, p, m, r, c);
                a[r * k + c] = v;
                a[c * k + r] = v;
            }
        }
        let Some(rss_u) = augmented_rss(a, k) else {
            continue;
        };
        let bic = m as f64 * (rss_u.max(f64::MIN_POSITIVE) / m as f64).ln() + k as f64 * ln_m;
        if chosen.is_none_or(|(b, ..)| bic < b) {
            chosen = Some((bic, p, rss_r, rss_u));
        }
    }
    let (_, p, rss_r, rss_u) = chosen?;
    let df1 = p as f64;
    let df2 = (m - 2 * p - 1) as f64;
    let gain = (rss_r - rss_u).max(0.0);
    let strength = (gain / rss_r).clamp(0.0, 1.0);
    if rss_u <= 1e-12 * rss_r {
        return Some(GrangerTest {
            lag: p,
            f_stat: f64::INFINITY,
            p_value: 0.0,
            strength,
        });
    }
    let f_stat = (gain / df1) / (rss_u / df2);
    // The tail costs a continued fraction; a caller that drops weak results anyway skips it.
    let p_value = if strength < p_value_from {
        1.0
    } else {
        f_upper_tail(f_stat, df1, df2)
    };
    Some(GrangerTest {
        lag: p,
        f_stat,
        p_value,
        strength,
    })
}

/// `cross[i·(L+1) + j] = Σ_t y[t-i]·x[t-j]` over the sample `t = l .. l + m`, for
/// `i = 0..=l`, `j = 1..=l`. Only the first row and column are full dot products; the rest
/// follow by shifting the sample one step back:
/// `C[i+1][j+1] = C[i][j] + y[l-1-i]·x[l-1-j] - y[l+m-1-i]·x[l+m-1-j]`.
fn cross_products(x: &[f64], y: &[f64], l: usize, m: usize, cross: &mut [f64]) {
    let w = l + 1;
    let y0 = lagged(y, l, 0, m);
    for (j, c) in cross.iter_mut().enumerate().take(w).skip(1) {
        *c = dot(y0, lagged(x, l, j, m));
    }
    let x1 = lagged(x, l, 1, m);
    for i in 1..=l {
        cross[i * w + 1] = dot(lagged(y, l, i, m), x1);
    }
    let last = l + m - 1;
    for i in 0..l {
        for j in 1..l {
            cross[(i + 1) * w + j + 1] =
                cross[i * w + j] + y[l - 1 - i] * x[l - 1 - j] - y[last - i] * x[last - j];
        }
    }
}

/// Entry `(r, c)`, `r <= c`, of the augmented normal equations of the unrestricted model at
/// lag `p`: variable 0 is the intercept, `1..=p` the effect's lags, `p+1..=2p` the cause's
/// lags, `2p+1` the effect itself.
#[allow(clippy::too_many_arguments)]
fn entry(
    x: &Prepared,
    y: &Prepared,
    cross: &[f64],
    l: usize,
    p: usize,
    m: usize,
    r: usize,
    c: usize,
) -> f64 {
    let w = l + 1;
    // (series: true for the cause, lag); None for the intercept.
    let var = |v: usize| -> Option<(bool, usize)> {
        match v {
            0 => None,
            v if v <= p => Some((false, v)),
            v if v <= 2 * p => Some((true, v - p)),
            _ => Some((false, 0)),
        }
    };
    match (var(r), var(c)) {
        (None, None) => m as f64,
        (None, Some((false, k))) | (Some((false, k)), None) => y.sums[k],
        (None, Some((true, k))) | (Some((true, k)), None) => x.sums[k],
        (Some((false, i)), Some((false, j))) => y.gram[i * w + j],
        (Some((true, i)), Some((true, j))) => x.gram[i * w + j],
        (Some((false, i)), Some((true, j))) | (Some((true, j)), Some((false, i))) => {
            cross[i * w + j]
        }
    }
}

/// Cholesky factorisation, in place, of the `k × k` augmented normal equations
/// `[X'X X'y; y'X y'y]`; the last pivot is the residual sum of squares of `y` on `X`.
/// `None` when a regressor is (numerically) a combination of the previous ones.
fn augmented_rss(a: &mut [f64], k: usize) -> Option<f64> {
    for j in 0..k {
        let mut d = a[j * k + j];
        for t in 0..j {
            d -= a[j * k + t] * a[j * k + t];
        }
        if j == k - 1 {
            return Some(d.max(0.0));
        }
        let orig = a[j * k + j];
        if d.is_nan() || d <= PIVOT_TOL * orig {
            return None;
        }
        let root = d.sqrt();
        a[j * k + j] = root;
        for i in j + 1..k {
            let mut s = a[i * k + j];
            for t in 0..j {
                s -= a[i * k + t] * a[j * k + t];
            }
            a[i * k + j] = s / root;
        }
    }
    None
}

/// `P(F > f)` for `F ~ F(d1, d2)`: the regularised incomplete beta `I_x(d2/2, d1/2)` at
/// `x = d2 / (d2 + d1·f)`.
pub fn f_upper_tail(f: f64, d1: f64, d2: f64) -> f64 {
    if f.is_nan() || d1 <= 0.0 || d2 <= 0.0 {
        return f64::NAN;
    }
    if f <= 0.0 {
        return 1.0;
    }
    if f.is_infinite() {
        return 0.0;
    }
    let x = d2 / (d2 + d1 * f);
    regularized_beta(x, d2 / 2.0, d1 / 2.0)
}

/// `I_x(a, b)`, the regularised incomplete beta function, by its continued fraction (modified
/// Lentz), on the side of the symmetry `I_x(a, b) = 1 - I_{1-x}(b, a)` where it converges fast.
fn regularized_beta(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    if x > (a + 1.0) / (a + b + 2.0) {
        return 1.0 - regularized_beta(1.0 - x, b, a);
    }
    let ln_front = a * x.ln() + b * (1.0 - x).ln() - ln_beta(a, b) - a.ln();
    ln_front.exp() / beta_fraction(x, a, b)
}

/// The denominator `1 + d1/(1 + d2/(1 + …))` of the incomplete beta's continued fraction,
/// with `d_{2m+1} = -(a+m)(a+b+m)x / ((a+2m)(a+2m+1))` and `d_{2m} = m(b-m)x / ((a+2m-1)(a+2m))`.
fn beta_fraction(x: f64, a: f64, b: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let mut f = 1.0;
    let mut c = 1.0;
    let mut d = 0.0;
    for step in 1..=1000 {
        let half = (step / 2) as f64;
        let coef = if step % 2 == 1 {
            -(a + half) * (a + b + half) * x / ((a + 2.0 * half) * (a + 2.0 * half + 1.0))
        } else {
            half * (b - half) * x / ((a + 2.0 * half - 1.0) * (a + 2.0 * half))
        };
        d = 1.0 + coef * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + coef / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        let delta = c * d;
        f *= delta;
        if (delta - 1.0).abs() < 1e-15 {
            break;
        }
    }
    f
}

fn ln_beta(a: f64, b: f64) -> f64 {
    ln_gamma(a) + ln_gamma(b) - ln_gamma(a + b)
}

/// `ln Γ(x)` for `x > 0`: Stirling's series from `x ≥ 10`, shifted down by
/// `Γ(x) = Γ(x + 1) / x` below.
fn ln_gamma(x: f64) -> f64 {
    let mut shift = 0.0;
    let mut x = x;
    while x < 10.0 {
        shift += x.ln();
        x += 1.0;
    }
    let inv = 1.0 / x;
    let inv2 = inv * inv;
    // Bernoulli terms B_2k / (2k (2k - 1) x^(2k - 1)), k = 1..=6, highest first.
    let coefs = [
        -691.0 / 360_360.0,
        1.0 / 1188.0,
        -1.0 / 1680.0,
        1.0 / 1260.0,
        -1.0 / 360.0,
        1.0 / 12.0,
    ];
    let series = inv * coefs.iter().fold(0.0, |acc, c| acc * inv2 + c);
    (x - 0.5) * x.ln() - x + 0.5 * (2.0 * std::f64::consts::PI).ln() + series - shift
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Seeded noise for reproducible synthetic series.
    struct Rng(rand::rngs::StdRng);

    impl Rng {
        fn new(seed: u64) -> Self {
            Self(<rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(
                seed,
            ))
        }

        fn uniform(&mut self) -> f64 {
            rand::Rng::random(&mut self.0)
        }

        fn normal(&mut self) -> f64 {
            rand::Rng::sample(&mut self.0, rand_distr::StandardNormal)
        }
    }

    fn ar_noise(rng: &mut Rng, n: usize, phi: f64) -> Vec<f64> {
        let mut out = Vec::with_capacity(n);
        let mut prev = 0.0;
        for _ in 0..n {
            prev = phi * prev + rng.normal();
            out.push(prev);
        }
        out
    }

    fn random_walk(rng: &mut Rng, n: usize) -> Vec<f64> {
        let mut level = 100.0;
        (0..n)
            .map(|_| {
                level += rng.normal();
                level
            })
            .collect()
    }

    /// `y_t = 0.8·x_{t-2} + noise`, `x` AR(1) noise.
    fn planted(seed: u64, n: usize) -> (Vec<f64>, Vec<f64>) {
        let mut rng = Rng::new(seed);
        let x = ar_noise(&mut rng, n, 0.5);
        let y = (0..n)
            .map(|t| if t >= 2 { 0.8 * x[t - 2] } else { 0.0 } + rng.normal())
            .collect();
        (x, y)
    }

    fn levels_opts() -> CausalOptions {
        CausalOptions {
            difference: false,
            ..CausalOptions::default()
        }
    }

    #[test]
    fn ln_gamma_matches_known_values() {
        let fact = [1.0, 1.0, 2.0, 6.0, 24.0, 120.0, 720.0, 5040.0_f64];
        for (n, f) in fact.iter().enumerate() {
            let err = ln_gamma(n as f64 + 1.0) - f.ln();
            assert!(err.abs() < 1e-13, "n={n}: {err}");
        }
        let half = std::f64::consts::PI.sqrt().ln();
        assert!((ln_gamma(0.5) - half).abs() < 1e-13);
        // ln 170! from the sum of logs.
        let big: f64 = (1..=170).map(|k| (k as f64).ln()).sum();
        assert!((ln_gamma(171.0) - big).abs() < 1e-10 * big);
    }

    #[test]
    fn f_tail_matches_tables() {
        // Critical values from standard F tables.
        for (f, d1, d2, p) in [
            (4.96, 1.0, 10.0, 0.05),
            (3.49, 2.0, 20.0, 0.05),
            (3.95, 3.0, 100.0, 0.01),
            (2.70, 3.0, 100.0, 0.05),
            (10.04, 1.0, 10.0, 0.01),
        ] {
            let got = f_upper_tail(f, d1, d2);
            assert!(
                (got - p).abs() < 0.002 * (1.0 + p / 0.01),
                "F({d1},{d2}) at {f}: {got}"
            );
        }
        assert_eq!(f_upper_tail(0.0, 3.0, 10.0), 1.0);
        assert_eq!(f_upper_tail(f64::INFINITY, 3.0, 10.0), 0.0);
    }

    proptest! {
        #[test]
        fn f_tail_has_closed_form_for_two_numerator_df(f in 0.0f64..50.0, d2 in 1usize..800) {
            // With d1 = 2: P(F > f) = (d2 / (d2 + 2f))^(d2/2).
            let d2 = d2 as f64;
            let want = (d2 / (d2 + 2.0 * f)).powf(d2 / 2.0);
            let got = f_upper_tail(f, 2.0, d2);
            prop_assert!((got - want).abs() <= 1e-10 + 1e-8 * want, "{got} vs {want}");
        }

        #[test]
        fn f_tail_is_a_decreasing_probability(f in 0.0f64..100.0, d1 in 1usize..10, d2 in 1usize..600) {
            let (d1, d2) = (d1 as f64, d2 as f64);
            let p = f_upper_tail(f, d1, d2);
            let q = f_upper_tail(f + 0.5, d1, d2);
            prop_assert!((0.0..=1.0).contains(&p));
            prop_assert!(q <= p + 1e-12);
        }

        /// The test is invariant to the units and offset of either series, and its outputs
        /// stay in range.
        #[test]
        fn granger_is_affine_invariant(seed in 0u64..1000, scale in 0.01f64..100.0, shift in -1e3f64..1e3) {
            let (x, y) = planted(seed, 120);
            let opts = CausalOptions::default();
            let base = granger_test(&x, &y, &opts).unwrap();
            let x2: Vec<f64> = x.iter().map(|v| scale * v + shift).collect();
            let y2: Vec<f64> = y.iter().map(|v| -scale * v + 2.0 * shift).collect();
            let moved = granger_test(&x2, &y2, &opts).unwrap();
            prop_assert!((0.0..=1.0).contains(&base.strength));
            prop_assert!((0.0..=1.0).contains(&base.p_value));
            prop_assert_eq!(base.lag, moved.lag);
            prop_assert!((base.strength - moved.strength).abs() < 1e-9);
            prop_assert!((base.f_stat - moved.f_stat).abs() < 1e-6 * (1.0 + base.f_stat));
        }

        /// Whatever finite values come in, the test answers with numbers in range.
        #[test]
        fn granger_never_panics_and_stays_in_range(
            x in proptest::collection::vec(prop_oneof![-1e6f64..1e6, Just(0.0), -1e300f64..1e300], 18..60),
            seed in 0u64..100,
            difference in any::<bool>(),
            fixed in any::<bool>(),
        ) {
            let mut rng = Rng::new(seed);
            let y: Vec<f64> = x.iter().map(|v| if rng.uniform() < 0.3 { *v } else { rng.normal() }).collect();
            let opts = CausalOptions {
                difference,
                lag_selection: if fixed { LagSelection::Fixed } else { LagSelection::MinBic },
                ..CausalOptions::default()
            };
            for (a, b) in [(&x, &y), (&y, &x), (&x, &x)] {
                let t = granger_test(a, b, &opts).unwrap();
                prop_assert!((0.0..=1.0).contains(&t.p_value), "{t:?}");
                prop_assert!((0.0..=1.0).contains(&t.strength), "{t:?}");
                prop_assert!(t.f_stat >= 0.0, "{t:?}");
                prop_assert!((1..=opts.max_lag).contains(&t.lag), "{t:?}");
            }
        }

        /// The output depends on neither the order of the input nor the thread count.
        #[test]
        fn links_are_deterministic(seed in 0u64..1000, threads in 1usize..5) {
            let mut rng = Rng::new(seed);
            let names = ["a", "b", "c", "d", "e"];
            let mut data: Vec<(&str, Vec<f64>)> =
                names.iter().map(|&n| (n, random_walk(&mut rng, 80))).collect();
            // Plant a → b, so there is something to find.
            let a = data[0].1.clone();
            for t in 2..80 {
                data[1].1[t] = a[t - 2] + 0.3 * rng.normal();
            }
            let one: Vec<(&str, &[f64])> = data.iter().map(|(n, s)| (*n, s.as_slice())).collect();
            let rev: Vec<(&str, &[f64])> = one.iter().rev().copied().collect();
            let base = causal_links(&one, &CausalOptions::default()).unwrap();
            let opts = CausalOptions { threads, ..CausalOptions::default() };
            prop_assert_eq!(&base, &causal_links(&one, &opts).unwrap());
            prop_assert_eq!(&base, &causal_links(&rev, &opts).unwrap());
        }
    }

    #[test]
    fn planted_lag_two_link_is_found_one_way() {
        for seed in 0..10 {
            let (x, y) = planted(seed, 600);
            for opts in [levels_opts(), CausalOptions::default()] {
                let fwd = granger_test(&x, &y, &opts).unwrap();
                // On differences the noise becomes MA(1), which a third lag partly absorbs.
                let lags = if opts.difference { 2..=3 } else { 2..=2 };
                assert!(lags.contains(&fwd.lag), "seed {seed} {opts:?}: {fwd:?}");
                assert!(fwd.p_value < 1e-12, "seed {seed}: {fwd:?}");
                let floor = if opts.difference { 0.2 } else { 0.3 };
                assert!(fwd.strength > floor, "seed {seed}: {fwd:?}");
                assert!(fwd.is_link(&opts));
                let back = granger_test(&y, &x, &opts).unwrap();
                assert!(!back.is_link(&opts), "seed {seed} {opts:?}: {back:?}");
            }
        }
    }

    #[test]
    fn planted_link_in_a_set_of_components() {
        let (x, y) = planted(7, 400);
        let mut rng = Rng::new(99);
        let z = random_walk(&mut rng, 400);
        let series: Vec<(&str, &[f64])> = vec![("db", &x), ("api", &y), ("cache", &z)];
        let links = causal_links(&series, &levels_opts()).unwrap();
        assert_eq!(links.len(), 1, "{links:?}");
        let l = &links[0];
        assert_eq!(
            (l.cause.as_str(), l.effect.as_str(), l.lag),
            ("db", "api", 2)
        );
        assert!(l.strength > 0.3 && l.strength <= 1.0);
        let edges = links_to_edges(&links, 1_700_000_000_000);
        assert_eq!(edges.len(), 1);
        assert_eq!(
            (edges[0].from.as_str(), edges[0].to.as_str()),
            ("api", "db")
        );
        assert_eq!(edges[0].observation.source, EdgeSource::Causal);
        assert_eq!(edges[0].observation.strength, l.strength);
        assert_eq!(edges[0].observation.last_seen_ms, 1_700_000_000_000);
        edges[0].validate().unwrap();
    }

    /// Independent series: at alpha 0.01, 40 directed tests expect 0.4 false links; allow 2.
    #[test]
    fn independent_series_give_almost_no_links() {
        let plain = CausalOptions {
            min_strength: 0.0,
            ..CausalOptions::default()
        };
        type Gen = fn(&mut Rng) -> Vec<f64>;
        let cases: [(&str, CausalOptions, Gen); 3] = [
            ("random walks, differenced", plain.clone(), |r| {
                random_walk(r, 300)
            }),
            (
                "ar noise, levels",
                CausalOptions {
                    difference: false,
                    ..plain.clone()
                },
                |r| ar_noise(r, 300, 0.6),
            ),
            (
                "white noise, levels",
                CausalOptions {
                    difference: false,
                    ..plain.clone()
                },
                |r| ar_noise(r, 300, 0.0),
            ),
        ];
        for (what, opts, gen) in cases {
            let mut hits = 0;
            for seed in 0..20 {
                let mut rng = Rng::new(1000 + seed);
                let (a, b) = (gen(&mut rng), gen(&mut rng));
                let series: Vec<(&str, &[f64])> = vec![("a", &a), ("b", &b)];
                hits += causal_links(&series, &opts).unwrap().len();
            }
            assert!(hits <= 2, "{what}: {hits} false links in 40 tests");
        }
    }

    #[test]
    fn both_directions_are_kept_and_the_stronger_comes_first() {
        // A feedback loop: x drives y strongly at lag 1, y drives x weakly at lag 1.
        let mut rng = Rng::new(5);
        let n = 800;
        let (mut x, mut y) = (vec![0.0; n], vec![0.0; n]);
        for t in 1..n {
            x[t] = 0.3 * x[t - 1] + 0.25 * y[t - 1] + rng.normal();
            y[t] = 0.3 * y[t - 1] + 0.9 * x[t - 1] + rng.normal();
        }
        let series: Vec<(&str, &[f64])> = vec![("x", &x), ("y", &y)];
        let links = causal_links(&series, &levels_opts()).unwrap();
        assert_eq!(links.len(), 2, "{links:?}");
        assert_eq!(
            (links[0].cause.as_str(), links[0].effect.as_str()),
            ("x", "y")
        );
        assert!(links[0].strength > links[1].strength);
    }

    #[test]
    fn strongest_series_per_component_pair_wins() {
        let (x, y) = planted(3, 500);
        let mut rng = Rng::new(8);
        // A second, weaker metric of the same effect component, and a second cause metric
        // that is noise.
        let y_weak: Vec<f64> = y.iter().map(|v| v + 2.0 * rng.normal()).collect();
        let x_noise = ar_noise(&mut rng, 500, 0.3);
        let series: Vec<(&str, &[f64])> =
            vec![("db", &x_noise), ("api", &y_weak), ("db", &x), ("api", &y)];
        let opts = levels_opts();
        let links = causal_links(&series, &opts).unwrap();
        let db_api: Vec<_> = links.iter().filter(|l| l.cause == "db").collect();
        assert_eq!(db_api.len(), 1, "{links:?}");
        let direct = granger_test(&x, &y, &opts).unwrap();
        assert_eq!(db_api[0].strength, direct.strength);
        assert!(links.iter().all(|l| l.cause != l.effect));
    }

    #[test]
    fn flat_and_exact_series_give_no_evidence() {
        let (x, _) = planted(1, 200);
        let flat = vec![3.5; 200];
        let ramp: Vec<f64> = (0..200).map(|t| 0.1 * t as f64).collect();
        let opts = CausalOptions::default();
        for other in [&flat, &ramp] {
            assert_eq!(granger_test(&x, other, &opts).unwrap().p_value, 1.0);
            assert_eq!(granger_test(other, &x, &opts).unwrap().p_value, 1.0);
            let series: Vec<(&str, &[f64])> = vec![("a", &x), ("b", other)];
            assert!(causal_links(&series, &opts).unwrap().is_empty());
        }
        // A sine is predicted exactly by its own two last values: nothing left to explain.
        let sine: Vec<f64> = (0..200).map(|t| (0.3 * t as f64).sin()).collect();
        let t = granger_test(&x, &sine, &levels_opts()).unwrap();
        assert_eq!(t, GrangerTest::no_evidence(3));
    }

    #[test]
    fn noiseless_link_is_certain() {
        let (x, _) = planted(2, 100);
        let y: Vec<f64> = (0..100)
            .map(|t| if t >= 1 { 2.0 * x[t - 1] } else { 0.0 })
            .collect();
        let t = granger_test(&x, &y, &levels_opts()).unwrap();
        assert_eq!(t.p_value, 0.0);
        assert!(t.strength > 0.999_999);
        assert!(t.f_stat > 1e6);
    }

    #[test]
    fn bad_input_is_refused_with_the_series_named() {
        let good = vec![
            1.0, 2.0, 1.5, 3.0, 2.5, 2.0, 4.0, 3.5, 3.0, 5.0, 4.0, 4.5, 6.0, 5.0, 5.5,
        ];
        let opts = CausalOptions::default();
        assert_eq!(opts.min_len(), 18);
        let long: Vec<f64> = (0..40).map(|t| (t as f64 * 1.7).sin()).collect();
        let short: &[f64] = &long[..30];
        let err = causal_links(&[("db", &long), ("api", short)], &opts).unwrap_err();
        assert_eq!(
            err.to_string(),
            "series 1 (api) has 30 points but series 0 (db) has 40; all series must have the same length"
        );
        let err = causal_links(&[("db", &good), ("api", &good)], &opts).unwrap_err();
        assert_eq!(
            err.to_string(),
            "series 0 (db) has 15 points; max_lag 3 needs at least 18"
        );
        let mut nan = long.clone();
        nan[7] = f64::NAN;
        let err = causal_links(&[("db", &long), ("api", &nan)], &opts).unwrap_err();
        assert_eq!(
            err.to_string(),
            "series 1 (api) has the non-finite value NaN at point 7"
        );
        let err = granger_test(&long, &nan, &opts).unwrap_err();
        assert!(err
            .to_string()
            .starts_with("series 1 (effect) has the non-finite value"));
        let mut inf = long.clone();
        inf[0] = f64::INFINITY;
        assert!(matches!(
            granger_test(&inf, &long, &opts),
            Err(CausalError::NotFinite {
                index: 0,
                at: 0,
                ..
            })
        ));
        let err = causal_links(&[("", &long)], &opts).unwrap_err();
        assert_eq!(err.to_string(), "series 0 has an empty component name");
        for (bad, msg) in [
            (
                CausalOptions {
                    max_lag: 0,
                    ..opts.clone()
                },
                "max_lag 0 is outside 1..=24",
            ),
            (
                CausalOptions {
                    alpha: 1.0,
                    ..opts.clone()
                },
                "alpha 1 is outside (0, 1)",
            ),
            (
                CausalOptions {
                    alpha: f64::NAN,
                    ..opts.clone()
                },
                "alpha NaN is outside (0, 1)",
            ),
            (
                CausalOptions {
                    min_strength: -0.1,
                    ..opts.clone()
                },
                "min_strength -0.1 is outside [0, 1]",
            ),
            (
                CausalOptions {
                    threads: 0,
                    ..opts.clone()
                },
                "threads is 0; it must be at least 1",
            ),
        ] {
            assert_eq!(causal_links(&[], &bad).unwrap_err().to_string(), msg);
        }
        assert!(causal_links(&[], &opts).unwrap().is_empty());
    }

    #[test]
    fn shifted_cross_products_match_direct_ones() {
        let mut rng = Rng::new(11);
        let (x, y) = (ar_noise(&mut rng, 97, 0.4), ar_noise(&mut rng, 97, -0.2));
        for l in 1..=5 {
            let w = l + 1;
            let m = x.len() - l;
            let mut cross = vec![0.0; w * w];
            cross_products(&x, &y, l, m, &mut cross);
            for i in 0..=l {
                for j in 1..=l {
                    let direct: f64 = (l..l + m).map(|t| y[t - i] * x[t - j]).sum();
                    let got = cross[i * w + j];
                    assert!(
                        (got - direct).abs() < 1e-9 * (1.0 + direct.abs()),
                        "l={l} {i},{j}"
                    );
                }
            }
        }
    }

    #[test]
    fn fixed_lag_reports_max_lag() {
        let (x, y) = planted(4, 300);
        let opts = CausalOptions {
            lag_selection: LagSelection::Fixed,
            max_lag: 4,
            ..levels_opts()
        };
        let t = granger_test(&x, &y, &opts).unwrap();
        assert_eq!(t.lag, 4);
        assert!(t.is_link(&opts));
    }
}

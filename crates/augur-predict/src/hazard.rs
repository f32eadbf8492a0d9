//! The failure-hazard model: a proportional-hazards model with a constant rate over the
//! horizon, so one fitted model answers every horizon consistently.
//!
//! ```text
//! λ(x) = exp(b + Σ wᵢ·zᵢ)          per hour, zᵢ the standardised features
//! P(fail within h) = 1 − exp(−λ(x)·h)
//! ```
//!
//! Fitted by maximum likelihood on "failed within H" labels (the complementary log-log link)
//! with Adam and a small L2 penalty. Features are whatever the caller names: indicators
//! (anomaly, LSTM P(fail)), age, the past failure rate of the component and of its class,
//! failures of its dependencies. [`HazardModel::contributions`] says which moved the rate.

use serde::{Deserialize, Serialize};

use crate::PredictError;

/// Horizons Augur reports, in hours: 5 min, 1 h, 24 h.
pub const HORIZONS_H: [f64; 3] = [5.0 / 60.0, 1.0, 24.0];

/// A fitted model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HazardModel {
    pub features: Vec<String>,
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    pub weights: Vec<f64>,
    pub bias: f64,
}

/// Fitting options.
#[derive(Debug, Clone, Copy)]
pub struct FitOptions {
    /// The horizon of the labels, in hours.
    pub horizon_h: f64,
    pub epochs: usize,
    pub learning_rate: f64,
    pub l2: f64,
}

impl Default for FitOptions {
    fn default() -> Self {
        Self {
            horizon_h: 24.0,
            epochs: 300,
            learning_rate: 0.05,
            l2: 1e-4,
        }
    }
}

impl HazardModel {
    /// A model with no evidence: the base rate `rate_per_h` for everything.
    pub fn prior(features: Vec<String>, rate_per_h: f64) -> Self {
        let n = features.len();
        Self {
            features,
            mean: vec![0.0; n],
            std: vec![1.0; n],
            weights: vec![0.0; n],
            bias: rate_per_h.max(1e-12).ln(),
        }
    }

    /// Fits on rows `x` (one feature vector each) with labels `y` ("failed within
    /// `opts.horizon_h`"). Full-batch Adam: deterministic, no sampling.
    pub fn fit(
        features: Vec<String>,
        x: &[Vec<f64>],
        y: &[bool],
        opts: FitOptions,
    ) -> Result<Self, PredictError> {
        let d = features.len();
        if x.len() != y.len() {
            return Err(PredictError::param(
                "y",
                format!("{} labels for {} rows", y.len(), x.len()),
            ));
        }
        if x.is_empty() {
            return Err(PredictError::param("x", "no rows to fit"));
        }
        if let Some(i) = x
            .iter()
            .position(|r| r.len() != d || r.iter().any(|v| !v.is_finite()))
        {
            return Err(PredictError::param(
                "x",
                format!(
                    "row {i} has {} values or a non-finite one; want {d} finite",
                    x[i].len()
                ),
            ));
        }
        if !(opts.horizon_h.is_finite() && opts.horizon_h > 0.0) {
            return Err(PredictError::param("horizon_h", "must be finite and > 0"));
        }
        for (name, v) in [("l2", opts.l2), ("learning_rate", opts.learning_rate)] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(PredictError::param(
                    name,
                    format!("{v} is not finite and ≥ 0"),
                ));
            }
        }
        if opts.epochs == 0 {
            return Err(PredictError::param("epochs", "0 is below 1"));
        }
        let n = x.len() as f64;
        let mut mean = vec![0.0; d];
        let mut std = vec![0.0; d];
        for r in x {
            for j in 0..d {
                mean[j] += r[j] / n;
            }
        }
        for r in x {
            for j in 0..d {
                std[j] += (r[j] - mean[j]).powi(2) / n;
            }
        }
        for s in &mut std {
            *s = if *s > 1e-18 { s.sqrt() } else { 1.0 };
        }
        let z: Vec<Vec<f64>> = x
            .iter()
            .map(|r| (0..d).map(|j| (r[j] - mean[j]) / std[j]).collect())
            .collect();
        let positives = y.iter().filter(|v| **v).count() as f64;
        let base = ((positives + 0.5) / (n + 1.0)).min(0.999);
        let log_h = opts.horizon_h.ln();
        // Start at the base rate: P = 1 − exp(−λH) ⇒ λ = −ln(1 − P)/H.
        let mut params = vec![0.0; d + 1];
        params[d] = (-(1.0 - base).ln()).ln() - log_h;
        let (mut m, mut v) = (vec![0.0; d + 1], vec![0.0; d + 1]);
        let (b1, b2) = (0.9f64, 0.999f64);
        let mut grad = vec![0.0; d + 1];
        for step in 1..=opts.epochs {
            grad.iter_mut().for_each(|g| *g = 0.0);
            for (row, &label) in z.iter().zip(y) {
                let eta = params[d] + row.iter().zip(&params).map(|(a, b)| a * b).sum::<f64>();
                let u = (eta + log_h).min(30.0).exp();
                // d(−logL)/dη
                let g = if label {
                    -u * (-u).exp() / (-(-u).exp_m1()).max(1e-300)
                } else {
                    u
                };
                for j in 0..d {
                    grad[j] += g * row[j] / n;
                }
                grad[d] += g / n;
            }
            for j in 0..d {
                grad[j] += opts.l2 * params[j];
            }
            for j in 0..=d {
                m[j] = b1 * m[j] + (1.0 - b1) * grad[j];
                v[j] = b2 * v[j] + (1.0 - b2) * grad[j] * grad[j];
                let mh = m[j] / (1.0 - b1.powi(step as i32));
                let vh = v[j] / (1.0 - b2.powi(step as i32));
                params[j] -= opts.learning_rate * mh / (vh.sqrt() + 1e-8);
            }
        }
        let bias = params[d];
        params.truncate(d);
        Ok(Self {
            features,
            mean,
            std,
            weights: params,
            bias,
        })
    }

    /// The hazard rate per hour for feature vector `x`.
    pub fn rate_per_h(&self, x: &[f64]) -> f64 {
        (self.bias + self.linear(x)).min(30.0).exp()
    }

    fn linear(&self, x: &[f64]) -> f64 {
        self.weights
            .iter()
            .enumerate()
            .map(|(j, w)| {
                // A missing or non-finite feature counts as the training mean: it moves
                // nothing, where a NaN would make the rate NaN and `min` read that as 30.
                let v = x
                    .get(j)
                    .copied()
                    .filter(|v| v.is_finite())
                    .unwrap_or(self.mean[j]);
                w * (v - self.mean[j]) / self.std[j]
            })
            .sum()
    }

    /// P(failure within `h` hours).
    pub fn p_within(&self, x: &[f64], h: f64) -> f64 {
        -(-self.rate_per_h(x) * h.max(0.0)).exp_m1()
    }

    /// P at [`HORIZONS_H`].
    pub fn p_horizons(&self, x: &[f64]) -> [f64; 3] {
        HORIZONS_H.map(|h| self.p_within(x, h))
    }

    /// Each feature's share of the log-rate against an average row, largest magnitude first:
    /// the "why" of a forecast.
    pub fn contributions(&self, x: &[f64]) -> Vec<(String, f64)> {
        let mut c: Vec<(String, f64)> = self
            .features
            .iter()
            .enumerate()
            .map(|(j, name)| {
                let zj = (x.get(j).copied().unwrap_or(self.mean[j]) - self.mean[j]) / self.std[j];
                (name.clone(), self.weights[j] * zj)
            })
            .collect();
        c.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows where feature 0 drives failure: the fitted model ranks them higher and its
    /// probabilities grow with the horizon.
    #[test]
    fn learns_a_driving_feature_and_orders_horizons() {
        let mut x = Vec::new();
        let mut y = Vec::new();
        let mut s = 17u64;
        for i in 0..4000 {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let noise = (s % 1000) as f64 / 1000.0;
            let driver = (i % 10) as f64;
            x.push(vec![driver, noise]);
            y.push(driver >= 8.0 && !(s >> 20).is_multiple_of(3));
        }
        let m = HazardModel::fit(
            vec!["driver".into(), "noise".into()],
            &x,
            &y,
            FitOptions::default(),
        )
        .unwrap();
        assert!(m.weights[0] > 1.0, "{m:?}");
        assert!(m.weights[1].abs() < 0.3, "{m:?}");
        let hi = m.p_horizons(&[9.0, 0.5]);
        let lo = m.p_horizons(&[1.0, 0.5]);
        assert!(hi[2] > 0.4 && lo[2] < 0.05, "{hi:?} {lo:?}");
        assert!(hi[0] < hi[1] && hi[1] < hi[2]);
        assert_eq!(m.contributions(&[9.0, 0.5])[0].0, "driver");
    }

    #[test]
    fn bad_rows_are_named() {
        let err = HazardModel::fit(
            vec!["a".into()],
            &[vec![1.0], vec![f64::NAN]],
            &[true, false],
            FitOptions::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("row 1"), "{err}");
        for (opts, what) in [
            (
                FitOptions {
                    l2: f64::NAN,
                    ..FitOptions::default()
                },
                "l2",
            ),
            (
                FitOptions {
                    l2: -1.0,
                    ..FitOptions::default()
                },
                "l2",
            ),
            (
                FitOptions {
                    learning_rate: f64::INFINITY,
                    ..FitOptions::default()
                },
                "learning_rate",
            ),
            (
                FitOptions {
                    epochs: 0,
                    ..FitOptions::default()
                },
                "epochs",
            ),
        ] {
            let err = HazardModel::fit(vec!["a".into()], &[vec![1.0]], &[true], opts)
                .unwrap_err()
                .to_string();
            assert!(err.contains(what), "{err}");
        }
    }

    /// A NaN feature (a sensor that has not reported) moves the rate as the training mean
    /// would, not to the cap: NaN must never read as certain failure.
    #[test]
    fn a_non_finite_feature_counts_as_the_mean() {
        let m = HazardModel {
            features: vec!["a".into(), "b".into()],
            mean: vec![2.0, 0.0],
            std: vec![1.0, 1.0],
            weights: vec![3.0, 0.5],
            bias: -5.0,
        };
        let at_mean = m.rate_per_h(&[2.0, 1.0]);
        assert_eq!(m.rate_per_h(&[f64::NAN, 1.0]), at_mean);
        assert_eq!(m.rate_per_h(&[f64::INFINITY, 1.0]), at_mean);
        assert_eq!(m.p_horizons(&[f64::NAN, 1.0]), m.p_horizons(&[2.0, 1.0]));
        assert!(m.p_horizons(&[f64::NAN, 1.0])[2] < 0.5);
    }
}

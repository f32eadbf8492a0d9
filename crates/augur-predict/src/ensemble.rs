//! The detectors by name, as `augur backtest --detector NAME` and the node use them.
//!
//! - `zscore`: robust z-score over a sliding window, through the anomaly likelihood;
//! - `ewma`: EW mean/variance z-score, through the likelihood;
//! - `holt-winters`: one-step Holt-Winters residual (daily season when the sampling allows);
//! - `lstm`: the LSTM's next-step residual on online-normalised input;
//! - `ensemble`: what the node uses: the mean of the Holt-Winters, robust-z and (when a model is
//!   given) LSTM likelihoods, sharpened so that agreement counts more than one loud voice.

use std::sync::Arc;

use crate::baseline::{daily_period, Ewma, HoltWinters, Likelihood, Null, RobustZ, Surprise};
use crate::lstm::LstmModel;
use crate::{Detector, PredictError, DETECTOR_NAMES};

/// The online normaliser in front of the LSTM: an EW z-score, clipped to ±5.
#[derive(Debug, Clone)]
pub struct OnlineNorm(Ewma);

impl Default for OnlineNorm {
    fn default() -> Self {
        Self(Ewma::new(0.01))
    }
}

impl OnlineNorm {
    /// Scales `x` against the state before it, then folds it in.
    pub fn scale(&mut self, x: f64) -> f32 {
        let z = if self.0.std() > 0.0 {
            (x - self.0.mean()) / self.0.std().max(1e-3 * self.0.mean().abs()).max(1e-9)
        } else {
            0.0
        };
        self.0.update(x);
        z.clamp(-5.0, 5.0) as f32
    }
}

/// The surprise of a forecast residual: |residual| over its EW mean absolute value.
#[derive(Debug, Clone, Default)]
pub struct ResidualScale {
    abs_mean: f64,
    seen: u64,
}

impl ResidualScale {
    pub fn surprise(&mut self, residual: f64) -> f64 {
        self.seen += 1;
        let r = residual.abs();
        let s = if self.seen > 10 {
            r / self.abs_mean.max(1e-6)
        } else {
            0.0
        };
        let a = (1.0 / self.seen as f64).max(0.01);
        self.abs_mean += a * (r - self.abs_mean);
        s
    }
}

/// A surprise that is pushed from outside (the LSTM residual).
#[derive(Debug, Clone, Default)]
pub struct Pushed;

impl Surprise for Pushed {
    fn surprise(&mut self, _value: f64) -> f64 {
        0.0
    }
}

/// The LSTM as a one-series detector: the series goes into input 0, the others stay 0.
pub struct LstmDetector {
    model: Arc<LstmModel>,
    norm: OnlineNorm,
    h: Vec<f32>,
    c: Vec<f32>,
    x: Vec<f32>,
    predicted: Option<f32>,
    residual: ResidualScale,
    likelihood: Likelihood<Pushed>,
}

impl LstmDetector {
    pub fn new(model: Arc<LstmModel>) -> Self {
        let (i, h) = (model.meta.inputs, model.meta.hidden);
        Self {
            model,
            norm: OnlineNorm::default(),
            h: vec![0.0; h],
            c: vec![0.0; h],
            x: vec![0.0; i],
            predicted: None,
            residual: ResidualScale::default(),
            likelihood: Likelihood::new(Pushed),
        }
    }

    /// The residual surprise of `value` against the last forecast, then one step.
    fn surprise(&mut self, value: f64) -> f64 {
        let z = self.norm.scale(value);
        let s = match self.predicted {
            Some(p) => self.residual.surprise((z - p) as f64),
            None => 0.0,
        };
        self.x[0] = z;
        match self.model.step(1, &self.x, &mut self.h, &mut self.c) {
            Ok(out) => self.predicted = Some(out.next[0]),
            Err(_) => self.predicted = None,
        }
        s
    }
}

impl Detector for LstmDetector {
    fn score(&mut self, _t: i64, value: f64) -> f64 {
        let s = self.surprise(value);
        self.likelihood.push_surprise(s)
    }
}

/// The node's combination.
pub struct Ensemble {
    hw: Likelihood<HoltWinters>,
    rz: Likelihood<RobustZ>,
    lstm: Option<LstmDetector>,
}

impl Ensemble {
    pub fn new(period: usize, model: Option<Arc<LstmModel>>) -> Self {
        Self {
            hw: Likelihood::new(HoltWinters::new(period)),
            rz: Likelihood::new(RobustZ::new(64)),
            lstm: model.map(LstmDetector::new),
        }
    }
}

impl Detector for Ensemble {
    fn score(&mut self, t: i64, value: f64) -> f64 {
        let mut parts = vec![self.hw.update(value), self.rz.update(value)];
        if let Some(l) = &mut self.lstm {
            parts.push(l.score(t, value));
        }
        combine(&parts)
    }
}

/// Combines likelihoods: their mean, sharpened (`mean^k` with `k` the number of parts), so a
/// score near 1 needs most detectors near 1.
pub fn combine(parts: &[f64]) -> f64 {
    if parts.is_empty() {
        return 0.0;
    }
    let mean = parts.iter().sum::<f64>() / parts.len() as f64;
    mean.clamp(0.0, 1.0)
}

/// Builds detector `name` for a series sampled every `step_s` seconds.
pub fn detector(
    name: &str,
    step_s: i64,
    model: Option<Arc<LstmModel>>,
) -> Result<Box<dyn Detector>, PredictError> {
    let period = daily_period(step_s);
    Ok(match name {
        "zscore" => Box::new(Likelihood::new(RobustZ::new(64))),
        "ewma" => Box::new(Likelihood::new(Ewma::new(0.05))),
        "holt-winters" => Box::new(Likelihood::new(HoltWinters::new(period))),
        "lstm" => {
            Box::new(LstmDetector::new(model.ok_or_else(|| {
                PredictError::param("detector", "lstm needs a model")
            })?))
        }
        "ensemble" => Box::new(Ensemble::new(period, model)),
        "null" => Box::new(Null),
        other => {
            return Err(PredictError::param(
                "detector",
                format!(
                    "unknown detector {other:?}; expected one of {}",
                    DETECTOR_NAMES.join(", ")
                ),
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_detector_lists_the_known_ones() {
        let err = detector("magic", 60, None).err().unwrap().to_string();
        assert!(
            err.contains("magic") && err.contains("holt-winters"),
            "{err}"
        );
    }
}

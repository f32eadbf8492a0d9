//! The detectors by name, as `augur backtest --detector NAME` and the node use them.
//!
//! - `zscore`: robust z-score over a sliding window of 2,016 rows, through the likelihood;
//! - `ewma`: EW mean/variance z-score (fast: α = 0.05), through the likelihood;
//! - `holt-winters`: one-step Holt-Winters residual (daily season when the sampling allows);
//! - `lstm`: the LSTM's next-step residual on online-normalised input;
//! - `ensemble`: what the node runs per metric ([`MetricDetector`]): the larger of the
//!   Holt-Winters and slow-EW likelihoods.

use std::sync::Arc;

use crate::baseline::{daily_period, Ewma, HoltWinters, Likelihood, Null, RobustZ, Surprise};
use crate::lstm::LstmModel;
use crate::novelty::{Novelty, NoveltyConfig};
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
    abs_mean: f32,
    seen: u32,
}

impl ResidualScale {
    pub fn surprise(&mut self, residual: f64) -> f64 {
        self.seen = self.seen.saturating_add(1);
        let r = residual.abs();
        let mean = f64::from(self.abs_mean);
        let s = if self.seen > 10 {
            r / mean.max(1e-6)
        } else {
            0.0
        };
        let a = (1.0 / f64::from(self.seen)).max(0.01);
        self.abs_mean = (mean + a * (r - mean)) as f32;
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
    metric: MetricDetector,
    h: Vec<f32>,
    c: Vec<f32>,
    x: Vec<f32>,
}

impl LstmDetector {
    pub fn new(model: Arc<LstmModel>) -> Self {
        let (i, h) = (model.meta.inputs, model.meta.hidden);
        Self {
            model,
            metric: MetricDetector::new(0),
            h: vec![0.0; h],
            c: vec![0.0; h],
            x: vec![0.0; i],
        }
    }
}

impl Detector for LstmDetector {
    /// The node's per-metric path with one model step per row: the score is the likelihood
    /// of the LSTM's residual ([`MetricDetector::lstm_anomaly`]).
    fn score(&mut self, _t: i64, value: f64) -> f64 {
        self.metric.update(value);
        self.x[0] = self.metric.scaled();
        if let Ok(out) = self.model.step(1, &self.x, &mut self.h, &mut self.c) {
            self.metric.set_prediction(out.next[0]);
        }
        self.metric.lstm_anomaly()
    }
}

/// One metric's detectors as the node runs them, in constant memory: Holt-Winters (seasonal
/// only when a period is configured) and a slow EW z-score (a long memory of what is normal),
/// each through its anomaly likelihood; the anomaly is the larger of the two. The metric's
/// online-normalised value and the LSTM's residual are kept beside them: the value feeds the
/// LSTM, the residual's likelihood is reported as its own signal.
#[derive(Debug, Clone)]
pub struct MetricDetector {
    hw: Likelihood<HoltWinters>,
    ew: Likelihood<Ewma>,
    norm: OnlineNorm,
    scaled: f32,
    predicted: Option<f32>,
    residual: ResidualScale,
    lstm: Likelihood<Pushed>,
    /// The scores are kept as f32 (this sits in every metric of every component).
    anomaly: f32,
    lstm_anomaly: f32,
}

/// The slow EW z-score's weight: about 1,000 samples of memory.
pub const SLOW_EW_ALPHA: f64 = 0.001;

impl MetricDetector {
    pub fn new(period: usize) -> Self {
        Self {
            hw: Likelihood::new(HoltWinters::new(period)),
            ew: Likelihood::new(Ewma::new(SLOW_EW_ALPHA)),
            norm: OnlineNorm::default(),
            scaled: 0.0,
            predicted: None,
            residual: ResidualScale::default(),
            lstm: Likelihood::new(Pushed),
            anomaly: 0.5,
            lstm_anomaly: 0.5,
        }
    }

    /// Heap bytes held outside the struct itself.
    pub fn heap_bytes(&self) -> usize {
        self.hw.inner().heap_bytes()
    }

    /// Folds `value` in; returns its anomaly score.
    pub fn update(&mut self, value: f64) -> f64 {
        let anomaly = self.hw.update(value).max(self.ew.update(value));
        self.anomaly = anomaly as f32;
        self.scaled = self.norm.scale(value);
        if let Some(p) = self.predicted.take() {
            let s = self.residual.surprise(f64::from(self.scaled - p));
            self.lstm_anomaly = self.lstm.push_surprise(s) as f32;
        }
        anomaly
    }

    /// The latest value, online-normalised: the LSTM's input.
    pub fn scaled(&self) -> f32 {
        self.scaled
    }

    /// The LSTM's forecast of the next scaled value.
    pub fn set_prediction(&mut self, p: f32) {
        self.predicted = Some(p);
    }

    pub fn anomaly(&self) -> f64 {
        f64::from(self.anomaly)
    }

    /// The likelihood of the LSTM's latest residual.
    pub fn lstm_anomaly(&self) -> f64 {
        f64::from(self.lstm_anomaly)
    }
}

/// The `ensemble` detector: exactly the node's per-metric detectors ([`MetricDetector`]),
/// with the season the sampling allows.
pub struct Ensemble(MetricDetector);

impl Ensemble {
    pub fn new(period: usize) -> Self {
        Self(MetricDetector::new(period))
    }
}

impl Detector for Ensemble {
    fn score(&mut self, _t: i64, value: f64) -> f64 {
        self.0.update(value)
    }
}

/// The robust z-score's window in backtests (a week of 5-minute rows).
pub const ROBUST_WINDOW: usize = 2016;

/// Builds detector `name` for a series sampled every `step_s` seconds.
/// Rows a replayed series shows a detector before its sampling step (and so its daily
/// season) is fixed: the median gap of these rows. Within every NAB file's probationary
/// period (its shortest file has 1,127 rows: 168 unscored).
pub const STEP_ROWS: usize = 100;

/// A detector whose sampling step is learnt online, for series whose step is not known
/// beforehand (a backtest's CSV, NAB): it holds the first [`STEP_ROWS`] rows, scoring them 0,
/// then builds its detector for their median gap and replays them into it. Row t's score
/// uses rows ≤ t only (the step from the whole file would be a peek at later rows).
pub struct StepLearning {
    make: Box<dyn Fn(i64) -> Box<dyn Detector> + Send>,
    held: Vec<(i64, f64)>,
    inner: Option<Box<dyn Detector>>,
}

impl StepLearning {
    /// `make` builds the detector for a step in seconds.
    pub fn new(make: impl Fn(i64) -> Box<dyn Detector> + Send + 'static) -> Self {
        Self {
            make: Box::new(make),
            held: Vec::with_capacity(STEP_ROWS),
            inner: None,
        }
    }
}

impl Detector for StepLearning {
    fn score(&mut self, t: i64, value: f64) -> f64 {
        if let Some(d) = &mut self.inner {
            return d.score(t, value);
        }
        self.held.push((t, value));
        if self.held.len() < STEP_ROWS {
            return 0.0;
        }
        let times: Vec<i64> = self.held.iter().map(|h| h.0).collect();
        let mut d = (self.make)(crate::baseline::median_step(&times));
        let mut last = 0.0;
        for (t, v) in self.held.drain(..) {
            last = d.score(t, v);
        }
        self.inner = Some(d);
        last
    }
}

/// Detector `name` with its step learnt online ([`StepLearning`]).
pub fn online_detector(
    name: &str,
    model: Option<Arc<LstmModel>>,
) -> Result<Box<dyn Detector>, PredictError> {
    // The name (and a model for `lstm`) checked now; the step only picks a season.
    detector(name, 60, model.clone())?;
    let name = name.to_owned();
    Ok(Box::new(StepLearning::new(move |step| {
        detector(&name, step, model.clone()).expect("name and model checked above")
    })))
}

pub fn detector(
    name: &str,
    step_s: i64,
    model: Option<Arc<LstmModel>>,
) -> Result<Box<dyn Detector>, PredictError> {
    let period = daily_period(step_s);
    Ok(match name {
        "zscore" => Box::new(Likelihood::new(RobustZ::new(ROBUST_WINDOW))),
        "ewma" => Box::new(Likelihood::new(Ewma::new(0.05))),
        "holt-winters" => Box::new(Likelihood::new(HoltWinters::new(period))),
        "lstm" => {
            Box::new(LstmDetector::new(model.ok_or_else(|| {
                PredictError::param("detector", "lstm needs a model")
            })?))
        }
        "novelty" => Box::new(Novelty::new(period, NoveltyConfig::default())),
        "ensemble" => Box::new(Ensemble::new(period)),
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

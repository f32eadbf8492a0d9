//! Augur's predictors, pure and synchronous: no I/O beyond the readers of evaluation files, no
//! clock, seeded randomness only.
//!
//! - [`baseline`]: online detectors (robust z-score, EWMA, Holt-Winters) and the anomaly
//!   likelihood that turns any raw score into a calibrated tail probability.
//! - [`novelty`]: sparse alarms (a never-visited band, an extreme likelihood) with a rest
//!   period: the backtest detector for NAB-style benchmarks.
//! - [`lstm`]: the LSTM (candle-nn) with a next-step head and a P(failure within H) head,
//!   batched stepping for many components at once, training and safetensors files.
//! - [`hazard`]: a proportional-hazards model giving P(fail within 5 min / 1 h / 24 h).
//! - [`threshold`]: time until a metric reaches a known limit (the lead time).
//! - [`hps`]: the Health Projection Score, 0–100, lower is riskier.
//! - [`nab`]: the Numenta Anomaly Benchmark's scoring rules, reimplemented.
//! - [`datasets`]: readers for the evaluation sets (NAB, C-MAPSS, Azure PdM).

pub mod baseline;
pub mod datasets;
pub mod ensemble;
pub mod error;
pub mod eval;
pub mod hazard;
pub mod hps;
pub mod lstm;
pub mod nab;
pub mod novelty;
pub mod plot;
pub mod predictor;
pub mod synthetic;
pub mod threshold;
pub mod window;

pub use error::PredictError;

/// An online anomaly detector over one series: the score for a row uses that row and the rows
/// before it only.
pub trait Detector: Send {
    /// Feeds the row at `t` (seconds) with `value`; returns its anomaly score in `[0, 1]`.
    fn score(&mut self, t: i64, value: f64) -> f64;
}

/// The detectors `augur backtest --detector` accepts.
pub const DETECTOR_NAMES: [&str; 7] = [
    "zscore",
    "ewma",
    "holt-winters",
    "novelty",
    "lstm",
    "ensemble",
    "null",
];

/// The default LSTM shipped in the binary: trained by `augur train --synthetic --seed 7`
/// (see `docs/evaluation.md`), so a node and `make demo` need no training step.
pub const DEFAULT_MODEL: &[u8] = include_bytes!("../models/default.safetensors");

/// The LSTM for HTTP service instances watched by the reference agent: its inputs, read by
/// name, are the agent's `latency_p99_ms`, `error_ratio` and `memory_mb`; trained by
/// `cargo run --release -p augur-predict --example train_http -- OUT 7 25` on
/// [`synthetic::http_fleet`], where a latency jump on its own is a busy host, not a failure.
pub const HTTP_SERVICE_MODEL: &[u8] = include_bytes!("../models/http-service.safetensors");

/// The models shipped in the binary, by the name a node's `telemetry.model` gives them.
pub const BUILTIN_MODELS: [(&str, &[u8]); 2] = [
    ("default", DEFAULT_MODEL),
    ("http-service", HTTP_SERVICE_MODEL),
];

/// The shipped model called `name`, if there is one.
pub fn builtin_model(name: &str) -> Option<&'static [u8]> {
    BUILTIN_MODELS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, bytes)| *bytes)
}

/// Loads [`DEFAULT_MODEL`].
pub fn default_model() -> Result<lstm::LstmModel, PredictError> {
    lstm::LstmModel::from_bytes(DEFAULT_MODEL)
}

//! The actors' settings and their validation.

use augur_predict::predictor::PredictorConfig;
use serde::{Deserialize, Serialize};

/// The default scoring period: one batched LSTM step per second.
pub const DEFAULT_TICK_MS: u64 = 1_000;
/// The default cap on the samples of one `ingest` call.
pub const DEFAULT_MAX_BATCH: usize = 1_000_000;
/// How often (in ticks) a shard looks for auto-registered components gone quiet.
pub const AUTO_SWEEP_TICKS: u64 = 64;
/// More shards than this is a mistake: each is a thread.
pub const MAX_SHARDS: usize = 256;

/// Settings of a node's [`PredictorSystem`](crate::PredictorSystem).
///
/// Loaded with serde (unknown keys are an error, every field has a default) and checked by
/// [`ActorsConfig::validate`], which reports every problem at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActorsConfig {
    /// Shards, one per arbiter (thread); components are spread over them by a hash of their
    /// id. Usually the number of cores left after the gRPC runtime.
    pub shards: usize,
    /// Scoring period in ms; `0` means no timer: scoring happens only on
    /// [`PredictorSystem::tick`](crate::PredictorSystem::tick) (tests, simulations).
    pub tick_ms: u64,
    /// Settings of every component's predictor.
    pub predictor: PredictorConfig,
    /// Create a component's actor on its first sample even if it was never registered. Off
    /// by default: samples for unknown components are counted and dropped.
    pub auto_register: bool,
    /// With `auto_register`: a component created that way (never registered) is forgotten,
    /// its actor stopped and its window dropped, once it has had no sample for this many
    /// ticks (checked every [`AUTO_SWEEP_TICKS`] ticks); 0: never. Registered components are
    /// forgotten only when deregistered.
    pub auto_forget_ticks: u64,
    /// The most samples one `ingest` call may carry; a larger batch is refused whole.
    pub max_batch: usize,
}

impl Default for ActorsConfig {
    fn default() -> Self {
        Self {
            shards: 1,
            tick_ms: DEFAULT_TICK_MS,
            predictor: PredictorConfig::default(),
            auto_register: false,
            auto_forget_ticks: 3_600,
            max_batch: DEFAULT_MAX_BATCH,
        }
    }
}

/// One problem with an [`ActorsConfig`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    /// The offending field, dotted (`predictor.window`).
    pub field: &'static str,
    /// What is wrong with it, lowercase.
    pub message: String,
}

impl ConfigError {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

impl ActorsConfig {
    /// Checks the settings and returns them, or every problem found.
    pub fn validate(self) -> Result<Self, Vec<ConfigError>> {
        let mut errors = Vec::new();
        if self.shards == 0 || self.shards > MAX_SHARDS {
            errors.push(ConfigError::new(
                "shards",
                format!("must be in 1..={MAX_SHARDS}, got {}", self.shards),
            ));
        }
        if self.predictor.window < 2 {
            errors.push(ConfigError::new(
                "predictor.window",
                format!("must be at least 2, got {}", self.predictor.window),
            ));
        }
        if self.predictor.max_metrics == 0 {
            errors.push(ConfigError::new(
                "predictor.max_metrics",
                "must be at least 1",
            ));
        }
        if self.predictor.out_of_order_tolerance_ms < 0 {
            errors.push(ConfigError::new(
                "predictor.out_of_order_tolerance_ms",
                format!(
                    "must not be negative, got {}",
                    self.predictor.out_of_order_tolerance_ms
                ),
            ));
        }
        if self.max_batch == 0 {
            errors.push(ConfigError::new("max_batch", "must be at least 1"));
        }
        if errors.is_empty() {
            Ok(self)
        } else {
            Err(errors)
        }
    }
}

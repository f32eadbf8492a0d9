//! Helpers shared by the test binaries.
#![allow(dead_code)]

use std::sync::Arc;

use augur_actors::{ActorsConfig, PredictorSystem, Sample};
use augur_predict::lstm::{LstmModel, ModelMeta};
use augur_types::ComponentId;

pub const MODEL_VERSION: &str = "lstm-test-1";

/// An untrained, seeded model: 4 inputs, hidden 8.
pub fn model() -> Arc<LstmModel> {
    let features = ["latency", "errors", "cpu", "mem"]
        .map(String::from)
        .to_vec();
    let mut model = LstmModel::new(ModelMeta::new(features, 8, 10, 7)).unwrap();
    model.meta.version = MODEL_VERSION.into();
    Arc::new(model)
}

/// Manual ticks only, `shards` shards.
pub fn config(shards: usize) -> ActorsConfig {
    ActorsConfig {
        shards,
        tick_ms: 0,
        ..ActorsConfig::default()
    }
}

pub fn start(cfg: ActorsConfig) -> PredictorSystem {
    PredictorSystem::start(cfg, model()).unwrap()
}

pub fn id(s: &str) -> ComponentId {
    ComponentId::new(s).unwrap()
}

pub fn ids(prefix: &str, n: usize) -> Vec<ComponentId> {
    (0..n).map(|i| id(&format!("{prefix}-{i:03}"))).collect()
}

pub fn sample(component: &ComponentId, metric: &str, ts_ms: i64, value: f64) -> Sample {
    Sample {
        component: component.clone(),
        metric: metric.into(),
        ts_ms,
        value,
    }
}

/// A seeded LCG in [-0.5, 0.5).
pub struct Noise(u64);

impl Noise {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % 1000) as f64 / 1000.0 - 0.5
    }
}

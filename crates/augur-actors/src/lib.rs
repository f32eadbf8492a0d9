//! Augur's actors (actix 0.13): one [`ComponentActor`] per monitored component, holding its
//! predictor state; a [`Shard`] per arbiter thread that routes whole batches to the actors
//! on its thread; the [`Scorer`] that scores every due component in one batched LSTM step
//! per tick; and [`PredictorSystem`], the `Send` handle that tokio code (the gRPC services)
//! calls.
//!
//! Hard rule: actors are thin shells. Every decision about a sample or a forecast is made by
//! the pure model in `augur_predict::predictor`; handlers route messages to it. CPU-heavy
//! work (the batched model step) runs on a `SyncArbiter` thread, never on an async one.
//!
//! ```text
//! PredictorSystem::ingest(batch) ──group by component, split by shard_of(id)──► Shard k
//!     ──one message per component (same thread)──► ComponentActor ──► ComponentPredictor
//! PredictorSystem::tick() ──► Scorer ──CollectInputs──► Shards ──TakeInputs──► due actors
//!     ──one LstmModel::step (SyncArbiter)──► ApplyBatch ──► ApplyStep ──► Forecast
//! ```

#![warn(missing_docs)]

mod component;
mod config;
mod error;
mod gather;
mod report;
mod scorer;
mod shard;
mod system;

pub use component::{
    ComponentActor, ComponentSamples, ComponentSetup, ExportWindows, GetForecast, Ingest, Ingested,
    Observe, Seed,
};
pub use config::{
    ActorsConfig, ConfigError, AUTO_SWEEP_TICKS, DEFAULT_MAX_BATCH, DEFAULT_TICK_MS, MAX_SHARDS,
};
pub use error::ActorsError;
pub use report::{
    ComponentSnapshot, IngestSummary, MetricSnapshot, Sample, ShardSnapshot, TickReport,
};
pub use scorer::{Scorer, Tick};
pub use shard::{
    AtRisk, Deregister, ForecastOf, IngestBatch, ObserveComponent, ObserveShard, Register, Shard,
    WindowsOf, SHARD_MAILBOX,
};
pub use system::{rank_at_risk, risk_of, shard_of, PredictorSystem};

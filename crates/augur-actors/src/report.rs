//! What goes in and what comes back: samples, ingest summaries, tick reports, snapshots.

use augur_predict::predictor::{Forecast, SampleReject};
use augur_types::ComponentId;
use serde::{Deserialize, Serialize};

/// One telemetry sample of one component's metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// The monitored component.
    pub component: ComponentId,
    /// The metric's name (`latency_p99_ms`, `disk_used_bytes`…).
    pub metric: String,
    /// When it was measured, ms since the epoch.
    pub ts_ms: i64,
    /// The value.
    pub value: f64,
}

/// How many samples of a batch were taken and why the others were not.
///
/// A rejected sample changes nothing and never stops the rest of its batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestSummary {
    /// Taken into the component's window.
    pub accepted: u64,
    /// NaN or infinite value.
    pub not_finite: u64,
    /// Older than the metric's newest sample by more than the tolerance.
    pub out_of_order: u64,
    /// Same metric and timestamp as a sample already taken.
    pub duplicate: u64,
    /// A new metric for a component that already has `max_metrics`.
    pub too_many_metrics: u64,
    /// The component was never registered (and `auto_register` is off).
    pub unknown_component: u64,
    /// The component's actor failed (panicked, and was restarted empty) or was gone while
    /// taking them.
    pub lost: u64,
    /// A timestamp before 1970, or further ahead of the node's clock than it allows (counted
    /// by the node's entry points: one sample from the year 2100 would otherwise make every
    /// later sample of its metric look out of order).
    #[serde(default)]
    pub bad_timestamp: u64,
    /// A metric name that is empty, over 128 bytes, or holds a control character (counted by
    /// the node's entry points).
    #[serde(default)]
    pub bad_metric: u64,
}

impl IngestSummary {
    /// Counts one rejected sample under its kind.
    pub fn reject(&mut self, why: SampleReject) {
        match why {
            SampleReject::NotFinite => self.not_finite += 1,
            SampleReject::OutOfOrder => self.out_of_order += 1,
            SampleReject::Duplicate => self.duplicate += 1,
            SampleReject::TooManyMetrics => self.too_many_metrics += 1,
        }
    }

    /// Adds another summary's counts to this one.
    pub fn merge(&mut self, o: &IngestSummary) {
        self.accepted += o.accepted;
        self.not_finite += o.not_finite;
        self.out_of_order += o.out_of_order;
        self.duplicate += o.duplicate;
        self.too_many_metrics += o.too_many_metrics;
        self.unknown_component += o.unknown_component;
        self.lost += o.lost;
        self.bad_timestamp += o.bad_timestamp;
        self.bad_metric += o.bad_metric;
    }

    /// Every sample counted, taken or not.
    pub fn total(&self) -> u64 {
        self.accepted + self.rejected()
    }

    /// Every sample not taken.
    pub fn rejected(&self) -> u64 {
        self.not_finite
            + self.out_of_order
            + self.duplicate
            + self.too_many_metrics
            + self.unknown_component
            + self.lost
            + self.bad_timestamp
            + self.bad_metric
    }

    /// The counts by kind with their metric label, for exporting.
    pub fn by_kind(&self) -> [(&'static str, u64); 9] {
        [
            ("accepted", self.accepted),
            (SampleReject::NotFinite.as_str(), self.not_finite),
            (SampleReject::OutOfOrder.as_str(), self.out_of_order),
            (SampleReject::Duplicate.as_str(), self.duplicate),
            (SampleReject::TooManyMetrics.as_str(), self.too_many_metrics),
            ("unknown_component", self.unknown_component),
            ("lost", self.lost),
            ("bad_timestamp", self.bad_timestamp),
            ("bad_metric", self.bad_metric),
        ]
    }
}

/// What one scoring tick did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TickReport {
    /// Components whose forecast was updated.
    pub scored: usize,
    /// Rows of the batched model step: every component with new samples since its last step.
    pub batch_size: usize,
    /// Model steps run: 1 when any component was due, else 0.
    pub steps: usize,
}

/// The newest sample of one metric and how full its window is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricSnapshot {
    /// The metric's name.
    pub name: String,
    /// Timestamp of the newest sample, ms.
    pub ts_ms: i64,
    /// Its value.
    pub value: f32,
    /// Samples in the window.
    pub window_fill: usize,
    /// Samples the window holds when full.
    pub window_capacity: usize,
}

/// What a [`ComponentActor`](crate::ComponentActor) answers to
/// [`Observe`](crate::Observe).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComponentSnapshot {
    /// The component.
    pub component: ComponentId,
    /// Its metrics, in the order they were first seen.
    pub metrics: Vec<MetricSnapshot>,
    /// The forecast of the last tick that scored it.
    pub forecast: Option<Forecast>,
    /// Whether samples arrived since that tick (it is due at the next one).
    pub dirty: bool,
    /// Heap bytes of its predictor state and id.
    pub heap_bytes: usize,
    /// Times the actor was restarted (with empty state) after a panic.
    pub restarts: u32,
}

/// What a [`Shard`](crate::Shard) answers to [`ObserveShard`](crate::ObserveShard).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardSnapshot {
    /// The shard's index.
    pub index: usize,
    /// Components registered (or auto-registered) on it.
    pub registered: usize,
    /// Of those, components with a running actor (they have had samples).
    pub actors: usize,
    /// Components with samples not yet scored.
    pub due: usize,
    /// Everything it has ingested since it started.
    pub ingested: IngestSummary,
}

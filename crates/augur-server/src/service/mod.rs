//! The tonic services: thin translations between the wire and [`Node`](crate::Node).

mod cluster;
mod control;
mod otlp;
mod telemetry;
pub(crate) mod topology;

pub use cluster::ClusterService;
pub use control::ControlService;
pub use otlp::OtlpTraceService;
pub use telemetry::TelemetryService;
pub use topology::TopologyService;

pub(crate) use augur_types::CLOCK_SKEW_MS;

/// Milliseconds since the Unix epoch, stamped into commands by the proposer so that applying
/// them stays deterministic.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Threads for the node's CPU work (propagation worlds, predictor shards) when the config
/// leaves it open: one per core, at most 4.
pub(crate) fn default_parallelism() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

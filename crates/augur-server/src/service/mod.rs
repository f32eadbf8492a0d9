//! The tonic services: thin translations between the wire and [`Node`](crate::Node).

mod cluster;
mod control;
mod otlp;
mod telemetry;
mod topology;

pub use cluster::ClusterService;
pub use control::ControlService;
pub use otlp::OtlpTraceService;
pub use telemetry::TelemetryService;
pub use topology::TopologyService;

/// Milliseconds since the Unix epoch, stamped into commands by the proposer so that applying
/// them stays deterministic.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

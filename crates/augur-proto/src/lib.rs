//! Augur's wire types, generated from `proto/augur/v1/*.proto` by tonic/prost, and every
//! conversion between the wire and the domain types of `augur-types`.
//!
//! Hard rule: handlers and clients outside this crate see domain types; a malformed wire
//! message becomes a [`WireError`] that names the bad field, and every domain rejection maps
//! to one gRPC code here and nowhere else.

mod action;
pub mod client;
mod component;
mod graph;
mod otlp;
pub mod prom;
mod status;

/// The generated code.
#[allow(clippy::all, missing_docs, unreachable_pub)]
pub mod pb {
    tonic::include_proto!("augur.v1");
}

pub use action::{
    action_kind_from_wire, action_kind_to_wire, action_to_wire, kpis_from_wire, kpis_to_wire,
    outcome_from_wire, plan_to_wire, shadow_to_wire,
};
pub use component::{
    component_from_wire, component_to_wire, placement_from_wire, placement_to_wire,
    weights_from_wire, weights_to_wire,
};
pub use graph::{
    edge_update_from_wire, edge_update_to_wire, faded_edge_to_wire, graph_edge_to_wire,
    graph_from_wire, graph_node_to_wire, impact_to_wire, observation_to_wire, risk_to_wire,
};
pub use opentelemetry_proto::tonic as otlp_pb;
pub use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
pub use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
pub use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
pub use otlp::{export_trace_response, spans_from_otlp, OtlpDecodeStats};
pub use status::{
    leader_from_status, not_leader_status, rejection_status, WireError, LEADER_ADDR_HEADER,
    LEADER_ID_HEADER,
};

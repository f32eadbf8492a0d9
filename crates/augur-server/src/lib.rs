//! An Augur controller node: its config, Raft over gRPC, the tonic services users and
//! orchestrators call, and `/metrics`.
//!
//! Hard rule: handlers hold no business logic. They turn wire types into domain commands
//! (`augur-proto`), propose them through Raft or read the applied state, and map the answer
//! back; every decision is made by `ControlState::apply` on every replica alike.

mod config;
mod graph;
mod metrics;
mod network;
mod node;
mod planner;
mod predict;
mod proposer;
mod service;
mod shards;

pub use config::{
    ClusterSection, ConfigError, ConfigLoadError, GraphSection, LimitsSection, MemberConfig,
    NodeConfig, NodeSection, PlannerSection, RaftSection, CONFIG_VERSION,
};
pub use node::{run, Consistency, Node};

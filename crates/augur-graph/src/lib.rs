//! Augur's dependency map: which component depends on which, learned from a topology file,
//! traces, flow records and metric series; how a failure spreads over it; each component's
//! blast radius and risk; and which component most likely caused an incident.
//!
//! Hard rule: pure and synchronous. No I/O beyond parsing what the caller hands in, no
//! clock (times travel in the arguments), no unseeded randomness: the same inputs give the
//! same graph, the same simulation and the same ranking on every node.

mod causal;
mod error;
mod flows;
mod graph;
mod history;
mod propagate;
mod rca;
mod topology_file;
mod traces;

pub use causal::*;
pub use error::GraphError;
pub use flows::*;
pub use graph::{
    CallStats, DepGraph, Edge, EdgeChange, EdgeSource, EdgeUpdate, EdgeView, FadedEdge, Node,
    Observation,
};
pub use history::*;
pub use propagate::*;
pub use rca::*;
pub use topology_file::*;
pub use traces::*;

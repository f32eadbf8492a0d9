//! Augur's shared vocabulary: identifiers, topology, policies, shadows, traffic weights,
//! the action log, and [`ControlState`], the replicated state machine that every controller
//! node applies in the same order.
//!
//! Hard rule: nothing here does I/O, reads a clock or draws a random number. Applying a
//! [`Command`] to a [`ControlState`] is a pure function of the state, the command and the
//! Raft position it was committed at, so every replica accepts or rejects it the same way.

mod command;
mod component_state;
mod components;
#[doc(hidden)]
pub mod fixtures;
mod ids;
mod indexed;
mod lease;
mod plan;
mod plans;
mod shadows;
mod shards;
mod state;
mod topology;

pub use command::{
    Applied, Command, Rejection, CLOCK_SKEW_MS, MAX_BATCH, MAX_EDGES, MAX_EDGE_BATCH,
};
pub use component_state::{ComponentState, MAX_COMPONENT_STATE_BYTES, MAX_TOTAL_STATE_BYTES};
pub use components::Components;
pub use ids::{ActionId, ComponentId, IdError, NodeId, MAX_ID_LEN};
pub use indexed::{IndexedMap, MapIndex};
pub use lease::{Claim, Expiry, LeasePolicy, LEASE_EXPIRER, MAX_LEASE_MS};
pub use plan::{
    plan_number, PlanDecision, PlanEvent, PlanKind, PlanRecord, PlanStatus, Severity, MAX_PLAN_LOG,
};
pub use plans::Plans;
pub use shadows::Shadows;
pub use shards::{shard_of, ShardAssignment, ShardMap, SHARD_COUNT};
pub use state::{
    Action, ActionKind, ActionOutcome, ActionStatus, ApprovalMode, ControlState, IdCursor,
    KpiSample, Kpis, ModelRecord, Policy, ScalingPolicy, ShadowRecord, ShadowState, ShiftRecord,
    TrafficWeights, MAX_ACTION_PARAMS, MAX_FADE_LOG, MAX_MODEL_BYTES, WEIGHT_TOTAL,
};
pub use topology::{Component, Host, Placement};

//! Augur's planner: pure decision logic over the replicated state, the forecasts and the
//! risk of each component. State + forecasts + risk + policy in, decisions out; no clock, no
//! I/O, no randomness, so every node plans the same and every rule is property tested.
//!
//! - [`placement`]: where a shadow goes: the safest failure domain with room.
//! - [`failover`]: which components to move before they fail, most urgent first, never over
//!   capacity.
//! - [`shift`]: a canary shift in steps, advanced by KPI gates, rolled back to the last
//!   verified weights when one fails.
//! - [`judge`]: the gate itself: error rate and a rank test on latency, shadow against
//!   original.
//! - [`footprint`]: each service's desired spread over zones, and the migrations towards it.
//! - [`scaling`]: predictive scale-out ahead of load and risk, one scale plan per new
//!   instance; never down on a forecast alone.
//! - [`lifecycle`]: what to commit next for each shadow in flight, from the action log's
//!   outcomes.

pub mod failover;
pub mod footprint;
pub mod judge;
pub mod lifecycle;
pub mod placement;
pub mod scaling;
pub mod shift;

pub use failover::{
    plan_failovers, recently_started, settling_siblings, ComponentRisk, Decision, Mode,
    PlannerConfig, Severity, FOLLOW_STRENGTH, FRESH_HOLD_MS, SETTLE_HOLD_MS,
};
pub use footprint::{plan_footprints, FootprintPlan};
pub use judge::{gate_summary, judge, mann_whitney_greater, GateConfig, Kpis, Verdict};
pub use lifecycle::{encode_weights, next_steps, provision, LifecycleStep};
pub use placement::{choose_host, domain_tier, Occupancy, Tier};
pub use scaling::{
    plan_scaling, scale_steps, scale_up, wanted_proposals, Load, ScaleDecision, ScaleStep,
};
pub use shift::{GateOutcome, Shift, ShiftError, ShiftStep};

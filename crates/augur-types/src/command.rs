use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::{ActionId, ComponentId};
use crate::plan::{PlanDecision, Severity};
use crate::state::{ActionKind, ActionOutcome, Policy, ShadowState};
use crate::topology::{Component, Host};

/// A change to the [`ControlState`](crate::ControlState), proposed through Raft.
///
/// Commands carry every input their application needs (timestamps included), so applying one
/// is deterministic on every replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Registers a component or replaces its record.
    UpsertComponent(Component),
    /// Forgets a component; rejected while a service's weights still route to it.
    RemoveComponent { id: ComponentId },
    /// Registers a host or replaces its record.
    UpsertHost(Host),
    /// Sets the policy of a service group (`*` for the default).
    SetPolicy { group: String, policy: Policy },
    /// Sets a service's traffic weights; they must sum to 100.
    SetWeights {
        service: String,
        weights: BTreeMap<ComponentId, u32>,
    },
    /// Starts a shadow of `component` at a placement; one in flight per component.
    RequestShadow {
        component: ComponentId,
        shadow: ComponentId,
        placement: crate::Placement,
        /// Why: kept as the first step of the shadow's history.
        reason: String,
    },
    /// Moves a component's shadow along its lifecycle.
    AdvanceShadow {
        component: ComponentId,
        to: ShadowState,
        reason: String,
    },
    /// Appends an action for orchestrators. `request_id` makes retries idempotent: the same
    /// request id answers with the action already appended.
    AppendAction {
        request_id: String,
        kind: ActionKind,
        target: ComponentId,
        params: BTreeMap<String, String>,
        at_ms: u64,
    },
    /// Records what an orchestrator did with an action. Reporting the same outcome twice is
    /// harmless; a different outcome for a finished action is rejected.
    ReportOutcome {
        id: ActionId,
        orchestrator: String,
        outcome: ActionOutcome,
        /// What the orchestrator measured (a traffic step's gate), if anything.
        kpis: Option<crate::Kpis>,
        at_ms: u64,
    },
    /// A step of a shadow's traffic shift: sets the weights of the component's service (they
    /// must name the shadow, which must be registered in the service) and moves the shadow to
    /// `Shifting { percent }` in one entry. The first step starts from `Validating`; each later
    /// one must rise, and marks the weights it replaces as verified.
    ShiftTraffic {
        component: ComponentId,
        percent: u8,
        weights: BTreeMap<ComponentId, u32>,
        reason: String,
    },
    /// Ends a shift that failed: the original and its shadow go back to their last verified
    /// weights (to those before the shift when the shadow died), every other component keeps
    /// its weight (another shift may be under way), and the shadow goes to `RolledBack`.
    RollBackShift {
        component: ComponentId,
        shadow_dead: bool,
        reason: String,
    },
    /// Records observations of dependency edges, all or none: one invalid update refuses
    /// the whole batch. A newer observation of a source replaces the older one.
    UpsertEdges(Vec<augur_graph::EdgeUpdate>),
    /// Forgets the non-declared observations last seen before `now_ms - ttl_ms`, and edges
    /// left with none. The proposer stamps `now_ms`.
    FadeEdges { now_ms: u64, ttl_ms: u64 },
    /// Records the LSTM every node scores with (its version and safetensors bytes); nodes
    /// that run another one switch to it. Setting the recorded version again changes nothing.
    SetModel(crate::ModelRecord),
    /// An orchestrator takes a pending action for `lease_ms` (or renews its hold); refused
    /// while another one holds it.
    ClaimAction {
        id: ActionId,
        orchestrator: String,
        lease_ms: u64,
        at_ms: u64,
    },
    /// The leader's lease housekeeping at `at_ms` (see [`ControlState::lease_expiries`]):
    /// lapsed claims are released for another orchestrator, and actions nobody claimed in
    /// time, or whose lease lapsed too often, fail.
    ///
    /// [`ControlState::lease_expiries`]: crate::ControlState::lease_expiries
    ExpireLeases {
        at_ms: u64,
        policy: crate::LeasePolicy,
    },
    /// Records a component's state snapshot; only a higher version replaces the one held
    /// (the same one again changes nothing). Capped per component and in total.
    PutComponentState {
        component: ComponentId,
        state: crate::ComponentState,
    },
    /// Records a failover plan for `component` (numbered `plan-N` by the state). Approved at
    /// once when `approved_by` names who let it go ahead (a policy that acts, an operator);
    /// otherwise proposed, waiting for approval. A component has at most one open plan: a
    /// second proposal answers with it (and approves it, if this one carries an approval).
    /// A scale plan names a component still to be registered, made like `template`.
    ProposePlan {
        component: ComponentId,
        #[serde(default)]
        kind: crate::PlanKind,
        /// Scale plans only: the registered instance the new one is made like.
        #[serde(default)]
        template: Option<ComponentId>,
        to: crate::Placement,
        severity: Severity,
        reason: String,
        approved_by: Option<String>,
        at_ms: u64,
    },
    /// Approves, rejects, expires or starts a plan; saying the same again changes nothing.
    DecidePlan {
        id: String,
        decision: PlanDecision,
        by: String,
        note: String,
        at_ms: u64,
    },
    /// Replaces the shard map (see [`crate::ShardMap`]). `map.epoch` names the epoch it was
    /// computed from (0 while there is none), so a map computed by a deposed leader is
    /// refused; the accepted one gets the next epoch.
    SetShards(crate::ShardMap),
    /// Several independent commands in one Raft entry (group commit). Each is applied on
    /// its own: one's rejection does not undo the others. Batches do not nest.
    Batch(Vec<Command>),
    /// A topology file (a CMDB's view): its hosts and components registered, and its
    /// declared dependencies recorded, all or none. The file speaks for its components'
    /// dependencies: a declared observation from one of them that the file no longer
    /// declares is withdrawn, and an edge left with no observation is removed. Each host and
    /// component is checked as its own upsert would be, against the state the whole file
    /// leaves (a host's capacity included), so one refusal refuses the file.
    ApplyTopology {
        hosts: Vec<Host>,
        components: Vec<Component>,
        /// Every declared edge of the file, each from one of `components`.
        edges: Vec<augur_graph::EdgeUpdate>,
    },
}

/// Most commands in one [`Command::Batch`].
pub const MAX_BATCH: usize = 1024;

/// How far ahead of a node's clock a time sent to it may be (the clock skew between hosts):
/// telemetry's default `telemetry.max_future_ms`, and the bound on edge observations.
pub const CLOCK_SKEW_MS: u64 = 600_000;

/// Most edge updates in one [`Command::UpsertEdges`].
pub const MAX_EDGE_BATCH: usize = 4096;

/// Most edges the state holds: traces with high-cardinality peer names (one per pod or
/// bucket) would otherwise grow the replicated state, and every snapshot, without bound.
pub const MAX_EDGES: usize = 100_000;

impl Command {
    /// The bytes it carries: enough to keep a group of commands in one Raft entry within a
    /// message's size. The opaque blobs (a state snapshot, a model) by their length, a batch
    /// by its commands', anything else by its encoded size (a component's labels, an
    /// action's parameters or a topology can be large too).
    pub fn payload_bytes(&self) -> usize {
        match self {
            Command::PutComponentState { state, .. } => state.bytes.len(),
            Command::SetModel(m) => m.bytes.len(),
            Command::Batch(cmds) => cmds.iter().map(Command::payload_bytes).sum(),
            other => postcard::experimental::serialized_size(other).unwrap_or(0),
        }
    }

    /// A short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Command::UpsertComponent(_) => "upsert_component",
            Command::RemoveComponent { .. } => "remove_component",
            Command::UpsertHost(_) => "upsert_host",
            Command::SetPolicy { .. } => "set_policy",
            Command::SetWeights { .. } => "set_weights",
            Command::RequestShadow { .. } => "request_shadow",
            Command::AdvanceShadow { .. } => "advance_shadow",
            Command::AppendAction { .. } => "append_action",
            Command::ReportOutcome { .. } => "report_outcome",
            Command::ShiftTraffic { .. } => "shift_traffic",
            Command::RollBackShift { .. } => "roll_back_shift",
            Command::UpsertEdges(_) => "upsert_edges",
            Command::FadeEdges { .. } => "fade_edges",
            Command::SetModel(_) => "set_model",
            Command::ClaimAction { .. } => "claim_action",
            Command::ExpireLeases { .. } => "expire_leases",
            Command::PutComponentState { .. } => "put_component_state",
            Command::ProposePlan { .. } => "propose_plan",
            Command::DecidePlan { .. } => "decide_plan",
            Command::SetShards(_) => "set_shards",
            Command::Batch(_) => "batch",
            Command::ApplyTopology { .. } => "apply_topology",
        }
    }
}

/// What a command did when it was accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    /// The state changed (or already was as asked).
    Done,
    /// An action was appended (or, for a retried request id, had been).
    Action { id: ActionId, duplicate: bool },
    /// A plan was proposed (or, with `duplicate`, the component's open plan answered).
    Plan { id: String, duplicate: bool },
    /// Lease housekeeping: how many actions went back to the pool, how many failed.
    Leases { released: u32, failed: u32 },
    /// Edge observations were faded; how many.
    Faded { observations: u32 },
    /// One answer per command of a batch, in order.
    Batch(Vec<Result<Applied, Rejection>>),
    /// A topology file was applied; how many declared observations it withdrew, and how
    /// many edges went with them (left with no observation).
    Topology { withdrawn: u32, edges_removed: u32 },
}

/// Why a command was refused. Every replica refuses the same command the same way; a
/// refused command changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    #[error("invalid input: {reason}")]
    InvalidInput { reason: String },
    #[error("unknown component {id}")]
    UnknownComponent { id: String },
    #[error("component {id} still receives traffic in service {service}")]
    ComponentInUse { id: String, service: String },
    #[error("weights of service {service} sum to {sum}, not 100")]
    WeightsDoNotSumTo100 { service: String, sum: u64 },
    #[error("component {component} belongs to group {group}, not to service {service}")]
    WrongService {
        component: String,
        group: String,
        service: String,
    },
    #[error("host {host} is full: capacity {capacity}")]
    HostFull { host: String, capacity: u32 },
    #[error("component {component} already has a shadow in flight ({shadow})")]
    ShadowInFlight { component: String, shadow: String },
    #[error(
        "component {component}'s shadow {shadow} is {state} and not retired yet \
         (a promoted shadow took its place; a rolled-back one is retired once it carries no traffic)"
    )]
    ShadowNotRetired {
        component: String,
        shadow: String,
        state: String,
    },
    #[error("component {component} has no shadow")]
    NoShadow { component: String },
    #[error("shadow of {component} cannot go from {from} to {to}")]
    IllegalShadowTransition {
        component: String,
        from: String,
        to: String,
    },
    #[error("unknown action {id}")]
    UnknownAction { id: String },
    #[error("action {id} already finished as {previous}")]
    OutcomeConflict { id: String, previous: String },
    #[error("action {id} is held by {by} until {until_ms}")]
    ActionClaimed {
        id: String,
        by: String,
        until_ms: u64,
    },
    #[error("state version {version} of {component} is stale: version {held} is held")]
    StaleState {
        component: String,
        version: u64,
        held: u64,
    },
    #[error("shard map computed from epoch {from}; the map is at epoch {current}")]
    StaleShardMap { from: u64, current: u64 },
    #[error("unknown plan {id:?} (plan ids are plan-N)")]
    UnknownPlan { id: String },
    #[error("plan {id} cannot go from {from} to {to}")]
    IllegalPlanTransition {
        id: String,
        from: String,
        to: String,
    },
}

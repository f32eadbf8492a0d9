use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::command::{Applied, Command, Rejection, MAX_BATCH, MAX_EDGES, MAX_EDGE_BATCH};
use crate::components::Components;
use crate::ids::{validate_id, ActionId, ComponentId};
use crate::shadows::Shadows;
use crate::topology::{Component, Host, Placement};

/// Traffic weights of one service always sum to this.
pub const WEIGHT_TOTAL: u64 = 100;
/// Most parameters one action may carry.
pub const MAX_ACTION_PARAMS: usize = 32;

/// How much the planner may do on its own for a service group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApprovalMode {
    /// Carry plans out.
    Act,
    /// Only recommend; wait for an operator's approval.
    Recommend,
}

/// A service group's policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// 0 (move at the first sign of risk) ..= 100 (move only when failure is near certain).
    pub risk_tolerance: u8,
    pub approval: ApprovalMode,
    /// Traffic steps of a canary shift, in percent, strictly rising and ending at 100.
    pub canary_steps: Vec<u8>,
    /// Predictive scaling of the group's services; `None`: never scaled.
    #[serde(default)]
    pub scaling: Option<ScalingPolicy>,
}

/// How a service group scales ahead of its forecast load and risk. Instances are only ever
/// added on a forecast: removing them waits for observed load, which is an operator's call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScalingPolicy {
    /// Requests per second one instance serves at its target utilisation (≥ 1).
    pub per_instance_rps: u32,
    /// Spare capacity kept above the forecast peak, in percent (0 ..= 1000).
    pub headroom_percent: u32,
    /// Most instances the group may run (1 ..= 1000).
    pub max_instances: u32,
    /// How far ahead the load is projected, in seconds (1 ..= 86 400): about the time a new
    /// instance takes to start serving.
    pub horizon_s: u32,
}

impl ScalingPolicy {
    fn validate(&self) -> Result<(), Rejection> {
        let invalid = |reason: String| Err(Rejection::InvalidInput { reason });
        if self.per_instance_rps == 0 {
            return invalid(
                "scaling: requests per second an instance serves must be at least 1".into(),
            );
        }
        if self.headroom_percent > 1000 {
            return invalid(format!(
                "scaling: headroom {} % is above 1000 %",
                self.headroom_percent
            ));
        }
        if !(1..=1000).contains(&self.max_instances) {
            return invalid(format!(
                "scaling: most instances {} is outside 1..=1000",
                self.max_instances
            ));
        }
        if !(1..=86_400).contains(&self.horizon_s) {
            return invalid(format!(
                "scaling: horizon {} s is outside 1..=86400",
                self.horizon_s
            ));
        }
        Ok(())
    }
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            risk_tolerance: 50,
            approval: ApprovalMode::Act,
            canary_steps: vec![1, 5, 25, 50, 100],
            scaling: None,
        }
    }
}

impl Policy {
    fn validate(&self) -> Result<(), Rejection> {
        let invalid = |reason: String| Rejection::InvalidInput { reason };
        if self.risk_tolerance > 100 {
            return Err(invalid(format!(
                "risk tolerance {} is above 100",
                self.risk_tolerance
            )));
        }
        let rising = self.canary_steps.windows(2).all(|w| w[0] < w[1]);
        if !rising || self.canary_steps.last() != Some(&100) || self.canary_steps.contains(&0) {
            return Err(invalid(format!(
                "canary steps {:?} must rise strictly from above 0 and end at 100",
                self.canary_steps
            )));
        }
        if let Some(scaling) = &self.scaling {
            scaling.validate()?;
        }
        Ok(())
    }
}

/// Where a shadow is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShadowState {
    Requested,
    Provisioned,
    Syncing,
    Validating,
    Shifting { weight: u8 },
    Promoted,
    RolledBack,
    Retired,
}

impl ShadowState {
    /// A shadow still in flight blocks another one for the same component.
    pub fn in_flight(self) -> bool {
        !matches!(
            self,
            ShadowState::Promoted | ShadowState::RolledBack | ShadowState::Retired
        )
    }

    fn may_become(self, to: ShadowState) -> bool {
        use ShadowState::*;
        match (self, to) {
            // Any live shadow may be rolled back.
            (s, RolledBack) => s.in_flight(),
            (Requested, Provisioned) | (Provisioned, Syncing) | (Syncing, Validating) => true,
            (Validating, Shifting { .. }) => true,
            (Shifting { weight: a }, Shifting { weight: b }) => a < b && b <= 100,
            (Shifting { weight: 100 }, Promoted) => true,
            (Promoted | RolledBack, Retired) => true,
            _ => false,
        }
    }
}

impl fmt::Display for ShadowState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShadowState::Shifting { weight } => write!(f, "shifting({weight}%)"),
            other => write!(f, "{}", format!("{other:?}").to_lowercase()),
        }
    }
}

/// A shadow instance of a component, and the reasons for each of its steps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowRecord {
    pub shadow: ComponentId,
    pub placement: Placement,
    pub state: ShadowState,
    pub history: Vec<(ShadowState, String)>,
    /// The traffic shift, once one started: the service and the weights to go back to.
    #[serde(default)]
    pub shift: Option<ShiftRecord>,
}

/// A shadow's traffic shift: which service it moves, the weights before it began and the
/// last weights whose KPI gate passed (those before it began until one did).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShiftRecord {
    pub service: String,
    pub before: TrafficWeights,
    pub verified: TrafficWeights,
}

/// What one side of a shift served while a step was gated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KpiSample {
    pub requests: u64,
    pub errors: u64,
    /// 99th percentile latency, in microseconds.
    pub p99_us: u64,
}

impl KpiSample {
    /// Errors over requests; 0 with no requests.
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }
}

/// The KPIs an orchestrator measured for a traffic step: the original's and the shadow's, over
/// the same window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kpis {
    pub original: KpiSample,
    pub shadow: KpiSample,
}

/// Largest model the state holds, in bytes.
pub const MAX_MODEL_BYTES: usize = 4 * 1024 * 1024;

/// The model every node scores with: its version (content-derived, set when it was saved)
/// and its bytes (safetensors), so a node that has another one can load this one.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelRecord {
    pub version: String,
    pub bytes: Vec<u8>,
}

impl fmt::Debug for ModelRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelRecord")
            .field("version", &self.version)
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

impl ModelRecord {
    pub fn validate(&self) -> Result<(), Rejection> {
        Self::check(&self.version, self.bytes.len())
    }

    /// What [`ModelRecord::validate`] checks, for a model of `len` bytes not (yet) in a
    /// record: its version is an id, and its size within the record's bounds.
    pub fn check(version: &str, len: usize) -> Result<(), Rejection> {
        validate_id("model version", version).map_err(invalid)?;
        if len == 0 || len > MAX_MODEL_BYTES {
            return Err(invalid(format!(
                "model {version} is {len} bytes; it must be 1..={MAX_MODEL_BYTES}"
            )));
        }
        Ok(())
    }
}

/// A service's traffic split, in percent per component, summing to 100.
pub type TrafficWeights = BTreeMap<ComponentId, u32>;

/// What an orchestrator is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ActionKind {
    Provision,
    Sync,
    Validate,
    SetWeights,
    Drain,
    Standby,
    Retire,
    Scale,
    Exec,
}

impl ActionKind {
    pub const ALL: [ActionKind; 9] = [
        ActionKind::Provision,
        ActionKind::Sync,
        ActionKind::Validate,
        ActionKind::SetWeights,
        ActionKind::Drain,
        ActionKind::Standby,
        ActionKind::Retire,
        ActionKind::Scale,
        ActionKind::Exec,
    ];

    /// The kind's name, as request ids, configs and logs spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Provision => "provision",
            ActionKind::Sync => "sync",
            ActionKind::Validate => "validate",
            ActionKind::SetWeights => "set_weights",
            ActionKind::Drain => "drain",
            ActionKind::Standby => "standby",
            ActionKind::Retire => "retire",
            ActionKind::Scale => "scale",
            ActionKind::Exec => "exec",
        }
    }
}

/// How an action ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionOutcome {
    Succeeded,
    Failed { reason: String },
}

/// Where an action stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionStatus {
    Pending,
    Done {
        orchestrator: String,
        outcome: ActionOutcome,
        at_ms: u64,
    },
}

impl fmt::Display for ActionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActionStatus::Pending => f.write_str("pending"),
            ActionStatus::Done {
                outcome: ActionOutcome::Succeeded,
                ..
            } => f.write_str("succeeded"),
            ActionStatus::Done {
                outcome: ActionOutcome::Failed { reason },
                ..
            } => {
                write!(f, "failed: {reason}")
            }
        }
    }
}

/// One entry of the action log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    pub id: ActionId,
    pub request_id: String,
    pub kind: ActionKind,
    pub target: ComponentId,
    pub params: BTreeMap<String, String>,
    pub created_ms: u64,
    pub status: ActionStatus,
    /// What the orchestrator measured while carrying it out (a traffic step's gate).
    #[serde(default)]
    pub kpis: Option<Kpis>,
    /// The orchestrator holding it, while one does.
    #[serde(default)]
    pub claim: Option<crate::Claim>,
    /// How many leases on it lapsed.
    #[serde(default)]
    pub lapses: u32,
    /// When it was last offered again after a lapse (else it was offered when created).
    #[serde(default)]
    pub offered_ms: Option<u64>,
}

impl Action {
    /// Refuses (`ActionClaimed`) when an orchestrator other than `orchestrator` holds the
    /// action's lease at `at_ms`.
    pub(crate) fn check_holder(&self, orchestrator: &str, at_ms: u64) -> Result<(), Rejection> {
        match self
            .claim
            .as_ref()
            .filter(|c| c.orchestrator != orchestrator && c.until_ms > at_ms)
        {
            Some(c) => Err(Rejection::ActionClaimed {
                id: self.id.to_string(),
                by: c.orchestrator.clone(),
                until_ms: c.until_ms,
            }),
            None => Ok(()),
        }
    }
}

/// Most finished shadows kept in [`ControlState::past_shadows`].
pub const MAX_SHADOW_LOG: usize = 256;

/// Most fade events kept in [`ControlState::faded`].
pub const MAX_FADE_LOG: usize = 256;

/// Augur's replicated control state: the low-volume facts that must never be lost.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ControlState {
    pub components: Components,
    pub hosts: BTreeMap<String, Host>,
    pub policies: BTreeMap<String, Policy>,
    pub weights: BTreeMap<String, TrafficWeights>,
    pub shadows: Shadows,
    /// The action log, in sequence order; `actions[i].id.seq == i + 1`.
    pub actions: Vec<Action>,
    /// Dependency edges `(from, to)`: `from` depends on `to`; one observation per source.
    pub edges: BTreeMap<(String, String), augur_graph::Edge>,
    /// The most recent fades, oldest first, at most [`MAX_FADE_LOG`]: what disappeared from
    /// the dependency map and when it was last seen.
    pub faded: VecDeque<augur_graph::FadedEdge>,
    /// The LSTM every node uses; none until a node records its own (the leader does).
    #[serde(default)]
    pub model: Option<ModelRecord>,
    /// Finished shadows a newer one replaced, oldest first, at most [`MAX_SHADOW_LOG`]: their
    /// steps and reasons stay visible.
    #[serde(default)]
    pub past_shadows: VecDeque<(ComponentId, ShadowRecord)>,
    /// Failover plans by number: every open one and the newest finished ones.
    #[serde(default)]
    pub plans: crate::Plans,
    /// The last plan number given out.
    #[serde(default)]
    pub plan_seq: u64,
    /// Components' state snapshots, recorded while a shadow is synced (capped).
    #[serde(default)]
    pub component_states: BTreeMap<ComponentId, crate::ComponentState>,
    /// Which node owns each shard of components, and which stands by; none until the
    /// leader records one.
    #[serde(default)]
    pub shards: Option<crate::ShardMap>,
    /// Request id → sequence number, so a retried append is answered, not repeated.
    #[serde(skip)]
    request_index: HashMap<String, u64>,
    /// Which component ids came and went lately, for this node's own observers (not part of
    /// the replicated value).
    #[serde(skip)]
    id_changes: IdChanges,
}

/// How many component-id changes [`IdChanges`] keeps.
pub const ID_CHANGES_KEPT: usize = 65_536;

/// The newest component ids added and removed, so an observer that mirrors the set of
/// components (the predictor actors) catches up in O(changes) instead of copying every id on
/// every applied entry. Local to one state value: a restored or deserialized state starts a
/// new epoch with no history, and observers then read the whole set once.
#[derive(Debug, Clone)]
pub struct IdChanges {
    epoch: u64,
    count: u64,
    /// `(count after the change, id, added)`, oldest first.
    recent: VecDeque<(u64, ComponentId, bool)>,
}

impl Default for IdChanges {
    fn default() -> Self {
        static EPOCHS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Self {
            epoch: EPOCHS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            count: 0,
            recent: VecDeque::new(),
        }
    }
}

/// Not part of the state's value: two replicas with the same state are equal whatever their
/// local histories.
impl PartialEq for IdChanges {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// Where an observer of the component ids stands: `(epoch, count)` of [`IdChanges`].
pub type IdCursor = (u64, u64);

impl IdChanges {
    fn record(&mut self, id: &ComponentId, added: bool) {
        self.count += 1;
        if self.recent.len() == ID_CHANGES_KEPT {
            self.recent.pop_front();
        }
        self.recent.push_back((self.count, id.clone(), added));
    }
}

impl ControlState {
    /// Where the component-id history stands now.
    pub fn id_cursor(&self) -> IdCursor {
        (self.id_changes.epoch, self.id_changes.count)
    }

    /// The ids added (`true`) and removed since `since`, oldest first; `None` when the history
    /// does not reach back that far (another epoch, or too many changes): read the whole set.
    pub fn id_changes_since(&self, since: IdCursor) -> Option<Vec<(ComponentId, bool)>> {
        let c = &self.id_changes;
        let behind = c.count.checked_sub(since.1)?;
        if since.0 != c.epoch || behind > c.recent.len() as u64 {
            return None;
        }
        let skip = c.recent.len() - behind as usize;
        Some(
            c.recent
                .iter()
                .skip(skip)
                .map(|(_, id, added)| (id.clone(), *added))
                .collect(),
        )
    }

    /// Applies `cmd`, committed in Raft term `term`. On rejection nothing changes.
    pub fn apply(&mut self, term: u64, cmd: &Command) -> Result<Applied, Rejection> {
        match cmd {
            Command::UpsertComponent(c) => self.upsert_component(c),
            Command::RemoveComponent { id } => self.remove_component(id),
            Command::UpsertHost(h) => {
                h.placement.validate()?;
                self.hosts.insert(h.placement.host.clone(), h.clone());
                Ok(Applied::Done)
            }
            Command::SetPolicy { group, policy } => {
                if group != "*" {
                    validate_id("group", group).map_err(invalid)?;
                }
                policy.validate()?;
                self.policies.insert(group.clone(), policy.clone());
                Ok(Applied::Done)
            }
            Command::SetWeights { service, weights } => self.set_weights(service, weights),
            Command::RequestShadow {
                component,
                shadow,
                placement,
                reason,
            } => self.request_shadow(component, shadow, placement, reason),
            Command::AdvanceShadow {
                component,
                to,
                reason,
            } => self.advance_shadow(component, *to, reason),
            Command::AppendAction {
                request_id,
                kind,
                target,
                params,
                at_ms,
            } => self.append_action(term, request_id, *kind, target, params, *at_ms),
            Command::ReportOutcome {
                id,
                orchestrator,
                outcome,
                kpis,
                at_ms,
            } => self.report_outcome(id, orchestrator, outcome, kpis.as_ref(), *at_ms),
            Command::ShiftTraffic {
                component,
                percent,
                weights,
                reason,
            } => self.shift_traffic(component, *percent, weights, reason),
            Command::RollBackShift {
                component,
                shadow_dead,
                reason,
            } => self.roll_back_shift(component, *shadow_dead, reason),
            Command::UpsertEdges(updates) => self.upsert_edges(updates),
            Command::FadeEdges { now_ms, ttl_ms } => Ok(self.fade_edges(*now_ms, *ttl_ms)),
            Command::ClaimAction {
                id,
                orchestrator,
                lease_ms,
                at_ms,
            } => self.claim_action(id, orchestrator, *lease_ms, *at_ms),
            Command::ExpireLeases { at_ms, policy } => self.expire_leases(*at_ms, policy),
            Command::PutComponentState { component, state } => {
                self.put_component_state(component, state)
            }
            Command::ProposePlan {
                component,
                kind,
                template,
                to,
                severity,
                reason,
                approved_by,
                at_ms,
            } => self.propose_plan(
                component,
                *kind,
                template.as_ref(),
                to,
                *severity,
                reason,
                approved_by.as_deref(),
                *at_ms,
            ),
            Command::DecidePlan {
                id,
                decision,
                by,
                note,
                at_ms,
            } => self.decide_plan(id, decision, by, note, *at_ms),
            Command::SetModel(m) => {
                m.validate()?;
                if self.model.as_ref().map(|r| &r.version) != Some(&m.version) {
                    self.model = Some(m.clone());
                }
                Ok(Applied::Done)
            }
            Command::SetShards(map) => {
                map.validate()?;
                let current = self.shards.as_ref().map_or(0, |m| m.epoch);
                if map.epoch != current {
                    return Err(Rejection::StaleShardMap {
                        from: map.epoch,
                        current,
                    });
                }
                self.shards = Some(crate::ShardMap {
                    epoch: current + 1,
                    shards: map.shards.clone(),
                });
                Ok(Applied::Done)
            }
            Command::Batch(cmds) => {
                if cmds.len() > MAX_BATCH {
                    return Err(invalid(format!(
                        "batch of {} commands; at most {MAX_BATCH}",
                        cmds.len()
                    )));
                }
                if cmds.iter().any(|c| matches!(c, Command::Batch(_))) {
                    return Err(invalid("batches do not nest"));
                }
                Ok(Applied::Batch(
                    cmds.iter().map(|c| self.apply(term, c)).collect(),
                ))
            }
            Command::ApplyTopology {
                hosts,
                components,
                edges,
            } => self.apply_topology(hosts, components, edges),
        }
    }

    /// [`Command::ApplyTopology`]: every check against the state the file would leave, then
    /// the changes.
    fn apply_topology(
        &mut self,
        hosts: &[Host],
        components: &[Component],
        edges: &[augur_graph::EdgeUpdate],
    ) -> Result<Applied, Rejection> {
        use augur_graph::EdgeSource;
        if edges.len() > MAX_EDGE_BATCH {
            return Err(invalid(format!(
                "{} dependencies in one topology; at most {MAX_EDGE_BATCH}",
                edges.len()
            )));
        }
        let mut capacity: HashMap<&str, u32> = HashMap::new();
        for h in hosts {
            h.placement.validate()?;
            if capacity.insert(&h.placement.host, h.capacity).is_some() {
                return Err(invalid(format!(
                    "host {} twice in one topology",
                    h.placement.host
                )));
            }
        }
        let mut declared: BTreeSet<&str> = BTreeSet::new();
        for c in components {
            c.validate()?;
            if !declared.insert(c.id.as_str()) {
                return Err(invalid(format!("component {} twice in one topology", c.id)));
            }
            self.check_group_move(c)?;
        }
        let mut pairs: BTreeSet<(&str, &str)> = BTreeSet::new();
        for u in edges {
            u.validate().map_err(|e| invalid(e.to_string()))?;
            if u.observation.source != EdgeSource::Declared {
                return Err(invalid(format!(
                    "dependency {} -> {} is not a declared one",
                    u.from, u.to
                )));
            }
            if !declared.contains(u.from.as_str()) {
                return Err(invalid(format!(
                    "dependency {} -> {}: {} is not a component of this topology",
                    u.from, u.to, u.from
                )));
            }
            if !pairs.insert((&u.from, &u.to)) {
                return Err(invalid(format!(
                    "dependency {} -> {} twice in one topology",
                    u.from, u.to
                )));
            }
        }
        // Hosts' room as the file leaves them: the file's components where it puts them, the
        // others where they are, against the file's capacity or the recorded one.
        for c in components {
            let host = c.placement.host.as_str();
            if !capacity.contains_key(host) {
                if let Some(h) = self.hosts.get(host) {
                    capacity.insert(host, h.capacity);
                }
            }
        }
        // From the recorded counts, moved by the file's components only: O(file), not
        // O(registered components).
        let mut count: HashMap<&str, u64> = HashMap::new();
        for c in components {
            let host = c.placement.host.as_str();
            if capacity.contains_key(host) && !count.contains_key(host) {
                count.insert(host, self.components.on_host(host));
            }
        }
        for c in components {
            if let Some(old) = self.components.get(&c.id) {
                if let Some(n) = count.get_mut(old.placement.host.as_str()) {
                    *n -= 1;
                }
            }
            if let Some(n) = count.get_mut(c.placement.host.as_str()) {
                *n += 1;
            }
        }
        for c in components {
            let host = c.placement.host.as_str();
            if let (Some(&cap), Some(&n)) = (capacity.get(host), count.get(host)) {
                if n > u64::from(cap) {
                    return Err(Rejection::HostFull {
                        host: host.to_owned(),
                        capacity: cap,
                    });
                }
            }
        }
        // Declared observations from the file's components that it no longer declares.
        let mut withdraw: Vec<(String, String)> = Vec::new();
        for c in components {
            let from = c.id.as_str();
            let start = (from.to_owned(), String::new());
            for ((f, t), edge) in self.edges.range(start..) {
                if f != from {
                    break;
                }
                if edge.observations.contains_key(&EdgeSource::Declared)
                    && !pairs.contains(&(f.as_str(), t.as_str()))
                {
                    withdraw.push((f.clone(), t.clone()));
                }
            }
        }
        let emptied = withdraw
            .iter()
            .filter(|k| {
                self.edges
                    .get(*k)
                    .is_some_and(|e| e.observations.len() == 1)
            })
            .count();
        let new = pairs
            .iter()
            .filter(|&&(f, t)| !self.edges.contains_key(&(f.to_owned(), t.to_owned())))
            .count();
        if self.edges.len() + new - emptied > MAX_EDGES {
            return Err(invalid(format!(
                "{new} new edges would make {}; the graph holds at most {MAX_EDGES}",
                self.edges.len() + new - emptied
            )));
        }

        for h in hosts {
            self.hosts.insert(h.placement.host.clone(), h.clone());
        }
        for c in components {
            if self.components.insert(c.id.clone(), c.clone()).is_none() {
                self.id_changes.record(&c.id, true);
            }
        }
        let mut edges_removed = 0u32;
        for key in &withdraw {
            if let Some(edge) = self.edges.get_mut(key) {
                edge.observations.remove(&EdgeSource::Declared);
                if edge.observations.is_empty() {
                    self.edges.remove(key);
                    edges_removed += 1;
                }
            }
        }
        for u in edges {
            self.edges
                .entry((u.from.clone(), u.to.clone()))
                .or_default()
                .observe(&u.observation);
        }
        Ok(Applied::Topology {
            withdrawn: withdraw.len() as u32,
            edges_removed,
        })
    }

    fn upsert_edges(&mut self, updates: &[augur_graph::EdgeUpdate]) -> Result<Applied, Rejection> {
        if updates.len() > MAX_EDGE_BATCH {
            return Err(invalid(format!(
                "{} edge updates in one command; at most {MAX_EDGE_BATCH}",
                updates.len()
            )));
        }
        for u in updates {
            u.validate().map_err(|e| invalid(e.to_string()))?;
        }
        // Counted only near the cap: the lookup copies each edge's names.
        let new: BTreeSet<(&str, &str)> = if self.edges.len() + updates.len() > MAX_EDGES {
            updates
                .iter()
                .map(|u| (u.from.as_str(), u.to.as_str()))
                .filter(|&(f, t)| !self.edges.contains_key(&(f.to_owned(), t.to_owned())))
                .collect()
        } else {
            BTreeSet::new()
        };
        if self.edges.len() + new.len() > MAX_EDGES {
            return Err(invalid(format!(
                "{} new edges would make {}; the graph holds at most {MAX_EDGES}",
                new.len(),
                self.edges.len() + new.len()
            )));
        }
        for u in updates {
            self.edges
                .entry((u.from.clone(), u.to.clone()))
                .or_default()
                .observe(&u.observation);
        }
        Ok(Applied::Done)
    }

    fn fade_edges(&mut self, now_ms: u64, ttl_ms: u64) -> Applied {
        let cutoff = now_ms.saturating_sub(ttl_ms);
        let mut count = 0u32;
        self.edges.retain(|(from, to), edge| {
            for record in edge.fade_records(from, to, cutoff) {
                count += 1;
                if self.faded.len() == MAX_FADE_LOG {
                    self.faded.pop_front();
                }
                self.faded.push_back(record);
            }
            !edge.observations.is_empty()
        });
        Applied::Faded {
            observations: count,
        }
    }

    /// The dependency graph: every registered component (entry points are those labelled
    /// `entry=true`) and every edge; endpoints that are not registered are virtual peers.
    pub fn dependency_graph(&self) -> augur_graph::DepGraph {
        let mut g = augur_graph::DepGraph::with_capacity(self.components.len(), self.edges.len());
        for c in self.components.values() {
            let mut n = augur_graph::Node::component(c.id.as_str());
            n.entry = c.labels.get("entry").is_some_and(|v| v == "true");
            n.criticality = c.criticality;
            n.group = Some(c.group.clone());
            n.zone = Some(c.placement.zone.clone());
            g.upsert_node(n);
        }
        for ((from, to), edge) in &self.edges {
            g.insert_edge(from, to, edge.clone());
        }
        g
    }

    /// The policy that governs `group`: its own, else the default, else the built-in one.
    pub fn policy_for(&self, group: &str) -> Policy {
        self.policies
            .get(group)
            .or_else(|| self.policies.get("*"))
            .cloned()
            .unwrap_or_default()
    }

    /// The action with sequence number `seq`, if the log has it.
    pub fn action(&self, seq: u64) -> Option<&Action> {
        seq.checked_sub(1)
            .and_then(|i| self.actions.get(i as usize))
    }

    /// Actions from sequence `from` on (1-based; 0 is read as 1).
    pub fn actions_from(&self, from: u64) -> &[Action] {
        let start = (from.max(1) - 1) as usize;
        self.actions.get(start..).unwrap_or(&[])
    }

    /// The action appended under `request_id`, if any.
    pub fn action_by_request(&self, request_id: &str) -> Option<&Action> {
        self.request_index
            .get(request_id)
            .and_then(|&seq| self.action(seq))
    }

    /// The last action's sequence number (0 when the log is empty).
    pub fn last_action_seq(&self) -> u64 {
        self.actions.len() as u64
    }

    /// Rebuilds indexes that are not serialized; call after deserializing.
    pub fn reindex(&mut self) {
        self.request_index = self
            .actions
            .iter()
            .map(|a| (a.request_id.clone(), a.id.seq))
            .collect();
    }

    /// Refuses `c` on a host that is full without it: the host's capacity counts the
    /// registered components (a known host; an unknown one has no capacity to keep).
    pub fn check_host_room(&self, c: &Component) -> Result<(), Rejection> {
        if let Some(host) = self.hosts.get(&c.placement.host) {
            let here = self
                .components
                .get(&c.id)
                .is_some_and(|o| o.placement.host == c.placement.host);
            let others = self.components.on_host(&c.placement.host) - u64::from(here);
            if others >= u64::from(host.capacity) {
                return Err(Rejection::HostFull {
                    host: c.placement.host.clone(),
                    capacity: host.capacity,
                });
            }
        }
        Ok(())
    }

    /// A component that moves to another group must not be in a service's routing.
    /// Nor may one whose shadow is in flight: a rollback hands the shadow's share back to it
    /// in its service.
    fn check_group_move(&self, c: &Component) -> Result<(), Rejection> {
        match self.components.get(&c.id) {
            Some(old) if old.group != c.group => {
                if let Some(service) = self.service_routing_to(&c.id) {
                    return Err(Rejection::ComponentInUse {
                        id: c.id.to_string(),
                        service,
                    });
                }
                match self.shadows.get(&c.id).filter(|s| s.state.in_flight()) {
                    Some(s) => Err(Rejection::ShadowInFlight {
                        component: c.id.to_string(),
                        shadow: s.shadow.to_string(),
                    }),
                    None => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }

    fn upsert_component(&mut self, c: &Component) -> Result<Applied, Rejection> {
        c.validate()?;
        self.check_host_room(c)?;
        self.check_group_move(c)?;
        if self.components.insert(c.id.clone(), c.clone()).is_none() {
            self.id_changes.record(&c.id, true);
        }
        Ok(Applied::Done)
    }

    fn remove_component(&mut self, id: &ComponentId) -> Result<Applied, Rejection> {
        if !self.components.contains_key(id) {
            return Err(Rejection::UnknownComponent { id: id.to_string() });
        }
        if let Some(service) = self.service_routing_to(id) {
            return Err(Rejection::ComponentInUse {
                id: id.to_string(),
                service,
            });
        }
        if let Some(s) = self.shadows.get(id).filter(|s| s.state.in_flight()) {
            return Err(Rejection::ShadowInFlight {
                component: id.to_string(),
                shadow: s.shadow.to_string(),
            });
        }
        self.components.remove(id);
        self.id_changes.record(id, false);
        // A weight of 0 may still name it (a drained original): a map that names a component
        // that no longer exists would be refused by the next `SetWeights` built from it.
        for w in self.weights.values_mut() {
            w.remove(id);
        }
        self.shadows.remove(id);
        self.component_states.remove(id);
        Ok(Applied::Done)
    }

    /// Refuses a new shadow for `component` while it has one in flight or one not yet
    /// retired, or while it is itself a shadow in flight: a shift of its own inside its
    /// owner's would leave the owner's next step with weights that no longer sum to 100.
    pub(crate) fn check_may_get_shadow(&self, component: &ComponentId) -> Result<(), Rejection> {
        if let Some(s) = self.shadows.get(component) {
            if s.state.in_flight() {
                return Err(Rejection::ShadowInFlight {
                    component: component.to_string(),
                    shadow: s.shadow.to_string(),
                });
            }
            // A new record would replace this one, and nothing would track its shadow any more.
            if matches!(s.state, ShadowState::RolledBack | ShadowState::Promoted) {
                return Err(Rejection::ShadowNotRetired {
                    component: component.to_string(),
                    shadow: s.shadow.to_string(),
                    state: s.state.to_string(),
                });
            }
        }
        if let Some((owner, s)) = self.shadows.in_flight_owner_of(component) {
            return Err(Rejection::ShadowInFlight {
                component: owner.to_string(),
                shadow: s.shadow.to_string(),
            });
        }
        Ok(())
    }

    fn service_routing_to(&self, id: &ComponentId) -> Option<String> {
        self.weights
            .iter()
            .find(|(_, w)| w.get(id).is_some_and(|&v| v > 0))
            .map(|(s, _)| s.clone())
    }

    fn set_weights(
        &mut self,
        service: &str,
        weights: &TrafficWeights,
    ) -> Result<Applied, Rejection> {
        validate_id("service", service).map_err(invalid)?;
        for id in weights.keys() {
            let c = self
                .components
                .get(id)
                .ok_or_else(|| Rejection::UnknownComponent { id: id.to_string() })?;
            if c.group != service {
                return Err(Rejection::WrongService {
                    component: id.to_string(),
                    group: c.group.clone(),
                    service: service.to_string(),
                });
            }
        }
        let sum: u64 = weights.values().map(|&w| u64::from(w)).sum();
        if sum != WEIGHT_TOTAL {
            return Err(Rejection::WeightsDoNotSumTo100 {
                service: service.to_string(),
                sum,
            });
        }
        self.weights.insert(service.to_string(), weights.clone());
        Ok(Applied::Done)
    }

    fn request_shadow(
        &mut self,
        component: &ComponentId,
        shadow: &ComponentId,
        placement: &Placement,
        reason: &str,
    ) -> Result<Applied, Rejection> {
        if !self.components.contains_key(component) {
            return Err(Rejection::UnknownComponent {
                id: component.to_string(),
            });
        }
        placement.validate()?;
        self.check_may_get_shadow(component)?;
        let state = ShadowState::Requested;
        if let Some(done) = self.shadows.remove(component) {
            if self.past_shadows.len() == MAX_SHADOW_LOG {
                self.past_shadows.pop_front();
            }
            self.past_shadows.push_back((component.clone(), done));
        }
        self.shadows.insert(
            component.clone(),
            ShadowRecord {
                shadow: shadow.clone(),
                placement: placement.clone(),
                state,
                history: vec![(
                    state,
                    if reason.is_empty() {
                        "requested".to_string()
                    } else {
                        reason.to_string()
                    },
                )],
                shift: None,
            },
        );
        Ok(Applied::Done)
    }

    fn shadow_of(&self, component: &ComponentId) -> Result<&ShadowRecord, Rejection> {
        self.shadows
            .get(component)
            .ok_or_else(|| Rejection::NoShadow {
                component: component.to_string(),
            })
    }

    fn advance_shadow(
        &mut self,
        component: &ComponentId,
        to: ShadowState,
        reason: &str,
    ) -> Result<Applied, Rejection> {
        let rec = self.shadow_of(component)?;
        let shifting = matches!(rec.state, ShadowState::Shifting { .. });
        // Weights and state move together: a shift's steps and its rollback have their own
        // commands ([`Command::ShiftTraffic`], [`Command::RollBackShift`]).
        let moves_weights = rec.shift.is_some()
            && (matches!(to, ShadowState::Shifting { .. })
                || (shifting && to == ShadowState::RolledBack));
        if !rec.state.may_become(to) || moves_weights {
            return Err(Rejection::IllegalShadowTransition {
                component: component.to_string(),
                from: rec.state.to_string(),
                to: to.to_string(),
            });
        }
        self.shadows.update(component, |rec| {
            rec.state = to;
            rec.history.push((to, reason.to_string()));
        });
        Ok(Applied::Done)
    }

    /// One step of a shadow's traffic shift: the service's weights and the shadow's state, in
    /// one entry. The first step (from `Validating`) records the weights before it; a later
    /// one records the weights it replaces as verified (their gate passed).
    fn shift_traffic(
        &mut self,
        component: &ComponentId,
        percent: u8,
        weights: &TrafficWeights,
        reason: &str,
    ) -> Result<Applied, Rejection> {
        let to = ShadowState::Shifting { weight: percent };
        let service = self
            .components
            .get(component)
            .ok_or_else(|| Rejection::UnknownComponent {
                id: component.to_string(),
            })?
            .group
            .clone();
        let rec = self.shadow_of(component)?;
        if !rec.state.may_become(to) {
            return Err(Rejection::IllegalShadowTransition {
                component: component.to_string(),
                from: rec.state.to_string(),
                to: to.to_string(),
            });
        }
        if !weights.contains_key(&rec.shadow) {
            return Err(invalid(format!(
                "the weights of step {percent}% do not name the shadow {}",
                rec.shadow
            )));
        }
        let now = self.weights.get(&service).cloned().unwrap_or_default();
        let shift = match &rec.shift {
            Some(s) => ShiftRecord {
                verified: now,
                ..s.clone()
            },
            None => ShiftRecord {
                service: service.clone(),
                before: now.clone(),
                verified: now,
            },
        };
        self.set_weights(&service, weights)?;
        self.shadows
            .update(component, |rec| {
                rec.state = to;
                rec.history.push((to, reason.to_string()));
                rec.shift = Some(shift);
            })
            .expect("checked above");
        Ok(Applied::Done)
    }

    /// Ends a shift: back to the last verified weights, or, when the shadow died, to the
    /// weights before the shift (a dead shadow keeps no share).
    fn roll_back_shift(
        &mut self,
        component: &ComponentId,
        shadow_dead: bool,
        reason: &str,
    ) -> Result<Applied, Rejection> {
        let rec = self.shadow_of(component)?;
        let (Some(shift), ShadowState::Shifting { .. }) = (&rec.shift, rec.state) else {
            return Err(Rejection::IllegalShadowTransition {
                component: component.to_string(),
                from: rec.state.to_string(),
                to: ShadowState::RolledBack.to_string(),
            });
        };
        let from = if shadow_dead {
            &shift.before
        } else {
            &shift.verified
        };
        // Only this pair goes back: other shifts in the service move their own pairs, and a
        // rollback must not undo them. Should the pair not fit any more (weights set by hand
        // meanwhile), the whole service goes back, if every member it names is still
        // registered in the service; else the shadow's share as it is now goes to the
        // original (which cannot have left the service while its shadow is in flight).
        let now = self
            .weights
            .get(&shift.service)
            .cloned()
            .unwrap_or_default();
        let in_service = |id: &ComponentId| {
            self.components
                .get(id)
                .is_some_and(|c| c.group == shift.service)
        };
        let fits = |w: &TrafficWeights| {
            w.values().map(|&v| u64::from(v)).sum::<u64>() == WEIGHT_TOTAL
                && w.keys().all(in_service)
        };
        let mut back = now.clone();
        for id in [component, &rec.shadow] {
            match from.get(id) {
                Some(&w) => back.insert(id.clone(), w),
                None => back.remove(id),
            };
        }
        if !fits(&back) {
            back = if fits(from) {
                from.clone()
            } else {
                // Members that left meanwhile carry no share (one that does can neither be
                // removed nor change service): they are dropped.
                let mut w = now.clone();
                let share = w.remove(&rec.shadow).unwrap_or(0);
                *w.entry(component.clone()).or_insert(0) += share;
                w.retain(|id, _| in_service(id));
                w
            };
        }
        let service = shift.service.clone();
        self.weights.insert(service, back);
        self.shadows
            .update(component, |rec| {
                rec.state = ShadowState::RolledBack;
                rec.history
                    .push((ShadowState::RolledBack, reason.to_string()));
            })
            .expect("checked above");
        Ok(Applied::Done)
    }

    fn append_action(
        &mut self,
        term: u64,
        request_id: &str,
        kind: ActionKind,
        target: &ComponentId,
        params: &BTreeMap<String, String>,
        at_ms: u64,
    ) -> Result<Applied, Rejection> {
        if request_id.is_empty() || request_id.len() > 256 {
            return Err(invalid(format!(
                "request id must be 1..=256 bytes, got {}",
                request_id.len()
            )));
        }
        if let Some(&seq) = self.request_index.get(request_id) {
            let id = self
                .action(seq)
                .map(|a| a.id)
                .expect("indexed action exists");
            return Ok(Applied::Action {
                id,
                duplicate: true,
            });
        }
        if !self.components.contains_key(target) {
            return Err(Rejection::UnknownComponent {
                id: target.to_string(),
            });
        }
        if params.len() > MAX_ACTION_PARAMS {
            return Err(invalid(format!(
                "action has {} params; at most {MAX_ACTION_PARAMS}",
                params.len()
            )));
        }
        let id = ActionId {
            term,
            seq: self.last_action_seq() + 1,
        };
        self.actions.push(Action {
            id,
            request_id: request_id.to_string(),
            kind,
            target: target.clone(),
            params: params.clone(),
            created_ms: at_ms,
            status: ActionStatus::Pending,
            kpis: None,
            claim: None,
            lapses: 0,
            offered_ms: None,
        });
        self.request_index.insert(request_id.to_string(), id.seq);
        Ok(Applied::Action {
            id,
            duplicate: false,
        })
    }

    pub(crate) fn action_mut(&mut self, id: &ActionId) -> Result<&mut Action, Rejection> {
        id.seq
            .checked_sub(1)
            .and_then(|i| self.actions.get_mut(i as usize))
            .filter(|a| a.id == *id)
            .ok_or_else(|| Rejection::UnknownAction { id: id.to_string() })
    }

    fn report_outcome(
        &mut self,
        id: &ActionId,
        orchestrator: &str,
        outcome: &ActionOutcome,
        kpis: Option<&Kpis>,
        at_ms: u64,
    ) -> Result<Applied, Rejection> {
        let action = self.action_mut(id)?;
        match &action.status {
            ActionStatus::Pending => {
                // While another orchestrator holds it, only that one reports.
                action.check_holder(orchestrator, at_ms)?;
                action.claim = None;
                action.status = ActionStatus::Done {
                    orchestrator: orchestrator.to_string(),
                    outcome: outcome.clone(),
                    at_ms,
                };
                action.kpis = kpis.copied();
                Ok(Applied::Done)
            }
            ActionStatus::Done {
                outcome: previous, ..
            } if previous == outcome => Ok(Applied::Done),
            done => Err(Rejection::OutcomeConflict {
                id: id.to_string(),
                previous: done.to_string(),
            }),
        }
    }
}

fn invalid(e: impl fmt::Display) -> Rejection {
    Rejection::InvalidInput {
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn cid(s: &str) -> ComponentId {
        ComponentId::new(s).unwrap()
    }

    fn component(id: &str, group: &str, host: &str) -> Component {
        crate::fixtures::component(id, group, host, "z1")
    }

    fn state_with(ids: &[&str]) -> ControlState {
        let mut s = ControlState::default();
        for id in ids {
            s.apply(1, &Command::UpsertComponent(component(id, "web", "h1")))
                .unwrap();
        }
        s
    }

    fn weights(pairs: &[(&str, u32)]) -> TrafficWeights {
        pairs.iter().map(|(k, v)| (cid(k), *v)).collect()
    }

    #[test]
    fn id_changes_name_what_came_and_went_until_the_history_runs_out() {
        let mut s = state_with(&["a", "b"]);
        let start = s.id_cursor();
        assert_eq!(s.id_changes_since(start), Some(vec![]));
        // An update of a known id is no change of the set.
        s.apply(1, &Command::UpsertComponent(component("a", "web", "h2")))
            .unwrap();
        s.apply(1, &Command::UpsertComponent(component("c", "web", "h1")))
            .unwrap();
        s.apply(1, &Command::RemoveComponent { id: cid("b") })
            .unwrap();
        // A rejected command records nothing.
        s.apply(1, &Command::RemoveComponent { id: cid("zz") })
            .unwrap_err();
        assert_eq!(
            s.id_changes_since(start),
            Some(vec![(cid("c"), true), (cid("b"), false)])
        );
        assert_eq!(s.id_changes_since(s.id_cursor()), Some(vec![]));
        // Another state value (a restore) is another epoch: read the whole set.
        let restored: ControlState =
            serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(restored, s);
        assert_eq!(restored.id_changes_since(start), None);
        assert_eq!(s.id_changes_since((start.0, start.1 + 100)), None);
        // Beyond what is kept: the whole set.
        for i in 0..ID_CHANGES_KEPT {
            s.id_changes.record(&cid(&format!("x{i}")), true);
        }
        assert_eq!(s.id_changes_since(start), None);
    }

    /// What applying a topology answers, for the assertions below.
    fn topology_applied(withdrawn: u32, edges_removed: u32) -> Result<Applied, Rejection> {
        Ok(Applied::Topology {
            withdrawn,
            edges_removed,
        })
    }

    #[test]
    fn a_topology_is_applied_whole_or_not_at_all_and_withdraws_what_it_no_longer_declares() {
        use augur_graph::{EdgeSource, EdgeUpdate, Observation};
        let dep = |from: &str, to: &str| EdgeUpdate {
            from: from.into(),
            to: to.into(),
            observation: Observation::new(EdgeSource::Declared, 1.0, 5),
        };
        let host = |name: &str, capacity| Host {
            placement: Placement {
                host: name.into(),
                rack: "r1".into(),
                zone: "z1".into(),
            },
            capacity,
        };
        let topo = |hosts, components, edges| Command::ApplyTopology {
            hosts,
            components,
            edges,
        };
        // "other" is on h1 already, from outside the file.
        let mut s = state_with(&["other"]);
        s.apply(
            1,
            &Command::UpsertEdges(vec![EdgeUpdate {
                from: "a".into(),
                to: "c".into(),
                observation: Observation::new(EdgeSource::Trace, 1.0, 5),
            }]),
        )
        .unwrap();
        let first = topo(
            vec![host("h1", 3)],
            vec![component("a", "web", "h1"), component("b", "web", "h1")],
            vec![dep("a", "b"), dep("a", "c"), dep("b", "c")],
        );
        assert_eq!(s.apply(1, &first), topology_applied(0, 0));
        assert_eq!(s.components.len(), 3);
        assert_eq!(s.edges.len(), 3);

        // A file that would put a fourth component on h1 (capacity 3, "other" counted) is
        // refused whole: no host, component or edge of it is recorded.
        let before = s.clone();
        let full = topo(
            vec![host("h2", 10)],
            vec![
                component("a", "web", "h1"),
                component("b", "web", "h1"),
                component("d", "web", "h1"),
            ],
            vec![dep("a", "b"), dep("a", "c"), dep("b", "c"), dep("d", "a")],
        );
        assert_eq!(
            s.apply(1, &full),
            Err(Rejection::HostFull {
                host: "h1".into(),
                capacity: 3
            })
        );
        assert_eq!(s, before);
        // Raising h1's capacity in the same file lets it through.
        let mut roomy = full.clone();
        if let Command::ApplyTopology { hosts, .. } = &mut roomy {
            hosts.push(host("h1", 4));
        }
        assert_eq!(s.apply(1, &roomy), topology_applied(0, 0));
        assert_eq!(s.components.len(), 4);
        assert_eq!(s.edges.len(), 4);
        assert_eq!(s.hosts["h1"].capacity, 4);

        // The file speaks for its components' dependencies: a -> b and b -> c were declared
        // and are no longer. a -> c keeps its trace observation; the others go. "d" is not in
        // this file, so its declared d -> a stays.
        let second = topo(
            vec![],
            vec![component("a", "web", "h2"), component("b", "web", "h2")],
            vec![dep("b", "a")],
        );
        assert_eq!(s.apply(1, &second), topology_applied(3, 2));
        let mut left: Vec<(String, String, usize)> = s
            .edges
            .iter()
            .map(|((f, t), e)| (f.clone(), t.clone(), e.observations.len()))
            .collect();
        left.sort();
        assert_eq!(
            left,
            vec![
                ("a".into(), "c".into(), 1),
                ("b".into(), "a".into(), 1),
                ("d".into(), "a".into(), 1)
            ]
        );
        assert!(!s.edges[&("a".into(), "c".into())]
            .observations
            .contains_key(&EdgeSource::Declared));

        // Bad files name what is wrong and change nothing.
        let before = s.clone();
        for (bad, says) in [
            (
                topo(
                    vec![],
                    vec![component("a", "web", "h2")],
                    vec![dep("x", "a")],
                ),
                "x is not a component of this topology",
            ),
            (
                topo(
                    vec![],
                    vec![component("a", "web", "h2"), component("a", "web", "h2")],
                    vec![],
                ),
                "component a twice",
            ),
            (
                topo(vec![host("h9", 1), host("h9", 2)], vec![], vec![]),
                "host h9 twice",
            ),
            (
                topo(
                    vec![],
                    vec![component("a", "web", "h2")],
                    vec![dep("a", "b"), dep("a", "b")],
                ),
                "a -> b twice",
            ),
        ] {
            let err = s.apply(1, &bad).unwrap_err().to_string();
            assert!(err.contains(says), "{err}");
            assert_eq!(s, before);
        }
    }

    #[test]
    fn edges_are_upserted_all_or_none_and_fade_with_a_log() {
        use augur_graph::{EdgeSource, EdgeUpdate, Observation};
        let u = |from: &str, to: &str, source, strength, at| EdgeUpdate {
            from: from.into(),
            to: to.into(),
            observation: Observation::new(source, strength, at),
        };
        let mut s = ControlState::default();
        let bad = Command::UpsertEdges(vec![
            u("a", "b", EdgeSource::Trace, 1.0, 10),
            u("b", "c", EdgeSource::Trace, 1.5, 10),
        ]);
        let err = s.apply(1, &bad).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid input: edge b -> c has strength 1.5; it must be within [0, 1]"
        );
        assert!(s.edges.is_empty());
        let ok = Command::UpsertEdges(vec![
            u("a", "b", EdgeSource::Trace, 1.0, 10),
            u("a", "b", EdgeSource::Declared, 1.0, 0),
            u("b", "c", EdgeSource::Flow, 1.0, 10),
        ]);
        s.apply(1, &ok).unwrap();
        assert_eq!(s.edges.len(), 2);
        let faded = s
            .apply(
                1,
                &Command::FadeEdges {
                    now_ms: 100,
                    ttl_ms: 50,
                },
            )
            .unwrap();
        assert_eq!(faded, Applied::Faded { observations: 2 });
        // The declared observation keeps a -> b; b -> c had only a flow and is gone.
        assert_eq!(s.edges.len(), 1);
        let log: Vec<(&str, bool)> = s
            .faded
            .iter()
            .map(|f| (f.to.as_str(), f.edge_removed))
            .collect();
        assert_eq!(log, vec![("b", false), ("c", true)]);
        // At the cap, a batch with a new edge is refused whole; updates of known edges pass.
        let mut full = ControlState::default();
        for i in 0..MAX_EDGES {
            full.edges
                .insert((format!("n{i}"), "z".into()), Default::default());
        }
        let known = Command::UpsertEdges(vec![u("n1", "z", EdgeSource::Trace, 1.0, 10)]);
        full.apply(1, &known).unwrap();
        let more = Command::UpsertEdges(vec![
            u("n2", "z", EdgeSource::Trace, 1.0, 10),
            u("new", "z", EdgeSource::Trace, 1.0, 10),
        ]);
        let err = full.apply(1, &more).unwrap_err().to_string();
        assert!(err.contains("at most 100000"), "{err}");
        assert_eq!(full.edges.len(), MAX_EDGES);
        assert!(full.edges[&("n2".to_string(), "z".to_string())]
            .observations
            .is_empty());
        let g = s.dependency_graph();
        assert_eq!(g.callees("a"), vec!["b"]);
        assert!(g.node("a").unwrap().virtual_peer);
    }

    #[test]
    fn weights_must_sum_to_100_and_name_known_members() {
        let mut s = state_with(&["a", "b"]);
        let before = s.clone();
        let bad = Command::SetWeights {
            service: "web".into(),
            weights: weights(&[("a", 60), ("b", 30)]),
        };
        assert_eq!(
            s.apply(1, &bad).unwrap_err().to_string(),
            "weights of service web sum to 90, not 100"
        );
        let unknown = Command::SetWeights {
            service: "web".into(),
            weights: weights(&[("zz", 100)]),
        };
        assert_eq!(
            s.apply(1, &unknown).unwrap_err().to_string(),
            "unknown component zz"
        );
        assert_eq!(s, before, "a rejected command changes nothing");
        let ok = Command::SetWeights {
            service: "web".into(),
            weights: weights(&[("a", 60), ("b", 40)]),
        };
        s.apply(1, &ok).unwrap();
        let rm = Command::RemoveComponent { id: cid("a") };
        assert!(matches!(
            s.apply(1, &rm),
            Err(Rejection::ComponentInUse { .. })
        ));
        // Drained to 0, it can go, and the service's weights stop naming it: the weights
        // left are ones a later `SetWeights` can carry on from.
        let drained = Command::SetWeights {
            service: "web".into(),
            weights: weights(&[("a", 0), ("b", 100)]),
        };
        s.apply(1, &drained).unwrap();
        s.apply(1, &rm).unwrap();
        assert_eq!(s.weights["web"], weights(&[("b", 100)]));
        let again = Command::SetWeights {
            service: "web".into(),
            weights: s.weights["web"].clone(),
        };
        s.apply(1, &again).unwrap();
    }

    #[test]
    fn hosts_cap_components() {
        let mut s = ControlState::default();
        let host = Host {
            placement: Placement {
                host: "h1".into(),
                rack: "r1".into(),
                zone: "z1".into(),
            },
            capacity: 1,
        };
        s.apply(1, &Command::UpsertHost(host)).unwrap();
        s.apply(1, &Command::UpsertComponent(component("a", "web", "h1")))
            .unwrap();
        // Re-registering the same component does not count against the host twice.
        s.apply(1, &Command::UpsertComponent(component("a", "web", "h1")))
            .unwrap();
        let err = s
            .apply(1, &Command::UpsertComponent(component("b", "web", "h1")))
            .unwrap_err();
        assert_eq!(err.to_string(), "host h1 is full: capacity 1");
    }

    /// Whether a host has room, decided by counting every component (what the per-host count
    /// replaced): `Err(host)` when `placed`, laid over the state, overfills a recorded host.
    fn brute_room(s: &ControlState, placed: &[Component]) -> Result<(), String> {
        let mut all: BTreeMap<&ComponentId, &Component> = s.components.iter().collect();
        for c in placed {
            all.insert(&c.id, c);
        }
        for c in placed {
            let Some(h) = s.hosts.get(&c.placement.host) else {
                continue;
            };
            let n = all
                .values()
                .filter(|o| o.placement.host == c.placement.host)
                .count();
            if n as u64 > u64::from(h.capacity) {
                return Err(c.placement.host.clone());
            }
        }
        Ok(())
    }

    proptest! {
        /// Upserts, removals and topology files over a few small hosts: every room decision
        /// is the brute-force count's, and the count per host stays exact.
        #[test]
        fn host_room_from_the_count_decides_as_counting_every_component_does(
            ops in prop::collection::vec((0u8..3, 0usize..8, 0usize..4, 0usize..8, 0usize..4), 1..60),
        ) {
            let mut s = ControlState::default();
            for (h, cap) in [("h0", 2), ("h1", 3), ("h2", 1)] {
                let host = Host {
                    placement: Placement { host: h.into(), rack: "r1".into(), zone: "z1".into() },
                    capacity: cap,
                };
                s.apply(1, &Command::UpsertHost(host)).unwrap();
            }
            // h3 is no recorded host: no capacity to keep.
            let on = |id: usize, host: usize| component(&format!("c{id}"), "web", &format!("h{host}"));
            for (kind, a, ha, b, hb) in ops {
                let (cmd, placed) = match kind {
                    0 => (Command::UpsertComponent(on(a, ha)), vec![on(a, ha)]),
                    1 => (Command::RemoveComponent { id: cid(&format!("c{a}")) }, vec![]),
                    _ if a == b => continue,
                    _ => {
                        let cs = vec![on(a, ha), on(b, hb)];
                        let cmd = Command::ApplyTopology { hosts: vec![], components: cs.clone(), edges: vec![] };
                        (cmd, cs)
                    }
                };
                let want = brute_room(&s, &placed);
                let got = s.apply(1, &cmd);
                match (&want, &got) {
                    (Err(h), Err(Rejection::HostFull { host, .. })) => prop_assert_eq!(h, host),
                    (Ok(()), Err(Rejection::UnknownComponent { .. })) if kind == 1 => {}
                    (Ok(()), Ok(_)) => {}
                    _ => prop_assert!(false, "{cmd:?}: brute force {want:?}, applied {got:?}"),
                }
                for h in ["h0", "h1", "h2", "h3"] {
                    let n = s.components.values().filter(|c| c.placement.host == h).count();
                    prop_assert_eq!(s.components.on_host(h), n as u64);
                }
            }
        }
    }

    #[test]
    fn action_ids_are_term_fenced_monotonic_and_idempotent() {
        let mut s = state_with(&["a"]);
        let append = |rid: &str| Command::AppendAction {
            request_id: rid.into(),
            kind: ActionKind::Drain,
            target: cid("a"),
            params: BTreeMap::new(),
            at_ms: 5,
        };
        let first = s.apply(2, &append("r1")).unwrap();
        assert_eq!(
            first,
            Applied::Action {
                id: ActionId { term: 2, seq: 1 },
                duplicate: false
            }
        );
        let again = s.apply(3, &append("r1")).unwrap();
        assert_eq!(
            again,
            Applied::Action {
                id: ActionId { term: 2, seq: 1 },
                duplicate: true
            }
        );
        let second = s.apply(3, &append("r2")).unwrap();
        assert_eq!(
            second,
            Applied::Action {
                id: ActionId { term: 3, seq: 2 },
                duplicate: false
            }
        );

        let report = |id, outcome| Command::ReportOutcome {
            kpis: None,
            id,
            orchestrator: "o1".into(),
            outcome,
            at_ms: 9,
        };
        let id = ActionId { term: 2, seq: 1 };
        s.apply(3, &report(id, ActionOutcome::Succeeded)).unwrap();
        s.apply(3, &report(id, ActionOutcome::Succeeded)).unwrap();
        let conflict = s.apply(3, &report(id, ActionOutcome::Failed { reason: "x".into() }));
        assert!(matches!(conflict, Err(Rejection::OutcomeConflict { .. })));
        // A stale id (wrong term for that seq) is unknown, not silently accepted.
        let stale = s.apply(
            3,
            &report(ActionId { term: 1, seq: 1 }, ActionOutcome::Succeeded),
        );
        assert!(matches!(stale, Err(Rejection::UnknownAction { .. })));
    }

    #[test]
    fn one_shadow_in_flight_and_legal_transitions_only() {
        let mut s = state_with(&["a", "a-s"]);
        let place = Placement {
            host: "h2".into(),
            rack: "r2".into(),
            zone: "z2".into(),
        };
        let req = Command::RequestShadow {
            component: cid("a"),
            shadow: cid("a-s"),
            placement: place,
            reason: String::new(),
        };
        s.apply(1, &req).unwrap();
        assert!(matches!(
            s.apply(1, &req),
            Err(Rejection::ShadowInFlight { .. })
        ));
        // Nor may the shadow in flight get one of its own.
        let of_shadow = Command::RequestShadow {
            component: cid("a-s"),
            shadow: cid("a-s-s"),
            placement: Placement {
                host: "h2".into(),
                rack: "r2".into(),
                zone: "z2".into(),
            },
            reason: String::new(),
        };
        assert_eq!(
            s.apply(1, &of_shadow).unwrap_err().to_string(),
            "component a already has a shadow in flight (a-s)"
        );
        let adv = |to| Command::AdvanceShadow {
            component: cid("a"),
            to,
            reason: "t".into(),
        };
        let err = s.apply(1, &adv(ShadowState::Promoted)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "shadow of a cannot go from requested to promoted"
        );
        for to in [
            ShadowState::Provisioned,
            ShadowState::Syncing,
            ShadowState::Validating,
            ShadowState::Shifting { weight: 5 },
        ] {
            s.apply(1, &adv(to)).unwrap();
        }
        assert!(s
            .apply(1, &adv(ShadowState::Shifting { weight: 1 }))
            .is_err());
        s.apply(1, &adv(ShadowState::RolledBack)).unwrap();
        // Rolled back but not retired: still tracked, so no new shadow replaces its record.
        assert_eq!(
            s.apply(1, &req).unwrap_err().to_string(),
            "component a's shadow a-s is rolledback and not retired yet (a promoted shadow took \
             its place; a rolled-back one is retired once it carries no traffic)"
        );
        s.apply(1, &adv(ShadowState::Retired)).unwrap();
        s.apply(1, &req).unwrap();
    }

    /// A rollback whose pair no longer fits (weights set by hand meanwhile) never puts back a
    /// member removed since: the service's old weights when all of them are still there, else
    /// the shadow's share handed to the original.
    #[test]
    fn a_rollback_never_routes_to_a_component_removed_since() {
        let start = || {
            let mut s = state_with(&["a", "b", "a-s"]);
            s.apply(
                1,
                &Command::SetWeights {
                    service: "web".into(),
                    weights: weights(&[("a", 50), ("b", 50)]),
                },
            )
            .unwrap();
            let req = Command::RequestShadow {
                component: cid("a"),
                shadow: cid("a-s"),
                placement: Placement {
                    host: "h2".into(),
                    rack: "r2".into(),
                    zone: "z2".into(),
                },
                reason: String::new(),
            };
            s.apply(1, &req).unwrap();
            for to in [
                ShadowState::Provisioned,
                ShadowState::Syncing,
                ShadowState::Validating,
            ] {
                let adv = Command::AdvanceShadow {
                    component: cid("a"),
                    to,
                    reason: "t".into(),
                };
                s.apply(1, &adv).unwrap();
            }
            let step = Command::ShiftTraffic {
                component: cid("a"),
                percent: 10,
                weights: weights(&[("a", 45), ("b", 45), ("a-s", 10)]),
                reason: "t".into(),
            };
            s.apply(1, &step).unwrap();
            // By hand: b drained, then removed.
            let by_hand = Command::SetWeights {
                service: "web".into(),
                weights: weights(&[("a", 89), ("b", 0), ("a-s", 11)]),
            };
            s.apply(1, &by_hand).unwrap();
            s
        };
        let roll_back = |shadow_dead| Command::RollBackShift {
            component: cid("a"),
            shadow_dead,
            reason: "gate failed".into(),
        };
        // b still registered: the service goes back to its weights before the shift.
        let mut s = start();
        s.apply(1, &roll_back(true)).unwrap();
        assert_eq!(s.weights["web"], weights(&[("a", 50), ("b", 50)]));
        // b removed: the shadow's 11 go to a, b is not routed to again.
        let mut s = start();
        s.apply(1, &Command::RemoveComponent { id: cid("b") })
            .unwrap();
        s.apply(1, &roll_back(true)).unwrap();
        assert_eq!(s.weights["web"], weights(&[("a", 100)]));
        // b moved to another service meanwhile: the same, and it keeps no share in "web".
        let mut s = start();
        s.apply(1, &Command::UpsertComponent(component("b", "other", "h1")))
            .unwrap();
        s.apply(1, &roll_back(true)).unwrap();
        assert_eq!(s.weights["web"], weights(&[("a", 100)]));
        // The original cannot leave its service while its shadow is in flight, even drained.
        let mut s = start();
        let drained = Command::SetWeights {
            service: "web".into(),
            weights: weights(&[("a", 0), ("b", 89), ("a-s", 11)]),
        };
        s.apply(1, &drained).unwrap();
        let err = s
            .apply(1, &Command::UpsertComponent(component("a", "other", "h1")))
            .unwrap_err();
        assert!(matches!(err, Rejection::ShadowInFlight { .. }), "{err}");
        s.apply(
            1,
            &Command::SetWeights {
                service: "web".into(),
                weights: s.weights["web"].clone(),
            },
        )
        .unwrap();
    }

    #[test]
    fn the_model_record_is_validated_and_replaced_by_another_version() {
        let mut s = ControlState::default();
        let m = |v: &str, n: usize| {
            Command::SetModel(ModelRecord {
                version: v.into(),
                bytes: vec![7; n],
            })
        };
        for bad in [
            m("", 10),
            m("has space", 10),
            m("v1", 0),
            m("v1", MAX_MODEL_BYTES + 1),
        ] {
            assert!(s.apply(1, &bad).is_err(), "{bad:?}");
            assert_eq!(s.model, None);
        }
        s.apply(1, &m("lstm-8x32-aaaa", 10)).unwrap();
        s.apply(1, &m("lstm-8x32-aaaa", 20)).unwrap(); // same version: unchanged
        assert_eq!(s.model.as_ref().unwrap().bytes.len(), 10);
        s.apply(1, &m("lstm-8x32-bbbb", 30)).unwrap();
        assert_eq!(s.model.as_ref().unwrap().version, "lstm-8x32-bbbb");
    }

    #[test]
    fn snapshot_round_trip_keeps_idempotency_index() {
        let mut s = state_with(&["a"]);
        let append = Command::AppendAction {
            request_id: "r1".into(),
            kind: ActionKind::Drain,
            target: cid("a"),
            params: BTreeMap::new(),
            at_ms: 1,
        };
        s.apply(1, &append).unwrap();
        let mut back: ControlState =
            serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        back.reindex();
        assert!(matches!(
            back.apply(2, &append),
            Ok(Applied::Action {
                duplicate: true,
                ..
            })
        ));
    }

    #[test]
    fn a_batch_applies_each_command_on_its_own() {
        let mut s = state_with(&["a"]);
        let batch = Command::Batch(vec![
            Command::UpsertComponent(component("b", "web", "h1")),
            Command::RemoveComponent { id: cid("ghost") },
            Command::SetWeights {
                service: "web".into(),
                weights: weights(&[("a", 50), ("b", 50)]),
            },
        ]);
        let Applied::Batch(results) = s.apply(1, &batch).unwrap() else {
            panic!("batch answer")
        };
        assert_eq!(results.len(), 3);
        assert_eq!(results[0], Ok(Applied::Done));
        assert_eq!(
            results[1],
            Err(Rejection::UnknownComponent { id: "ghost".into() })
        );
        assert_eq!(results[2], Ok(Applied::Done));
        let nested = Command::Batch(vec![Command::Batch(vec![])]);
        let before = s.clone();
        assert!(matches!(
            s.apply(1, &nested),
            Err(Rejection::InvalidInput { .. })
        ));
        assert_eq!(s, before);
    }

    proptest! {
        /// Whatever sequence of weight updates arrives, every stored split sums to 100.
        #[test]
        fn stored_weights_always_sum_to_100(splits in proptest::collection::vec(
            proptest::collection::vec(0u32..120, 1..4), 1..20)) {
            let mut s = state_with(&["a", "b", "c"]);
            let names = ["a", "b", "c"];
            for split in splits {
                let w: TrafficWeights = split.iter().enumerate().map(|(i, v)| (cid(names[i]), *v)).collect();
                let before = s.clone();
                let r = s.apply(1, &Command::SetWeights { service: "web".into(), weights: w });
                if r.is_err() { prop_assert_eq!(&s, &before); }
                for w in s.weights.values() {
                    prop_assert_eq!(w.values().map(|&v| u64::from(v)).sum::<u64>(), 100);
                }
            }
        }
    }
}

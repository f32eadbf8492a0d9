//! Preemptive failover: which components to move before they fail, where, and whether to act
//! or only recommend. A component is moved when its P(fail) reaches the action threshold its
//! blast radius and group policy give (a larger blast radius: a lower threshold); the most
//! urgent go first (lowest Health Projection Score, then largest blast radius), each taking
//! a slot so no host is ever planned over its capacity.

use std::collections::{BTreeMap, BTreeSet};

use augur_graph::{action_threshold, RiskPolicy};
pub use augur_types::Severity;
use augur_types::{
    ApprovalMode, ComponentId, ControlState, Placement, PlanStatus, Policy, ShadowState,
};
use serde::Serialize;

use crate::placement::{choose_host, domain_tier, host_risk, Occupancy, Tier};

/// What the planner knows of a component's future.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ComponentRisk {
    /// P(fail within 1 h).
    pub p_fail: f64,
    /// Health Projection Score, 0..=100, lower is riskier.
    pub hps: f64,
    /// Criticality-weighted share of entry points its failure reaches, 0..=1.
    pub blast_radius: f64,
}

/// Carry the decision out, or only recommend it and wait for an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Act,
    Recommend,
}

impl Mode {
    /// The name on the wire and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Act => "act",
            Mode::Recommend => "recommend",
        }
    }
}

/// Planner settings beyond the group policies.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PlannerConfig {
    /// Decisions below this severity are only recommended, whatever the policy says.
    pub act_from: Severity,
    /// Bounds of the action threshold (see [`RiskPolicy`]).
    pub min_probability: f64,
    pub max_probability: f64,
}

impl Default for PlannerConfig {
    fn default() -> Self {
        let d = RiskPolicy::default();
        Self {
            act_from: Severity::Elevated,
            min_probability: d.min_probability,
            max_probability: d.max_probability,
        }
    }
}

/// A group policy as the risk rules read it: its tolerance (0..=100) as a share.
pub fn risk_policy(policy: &Policy, cfg: &PlannerConfig) -> RiskPolicy {
    RiskPolicy {
        risk_tolerance: f64::from(policy.risk_tolerance) / 100.0,
        min_probability: cfg.min_probability,
        max_probability: cfg.max_probability,
    }
}

/// The P(fail) at which a component of this blast radius, governed by `policy`, is moved.
pub fn threshold(blast_radius: f64, policy: &Policy, cfg: &PlannerConfig) -> f64 {
    action_threshold(blast_radius, &risk_policy(policy, cfg))
}

/// One component to move, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub component: ComponentId,
    /// Where its shadow goes; `None` when no other host has room (nothing can be done).
    pub to: Option<Placement>,
    pub tier: Option<Tier>,
    pub severity: Severity,
    pub mode: Mode,
    pub p_fail: f64,
    pub threshold: f64,
    pub hps: f64,
    pub blast_radius: f64,
    pub reason: String,
}

/// A dependent co-located with a component (same host) follows it when it moves, if it
/// depends on it at least this strongly: co-location says they were placed together on
/// purpose (a sidecar, a local cache), and left behind every call would cross hosts or zones.
pub const FOLLOW_STRENGTH: f64 = 0.8;

/// How long a shadow or new instance is left alone after its plan started, ms (see
/// [`recently_started`]).
pub const FRESH_HOLD_MS: u64 = 120_000;

/// The shadows and new instances whose plan (a failover or a scale-out) started less than
/// `hold_ms` before `now_ms`. Their telemetry is a few seconds old and was taken while traffic
/// moved onto them, so a prediction about them is not acted on yet: the anti-flapping hold of
/// failover managers (orchestrator blocks a second recovery of the same cluster for a while).
/// A crash is still the health checks' to handle, and an operator can still move them.
pub fn recently_started(state: &ControlState, now_ms: u64, hold_ms: u64) -> BTreeSet<ComponentId> {
    state
        .plans
        .values()
        .filter_map(|p| {
            let started = p.history.iter().find(|e| e.status == PlanStatus::Started)?;
            let shadow = p.shadow.as_ref()?;
            (started.at_ms.saturating_add(hold_ms) > now_ms).then(|| shadow.clone())
        })
        .collect()
}

/// A hold for the other instances of a group after a plan in it started, ms (see
/// [`settling_siblings`]); the node's `planner.settle_hold_ms` is 0 (off) unless set. In the
/// side-by-side run of 2026-12-06 a 20 s hold did not prevent the one false shift (a healthy
/// instance moved before any fault, on its own prediction) and held a real degradation that
/// followed within it back by ~10 s.
pub const SETTLE_HOLD_MS: u64 = 20_000;

/// The instances of every group in which a plan (a failover or a scale-out) started less
/// than `hold_ms` before `now_ms`, other than the plan's own component and its shadow or new
/// instance (those are [`recently_started`]'s). While a plan shifts a group's traffic, its
/// other instances take the moved share and their hosts run the new process and its
/// validation, so their latency moves together; a prediction made of that is not acted on
/// until the group has settled: orchestrator's recovery block on the rest of a cluster after
/// a recovery in it. A second instance that really degrades in that time is planned once the
/// hold ends (its health checks still act at once if it crashes).
pub fn settling_siblings(state: &ControlState, now_ms: u64, hold_ms: u64) -> BTreeSet<ComponentId> {
    let mut held = BTreeSet::new();
    for p in state.plans.values() {
        let Some(started) = p.history.iter().find(|e| e.status == PlanStatus::Started) else {
            continue;
        };
        if started.at_ms.saturating_add(hold_ms) <= now_ms {
            continue;
        }
        let moved = [Some(&p.component), p.shadow.as_ref(), p.template.as_ref()];
        let Some(group) = moved
            .iter()
            .flatten()
            .find_map(|id| state.components.get(*id).map(|c| &c.group))
        else {
            continue;
        };
        held.extend(
            state
                .components
                .values()
                .filter(|c| &c.group == group)
                .filter(|c| Some(&c.id) != Some(&p.component) && Some(&c.id) != p.shadow.as_ref())
                .map(|c| c.id.clone()),
        );
    }
    held
}

/// The failovers to start now, most urgent first. Components with a shadow not yet retired
/// (in flight, rolled back, or promoted) and those with no known risk are left alone. Each placed shadow takes a slot of its host
/// before the next is placed, so the plan never exceeds any host's capacity.
pub fn plan_failovers(
    state: &ControlState,
    risks: &BTreeMap<ComponentId, ComponentRisk>,
    cfg: &PlannerConfig,
) -> Vec<Decision> {
    let mut due: Vec<(&ComponentId, ComponentRisk, f64)> = Vec::new();
    for (id, r) in risks {
        let Some(c) = state.components.get(id) else {
            continue;
        };
        // One shadow at a time: until its shadow is retired, a component is not planned again.
        if state
            .shadows
            .get(id)
            .is_some_and(|s| s.state != ShadowState::Retired)
        {
            continue;
        }
        if !(r.p_fail.is_finite() && r.hps.is_finite() && r.blast_radius.is_finite()) {
            continue;
        }
        let policy = state.policy_for(&c.group);
        let threshold = threshold(r.blast_radius, &policy, cfg);
        if r.p_fail >= threshold {
            due.push((id, *r, threshold));
        }
    }
    due.sort_by(|a, b| {
        a.1.hps
            .total_cmp(&b.1.hps)
            .then(b.1.blast_radius.total_cmp(&a.1.blast_radius))
            .then_with(|| a.0.cmp(b.0))
    });
    // A host is as risky as the riskiest thing running on it.
    let host_risk = host_risk(state, risks);
    let mut occupancy = Occupancy::of(state);
    let mut out = Vec::with_capacity(due.len());
    for (id, r, threshold) in due {
        let c = &state.components[id];
        let policy = state.policy_for(&c.group);
        let severity = if r.p_fail >= 0.9 {
            Severity::Critical
        } else if c.criticality >= 4 || r.blast_radius >= 0.5 {
            Severity::High
        } else {
            Severity::Elevated
        };
        let mode = if policy.approval == ApprovalMode::Recommend || severity < cfg.act_from {
            Mode::Recommend
        } else {
            Mode::Act
        };
        let host = choose_host(&state.hosts, &c.placement, &occupancy, |h| {
            host_risk.get(h).copied().unwrap_or(0.0)
        });
        let to = host.map(|h| h.placement.clone());
        if let Some(p) = &to {
            occupancy.take(&p.host);
        }
        let tier = to.as_ref().map(|p| domain_tier(&c.placement, p));
        let reason = match &to {
            Some(p) => format!(
                "P(fail within 1 h) {:.3} ≥ threshold {:.3} (blast radius {:.3}, HPS {:.0}); shadow on {} ({:?})",
                r.p_fail,
                threshold,
                r.blast_radius,
                r.hps,
                p.host,
                tier.expect("set with to")
            ),
            None => format!(
                "P(fail within 1 h) {:.3} ≥ threshold {:.3}, but no other host has room",
                r.p_fail, threshold
            ),
        };
        out.push(Decision {
            component: id.clone(),
            to,
            tier,
            severity,
            mode,
            p_fail: r.p_fail,
            threshold,
            hps: r.hps,
            blast_radius: r.blast_radius,
            reason,
        });
    }
    let followers = followers(state, risks, &out, &mut occupancy);
    out.extend(followers);
    out
}

/// The dependents that follow the components being moved: each one co-located with a moved
/// component (same host), depending on it at least [`FOLLOW_STRENGTH`], with no shadow of
/// its own under way and not being moved already. It goes to the moved component's new host
/// if that has room, else to the host with room nearest to it (same rack, then same zone),
/// never back onto its own host; with no room near, it stays. One level: a follower's own
/// dependents do not follow it. An instance of the moved component's own group never follows
/// it.
fn followers(
    state: &ControlState,
    risks: &BTreeMap<ComponentId, ComponentRisk>,
    moved: &[Decision],
    occupancy: &mut Occupancy,
) -> Vec<Decision> {
    let mut out: Vec<Decision> = Vec::new();
    for d in moved {
        let (Some(target), Some(leader)) = (&d.to, state.components.get(&d.component)) else {
            continue;
        };
        for ((from, to), edge) in &state.edges {
            if to != d.component.as_str() || edge.strength() < FOLLOW_STRENGTH {
                continue;
            }
            let Some(dep) = ComponentId::new(from.as_str())
                .ok()
                .and_then(|id| state.components.get(&id))
            else {
                continue; // a virtual peer
            };
            let busy = state
                .shadows
                .get(&dep.id)
                .is_some_and(|s| s.state != ShadowState::Retired);
            let planned = moved.iter().chain(&out).any(|x| x.component == dep.id);
            // Instances of one group never follow each other: replicas are spread on purpose,
            // and an edge between two of them is shared load (causal inference over live
            // metrics finds one between siblings whose traffic moves together).
            let sibling = dep.group == leader.group;
            if dep.placement.host != leader.placement.host || busy || planned || sibling {
                continue;
            }
            let host = state
                .hosts
                .values()
                .filter(|h| occupancy.room(h) > 0 && h.placement.host != dep.placement.host)
                .map(|h| (domain_tier(target, &h.placement), h))
                .filter(|(tier, _)| *tier < Tier::OtherZone)
                .min_by(|(ta, a), (tb, b)| {
                    ta.cmp(tb)
                        .then_with(|| occupancy.room(b).cmp(&occupancy.room(a)))
                        .then_with(|| a.placement.host.cmp(&b.placement.host))
                })
                .map(|(_, h)| h.placement.clone());
            let Some(to) = host else { continue };
            occupancy.take(&to.host);
            let r = risks.get(&dep.id);
            out.push(Decision {
                component: dep.id.clone(),
                tier: Some(domain_tier(&dep.placement, &to)),
                severity: d.severity,
                mode: d.mode,
                p_fail: r.map_or(0.0, |r| r.p_fail),
                threshold: d.threshold,
                hps: r.map_or(100.0, |r| r.hps),
                blast_radius: r.map_or(0.0, |r| r.blast_radius),
                reason: format!(
                    "follows {} to {}: co-located with it and depends on it (strength {:.2})",
                    d.component,
                    to.host,
                    edge.strength()
                ),
                to: Some(to),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use augur_types::fixtures::component;
    use augur_types::{Command, PlanEvent, PlanKind, PlanRecord};

    use super::*;

    #[test]
    fn a_groups_other_instances_settle_after_a_failover_starts_in_it() {
        let mut s = ControlState::default();
        for (id, group) in [
            ("web-1", "web"),
            ("web-2", "web"),
            ("web-3", "web"),
            ("web-1.shadow-1", "web"),
            ("db-1", "db"),
        ] {
            s.apply(
                1,
                &Command::UpsertComponent(component(id, group, "h1", "a")),
            )
            .unwrap();
        }
        let event = |at_ms, status| PlanEvent {
            at_ms,
            status,
            by: "leader".into(),
            note: String::new(),
        };
        let plan = PlanRecord {
            id: "plan-1".into(),
            component: ComponentId::new("web-1").unwrap(),
            kind: PlanKind::Failover,
            template: None,
            to: component("x", "web", "h2", "a").placement,
            severity: Severity::Critical,
            reason: String::new(),
            created_ms: 1_000,
            status: PlanStatus::Started,
            shadow: Some(ComponentId::new("web-1.shadow-1").unwrap()),
            history: vec![
                event(1_000, PlanStatus::Approved),
                event(1_500, PlanStatus::Started),
            ],
        };
        s.plans.insert(1, plan.clone());
        let held = |s: &ControlState, now| {
            settling_siblings(s, now, SETTLE_HOLD_MS)
                .into_iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
        };
        // Not the moved component nor its shadow, and nothing of another group.
        assert_eq!(held(&s, 1_500), ["web-2", "web-3"]);
        assert_eq!(held(&s, 1_499 + SETTLE_HOLD_MS), ["web-2", "web-3"]);
        assert!(held(&s, 1_500 + SETTLE_HOLD_MS).is_empty());
        // A plan that has not started holds nothing.
        s.plans.update(&1, |p| p.history.pop()).unwrap();
        assert!(held(&s, 1_500).is_empty());
        // A hold of 0 holds nothing.
        s.plans.insert(1, plan);
        assert!(settling_siblings(&s, 1_500, 0).is_empty());
    }
}

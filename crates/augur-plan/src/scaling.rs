//! Predictive scaling: add instances ahead of a forecast peak (load or risk), never remove
//! them on a forecast alone: scaling down waits for observed load, which is an operator's
//! call.
//!
//! [`plan_scaling`] sizes every group whose policy scales: the group's load (the sum of its
//! serving instances' load levels) projected `horizon_s` ahead on the sum of their trends
//! (so traffic moving from one instance to another cancels out), plus headroom, over what
//! one instance serves; plus a spare for every instance at risk that no failover is taking
//! care of. Instances still coming (scale plans not yet serving) count as running. Each
//! instance to add is one scale plan, made like the group's healthiest instance and placed
//! where the group has fewest instances (zone, then rack, then host) on a host with room.
//!
//! A started scale plan registers its instance and asks orchestrators to provision it; when
//! that succeeds [`scale_steps`] gives it an equal share of the group's traffic (the others'
//! weights shrink in proportion, still summing to 100), and when it fails the instance is
//! forgotten and the plan expires.

use std::collections::{BTreeMap, BTreeSet};

use augur_types::{
    ActionKind, ActionOutcome, Command, ComponentId, ControlState, PlanDecision, PlanKind,
    PlanStatus, ScalingPolicy, TrafficWeights, WEIGHT_TOTAL,
};
use augur_types::{Placement, ShadowState};
use serde::Serialize;

use crate::failover::{threshold, ComponentRisk, PlannerConfig};
use crate::footprint::{best_host, count_by, rack_of};
use crate::lifecycle::{outcome, provision_action, set_weights, LifecycleStep};
use crate::placement::{host_risk, on_standby, Occupancy};

/// Instances to add so that `forecast_peak_rps` (plus headroom) fits, given `running`
/// instances of which `at_risk` are expected to fail within the horizon. `0` when the
/// service already has enough; never negative: a forecast never removes an instance.
pub fn scale_up(running: u32, at_risk: u32, forecast_peak_rps: f64, cfg: &ScalingPolicy) -> u32 {
    if !(forecast_peak_rps.is_finite() && cfg.per_instance_rps > 0) {
        return 0;
    }
    let headroom = 1.0 + f64::from(cfg.headroom_percent) / 100.0;
    let needed = (forecast_peak_rps.max(0.0) * headroom / f64::from(cfg.per_instance_rps))
        .ceil()
        .min(f64::from(u32::MAX)) as u32;
    // Spares for the instances expected to fail.
    let target =
        (needed.max(1).saturating_add(at_risk.min(running))).min(cfg.max_instances.max(running));
    target.saturating_sub(running)
}

/// A component's load as the planner reads it: requests per second now and their trend.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Load {
    pub level: f64,
    pub per_s: f64,
}

/// One group to scale out.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScaleDecision {
    pub group: String,
    /// The instance the new ones are made like: the group's healthiest.
    pub template: ComponentId,
    /// The new instances, named `<group>.scale-<n>`, and where each goes.
    pub add: Vec<(ComponentId, Placement)>,
    /// The group's load projected `horizon_s` ahead.
    pub peak_rps: f64,
    /// Serving instances and those still coming.
    pub running: u32,
    /// Instances over their risk threshold that no failover takes care of.
    pub at_risk: u32,
    pub reason: String,
}

/// The scale-outs due now, by group name. See the module docs.
pub fn plan_scaling(
    state: &ControlState,
    loads: &BTreeMap<ComponentId, Load>,
    risks: &BTreeMap<ComponentId, ComponentRisk>,
    cfg: &PlannerConfig,
) -> Vec<ScaleDecision> {
    let mut occupancy = Occupancy::of(state);
    // Instances of scale plans not yet registered take their host's slot all the same.
    for p in state.plans.values() {
        if p.kind == PlanKind::Scale && p.status.open() {
            occupancy.take(&p.to.host);
        }
    }
    let mut out = Vec::new();
    for (group, policy) in &state.policies {
        let Some(scaling) = policy.scaling else {
            continue;
        };
        let Some(Sizing {
            serving,
            level,
            peak,
            at_risk,
        }) = sizing(state, group, &scaling, loads, risks, cfg)
        else {
            continue;
        };
        let coming = coming(state, group, &serving);
        let running = serving.len() as u32 + coming;
        let n = scale_up(running, at_risk, peak, &scaling);
        if n == 0 {
            continue;
        }
        // The healthiest serving instance, by HPS then name.
        let hps = |c: &ComponentId| risks.get(c).map_or(100.0, |r| r.hps);
        let Some(template) = serving
            .iter()
            .max_by(|a, b| hps(a).total_cmp(&hps(b)).then_with(|| b.cmp(a)))
            .map(|c| (*c).clone())
        else {
            continue;
        };
        let add = place(state, group, &serving, n, risks, &mut occupancy);
        if add.is_empty() {
            continue;
        }
        let reason = format!(
            "load {level:.0} req/s heading to {peak:.0} in {} s (+{} % headroom at {} req/s an \
             instance), {at_risk} at risk: {} instances wanted, {running} running or coming",
            scaling.horizon_s,
            scaling.headroom_percent,
            scaling.per_instance_rps,
            running + n
        );
        out.push(ScaleDecision {
            group: group.clone(),
            template,
            add,
            peak_rps: peak,
            running,
            at_risk,
            reason,
        });
    }
    out
}

/// Where a scaling group stands: its serving instances, their load now and projected, and
/// how many of them are at risk with nothing taking care of them.
struct Sizing<'s> {
    serving: Vec<&'s ComponentId>,
    level: f64,
    peak: f64,
    at_risk: u32,
}

/// `None` for a group with no serving instance or no load reported.
fn sizing<'s>(
    state: &'s ControlState,
    group: &str,
    scaling: &ScalingPolicy,
    loads: &BTreeMap<ComponentId, Load>,
    risks: &BTreeMap<ComponentId, ComponentRisk>,
    cfg: &PlannerConfig,
) -> Option<Sizing<'s>> {
    let serving = serving(state, group);
    let with_load: Vec<Load> = serving
        .iter()
        .filter_map(|c| loads.get(*c))
        .copied()
        .collect();
    if serving.is_empty() || with_load.is_empty() {
        return None;
    }
    let level: f64 = with_load.iter().map(|l| l.level).sum();
    let trend: f64 = with_load.iter().map(|l| l.per_s).sum();
    let peak = level + trend.max(0.0) * f64::from(scaling.horizon_s);
    let at_risk = serving
        .iter()
        .filter(|c| unattended_risk(state, risks, c, cfg))
        .count() as u32;
    Some(Sizing {
        serving,
        level,
        peak,
        at_risk,
    })
}

/// The proposed scale plans (waiting for approval) that their group's sizing still wants: as
/// many of the oldest as the group would add now were none of them proposed. Those are not
/// stale, however long they wait; the others are.
pub fn wanted_proposals(
    state: &ControlState,
    loads: &BTreeMap<ComponentId, Load>,
    risks: &BTreeMap<ComponentId, ComponentRisk>,
    cfg: &PlannerConfig,
) -> Vec<ComponentId> {
    let mut out = Vec::new();
    for (group, policy) in &state.policies {
        let Some(scaling) = policy.scaling else {
            continue;
        };
        let Some(z) = sizing(state, group, &scaling, loads, risks, cfg) else {
            continue;
        };
        // Counting the instances already coming other than these proposals.
        let proposed: Vec<&ComponentId> = state
            .plans
            .values()
            .filter(|p| p.kind == PlanKind::Scale && p.status == PlanStatus::Proposed)
            .filter(|p| plan_group(state, p) == Some(group.as_str()))
            .map(|p| &p.component)
            .collect();
        let others = coming(state, group, &z.serving).saturating_sub(proposed.len() as u32);
        let want = scale_up(z.serving.len() as u32 + others, z.at_risk, z.peak, &scaling);
        out.extend(proposed.into_iter().take(want as usize).cloned());
    }
    out
}

/// The group's instances that serve: those its traffic weights route to, or, for a group
/// without weights, its components other than shadows and promoted shadows' originals.
fn serving<'s>(state: &'s ControlState, group: &str) -> Vec<&'s ComponentId> {
    if let Some(w) = state.weights.get(group).filter(|w| !w.is_empty()) {
        return w
            .iter()
            .filter(|(_, &v)| v > 0)
            .map(|(c, _)| c)
            .filter(|c| state.components.contains_key(*c))
            .collect();
    }
    let shadows: BTreeSet<&ComponentId> = state.shadows.values().map(|s| &s.shadow).collect();
    state
        .components
        .values()
        .filter(|c| c.group == group && !shadows.contains(&c.id) && !on_standby(state, &c.id))
        .map(|c| &c.id)
        .collect()
}

/// The group's scale plans whose instance is not serving yet: proposed, approved, or started
/// and not yet given traffic.
fn coming(state: &ControlState, group: &str, serving: &[&ComponentId]) -> u32 {
    state
        .plans
        .values()
        .filter(|p| p.kind == PlanKind::Scale && plan_group(state, p) == Some(group))
        .filter(|p| p.status.open() || p.status == PlanStatus::Started)
        .filter(|p| !serving.contains(&&p.component))
        .count() as u32
}

/// The group a scale plan adds to: its template's (or, once registered, its instance's).
fn plan_group<'s>(state: &'s ControlState, p: &augur_types::PlanRecord) -> Option<&'s str> {
    state
        .components
        .get(&p.component)
        .or_else(|| state.components.get(p.template.as_ref()?))
        .map(|c| c.group.as_str())
}

/// Over its risk threshold, with no failover open or in flight for it.
fn unattended_risk(
    state: &ControlState,
    risks: &BTreeMap<ComponentId, ComponentRisk>,
    c: &ComponentId,
    cfg: &PlannerConfig,
) -> bool {
    let Some(r) = risks.get(c) else {
        return false;
    };
    let Some(comp) = state.components.get(c) else {
        return false;
    };
    let attended = state.open_plan(c).is_some()
        || state
            .shadows
            .get(c)
            .is_some_and(|s| s.state != ShadowState::Retired);
    !attended && r.p_fail >= threshold(r.blast_radius, &state.policy_for(&comp.group), cfg)
}

/// Up to `n` new instances of `group`, each where the group has fewest instances (zone, rack,
/// host), then on the least risky host. Fewer when hosts run out of room.
fn place(
    state: &ControlState,
    group: &str,
    serving: &[&ComponentId],
    n: u32,
    risks: &BTreeMap<ComponentId, ComponentRisk>,
    occupancy: &mut Occupancy,
) -> Vec<(ComponentId, Placement)> {
    let mut placed: Vec<Placement> = serving
        .iter()
        .filter_map(|c| state.components.get(*c))
        .map(|c| c.placement.clone())
        .collect();
    let host_risk = host_risk(state, risks);
    let risk_of = |h: &augur_types::Host| {
        host_risk
            .get(h.placement.host.as_str())
            .copied()
            .unwrap_or(0.0)
    };
    let mut next = 1u64;
    let mut out = Vec::new();
    for _ in 0..n {
        let zones = count_by(placed.iter().map(|p| p.zone.as_str()));
        let racks = count_by(placed.iter().map(rack_of));
        let hosts = count_by(placed.iter().map(|p| p.host.as_str()));
        let key = |h: &augur_types::Host| {
            let p = &h.placement;
            (
                zones.get(p.zone.as_str()).copied().unwrap_or(0),
                racks.get(&rack_of(p)).copied().unwrap_or(0),
                hosts.get(p.host.as_str()).copied().unwrap_or(0),
            )
        };
        // A group name near the id length limit leaves no room for the suffix: such a group
        // is not scaled (it is still failed over, one instance at a time).
        let id = loop {
            let Ok(id) = ComponentId::new(format!("{group}.scale-{next}")) else {
                return out;
            };
            next += 1;
            let taken = state.components.contains_key(&id)
                || state.plans.values().any(|p| p.component == id);
            if !taken {
                break id;
            }
        };
        let room = state.hosts.values().filter(|h| occupancy.room(h) > 0);
        let Some(host) = best_host(room, key, &risk_of) else {
            break;
        };
        let to = host.placement.clone();
        occupancy.take(&to.host);
        placed.push(to.clone());
        out.push((id, to));
    }
    out
}

/// What to commit for one started scale plan: one command per step, so a step the state
/// refuses changes nothing, and the next step is read from what was committed (a leader that
/// dies between two steps leaves the next one due, not lost).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum ScaleStep {
    /// Its instance was provisioned: it takes an equal share of the group's traffic.
    Admit {
        plan: String,
        component: ComponentId,
        group: String,
        weights: TrafficWeights,
    },
    /// Its share is in the group's weights: they go out to orchestrators (once per plan).
    Announce {
        plan: String,
        component: ComponentId,
        group: String,
        weights: TrafficWeights,
    },
    /// Its instance could not be provisioned: it is forgotten.
    Abandon {
        plan: String,
        component: ComponentId,
        reason: String,
    },
    /// Its instance is gone (forgotten after a failed provisioning, or removed by an
    /// operator): the plan expires.
    Expire { plan: String, reason: String },
}

/// The request id of the action that sends a scale plan's weights out.
fn announce_request(plan: &str, component: &ComponentId) -> String {
    format!("scale:{plan}:{component}")
}

impl ScaleStep {
    /// The plan it belongs to: the steps of one plan depend on each other, those of
    /// different plans do not.
    pub fn plan(&self) -> String {
        match self {
            ScaleStep::Admit { plan, .. }
            | ScaleStep::Announce { plan, .. }
            | ScaleStep::Abandon { plan, .. }
            | ScaleStep::Expire { plan, .. } => plan.clone(),
        }
    }

    /// The command that carries the step out (`at_ms` stamps it).
    pub fn into_command(self, at_ms: u64) -> Command {
        match self {
            ScaleStep::Admit { group, weights, .. } => Command::SetWeights {
                service: group,
                weights,
            },
            ScaleStep::Announce {
                plan,
                component,
                group,
                weights,
            } => set_weights(
                announce_request(&plan, &component),
                &component,
                &component,
                &group,
                0,
                &weights,
            )
            .into_command(at_ms),
            ScaleStep::Abandon { component, .. } => Command::RemoveComponent { id: component },
            ScaleStep::Expire { plan, reason } => Command::DecidePlan {
                id: plan,
                decision: PlanDecision::Expire,
                by: "leader".to_owned(),
                note: reason,
                at_ms,
            },
        }
    }
}

/// The steps due for every started scale plan, from the outcomes of their `provision`
/// actions. A group with a traffic shift under way is left alone until it ends: its weights
/// are the shift's to change.
pub fn scale_steps(state: &ControlState) -> Vec<ScaleStep> {
    let mut out = Vec::new();
    let mut admitted: BTreeSet<String> = BTreeSet::new();
    for p in state.plans.values() {
        if p.kind != PlanKind::Scale || p.status != PlanStatus::Started {
            continue;
        }
        let provisioned = outcome(state, &p.component, ActionKind::Provision);
        let failed = match &provisioned {
            Some((by, ActionOutcome::Failed { reason })) => {
                Some(format!("provisioning failed ({by}): {reason}"))
            }
            _ => None,
        };
        let Some(c) = state.components.get(&p.component) else {
            out.push(ScaleStep::Expire {
                plan: p.id.clone(),
                reason: failed.unwrap_or_else(|| "its instance was removed".to_owned()),
            });
            continue;
        };
        if let Some(reason) = failed {
            out.push(ScaleStep::Abandon {
                plan: p.id.clone(),
                component: p.component.clone(),
                reason,
            });
            continue;
        }
        if !matches!(provisioned, Some((_, ActionOutcome::Succeeded))) {
            continue;
        }
        let Some(w) = state.weights.get(&c.group).filter(|w| !w.is_empty()) else {
            continue; // no traffic weights: serving as soon as it runs
        };
        if w.contains_key(&p.component) {
            if state
                .action_by_request(&announce_request(&p.id, &p.component))
                .is_none()
            {
                out.push(ScaleStep::Announce {
                    plan: p.id.clone(),
                    component: p.component.clone(),
                    group: c.group.clone(),
                    weights: w.clone(),
                });
            }
            continue;
        }
        // One group's weights change at most once a round: a second admission would
        // overwrite the first. It waits for the next round, read from the state this one
        // leaves.
        if shifting(state, w) || !admitted.insert(c.group.clone()) {
            continue;
        }
        out.push(ScaleStep::Admit {
            plan: p.id.clone(),
            component: p.component.clone(),
            group: c.group.clone(),
            weights: with_equal_share(w, &p.component),
        });
    }
    // Nor does an announcement go out in a round that admits to its group: it would carry
    // the weights from before the admission.
    out.retain(
        |step| !matches!(step, ScaleStep::Announce { group, .. } if admitted.contains(group)),
    );
    out
}

/// Whether a shadow of one of these components is moving traffic.
fn shifting(state: &ControlState, w: &TrafficWeights) -> bool {
    w.keys().any(|c| {
        state
            .shadows
            .get(c)
            .is_some_and(|s| matches!(s.state, ShadowState::Shifting { .. }))
    })
}

/// `weights` with `new` taking an equal share (100 over the serving instances plus one,
/// rounded down) and the others shrunk in proportion, largest remainders first, so the sum
/// stays 100.
pub fn with_equal_share(weights: &TrafficWeights, new: &ComponentId) -> TrafficWeights {
    let total = WEIGHT_TOTAL as u32;
    let serving = weights.values().filter(|&&v| v > 0).count() as u32;
    let share = total / (serving + 1);
    let rest = total - share;
    let sum: u32 = weights.values().sum::<u32>().max(1);
    let mut out: TrafficWeights = weights
        .iter()
        .map(|(c, &v)| (c.clone(), v * rest / sum))
        .collect();
    let mut left = rest - out.values().sum::<u32>();
    let mut by_remainder: Vec<(&ComponentId, u32)> = weights
        .iter()
        .map(|(c, &v)| (c, (v * rest) % sum))
        .collect();
    by_remainder.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    for (c, _) in by_remainder {
        if left == 0 {
            break;
        }
        *out.get_mut(c).expect("same keys") += 1;
        left -= 1;
    }
    out.insert(new.clone(), share);
    out
}

/// The `provision` action of a started scale plan's instance.
pub fn provision_instance(plan: &augur_types::PlanRecord) -> LifecycleStep {
    provision_action(
        &plan.component,
        &plan.component,
        &plan.to,
        format!("{}: {}", plan.id, plan.reason),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CFG: ScalingPolicy = ScalingPolicy {
        per_instance_rps: 100,
        headroom_percent: 20,
        max_instances: 20,
        horizon_s: 120,
    };

    #[test]
    fn adds_ahead_of_load_and_risk() {
        assert_eq!(scale_up(2, 0, 150.0, &CFG), 0); // 180 rps fits in 2
        assert_eq!(scale_up(2, 0, 400.0, &CFG), 3); // 480 rps needs 5
        assert_eq!(scale_up(5, 1, 400.0, &CFG), 1); // one of 5 will fail: 6
        assert_eq!(scale_up(18, 0, 5_000.0, &CFG), 2); // capped at 20
        assert_eq!(scale_up(3, 0, f64::NAN, &CFG), 0);
    }

    fn cid(s: &str) -> ComponentId {
        ComponentId::new(s).unwrap()
    }

    /// Hosts h1 (zone a), h2 (b), h3 (c), 4 slots each; web-1 and web-2 on h1, 50/50, and a
    /// policy that scales at 100 req/s an instance.
    fn fleet() -> ControlState {
        use augur_types::{Component, Host, Policy};
        let mut s = ControlState::default();
        for (h, zone) in [("h1", "a"), ("h2", "b"), ("h3", "c")] {
            let placement = Placement {
                host: h.into(),
                rack: format!("r-{zone}"),
                zone: zone.into(),
            };
            s.apply(
                1,
                &Command::UpsertHost(Host {
                    placement,
                    capacity: 4,
                }),
            )
            .unwrap();
        }
        for i in 1..=2 {
            let c = Component {
                id: cid(&format!("web-{i}")),
                class: "web".into(),
                group: "web".into(),
                criticality: 3,
                placement: s.hosts["h1"].placement.clone(),
                labels: BTreeMap::new(),
            };
            s.apply(1, &Command::UpsertComponent(c)).unwrap();
        }
        let weights = [(cid("web-1"), 50), (cid("web-2"), 50)].into();
        s.apply(
            1,
            &Command::SetWeights {
                service: "web".into(),
                weights,
            },
        )
        .unwrap();
        let policy = Policy {
            scaling: Some(CFG),
            ..Policy::default()
        };
        s.apply(
            1,
            &Command::SetPolicy {
                group: "web".into(),
                policy,
            },
        )
        .unwrap();
        s
    }

    fn loads(level: f64, per_s: f64) -> BTreeMap<ComponentId, Load> {
        ["web-1", "web-2"]
            .into_iter()
            .map(|c| (cid(c), Load { level, per_s }))
            .collect()
    }

    fn risks(p_fail_web_1: f64) -> BTreeMap<ComponentId, ComponentRisk> {
        [("web-1", p_fail_web_1), ("web-2", 0.01)]
            .into_iter()
            .map(|(c, p_fail)| {
                let r = ComponentRisk {
                    p_fail,
                    hps: 100.0 * (1.0 - p_fail),
                    blast_radius: 0.1,
                };
                (cid(c), r)
            })
            .collect()
    }

    fn propose(s: &mut ControlState, d: &ScaleDecision) {
        propose_by(s, d, Some("policy"));
    }

    /// Records `d`'s instances as scale plans, approved by `approved_by` if any.
    fn propose_by(s: &mut ControlState, d: &ScaleDecision, approved_by: Option<&str>) {
        for (id, to) in &d.add {
            let cmd = Command::ProposePlan {
                component: id.clone(),
                kind: PlanKind::Scale,
                template: Some(d.template.clone()),
                to: to.clone(),
                severity: augur_types::Severity::Elevated,
                reason: d.reason.clone(),
                approved_by: approved_by.map(str::to_owned),
                at_ms: 1,
            };
            s.apply(1, &cmd).unwrap();
        }
    }

    #[test]
    fn a_rising_load_adds_instances_where_the_group_has_fewest() {
        let mut s = fleet();
        let cfg = PlannerConfig::default();
        // 2 × 80 req/s, flat: 192 with headroom, 2 instances serve it.
        assert!(plan_scaling(&s, &loads(80.0, 0.0), &risks(0.01), &cfg).is_empty());
        // Rising by 0.5 req/s each: 160 + 1 × 120 = 280 in 120 s, 336 with headroom: 4.
        let d = plan_scaling(&s, &loads(80.0, 0.5), &risks(0.01), &cfg);
        assert_eq!(d.len(), 1, "{d:?}");
        let d = &d[0];
        assert_eq!((d.group.as_str(), d.running, d.at_risk), ("web", 2, 0));
        assert!((d.peak_rps - 280.0).abs() < 1e-9);
        let zones: Vec<&str> = d.add.iter().map(|(_, p)| p.zone.as_str()).collect();
        assert_eq!(zones, ["b", "c"]);
        assert_eq!(d.add[0].0, cid("web.scale-1"));
        assert_eq!(d.add[1].0, cid("web.scale-2"));
        // Once proposed they count as coming: nothing more is due.
        propose(&mut s, d);
        assert!(plan_scaling(&s, &loads(80.0, 0.5), &risks(0.01), &cfg).is_empty());
        // Traffic moving between instances cancels out: one falls as the other rises.
        let mut moving = loads(80.0, 0.0);
        moving.get_mut(&cid("web-1")).unwrap().per_s = -1.0;
        moving.get_mut(&cid("web-2")).unwrap().per_s = 1.0;
        assert!(plan_scaling(&fleet(), &moving, &risks(0.01), &cfg).is_empty());
    }

    /// Proposals waiting for an operator stay wanted while the load that asked for them
    /// holds, and only the surplus is stale when it falls.
    #[test]
    fn waiting_proposals_are_wanted_while_the_load_holds() {
        let mut s = fleet();
        let cfg = PlannerConfig::default();
        let d = plan_scaling(&s, &loads(80.0, 0.5), &risks(0.01), &cfg);
        propose_by(&mut s, &d[0], None);
        let both = vec![cid("web.scale-1"), cid("web.scale-2")];
        assert_eq!(
            wanted_proposals(&s, &loads(80.0, 0.5), &risks(0.01), &cfg),
            both
        );
        // 2 × 100 req/s, flat: 240 with headroom, 3 instances: the older proposal only.
        assert_eq!(
            wanted_proposals(&s, &loads(100.0, 0.0), &risks(0.01), &cfg),
            [cid("web.scale-1")]
        );
        // The load fell back: neither.
        assert!(wanted_proposals(&s, &loads(80.0, 0.0), &risks(0.01), &cfg).is_empty());
    }

    #[test]
    fn an_instance_at_risk_gets_a_spare_unless_a_failover_has_it() {
        let s = fleet();
        let cfg = PlannerConfig::default();
        let d = plan_scaling(&s, &loads(80.0, 0.0), &risks(0.95), &cfg);
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].at_risk, d[0].add.len()), (1, 1));
        // The template is the healthy one.
        assert_eq!(d[0].template, cid("web-2"));
        // A failover plan for web-1 takes care of it.
        let mut s = fleet();
        let failover = Command::ProposePlan {
            component: cid("web-1"),
            kind: PlanKind::Failover,
            template: None,
            to: s.hosts["h2"].placement.clone(),
            severity: augur_types::Severity::Critical,
            reason: "P(fail) 0.95".into(),
            approved_by: None,
            at_ms: 1,
        };
        s.apply(1, &failover).unwrap();
        assert!(plan_scaling(&s, &loads(80.0, 0.0), &risks(0.95), &cfg).is_empty());
        // No scaling policy, no scaling.
        let mut s = fleet();
        s.policies.clear();
        assert!(plan_scaling(&s, &loads(500.0, 5.0), &risks(0.95), &cfg).is_empty());
    }

    #[test]
    fn a_provisioned_instance_takes_an_equal_share_and_a_failed_one_is_forgotten() {
        let mut s = fleet();
        let d = plan_scaling(
            &s,
            &loads(80.0, 0.5),
            &risks(0.01),
            &PlannerConfig::default(),
        );
        propose(&mut s, &d[0]);
        // Start both: register, provision, mark started (as the leader does).
        for plan in ["plan-1", "plan-2"] {
            let p = s.plan(plan).unwrap().clone();
            let template = s.components[p.template.as_ref().unwrap()].clone();
            let c = augur_types::Component {
                id: p.component.clone(),
                placement: p.to.clone(),
                ..template
            };
            s.apply(1, &Command::UpsertComponent(c)).unwrap();
            s.apply(1, &provision_instance(&p).into_command(1)).unwrap();
            let start = PlanDecision::Start {
                shadow: p.component.clone(),
            };
            let cmd = Command::DecidePlan {
                id: plan.into(),
                decision: start,
                by: "leader".into(),
                note: String::new(),
                at_ms: 1,
            };
            s.apply(1, &cmd).unwrap();
        }
        assert!(scale_steps(&s).is_empty(), "nothing before an outcome");
        // An instance an operator removes before its outcome takes its plan with it.
        let mut removed = s.clone();
        let id = cid("web.scale-2");
        removed.apply(1, &Command::RemoveComponent { id }).unwrap();
        assert_eq!(
            scale_steps(&removed),
            [ScaleStep::Expire {
                plan: "plan-2".into(),
                reason: "its instance was removed".into()
            }]
        );
        // Fresh instances are not moved on a prediction until the hold has passed.
        let fresh = crate::recently_started(&s, crate::FRESH_HOLD_MS, crate::FRESH_HOLD_MS);
        assert_eq!(
            fresh.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
            ["web.scale-1", "web.scale-2"]
        );
        assert!(
            crate::recently_started(&s, 1 + crate::FRESH_HOLD_MS, crate::FRESH_HOLD_MS).is_empty()
        );
        // Their group settles meanwhile: the old instances, and each new one for the other's
        // plan, are held for the settle hold, then released.
        let held = crate::settling_siblings(&s, crate::SETTLE_HOLD_MS, crate::SETTLE_HOLD_MS);
        assert_eq!(
            held.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
            ["web-1", "web-2", "web.scale-1", "web.scale-2"]
        );
        assert!(
            crate::settling_siblings(&s, 1 + crate::SETTLE_HOLD_MS, crate::SETTLE_HOLD_MS)
                .is_empty()
        );
        let report = |s: &mut ControlState, instance: &str, outcome: ActionOutcome| {
            let id = s.action_by_request(&format!("plan:{instance}")).unwrap().id;
            let cmd = Command::ReportOutcome {
                id,
                orchestrator: "agent-1".into(),
                outcome,
                kpis: None,
                at_ms: 2,
            };
            s.apply(1, &cmd).unwrap();
        };
        // Both provisioned: one admission a round, and the weights go out after the last.
        let mut both = s.clone();
        report(&mut both, "web.scale-1", ActionOutcome::Succeeded);
        report(&mut both, "web.scale-2", ActionOutcome::Succeeded);
        for _ in 0..10 {
            let steps = scale_steps(&both);
            let admits = steps
                .iter()
                .filter(|s| matches!(s, ScaleStep::Admit { .. }))
                .count();
            let announces = steps.len() - admits;
            assert!(admits <= 1 && (admits == 0 || announces == 0), "{steps:?}");
            for step in steps {
                both.apply(1, &step.into_command(3)).unwrap();
            }
        }
        assert!(scale_steps(&both).is_empty());
        let w = &both.weights["web"];
        assert_eq!((w.len(), w.values().sum::<u32>()), (4, 100));
        let sent = |plan: &str, c: &str| {
            both.action_by_request(&format!("scale:{plan}:{c}"))
                .unwrap()
                .params["weights"]
                .clone()
        };
        assert_eq!(sent("plan-1", "web.scale-1"), sent("plan-2", "web.scale-2"));
        report(&mut s, "web.scale-1", ActionOutcome::Succeeded);
        let failed = ActionOutcome::Failed {
            reason: "port range exhausted".into(),
        };
        report(&mut s, "web.scale-2", failed);
        // One command a step: the admission sets the weights and the failed instance is
        // forgotten; then the weights go out and the failed plan expires.
        let steps = scale_steps(&s);
        assert!(
            matches!(
                &steps[..],
                [ScaleStep::Admit { .. }, ScaleStep::Abandon { .. }]
            ),
            "{steps:?}"
        );
        for step in steps {
            s.apply(1, &step.into_command(3)).unwrap();
        }
        assert!(s.action_by_request("scale:plan-1:web.scale-1").is_none());
        let steps = scale_steps(&s);
        match &steps[..] {
            [ScaleStep::Announce { weights, .. }, ScaleStep::Expire { reason, .. }] => {
                assert_eq!(weights, &s.weights["web"]);
                assert!(reason.contains("port range exhausted"), "{reason}");
            }
            _ => panic!("{steps:?}"),
        }
        for step in steps {
            s.apply(1, &step.into_command(3)).unwrap();
        }
        let w = &s.weights["web"];
        assert_eq!(w[&cid("web.scale-1")], 33);
        assert_eq!(w.values().sum::<u32>(), 100);
        assert!(!s.components.contains_key(&cid("web.scale-2")));
        assert_eq!(s.plan("plan-2").unwrap().status, PlanStatus::Expired);
        // The weights went out to orchestrators too, once.
        assert!(s.action_by_request("scale:plan-1:web.scale-1").is_some());
        assert!(scale_steps(&s).is_empty());
    }

    #[test]
    fn an_equal_share_keeps_the_sum_and_the_proportions() {
        let w = |pairs: &[(&str, u32)]| -> TrafficWeights {
            pairs
                .iter()
                .map(|(c, v)| (ComponentId::new(*c).unwrap(), *v))
                .collect()
        };
        let new = ComponentId::new("web.scale-1").unwrap();
        let out = with_equal_share(&w(&[("a", 50), ("b", 50)]), &new);
        assert_eq!(out, w(&[("a", 34), ("b", 33), ("web.scale-1", 33)]));
        let out = with_equal_share(&w(&[("a", 100), ("b", 0)]), &new);
        assert_eq!(out, w(&[("a", 50), ("b", 0), ("web.scale-1", 50)]));
    }

    proptest! {
        /// Never below what runs, never above the cap unless already there.
        #[test]
        fn never_removes_and_respects_the_cap(
            running in 0u32..30, at_risk in 0u32..30, load in -100.0f64..10_000.0,
        ) {
            let add = scale_up(running, at_risk, load, &CFG);
            prop_assert!(running + add <= CFG.max_instances.max(running));
        }

        /// The new share and the rest always sum to 100, and nobody's weight grows.
        #[test]
        fn an_equal_share_sums_to_100(raw in proptest::collection::vec(0u32..50, 1..12)) {
            let sum: u32 = raw.iter().sum();
            prop_assume!(sum > 0);
            // Scale to 100 exactly: the rest on the first.
            let mut w: TrafficWeights = BTreeMap::new();
            let mut given = 0;
            for (i, v) in raw.iter().enumerate() {
                let v = v * 100 / sum;
                given += v;
                w.insert(ComponentId::new(format!("c{i}")).unwrap(), v);
            }
            *w.get_mut(&ComponentId::new("c0").unwrap()).unwrap() += 100 - given;
            let new = ComponentId::new("n").unwrap();
            let out = with_equal_share(&w, &new);
            prop_assert_eq!(out.values().sum::<u32>(), 100);
            for (c, v) in &w {
                prop_assert!(out[c] <= *v);
            }
            prop_assert!(out[&new] > 0);
        }
    }
}

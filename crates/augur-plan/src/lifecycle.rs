//! The shadow lifecycle, driven by the action log: what the leader commits next for every
//! shadow in flight, decided from the replicated state alone (so a new leader picks up where
//! the old one stopped, and a step is never carried out twice: actions are appended under
//! request ids derived from the shadow, and a repeated append is answered, not repeated).
//!
//! Requested ─provision done─► Provisioned ─► Syncing (sync action) ─sync done─►
//! Validating (validate action). A failed action rolls the shadow back; a rolled-back shadow
//! gets a retire action and is Retired when it succeeds (until then the planner leaves the
//! component alone).
//!
//! Validated ─► the shadow is registered in the original's service and the traffic moves in
//! the policy's canary steps (default 1, 5, 25, 50, 100 % of the original's share). Each step
//! is one `ShiftTraffic` entry (weights and state together) and a `set_weights` action; the
//! orchestrator applies the weights, measures both sides and reports the KPIs with its
//! outcome, and the leader gates the step on them ([`crate::judge::gate_summary`]). A failed
//! gate rolls back to the last verified weights; a failed action (the weights could not be
//! set, or the shadow is dead) rolls back to the weights before the shift. Either way a
//! `set_weights` action carries the restored weights to the orchestrators. After the last
//! step the shadow is promoted and the original goes to standby (a `standby` action). A
//! rolled-back shadow that still holds a verified share keeps serving it and is not retired.
//! A service with no traffic weights for the original has nothing to shift: the validated
//! shadow is promoted at once (an orchestrator that routes by weights of its own, as the
//! bundled agent does when the cluster set none, hands the original's share to the shadow
//! when the original goes to standby).

use std::collections::BTreeMap;

use augur_types::{
    Action, ActionKind, ActionOutcome, ActionStatus, Command, Component, ComponentId, ControlState,
    Placement, ShadowRecord, ShadowState, TrafficWeights,
};
use serde::Serialize;

use crate::judge::{gate_summary, GateConfig};
use crate::shift::step_weights;

/// One thing to commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum LifecycleStep {
    Advance {
        component: ComponentId,
        to: ShadowState,
        reason: String,
    },
    Append {
        request_id: String,
        kind: ActionKind,
        component: ComponentId,
        params: BTreeMap<String, String>,
    },
    /// Registers the shadow as a component of the original's service.
    Register(Component),
    /// A traffic step: the service's weights and the shadow's state together.
    Shift {
        component: ComponentId,
        percent: u8,
        weights: TrafficWeights,
        reason: String,
    },
    /// Back to the last verified weights (to those before the shift if the shadow died).
    RollBack {
        component: ComponentId,
        shadow_dead: bool,
        reason: String,
    },
}

impl LifecycleStep {
    /// The command that commits this step (`at_ms` stamps an appended action).
    pub fn into_command(self, at_ms: u64) -> Command {
        match self {
            LifecycleStep::Advance {
                component,
                to,
                reason,
            } => Command::AdvanceShadow {
                component,
                to,
                reason,
            },
            LifecycleStep::Append {
                request_id,
                kind,
                component,
                params,
            } => Command::AppendAction {
                request_id,
                kind,
                target: component,
                params,
                at_ms,
            },
            LifecycleStep::Register(c) => Command::UpsertComponent(c),
            LifecycleStep::Shift {
                component,
                percent,
                weights,
                reason,
            } => Command::ShiftTraffic {
                component,
                percent,
                weights,
                reason,
            },
            LifecycleStep::RollBack {
                component,
                shadow_dead,
                reason,
            } => Command::RollBackShift {
                component,
                shadow_dead,
                reason,
            },
        }
    }
}

/// How the latest action of `kind` for `shadow` ended, if it has.
pub(crate) fn outcome(
    state: &ControlState,
    shadow: &ComponentId,
    kind: ActionKind,
) -> Option<(String, ActionOutcome)> {
    state
        .actions
        .iter()
        .rev()
        .filter(|a| {
            a.kind == kind && a.params.get("shadow").map(String::as_str) == Some(shadow.as_str())
        })
        .find_map(|a| match &a.status {
            ActionStatus::Done {
                orchestrator,
                outcome,
                ..
            } => Some((orchestrator.clone(), outcome.clone())),
            ActionStatus::Pending => None,
        })
}

/// How many times a rolled-back shadow's retire is asked for before the leader leaves it to
/// an operator (`ctl shadows` shows it rolled back, not retired).
pub const RETIRE_TRIES: usize = 5;

/// The retire actions of `shadow` in the log, and whether one is still pending.
fn retires(state: &ControlState, shadow: &ComponentId) -> (usize, bool) {
    let mine = state.actions.iter().filter(|a| {
        a.kind == ActionKind::Retire
            && a.params.get("shadow").map(String::as_str) == Some(shadow.as_str())
    });
    mine.fold((0, false), |(n, pending), a| {
        (n + 1, pending || a.status == ActionStatus::Pending)
    })
}

fn append(kind: ActionKind, component: &ComponentId, shadow: &ComponentId) -> LifecycleStep {
    LifecycleStep::Append {
        request_id: format!("{}:{shadow}", kind.as_str()),
        kind,
        component: component.clone(),
        params: [("shadow".to_owned(), shadow.to_string())]
            .into_iter()
            .collect(),
    }
}

/// The steps to commit now, in order, for every shadow in flight; never an action already
/// in the log.
pub fn next_steps(state: &ControlState) -> Vec<LifecycleStep> {
    let mut out = Vec::new();
    // Promoted and rolled-back shadows still have steps to take (standby, retire).
    let live = |r: &ShadowRecord| {
        r.state.in_flight() || matches!(r.state, ShadowState::RolledBack | ShadowState::Promoted)
    };
    for (component, rec) in state.shadows.iter().filter(|(_, r)| live(r)) {
        let shadow = &rec.shadow;
        let advance = |to: ShadowState, reason: String| LifecycleStep::Advance {
            component: component.clone(),
            to,
            reason,
        };
        let step = |kind: ActionKind| outcome(state, shadow, kind);
        match rec.state {
            ShadowState::Requested
                if state
                    .action_by_request(&provision_request(shadow))
                    .is_none() =>
            {
                // Requested, but the leader that requested it died before its action.
                out.push(provision(component, rec));
            }
            ShadowState::Requested => match step(ActionKind::Provision) {
                Some((by, ActionOutcome::Succeeded)) => out.push(advance(
                    ShadowState::Provisioned,
                    format!("provisioned by {by}"),
                )),
                Some((by, ActionOutcome::Failed { reason })) => out.push(advance(
                    ShadowState::RolledBack,
                    format!("provisioning failed ({by}): {reason}"),
                )),
                None => {}
            },
            ShadowState::Provisioned => {
                out.push(append(ActionKind::Sync, component, shadow));
                out.push(advance(
                    ShadowState::Syncing,
                    "replicating the component's state to the shadow".into(),
                ));
            }
            ShadowState::Syncing => match step(ActionKind::Sync) {
                Some((by, ActionOutcome::Succeeded)) => {
                    out.push(append(ActionKind::Validate, component, shadow));
                    out.push(advance(
                        ShadowState::Validating,
                        format!("state synced by {by}; validating against the original"),
                    ));
                }
                Some((by, ActionOutcome::Failed { reason })) => out.push(advance(
                    ShadowState::RolledBack,
                    format!("state sync failed ({by}): {reason}"),
                )),
                None => {}
            },
            ShadowState::Validating => match step(ActionKind::Validate) {
                Some((by, ActionOutcome::Failed { reason })) => out.push(advance(
                    ShadowState::RolledBack,
                    format!("validation failed ({by}): {reason}"),
                )),
                Some((by, ActionOutcome::Succeeded)) => {
                    start_shift(state, component, rec, &by, &mut out);
                }
                None => {}
            },
            ShadowState::Shifting { weight } => {
                gate_step(state, component, rec, weight, &mut out);
            }
            ShadowState::Promoted => {
                let id = format!("standby:{shadow}");
                if state.action_by_request(&id).is_none() {
                    out.push(LifecycleStep::Append {
                        request_id: id,
                        kind: ActionKind::Standby,
                        component: component.clone(),
                        params: [("shadow".to_owned(), shadow.to_string())]
                            .into_iter()
                            .collect(),
                    });
                }
            }
            ShadowState::RolledBack => {
                // The orchestrators learn the restored weights first.
                if let Some(shift) = &rec.shift {
                    let id = format!("rollback:{shadow}");
                    if state.action_by_request(&id).is_none() {
                        let mut now = state
                            .weights
                            .get(&shift.service)
                            .cloned()
                            .unwrap_or_default();
                        // Back before its first verified step, the shadow is no longer in the
                        // service's weights; the orchestrators only change the servers a map
                        // names, so it is named, at 0, or it would keep its last step's share.
                        now.entry(rec.shadow.clone()).or_insert(0);
                        out.push(set_weights(
                            id,
                            component,
                            &rec.shadow,
                            &shift.service,
                            0,
                            &now,
                        ));
                        continue;
                    }
                    // Held at a verified share: it keeps serving, and is not retired.
                    if now_routes_to(state, &shift.service, shadow) {
                        continue;
                    }
                }
                // A rolled-back shadow is retired, and only then may the component get another.
                match step(ActionKind::Retire) {
                    Some((by, ActionOutcome::Succeeded)) => {
                        out.push(advance(ShadowState::Retired, format!("retired by {by}")))
                    }
                    // Until it is retired the component gets no other shadow, so a failed
                    // retire (an agent cut off past its lease, HAProxy refusing the delete)
                    // is tried again, up to RETIRE_TRIES times in all.
                    Some((_, ActionOutcome::Failed { .. })) => {
                        let (tries, pending) = retires(state, shadow);
                        if !pending && tries < RETIRE_TRIES {
                            let mut retry = append(ActionKind::Retire, component, shadow);
                            if let LifecycleStep::Append { request_id, .. } = &mut retry {
                                request_id.push_str(&format!(":{}", tries + 1));
                            }
                            out.push(retry);
                        }
                    }
                    None => out.push(append(ActionKind::Retire, component, shadow)),
                }
            }
            _ => {}
        }
    }
    // An action already in the log is not asked for again (a pending retire, a step
    // repeated by a new leader): the state would take it as a no-op, but each append is a
    // Raft entry that wakes the leader's next round, a loop of hundreds of entries a second
    // until the orchestrator answered.
    out.retain(|step| match step {
        LifecycleStep::Append { request_id, .. } => state.action_by_request(request_id).is_none(),
        _ => true,
    });
    out
}

fn provision_request(shadow: &ComponentId) -> String {
    format!("plan:{shadow}")
}

/// The `provision` action of a requested shadow: where it goes and why (the first step of its
/// history).
pub fn provision(component: &ComponentId, rec: &ShadowRecord) -> LifecycleStep {
    let reason = rec.history.first().map(|h| h.1.clone()).unwrap_or_default();
    provision_action(component, &rec.shadow, &rec.placement, reason)
}

/// A `provision` action for `instance` at `at`, on behalf of `component`.
pub(crate) fn provision_action(
    component: &ComponentId,
    instance: &ComponentId,
    at: &Placement,
    reason: String,
) -> LifecycleStep {
    let params = [
        ("shadow", instance.to_string()),
        ("host", at.host.clone()),
        ("rack", at.rack.clone()),
        ("zone", at.zone.clone()),
        ("reason", reason),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    LifecycleStep::Append {
        request_id: provision_request(instance),
        kind: ActionKind::Provision,
        component: component.clone(),
        params,
    }
}

fn now_routes_to(state: &ControlState, service: &str, id: &ComponentId) -> bool {
    state
        .weights
        .get(service)
        .and_then(|w| w.get(id))
        .is_some_and(|&w| w > 0)
}

/// `id=weight,…`, the form a `set_weights` action carries.
pub fn encode_weights(w: &TrafficWeights) -> String {
    w.iter()
        .map(|(c, v)| format!("{c}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A `set_weights` action for the orchestrators: the service's weights to apply and, for a
/// step (`percent` > 0), what the gate needs.
pub(crate) fn set_weights(
    request_id: String,
    component: &ComponentId,
    shadow: &ComponentId,
    service: &str,
    percent: u8,
    weights: &TrafficWeights,
) -> LifecycleStep {
    let mut params: BTreeMap<String, String> = [
        ("shadow", shadow.to_string()),
        ("service", service.to_owned()),
        ("weights", encode_weights(weights)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    if percent > 0 {
        params.insert("percent".into(), percent.to_string());
        params.insert(
            "min_requests".into(),
            GateConfig::default().min_requests.to_string(),
        );
    }
    LifecycleStep::Append {
        request_id,
        kind: ActionKind::SetWeights,
        component: component.clone(),
        params,
    }
}

fn step_request(shadow: &ComponentId, percent: u8) -> String {
    format!("shift:{shadow}:{percent}")
}

/// The validated shadow joins the original's service and takes the first canary step; with
/// no weights to move it is promoted at once.
fn start_shift(
    state: &ControlState,
    component: &ComponentId,
    rec: &ShadowRecord,
    by: &str,
    out: &mut Vec<LifecycleStep>,
) {
    let Some(original) = state.components.get(component) else {
        return;
    };
    let service = &original.group;
    let moving = state
        .weights
        .get(service)
        .and_then(|w| w.get(component))
        .copied()
        .unwrap_or(0);
    if moving == 0 {
        let reason = format!(
            "validated by {by}; service {service} routes no traffic to {component}: nothing to shift"
        );
        out.push(LifecycleStep::Advance {
            component: component.clone(),
            to: ShadowState::Shifting { weight: 100 },
            reason,
        });
        out.push(LifecycleStep::Advance {
            component: component.clone(),
            to: ShadowState::Promoted,
            reason: "promoted: the shadow takes the original's place".into(),
        });
        return;
    }
    if !state.components.contains_key(&rec.shadow) {
        let mut labels = original.labels.clone();
        labels.insert("shadow_of".into(), component.to_string());
        labels.remove("entry");
        let shadow = Component {
            id: rec.shadow.clone(),
            placement: rec.placement.clone(),
            labels,
            ..original.clone()
        };
        // The state would refuse it on a full host: a shadow whose host filled up since it
        // was placed (an operator's `--host`, a registration meanwhile) cannot take traffic,
        // and is rolled back rather than asked for again and again.
        if let Err(full) = state.check_host_room(&shadow) {
            out.push(LifecycleStep::Advance {
                component: component.clone(),
                to: ShadowState::RolledBack,
                reason: format!("validated by {by}, but {full}"),
            });
            return;
        }
        out.push(LifecycleStep::Register(shadow));
    }
    let first = state.policy_for(service).canary_steps[0];
    let weights = step_weights(
        &state.weights[service],
        component,
        &rec.shadow,
        moving,
        first,
    );
    let reason = format!("validated by {by}; {first}% of {component}'s traffic to the shadow");
    shift_step(out, component, rec, service, first, weights, reason);
}

/// A traffic step: the weights with the shadow's state, then the action that carries them to
/// the orchestrators.
fn shift_step(
    out: &mut Vec<LifecycleStep>,
    component: &ComponentId,
    rec: &ShadowRecord,
    service: &str,
    percent: u8,
    weights: TrafficWeights,
    reason: String,
) {
    let action = set_weights(
        step_request(&rec.shadow, percent),
        component,
        &rec.shadow,
        service,
        percent,
        &weights,
    );
    out.push(LifecycleStep::Shift {
        component: component.clone(),
        percent,
        weights,
        reason,
    });
    out.push(action);
}

/// A step in force: make sure the orchestrators have it, then gate it on their KPIs.
fn gate_step(
    state: &ControlState,
    component: &ComponentId,
    rec: &ShadowRecord,
    percent: u8,
    out: &mut Vec<LifecycleStep>,
) {
    let Some(shift) = &rec.shift else {
        // Moved without weights (nothing to shift): promote.
        if percent == 100 {
            out.push(LifecycleStep::Advance {
                component: component.clone(),
                to: ShadowState::Promoted,
                reason: "promoted: the shadow takes the original's place".into(),
            });
        }
        return;
    };
    let id = step_request(&rec.shadow, percent);
    let Some(action) = state.action_by_request(&id) else {
        // The step was committed but its action not yet (a leader change in between).
        let now = state
            .weights
            .get(&shift.service)
            .cloned()
            .unwrap_or_default();
        out.push(set_weights(
            id,
            component,
            &rec.shadow,
            &shift.service,
            percent,
            &now,
        ));
        return;
    };
    let (by, outcome) = match &action.status {
        ActionStatus::Pending => return,
        ActionStatus::Done {
            orchestrator,
            outcome,
            ..
        } => (orchestrator, outcome),
    };
    let roll_back = |shadow_dead: bool, reason: String| LifecycleStep::RollBack {
        component: component.clone(),
        shadow_dead,
        reason,
    };
    if let ActionOutcome::Failed { reason } = outcome {
        out.push(roll_back(
            true,
            format!(
                "step {percent}% failed ({by}): {reason}; back to the weights before the shift"
            ),
        ));
        return;
    }
    let verdict = match gate(action) {
        Ok(v) => v,
        Err(why) => {
            out.push(roll_back(false, format!("step {percent}% ({by}): {why}")));
            return;
        }
    };
    if !verdict.pass {
        out.push(roll_back(
            false,
            format!(
                "gate of step {percent}% failed ({by}): {}; back to the last verified weights",
                verdict.reasons.join("; ")
            ),
        ));
        return;
    }
    let steps = state.policy_for(&shift.service).canary_steps;
    match steps.iter().find(|&&p| p > percent) {
        Some(&next) => {
            let moving = shift.before.get(component).copied().unwrap_or(0);
            let now = state.weights.get(&shift.service).cloned().unwrap_or_default();
            let weights = step_weights(&now, component, &rec.shadow, moving, next);
            let reason = format!("gate of step {percent}% passed ({by}); {next}%");
            shift_step(out, component, rec, &shift.service, next, weights, reason);
        }
        None => out.push(LifecycleStep::Advance {
            component: component.clone(),
            to: ShadowState::Promoted,
            reason: format!(
                "gate of step {percent}% passed ({by}); promoted: the shadow takes {component}'s traffic"
            ),
        }),
    }
}

/// The gate of a reported step; a success without KPIs cannot be judged.
fn gate(action: &Action) -> Result<crate::judge::Verdict, String> {
    let kpis = action
        .kpis
        .as_ref()
        .ok_or("reported success without KPIs; a step cannot pass unmeasured")?;
    Ok(gate_summary(kpis, &GateConfig::default()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use augur_types::{KpiSample, Kpis, Placement};

    fn state_with_shadow() -> ControlState {
        let mut s = ControlState::default();
        let id = ComponentId::new("db").unwrap();
        let placement = Placement {
            host: "h1".into(),
            rack: "r1".into(),
            zone: "z1".into(),
        };
        s.components.insert(
            id.clone(),
            Component {
                id: id.clone(),
                class: "db".into(),
                group: "g".into(),
                criticality: 3,
                placement: placement.clone(),
                labels: BTreeMap::new(),
            },
        );
        s.apply(
            1,
            &Command::RequestShadow {
                component: id.clone(),
                shadow: ComponentId::new("db.shadow-1").unwrap(),
                placement,
                reason: "at risk".into(),
            },
        )
        .unwrap();
        s
    }

    /// Commits the steps as the leader would.
    fn commit(s: &mut ControlState, steps: Vec<LifecycleStep>) {
        for step in steps {
            s.apply(1, &step.into_command(1))
                .expect("every step is legal");
        }
    }

    fn report(s: &mut ControlState, kind: ActionKind, outcome: ActionOutcome, kpis: Option<Kpis>) {
        let id = s.actions.iter().rev().find(|a| a.kind == kind).unwrap().id;
        s.apply(
            1,
            &Command::ReportOutcome {
                id,
                orchestrator: "agent-1".into(),
                outcome,
                kpis,
                at_ms: 2,
            },
        )
        .unwrap();
    }

    fn side(requests: u64, errors: u64, p99_ms: u64) -> KpiSample {
        KpiSample {
            requests,
            errors,
            p99_us: p99_ms * 1000,
        }
    }

    /// A shadow whose host filled up while it was validated is rolled back, not registered
    /// (the state would refuse it on every round).
    #[test]
    fn a_validated_shadow_whose_host_filled_up_is_rolled_back() {
        let mut s = state_with_shadow();
        // db and db2 on h1, which holds 2: the shadow (placed on h1 too) has no room.
        s.apply(
            1,
            &Command::UpsertHost(augur_types::Host {
                placement: Placement {
                    host: "h1".into(),
                    rack: "r1".into(),
                    zone: "z1".into(),
                },
                capacity: 2,
            }),
        )
        .unwrap();
        add_db2_half_and_half(&mut s);
        provision(&mut s);
        succeed_to_validation(&mut s);
        let rec = &s.shadows[&ComponentId::new("db").unwrap()];
        assert_eq!(rec.state, ShadowState::RolledBack, "{:?}", rec.history);
        assert!(rec.history.last().unwrap().1.contains("host h1 is full"));
        assert!(!s.components.contains_key(&rec.shadow));
    }

    /// A shadow whose provision failed ("no image"), after the round that rolls it back.
    fn rolled_back_at_provision() -> ControlState {
        let mut s = state_with_shadow();
        provision(&mut s);
        report(
            &mut s,
            ActionKind::Provision,
            ActionOutcome::Failed {
                reason: "no image".into(),
            },
            None,
        );
        round(&mut s);
        s
    }

    /// The pending step's gate: the shadow's error rate far above the original's.
    fn report_worse_shadow(s: &mut ControlState) {
        let worse = Some(Kpis {
            original: side(5000, 5, 40),
            shadow: side(400, 60, 41),
        });
        report(s, ActionKind::SetWeights, ActionOutcome::Succeeded, worse);
    }

    fn healthy() -> Option<Kpis> {
        Some(Kpis {
            original: side(5000, 5, 40),
            shadow: side(300, 0, 41),
        })
    }

    /// One leader round: the steps the state calls for, committed.
    fn round(s: &mut ControlState) {
        let steps = next_steps(s);
        commit(s, steps);
    }

    /// Two leader rounds: enough for every step an outcome allows.
    fn settle(s: &mut ControlState) {
        round(s);
        round(s);
    }

    /// How many actions of `kind` the log holds.
    fn count(s: &ControlState, kind: ActionKind) -> usize {
        s.actions.iter().filter(|a| a.kind == kind).count()
    }

    /// Provision, sync and validation reported done, each followed by the leader's rounds.
    fn succeed_to_validation(s: &mut ControlState) {
        for kind in [
            ActionKind::Provision,
            ActionKind::Sync,
            ActionKind::Validate,
        ] {
            report(s, kind, ActionOutcome::Succeeded, None);
            settle(s);
        }
    }

    /// A shadow of `db` (half of service `g`, with `db2`) walked to validated.
    /// db2 joins db's service, the two at 50 / 50.
    fn add_db2_half_and_half(s: &mut ControlState) {
        let db2 = Component {
            id: ComponentId::new("db2").unwrap(),
            ..s.components[&ComponentId::new("db").unwrap()].clone()
        };
        s.apply(1, &Command::UpsertComponent(db2)).unwrap();
        let weights = [("db", 50), ("db2", 50)]
            .into_iter()
            .map(|(c, w)| (ComponentId::new(c).unwrap(), w))
            .collect();
        s.apply(
            1,
            &Command::SetWeights {
                service: "g".into(),
                weights,
            },
        )
        .unwrap();
    }

    fn validated() -> ControlState {
        let mut s = state_with_shadow();
        add_db2_half_and_half(&mut s);
        provision(&mut s);
        succeed_to_validation(&mut s);
        s
    }

    fn weights(s: &ControlState) -> Vec<(String, u32)> {
        s.weights["g"]
            .iter()
            .map(|(c, &w)| (c.to_string(), w))
            .collect()
    }

    fn set_weights_actions(s: &ControlState) -> Vec<String> {
        s.actions
            .iter()
            .filter(|a| a.kind == ActionKind::SetWeights)
            .map(|a| a.params["weights"].clone())
            .collect()
    }

    #[test]
    fn a_validated_shadow_shifts_in_gated_steps_and_is_promoted() {
        let mut s = validated();
        let db = ComponentId::new("db").unwrap();
        assert_eq!(s.shadows[&db].state, ShadowState::Shifting { weight: 1 });
        assert!(s
            .components
            .contains_key(&ComponentId::new("db.shadow-1").unwrap()));
        assert_eq!(
            weights(&s),
            [
                ("db".into(), 49),
                ("db.shadow-1".into(), 1),
                ("db2".into(), 50)
            ]
        );
        // Pending: the step holds, and retried rounds append nothing.
        for _ in 0..3 {
            round(&mut s);
        }
        assert_eq!(set_weights_actions(&s).len(), 1);
        for expect in [5, 25, 50, 100] {
            report(
                &mut s,
                ActionKind::SetWeights,
                ActionOutcome::Succeeded,
                healthy(),
            );
            round(&mut s);
            assert_eq!(
                s.shadows[&db].state,
                ShadowState::Shifting { weight: expect }
            );
            let w = s.weights["g"].values().sum::<u32>();
            assert_eq!(w, 100);
        }
        assert_eq!(
            weights(&s),
            [
                ("db".into(), 0),
                ("db.shadow-1".into(), 50),
                ("db2".into(), 50)
            ]
        );
        report(
            &mut s,
            ActionKind::SetWeights,
            ActionOutcome::Succeeded,
            healthy(),
        );
        for _ in 0..2 {
            round(&mut s);
        }
        assert_eq!(s.shadows[&db].state, ShadowState::Promoted);
        let standby: Vec<&Action> = s
            .actions
            .iter()
            .filter(|a| a.kind == ActionKind::Standby)
            .collect();
        assert_eq!(standby.len(), 1, "the original goes to standby once");
        assert_eq!(standby[0].target, db);
        assert_eq!(
            set_weights_actions(&s),
            [
                "db=49,db.shadow-1=1,db2=50",
                "db=47,db.shadow-1=3,db2=50",
                "db=37,db.shadow-1=13,db2=50",
                "db=25,db.shadow-1=25,db2=50",
                "db=0,db.shadow-1=50,db2=50"
            ]
        );
    }

    #[test]
    fn a_failed_gate_rolls_back_to_the_last_verified_weights() {
        let mut s = validated();
        let db = ComponentId::new("db").unwrap();
        for _ in 0..2 {
            report(
                &mut s,
                ActionKind::SetWeights,
                ActionOutcome::Succeeded,
                healthy(),
            );
            round(&mut s);
        }
        assert_eq!(s.shadows[&db].state, ShadowState::Shifting { weight: 25 });
        let verified = s.shadows[&db].shift.as_ref().unwrap().verified.clone();
        report_worse_shadow(&mut s);
        round(&mut s);
        let rec = &s.shadows[&db];
        assert_eq!(rec.state, ShadowState::RolledBack);
        assert!(
            rec.history.last().unwrap().1.contains("error rate"),
            "{:?}",
            rec.history
        );
        assert_eq!(
            s.weights["g"], verified,
            "back to the 5 % step, which passed"
        );
        // The orchestrators get the restored weights, once; the shadow keeps its verified
        // share, so it is not retired.
        for _ in 0..3 {
            round(&mut s);
        }
        let w = set_weights_actions(&s);
        assert_eq!(w.last().unwrap(), "db=47,db.shadow-1=3,db2=50");
        assert_eq!(w.len(), 4);
        assert!(!s.actions.iter().any(|a| a.kind == ActionKind::Retire));
    }

    #[test]
    fn a_rollback_before_any_verified_step_sets_the_shadow_to_0() {
        let mut s = validated();
        let db = ComponentId::new("db").unwrap();
        report_worse_shadow(&mut s);
        round(&mut s);
        assert_eq!(s.shadows[&db].state, ShadowState::RolledBack);
        assert!(!s.weights["g"].contains_key(&ComponentId::new("db.shadow-1").unwrap()));
        round(&mut s);
        let w = set_weights_actions(&s);
        assert_eq!(w.last().unwrap(), "db=50,db.shadow-1=0,db2=50");
    }

    #[test]
    fn a_rollback_leaves_another_shift_in_the_service_alone() {
        let mut s = validated();
        let (db, db2) = (
            ComponentId::new("db").unwrap(),
            ComponentId::new("db2").unwrap(),
        );
        s.apply(
            1,
            &Command::RequestShadow {
                component: db2.clone(),
                shadow: ComponentId::new("db2.shadow-1").unwrap(),
                placement: s.components[&db].placement.clone(),
                reason: "also at risk".into(),
            },
        )
        .unwrap();
        settle(&mut s);
        for kind in [
            ActionKind::Provision,
            ActionKind::Sync,
            ActionKind::Validate,
        ] {
            let id = s
                .actions
                .iter()
                .rev()
                .find(|a| a.kind == kind && a.target == db2)
                .unwrap()
                .id;
            let done = Command::ReportOutcome {
                id,
                orchestrator: "agent-1".into(),
                outcome: ActionOutcome::Succeeded,
                kpis: None,
                at_ms: 2,
            };
            s.apply(1, &done).unwrap();
            settle(&mut s);
        }
        assert_eq!(s.shadows[&db2].state, ShadowState::Shifting { weight: 1 });
        let db2_pair = |s: &ControlState| {
            let w = &s.weights["g"];
            (w[&db2], w[&ComponentId::new("db2.shadow-1").unwrap()])
        };
        let before = db2_pair(&s);
        assert_eq!(before, (49, 1));
        // db's first step fails its gate: db and its shadow go back, db2's shift stays.
        let id = s
            .actions
            .iter()
            .find(|a| a.request_id == "shift:db.shadow-1:1")
            .unwrap()
            .id;
        let worse = Some(Kpis {
            original: side(5000, 5, 40),
            shadow: side(400, 60, 41),
        });
        s.apply(
            1,
            &Command::ReportOutcome {
                id,
                orchestrator: "agent-1".into(),
                outcome: ActionOutcome::Succeeded,
                kpis: worse,
                at_ms: 3,
            },
        )
        .unwrap();
        settle(&mut s);
        assert_eq!(s.shadows[&db].state, ShadowState::RolledBack);
        assert_eq!(db2_pair(&s), before);
        assert_eq!(s.weights["g"][&db], 50);
        assert_eq!(s.weights["g"].values().sum::<u32>(), 100);
    }

    #[test]
    fn a_dead_shadow_gives_back_every_point_and_is_retired() {
        let mut s = validated();
        let db = ComponentId::new("db").unwrap();
        let before = s.shadows[&db].shift.as_ref().unwrap().before.clone();
        report(
            &mut s,
            ActionKind::SetWeights,
            ActionOutcome::Succeeded,
            healthy(),
        );
        round(&mut s);
        report(
            &mut s,
            ActionKind::SetWeights,
            ActionOutcome::Failed {
                reason: "shadow health check: connection refused".into(),
            },
            None,
        );
        for _ in 0..3 {
            round(&mut s);
        }
        assert_eq!(s.shadows[&db].state, ShadowState::RolledBack);
        assert_eq!(s.weights["g"], before);
        assert_eq!(
            set_weights_actions(&s).last().unwrap(),
            "db=50,db.shadow-1=0,db2=50"
        );
        assert_eq!(count(&s, ActionKind::Retire), 1);
    }

    #[test]
    fn a_success_without_kpis_does_not_pass_a_step() {
        let mut s = validated();
        report(
            &mut s,
            ActionKind::SetWeights,
            ActionOutcome::Succeeded,
            None,
        );
        round(&mut s);
        let rec = &s.shadows[&ComponentId::new("db").unwrap()];
        assert_eq!(rec.state, ShadowState::RolledBack);
        assert!(rec.history.last().unwrap().1.contains("without KPIs"));
    }

    #[test]
    fn a_step_committed_without_its_action_gets_it_from_the_next_leader() {
        let mut s = validated();
        // As if the leader died between the step and its action: drop the action.
        let last = s.actions.pop().unwrap();
        assert_eq!(last.kind, ActionKind::SetWeights);
        s.reindex();
        round(&mut s);
        assert_eq!(set_weights_actions(&s), ["db=49,db.shadow-1=1,db2=50"]);
    }

    #[test]
    fn a_shadow_of_a_component_without_traffic_is_promoted_at_once() {
        let mut s = state_with_shadow();
        provision(&mut s);
        succeed_to_validation(&mut s);
        let rec = &s.shadows[&ComponentId::new("db").unwrap()];
        assert_eq!(rec.state, ShadowState::Promoted);
        assert!(rec.history[rec.history.len() - 2]
            .1
            .contains("nothing to shift"));
    }

    /// The leader's first round after the request: the provision action.
    fn provision(s: &mut ControlState) {
        let steps = next_steps(s);
        assert_eq!(steps.len(), 1);
        commit(s, steps);
        assert_eq!(s.actions.last().unwrap().params["host"], "h1");
        assert_eq!(s.actions.last().unwrap().params["reason"], "at risk");
    }

    #[test]
    fn outcomes_walk_the_shadow_to_validation_and_steps_repeat_harmlessly() {
        let mut s = state_with_shadow();
        provision(&mut s);
        assert!(
            next_steps(&s).is_empty(),
            "nothing until the provision is done"
        );
        report(
            &mut s,
            ActionKind::Provision,
            ActionOutcome::Succeeded,
            None,
        );
        for _ in 0..3 {
            round(&mut s);
        }
        let rec = &s.shadows[&ComponentId::new("db").unwrap()];
        assert_eq!(rec.state, ShadowState::Syncing);
        // The sync action was appended once, however often the steps were taken.
        assert_eq!(count(&s, ActionKind::Sync), 1);
        report(&mut s, ActionKind::Sync, ActionOutcome::Succeeded, None);
        round(&mut s);
        let rec = &s.shadows[&ComponentId::new("db").unwrap()];
        assert_eq!(rec.state, ShadowState::Validating);
        assert!(rec.history.last().unwrap().1.contains("synced by agent-1"));
        assert_eq!(count(&s, ActionKind::Validate), 1);
        report(
            &mut s,
            ActionKind::Validate,
            ActionOutcome::Failed {
                reason: "p99 2x the original".into(),
            },
            None,
        );
        round(&mut s);
        let rec = &s.shadows[&ComponentId::new("db").unwrap()];
        assert_eq!(rec.state, ShadowState::RolledBack);
        assert!(rec.history.last().unwrap().1.contains("p99 2x"));
        // Rolled back: retired once the orchestrator confirms, then nothing more.
        for _ in 0..2 {
            round(&mut s);
        }
        assert_eq!(count(&s, ActionKind::Retire), 1);
        report(&mut s, ActionKind::Retire, ActionOutcome::Succeeded, None);
        round(&mut s);
        assert!(next_steps(&s).is_empty(), "a retired shadow is done");
        let rec = &s.shadows[&ComponentId::new("db").unwrap()];
        let states: Vec<String> = rec.history.iter().map(|h| h.0.to_string()).collect();
        assert_eq!(
            states,
            [
                "requested",
                "provisioned",
                "syncing",
                "validating",
                "rolledback",
                "retired"
            ]
        );
        assert_eq!(rec.history[0].1, "at risk");
    }

    /// A failed retire is asked for again (the component gets no other shadow until this
    /// one is retired), a bounded number of times.
    #[test]
    fn a_failed_retire_is_retried_a_bounded_number_of_times() {
        let mut s = rolled_back_at_provision();
        round(&mut s);
        assert_eq!(count(&s, ActionKind::Retire), 1);
        // Pending: no step at all, not the same append again (each would be a Raft entry).
        assert!(next_steps(&s).is_empty(), "{:?}", next_steps(&s));
        let failed = || ActionOutcome::Failed {
            reason: "haproxy: server has connections".into(),
        };
        report(&mut s, ActionKind::Retire, failed(), None);
        round(&mut s);
        round(&mut s);
        assert_eq!(
            count(&s, ActionKind::Retire),
            2,
            "one retry, not one a round"
        );
        assert!(s.action_by_request("retire:db.shadow-1:2").is_some());
        report(&mut s, ActionKind::Retire, ActionOutcome::Succeeded, None);
        round(&mut s);
        let db = ComponentId::new("db").unwrap();
        assert_eq!(s.shadows[&db].state, ShadowState::Retired);

        // Every try failing: RETIRE_TRIES actions, then it waits for an operator.
        let mut s = rolled_back_at_provision();
        for _ in 0..RETIRE_TRIES + 2 {
            round(&mut s);
            if s.actions.last().unwrap().status == ActionStatus::Pending {
                report(&mut s, ActionKind::Retire, failed(), None);
            }
        }
        assert_eq!(count(&s, ActionKind::Retire), RETIRE_TRIES);
        assert_eq!(s.shadows[&db].state, ShadowState::RolledBack);
    }

    #[test]
    fn a_failed_provision_rolls_back() {
        let s = rolled_back_at_provision();
        let rec = s.shadows.values().next().unwrap();
        assert_eq!(rec.state, ShadowState::RolledBack);
        assert!(rec.history.last().unwrap().1.contains("no image"));
    }
}

//! The shadow lifecycle, driven by the action log: what the leader commits next for every
//! shadow in flight, decided from the replicated state alone (so a new leader picks up where
//! the old one stopped, and a step is never carried out twice: actions are appended under
//! request ids derived from the shadow, and a repeated append is answered, not repeated).
//!
//! Requested ─provision done─► Provisioned ─► Syncing (sync action) ─sync done─►
//! Validating (validate action). A failed action rolls the shadow back; a rolled-back shadow
//! gets a retire action and is Retired when it succeeds (until then the planner leaves the
//! component alone). The traffic shift after validation is not driven here yet.

use std::collections::BTreeMap;

use augur_types::{
    ActionKind, ActionOutcome, ActionStatus, Command, ComponentId, ControlState, ShadowState,
};
use serde::Serialize;

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
        }
    }
}

/// How the latest action of `kind` for `shadow` ended, if it has.
fn outcome(
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

fn append(kind: ActionKind, component: &ComponentId, shadow: &ComponentId) -> LifecycleStep {
    let name = format!("{kind:?}").to_lowercase();
    LifecycleStep::Append {
        request_id: format!("{name}:{shadow}"),
        kind,
        component: component.clone(),
        params: [("shadow".to_owned(), shadow.to_string())]
            .into_iter()
            .collect(),
    }
}

/// The steps to commit now, in order, for every shadow in flight.
pub fn next_steps(state: &ControlState) -> Vec<LifecycleStep> {
    let mut out = Vec::new();
    let live =
        |r: &augur_types::ShadowRecord| r.state.in_flight() || r.state == ShadowState::RolledBack;
    for (component, rec) in state.shadows.iter().filter(|(_, r)| live(r)) {
        let shadow = &rec.shadow;
        let advance = |to: ShadowState, reason: String| LifecycleStep::Advance {
            component: component.clone(),
            to,
            reason,
        };
        let step = |kind: ActionKind| outcome(state, shadow, kind);
        match rec.state {
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
            ShadowState::Validating => {
                if let Some((by, ActionOutcome::Failed { reason })) = step(ActionKind::Validate) {
                    out.push(advance(
                        ShadowState::RolledBack,
                        format!("validation failed ({by}): {reason}"),
                    ));
                }
            }
            // A rolled-back shadow is retired, and only then may the component get another.
            ShadowState::RolledBack => match step(ActionKind::Retire) {
                Some((by, ActionOutcome::Succeeded)) => {
                    out.push(advance(ShadowState::Retired, format!("retired by {by}")))
                }
                Some((_, ActionOutcome::Failed { .. })) => {}
                None => out.push(append(ActionKind::Retire, component, shadow)),
            },
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use augur_types::{Component, Placement};

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

    fn report(s: &mut ControlState, kind: ActionKind, outcome: ActionOutcome) {
        let id = s.actions.iter().rev().find(|a| a.kind == kind).unwrap().id;
        s.apply(
            1,
            &Command::ReportOutcome {
                id,
                orchestrator: "agent-1".into(),
                outcome,
                at_ms: 2,
            },
        )
        .unwrap();
    }

    fn provision(s: &mut ControlState) {
        let shadow = s.shadows.values().next().unwrap().shadow.clone();
        let step = append(
            ActionKind::Provision,
            &ComponentId::new("db").unwrap(),
            &shadow,
        );
        commit(s, vec![step]);
    }

    #[test]
    fn outcomes_walk_the_shadow_to_validation_and_steps_repeat_harmlessly() {
        let mut s = state_with_shadow();
        provision(&mut s);
        assert!(
            next_steps(&s).is_empty(),
            "nothing until the provision is done"
        );
        report(&mut s, ActionKind::Provision, ActionOutcome::Succeeded);
        for _ in 0..3 {
            let steps = next_steps(&s);
            commit(&mut s, steps);
        }
        let rec = &s.shadows[&ComponentId::new("db").unwrap()];
        assert_eq!(rec.state, ShadowState::Syncing);
        // The sync action was appended once, however often the steps were taken.
        assert_eq!(
            s.actions
                .iter()
                .filter(|a| a.kind == ActionKind::Sync)
                .count(),
            1
        );
        report(&mut s, ActionKind::Sync, ActionOutcome::Succeeded);
        let steps = next_steps(&s);
        commit(&mut s, steps);
        let rec = &s.shadows[&ComponentId::new("db").unwrap()];
        assert_eq!(rec.state, ShadowState::Validating);
        assert!(rec.history.last().unwrap().1.contains("synced by agent-1"));
        assert_eq!(
            s.actions
                .iter()
                .filter(|a| a.kind == ActionKind::Validate)
                .count(),
            1
        );
        report(
            &mut s,
            ActionKind::Validate,
            ActionOutcome::Failed {
                reason: "p99 2x the original".into(),
            },
        );
        let steps = next_steps(&s);
        commit(&mut s, steps);
        let rec = &s.shadows[&ComponentId::new("db").unwrap()];
        assert_eq!(rec.state, ShadowState::RolledBack);
        assert!(rec.history.last().unwrap().1.contains("p99 2x"));
        // Rolled back: retired once the orchestrator confirms, then nothing more.
        for _ in 0..2 {
            let steps = next_steps(&s);
            commit(&mut s, steps);
        }
        assert_eq!(
            s.actions
                .iter()
                .filter(|a| a.kind == ActionKind::Retire)
                .count(),
            1
        );
        report(&mut s, ActionKind::Retire, ActionOutcome::Succeeded);
        let steps = next_steps(&s);
        commit(&mut s, steps);
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

    #[test]
    fn a_failed_provision_rolls_back() {
        let mut s = state_with_shadow();
        provision(&mut s);
        report(
            &mut s,
            ActionKind::Provision,
            ActionOutcome::Failed {
                reason: "no image".into(),
            },
        );
        let steps = next_steps(&s);
        commit(&mut s, steps);
        let rec = s.shadows.values().next().unwrap();
        assert_eq!(rec.state, ShadowState::RolledBack);
        assert!(rec.history.last().unwrap().1.contains("no image"));
    }
}

//! Failover plans: what the planner (or an operator) decided to move, where, why, and who
//! let it go ahead. A plan is *proposed* when its group's policy only recommends, and waits
//! for `augur ctl plan approve`; it is *approved* at once when the policy acts or an operator
//! asked for it. The leader starts every approved plan: it requests the shadow, whose own
//! lifecycle then carries the failover on. Plans live in the replicated state, so every step
//! and its reason survives a leader change.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::command::{Applied, Rejection};
use crate::ids::ComponentId;
use crate::state::ControlState;
use crate::topology::Placement;

/// Most finished plans kept in [`ControlState::plans`] besides the open ones.
pub const MAX_PLAN_LOG: usize = 1024;

/// How urgent a failover is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Over its threshold.
    Elevated,
    /// Over its threshold, and critical (criticality ≥ 4) or reaching half the entry points.
    High,
    /// Failure nearly certain (P ≥ 0.9).
    Critical,
}

impl Severity {
    /// The name on the wire and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Elevated => "elevated",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// Parses [`Severity::as_str`]'s names.
    pub fn parse(s: &str) -> Option<Severity> {
        [Severity::Elevated, Severity::High, Severity::Critical]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// Why a plan moves its component.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanKind {
    /// Ahead of a predicted failure (or an operator's request).
    #[default]
    Failover,
    /// Towards the service's desired footprint: nothing is failing.
    Migration,
    /// A new instance of a service, ahead of its forecast load or of its instances at risk.
    /// Its component is registered (made like the plan's template) when it starts.
    Scale,
}

impl PlanKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PlanKind::Failover => "failover",
            PlanKind::Migration => "migration",
            PlanKind::Scale => "scale",
        }
    }
}

/// Where a plan stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanStatus {
    /// Recommended; waiting for an operator.
    Proposed,
    /// Let go ahead (by an operator, or by a policy that acts); the leader starts it.
    Approved,
    /// Its shadow was requested; the shadow's lifecycle carries the failover on.
    Started,
    /// Turned down by an operator.
    Rejected,
    /// Overtaken: the risk went away, or it could no longer be carried out.
    Expired,
}

impl PlanStatus {
    /// Proposed or approved: the component's failover is still to start.
    pub fn open(self) -> bool {
        matches!(self, PlanStatus::Proposed | PlanStatus::Approved)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PlanStatus::Proposed => "proposed",
            PlanStatus::Approved => "approved",
            PlanStatus::Started => "started",
            PlanStatus::Rejected => "rejected",
            PlanStatus::Expired => "expired",
        }
    }
}

impl fmt::Display for PlanStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What is decided about a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlanDecision {
    Approve,
    Reject,
    Expire,
    /// Expires the plan only if it is still waiting for approval (the leader's expiry of a
    /// stale proposal): an approval that committed first wins, and this is refused.
    ExpireProposed,
    /// The leader requested the plan's shadow (it must be the component's current one), or,
    /// for a scale plan, registered its new instance (named here, the plan's component).
    Start {
        shadow: ComponentId,
    },
}

impl PlanDecision {
    fn status(&self) -> PlanStatus {
        match self {
            PlanDecision::Approve => PlanStatus::Approved,
            PlanDecision::Reject => PlanStatus::Rejected,
            PlanDecision::Expire | PlanDecision::ExpireProposed => PlanStatus::Expired,
            PlanDecision::Start { .. } => PlanStatus::Started,
        }
    }
}

/// One change of a plan's status: when, to what, by whom and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanEvent {
    pub at_ms: u64,
    pub status: PlanStatus,
    pub by: String,
    pub note: String,
}

/// A failover plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanRecord {
    /// `plan-N`, N counting from 1 over the cluster's life.
    pub id: String,
    pub component: ComponentId,
    #[serde(default)]
    pub kind: PlanKind,
    /// Scale plans: the instance the new one is made like (class, group, criticality).
    #[serde(default)]
    pub template: Option<ComponentId>,
    /// Where its shadow (a scale plan: its new instance) goes.
    pub to: Placement,
    pub severity: Severity,
    /// Why (the planner's figures, or the operator's words).
    pub reason: String,
    pub created_ms: u64,
    pub status: PlanStatus,
    /// The shadow it started (a scale plan: its new instance), once started.
    pub shadow: Option<ComponentId>,
    /// Every status it went through, the first being its proposal.
    pub history: Vec<PlanEvent>,
}

impl PlanRecord {
    /// The shadow this plan starts: named after the plan, so a leader that takes over
    /// between the shadow request and [`PlanDecision::Start`] recognises it.
    pub fn shadow_id(&self) -> ComponentId {
        let n = self.id.trim_start_matches("plan-");
        ComponentId::new(format!("{}.shadow-{n}", self.component))
            .expect("a component id with a numeric suffix is an id")
    }
}

/// The number in `plan-N`, if `id` is one.
pub fn plan_number(id: &str) -> Option<u64> {
    id.strip_prefix("plan-")?
        .parse()
        .ok()
        .filter(|n: &u64| *n > 0)
}

impl ControlState {
    /// The open plan (proposed or approved) of `component`, if any.
    pub fn open_plan(&self, component: &ComponentId) -> Option<&PlanRecord> {
        self.plans.open_of(component)
    }

    /// The plan named `id`, if the state still holds it.
    pub fn plan(&self, id: &str) -> Option<&PlanRecord> {
        self.plans.get(&plan_number(id)?)
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn propose_plan(
        &mut self,
        component: &ComponentId,
        kind: PlanKind,
        template: Option<&ComponentId>,
        to: &Placement,
        severity: Severity,
        reason: &str,
        approved_by: Option<&str>,
        at_ms: u64,
    ) -> Result<Applied, Rejection> {
        let invalid = |reason: String| Rejection::InvalidInput { reason };
        match (kind, template) {
            (PlanKind::Scale, None) => {
                return Err(invalid(format!(
                    "scale plan for {component} names no template instance"
                )))
            }
            (PlanKind::Scale, Some(t)) => {
                if !self.components.contains_key(t) {
                    return Err(Rejection::UnknownComponent { id: t.to_string() });
                }
                if self.components.contains_key(component) && self.open_plan(component).is_none() {
                    return Err(invalid(format!(
                        "scale plan for {component}: a component of that name is registered"
                    )));
                }
            }
            (_, Some(t)) => {
                return Err(invalid(format!(
                    "{} plan for {component} names template {t}: only scale plans have one",
                    kind.as_str()
                )))
            }
            (_, None) => {
                if !self.components.contains_key(component) {
                    return Err(Rejection::UnknownComponent {
                        id: component.to_string(),
                    });
                }
            }
        }
        to.validate()?;
        self.check_may_get_shadow(component)?;
        if let Some(open) = self.open_plan(component) {
            // One open plan per component: a second proposal answers with it. A failover
            // overtakes a proposed migration (its reason, target and severity replace the
            // migration's), and an approval carried by the second proposal (an operator
            // asking for the failover, a policy that acts) approves it.
            let (n, id) = (plan_number(&open.id).expect("own id"), open.id.clone());
            if open.status == PlanStatus::Proposed {
                self.plans
                    .update(&n, |plan| {
                        if plan.kind == PlanKind::Migration && kind == PlanKind::Failover {
                            plan.kind = kind;
                            plan.to = to.clone();
                            plan.severity = severity;
                            plan.reason = reason.to_owned();
                            plan.history.push(PlanEvent {
                                at_ms,
                                status: PlanStatus::Proposed,
                                by: "planner".to_owned(),
                                note: format!("now a failover: {reason}"),
                            });
                        }
                        if let Some(by) = approved_by {
                            plan.status = PlanStatus::Approved;
                            plan.history.push(PlanEvent {
                                at_ms,
                                status: PlanStatus::Approved,
                                by: by.to_owned(),
                                note: reason.to_owned(),
                            });
                        }
                    })
                    .expect("found above");
            }
            return Ok(Applied::Plan {
                id,
                duplicate: true,
            });
        }
        // The shadow is named `<component>.shadow-<n>`: a component id near the length limit
        // would give a shadow no id can hold, so the plan is refused here, not when started.
        let n = self.plan_seq + 1;
        ComponentId::new(format!("{component}.shadow-{n}")).map_err(|e| {
            invalid(format!(
                "{} plan for {component}: its shadow's id would be invalid: {e}",
                kind.as_str()
            ))
        })?;
        self.plan_seq = n;
        let id = format!("plan-{}", self.plan_seq);
        let mut history = vec![PlanEvent {
            at_ms,
            status: PlanStatus::Proposed,
            by: "planner".to_owned(),
            note: reason.to_owned(),
        }];
        let mut status = PlanStatus::Proposed;
        if let Some(by) = approved_by {
            status = PlanStatus::Approved;
            history[0].by = by.to_owned();
            history.push(PlanEvent {
                at_ms,
                status,
                by: by.to_owned(),
                note: String::new(),
            });
        }
        self.plans.insert(
            self.plan_seq,
            PlanRecord {
                id: id.clone(),
                component: component.clone(),
                kind,
                template: template.cloned(),
                to: to.clone(),
                severity,
                reason: reason.to_owned(),
                created_ms: at_ms,
                status,
                shadow: None,
                history,
            },
        );
        self.trim_plans();
        Ok(Applied::Plan {
            id,
            duplicate: false,
        })
    }

    pub(crate) fn decide_plan(
        &mut self,
        id: &str,
        decision: &PlanDecision,
        by: &str,
        note: &str,
        at_ms: u64,
    ) -> Result<Applied, Rejection> {
        let unknown = || Rejection::UnknownPlan { id: id.to_owned() };
        let n = plan_number(id).ok_or_else(unknown)?;
        let plan = self.plans.get(&n).ok_or_else(unknown)?;
        let to = decision.status();
        if plan.status == to {
            // Said again (a retry, or a second operator): nothing changes.
            return match decision {
                PlanDecision::Start { shadow } if plan.shadow.as_ref() != Some(shadow) => {
                    Err(illegal(plan, to))
                }
                _ => Ok(Applied::Done),
            };
        }
        let allowed = matches!(
            (plan.status, to),
            (
                PlanStatus::Proposed,
                PlanStatus::Approved | PlanStatus::Rejected | PlanStatus::Expired
            ) | (
                PlanStatus::Approved,
                PlanStatus::Started | PlanStatus::Rejected | PlanStatus::Expired
            )
        ) || (plan.kind == PlanKind::Scale
            && plan.status == PlanStatus::Started
            && to == PlanStatus::Expired);
        if !allowed
            || (matches!(decision, PlanDecision::ExpireProposed)
                && plan.status != PlanStatus::Proposed)
        {
            return Err(illegal(plan, to));
        }
        if let PlanDecision::Start { shadow } = decision {
            if plan.kind == PlanKind::Scale {
                // A scale plan starts once its new instance is registered.
                if shadow != &plan.component || !self.components.contains_key(shadow) {
                    return Err(Rejection::InvalidInput {
                        reason: format!(
                            "{id} cannot start with {shadow}: it starts once {} is registered",
                            plan.component
                        ),
                    });
                }
            } else {
                let current = self.shadows.get(&plan.component).map(|s| &s.shadow);
                if current != Some(shadow) {
                    return Err(Rejection::InvalidInput {
                        reason: format!(
                            "{id} cannot start with shadow {shadow}: {}'s current shadow is {}",
                            plan.component,
                            current.map_or("none".to_owned(), |s| s.to_string())
                        ),
                    });
                }
            }
        }
        self.plans
            .update(&n, |plan| {
                plan.status = to;
                if let PlanDecision::Start { shadow } = decision {
                    plan.shadow = Some(shadow.clone());
                }
                plan.history.push(PlanEvent {
                    at_ms,
                    status: to,
                    by: by.to_owned(),
                    note: note.to_owned(),
                });
            })
            .expect("found above");
        self.trim_plans();
        Ok(Applied::Done)
    }

    /// Keeps every open plan and the newest [`MAX_PLAN_LOG`] finished ones.
    fn trim_plans(&mut self) {
        self.plans.trim_finished(MAX_PLAN_LOG);
    }
}

fn illegal(plan: &PlanRecord, to: PlanStatus) -> Rejection {
    Rejection::IllegalPlanTransition {
        id: plan.id.clone(),
        from: plan.status.to_string(),
        to: to.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Command;
    use crate::topology::Host;

    fn cid(s: &str) -> ComponentId {
        ComponentId::new(s).unwrap()
    }

    fn placement(host: &str, zone: &str) -> Placement {
        Placement {
            host: host.into(),
            rack: "r1".into(),
            zone: zone.into(),
        }
    }

    fn state() -> ControlState {
        let mut s = ControlState::default();
        for (h, z) in [("h1", "z1"), ("h2", "z2")] {
            s.apply(
                1,
                &Command::UpsertHost(Host {
                    placement: placement(h, z),
                    capacity: 4,
                }),
            )
            .unwrap();
        }
        let db = crate::fixtures::component("db", "data", "h1", "z1");
        s.apply(1, &Command::UpsertComponent(db)).unwrap();
        s
    }

    fn propose(approved_by: Option<&str>) -> Command {
        Command::ProposePlan {
            component: cid("db"),
            kind: PlanKind::Failover,
            template: None,
            to: placement("h2", "z2"),
            severity: Severity::High,
            reason: "P(fail) 0.8".into(),
            approved_by: approved_by.map(str::to_owned),
            at_ms: 10,
        }
    }

    fn decide(id: &str, decision: PlanDecision) -> Command {
        Command::DecidePlan {
            id: id.into(),
            decision,
            by: "alice".into(),
            note: String::new(),
            at_ms: 20,
        }
    }

    fn shadow_request(s: &ControlState, id: &str) -> Command {
        Command::RequestShadow {
            component: cid("db"),
            shadow: s.plan(id).unwrap().shadow_id(),
            placement: placement("h2", "z2"),
            reason: "plan".into(),
        }
    }

    #[test]
    fn a_recommended_plan_waits_for_approval_then_starts() {
        let mut s = state();
        let applied = s.apply(1, &propose(None)).unwrap();
        assert_eq!(
            applied,
            Applied::Plan {
                id: "plan-1".into(),
                duplicate: false
            }
        );
        // Proposed again (the next planner round): the same plan.
        assert_eq!(
            s.apply(1, &propose(None)).unwrap(),
            Applied::Plan {
                id: "plan-1".into(),
                duplicate: true
            }
        );
        assert_eq!(s.plans.len(), 1);
        // Not approved, so it cannot start.
        let req = shadow_request(&s, "plan-1");
        s.apply(1, &req).unwrap();
        let start = decide(
            "plan-1",
            PlanDecision::Start {
                shadow: cid("db.shadow-1"),
            },
        );
        assert!(matches!(
            s.apply(1, &start),
            Err(Rejection::IllegalPlanTransition { .. })
        ));
        s.apply(1, &decide("plan-1", PlanDecision::Approve))
            .unwrap();
        s.apply(1, &decide("plan-1", PlanDecision::Approve))
            .unwrap();
        s.apply(1, &start).unwrap();
        s.apply(1, &start).unwrap();
        let p = s.plan("plan-1").unwrap();
        assert_eq!(p.status, PlanStatus::Started);
        assert_eq!(p.shadow, Some(cid("db.shadow-1")));
        let statuses: Vec<_> = p.history.iter().map(|e| e.status).collect();
        assert_eq!(
            statuses,
            [
                PlanStatus::Proposed,
                PlanStatus::Approved,
                PlanStatus::Started
            ]
        );
        assert_eq!(p.history[1].by, "alice");
        // Finished plans cannot be reopened or rejected.
        assert!(matches!(
            s.apply(1, &decide("plan-1", PlanDecision::Reject)),
            Err(Rejection::IllegalPlanTransition { .. })
        ));
    }

    #[test]
    fn an_acting_policy_approves_at_once_and_an_operator_approves_a_proposal() {
        let mut s = state();
        s.apply(1, &propose(Some("policy"))).unwrap();
        assert_eq!(s.plan("plan-1").unwrap().status, PlanStatus::Approved);
        s.apply(1, &decide("plan-1", PlanDecision::Expire)).unwrap();
        // A new proposal gets a new number; an operator's failover approves it.
        s.apply(1, &propose(None)).unwrap();
        assert_eq!(s.plan("plan-2").unwrap().status, PlanStatus::Proposed);
        let again = s.apply(1, &propose(Some("operator"))).unwrap();
        assert_eq!(
            again,
            Applied::Plan {
                id: "plan-2".into(),
                duplicate: true
            }
        );
        let p = s.plan("plan-2").unwrap();
        assert_eq!(p.status, PlanStatus::Approved);
        assert_eq!(p.history.last().unwrap().by, "operator");
    }

    #[test]
    fn a_failover_overtakes_a_proposed_migration() {
        let mut s = state();
        let mut migration = propose(None);
        if let Command::ProposePlan {
            kind,
            severity,
            reason,
            ..
        } = &mut migration
        {
            *kind = PlanKind::Migration;
            *severity = Severity::Elevated;
            *reason = "footprint: z1 holds 2".into();
        }
        s.apply(1, &migration).unwrap();
        // Another migration proposal changes nothing.
        let before = s.clone();
        s.apply(1, &migration).unwrap();
        assert_eq!(s, before);
        s.apply(1, &propose(Some("policy"))).unwrap();
        let p = s.plan("plan-1").unwrap();
        assert_eq!(p.kind, PlanKind::Failover);
        assert_eq!(p.severity, Severity::High);
        assert_eq!(p.reason, "P(fail) 0.8");
        assert_eq!(p.status, PlanStatus::Approved);
        assert_eq!(s.plans.len(), 1);
    }

    #[test]
    fn bad_decisions_are_refused_and_change_nothing() {
        let mut s = state();
        s.apply(1, &propose(None)).unwrap();
        let before = s.clone();
        for id in ["plan-9", "plan-0", "plan-x", "9", ""] {
            assert_eq!(
                s.apply(1, &decide(id, PlanDecision::Approve)),
                Err(Rejection::UnknownPlan { id: id.into() })
            );
        }
        assert_eq!(s, before);
        s.apply(1, &decide("plan-1", PlanDecision::Approve))
            .unwrap();
        let approved = s.clone();
        // Starting with a shadow that is not the component's: refused.
        let wrong = decide(
            "plan-1",
            PlanDecision::Start {
                shadow: cid("db.shadow-7"),
            },
        );
        assert!(matches!(
            s.apply(1, &wrong),
            Err(Rejection::InvalidInput { .. })
        ));
        assert_eq!(s, approved);
        // A plan for an unknown component, or one already moving: refused.
        let mut unknown = propose(None);
        if let Command::ProposePlan { component, .. } = &mut unknown {
            *component = cid("nope");
        }
        assert!(matches!(
            s.apply(1, &unknown),
            Err(Rejection::UnknownComponent { .. })
        ));
        let req = shadow_request(&s, "plan-1");
        s.apply(1, &req).unwrap();
        s.apply(1, &decide("plan-1", PlanDecision::Expire)).unwrap();
        assert!(matches!(
            s.apply(1, &propose(None)),
            Err(Rejection::ShadowInFlight { .. })
        ));
    }

    #[test]
    fn a_plan_whose_shadow_could_not_be_named_is_refused() {
        let mut s = state();
        // 124 bytes: a valid component id, but `.shadow-1` would take it past 128.
        let long = "d".repeat(124);
        let c = crate::fixtures::component(&long, "data", "h1", "z1");
        s.apply(1, &Command::UpsertComponent(c)).unwrap();
        let before = s.clone();
        let mut p = propose(Some("alice"));
        if let Command::ProposePlan { component, .. } = &mut p {
            *component = cid(&long);
        }
        let err = s.apply(1, &p).unwrap_err().to_string();
        assert!(err.contains("its shadow's id would be invalid"), "{err}");
        assert_eq!(s, before, "a refused plan changes nothing");
        // The next plan still gets the next number.
        assert!(matches!(
            s.apply(1, &propose(None)),
            Ok(Applied::Plan { ref id, duplicate: false }) if id == "plan-1"
        ));
    }

    /// The leader's expiry of a stale proposal loses to an approval committed before it.
    #[test]
    fn expiring_a_proposal_is_refused_once_it_is_approved() {
        let mut s = state();
        s.apply(1, &propose(None)).unwrap();
        s.apply(1, &decide("plan-1", PlanDecision::Approve))
            .unwrap();
        let approved = s.clone();
        assert!(matches!(
            s.apply(1, &decide("plan-1", PlanDecision::ExpireProposed)),
            Err(Rejection::IllegalPlanTransition { .. })
        ));
        assert_eq!(s, approved);
        // Still proposed: it expires.
        let mut s = state();
        s.apply(1, &propose(None)).unwrap();
        s.apply(1, &decide("plan-1", PlanDecision::ExpireProposed))
            .unwrap();
        assert_eq!(s.plan("plan-1").unwrap().status, PlanStatus::Expired);
    }

    #[test]
    fn finished_plans_are_capped_and_open_ones_kept() {
        let mut s = state();
        for i in 0..(MAX_PLAN_LOG + 5) {
            s.apply(1, &propose(None)).unwrap();
            let id = format!("plan-{}", i + 1);
            s.apply(1, &decide(&id, PlanDecision::Reject)).unwrap();
        }
        s.apply(1, &propose(None)).unwrap();
        assert_eq!(s.plans.len(), MAX_PLAN_LOG + 1);
        assert!(s.plan("plan-1").is_none());
        let open = s.open_plan(&cid("db")).unwrap();
        assert_eq!(open.id, format!("plan-{}", MAX_PLAN_LOG + 6));
    }

    #[test]
    fn plan_ids_parse() {
        assert_eq!(plan_number("plan-12"), Some(12));
        assert_eq!(plan_number("plan-0"), None);
        assert_eq!(plan_number("plan--1"), None);
        assert_eq!(plan_number("12"), None);
        assert_eq!(Severity::parse("high"), Some(Severity::High));
        assert_eq!(Severity::parse("HIGH"), None);
    }

    #[test]
    fn a_scale_plan_names_a_new_instance_made_like_a_registered_one() {
        let mut s = state();
        let scale = |component: &str, template: Option<&str>| Command::ProposePlan {
            component: cid(component),
            kind: PlanKind::Scale,
            template: template.map(cid),
            to: placement("h2", "z2"),
            severity: Severity::Elevated,
            reason: "forecast 480 req/s".into(),
            approved_by: Some("policy".into()),
            at_ms: 10,
        };
        let invalid =
            |r: Result<Applied, Rejection>| matches!(r, Err(Rejection::InvalidInput { .. }));
        assert!(invalid(s.apply(1, &scale("db.scale-1", None))));
        assert!(matches!(
            s.apply(1, &scale("db.scale-1", Some("nope"))),
            Err(Rejection::UnknownComponent { .. })
        ));
        assert!(invalid(s.apply(1, &scale("db", Some("db")))));
        let mut failover_with_template = propose(None);
        if let Command::ProposePlan { template, .. } = &mut failover_with_template {
            *template = Some(cid("db"));
        }
        assert!(invalid(s.apply(1, &failover_with_template)));
        assert!(s.plans.is_empty(), "rejected proposals change nothing");

        s.apply(1, &scale("db.scale-1", Some("db"))).unwrap();
        let plan = s.plan("plan-1").unwrap();
        assert_eq!(
            (plan.kind, plan.status),
            (PlanKind::Scale, PlanStatus::Approved)
        );
        assert_eq!(plan.template, Some(cid("db")));
        // It starts once its instance is registered, under its own name only.
        let start = |shadow: &str| {
            decide(
                "plan-1",
                PlanDecision::Start {
                    shadow: cid(shadow),
                },
            )
        };
        assert!(invalid(s.apply(1, &start("db.scale-1"))));
        let mut new = crate::fixtures::component("db.scale-1", "data", "h2", "z2");
        new.placement = placement("h2", "z2");
        s.apply(1, &Command::UpsertComponent(new)).unwrap();
        assert!(invalid(s.apply(1, &start("db"))));
        s.apply(1, &start("db.scale-1")).unwrap();
        let plan = s.plan("plan-1").unwrap();
        assert_eq!(plan.status, PlanStatus::Started);
        assert_eq!(plan.shadow, Some(cid("db.scale-1")));
        // The name is taken now; a started scale plan may still expire (its instance never
        // came up), a started failover may not.
        assert!(invalid(s.apply(1, &scale("db.scale-1", Some("db")))));
        s.apply(1, &decide("plan-1", PlanDecision::Expire)).unwrap();
        assert_eq!(s.plan("plan-1").unwrap().status, PlanStatus::Expired);
    }
}

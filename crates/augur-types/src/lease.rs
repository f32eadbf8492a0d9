//! Action leases. An orchestrator claims a pending action before carrying it out and holds it
//! for a lease it renews while it works; nobody else may claim it or report its outcome
//! meanwhile. The leader expires leases: an action whose claim ran out goes back to the pool
//! for another capable orchestrator (its lapses counted), and one that nobody claims in time,
//! or whose lease lapsed too often, fails, so the shadow lifecycle rolls back what it began.

use serde::{Deserialize, Serialize};

use crate::command::{Applied, Rejection};
use crate::ids::ActionId;
use crate::state::{ActionOutcome, ActionStatus, ControlState};

/// Longest lease one claim may ask for.
pub const MAX_LEASE_MS: u64 = 60 * 60 * 1000;

/// Who reports the outcomes the leader gives actions it stopped waiting for.
pub const LEASE_EXPIRER: &str = "augur";

/// An orchestrator's hold on an action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub orchestrator: String,
    /// When it was claimed (or last renewed).
    pub at_ms: u64,
    /// When the lease runs out unless renewed.
    pub until_ms: u64,
}

/// How long the leader waits on orchestrators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeasePolicy {
    /// An action nobody claims within this long (since it was appended, or last released)
    /// fails.
    pub claim_within_ms: u64,
    /// An action whose lease lapsed this many times fails instead of being offered again.
    pub max_lapses: u32,
}

/// What the leader does with one pending action at a given time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expiry {
    /// Its lease ran out: back to the pool for another orchestrator.
    Release { seq: u64, held_by: String },
    /// Fails with this reason.
    Fail { seq: u64, reason: String },
}

impl ControlState {
    /// The pending actions whose lease (or wait for a claim) has run out at `now_ms`.
    pub fn lease_expiries(&self, now_ms: u64, policy: &LeasePolicy) -> Vec<Expiry> {
        let mut out = Vec::new();
        for a in &self.actions {
            if a.status != ActionStatus::Pending {
                continue;
            }
            let seq = a.id.seq;
            match &a.claim {
                Some(c) if c.until_ms <= now_ms => {
                    if a.lapses + 1 >= policy.max_lapses {
                        out.push(Expiry::Fail {
                            seq,
                            reason: format!(
                                "lease lapsed {} times (last held by {})",
                                a.lapses + 1,
                                c.orchestrator
                            ),
                        });
                    } else {
                        out.push(Expiry::Release {
                            seq,
                            held_by: c.orchestrator.clone(),
                        });
                    }
                }
                Some(_) => {}
                None => {
                    let since = a.offered_ms.unwrap_or(a.created_ms);
                    if now_ms.saturating_sub(since) >= policy.claim_within_ms {
                        out.push(Expiry::Fail {
                            seq,
                            reason: format!(
                                "no orchestrator claimed it within {} ms",
                                policy.claim_within_ms
                            ),
                        });
                    }
                }
            }
        }
        out
    }

    pub(crate) fn claim_action(
        &mut self,
        id: &ActionId,
        orchestrator: &str,
        lease_ms: u64,
        at_ms: u64,
    ) -> Result<Applied, Rejection> {
        if orchestrator.is_empty() || orchestrator.len() > 128 {
            return Err(Rejection::InvalidInput {
                reason: format!(
                    "orchestrator name must be 1..=128 bytes, got {}",
                    orchestrator.len()
                ),
            });
        }
        if lease_ms == 0 || lease_ms > MAX_LEASE_MS {
            return Err(Rejection::InvalidInput {
                reason: format!("lease of {lease_ms} ms; it must be 1..={MAX_LEASE_MS}"),
            });
        }
        let action = self.action_mut(id)?;
        if action.status != ActionStatus::Pending {
            return Err(Rejection::OutcomeConflict {
                id: id.to_string(),
                previous: action.status.to_string(),
            });
        }
        action.check_holder(orchestrator, at_ms)?;
        action.claim = Some(Claim {
            orchestrator: orchestrator.to_owned(),
            at_ms,
            until_ms: at_ms.saturating_add(lease_ms),
        });
        Ok(Applied::Done)
    }

    pub(crate) fn expire_leases(
        &mut self,
        at_ms: u64,
        policy: &LeasePolicy,
    ) -> Result<Applied, Rejection> {
        if policy.max_lapses == 0 || policy.claim_within_ms == 0 {
            return Err(Rejection::InvalidInput {
                reason: "a lease policy needs max_lapses and claim_within_ms above 0".into(),
            });
        }
        let (mut released, mut failed) = (0u32, 0u32);
        for e in self.lease_expiries(at_ms, policy) {
            let seq = match &e {
                Expiry::Release { seq, .. } | Expiry::Fail { seq, .. } => *seq,
            };
            let a = &mut self.actions[(seq - 1) as usize];
            match e {
                Expiry::Release { .. } => {
                    a.claim = None;
                    a.lapses += 1;
                    a.offered_ms = Some(at_ms);
                    released += 1;
                }
                Expiry::Fail { reason, .. } => {
                    if a.claim.take().is_some() {
                        a.lapses += 1;
                    }
                    a.status = ActionStatus::Done {
                        orchestrator: LEASE_EXPIRER.to_owned(),
                        outcome: ActionOutcome::Failed { reason },
                        at_ms,
                    };
                    failed += 1;
                }
            }
        }
        Ok(Applied::Leases { released, failed })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::command::Command;
    use crate::ids::ComponentId;
    use crate::state::ActionKind;

    const POLICY: LeasePolicy = LeasePolicy {
        claim_within_ms: 1_000,
        max_lapses: 2,
    };

    fn state_with_action() -> (ControlState, ActionId) {
        let mut s = ControlState::default();
        let db = crate::fixtures::component("db", "data", "h1", "z1");
        s.apply(1, &Command::UpsertComponent(db)).unwrap();
        let Ok(Applied::Action { id, .. }) = s.apply(
            1,
            &Command::AppendAction {
                request_id: "r1".into(),
                kind: ActionKind::Provision,
                target: ComponentId::new("db").unwrap(),
                params: BTreeMap::new(),
                at_ms: 0,
            },
        ) else {
            panic!("appended");
        };
        (s, id)
    }

    fn claim(id: ActionId, who: &str, at_ms: u64) -> Command {
        Command::ClaimAction {
            id,
            orchestrator: who.into(),
            lease_ms: 500,
            at_ms,
        }
    }

    fn report(id: ActionId, who: &str, at_ms: u64) -> Command {
        Command::ReportOutcome {
            id,
            orchestrator: who.into(),
            outcome: ActionOutcome::Succeeded,
            kpis: None,
            at_ms,
        }
    }

    fn expire(at_ms: u64) -> Command {
        Command::ExpireLeases {
            at_ms,
            policy: POLICY,
        }
    }

    #[test]
    fn a_claim_excludes_others_until_it_lapses_then_another_takes_over() {
        let (mut s, id) = state_with_action();
        s.apply(1, &claim(id, "a", 100)).unwrap();
        // Renewing is fine; another orchestrator is refused, for claims and outcomes.
        s.apply(1, &claim(id, "a", 300)).unwrap();
        let before = s.clone();
        assert!(matches!(
            s.apply(1, &claim(id, "b", 400)),
            Err(Rejection::ActionClaimed { ref by, until_ms: 800, .. }) if by == "a"
        ));
        assert!(matches!(
            s.apply(1, &report(id, "b", 400)),
            Err(Rejection::ActionClaimed { .. })
        ));
        assert_eq!(s, before);
        // Nothing ran out yet.
        assert_eq!(s.lease_expiries(799, &POLICY), []);
        assert_eq!(
            s.apply(1, &expire(799)).unwrap(),
            Applied::Leases {
                released: 0,
                failed: 0
            }
        );
        // a's lease lapses: back to the pool, and b takes it.
        assert_eq!(
            s.lease_expiries(800, &POLICY),
            [Expiry::Release {
                seq: 1,
                held_by: "a".into()
            }]
        );
        s.apply(1, &expire(800)).unwrap();
        assert_eq!(s.actions[0].lapses, 1);
        assert_eq!(s.actions[0].claim, None);
        s.apply(1, &claim(id, "b", 900)).unwrap();
        s.apply(1, &report(id, "b", 1000)).unwrap();
        assert_eq!(s.actions[0].status.to_string(), "succeeded");
        // A finished action cannot be claimed.
        assert!(matches!(
            s.apply(1, &claim(id, "c", 1100)),
            Err(Rejection::OutcomeConflict { .. })
        ));
    }

    #[test]
    fn too_many_lapses_or_no_claim_in_time_fail_the_action() {
        let (mut s, id) = state_with_action();
        s.apply(1, &claim(id, "a", 0)).unwrap();
        s.apply(1, &expire(500)).unwrap();
        s.apply(1, &claim(id, "b", 600)).unwrap();
        assert_eq!(
            s.apply(1, &expire(1100)).unwrap(),
            Applied::Leases {
                released: 0,
                failed: 1
            }
        );
        let a = &s.actions[0];
        assert_eq!(a.lapses, 2);
        assert_eq!(
            a.status.to_string(),
            "failed: lease lapsed 2 times (last held by b)"
        );

        // Offered and never claimed: fails once the claim window has passed.
        let (mut s, _) = state_with_action();
        assert_eq!(s.lease_expiries(999, &POLICY), []);
        s.apply(1, &expire(1000)).unwrap();
        assert_eq!(
            s.actions[0].status.to_string(),
            "failed: no orchestrator claimed it within 1000 ms"
        );
        // Released actions get a fresh window from their release.
        let (mut s, id) = state_with_action();
        s.apply(1, &claim(id, "a", 900)).unwrap();
        s.apply(1, &expire(1400)).unwrap();
        assert_eq!(s.lease_expiries(2399, &POLICY), []);
        assert_eq!(s.lease_expiries(2400, &POLICY).len(), 1);
    }

    #[test]
    fn bad_claims_are_refused() {
        let (mut s, id) = state_with_action();
        let before = s.clone();
        for (who, lease) in [("", 500), ("a", 0), ("a", MAX_LEASE_MS + 1)] {
            let c = Command::ClaimAction {
                id,
                orchestrator: who.into(),
                lease_ms: lease,
                at_ms: 0,
            };
            assert!(matches!(
                s.apply(1, &c),
                Err(Rejection::InvalidInput { .. })
            ));
        }
        let unknown = ActionId { term: 1, seq: 9 };
        assert!(matches!(
            s.apply(1, &claim(unknown, "a", 0)),
            Err(Rejection::UnknownAction { .. })
        ));
        assert_eq!(s, before);
    }
}

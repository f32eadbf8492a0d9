//! The planner on the node: `augur_plan::plan_failovers` over this node's forecasts, the
//! blast radii of the replicated graph and the replicated state. `Topology.PlanFailovers`
//! shows its decisions; with `planner.act` on, the leader also records them as plans
//! (approved when the group's policy acts, proposed for an operator's approval when it only
//! recommends) and starts the approved ones: a shadow request and a `Provision` action for
//! orchestrators. It moves every shadow in flight on as orchestrators report outcomes
//! (`augur_plan::lifecycle`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use augur_plan::footprint::Move;
use augur_plan::{
    ComponentRisk, Decision, FootprintPlan, LifecycleStep, Load, Mode, PlannerConfig, ScaleDecision,
};
use augur_types::{
    Applied, Command, ComponentId, ControlState, LeasePolicy, Placement, PlanDecision, PlanKind,
    PlanRecord, PlanStatus, Severity,
};
use tonic::Status;

use crate::config::PlannerSection;
use crate::node::Node;
use crate::predict::Predictors;
use crate::service::now_ms;
use crate::service::topology::{cached_blast_radii, RiskCache};

/// Which forecasts the planner acts on: those of components whose detectors have a baseline
/// (`planner.min_samples`), and not those of shadows and new instances still in their
/// anti-flapping hold (`planner.fresh_hold_ms`, see [`augur_plan::recently_started`]) nor
/// those of the other instances of a group a plan has just started in
/// (`planner.settle_hold_ms`, see [`augur_plan::settling_siblings`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admit {
    pub min_samples: u64,
    pub fresh_hold_ms: u64,
    pub settle_hold_ms: u64,
}

impl Admit {
    pub fn of(cfg: &PlannerSection) -> Self {
        Self {
            min_samples: cfg.min_samples,
            fresh_hold_ms: cfg.fresh_hold_ms,
            settle_hold_ms: cfg.settle_hold_ms,
        }
    }
}

/// The decisions the planner takes now, most urgent first.
pub async fn decisions(
    node: &Node,
    predictors: &Predictors,
    cache: &Arc<RiskCache>,
    admit: Admit,
) -> Result<Vec<Decision>, Status> {
    let inputs = inputs(node, predictors, cache, admit).await?;
    Ok(node
        .state
        .read(|s| augur_plan::plan_failovers(s, &inputs.risks, &PlannerConfig::default())))
}

/// Every service's footprint now and as desired, with the migrations towards it.
pub async fn footprints(
    node: &Node,
    predictors: &Predictors,
    cache: &Arc<RiskCache>,
    admit: Admit,
) -> Result<Vec<FootprintPlan>, Status> {
    let inputs = inputs(node, predictors, cache, admit).await?;
    Ok(node
        .state
        .read(|s| augur_plan::plan_footprints(s, &inputs.risks)))
}

/// What the planner knows of the components' future.
struct Inputs {
    /// P(fail within 1 h) and HPS from the fleet's forecasts (components still warming up
    /// left out), blast radius from the graph.
    risks: BTreeMap<ComponentId, ComponentRisk>,
    /// The indicators behind each component's forecast, for the reasons the planner records.
    why: HashMap<ComponentId, String>,
    /// Load level and trend of every component that reports its load.
    loads: BTreeMap<ComponentId, Load>,
}

/// Reads the fleet's forecasts (every shard's, from its owner, or its standby where the
/// owner did not answer; [`Predictors::all_forecasts`]) and the graph's blast radii (see
/// [`Inputs`]).
async fn inputs(
    node: &Node,
    predictors: &Predictors,
    cache: &Arc<RiskCache>,
    admit: Admit,
) -> Result<Inputs, Status> {
    let forecasts = predictors.all_forecasts().await?;
    let g = node.state.read(ControlState::dependency_graph);
    let cache = cache.clone();
    let radii = tokio::task::spawn_blocking(move || cached_blast_radii(&cache, g))
        .await
        .map_err(|e| Status::internal(format!("blast radii failed: {e}")))?;
    let blast: HashMap<&str, f64> = radii
        .iter()
        .map(|b| (b.component.as_str(), b.blast_radius))
        .collect();
    // Components still warming up have no baseline to be anomalous against; fresh shadows
    // and instances are in their hold, and so are their groups' other instances while the
    // moved traffic settles on them.
    let fresh = node.state.read(|s| {
        let now = now_ms();
        let mut held = augur_plan::recently_started(s, now, admit.fresh_hold_ms);
        held.extend(augur_plan::settling_siblings(s, now, admit.settle_hold_ms));
        held
    });
    let risks: BTreeMap<ComponentId, ComponentRisk> = forecasts
        .iter()
        .filter(|(id, f)| f.samples >= admit.min_samples && !fresh.contains(id))
        .map(|(id, f)| {
            let r = ComponentRisk {
                p_fail: f.p_fail[1],
                hps: f.hps,
                blast_radius: blast.get(id.as_str()).copied().unwrap_or(0.0),
            };
            (id.clone(), r)
        })
        .collect();
    // Only for those that can be due at all: no threshold is below `min_probability`.
    let floor = PlannerConfig::default().min_probability;
    let why = forecasts
        .iter()
        .filter(|(id, f)| f.p_fail[1] >= floor && !f.why.is_empty() && risks.contains_key(id))
        .map(|(id, f)| {
            let named: Vec<String> = f.why.iter().map(|(n, w)| format!("{n} {w:.2}")).collect();
            (id.clone(), named.join(", "))
        })
        .collect();
    let loads = forecasts
        .iter()
        .filter_map(|(id, f)| {
            let l = f.load?;
            Some((
                id.clone(),
                Load {
                    level: l.level,
                    per_s: l.per_s,
                },
            ))
        })
        .collect();
    Ok(Inputs { risks, why, loads })
}

/// On the leader. Every `planner.every_ms`: expires action leases (see [`expire_leases`];
/// not in its first `planner.claim_within_ms` as leader, so holders can renew first),
/// then, with `planner.act`, records each decision as a plan (see [`propose`]) and expires
/// stale proposals. Every round, and also as soon as anything is applied (an orchestrator's
/// outcome, an approval), it moves every shadow on and starts every approved plan (see
/// [`start_plan`]), so a failover does not wait a planning period per step.
pub fn spawn(node: Node, predictors: Predictors, cfg: &PlannerSection) {
    let act = cfg.act;
    let admit = Admit::of(cfg);
    let confirm_ms = cfg.confirm_ms;
    let mut due_since: HashMap<ComponentId, u64> = HashMap::new();
    let every = Duration::from_millis(cfg.every_ms);
    let leases = LeasePolicy {
        claim_within_ms: cfg.claim_within_ms,
        max_lapses: cfg.max_lapses,
    };
    let cache: Arc<RiskCache> = Default::default();
    let mut applied = node.state.subscribe();
    // Steps the state refused, held back until this instant: a refusal is itself an applied
    // entry, and retrying on the wake it causes would commit refusals as fast as Raft can.
    let mut refused: HashMap<String, tokio::time::Instant> = HashMap::new();
    // Leases are expired only once this node has led for `claim_within_ms`: deadlines passed
    // while no node led (nobody could renew then) must not release live holders' claims.
    let lease_grace = Duration::from_millis(cfg.claim_within_ms);
    let mut leading_since: Option<tokio::time::Instant> = None;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let round = tokio::select! {
                _ = tick.tick() => true,
                changed = applied.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    false
                }
            };
            if !node.is_leader() {
                // What a former term saw is not this term's: decisions confirm afresh.
                leading_since = None;
                due_since.clear();
                continue;
            }
            let leading = leading_since.get_or_insert_with(tokio::time::Instant::now);
            if round {
                // Leases first: an action given up on fails here, and its shadow rolls back
                // below.
                if leading.elapsed() >= lease_grace {
                    expire_leases(&node, &leases).await;
                }
                if act {
                    match inputs(&node, &predictors, &cache, admit).await {
                        Ok(Inputs { risks, why, loads }) => {
                            let cfg = PlannerConfig::default();
                            let (found, footprints, scale, waiting) = node.state.read(|s| {
                                (
                                    augur_plan::plan_failovers(s, &risks, &cfg),
                                    augur_plan::plan_footprints(s, &risks),
                                    augur_plan::plan_scaling(s, &loads, &risks, &cfg),
                                    augur_plan::wanted_proposals(s, &loads, &risks, &cfg),
                                )
                            });
                            let now = now_ms();
                            let mut due: Vec<ComponentId> = Vec::new();
                            // A decision holds for `confirm_ms` before it is recorded: one
                            // noisy scrape does not move a component.
                            due_since.retain(|c, _| found.iter().any(|d| &d.component == c));
                            for d in &found {
                                due.push(d.component.clone());
                                let since = *due_since.entry(d.component.clone()).or_insert(now);
                                if now.saturating_sub(since) < confirm_ms {
                                    continue;
                                }
                                if let Err(e) = propose(&node, d, why.get(&d.component), now).await
                                {
                                    tracing::warn!(component = %d.component, error = %e, "plan not committed");
                                }
                            }
                            for m in footprints.iter().flat_map(|f| &f.moves) {
                                if let Err(e) = propose_migration(&node, m, now).await {
                                    tracing::warn!(component = %m.component, error = %e, "migration not proposed");
                                }
                                due.push(m.component.clone());
                            }
                            for d in &scale {
                                if let Err(e) = propose_scale(&node, d, now).await {
                                    tracing::warn!(group = %d.group, error = %e, "scale-out not proposed");
                                }
                                due.extend(d.add.iter().map(|(c, _)| c.clone()));
                            }
                            // Scale-outs waiting for approval that the load still wants
                            // are not stale.
                            due.extend(waiting);
                            expire_stale(&node, &due, now).await;
                        }
                        Err(e) => tracing::debug!(error = %e, "no plan this round"),
                    }
                }
            }
            let now_i = tokio::time::Instant::now();
            refused.retain(|_, until| *until > now_i);
            let retry_at = now_i + every;
            // Shadows in flight: the outcomes reported since the last look move them on.
            let steps = node.state.read(augur_plan::next_steps);
            commit_in_order(
                &node,
                &mut refused,
                retry_at,
                steps,
                // Steps of different shadows can depend on each other (one service's
                // weights): one group.
                |_| String::new(),
                step_command,
                "shadow step",
            )
            .await;
            // New instances of scale plans: traffic once provisioned, forgotten if not.
            let steps = node.state.read(augur_plan::scale_steps);
            let scale_command = |step: augur_plan::ScaleStep| {
                tracing::info!(?step, "scale-out step");
                step.into_command(now_ms())
            };
            commit_in_order(
                &node,
                &mut refused,
                retry_at,
                steps,
                augur_plan::ScaleStep::plan,
                scale_command,
                "scale-out step",
            )
            .await;
            // Approved plans start whether or not this node plans on its own: an operator
            // may have approved one, or the leader that approved it died before starting it.
            start_approved(&node).await;
        }
    });
}

/// Commits the lease housekeeping due now, if any: one `ExpireLeases` entry.
async fn expire_leases(node: &Node, leases: &LeasePolicy) {
    let now = now_ms();
    let expiring = node.state.read(|s| s.lease_expiries(now, leases));
    if expiring.is_empty() {
        return;
    }
    for e in &expiring {
        tracing::warn!(?e, "action lease expired");
    }
    let cmd = Command::ExpireLeases {
        at_ms: now,
        policy: *leases,
    };
    match node.write(cmd).await {
        Ok((_, Applied::Leases { released, failed })) => {
            metrics::counter!("augur_action_leases_released_total").increment(released.into());
            metrics::counter!("augur_actions_expired_total").increment(failed.into());
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "lease expiry not committed"),
    }
}

/// A proposed plan whose component has not been due for this long expires.
const PLAN_TTL_MS: u64 = 10 * 60 * 1000;

/// Records one decision as a plan: approved at once when the policy acts, proposed (waiting
/// for `augur ctl plan approve`) when it only recommends. A component with an open plan, or
/// without a host with room, gets none.
async fn propose(node: &Node, d: &Decision, why: Option<&String>, now: u64) -> Result<(), Status> {
    let Some(to) = &d.to else {
        metrics::counter!("augur_planner_no_room_total").increment(1);
        return Ok(());
    };
    let open = node
        .state
        .read(|s| s.open_plan(&d.component).map(|p| (p.status, p.kind)));
    let approve = d.mode == Mode::Act;
    match open {
        Some((PlanStatus::Approved, _)) => return Ok(()),
        // Proposed: a failover the policy acts on approves it; one it only recommends
        // overtakes a migration, and otherwise there is nothing new to say.
        Some((_, kind)) if !approve && kind == PlanKind::Failover => return Ok(()),
        _ => {}
    }
    let (_, applied) = node
        .write(Command::ProposePlan {
            component: d.component.clone(),
            kind: PlanKind::Failover,
            template: None,
            to: to.clone(),
            severity: d.severity,
            reason: match why {
                Some(why) => format!("{}; why: {why}", d.reason),
                None => d.reason.clone(),
            },
            approved_by: approve.then(|| "policy".to_owned()),
            at_ms: now,
        })
        .await?;
    if approve {
        metrics::counter!("augur_planner_failovers_total").increment(1);
    } else {
        metrics::counter!("augur_planner_recommendations_total").increment(1);
    }
    tracing::info!(component = %d.component, ?applied, mode = d.mode.as_str(), reason = %d.reason, "plan recorded");
    Ok(())
}

/// Proposes a footprint migration for an operator's approval (migrations are never urgent,
/// so never approved by policy), unless the component has an open plan already.
async fn propose_migration(node: &Node, m: &Move, now: u64) -> Result<(), Status> {
    if node.state.read(|s| s.open_plan(&m.component).is_some()) {
        return Ok(());
    }
    node.write(Command::ProposePlan {
        component: m.component.clone(),
        kind: PlanKind::Migration,
        template: None,
        to: m.to.clone(),
        severity: Severity::Elevated,
        reason: m.reason.clone(),
        approved_by: None,
        at_ms: now,
    })
    .await?;
    metrics::counter!("augur_planner_migrations_proposed_total").increment(1);
    Ok(())
}

/// Records a scale-out: one scale plan per new instance, approved at once when the group's
/// policy acts. A proposal already open answers with itself.
async fn propose_scale(node: &Node, d: &ScaleDecision, now: u64) -> Result<(), Status> {
    let approve =
        node.state.read(|s| s.policy_for(&d.group).approval) == augur_types::ApprovalMode::Act;
    for (component, to) in &d.add {
        let (_, applied) = node
            .write(Command::ProposePlan {
                component: component.clone(),
                kind: PlanKind::Scale,
                template: Some(d.template.clone()),
                to: to.clone(),
                severity: Severity::Elevated,
                reason: d.reason.clone(),
                approved_by: approve.then(|| "policy".to_owned()),
                at_ms: now,
            })
            .await?;
        metrics::counter!("augur_planner_scale_outs_total").increment(1);
        tracing::info!(group = %d.group, %component, host = %to.host, ?applied, reason = %d.reason, "scale-out recorded");
    }
    Ok(())
}

/// Expires the proposed plans whose component is no longer due and has not been for
/// [`PLAN_TTL_MS`] since the plan was made.
async fn expire_stale(node: &Node, due: &[ComponentId], now: u64) {
    let stale: Vec<String> = node.state.read(|s| {
        s.plans
            .values()
            .filter(|p| p.status == PlanStatus::Proposed)
            .filter(|p| now.saturating_sub(p.created_ms) >= PLAN_TTL_MS)
            .filter(|p| !due.contains(&p.component))
            .map(|p| p.id.clone())
            .collect()
    });
    for id in stale {
        let note = format!(
            "no longer at risk {} min after it was proposed",
            PLAN_TTL_MS / 60_000
        );
        // Only while still proposed: an operator's approval may have committed since the read.
        if let Err(e) = decide(node, &id, PlanDecision::ExpireProposed, &note).await {
            tracing::warn!(plan = %id, error = %e, "plan not expired");
        }
    }
}

/// Starts every approved plan (see [`start_plan`]).
async fn start_approved(node: &Node) {
    let approved: Vec<PlanRecord> = node.state.read(|s| {
        s.plans
            .values()
            .filter(|p| p.status == PlanStatus::Approved)
            .cloned()
            .collect()
    });
    for plan in approved {
        match start_plan(node, &plan).await {
            Ok(shadow) => {
                tracing::info!(plan = %plan.id, component = %plan.component, %shadow, host = %plan.to.host, "failover started")
            }
            Err(e) => tracing::warn!(plan = %plan.id, error = %e, "plan not started"),
        }
    }
}

async fn decide(node: &Node, id: &str, decision: PlanDecision, note: &str) -> Result<(), Status> {
    node.write(Command::DecidePlan {
        id: id.to_owned(),
        decision,
        by: "leader".to_owned(),
        note: note.to_owned(),
        at_ms: now_ms(),
    })
    .await
    .map(|_| ())
}

/// Records an approved plan to move `component` to `to` (`by` let it go ahead) and starts it
/// at once. Returns the plan's id and its shadow.
pub async fn failover_now(
    node: &Node,
    component: &ComponentId,
    to: &Placement,
    severity: Severity,
    reason: &str,
    by: &str,
) -> Result<(String, ComponentId), Status> {
    let (_, applied) = node
        .write(Command::ProposePlan {
            component: component.clone(),
            kind: PlanKind::Failover,
            template: None,
            to: to.clone(),
            severity,
            reason: reason.to_owned(),
            approved_by: Some(by.to_owned()),
            at_ms: now_ms(),
        })
        .await?;
    let Applied::Plan { id, .. } = applied else {
        return Err(Status::internal(format!(
            "a plan proposal answered {applied:?}"
        )));
    };
    let plan = node
        .state
        .read(|s| s.plan(&id).cloned())
        .ok_or_else(|| Status::internal(format!("{id} is not in the state after its proposal")))?;
    let shadow = start_plan(node, &plan).await?;
    Ok((id, shadow))
}

/// Starts an approved plan: its shadow request (named after the plan, so a leader taking
/// over half-way recognises it), the shadow's `Provision` action (idempotent by request id;
/// the next round's lifecycle appends it too if this leader dies in between), and the plan
/// marked started. A plan whose shadow cannot be requested (its host filled up, say) expires
/// with the reason. The lifecycle takes the shadow on from there.
pub async fn start_plan(node: &Node, plan: &PlanRecord) -> Result<ComponentId, Status> {
    if plan.kind == PlanKind::Scale {
        return start_scale(node, plan).await;
    }
    let shadow = plan.shadow_id();
    let current = node
        .state
        .read(|s| s.shadows.get(&plan.component).map(|r| r.shadow.clone()));
    if current.as_ref() != Some(&shadow) {
        let requested = node
            .write(Command::RequestShadow {
                component: plan.component.clone(),
                shadow: shadow.clone(),
                placement: plan.to.clone(),
                reason: format!("{}: {}", plan.id, plan.reason),
            })
            .await;
        // Another task may have requested it meanwhile (the planner's round and an approval
        // both start approved plans): then it is ours all the same.
        let ours = || {
            node.state
                .read(|s| s.shadows.get(&plan.component).map(|r| r.shadow.clone()))
                .as_ref()
                == Some(&shadow)
        };
        if let Err(e) = requested {
            if !ours() {
                if e.code() != tonic::Code::Unavailable {
                    let note = format!("could not be started: {}", e.message());
                    decide(node, &plan.id, PlanDecision::Expire, &note).await?;
                }
                return Err(e);
            }
        }
    }
    let step = node.state.read(|s| {
        s.shadows
            .get(&plan.component)
            .map(|rec| augur_plan::provision(&plan.component, rec))
    });
    if let Some(step) = step {
        node.write(step.into_command(now_ms())).await?;
    }
    decide(
        node,
        &plan.id,
        PlanDecision::Start {
            shadow: shadow.clone(),
        },
        "",
    )
    .await?;
    Ok(shadow)
}

/// Starts an approved scale plan: its instance registered (made like the template, at the
/// plan's placement), then its `provision` action, then the plan marked started. Said again
/// after a leader change, each part answers as already done. A plan whose template is gone,
/// or whose instance cannot be registered, expires.
async fn start_scale(node: &Node, plan: &PlanRecord) -> Result<ComponentId, Status> {
    let template = node.state.read(|s| {
        let t = plan.template.as_ref()?;
        s.components.get(t).cloned()
    });
    let Some(template) = template else {
        let note = "could not be started: its template instance is gone";
        decide(node, &plan.id, PlanDecision::Expire, note).await?;
        return Err(Status::failed_precondition(format!("{}: {note}", plan.id)));
    };
    let instance = augur_types::Component {
        id: plan.component.clone(),
        placement: plan.to.clone(),
        ..template
    };
    let now = now_ms();
    let start = Command::DecidePlan {
        id: plan.id.clone(),
        decision: PlanDecision::Start {
            shadow: plan.component.clone(),
        },
        by: "leader".to_owned(),
        note: String::new(),
        at_ms: now,
    };
    if let Err(e) = node.write(Command::UpsertComponent(instance)).await {
        if e.code() != tonic::Code::Unavailable {
            let note = format!("could not be started: {}", e.message());
            decide(node, &plan.id, PlanDecision::Expire, &note).await?;
        }
        return Err(e);
    }
    let provision = augur_plan::scaling::provision_instance(plan).into_command(now);
    node.write(provision).await?;
    node.write(start).await?;
    Ok(plan.component.clone())
}

/// Commits `steps` in order, each as `command` makes it. A step the state refuses is held
/// back in `refused` until `retry_at`, and it stops the steps after it in its `group` (a step
/// depends on those before it in its group), as does one still held back from an earlier
/// refusal; other groups go on.
async fn commit_in_order<S: std::fmt::Debug>(
    node: &Node,
    refused: &mut HashMap<String, tokio::time::Instant>,
    retry_at: tokio::time::Instant,
    steps: Vec<S>,
    group: impl Fn(&S) -> String,
    command: impl Fn(S) -> Command,
    what: &str,
) {
    let mut stopped: HashSet<String> = HashSet::new();
    for step in steps {
        let g = group(&step);
        if stopped.contains(&g) {
            continue;
        }
        let key = format!("{step:?}");
        if refused.contains_key(&key) {
            stopped.insert(g);
            continue;
        }
        if let Err(e) = node.write(command(step)).await {
            tracing::warn!(error = %e, "{what} not committed; again next round");
            refused.insert(key, retry_at);
            stopped.insert(g);
        }
    }
}

/// The command of a lifecycle step, logged.
fn step_command(step: LifecycleStep) -> Command {
    if let LifecycleStep::Advance {
        component,
        to,
        reason,
    } = &step
    {
        tracing::info!(%component, state = %to, %reason, "shadow advanced");
    }
    if let LifecycleStep::Shift {
        component,
        percent,
        reason,
        ..
    } = &step
    {
        tracing::info!(%component, percent, %reason, "traffic step");
    }
    step.into_command(now_ms())
}

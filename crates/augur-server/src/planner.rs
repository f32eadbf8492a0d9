//! The planner on the node: `augur_plan::plan_failovers` over this node's forecasts, the
//! blast radii of the replicated graph and the replicated state. `Topology.PlanFailovers`
//! shows its decisions; with `planner.act` on, the leader also commits them: a shadow request
//! and a `Provision` action for orchestrators, per decision the policy lets it act on; and it
//! moves every shadow in flight on as orchestrators report outcomes
//! (`augur_plan::lifecycle`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use augur_plan::{ComponentRisk, Decision, LifecycleStep, Mode, PlannerConfig};
use augur_types::{Command, ComponentId, ControlState, Placement};
use tonic::Status;

use crate::config::PlannerSection;
use crate::node::{LeaderTicks, Node};
use crate::predict::Predictors;
use crate::service::now_ms;
use crate::service::topology::{cached_blast_radii, RiskCache};

/// The decisions the planner takes now, most urgent first.
pub async fn decisions(
    node: &Node,
    predictors: &Predictors,
    cache: &Arc<RiskCache>,
) -> Result<Vec<Decision>, Status> {
    let forecasts = predictors
        .system()
        .list_at_risk(usize::MAX, 0.0)
        .await
        .map_err(|e| Status::unavailable(format!("predictors: {e}")))?;
    let g = node.state.read(ControlState::dependency_graph);
    let cache = cache.clone();
    let radii = tokio::task::spawn_blocking(move || cached_blast_radii(&cache, g))
        .await
        .map_err(|e| Status::internal(format!("blast radii failed: {e}")))?;
    let blast: HashMap<&str, f64> = radii
        .iter()
        .map(|b| (b.component.as_str(), b.blast_radius))
        .collect();
    let risks: BTreeMap<ComponentId, ComponentRisk> = forecasts
        .iter()
        .map(|(id, f)| {
            let r = ComponentRisk {
                p_fail: f.p_fail[1],
                hps: f.hps,
                blast_radius: blast.get(id.as_str()).copied().unwrap_or(0.0),
            };
            (id.clone(), r)
        })
        .collect();
    Ok(node
        .state
        .read(|s| augur_plan::plan_failovers(s, &risks, &PlannerConfig::default())))
}

/// On the leader, every `planner.every_ms`: moves every shadow on from the outcomes reported
/// since the last round, then, with `planner.act`, commits the decisions it may act on. Each one
/// becomes `RequestShadow` (the state then holds the shadow in flight, so the next round
/// skips the component) and, once that is committed, an idempotent `Provision` action on the
/// component naming its shadow, the shadow's placement and the reason.
pub fn spawn(node: Node, predictors: Predictors, cfg: &PlannerSection) {
    let act = cfg.act;
    let every = Duration::from_millis(cfg.every_ms);
    let cache: Arc<RiskCache> = Default::default();
    tokio::spawn(async move {
        let mut ticks = LeaderTicks::new(every);
        loop {
            ticks.next(&node).await;
            // Shadows in flight first: outcomes reported since the last round move them on.
            let steps = node.state.read(augur_plan::next_steps);
            for step in steps {
                if let Err(e) = commit_step(&node, step).await {
                    tracing::warn!(error = %e, "shadow step not committed");
                    break;
                }
            }
            if !act {
                continue;
            }
            let found = match decisions(&node, &predictors, &cache).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::debug!(error = %e, "no plan this round");
                    continue;
                }
            };
            for d in found {
                if d.mode != Mode::Act {
                    metrics::counter!("augur_planner_recommendations_total").increment(1);
                    continue;
                }
                if let Err(e) = commit(&node, &d).await {
                    tracing::warn!(component = %d.component, error = %e, "failover not committed");
                }
            }
        }
    });
}

/// Commits one decision: the shadow request, then its `Provision` action.
async fn commit(node: &Node, d: &Decision) -> Result<(), Status> {
    let Some(to) = &d.to else {
        metrics::counter!("augur_planner_no_room_total").increment(1);
        return Ok(());
    };
    let shadow = start_failover(node, &d.component, to, &d.reason).await?;
    metrics::counter!("augur_planner_failovers_total").increment(1);
    tracing::info!(component = %d.component, %shadow, host = %to.host, reason = %d.reason, "failover started");
    Ok(())
}

/// Starts a failover of `component` to a shadow at `to`: the shadow request, then its
/// `Provision` action (idempotent by request id; the next round's lifecycle appends it too if
/// this leader dies in between). The lifecycle takes it from there.
pub async fn start_failover(
    node: &Node,
    component: &ComponentId,
    to: &Placement,
    reason: &str,
) -> Result<ComponentId, Status> {
    let at = now_ms();
    let shadow = ComponentId::new(format!("{component}.shadow-{at}"))
        .map_err(|e| Status::invalid_argument(format!("shadow id: {e}")))?;
    node.write(Command::RequestShadow {
        component: component.clone(),
        shadow: shadow.clone(),
        placement: to.clone(),
        reason: reason.to_owned(),
    })
    .await?;
    let step = node.state.read(|s| {
        s.shadows
            .get(component)
            .map(|rec| augur_plan::provision(component, rec))
    });
    if let Some(step) = step {
        node.write(step.into_command(at)).await?;
    }
    Ok(shadow)
}

/// Commits one step of a shadow's lifecycle.
async fn commit_step(node: &Node, step: LifecycleStep) -> Result<(), Status> {
    if let LifecycleStep::Advance {
        component,
        to,
        reason,
    } = &step
    {
        tracing::info!(%component, state = %to, %reason, "shadow advanced");
    }
    node.write(step.into_command(now_ms())).await.map(|_| ())
}

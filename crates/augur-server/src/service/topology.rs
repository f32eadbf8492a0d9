use std::sync::Arc;

use augur_graph::{
    history_component, rank_root_causes_by, rank_with_graph, BlastRadius, DepGraph,
    PropagationOptions, RcaError, RcaOptions, RiskPolicy,
};
use augur_proto::{
    component_from_wire, component_to_wire, edge_update_from_wire, faded_edge_to_wire,
    graph_edge_to_wire, graph_node_to_wire, impact_to_wire, pb, placement_from_wire, risk_to_wire,
    weights_from_wire,
};
use augur_types::{Applied, Command, ComponentId, ControlState, Host, MAX_EDGE_BATCH};

use tonic::{Request, Response, Status};

use crate::node::{Consistency, Node};
use crate::predict::Predictors;

pub struct TopologyService {
    node: Node,
    predictors: Option<Predictors>,
    /// The last blast radii and the graph they are for: when only some edges changed since,
    /// `GetRisk` walks what those edges reach instead of the whole graph.
    risk_cache: Arc<RiskCache>,
    /// What the planner admits: the preview leaves out what the planner would.
    admit: crate::planner::Admit,
}

/// The graph the cached blast radii are for, and the radii.
pub(crate) type RiskCache = std::sync::Mutex<Option<(DepGraph, Vec<BlastRadius>)>>;

/// Every blast radius of `g`, updated from `cache` when only edges changed since it was
/// filled, and put back in it.
pub(crate) fn cached_blast_radii(cache: &RiskCache, g: DepGraph) -> Vec<BlastRadius> {
    let opts = propagation_options();
    let mut cache = cache.lock().expect("risk cache lock");
    let radii = match cache.take() {
        Some((old, mut radii)) => match g.strength_changes(&old) {
            Some(changed) => {
                let changed: Vec<(&str, &str)> = changed
                    .iter()
                    .map(|(a, b)| (a.as_str(), b.as_str()))
                    .collect();
                let walked = augur_graph::update_blast_radii(&g, &mut radii, &changed, &opts);
                metrics::counter!("augur_graph_blast_radius_rows_walked_total")
                    .increment(walked as u64);
                radii
            }
            None => augur_graph::blast_radii(&g, &opts),
        },
        None => augur_graph::blast_radii(&g, &opts),
    };
    *cache = Some((g, radii.clone()));
    radii
}

impl TopologyService {
    /// `predictors` gives `GetRisk` its P(fail) (each component's latest forecast) and
    /// `RankRootCauses` its metric history.
    pub fn new(node: Node, predictors: Option<Predictors>, admit: crate::planner::Admit) -> Self {
        Self {
            node,
            predictors,
            risk_cache: Default::default(),
            admit,
        }
    }

    async fn write(&self, cmd: Command) -> Result<Response<pb::WriteResponse>, Status> {
        let (log_index, _) = self.node.write(cmd).await?;
        Ok(Response::new(pb::WriteResponse { log_index }))
    }
}

/// The graph and what the risk rows need from the state, read under one lock.
fn graph_snapshot(s: &ControlState) -> (DepGraph, Vec<(String, RiskPolicy)>) {
    let policies = s
        .components
        .values()
        .map(|c| {
            let policy = augur_plan::failover::risk_policy(
                &s.policy_for(&c.group),
                &augur_plan::PlannerConfig::default(),
            );
            (c.id.to_string(), policy)
        })
        .collect();
    (s.dependency_graph(), policies)
}

/// Simulation settings of `GetRisk` and `WhatIf`: the library's default worlds, spread over
/// the machine's cores (the answer does not depend on how many).
fn propagation_options() -> PropagationOptions {
    PropagationOptions {
        threads: super::default_parallelism(),
        ..PropagationOptions::default()
    }
}

/// Propagation is CPU work: it runs off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("graph task failed: {e}")))
}

pub(crate) fn component_id(id: String) -> Result<ComponentId, Status> {
    ComponentId::new(id).map_err(|e| Status::invalid_argument(e.to_string()))
}

#[tonic::async_trait]
impl pb::topology_server::Topology for TopologyService {
    async fn upsert_component(
        &self,
        req: Request<pb::UpsertComponentRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let c = component_from_wire(req.into_inner().component)?;
        self.write(Command::UpsertComponent(c)).await
    }

    async fn remove_component(
        &self,
        req: Request<pb::RemoveComponentRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let id = component_id(req.into_inner().id)?;
        self.write(Command::RemoveComponent { id }).await
    }

    async fn get_component(
        &self,
        req: Request<pb::GetComponentRequest>,
    ) -> Result<Response<pb::Component>, Status> {
        let req = req.into_inner();
        let id = component_id(req.id)?;
        self.node
            .read_barrier(Consistency::from(req.consistency))
            .await?;
        self.node
            .state
            .read(|s| s.components.get(&id).map(component_to_wire))
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("unknown component {id}")))
    }

    async fn list_components(
        &self,
        req: Request<pb::ListComponentsRequest>,
    ) -> Result<Response<pb::ListComponentsResponse>, Status> {
        let req = req.into_inner();
        self.node
            .read_barrier(Consistency::from(req.consistency))
            .await?;
        let components = self.node.state.read(|s| {
            s.components
                .values()
                .filter(|c| req.group.is_empty() || c.group == req.group)
                .filter(|c| req.zone.is_empty() || c.placement.zone == req.zone)
                .map(component_to_wire)
                .collect()
        });
        Ok(Response::new(pb::ListComponentsResponse { components }))
    }

    async fn upsert_host(
        &self,
        req: Request<pb::UpsertHostRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let req = req.into_inner();
        let placement = placement_from_wire(req.placement)?;
        self.write(Command::UpsertHost(Host {
            placement,
            capacity: req.capacity,
        }))
        .await
    }

    async fn apply_topology(
        &self,
        req: Request<pb::ApplyTopologyRequest>,
    ) -> Result<Response<pb::ApplyTopologyResponse>, Status> {
        let req = req.into_inner();
        let hosts = req
            .hosts
            .into_iter()
            .map(|h| {
                Ok(Host {
                    placement: placement_from_wire(h.placement)?,
                    capacity: h.capacity,
                })
            })
            .collect::<Result<Vec<_>, Status>>()?;
        let components = req
            .components
            .into_iter()
            .map(|c| component_from_wire(Some(c)))
            .collect::<Result<Vec<_>, _>>()?;
        // Stamped here: a declared dependency never fades, and this clock is the cluster's.
        let at = super::now_ms();
        let edges = req
            .dependencies
            .into_iter()
            .map(|d| augur_graph::EdgeUpdate {
                from: d.from,
                to: d.to,
                observation: augur_graph::Observation::new(
                    augur_graph::EdgeSource::Declared,
                    d.strength,
                    at,
                ),
            })
            .collect();
        let (log_index, applied) = self
            .node
            .write(Command::ApplyTopology {
                hosts,
                components,
                edges,
            })
            .await?;
        let Applied::Topology {
            withdrawn,
            edges_removed,
        } = applied
        else {
            return Err(Status::internal(format!(
                "apply_topology answered {applied:?}"
            )));
        };
        Ok(Response::new(pb::ApplyTopologyResponse {
            log_index,
            withdrawn,
            edges_removed,
        }))
    }

    async fn set_policy(
        &self,
        req: Request<pb::SetPolicyRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let req = req.into_inner();
        let p = req
            .policy
            .ok_or_else(|| Status::invalid_argument("missing field policy"))?;
        let approval = match p.approval.as_str() {
            "act" => augur_types::ApprovalMode::Act,
            "recommend" => augur_types::ApprovalMode::Recommend,
            other => {
                return Err(Status::invalid_argument(format!(
                    "approval {other:?}: act or recommend expected"
                )))
            }
        };
        let risk_tolerance = u8::try_from(p.risk_tolerance).map_err(|_| {
            Status::invalid_argument(format!("risk tolerance {} is above 100", p.risk_tolerance))
        })?;
        let canary_steps = p
            .canary_steps
            .iter()
            .map(|&s| u8::try_from(s))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| {
                Status::invalid_argument(format!("canary steps {:?}: each 1..=100", p.canary_steps))
            })?;
        self.write(Command::SetPolicy {
            group: req.group,
            policy: augur_types::Policy {
                risk_tolerance,
                approval,
                canary_steps,
                scaling: p.scaling.map(|s| augur_types::ScalingPolicy {
                    per_instance_rps: s.per_instance_rps,
                    headroom_percent: s.headroom_percent,
                    max_instances: s.max_instances,
                    horizon_s: if s.horizon_s == 0 { 120 } else { s.horizon_s },
                }),
            },
        })
        .await
    }

    async fn get_policy(
        &self,
        req: Request<pb::GetPolicyRequest>,
    ) -> Result<Response<pb::Policy>, Status> {
        let req = req.into_inner();
        self.node
            .read_barrier(Consistency::from(req.consistency))
            .await?;
        let p = self.node.state.read(|s| s.policy_for(&req.group));
        Ok(Response::new(pb::Policy {
            risk_tolerance: u32::from(p.risk_tolerance),
            approval: match p.approval {
                augur_types::ApprovalMode::Act => "act".into(),
                augur_types::ApprovalMode::Recommend => "recommend".into(),
            },
            canary_steps: p.canary_steps.iter().map(|&s| u32::from(s)).collect(),
            scaling: p.scaling.map(|s| pb::ScalingPolicy {
                per_instance_rps: s.per_instance_rps,
                headroom_percent: s.headroom_percent,
                max_instances: s.max_instances,
                horizon_s: s.horizon_s,
            }),
        }))
    }

    async fn set_weights(
        &self,
        req: Request<pb::SetWeightsRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let req = req.into_inner();
        let weights = weights_from_wire(req.weights)?;
        self.write(Command::SetWeights {
            service: req.service,
            weights,
        })
        .await
    }

    async fn get_weights(
        &self,
        req: Request<pb::GetWeightsRequest>,
    ) -> Result<Response<pb::GetWeightsResponse>, Status> {
        let req = req.into_inner();
        self.node
            .read_barrier(Consistency::from(req.consistency))
            .await?;
        let weights = self.node.state.read(|s| {
            s.weights
                .get(&req.service)
                .map(augur_proto::weights_to_wire)
        });
        weights
            .map(|weights| Response::new(pb::GetWeightsResponse { weights }))
            .ok_or_else(|| Status::not_found(format!("service {} has no weights", req.service)))
    }

    async fn upsert_edges(
        &self,
        req: Request<pb::UpsertEdgesRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let updates = req.into_inner().updates;
        if updates.len() > MAX_EDGE_BATCH {
            return Err(Status::invalid_argument(format!(
                "{} edge updates in one request; at most {MAX_EDGE_BATCH}",
                updates.len()
            )));
        }
        let updates = updates
            .into_iter()
            .map(edge_update_from_wire)
            .collect::<Result<Vec<_>, _>>()?;
        // An observation stamped in the future would never fade, and would hide every later
        // one of its edge and source as "older" (a time in µs instead of ms does it).
        let latest = super::now_ms().saturating_add(super::CLOCK_SKEW_MS);
        if let Some(u) = updates.iter().find(|u| u.observation.last_seen_ms > latest) {
            return Err(Status::invalid_argument(format!(
                "edge {} -> {}: seen at {} ms, more than {} s ahead of this node's clock",
                u.from,
                u.to,
                u.observation.last_seen_ms,
                super::CLOCK_SKEW_MS / 1000
            )));
        }
        self.write(Command::UpsertEdges(updates)).await
    }

    async fn get_graph(
        &self,
        req: Request<pb::GetGraphRequest>,
    ) -> Result<Response<pb::Graph>, Status> {
        let req = req.into_inner();
        self.node
            .read_barrier(Consistency::from(req.consistency))
            .await?;
        let (g, faded) = self.node.state.read(|s| {
            let faded: Vec<pb::FadedEdge> = s.faded.iter().map(faded_edge_to_wire).collect();
            (s.dependency_graph(), faded)
        });
        // Filtering copies the graph: only when asked to.
        let g = if req.group.is_empty() && req.zone.is_empty() {
            g
        } else {
            let none_if_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
            g.filtered(
                none_if_empty(&req.group).as_deref(),
                none_if_empty(&req.zone).as_deref(),
            )
        };
        let mut nodes: Vec<pb::GraphNode> = g.nodes().map(graph_node_to_wire).collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        let mut edges: Vec<pb::GraphEdge> = g
            .edges()
            .map(|e| graph_edge_to_wire(e.from, e.to, e.edge))
            .collect();
        edges.sort_by(|a, b| (&a.from, &a.to).cmp(&(&b.from, &b.to)));
        Ok(Response::new(pb::Graph {
            nodes,
            edges,
            recently_faded: faded,
        }))
    }

    async fn get_risk(
        &self,
        req: Request<pb::GetRiskRequest>,
    ) -> Result<Response<pb::GetRiskResponse>, Status> {
        let req = req.into_inner();
        self.node
            .read_barrier(Consistency::from(req.consistency))
            .await?;
        let (g, policies) = self.node.state.read(graph_snapshot);
        if !req.component.is_empty() && g.node(&req.component).is_none() {
            return Err(Status::not_found(format!(
                "unknown component {}",
                req.component
            )));
        }
        let cache = self.risk_cache.clone();
        let radii = blocking(move || cached_blast_radii(&cache, g)).await?;
        // P(fail within 1 h) of the component asked about, or of every component with a
        // forecast, from each shard's owner (its standby where the owner falls short).
        let p_fail: std::collections::HashMap<String, f64> = match &self.predictors {
            Some(p) if !req.component.is_empty() => {
                // A graph node that is no component (a peer seen in traces) has no forecast.
                let forecast = match ComponentId::new(req.component.clone()) {
                    Ok(id) => p.forecast(&id).await?,
                    Err(_) => None,
                };
                forecast
                    .map(|(_, f)| (req.component.clone(), f.p_fail[1]))
                    .into_iter()
                    .collect()
            }
            Some(p) => p
                .all_forecasts()
                .await?
                .into_iter()
                .map(|(id, f)| (id.to_string(), f.p_fail[1]))
                .collect(),
            None => Default::default(),
        };
        let policies: std::collections::HashMap<String, RiskPolicy> =
            policies.into_iter().collect();
        let mut risks: Vec<pb::ComponentRisk> = radii
            .iter()
            .filter(|b| req.component.is_empty() || b.component == req.component)
            .map(|b| {
                let policy = policies.get(&b.component).copied().unwrap_or_default();
                let threshold = augur_graph::action_threshold(b.blast_radius, &policy);
                // Risk is absent while the component has no forecast.
                risk_to_wire(b, threshold, p_fail.get(&b.component).copied())
            })
            .collect();
        risks.sort_by(|a, b| {
            b.blast_radius
                .total_cmp(&a.blast_radius)
                .then_with(|| a.component.cmp(&b.component))
        });
        if req.limit > 0 {
            risks.truncate(req.limit as usize);
        }
        Ok(Response::new(pb::GetRiskResponse { risks }))
    }

    async fn what_if(
        &self,
        req: Request<pb::WhatIfRequest>,
    ) -> Result<Response<pb::WhatIfResponse>, Status> {
        let req = req.into_inner();
        self.node
            .read_barrier(Consistency::from(req.consistency))
            .await?;
        let g = self.node.state.read(ControlState::dependency_graph);
        let mut opts = propagation_options();
        if req.samples > 0 {
            opts.samples = req.samples.min(100_000);
        }
        let component = req.component;
        let (impacts, radius) = blocking(move || {
            let impacts = augur_graph::what_if(&g, &component, &opts)?;
            let radius = augur_graph::blast_radius_of(&g, &impacts);
            Ok::<_, augur_graph::GraphError>((impacts, radius))
        })
        .await?
        .map_err(|e| Status::not_found(e.to_string()))?;
        Ok(Response::new(pb::WhatIfResponse {
            impacts: impacts.iter().map(impact_to_wire).collect(),
            blast_radius: radius,
        }))
    }

    async fn rank_root_causes(
        &self,
        req: Request<pb::RankRootCausesRequest>,
    ) -> Result<Response<pb::RankRootCausesResponse>, Status> {
        let req = req.into_inner();
        if req.from_ms < 0 {
            return Err(Status::invalid_argument(format!(
                "from_ms is {}; a window starts at 0 (1970) or later",
                req.from_ms
            )));
        }
        if req.to_ms < req.from_ms {
            return Err(Status::invalid_argument(format!(
                "the window ends (to_ms {}) before it starts (from_ms {})",
                req.to_ms, req.from_ms
            )));
        }
        if req.reference_ms < 0 {
            return Err(Status::invalid_argument(format!(
                "reference_ms is {}; it must be 0 (all history) or more",
                req.reference_ms
            )));
        }
        let Some(predictors) = &self.predictors else {
            return Err(Status::failed_precondition(
                "this node keeps no metric history",
            ));
        };
        let history = predictors.history.clone();
        let graph =
            (!req.metrics_only).then(|| self.node.state.read(ControlState::dependency_graph));
        let out = blocking(move || {
            let cfg = history.config();
            let kept_ms = cfg.step_ms * cfg.slots as i64;
            let start = if req.reference_ms > 0 {
                req.from_ms.saturating_sub(req.reference_ms)
            } else {
                req.to_ms.saturating_sub(kept_ms)
            };
            let frame = history.frame(start, req.to_ms)?;
            let fault = req.from_ms.div_euclid(1000);
            let opts = RcaOptions::default();
            let mut ranked = rank_root_causes_by(&frame, fault, &opts, history_component)?;
            if let Some(g) = &graph {
                ranked = rank_with_graph(&ranked, g, &opts);
            }
            let reference_rows = frame.times().iter().filter(|&&t| t < fault).count();
            Ok::<_, RcaError>((ranked, frame.names().len(), reference_rows, frame.len()))
        })
        .await?
        .map_err(|e| Status::failed_precondition(format!("cannot rank: {e}")))?;
        let (mut ranked, series, reference_rows, rows) = out;
        if req.limit > 0 {
            ranked.truncate(req.limit as usize);
        }
        Ok(Response::new(pb::RankRootCausesResponse {
            causes: ranked
                .into_iter()
                .map(|c| pb::RootCause {
                    component: c.component,
                    score: c.score,
                    metric: c.metric,
                })
                .collect(),
            series: series as u32,
            reference_rows: reference_rows as u32,
            window_rows: (rows - reference_rows) as u32,
        }))
    }

    async fn plan_failovers(
        &self,
        req: Request<pb::PlanFailoversRequest>,
    ) -> Result<Response<pb::PlanFailoversResponse>, Status> {
        let req = req.into_inner();
        self.node
            .read_barrier(Consistency::from(req.consistency))
            .await?;
        let Some(predictors) = &self.predictors else {
            return Ok(Response::new(pb::PlanFailoversResponse::default()));
        };
        let decisions =
            crate::planner::decisions(&self.node, predictors, &self.risk_cache, self.admit).await?;
        Ok(Response::new(pb::PlanFailoversResponse {
            decisions: decisions
                .into_iter()
                .map(|d| pb::FailoverDecision {
                    component: d.component.to_string(),
                    to: d.to.as_ref().map(augur_proto::placement_to_wire),
                    tier: d.tier.map(|t| t.as_str().to_owned()).unwrap_or_default(),
                    severity: d.severity.as_str().to_owned(),
                    mode: d.mode.as_str().to_owned(),
                    p_fail: d.p_fail,
                    threshold: d.threshold,
                    hps: d.hps,
                    blast_radius: d.blast_radius,
                    reason: d.reason,
                })
                .collect(),
        }))
    }

    async fn plan_footprints(
        &self,
        req: Request<pb::PlanFootprintsRequest>,
    ) -> Result<Response<pb::PlanFootprintsResponse>, Status> {
        let req = req.into_inner();
        self.node
            .read_barrier(Consistency::from(req.consistency))
            .await?;
        let Some(predictors) = &self.predictors else {
            return Ok(Response::new(pb::PlanFootprintsResponse::default()));
        };
        let plans =
            crate::planner::footprints(&self.node, predictors, &self.risk_cache, self.admit)
                .await?;
        let footprints = plans
            .into_iter()
            .map(|f| pb::Footprint {
                service: f.service,
                instances: f.instances as u32,
                zones_now: f.zones_now.into_iter().collect(),
                zones_desired: f.zones_desired.into_iter().collect(),
                max_per_rack_now: f.max_per_rack_now,
                max_per_rack_desired: f.max_per_rack_desired,
                max_per_host_now: f.max_per_host_now,
                max_per_host_desired: f.max_per_host_desired,
                divergence: f.divergence,
                threshold: f.threshold,
                moves: f
                    .moves
                    .into_iter()
                    .map(|m| pb::Migration {
                        component: m.component.to_string(),
                        from: Some(augur_proto::placement_to_wire(&m.from)),
                        to: Some(augur_proto::placement_to_wire(&m.to)),
                        hps: m.hps,
                        blast_radius: m.blast_radius,
                        reason: m.reason,
                    })
                    .collect(),
            })
            .collect();
        Ok(Response::new(pb::PlanFootprintsResponse { footprints }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use augur_graph::{EdgeSource, EdgeUpdate, Node as GraphNode, Observation};

    fn edge(g: &mut DepGraph, from: &str, to: &str, s: f64) {
        g.apply(&EdgeUpdate {
            from: from.into(),
            to: to.into(),
            observation: Observation::new(EdgeSource::Trace, s, 1),
        })
        .unwrap();
    }

    /// The cache answers what a fresh computation would, whatever changed in between.
    #[test]
    fn cached_blast_radii_follow_every_change() {
        let cache = std::sync::Mutex::new(None);
        let mut g = DepGraph::new();
        for (name, entry) in [
            ("web", true),
            ("api", false),
            ("db", false),
            ("cache", false),
        ] {
            let mut n = GraphNode::component(name);
            n.entry = entry;
            n.criticality = 3;
            g.upsert_node(n);
        }
        edge(&mut g, "web", "api", 1.0);
        edge(&mut g, "api", "db", 0.5);
        let fresh = |g: &DepGraph| augur_graph::blast_radii(g, &propagation_options());
        assert_eq!(cached_blast_radii(&cache, g.clone()), fresh(&g));
        // Edges only: the update path.
        edge(&mut g, "api", "cache", 0.7);
        edge(&mut g, "api", "db", 0.9);
        assert_eq!(cached_blast_radii(&cache, g.clone()), fresh(&g));
        g.remove_observation("web", "api", EdgeSource::Trace);
        assert_eq!(cached_blast_radii(&cache, g.clone()), fresh(&g));
        // A node change: recomputed in full.
        let mut n = GraphNode::component("api");
        n.entry = true;
        g.upsert_node(n);
        assert_eq!(cached_blast_radii(&cache, g.clone()), fresh(&g));
        assert!(fresh(&g)
            .iter()
            .any(|b| b.component == "db" && b.blast_radius > 0.0));
    }
}

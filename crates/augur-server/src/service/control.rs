use std::pin::Pin;

use augur_proto::{
    action_kind_from_wire, action_to_wire, kpis_from_wire, outcome_from_wire, pb, plan_to_wire,
    shadow_to_wire,
};
use augur_types::{
    ActionId, ActionStatus, Applied, Command, ComponentId, ComponentState, PlanDecision,
    PlanStatus, Severity,
};
use futures::Stream;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use crate::node::{Consistency, Node};
use crate::service::now_ms;
use crate::service::topology::component_id;

/// Actions sent per read of the state while a watcher catches up.
const WATCH_BATCH: usize = 256;

pub struct ControlService {
    node: Node,
}

impl ControlService {
    pub fn new(node: Node) -> Self {
        Self { node }
    }
}

type ActionStream = Pin<Box<dyn Stream<Item = Result<pb::Action, Status>> + Send>>;

#[tonic::async_trait]
impl pb::control_server::Control for ControlService {
    type WatchActionsStream = ActionStream;

    async fn watch_actions(
        &self,
        req: Request<pb::WatchActionsRequest>,
    ) -> Result<Response<ActionStream>, Status> {
        let req = req.into_inner();
        let state = self.node.state.clone();
        let mut applied = state.subscribe();
        let (tx, rx) = mpsc::channel::<Result<pb::Action, Status>>(WATCH_BATCH);
        tracing::debug!(orchestrator = %req.orchestrator, from = req.from_seq, "watch started");
        tokio::spawn(async move {
            let mut next = req.from_seq.max(1);
            loop {
                let batch: Vec<pb::Action> = state.read(|s| {
                    s.actions_from(next)
                        .iter()
                        .take(WATCH_BATCH)
                        .map(action_to_wire)
                        .collect()
                });
                if batch.is_empty() {
                    tokio::select! {
                        changed = applied.changed() => if changed.is_err() { return },
                        () = tx.closed() => return,
                    }
                    continue;
                }
                next += batch.len() as u64;
                for a in batch {
                    if tx.send(Ok(a)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn append_action(
        &self,
        req: Request<pb::AppendActionRequest>,
    ) -> Result<Response<pb::AppendActionResponse>, Status> {
        let req = req.into_inner();
        let cmd = Command::AppendAction {
            request_id: req.request_id,
            kind: action_kind_from_wire(req.kind)?,
            target: ComponentId::new(req.target)
                .map_err(|e| Status::invalid_argument(e.to_string()))?,
            params: req.params.into_iter().collect(),
            at_ms: now_ms(),
        };
        match self.node.write(cmd).await? {
            (_, Applied::Action { id, duplicate }) => Ok(Response::new(pb::AppendActionResponse {
                id: id.to_string(),
                seq: id.seq,
                duplicate,
            })),
            (_, other) => Err(Status::internal(format!("append answered {other:?}"))),
        }
    }

    async fn report_outcome(
        &self,
        req: Request<pb::ReportOutcomeRequest>,
    ) -> Result<Response<pb::ReportOutcomeResponse>, Status> {
        let req = req.into_inner();
        let id: ActionId = req.id.parse().map_err(Status::invalid_argument)?;
        if req.orchestrator.is_empty() {
            return Err(Status::invalid_argument("orchestrator must be named"));
        }
        let cmd = Command::ReportOutcome {
            id,
            orchestrator: req.orchestrator,
            outcome: outcome_from_wire(req.success, req.reason),
            kpis: req.kpis.map(kpis_from_wire).transpose()?,
            at_ms: now_ms(),
        };
        self.node.write(cmd).await?;
        Ok(Response::new(pb::ReportOutcomeResponse {}))
    }

    async fn claim_action(
        &self,
        req: Request<pb::ClaimActionRequest>,
    ) -> Result<Response<pb::ClaimActionResponse>, Status> {
        let req = req.into_inner();
        let id: ActionId = req.id.parse().map_err(Status::invalid_argument)?;
        let cmd = Command::ClaimAction {
            id,
            orchestrator: req.orchestrator,
            lease_ms: req.lease_ms,
            at_ms: now_ms(),
        };
        self.node.write(cmd).await?;
        let action = self
            .node
            .state
            .read(|s| s.action(id.seq).map(action_to_wire));
        Ok(Response::new(pb::ClaimActionResponse { action }))
    }

    async fn list_actions(
        &self,
        req: Request<pb::ListActionsRequest>,
    ) -> Result<Response<pb::ListActionsResponse>, Status> {
        let req = req.into_inner();
        let limit = if req.limit == 0 {
            1000
        } else {
            req.limit as usize
        };
        let actions = self.node.state.read(|s| {
            s.actions_from(req.from_seq)
                .iter()
                .filter(|a| {
                    !req.unclaimed_only || (a.status == ActionStatus::Pending && a.claim.is_none())
                })
                .take(limit)
                .map(action_to_wire)
                .collect()
        });
        Ok(Response::new(pb::ListActionsResponse { actions }))
    }

    async fn list_shadows(
        &self,
        _: Request<pb::ListShadowsRequest>,
    ) -> Result<Response<pb::ListShadowsResponse>, Status> {
        let shadows = self.node.state.read(|s| {
            s.shadows
                .iter()
                .chain(s.past_shadows.iter().rev().map(|(c, r)| (c, r)))
                .map(|(component, r)| shadow_to_wire(component, r))
                .collect()
        });
        Ok(Response::new(pb::ListShadowsResponse { shadows }))
    }

    async fn request_failover(
        &self,
        req: Request<pb::RequestFailoverRequest>,
    ) -> Result<Response<pb::RequestFailoverResponse>, Status> {
        let req = req.into_inner();
        let component = component_id(req.component)?;
        let to = self.node.state.read(|s| {
            let c = s
                .components
                .get(&component)
                .ok_or_else(|| Status::not_found(format!("unknown component {component}")))?;
            if let Some(r) = s.shadows.get(&component).filter(|r| r.state.in_flight()) {
                return Err(Status::failed_precondition(format!(
                    "{component} already has a shadow in flight ({}, {})",
                    r.shadow, r.state
                )));
            }
            if !req.host.is_empty() {
                let h = s
                    .hosts
                    .get(&req.host)
                    .ok_or_else(|| Status::not_found(format!("unknown host {}", req.host)))?;
                // A shadow on the original's own host fails with it: no failover at all.
                if req.host == c.placement.host {
                    return Err(Status::invalid_argument(format!(
                        "{component} runs on host {}; a shadow goes to another host",
                        req.host
                    )));
                }
                // An open plan is approved as it is, with its own target: a different host
                // asked for now would be quietly ignored.
                if let Some(p) = s.open_plan(&component).filter(|p| p.to.host != req.host) {
                    return Err(Status::failed_precondition(format!(
                        "{} is open for {component}, to host {}: approve or reject it \
                         (`ctl plan approve|reject {}`), or ask without --host",
                        p.id, p.to.host, p.id
                    )));
                }
                if augur_plan::Occupancy::of(s).room(h) == 0 {
                    return Err(Status::failed_precondition(format!(
                        "host {} has no room for a shadow of {component} (capacity {})",
                        req.host, h.capacity
                    )));
                }
                return Ok(h.placement.clone());
            }
            let occupancy = augur_plan::Occupancy::of(s);
            augur_plan::choose_host(&s.hosts, &c.placement, &occupancy, |_| 0.0)
                .map(|h| h.placement.clone())
                .ok_or_else(|| {
                    Status::failed_precondition(format!(
                        "no other host has room for a shadow of {component}"
                    ))
                })
        })?;
        let reason = if req.reason.is_empty() {
            "failover requested by an operator".to_owned()
        } else {
            format!("failover requested by an operator: {}", req.reason)
        };
        let (plan, shadow) = crate::planner::failover_now(
            &self.node,
            &component,
            &to,
            Severity::High,
            &reason,
            "operator",
        )
        .await?;
        // Where the plan places it (an open plan answered keeps its own target).
        let to = self
            .node
            .state
            .read(|s| s.plan(&plan).map(|p| p.to.clone()))
            .unwrap_or(to);
        Ok(Response::new(pb::RequestFailoverResponse {
            shadow: shadow.to_string(),
            placement: Some(augur_proto::placement_to_wire(&to)),
            plan,
        }))
    }

    async fn list_plans(
        &self,
        req: Request<pb::ListPlansRequest>,
    ) -> Result<Response<pb::ListPlansResponse>, Status> {
        let open_only = req.into_inner().open_only;
        let plans = self.node.state.read(|s| {
            s.plans
                .values()
                .rev()
                .filter(|p| !open_only || p.status.open())
                .map(plan_to_wire)
                .collect()
        });
        Ok(Response::new(pb::ListPlansResponse { plans }))
    }

    async fn get_plan(
        &self,
        req: Request<pb::GetPlanRequest>,
    ) -> Result<Response<pb::PlanDetail>, Status> {
        let id = req.into_inner().id;
        let detail = self.node.state.read(|s| {
            let p = s.plan(&id).ok_or_else(|| {
                Status::not_found(format!("unknown plan {id:?} (plan ids are plan-N)"))
            })?;
            let shadow = p.shadow.as_ref().and_then(|shadow| {
                s.shadows
                    .get(&p.component)
                    .filter(|r| &r.shadow == shadow)
                    .or_else(|| {
                        s.past_shadows
                            .iter()
                            .find(|(c, r)| c == &p.component && &r.shadow == shadow)
                            .map(|(_, r)| r)
                    })
                    .map(|r| shadow_to_wire(&p.component, r))
            });
            // The actions taken for it: on the component or its shadow, since it was made.
            let actions = p
                .shadow
                .as_ref()
                .map(|shadow| {
                    s.actions
                        .iter()
                        .filter(|a| a.created_ms >= p.created_ms)
                        .filter(|a| &a.target == shadow || a.target == p.component)
                        .map(action_to_wire)
                        .collect()
                })
                .unwrap_or_default();
            Ok::<_, Status>(pb::PlanDetail {
                plan: Some(plan_to_wire(p)),
                shadow,
                actions,
            })
        })?;
        Ok(Response::new(detail))
    }

    async fn put_state(
        &self,
        req: Request<pb::PutStateRequest>,
    ) -> Result<Response<pb::PutStateResponse>, Status> {
        let req = req.into_inner();
        let component = component_id(req.component)?;
        if req.orchestrator.is_empty() {
            return Err(Status::invalid_argument("orchestrator must be named"));
        }
        let (log_index, _) = self
            .node
            .write(Command::PutComponentState {
                component,
                state: ComponentState {
                    version: req.version,
                    bytes: req.data,
                    orchestrator: req.orchestrator,
                    at_ms: now_ms(),
                },
            })
            .await?;
        Ok(Response::new(pb::PutStateResponse { log_index }))
    }

    async fn get_state(
        &self,
        req: Request<pb::GetStateRequest>,
    ) -> Result<Response<pb::ComponentState>, Status> {
        let req = req.into_inner();
        let component = component_id(req.component)?;
        self.node
            .read_barrier(Consistency::from(req.consistency))
            .await?;
        self.node
            .state
            .read(|s| {
                s.component_states
                    .get(&component)
                    .map(|st| pb::ComponentState {
                        component: component.to_string(),
                        version: st.version,
                        data: st.bytes.clone(),
                        orchestrator: st.orchestrator.clone(),
                        at_ms: st.at_ms,
                    })
            })
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("no state held for {component}")))
    }

    async fn decide_plan(
        &self,
        req: Request<pb::DecidePlanRequest>,
    ) -> Result<Response<pb::DecidePlanResponse>, Status> {
        let req = req.into_inner();
        let decision = match req.decision.as_str() {
            "approve" => PlanDecision::Approve,
            "reject" => PlanDecision::Reject,
            other => {
                return Err(Status::invalid_argument(format!(
                    "decision {other:?}: approve or reject expected"
                )))
            }
        };
        let by = if req.by.is_empty() {
            "operator".to_owned()
        } else {
            req.by
        };
        self.node
            .write(Command::DecidePlan {
                id: req.id.clone(),
                decision: decision.clone(),
                by,
                note: req.note,
                at_ms: now_ms(),
            })
            .await?;
        // An approved plan starts now rather than at the planner's next round.
        let plan = self.node.state.read(|s| s.plan(&req.id).cloned());
        let plan = match plan {
            Some(p) if decision == PlanDecision::Approve && p.status == PlanStatus::Approved => {
                crate::planner::start_plan(&self.node, &p).await?;
                self.node.state.read(|s| s.plan(&req.id).cloned())
            }
            other => other,
        };
        Ok(Response::new(pb::DecidePlanResponse {
            plan: plan.as_ref().map(plan_to_wire),
        }))
    }
}

use std::pin::Pin;

use augur_proto::{
    action_kind_from_wire, action_to_wire, kpis_from_wire, outcome_from_wire, pb, weights_to_wire,
};
use augur_types::{ActionId, Applied, Command, ComponentId};
use futures::Stream;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use crate::node::Node;
use crate::service::now_ms;

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
                .map(|(component, r)| pb::Shadow {
                    component: component.to_string(),
                    shadow: r.shadow.to_string(),
                    placement: Some(augur_proto::placement_to_wire(&r.placement)),
                    state: r.state.to_string(),
                    in_flight: r.state.in_flight(),
                    history: r
                        .history
                        .iter()
                        .map(|(state, reason)| pb::ShadowStep {
                            state: state.to_string(),
                            reason: reason.clone(),
                        })
                        .collect(),
                    service: r
                        .shift
                        .as_ref()
                        .map(|f| f.service.clone())
                        .unwrap_or_default(),
                    weights_before: r
                        .shift
                        .as_ref()
                        .map(|f| weights_to_wire(&f.before))
                        .unwrap_or_default(),
                    weights_verified: r
                        .shift
                        .as_ref()
                        .map(|f| weights_to_wire(&f.verified))
                        .unwrap_or_default(),
                })
                .collect()
        });
        Ok(Response::new(pb::ListShadowsResponse { shadows }))
    }

    async fn request_failover(
        &self,
        req: Request<pb::RequestFailoverRequest>,
    ) -> Result<Response<pb::RequestFailoverResponse>, Status> {
        let req = req.into_inner();
        let component =
            ComponentId::new(req.component).map_err(|e| Status::invalid_argument(e.to_string()))?;
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
        let shadow = crate::planner::start_failover(&self.node, &component, &to, &reason).await?;
        Ok(Response::new(pb::RequestFailoverResponse {
            shadow: shadow.to_string(),
            placement: Some(augur_proto::placement_to_wire(&to)),
        }))
    }
}

use augur_proto::{
    component_from_wire, component_to_wire, pb, placement_from_wire, weights_from_wire,
};
use augur_types::{Command, ComponentId, Host};
use tonic::{Request, Response, Status};

use crate::node::{Consistency, Node};

pub struct TopologyService {
    node: Node,
}

impl TopologyService {
    pub fn new(node: Node) -> Self {
        Self { node }
    }

    async fn write(&self, cmd: Command) -> Result<Response<pb::WriteResponse>, Status> {
        let (log_index, _) = self.node.write(cmd).await?;
        Ok(Response::new(pb::WriteResponse { log_index }))
    }
}

fn component_id(id: String) -> Result<ComponentId, Status> {
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
                .map(|w| w.iter().map(|(k, v)| (k.to_string(), *v)).collect())
        });
        weights
            .map(|weights| Response::new(pb::GetWeightsResponse { weights }))
            .ok_or_else(|| Status::not_found(format!("service {} has no weights", req.service)))
    }
}

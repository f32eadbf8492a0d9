use std::collections::BTreeSet;
use std::net::SocketAddr;

use augur_proto::pb;
use std::time::Duration;

use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, ServerState};
use tonic::{Request, Response, Status};

use crate::node::{member_addr, Node};

pub struct ClusterService {
    node: Node,
    warmth: std::sync::Arc<crate::shards::Warmth>,
}

impl ClusterService {
    /// `warmth`: this node's warm-ups, reported in its status.
    pub fn new(node: Node, warmth: std::sync::Arc<crate::shards::Warmth>) -> Self {
        Self { node, warmth }
    }

    fn members(&self) -> Vec<pb::Member> {
        let m = self.node.raft.metrics().borrow().membership_config.clone();
        let voters: BTreeSet<u64> = m.membership().voter_ids().collect();
        let ids: Vec<u64> = m.membership().nodes().map(|(id, _)| *id).collect();
        // Every member's shard counts in one read of the state.
        let loads: Vec<(usize, usize)> = self.node.state.read(|s| {
            ids.iter()
                .map(|&id| s.shards.as_ref().map_or((0, 0), |map| map.load_of(id)))
                .collect()
        });
        m.membership()
            .nodes()
            .zip(loads)
            .map(|((id, n), (owned, standby))| pb::Member {
                id: *id,
                addr: n.addr.clone(),
                voter: voters.contains(id),
                shards_owned: owned as u32,
                shards_standby: standby as u32,
            })
            .collect()
    }

    fn membership_reply(
        &self,
        res: Result<
            openraft::raft::ClientWriteResponse<augur_store::TypeConfig>,
            RaftError<u64, ClientWriteError<u64, BasicNode>>,
        >,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        match res {
            Ok(r) => Ok(Response::new(pb::MembershipResponse {
                log_index: r.log_id.index,
                members: self.members(),
            })),
            Err(e) => Err(crate::proposer::raft_error_status(e)),
        }
    }
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for ClusterService {
    async fn status(
        &self,
        _req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let m = self.node.raft.metrics().borrow().clone();
        let role = match m.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        let leader_addr = m
            .current_leader
            .and_then(|l| member_addr(&self.node.raft, l))
            .unwrap_or_default();
        Ok(Response::new(pb::StatusResponse {
            id: m.id,
            role: role.into(),
            leader_id: m.current_leader,
            leader_addr,
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            last_applied: m.last_applied.map(|l| l.index).unwrap_or(0),
            members: self.members(),
            snapshot_index: m.snapshot.map(|l| l.index).unwrap_or(0),
            purged_index: m.purged.map(|l| l.index).unwrap_or(0),
            shard_epoch: self
                .node
                .state
                .read(|s| s.shards.as_ref().map_or(0, |map| map.epoch)),
            warm_shard_epoch: self.warmth.epoch(),
        }))
    }

    async fn add_learner(
        &self,
        req: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let req = req.into_inner();
        if req.id == 0 {
            return Err(Status::invalid_argument("node id must be above 0"));
        }
        if req.addr.parse::<SocketAddr>().is_err() {
            return Err(Status::invalid_argument(format!(
                "{:?} is not an IP:PORT address",
                req.addr
            )));
        }
        // Blocks until the learner has caught up, so a promotion right after is safe.
        let res = self
            .node
            .raft
            .add_learner(req.id, BasicNode::new(&req.addr), true)
            .await;
        self.membership_reply(res)
    }

    async fn change_membership(
        &self,
        req: Request<pb::ChangeMembershipRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let req = req.into_inner();
        let voters: BTreeSet<u64> = req.voters.into_iter().collect();
        if voters.is_empty() {
            return Err(Status::invalid_argument("the voter set may not be empty"));
        }
        // Checked against the membership the leader holds: on a follower (possibly behind)
        // openraft answers with the leader to ask instead.
        if self.node.is_leader() {
            let known: BTreeSet<u64> = self.members().iter().map(|m| m.id).collect();
            if let Some(unknown) = voters.iter().find(|v| !known.contains(v)) {
                return Err(Status::failed_precondition(format!(
                    "node {unknown} is not a member; add it as a learner first"
                )));
            }
        }
        let change: ChangeMembers<u64, BasicNode> = if req.add {
            ChangeMembers::AddVoterIds(voters)
        } else {
            ChangeMembers::ReplaceAllVoters(voters)
        };
        // A membership change still committing (the learner just added, say) makes openraft
        // refuse the next one; it is waited for, a few times, rather than failed.
        let mut tries = 0;
        loop {
            let res = self
                .node
                .raft
                .change_membership(change.clone(), false)
                .await;
            let pending = match &res {
                Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                    ChangeMembershipError::InProgress(p),
                ))) => p.membership_log_id,
                _ => None,
            };
            match pending {
                Some(log_id) if tries < 3 => {
                    tries += 1;
                    // The wait's own timeout is not an error here: the retry says what is left.
                    let _ = self
                        .node
                        .raft
                        .wait(Some(Duration::from_secs(5)))
                        .applied_index_at_least(Some(log_id.index), "the pending membership change")
                        .await;
                }
                _ => return self.membership_reply(res),
            }
        }
    }
}

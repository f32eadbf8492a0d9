use std::collections::BTreeSet;
use std::net::SocketAddr;

use augur_proto::pb;
use std::time::Duration;

use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, ServerState};
use tonic::{Request, Response, Status};

use crate::node::{member_addr, Node};

/// How long `AddLearner` waits for the new node to answer before refusing to add it.
const PROBE_FOR: Duration = Duration::from_secs(10);
/// How long `AddLearner` waits for the new learner to catch up.
const CATCH_UP_FOR: Duration = Duration::from_secs(60);
/// How long `ChangeMembership` asks a learner it is to promote whether it is up.
const PROMOTE_PROBE_FOR: Duration = Duration::from_secs(2);
/// How far behind the leader's log a learner may be and still be promoted.
const PROMOTE_MAX_LAG: u64 = 1000;

/// The last log index the leader knows `id` to hold (None off the leader, or before the
/// first reply).
fn matched_index(m: &openraft::RaftMetrics<u64, BasicNode>, id: u64) -> Option<u64> {
    m.replication
        .as_ref()?
        .get(&id)
        .copied()
        .flatten()
        .map(|l| l.index)
}

/// Which node answers at `addr`: its id, from its `Status`, asked again for up to `within`
/// (a node just started may not listen yet).
async fn probe(addr: &str, within: Duration) -> Result<u64, String> {
    let deadline = tokio::time::Instant::now() + within;
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(2));
    loop {
        let last = match endpoint.connect().await {
            Ok(ch) => match pb::cluster_client::ClusterClient::new(ch)
                .status(pb::StatusRequest {})
                .await
            {
                Ok(r) => return Ok(r.into_inner().id),
                Err(s) => s.message().to_owned(),
            },
            Err(e) => e.to_string(),
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(last);
        }
        // Polling another process until it listens; not a stand-in for synchronisation
        // within this one.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

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
        let Ok(addr) = req.addr.parse::<SocketAddr>() else {
            return Err(Status::invalid_argument(format!(
                "{:?} is not an IP:PORT address",
                req.addr
            )));
        };
        if !crate::config::reachable(&addr) {
            return Err(Status::invalid_argument(format!(
                "{addr} is not an address peers can reach the node at: name its own IP and port"
            )));
        }
        // Checked by the leader (a follower's membership may be behind; openraft sends the
        // caller to the leader below). Nothing is changed unless every check passes.
        if self.node.is_leader() {
            let members = self.members();
            if members.iter().any(|m| m.id == req.id && m.addr == req.addr) {
                // Already a member there: nothing to do.
                let applied = self.node.raft.metrics().borrow().last_applied;
                return Ok(Response::new(pb::MembershipResponse {
                    log_index: applied.map_or(0, |l| l.index),
                    members,
                }));
            }
            if let Some(m) = members
                .iter()
                .find(|m| m.id == req.id && m.addr != req.addr)
            {
                return Err(Status::failed_precondition(format!(
                    "node {} is already a member, at {}; nothing was changed",
                    m.id, m.addr
                )));
            }
            if let Some(m) = members
                .iter()
                .find(|m| m.id != req.id && m.addr == req.addr)
            {
                return Err(Status::failed_precondition(format!(
                    "{} is node {}'s address; nothing was changed",
                    m.addr, m.id
                )));
            }
            match probe(&req.addr, PROBE_FOR).await {
                Ok(id) if id == req.id => {}
                Ok(id) => {
                    return Err(Status::failed_precondition(format!(
                        "the node at {} is node {id}, not {}; nothing was changed",
                        req.addr, req.id
                    )))
                }
                Err(e) => {
                    return Err(Status::failed_precondition(format!(
                        "no Augur node answered at {} within {} s ({e}); start it first; \
                         nothing was changed",
                        req.addr,
                        PROBE_FOR.as_secs()
                    )))
                }
            }
        }
        let res = self
            .node
            .raft
            .add_learner(req.id, BasicNode::new(&req.addr), true)
            .await;
        let Ok(added) = &res else {
            return self.membership_reply(res);
        };
        // openraft's own wait gives up after half a second without saying so: wait here,
        // so a promotion right after an answer is safe.
        let at = added.log_id.index;
        let caught_up = self
            .node
            .raft
            .wait(Some(CATCH_UP_FOR))
            .metrics(
                |m| matched_index(m, req.id).is_some_and(|i| i >= at),
                "the new learner to catch up",
            )
            .await;
        if caught_up.is_err() {
            return Err(Status::deadline_exceeded(format!(
                "node {} was added as a learner but has not caught up within {} s; \
                 `promote` refuses it until it has",
                req.id,
                CATCH_UP_FOR.as_secs()
            )));
        }
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
            let members = self.members();
            let known: BTreeSet<u64> = members.iter().map(|m| m.id).collect();
            if let Some(unknown) = voters.iter().find(|v| !known.contains(v)) {
                return Err(Status::failed_precondition(format!(
                    "node {unknown} is not a member; add it as a learner first"
                )));
            }
            // A voter that cannot take entries (down, or behind) would count in every
            // quorum without acknowledging: in a two-node cluster, no write would commit.
            let m = self.node.raft.metrics().borrow().clone();
            let last = m.last_log_index.unwrap_or(0);
            for learner in members
                .iter()
                .filter(|x| !x.voter && voters.contains(&x.id))
            {
                let matched = matched_index(&m, learner.id);
                if matched.is_none_or(|i| i + PROMOTE_MAX_LAG < last) {
                    return Err(Status::failed_precondition(format!(
                        "node {} has {} of the leader's {last} entries; a voter that is \
                         down or behind could leave the cluster without a quorum; promote \
                         it once it has caught up (nothing was changed)",
                        learner.id,
                        matched.map_or("none".to_owned(), |i| i.to_string()),
                    )));
                }
                // Caught up is not enough: a learner that is down now would not acknowledge.
                match probe(&learner.addr, PROMOTE_PROBE_FOR).await {
                    Ok(id) if id == learner.id => {}
                    Ok(id) => {
                        return Err(Status::failed_precondition(format!(
                            "node {} is listed at {}, where node {id} answers; nothing was \
                             changed",
                            learner.id, learner.addr
                        )))
                    }
                    Err(e) => {
                        return Err(Status::failed_precondition(format!(
                            "node {} did not answer at {} ({e}); a voter that is down could \
                             leave the cluster without a quorum; promote it once it is up \
                             (nothing was changed)",
                            learner.id, learner.addr
                        )))
                    }
                }
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

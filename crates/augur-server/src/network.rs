//! Raft's network over gRPC: a client per peer for openraft, and the `RaftInternal` service
//! that hands peers' messages to the local Raft. Payloads are openraft's own types, postcard
//! encoded; a remote Raft error travels back inside the payload.

use std::time::Duration;

use augur_proto::pb;
use augur_proto::pb::raft_internal_client::RaftInternalClient;
use augur_store::{Raft, TypeConfig};
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

type NodeId = u64;

/// Largest Raft message between peers (snapshot chunks are 3 MiB by default).
pub const MAX_RAFT_MESSAGE: usize = 64 * 1024 * 1024;

/// Makes one gRPC client per peer.
#[derive(Clone, Default)]
pub struct GrpcNetwork;

impl RaftNetworkFactory<TypeConfig> for GrpcNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        let channel = Endpoint::from_shared(format!("http://{}", node.addr))
            .map(|e| {
                e.connect_timeout(Duration::from_millis(500))
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(5))
                    .connect_lazy()
            })
            .ok();
        let client = channel.map(|c| {
            RaftInternalClient::new(c)
                .max_decoding_message_size(MAX_RAFT_MESSAGE)
                .max_encoding_message_size(MAX_RAFT_MESSAGE)
        });
        PeerClient {
            target,
            addr: node.addr.clone(),
            client,
        }
    }
}

/// The connection to one peer.
pub struct PeerClient {
    target: NodeId,
    addr: String,
    client: Option<RaftInternalClient<Channel>>,
}

#[derive(Debug, thiserror::Error)]
#[error("peer {addr}: {reason}")]
struct PeerError {
    addr: String,
    reason: String,
}

impl PeerClient {
    async fn call<Req, Resp, E>(
        &mut self,
        method: &'static str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let data = self.encode(req)?;
        self.send(method, data, option).await
    }

    fn encode<Req: Serialize, E: std::error::Error>(
        &self,
        req: &Req,
    ) -> Result<Vec<u8>, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>> {
        postcard::to_allocvec(req).map_err(|e| {
            RPCError::Network(NetworkError::new(&PeerError {
                addr: self.addr.clone(),
                reason: e.to_string(),
            }))
        })
    }

    /// Sends an encoded request and decodes the answer.
    async fn send<Resp, E>(
        &mut self,
        method: &'static str,
        data: Vec<u8>,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let peer_err = |reason: String| PeerError {
            addr: self.addr.clone(),
            reason,
        };
        let Some(client) = self.client.as_mut() else {
            return Err(RPCError::Unreachable(Unreachable::new(&peer_err(
                "bad address".into(),
            ))));
        };
        let mut request = Request::new(pb::RaftPayload { data });
        request.set_timeout(option.hard_ttl());
        let fut = match method {
            "append" => client.append_entries(request).await,
            "vote" => client.vote(request).await,
            _ => client.install_snapshot(request).await,
        };
        let reply = fut.map_err(|s| {
            let e = peer_err(format!("{}: {}", s.code(), s.message()));
            match s.code() {
                tonic::Code::Unavailable => RPCError::Unreachable(Unreachable::new(&e)),
                _ => RPCError::Network(NetworkError::new(&e)),
            }
        })?;
        let decoded: Result<Resp, RaftError<NodeId, E>> =
            postcard::from_bytes(&reply.into_inner().data)
                .map_err(|e| RPCError::Network(NetworkError::new(&peer_err(e.to_string()))))?;
        decoded.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let data = self.encode(&rpc)?;
        // openraft 0.9 sends fewer entries only when told the payload is too large; any other
        // error resends the same range, which a follower far behind on large entries could
        // then never take within a heartbeat's deadline.
        if let Some(hint) = entries_hint(data.len(), rpc.entries.len()) {
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(hint),
            ));
        }
        self.send("append", data, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call("snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call("vote", &rpc, &option).await
    }

    fn backoff(&self) -> openraft::network::Backoff {
        // Retry an unreachable peer quickly: a restarted node should rejoin within a heartbeat
        // or two, not after openraft's default 500 ms.
        openraft::network::Backoff::new(std::iter::repeat(Duration::from_millis(100)))
    }
}

/// An AppendEntries message above this is sent in smaller pieces.
const MAX_APPEND_BYTES: usize = 4 << 20;

/// How many entries to send instead, when `bytes` for `entries` entries is over
/// [`MAX_APPEND_BYTES`] and there is more than one to drop: the share that fits, at least 1.
fn entries_hint(bytes: usize, entries: usize) -> Option<u64> {
    if bytes <= MAX_APPEND_BYTES || entries <= 1 {
        return None;
    }
    let fit = (entries as u128 * MAX_APPEND_BYTES as u128 / bytes as u128) as u64;
    Some(fit.clamp(1, entries as u64 - 1))
}

/// The server side: peers' Raft messages into the local Raft.
pub struct RaftInternalService {
    raft: Raft,
    gate: augur_store::SnapshotGate,
}

impl RaftInternalService {
    pub fn new(raft: Raft, gate: augur_store::SnapshotGate) -> Self {
        Self { raft, gate }
    }
}

fn decode<T: DeserializeOwned>(req: Request<pb::RaftPayload>) -> Result<T, Status> {
    postcard::from_bytes(&req.into_inner().data)
        .map_err(|e| Status::invalid_argument(format!("undecodable raft message: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Result<Response<pb::RaftPayload>, Status> {
    postcard::to_allocvec(value)
        .map(|data| Response::new(pb::RaftPayload { data }))
        .map_err(|e| Status::internal(format!("cannot encode raft reply: {e}")))
}

#[tonic::async_trait]
impl pb::raft_internal_server::RaftInternal for RaftInternalService {
    async fn append_entries(
        &self,
        req: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = decode(req)?;
        encode(&self.raft.append_entries(rpc).await)
    }

    async fn vote(
        &self,
        req: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        let rpc: VoteRequest<NodeId> = decode(req)?;
        encode(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        req: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = decode(req)?;
        if rpc.done {
            // The last chunk: openraft installs the snapshot and purges the log behind it
            // at once; the purge must wait for the install to reach the disk.
            self.gate.expect(rpc.meta.last_log_id.as_ref());
        }
        encode(&self.raft.install_snapshot(rpc).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_append_is_split_by_the_share_that_fits() {
        assert_eq!(entries_hint(MAX_APPEND_BYTES, 512), None);
        assert_eq!(
            entries_hint(MAX_APPEND_BYTES * 4, 1),
            None,
            "one entry cannot shrink"
        );
        assert_eq!(entries_hint(MAX_APPEND_BYTES * 4, 512), Some(128));
        assert_eq!(entries_hint(MAX_APPEND_BYTES * 1000, 2), Some(1));
        assert_eq!(entries_hint(MAX_APPEND_BYTES + 1, 2), Some(1));
    }
}

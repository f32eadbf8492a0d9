//! Wiring one node together: store, Raft, services, metrics, shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use augur_proto::pb;
use augur_store::{Raft, StateReader};
use augur_types::{Applied, Command};
use openraft::error::RaftError;
use openraft::{BasicNode, SnapshotPolicy};
use tonic::Status;

use crate::config::NodeConfig;
use crate::network::{GrpcNetwork, RaftInternalService, MAX_RAFT_MESSAGE};
use crate::proposer::{forward_status, Proposer};
use crate::service::{
    ClusterService, ControlService, OtlpTraceService, TelemetryService, TopologyService,
};

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// Read-index through the leader: sees every acknowledged write.
    Linearizable,
    /// This node's applied state.
    Local,
}

impl From<i32> for Consistency {
    fn from(v: i32) -> Self {
        match pb::ReadConsistency::try_from(v) {
            Ok(pb::ReadConsistency::Local) => Consistency::Local,
            _ => Consistency::Linearizable,
        }
    }
}

/// What the services share: the Raft handle and a reader of the applied state.
#[derive(Clone)]
pub struct Node {
    pub raft: Raft,
    pub state: StateReader,
    proposer: Proposer,
}

/// The pace of a leader-only task: ticks every `every` (late ticks delayed, not bunched),
/// skipping those at which this node does not lead.
pub(crate) struct LeaderTicks {
    tick: tokio::time::Interval,
}

impl LeaderTicks {
    pub(crate) fn new(every: Duration) -> Self {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self { tick }
    }

    /// Waits for the next tick at which `node` leads.
    pub(crate) async fn next(&mut self, node: &Node) {
        loop {
            self.tick.tick().await;
            if node.is_leader() {
                return;
            }
        }
    }
}

impl Node {
    /// Whether this node leads now.
    pub fn is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.current_leader == Some(m.id)
    }

    /// Proposes `cmd` (group-committed with concurrent writes); answers the log index it
    /// was applied at and what it did.
    pub async fn write(&self, cmd: Command) -> Result<(u64, Applied), Status> {
        let name = cmd.name();
        let res = self.proposer.write(cmd).await;
        if res
            .as_ref()
            .is_err_and(|s| s.code() != tonic::Code::Unavailable)
        {
            metrics::counter!("augur_commands_rejected_total", "command" => name).increment(1);
        }
        res
    }

    /// Waits until a read at `consistency` may be served from the local state.
    pub async fn read_barrier(&self, consistency: Consistency) -> Result<(), Status> {
        if consistency == Consistency::Local {
            return Ok(());
        }
        match self.raft.ensure_linearizable().await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(forward_status(&f))
            }
            Err(RaftError::APIError(e)) => Err(Status::unavailable(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(Status::unavailable(format!("raft stopped: {e}"))),
        }
    }
}

fn raft_config(cfg: &NodeConfig) -> anyhow::Result<openraft::Config> {
    let r = &cfg.raft;
    let config = openraft::Config {
        cluster_name: "augur".into(),
        heartbeat_interval: r.heartbeat_ms,
        election_timeout_min: r.election_timeout_min_ms,
        election_timeout_max: r.election_timeout_max_ms,
        install_snapshot_timeout: r.install_snapshot_timeout_ms,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(r.snapshot_every_entries),
        max_in_snapshot_log_to_keep: r.keep_after_snapshot,
        max_payload_entries: r.max_payload_entries,
        ..Default::default()
    };
    Ok(config.validate()?)
}

/// Runs a node until `shutdown` resolves.
pub async fn run(
    cfg: NodeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let data_dir = &cfg.node.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    let (log_store, sm) = augur_store::open(data_dir)?;
    let state = sm.reader();
    let gate = sm.snapshot_gate();
    let raft = Raft::new(
        cfg.node.id,
        Arc::new(raft_config(&cfg)?),
        GrpcNetwork,
        log_store,
        sm,
    )
    .await
    .context("cannot start raft")?;

    if let Some(addr) = &cfg.node.metrics_listen {
        crate::metrics::install(addr.parse()?)?;
    }
    tokio::spawn(crate::metrics::watch_raft(raft.metrics()));

    if cfg.cluster.bootstrap && !raft.is_initialized().await? {
        tracing::info!(members = ?cfg.initial_members(), "bootstrapping the cluster");
        if let Err(e) = raft.initialize(cfg.initial_members()).await {
            // Another member may have initialised first; its log reaches us by replication.
            tracing::info!(error = %e, "not initialising");
        }
    }

    let proposer = Proposer::spawn(raft.clone());
    let node = Node {
        raft: raft.clone(),
        state,
        proposer,
    };
    let edges = crate::graph::spawn_committer(node.clone(), &cfg.graph);
    crate::graph::spawn_fader(node.clone(), &cfg.graph);
    let traces = OtlpTraceService::spawn(&cfg.graph, edges.clone());
    let peers = crate::shards::Peers::new(raft.clone(), cfg.node.id, cfg.limits.max_message_bytes);
    let predictors =
        crate::predict::Predictors::start(&cfg.telemetry, node.state.clone(), peers.clone())?;
    predictors.spawn_sync();
    let warmth = peers.warmth.clone();
    crate::shards::spawn_keeper(
        node.clone(),
        peers,
        Duration::from_millis(cfg.cluster.probe_ms),
        Duration::from_millis(cfg.cluster.probe_timeout_ms),
        cfg.cluster.dead_after_probes,
    );
    if cfg.telemetry.causal_every_s > 0 {
        crate::graph::spawn_causal(
            predictors.history.clone(),
            edges,
            Duration::from_secs(cfg.telemetry.causal_every_s),
            Duration::from_secs(cfg.telemetry.causal_window_s),
            cfg.telemetry.causal_max_series,
        );
    }
    let inflight = Arc::new(tokio::sync::Semaphore::new(
        cfg.telemetry.max_inflight_batches,
    ));
    if let Some(rw) = &cfg.telemetry.remote_write_listen {
        let (addr, p, label, inflight, max_body) = (
            rw.parse()?,
            predictors.clone(),
            cfg.telemetry.component_label.clone(),
            inflight.clone(),
            cfg.limits.max_message_bytes,
        );
        tokio::spawn(async move {
            if let Err(e) =
                crate::predict::serve_remote_write(addr, p, label, inflight, max_body).await
            {
                tracing::error!(error = %e, "remote-write receiver stopped");
            }
        });
    }
    predictors.spawn_model_recorder(node.clone());
    crate::planner::spawn(node.clone(), predictors.clone(), &cfg.planner);
    let telemetry = TelemetryService::new(
        node.clone(),
        predictors.clone(),
        inflight,
        cfg.telemetry.max_inflight_batches,
        cfg.telemetry.tick_ms,
        cfg.limits.max_message_bytes,
    );
    let addr: SocketAddr = cfg.node.listen.parse()?;
    let max = cfg.limits.max_message_bytes;
    let router = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .layer(crate::metrics::RpcMetricsLayer)
        .add_service(
            pb::raft_internal_server::RaftInternalServer::new(RaftInternalService::new(
                raft.clone(),
                gate,
            ))
            .max_decoding_message_size(MAX_RAFT_MESSAGE)
            .max_encoding_message_size(MAX_RAFT_MESSAGE),
        )
        .add_service(
            pb::cluster_server::ClusterServer::new(ClusterService::new(node.clone(), warmth))
                .max_decoding_message_size(max),
        )
        .add_service(
            pb::topology_server::TopologyServer::new(TopologyService::new(
                node.clone(),
                Some(predictors.clone()),
                crate::planner::Admit::of(&cfg.planner),
            ))
            .max_decoding_message_size(max),
        )
        .add_service(
            pb::control_server::ControlServer::new(ControlService::new(node.clone()))
                .max_decoding_message_size(max),
        )
        .add_service(augur_proto::TraceServiceServer::new(traces).max_decoding_message_size(max))
        .add_service(
            // Room for a model (`SetModel`); a pushed batch is held to `max` by the service.
            pb::telemetry_server::TelemetryServer::new(telemetry)
                .max_decoding_message_size(max.max(augur_types::MAX_MODEL_BYTES + 64 * 1024)),
        );
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!(id = cfg.node.id, %addr, "node serving");
    // `Server::tcp_nodelay` only reaches sockets that tonic accepts itself: with our own
    // listener the option has to travel with it. Without it a reply on a new connection waits
    // for the peer's delayed ACK (Nagle), ~40 ms: that was most of every election's vote
    // round trip after a node restarted.
    let incoming = tonic::transport::server::TcpIncoming::from_listener(listener, true, None)
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    router
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    raft.shutdown().await.ok();
    tracing::info!(id = cfg.node.id, "node stopped");
    Ok(())
}

/// The address a member is reachable at, from the current membership.
pub(crate) fn member_addr(raft: &Raft, id: u64) -> Option<String> {
    let m = raft.metrics().borrow().membership_config.clone();
    m.membership()
        .get_node(&id)
        .map(|n: &BasicNode| n.addr.clone())
}

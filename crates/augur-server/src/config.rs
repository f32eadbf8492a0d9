//! Node configuration: TOML, unknown keys refused, defaults explicit, and one validation pass
//! that reports every error at once.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The config format version this build reads.
pub const CONFIG_VERSION: u32 = 1;

/// A controller node's configuration, as written in a TOML file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub version: u32,
    pub node: NodeSection,
    pub cluster: ClusterSection,
    #[serde(default)]
    pub raft: RaftSection,
    #[serde(default)]
    pub limits: LimitsSection,
    #[serde(default)]
    pub graph: GraphSection,
    #[serde(default)]
    pub telemetry: TelemetrySection,
    #[serde(default)]
    pub planner: PlannerSection,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlannerSection {
    /// The leader commits the planner's decisions (a shadow request and a `Provision` action
    /// each) instead of only showing them (`Topology.PlanFailovers`). Off by default.
    pub act: bool,
    /// How often the leader plans, ms.
    pub every_ms: u64,
    /// An action no orchestrator claims within this long (since it was appended, or put
    /// back after a lapsed lease) fails, and the shadow lifecycle rolls back, ms.
    pub claim_within_ms: u64,
    /// An action whose lease lapsed this many times fails instead of being offered again.
    pub max_lapses: u32,
    /// A component's forecast is acted on only once its detectors have seen this many
    /// samples per metric: a new component (a fresh shadow) has no baseline yet.
    pub min_samples: u64,
    /// A component must stay over its threshold this long (consecutive planning rounds)
    /// before a plan is recorded: one noisy scrape does not move it, ms. 0: at once.
    pub confirm_ms: u64,
    /// A shadow or new instance is not moved on a prediction until this long after its plan
    /// started (anti-flapping: its baseline is seconds old), ms. 0: no hold.
    pub fresh_hold_ms: u64,
    /// The other instances of a group are not moved on a prediction until this long after a
    /// plan in the group started (they take its moved traffic), ms. 0 (the default): no
    /// hold; `augur_plan::SETTLE_HOLD_MS` says why it is off.
    pub settle_hold_ms: u64,
}

fn default_fresh_hold_ms() -> u64 {
    augur_plan::FRESH_HOLD_MS
}

impl Default for PlannerSection {
    fn default() -> Self {
        Self {
            act: false,
            every_ms: 5_000,
            claim_within_ms: 60_000,
            max_lapses: 3,
            min_samples: 30,
            confirm_ms: 2_000,
            fresh_hold_ms: default_fresh_hold_ms(),
            settle_hold_ms: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// This node's Raft id, unique in the cluster, above 0.
    pub id: u64,
    /// The gRPC address to listen on; also the address peers and clients use.
    pub listen: String,
    /// Where `/metrics` is served; none to turn it off.
    #[serde(default)]
    pub metrics_listen: Option<String>,
    pub data_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// Initialise the cluster with `members` when this node's store is empty. Safe on every
    /// initial member when all list the same members.
    #[serde(default)]
    pub bootstrap: bool,
    /// The initial voters.
    #[serde(default)]
    pub members: Vec<MemberConfig>,
    /// How often the leader probes every member to keep the shard map on live nodes.
    #[serde(default = "default_probe_ms")]
    pub probe_ms: u64,
    /// Probes in a row a member must miss to count as dead: its shards go to their standbys.
    #[serde(default = "default_dead_after_probes")]
    pub dead_after_probes: u32,
    /// How long a probe waits for its answer. Longer than `probe_ms`, so that a node slowed
    /// for a moment (a loaded machine) is not taken for dead; a killed node's probes fail at
    /// once (connection refused) whatever this is.
    #[serde(default = "default_probe_timeout_ms")]
    pub probe_timeout_ms: u64,
}

fn default_probe_timeout_ms() -> u64 {
    1_000
}

fn default_probe_ms() -> u64 {
    250
}

fn default_dead_after_probes() -> u32 {
    3
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    pub id: u64,
    pub addr: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftSection {
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many entries since the last one.
    pub snapshot_every_entries: u64,
    /// Entries kept after a snapshot, so slow followers catch up by log.
    pub keep_after_snapshot: u64,
    pub install_snapshot_timeout_ms: u64,
    pub max_payload_entries: u64,
}

impl Default for RaftSection {
    fn default() -> Self {
        Self {
            // openraft waits a leader lease (= election_timeout_max) plus an election timeout
            // before standing for election: 160 + 120..160 ms, so a dead leader is replaced
            // in about 300 ms. The heartbeat is also openraft's deadline for every
            // AppendEntries: at 30 ms, a loaded 2-core machine missed it on every append after
            // a heavy write phase, and a new leader could not commit for 5-20 s; at 50 ms the
            // same bench fails over in 0.5-0.7 s (docs/benchmarks.md).
            heartbeat_ms: 50,
            election_timeout_min_ms: 120,
            election_timeout_max_ms: 160,
            snapshot_every_entries: 10_000,
            keep_after_snapshot: 5_000,
            install_snapshot_timeout_ms: 2_000,
            max_payload_entries: 512,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Largest client request accepted, in bytes.
    pub max_message_bytes: usize,
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            max_message_bytes: 1024 * 1024,
        }
    }
}

/// The dependency map: how edges from traces reach Raft, and when unseen edges fade.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GraphSection {
    /// An edge observation (trace, flow, causal) not seen for this long fades. Declared
    /// edges never fade.
    pub edge_ttl_ms: u64,
    /// How often the leader fades old edges.
    pub fade_every_ms: u64,
    /// How often edges learned from traces are committed, in one batch.
    pub flush_every_ms: u64,
    /// How long an unpaired span waits for its partner.
    pub trace_wait_ms: u64,
    /// Most unpaired spans held; beyond it the oldest are dropped and counted.
    pub max_pending_spans: usize,
}

impl Default for GraphSection {
    fn default() -> Self {
        Self {
            edge_ttl_ms: 60 * 60 * 1000,
            fade_every_ms: 10_000,
            flush_every_ms: 1_000,
            trace_wait_ms: 10_000,
            max_pending_spans: 100_000,
        }
    }
}

/// Whether peers and clients can reach a node at `addr`: a specific IP and port, not
/// `0.0.0.0`/`[::]` or port 0 (fine to bind, not to be told).
pub(crate) fn reachable(addr: &SocketAddr) -> bool {
    !addr.ip().is_unspecified() && addr.port() != 0
}

/// Upper bound of `telemetry.window`: samples per metric (64 by default).
pub const MAX_WINDOW: usize = 65_536;
/// Upper bound of `telemetry.season`: a day at one sample a second fits.
pub const MAX_SEASON: usize = 100_000;

/// Upper bound of `telemetry.max_inflight_batches` (a semaphore's size).
const MAX_INFLIGHT_BATCHES: usize = 1 << 20;
/// Upper bound of `telemetry.history_s`: a year.
const MAX_HISTORY_S: u64 = 366 * 86_400;

/// Telemetry in, forecasts out: the predictor actors and the ingest endpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySection {
    /// Arbiter threads, one shard of components each; 0: one per core, at most 4.
    pub shards: usize,
    /// How often every component with new samples is scored (one batched model step).
    pub tick_ms: u64,
    /// Samples kept per metric.
    pub window: usize,
    /// Metrics tracked per component.
    pub max_metrics: usize,
    /// Holt-Winters season length in samples (e.g. 8640 for daily at 10 s); 0: none. Each
    /// slot costs 8 bytes per metric.
    pub season: usize,
    /// The metric that measures a component's load (requests per second); groups whose
    /// policy scales are sized on it.
    pub load_metric: String,
    /// How far behind a metric's newest sample one may arrive and still be taken.
    pub out_of_order_tolerance_ms: i64,
    /// How far ahead of this node's clock a sample's timestamp may be (clock skew between the
    /// sender and the node); further ahead, or before 1970, it is refused as `bad_timestamp`.
    pub max_future_ms: i64,
    /// Take samples of components that are not registered (registering them); off by default.
    pub auto_register: bool,
    /// With `auto_register`: a component taken that way (never registered) is forgotten by
    /// the actors once it has sent nothing for this long, s (0: never).
    pub auto_forget_s: u64,
    /// Batches being ingested at once on this node; beyond it a push is answered
    /// RESOURCE_EXHAUSTED with a retry hint. Batches forwarded by peers (to a shard's owner
    /// and standby) have a budget of the same size of their own.
    pub max_inflight_batches: usize,
    /// How long a node waits, before judging a batch forwarded by a peer, to have applied
    /// the entries the peer had when it took the batch (a component registered there just
    /// before is then known here too), ms; past it the batch is judged as things stand.
    pub forward_catch_up_ms: u64,
    /// Prometheus remote-write receiver (`POST /api/v1/write`), IP:PORT; off when absent.
    pub remote_write_listen: Option<String>,
    /// The remote-write label that names the component.
    pub component_label: String,
    /// The LSTM: the name of a model shipped in the binary (`default`, `http-service`) or
    /// a model file (safetensors); absent: `default`.
    pub model: Option<PathBuf>,
    /// Grid step of the metric history kept for root causes and causal strength, ms (at
    /// least 1000).
    pub history_step_ms: i64,
    /// How far back the metric history reaches, s; 4 bytes per step per series, or 8 bytes
    /// per sample for a series sent less often than every other step.
    pub history_s: u64,
    /// How often the causal-strength tests run over the history and their links become
    /// `causal` edges, s; 0: never.
    pub causal_every_s: u64,
    /// How much of the history those tests read, s.
    pub causal_window_s: u64,
    /// Most series tested per run (pairs grow with its square): those that moved most in the
    /// last tenth of the window.
    pub causal_max_series: usize,
}

impl Default for TelemetrySection {
    fn default() -> Self {
        Self {
            shards: 0,
            tick_ms: 1_000,
            window: 64,
            max_metrics: 8,
            season: 0,
            load_metric: "requests_per_s".into(),
            out_of_order_tolerance_ms: 0,
            max_future_ms: crate::service::CLOCK_SKEW_MS as i64,
            auto_register: false,
            auto_forget_s: 3_600,
            max_inflight_batches: 64,
            forward_catch_up_ms: 1_000,
            remote_write_listen: None,
            component_label: "component".into(),
            model: None,
            history_step_ms: 1_000,
            history_s: 900,
            causal_every_s: 60,
            causal_window_s: 600,
            causal_max_series: 400,
        }
    }
}

/// One thing wrong with a config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ConfigError {
    pub field: String,
    pub reason: String,
}

/// Everything wrong with a config file, read or validated.
#[derive(Debug, thiserror::Error)]
pub enum ConfigLoadError {
    #[error("cannot read config {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("config {path} is not valid TOML for a node config: {reason}")]
    Parse { path: String, reason: String },
    #[error("config {path} has {} error(s):\n{}", .errors.len(), list(.errors))]
    Invalid {
        path: String,
        errors: Vec<ConfigError>,
    },
}

fn list(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(|e| format!("  - {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl NodeConfig {
    /// The embedded single-node default: starts and bootstraps itself on 127.0.0.1.
    pub fn single_node() -> Self {
        toml::from_str(SINGLE_NODE).expect("embedded single-node config parses")
    }

    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, ConfigLoadError> {
        let cfg: NodeConfig = toml::from_str(text).map_err(|e| ConfigLoadError::Parse {
            path: origin.to_string(),
            reason: e.to_string(),
        })?;
        cfg.validate().map_err(|errors| ConfigLoadError::Invalid {
            path: origin.to_string(),
            errors,
        })
    }

    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigLoadError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigLoadError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// Checks every rule and reports every broken one.
    pub fn validate(self) -> Result<Self, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut err = |field: &str, reason: String| {
            errors.push(ConfigError {
                field: field.to_string(),
                reason,
            })
        };
        if self.version != CONFIG_VERSION {
            err(
                "version",
                format!(
                    "is {}, this build reads version {CONFIG_VERSION}",
                    self.version
                ),
            );
        }
        let g = &self.graph;
        for (field, v) in [
            ("graph.edge_ttl_ms", g.edge_ttl_ms),
            ("graph.fade_every_ms", g.fade_every_ms),
            ("graph.flush_every_ms", g.flush_every_ms),
        ] {
            if v == 0 {
                err(field, "must be above 0".into());
            }
        }
        if g.max_pending_spans == 0 {
            err("graph.max_pending_spans", "must be above 0".into());
        }
        if self.cluster.probe_ms == 0 {
            err("cluster.probe_ms", "must be above 0".into());
        }
        if self.cluster.probe_timeout_ms == 0 {
            err("cluster.probe_timeout_ms", "must be above 0".into());
        }
        if self.cluster.dead_after_probes == 0 {
            err("cluster.dead_after_probes", "must be above 0".into());
        }
        if self.planner.every_ms == 0 {
            err("planner.every_ms", "must be above 0".into());
        }
        if self.planner.claim_within_ms == 0 {
            err("planner.claim_within_ms", "must be above 0".into());
        }
        if self.planner.max_lapses == 0 {
            err("planner.max_lapses", "must be above 0".into());
        }
        let t = &self.telemetry;
        if t.tick_ms == 0 {
            err("telemetry.tick_ms", "must be above 0".into());
        }
        if t.window < 2 || t.window > MAX_WINDOW {
            err(
                "telemetry.window",
                format!(
                    "{} is not in 2..={MAX_WINDOW} (each component holds it for every metric)",
                    t.window
                ),
            );
        }
        if t.season > MAX_SEASON {
            err(
                "telemetry.season",
                format!(
                    "{} is above {MAX_SEASON} (each component holds it for every metric)",
                    t.season
                ),
            );
        }
        if t.load_metric.is_empty() {
            err("telemetry.load_metric", "must not be empty".into());
        }
        if t.causal_every_s > 0 && t.causal_window_s == 0 {
            err(
                "telemetry.causal_window_s",
                "must be above 0 while the causal tests run".into(),
            );
        }
        if self.graph.trace_wait_ms == 0 {
            err(
                "graph.trace_wait_ms",
                "must be above 0 (a span waits for its partner)".into(),
            );
        }
        if t.max_metrics == 0 {
            err("telemetry.max_metrics", "must be above 0".into());
        }
        if t.out_of_order_tolerance_ms < 0 {
            err(
                "telemetry.out_of_order_tolerance_ms",
                "must not be negative".into(),
            );
        }
        if t.forward_catch_up_ms > 60_000 {
            err(
                "telemetry.forward_catch_up_ms",
                format!("{} is over a minute", t.forward_catch_up_ms),
            );
        }
        if t.max_future_ms < 0 {
            err("telemetry.max_future_ms", "must not be negative".into());
        }
        if t.max_inflight_batches == 0 || t.max_inflight_batches > MAX_INFLIGHT_BATCHES {
            err(
                "telemetry.max_inflight_batches",
                format!("must be in 1..={MAX_INFLIGHT_BATCHES}"),
            );
        }
        if t.component_label.is_empty() {
            err("telemetry.component_label", "must not be empty".into());
        }
        if t.history_step_ms < 1000 {
            err("telemetry.history_step_ms", "must be at least 1000".into());
        }
        if t.history_s == 0 || t.history_s > MAX_HISTORY_S {
            err(
                "telemetry.history_s",
                format!("must be in 1..={MAX_HISTORY_S} (a year)"),
            );
        } else if t.history_step_ms >= 1000 && t.history_s * 1000 < t.history_step_ms as u64 {
            err(
                "telemetry.history_s",
                format!("must hold at least one step of {} ms", t.history_step_ms),
            );
        }
        if t.causal_every_s > 0 && t.causal_max_series < 2 {
            err(
                "telemetry.causal_max_series",
                "must be at least 2 (a pair) while the causal tests run".into(),
            );
        }
        if t.causal_every_s > 0 && t.causal_window_s > t.history_s {
            err(
                "telemetry.causal_window_s",
                format!(
                    "{} is more than the history kept ({} s)",
                    t.causal_window_s, t.history_s
                ),
            );
        }
        if let Some(m) = &t.remote_write_listen {
            if m.parse::<SocketAddr>().is_err() {
                err(
                    "telemetry.remote_write_listen",
                    format!("{m:?} is not an IP:PORT address"),
                );
            }
        }
        if let Some(m) = &t.model {
            let builtin = m.to_str().and_then(augur_predict::builtin_model);
            if builtin.is_none() && !m.is_file() {
                let names: Vec<&str> = augur_predict::BUILTIN_MODELS.iter().map(|m| m.0).collect();
                err(
                    "telemetry.model",
                    format!(
                        "{} is neither a shipped model ({}) nor a file",
                        m.display(),
                        names.join(", ")
                    ),
                );
            } else if let Err(e) = crate::predict::configured_model(Some(m)) {
                // Checked here, with everything else, before the node opens or binds anything.
                err("telemetry.model", e);
            }
        }
        if t.shards > augur_actors::MAX_SHARDS {
            err(
                "telemetry.shards",
                format!("{} is above {}", t.shards, augur_actors::MAX_SHARDS),
            );
        }
        if self.node.id == 0 {
            err("node.id", "must be above 0".into());
        }
        match self.node.listen.parse::<SocketAddr>() {
            Err(_) => err(
                "node.listen",
                format!("{:?} is not an IP:PORT address", self.node.listen),
            ),
            Ok(a) if !reachable(&a) => err(
                "node.listen",
                format!(
                    "{a} is also the address peers and clients reach this node at: \
                     name its own IP and a port"
                ),
            ),
            Ok(_) => {}
        }
        if let Some(m) = &self.node.metrics_listen {
            if m.parse::<SocketAddr>().is_err() {
                err(
                    "node.metrics_listen",
                    format!("{m:?} is not an IP:PORT address"),
                );
            }
        }
        // Two listeners on one port: the second bind would fail after the store is opened.
        // The same port on the same address clashes, and on an address an unspecified one
        // covers (`0.0.0.0` every IPv4 address, `[::]` every address: dual stack).
        let covers = |w: &SocketAddr, x: &SocketAddr| {
            w.ip().is_unspecified() && (w.is_ipv6() || x.is_ipv4())
        };
        let listeners: Vec<(&str, SocketAddr)> = [
            ("node.listen", Some(&self.node.listen)),
            ("node.metrics_listen", self.node.metrics_listen.as_ref()),
            (
                "telemetry.remote_write_listen",
                self.telemetry.remote_write_listen.as_ref(),
            ),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?.parse().ok()?)))
        .collect();
        for (i, (k, a)) in listeners.iter().enumerate() {
            let clash = listeners[..i].iter().find(|(_, b)| {
                a.port() == b.port()
                    && a.port() != 0
                    && (a.ip() == b.ip() || covers(a, b) || covers(b, a))
            });
            if let Some((other, b)) = clash {
                err(k, format!("{a} is the port of {other} ({b})"));
            }
        }
        if let Some(reason) = data_dir_problem(&self.node.data_dir) {
            err(
                "node.data_dir",
                format!("{}: {reason}", self.node.data_dir.display()),
            );
        }
        let mut ids = BTreeSet::new();
        let mut addrs = BTreeSet::new();
        for (i, m) in self.cluster.members.iter().enumerate() {
            if m.id == 0 {
                err(
                    &format!("cluster.members[{i}].id"),
                    "must be above 0".into(),
                );
            }
            if !ids.insert(m.id) {
                err(
                    &format!("cluster.members[{i}].id"),
                    format!("duplicate node id {}", m.id),
                );
            }
            if m.addr.parse::<SocketAddr>().is_err() {
                err(
                    &format!("cluster.members[{i}].addr"),
                    format!("{:?} is not an IP:PORT address", m.addr),
                );
            }
            if !addrs.insert(m.addr.clone()) {
                err(
                    &format!("cluster.members[{i}].addr"),
                    format!("duplicate address {}", m.addr),
                );
            }
        }
        if self.cluster.bootstrap {
            match self.cluster.members.iter().find(|m| m.id == self.node.id) {
                None => err(
                    "cluster.members",
                    format!(
                        "bootstrap is on but node {} is not among the members",
                        self.node.id
                    ),
                ),
                Some(me) if me.addr != self.node.listen => err(
                    "cluster.members",
                    format!(
                        "node {} is listed at {} but listens on {}",
                        self.node.id, me.addr, self.node.listen
                    ),
                ),
                Some(_) => {}
            }
        }
        let r = &self.raft;
        if r.heartbeat_ms == 0 {
            err("raft.heartbeat_ms", "must be above 0".into());
        }
        if r.election_timeout_min_ms <= r.heartbeat_ms.saturating_mul(2) {
            err(
                "raft.election_timeout_min_ms",
                format!(
                    "{} ms must exceed twice the heartbeat ({} ms), or followers time out between heartbeats",
                    r.election_timeout_min_ms, r.heartbeat_ms
                ),
            );
        }
        if r.election_timeout_max_ms <= r.election_timeout_min_ms {
            err(
                "raft.election_timeout_max_ms",
                format!(
                    "{} ms must exceed election_timeout_min_ms ({} ms)",
                    r.election_timeout_max_ms, r.election_timeout_min_ms
                ),
            );
        }
        if r.snapshot_every_entries == 0 {
            err("raft.snapshot_every_entries", "must be above 0".into());
        }
        if r.install_snapshot_timeout_ms < 1000 {
            err(
                "raft.install_snapshot_timeout_ms",
                format!(
                    "{} ms is below 1000 ms; real snapshots take longer",
                    r.install_snapshot_timeout_ms
                ),
            );
        }
        if r.max_payload_entries == 0 {
            err("raft.max_payload_entries", "must be above 0".into());
        }
        if self.limits.max_message_bytes < 1024 {
            err(
                "limits.max_message_bytes",
                format!("{} is below 1024 bytes", self.limits.max_message_bytes),
            );
        }
        if errors.is_empty() {
            Ok(self)
        } else {
            Err(errors)
        }
    }

    /// The initial members as openraft wants them.
    pub fn initial_members(&self) -> std::collections::BTreeMap<u64, openraft::BasicNode> {
        self.cluster
            .members
            .iter()
            .map(|m| (m.id, openraft::BasicNode::new(&m.addr)))
            .collect()
    }
}

/// Why `dir` cannot hold a node's data, if it cannot.
fn data_dir_problem(dir: &Path) -> Option<String> {
    if dir.as_os_str().is_empty() {
        return Some("is empty".into());
    }
    let mut probe = dir;
    loop {
        match std::fs::metadata(probe) {
            Ok(m) if !m.is_dir() => {
                return Some(format!("{} exists and is not a directory", probe.display()));
            }
            Ok(m) if m.permissions().readonly() => {
                return Some(format!("{} is read-only", probe.display()));
            }
            Ok(_) => return None,
            Err(_) => match probe.parent() {
                Some(p) if !p.as_os_str().is_empty() => probe = p,
                _ => return None,
            },
        }
    }
}

const SINGLE_NODE: &str = include_str!("../../../cluster-configs/single-node.toml");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_in_cluster_configs_loads() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../cluster-configs");
        let mut seen = 0;
        let mut stack = vec![root];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    // The agent's configs are the agent's (augur-agent tests them).
                    if !path.ends_with("agent") {
                        stack.push(path);
                    }
                } else if path.extension().is_some_and(|e| e == "toml") {
                    NodeConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
                    seen += 1;
                }
            }
        }
        assert!(
            seen >= 4,
            "expected the single-node and three-node configs, saw {seen}"
        );
    }

    /// What loading a bad config `text` says.
    fn errors_of(text: &str) -> String {
        NodeConfig::from_toml(text, "bad.toml")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_bad_config_lists_every_error() {
        let text = r#"
            version = 2
            [node]
            id = 0
            listen = "nowhere"
            data_dir = "/proc/version/data"
            [cluster]
            bootstrap = true
            members = [ { id = 1, addr = "127.0.0.1:1" }, { id = 1, addr = "127.0.0.1:1" } ]
            [raft]
            heartbeat_ms = 100
            election_timeout_min_ms = 150
            election_timeout_max_ms = 120
        "#;
        let err = errors_of(text);
        assert_eq!(
            err,
            "config bad.toml has 9 error(s):\n\
             \x20 - version: is 2, this build reads version 1\n\
             \x20 - node.id: must be above 0\n\
             \x20 - node.listen: \"nowhere\" is not an IP:PORT address\n\
             \x20 - node.data_dir: /proc/version/data: /proc/version exists and is not a directory\n\
             \x20 - cluster.members[1].id: duplicate node id 1\n\
             \x20 - cluster.members[1].addr: duplicate address 127.0.0.1:1\n\
             \x20 - cluster.members: bootstrap is on but node 0 is not among the members\n\
             \x20 - raft.election_timeout_min_ms: 150 ms must exceed twice the heartbeat (100 ms), or followers time out between heartbeats\n\
             \x20 - raft.election_timeout_max_ms: 120 ms must exceed election_timeout_min_ms (150 ms)"
        );
    }

    /// Listeners that would clash or that peers cannot reach, and sizes that would let one
    /// sample take gigabytes, are named with the rest, before the node opens anything.
    #[test]
    fn clashing_listeners_and_unbounded_sizes_are_named() {
        let text = r#"
            version = 1
            [node]
            id = 1
            listen = "0.0.0.0:7001"
            metrics_listen = "127.0.0.1:7001"
            data_dir = "d"
            [cluster]
            bootstrap = true
            members = [ { id = 1, addr = "127.0.0.1:7001" } ]
            [telemetry]
            remote_write_listen = "127.0.0.1:7001"
            window = 100000000000000
            season = 1000000
            load_metric = ""
            causal_every_s = 1
            causal_window_s = 0
            [graph]
            trace_wait_ms = 0
        "#;
        let err = errors_of(text);
        for needle in [
            "telemetry.window: 100000000000000 is not in 2..=65536",
            "telemetry.season: 1000000 is above 100000",
            "telemetry.load_metric: must not be empty",
            "telemetry.causal_window_s: must be above 0 while the causal tests run",
            "graph.trace_wait_ms: must be above 0",
            "node.listen: 0.0.0.0:7001 is also the address peers and clients reach this node at",
            "node.metrics_listen: 127.0.0.1:7001 is the port of node.listen (0.0.0.0:7001)",
            "telemetry.remote_write_listen: 127.0.0.1:7001 is the port of node.listen (0.0.0.0:7001)",
            "has 9 error(s)",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
        }
    }

    #[test]
    fn the_model_is_a_shipped_one_by_name_or_a_file() {
        let with = |model: &str| {
            let text = format!(
                "version = 1\n[node]\nid = 1\nlisten = \"127.0.0.1:1\"\ndata_dir = \"d\"\n\
                 [cluster]\nbootstrap = true\nmembers = [{{ id = 1, addr = \"127.0.0.1:1\" }}]\n\
                 [telemetry]\nmodel = \"{model}\"\n"
            );
            NodeConfig::from_toml(&text, "m.toml").map_err(|e| e.to_string())
        };
        with("http-service").unwrap();
        with("default").unwrap();
        let err = with("htp-service").unwrap_err();
        assert!(
            err.contains(
                "telemetry.model: htp-service is neither a shipped model (default, http-service) nor a file"
            ),
            "{err}"
        );
        // Files the node could not serve are named at validation, before anything starts:
        // not a model at all, and a model over min–max scaled fleet columns (C-MAPSS).
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.safetensors");
        std::fs::write(&junk, b"not a model").unwrap();
        let err = with(junk.to_str().unwrap()).unwrap_err();
        assert!(
            err.contains(&format!("telemetry.model: {}: ", junk.display()))
                && err.contains("not a safetensors file"),
            "{err}"
        );
        use augur_predict::lstm::{LstmModel, ModelMeta, Scaling};
        let mut meta = ModelMeta::new(vec!["s2".into()], 4, 30, 1);
        meta.scaling = Scaling::Fleet {
            min: vec![0.0],
            max: vec![1.0],
        };
        let fleet = dir.path().join("fleet.safetensors");
        LstmModel::new(meta).unwrap().save(&fleet).unwrap();
        let err = with(fleet.to_str().unwrap()).unwrap_err();
        assert!(
            err.contains("min–max scaled") && err.contains("not served"),
            "{err}"
        );
        let err = NodeConfig::from_toml(
            "version = 1\n[node]\nid = 1\nlisten = \"127.0.0.1:1\"\ndata_dir = \"d\"\n\
             [cluster]\nbootstrap = true\nmembers = [{ id = 1, addr = \"127.0.0.1:1\" }]\n\
             [telemetry]\nshards = 300\n",
            "s.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("telemetry.shards: 300 is above 256"), "{err}");
    }

    /// Values a TOML integer can hold but the node cannot use are listed, not panicked on.
    #[test]
    fn huge_values_are_errors_not_panics() {
        let err = NodeConfig::from_toml(
            "version = 1\n[node]\nid = 1\nlisten = \"127.0.0.1:1\"\ndata_dir = \"d\"\n\
             [cluster]\nbootstrap = true\nmembers = [{ id = 1, addr = \"127.0.0.1:1\" }]\n\
             [telemetry]\nmax_inflight_batches = 9000000000000000000\n\
             history_s = 100000000000000000\nforward_catch_up_ms = 9000000000000000000\n",
            "h.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("telemetry.forward_catch_up_ms: 9000000000000000000 is over a minute"),
            "{err}"
        );
        assert!(
            err.contains("telemetry.max_inflight_batches: must be in 1..=1048576"),
            "{err}"
        );
        assert!(
            err.contains("telemetry.history_s: must be in 1..="),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let text = "version = 1\nbogus = 1\n[node]\nid = 1\nlisten = \"127.0.0.1:1\"\ndata_dir = \"d\"\n[cluster]\n";
        let err = NodeConfig::from_toml(text, "x.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `bogus`"), "{err}");
    }
}

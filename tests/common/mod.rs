//! A harness for end-to-end tests: real `augur serve` processes on 127.0.0.1, killed with
//! SIGKILL and restarted on the same data. Waiting is always for a condition, with a deadline.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use augur_proto::pb;
use augur_proto::pb::cluster_client::ClusterClient;
use augur_proto::pb::topology_client::TopologyClient;
use tempfile::TempDir;
use tonic::transport::Channel;

pub const AUGUR: &str = env!("CARGO_BIN_EXE_augur");

/// Polls `check` until it answers `Some`, or panics naming `what` after `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Different free TCP ports on 127.0.0.1, reserved to this test process until it exits and
/// taken from above the ephemeral range, so neither another test nor an outgoing connection
/// takes one before the node under test binds it.
pub fn free_ports(n: usize) -> Vec<u16> {
    augur_agent::reserve_local_ports(n).expect("free ports")
}

pub struct NodeProc {
    pub id: u64,
    pub addr: String,
    pub config: PathBuf,
    pub data_dir: PathBuf,
    child: Option<Child>,
}

impl NodeProc {
    /// A node not started yet.
    pub fn new(id: u64, addr: String, config: PathBuf, data_dir: PathBuf) -> Self {
        Self {
            id,
            addr,
            config,
            data_dir,
            child: None,
        }
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none(), "node {} already running", self.id);
        let log = std::fs::File::create(self.data_dir.with_extension("log")).expect("log file");
        let child = Command::new(AUGUR)
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .env("RUST_LOG", "info,openraft=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn augur serve");
        self.child = Some(child);
    }

    /// SIGKILL: no shutdown path runs.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().ok();
            c.wait().ok();
        }
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Raft settings small enough that tests see snapshots and compaction.
#[derive(Clone, Copy)]
pub struct RaftKnobs {
    pub snapshot_every: u64,
    pub keep_after_snapshot: u64,
    /// Appended to every node's config (e.g. a `[graph]` section), with `{node}` replaced by
    /// the node's id (e.g. a listener on `127.0.0.{node}:PORT` of its own).
    pub extra_toml: &'static str,
    /// Lines added to every node's `[cluster]` section (e.g. `dead_after_probes = …`).
    pub cluster_toml: &'static str,
}

impl Default for RaftKnobs {
    fn default() -> Self {
        Self {
            snapshot_every: 10_000,
            keep_after_snapshot: 5_000,
            extra_toml: "",
            cluster_toml: "",
        }
    }
}

/// Fields drop in order: the nodes (killed) before the directory they write in.
pub struct Cluster {
    pub nodes: BTreeMap<u64, NodeProc>,
    pub dir: TempDir,
}

/// A failed test shows what each node logged last: the temporary directory, and the logs
/// in it, are gone once the test ends.
impl Drop for Cluster {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for node in self.nodes.values() {
            let path = node.data_dir.with_extension("log");
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!(
                "--- node {} log ({}), last lines ---",
                node.id,
                path.display()
            );
            for line in &lines[lines.len().saturating_sub(60)..] {
                eprintln!("{line}");
            }
        }
    }
}

pub fn node_config(
    id: u64,
    addr: &str,
    data_dir: &Path,
    members: &[(u64, String)],
    bootstrap: bool,
    knobs: RaftKnobs,
) -> String {
    let members = members
        .iter()
        .map(|(id, a)| format!("{{ id = {id}, addr = \"{a}\" }}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "version = 1\n[node]\nid = {id}\nlisten = \"{addr}\"\ndata_dir = \"{}\"\n\
         [cluster]\nbootstrap = {bootstrap}\nmembers = [{members}]\n{}\n\
         [raft]\nsnapshot_every_entries = {}\nkeep_after_snapshot = {}\n\
         [limits]\nmax_message_bytes = 65536\n{}",
        data_dir.display(),
        knobs.cluster_toml,
        knobs.snapshot_every,
        knobs.keep_after_snapshot,
        knobs.extra_toml.replace("{node}", &id.to_string())
    )
}

impl Cluster {
    /// `n` nodes on free ports, all listed as initial members, all started.
    pub fn start(n: u64, knobs: RaftKnobs) -> Self {
        let mut cluster = Self::configured(n, knobs);
        for node in cluster.nodes.values_mut() {
            node.start();
        }
        cluster
    }

    /// `n` nodes on free ports, all listed as initial members, none started yet
    /// ([`Cluster::restart`] starts one).
    pub fn configured(n: u64, knobs: RaftKnobs) -> Self {
        let dir = TempDir::new().expect("temp dir");
        let ports = free_ports(n as usize);
        let members: Vec<(u64, String)> = (1..=n)
            .map(|i| (i, format!("127.0.0.1:{}", ports[i as usize - 1])))
            .collect();
        let mut nodes = BTreeMap::new();
        for (id, addr) in &members {
            let data_dir = dir.path().join(format!("node{id}"));
            let config = dir.path().join(format!("node{id}.toml"));
            std::fs::write(
                &config,
                node_config(*id, addr, &data_dir, &members, true, knobs),
            )
            .unwrap();
            nodes.insert(
                *id,
                NodeProc {
                    id: *id,
                    addr: addr.clone(),
                    config,
                    data_dir,
                    child: None,
                },
            );
        }
        Self { dir, nodes }
    }

    /// Nodes from existing config files (their own ports), with data under a temp dir.
    pub fn from_configs(configs: &[PathBuf]) -> Self {
        let dir = TempDir::new().expect("temp dir");
        let mut nodes = BTreeMap::new();
        for config in configs {
            let cfg = augur_server::NodeConfig::load(config).expect("config loads");
            let id = cfg.node.id;
            let data_dir = dir.path().join(format!("node{id}"));
            let mut node = NodeProc {
                id,
                addr: cfg.node.listen.clone(),
                config: config.clone(),
                data_dir,
                child: None,
            };
            node.start();
            nodes.insert(id, node);
        }
        Self { dir, nodes }
    }

    /// Adds a node that is not an initial member (it waits to be added as a learner).
    pub fn add_node(&mut self, id: u64) -> String {
        let port = free_ports(1)[0];
        let addr = format!("127.0.0.1:{port}");
        let data_dir = self.dir.path().join(format!("node{id}"));
        let config = self.dir.path().join(format!("node{id}.toml"));
        std::fs::write(
            &config,
            node_config(id, &addr, &data_dir, &[], false, RaftKnobs::default()),
        )
        .unwrap();
        let mut node = NodeProc {
            id,
            addr: addr.clone(),
            config,
            data_dir,
            child: None,
        };
        node.start();
        self.nodes.insert(id, node);
        addr
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.values().map(|n| n.addr.clone()).collect()
    }

    pub fn addr(&self, id: u64) -> String {
        self.nodes[&id].addr.clone()
    }

    pub fn kill(&mut self, id: u64) {
        self.nodes.get_mut(&id).unwrap().kill();
    }

    /// Starts node `id` (again).
    pub fn restart(&mut self, id: u64) {
        self.nodes.get_mut(&id).unwrap().start();
    }

    /// The leader every running node agrees on.
    pub async fn wait_leader(&self) -> u64 {
        let running: Vec<String> = self
            .nodes
            .values()
            .filter(|n| n.running())
            .map(|n| n.addr.clone())
            .collect();
        eventually(
            "a leader all running nodes agree on",
            Duration::from_secs(30),
            || {
                let running = running.clone();
                async move {
                    let mut leader = None;
                    for addr in &running {
                        let s = status(addr).await?;
                        let l = s.leader_id?;
                        if leader.is_some_and(|x| x != l) {
                            return None;
                        }
                        leader = Some(l);
                    }
                    let l = leader?;
                    // The leader must itself say so (not a stale view of a dead node).
                    let ls = status(&self.addr_of_running(l)?).await?;
                    (ls.role == "leader").then_some(l)
                }
            },
        )
        .await
    }

    fn addr_of_running(&self, id: u64) -> Option<String> {
        self.nodes
            .get(&id)
            .filter(|n| n.running())
            .map(|n| n.addr.clone())
    }

    /// Waits until node `id` has applied at least `index`.
    pub async fn wait_applied(&self, id: u64, index: u64) {
        let addr = self.addr(id);
        eventually(
            &format!("node {id} to apply index {index}"),
            Duration::from_secs(30),
            || {
                let addr = addr.clone();
                async move {
                    status(&addr)
                        .await
                        .filter(|s| s.last_applied >= index)
                        .map(|_| ())
                }
            },
        )
        .await
    }
}

pub async fn channel(addr: &str) -> Option<Channel> {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .ok()?
        .connect_timeout(Duration::from_millis(500))
        .connect()
        .await
        .ok()
}

pub async fn status(addr: &str) -> Option<pb::StatusResponse> {
    let mut c = ClusterClient::new(channel(addr).await?);
    c.status(pb::StatusRequest {})
        .await
        .ok()
        .map(|r| r.into_inner())
}

/// Waits until node `addr`'s status shows member `id` as `holds` wants it (its shard
/// counts, say), and panics after `limit`.
pub async fn member_until(
    what: &str,
    addr: &str,
    id: u64,
    limit: Duration,
    holds: impl Fn(&pb::Member) -> bool,
) {
    let holds = &holds;
    eventually(what, limit, || async move {
        let s = status(addr).await?;
        let m = s.members.iter().find(|m| m.id == id)?;
        holds(m).then_some(())
    })
    .await
}

pub fn component(id: &str, group: &str) -> pb::Component {
    pb::Component {
        id: id.into(),
        class: "web".into(),
        group: group.into(),
        criticality: 3,
        placement: Some(pb::Placement {
            host: "h1".into(),
            rack: "r1".into(),
            zone: "z1".into(),
        }),
        labels: Default::default(),
    }
}

/// Registers `id` through a redirect-following client; answers whether it was acknowledged.
pub async fn register(client: &mut augur_cli::Client, id: &str) -> bool {
    let c = component(id, "web");
    client
        .call(|ch| {
            let c = c.clone();
            async move {
                TopologyClient::new(ch)
                    .upsert_component(pb::UpsertComponentRequest { component: Some(c) })
                    .await
            }
        })
        .await
        .is_ok()
}

/// Component ids as seen by a read on `addr` at the given consistency.
pub async fn component_ids(addr: &str, local: bool) -> Option<Vec<String>> {
    let mut c = TopologyClient::new(channel(addr).await?);
    let consistency = if local {
        pb::ReadConsistency::Local
    } else {
        pb::ReadConsistency::Linearizable
    };
    let r = c
        .list_components(pb::ListComponentsRequest {
            consistency: consistency as i32,
            ..Default::default()
        })
        .await
        .ok()?;
    Some(
        r.into_inner()
            .components
            .into_iter()
            .map(|c| c.id)
            .collect(),
    )
}

/// Component ids from a linearizable read, wherever the leader is now.
pub async fn linearizable_ids(endpoints: Vec<String>) -> Vec<String> {
    let mut client = augur_cli::Client::new(endpoints);
    let r = client
        .call(|ch| async move {
            TopologyClient::new(ch)
                .list_components(pb::ListComponentsRequest::default())
                .await
        })
        .await
        .expect("linearizable read");
    r.into_inner()
        .components
        .into_iter()
        .map(|c| c.id)
        .collect()
}

/// Runs an `augur ctl` command; answers (exit code, stdout, stderr).
pub fn ctl(endpoint: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(AUGUR)
        .arg("ctl")
        .arg("--endpoint")
        .arg(endpoint)
        .args(args)
        .output()
        .expect("run augur ctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A path in the repository.
pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

/// One bootstrapped node with `extra_toml` in its config, once it leads: the cluster and its
/// endpoint for `ctl`.
pub async fn single_node(extra_toml: &'static str) -> (Cluster, String) {
    let cluster = Cluster::start(
        1,
        RaftKnobs {
            extra_toml,
            ..RaftKnobs::default()
        },
    );
    cluster.wait_leader().await;
    let ep = cluster.endpoints().join(",");
    (cluster, ep)
}

/// Applies `examples/topologies/sock-shop.toml` through `augur ctl`.
pub fn apply_sock_shop(ep: &str) {
    let topo = repo("examples/topologies/sock-shop.toml");
    let (code, _, err) = ctl(ep, &["topology", "apply", topo.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
}

/// Registers hosts `(host, rack, zone)` with 8 slots each.
pub async fn upsert_hosts(client: &mut augur_cli::Client, hosts: &[(&str, &str, &str)]) {
    for (host, rack, zone) in hosts {
        let req = pb::UpsertHostRequest {
            placement: Some(pb::Placement {
                host: (*host).into(),
                rack: (*rack).into(),
                zone: (*zone).into(),
            }),
            capacity: 8,
        };
        client
            .call(|ch| {
                let req = req.clone();
                async move { TopologyClient::new(ch).upsert_host(req).await }
            })
            .await
            .expect("upsert host");
    }
}

/// The plans recorded, newest first, as `ctl plan list` prints them.
pub fn plans(ep: &str) -> Vec<serde_json::Value> {
    let (code, out, err) = ctl(ep, &["--output", "json", "plan", "list"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
    v.as_array().cloned().unwrap_or_default()
}

// ---- shards: a small fleet's telemetry, pushed to one node; an owner killed mid-stream ----

/// One batch of a small fleet: every component's latency and memory at step `k` (seeded
/// noise around a steady level).
pub fn fleet_step(
    ids: &[String],
    k: i64,
    rng: &mut augur_predict::lstm::SeededRng,
) -> pb::SampleBatch {
    let samples = ids
        .iter()
        .flat_map(|c| {
            let latency = 100.0 + (rng.unit() - 0.5) * 2.0;
            let memory = 40.0 + (rng.unit() - 0.5);
            [("latency_ms", latency), ("mem_pct", memory)].map(|(m, v)| pb::Sample {
                component: c.clone(),
                metric: m.into(),
                timestamp_ms: k * 1000,
                value: v,
            })
        })
        .collect();
    pb::SampleBatch {
        samples,
        applied_index: 0,
    }
}

/// Pushes `batches` to the node at `addr` over one stream.
pub async fn push_to(addr: &str, batches: Vec<pb::SampleBatch>) -> pb::PushSummary {
    let ch = channel(addr).await.expect("channel");
    pb::telemetry_client::TelemetryClient::new(ch)
        .push(futures::stream::iter(batches))
        .await
        .expect("push")
        .into_inner()
}

/// `id`'s forecast as the node at `addr` answers it (from the owner, else the standby).
pub async fn forecast_via(addr: &str, id: &str) -> Option<pb::Forecast> {
    forecast_from(addr, id, false).await
}

/// `id`'s forecast from the node at `addr`: its own (`this_node_only`), or as it answers
/// for the fleet.
pub async fn forecast_from(addr: &str, id: &str, this_node_only: bool) -> Option<pb::Forecast> {
    let ch = channel(addr).await?;
    pb::telemetry_client::TelemetryClient::new(ch)
        .get_forecast(pb::GetForecastRequest {
            component: id.into(),
            this_node_only,
        })
        .await
        .ok()
        .map(|r| r.into_inner())
}

/// How a component's forecasts came back after its owner was killed.
pub struct Takeover {
    /// From the kill to the first forecast of a sample pushed after it, made by another node.
    pub resumed: Duration,
    pub forecast: pb::Forecast,
    /// Steps pushed after the kill, up to that forecast.
    pub steps: i64,
}

/// Kills node `victim` (SIGKILL), then pushes the fleet's next steps to `entry` one at a
/// time, reading `component`'s forecast after each, until another node serves a forecast of
/// a step pushed after the kill. `k` is the next step; it is advanced past the steps pushed.
pub async fn kill_and_follow(
    cluster: &mut Cluster,
    victim: u64,
    entry: &str,
    component: &str,
    ids: &[String],
    k: &mut i64,
    rng: &mut augur_predict::lstm::SeededRng,
) -> Takeover {
    cluster.kill(victim);
    let killed = std::time::Instant::now();
    let first = *k;
    loop {
        let summary = push_to(entry, vec![fleet_step(ids, *k, rng)]).await;
        assert_eq!(summary.unknown_component, 0, "{summary:?}");
        *k += 1;
        if let Some(f) = forecast_via(entry, component).await {
            if f.node != victim && f.at_ms >= first * 1000 {
                return Takeover {
                    resumed: killed.elapsed(),
                    forecast: f,
                    steps: *k - first,
                };
            }
        }
        assert!(*k - first < 5_000, "forecasts of {component} never resumed");
    }
}

impl Cluster {
    /// Waits until every running node has applied what node `from` has applied.
    pub async fn wait_all_applied(&self, from: u64) {
        let index = status(&self.addr(from)).await.expect("status").last_applied;
        for (id, n) in &self.nodes {
            if n.running() {
                self.wait_applied(*id, index).await;
            }
        }
    }
}

/// Posts a remote-write body (snappy-compressed `prometheus.WriteRequest`) to `addr`
/// (`host:port`); the HTTP status.
pub async fn remote_write(addr: &str, body: Vec<u8>) -> u16 {
    remote_write_with(
        addr,
        body,
        &[
            ("content-encoding", "snappy"),
            ("content-type", "application/x-protobuf"),
            ("x-prometheus-remote-write-version", "0.1.0"),
        ],
    )
    .await
}

/// A remote write with exactly `headers`: its status.
pub async fn remote_write_with(addr: &str, body: Vec<u8>, headers: &[(&str, &str)]) -> u16 {
    use http_body_util::Full;
    use hyper_util::client::legacy::Client;
    let client = Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<hyper::body::Bytes>>();
    let mut req = hyper::Request::post(format!("http://{addr}/api/v1/write"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(hyper::body::Bytes::from(body))).unwrap();
    client
        .request(req)
        .await
        .expect("remote write")
        .status()
        .as_u16()
}

/// A `Forward` of `samples` to the node at `addr`, as if from a peer that had applied up to
/// `applied_index`, sent again while the node's forward slots are full (a probe of
/// [`wait_forward_slots_full`] can hold one for a moment): a forward that waits for its
/// sender's position holds its slot until it is answered.
pub fn spawn_forward(
    addr: &str,
    samples: Vec<pb::Sample>,
    applied_index: u64,
) -> tokio::task::JoinHandle<Result<tonic::Response<pb::PushSummary>, tonic::Status>> {
    let addr = addr.to_string();
    tokio::spawn(async move {
        loop {
            let reply =
                pb::telemetry_client::TelemetryClient::new(channel(&addr).await.expect("channel"))
                    .forward(pb::SampleBatch {
                        samples: samples.clone(),
                        applied_index,
                    })
                    .await;
            match reply {
                Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                    tokio::time::sleep(Duration::from_millis(5)).await
                }
                other => return other,
            }
        }
    })
}

/// Waits until every forward slot of the node at `addr` is taken: an empty forward is
/// refused with `RESOURCE_EXHAUSTED`.
pub async fn wait_forward_slots_full(addr: &str) {
    eventually(
        "the node's forward slots taken",
        Duration::from_secs(20),
        || {
            let addr = addr.to_string();
            async move {
                let reply = pb::telemetry_client::TelemetryClient::new(channel(&addr).await?)
                    .forward(pb::SampleBatch {
                        samples: Vec::new(),
                        applied_index: 0,
                    })
                    .await;
                matches!(reply, Err(s) if s.code() == tonic::Code::ResourceExhausted).then_some(())
            }
        },
    )
    .await;
}

//! The reference orchestrator (`augur agent --config FILE`): it watches the controller
//! cluster's action log and carries actions out on this machine, for real.
//!
//! - `provision`: starts the shadow (or a scale plan's new instance) as a process from the
//!   instance spec and adds it to the HAProxy backend with weight 0 (ready, but no traffic
//!   yet);
//! - `sync`: copies the original's state snapshot (`GET /state`) to the shadow
//!   (`POST /state`);
//! - `validate`: replays requests against both, compares status and body (a body that
//!   differs between the original and another healthy instance is noise, as in Diffy) and
//!   judges latency with a rank test ([`augur_plan::judge`]);
//! - `set_weights`: sets HAProxy weights for the servers it runs; for a step of a shift it
//!   then measures both sides (requests and errors from HAProxy's stats, p99 from the
//!   instances' metrics) until the shadow has served enough requests, and reports the KPIs:
//!   the leader gates the step on them;
//! - `standby` / `drain`: the original keeps running, drained and at weight 0;
//! - `retire`: the shadow leaves HAProxy and its process stops;
//! - `exec` (and any kind listed under `[exec] kinds`): runs the hook command with the action
//!   in its environment, so Terraform, Ansible or kubectl can be plugged in.
//!
//! It also registers the instances it runs as components and pushes their metrics as
//! telemetry, which is what the predictor forecasts from: `latency_p99_ms`, `memory_mb`,
//! `error_ratio`, and `requests_per_s`, the load metric predictive scaling sizes groups on.
//!
//! Resuming: the last handled sequence number is saved after every outcome, and the watch
//! resumes after it (through a leader change, the client follows the redirect). An action
//! already finished by anyone is skipped; every handler is idempotent (a provision of a
//! running instance, the same weights twice), so an action is never carried out twice.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use augur_proto::client::Client;
use augur_proto::pb;
use augur_proto::pb::control_client::ControlClient;
use augur_proto::pb::telemetry_client::TelemetryClient;
use augur_proto::pb::topology_client::TopologyClient;
use augur_types::ActionKind;
use futures::StreamExt as _;
use serde::Deserialize;
use tokio::time::Instant;
use tonic::Status;

use crate::haproxy::{Desired, DesiredServer, HaproxyClient, State};
use crate::http;
use crate::process::{InstanceSpec, Instances};
use crate::sample::parse_metrics;

/// Whether `name` is an action kind's name (`ActionKind::as_str`).
fn is_kind(name: &str) -> bool {
    ActionKind::ALL.iter().any(|k| k.as_str() == name)
}

/// Every kind's name, for error messages.
fn kind_names() -> String {
    ActionKind::ALL.map(ActionKind::as_str).join(", ")
}

/// The agent's configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The orchestrator's name, as outcomes record it.
    pub name: String,
    /// Controller nodes, HOST:PORT; the first is tried first.
    pub endpoints: Vec<String>,
    /// Action kinds this agent takes (default: every kind but `scale`).
    #[serde(default = "default_capabilities")]
    pub capabilities: Vec<String>,
    /// Where the last handled sequence number is kept.
    pub state_file: PathBuf,
    /// How long a claim on an action holds; the agent renews it every third of that while it
    /// works, so only a dead or cut-off agent lets it lapse (then another one takes over).
    #[serde(default = "lease_ms")]
    pub lease_ms: u64,
    pub haproxy: HaproxySection,
    pub instances: InstancesSection,
    /// Where the instances run (their placement as components).
    pub placement: PlacementSection,
    #[serde(default)]
    pub exec: Option<ExecSection>,
    #[serde(default)]
    pub gate: GateSection,
    #[serde(default)]
    pub validate: ValidateSection,
    #[serde(default)]
    pub telemetry: TelemetrySection,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaproxySection {
    /// The admin socket (`stats socket PATH level admin`).
    pub socket: PathBuf,
    pub backend: String,
    /// Add servers with `check inter 1s fall 3 rise 2` (the backend's checks stay on).
    #[serde(default = "yes")]
    pub check: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstancesSection {
    /// argv; `{port}` and `{name}` are substituted.
    pub command: Vec<String>,
    pub port_range: [u16; 2],
    #[serde(default = "health")]
    pub health_path: String,
    #[serde(default = "start_timeout")]
    pub start_timeout_ms: u64,
    /// Instances started when the agent starts, each registered as a component of the
    /// backend's service and added to HAProxy.
    #[serde(default)]
    pub start: Vec<String>,
    /// Instances already running (started by something else) that this agent manages from
    /// now on: registered, scraped, steered in HAProxy (where they are servers of the same
    /// name), and usable as originals to shadow. They are never stopped by the agent.
    #[serde(default)]
    pub adopt: Vec<AdoptedInstance>,
    /// The weight each started instance gets until the cluster sets weights.
    #[serde(default = "initial_weight")]
    pub initial_weight: u16,
    /// Class of the registered components.
    #[serde(default = "class")]
    pub class: String,
    #[serde(default = "criticality")]
    pub criticality: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdoptedInstance {
    pub name: String,
    pub addr: SocketAddr,
    /// Its weight in HAProxy until the cluster sets weights.
    #[serde(default = "initial_weight")]
    pub weight: u16,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacementSection {
    pub host: String,
    pub rack: String,
    pub zone: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecSection {
    /// The hook: argv, run with `AUGUR_ACTION_*` and `AUGUR_PARAM_*` in its environment.
    pub command: Vec<String>,
    /// Kinds the hook carries out instead of the built-in handlers (default: `exec`).
    #[serde(default = "exec_kinds")]
    pub kinds: Vec<String>,
    #[serde(default = "exec_timeout")]
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateSection {
    /// Longest a step is measured while the shadow has served too few requests.
    pub max_window_ms: u64,
    /// The shortest window, however fast requests arrive.
    pub min_window_ms: u64,
    pub poll_ms: u64,
}

impl Default for GateSection {
    fn default() -> Self {
        Self {
            max_window_ms: 30_000,
            min_window_ms: 2_000,
            poll_ms: 250,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidateSection {
    /// Requests replayed against each side.
    pub requests: usize,
    /// Largest share of requests whose answers may differ (noise excluded).
    pub max_mismatch: f64,
    /// For this long the shadow is sent requests first that are not judged: a fresh, idle
    /// process answers its first requests more slowly than a warm, busy original (lazy
    /// set-up, cold caches, parked threads; a JIT in real services).
    #[serde(default = "default_warmup_ms")]
    pub warmup_ms: u64,
    /// A slower shadow fails validation only when its median latency is at least this many
    /// times the original's…
    #[serde(default = "default_min_latency_ratio")]
    pub min_latency_ratio: f64,
    /// …and at least this many milliseconds slower.
    #[serde(default = "default_min_latency_delta_ms")]
    pub min_latency_delta_ms: f64,
}

fn default_warmup_ms() -> u64 {
    500
}

fn default_min_latency_ratio() -> f64 {
    augur_plan::GateConfig::default().min_latency_ratio
}

fn default_min_latency_delta_ms() -> f64 {
    augur_plan::GateConfig::default().min_latency_delta_ms
}

impl Default for ValidateSection {
    fn default() -> Self {
        Self {
            requests: 100,
            max_mismatch: 0.02,
            warmup_ms: default_warmup_ms(),
            min_latency_ratio: default_min_latency_ratio(),
            min_latency_delta_ms: default_min_latency_delta_ms(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySection {
    /// How often the instances' metrics are scraped and pushed (0: never).
    pub every_ms: u64,
}

impl Default for TelemetrySection {
    fn default() -> Self {
        Self { every_ms: 1000 }
    }
}

fn default_capabilities() -> Vec<String> {
    ActionKind::ALL
        .iter()
        .filter(|k| **k != ActionKind::Scale)
        .map(|k| k.as_str().to_owned())
        .collect()
}
fn lease_ms() -> u64 {
    15_000
}

fn yes() -> bool {
    true
}
fn health() -> String {
    "/health".into()
}
fn start_timeout() -> u64 {
    10_000
}
fn initial_weight() -> u16 {
    10
}
fn class() -> String {
    "service".into()
}
fn criticality() -> u32 {
    3
}
fn exec_kinds() -> Vec<String> {
    vec!["exec".into()]
}
fn exec_timeout() -> u64 {
    60_000
}

/// A configuration that cannot be used, with every reason at once.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path} is not valid:\n  - {}", .errors.join("\n  - "))]
    Invalid { path: PathBuf, errors: Vec<String> },
}

impl AgentConfig {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let cfg: AgentConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let errors = cfg.problems();
        if errors.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigError::Invalid {
                path: path.to_owned(),
                errors,
            })
        }
    }

    /// Everything wrong with the configuration (empty when it can be used).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let named = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c))
        };
        if !named(&self.name) {
            out.push(format!(
                "name {:?}: 1..=64 of [A-Za-z0-9._:-] expected",
                self.name
            ));
        }
        if self.endpoints.is_empty() {
            out.push("endpoints: at least one controller node is needed".into());
        }
        for c in &self.capabilities {
            if !is_kind(c) {
                out.push(format!(
                    "capabilities: unknown kind {c:?} (known: {})",
                    kind_names()
                ));
            }
        }
        if !named(&self.haproxy.backend) {
            out.push(format!(
                "haproxy.backend {:?}: not a name",
                self.haproxy.backend
            ));
        }
        if self.instances.command.is_empty() {
            out.push("instances.command is empty".into());
        }
        let [lo, hi] = self.instances.port_range;
        if lo == 0 || lo > hi {
            out.push(format!(
                "instances.port_range [{lo}, {hi}]: must be 1..=65535, low ≤ high"
            ));
        }
        for name in &self.instances.start {
            if !named(name) {
                out.push(format!("instances.start: {name:?} is not a name"));
            }
        }
        for a in &self.instances.adopt {
            if !named(&a.name) {
                out.push(format!("instances.adopt: {:?} is not a name", a.name));
            }
            if self.instances.start.contains(&a.name) {
                out.push(format!("instances: {} is both started and adopted", a.name));
            }
        }
        if self.instances.initial_weight > 256 {
            out.push(format!(
                "instances.initial_weight {} is above HAProxy's 256",
                self.instances.initial_weight
            ));
        }
        if let Some(exec) = &self.exec {
            if exec.command.is_empty() {
                out.push("exec.command is empty".into());
            }
            for k in &exec.kinds {
                if !is_kind(k) {
                    out.push(format!("exec.kinds: unknown kind {k:?}"));
                }
            }
        }
        if self.gate.poll_ms == 0 || self.gate.min_window_ms > self.gate.max_window_ms {
            out.push("gate: poll_ms must be above 0 and min_window_ms ≤ max_window_ms".into());
        }
        if !(0.0..=1.0).contains(&self.validate.max_mismatch) || self.validate.requests == 0 {
            out.push("validate: requests above 0 and max_mismatch in 0..=1 expected".into());
        }
        let v = &self.validate;
        let ratio_ok = v.min_latency_ratio.is_finite() && v.min_latency_ratio >= 1.0;
        let delta_ok = v.min_latency_delta_ms.is_finite() && v.min_latency_delta_ms >= 0.0;
        if !(ratio_ok && delta_ok) {
            out.push(format!(
                "validate: min_latency_ratio {} (≥ 1 expected) and min_latency_delta_ms {} (≥ 0 expected)",
                v.min_latency_ratio, v.min_latency_delta_ms
            ));
        }
        out
    }
}

/// What an action handler answers: success (with KPIs for a gated step) or why not.
type Outcome = Result<Option<pb::Kpis>, String>;

/// The running agent: its processes, what it wants HAProxy to look like, its cluster client.
///
/// Actions on different components are carried out at once (one component's in order): a
/// shift's gate or a validation on one does not hold up another's failover.
pub struct Agent {
    cfg: AgentConfig,
    instances: tokio::sync::Mutex<Instances>,
    /// What HAProxy should look like; held while it is made so (one reconcile at a time).
    desired: tokio::sync::Mutex<Desired>,
    /// The sequence number of the action that last set each server's weight: an older
    /// action finishing later does not put back a weight a newer one replaced.
    weight_seq: std::sync::Mutex<HashMap<String, u64>>,
    haproxy: HaproxyClient,
    client: tokio::sync::Mutex<Client>,
    /// The HAProxy pid last seen: a new one means a reload, so the desired state is re-applied.
    haproxy_pid: std::sync::Mutex<Option<u32>>,
    /// The running instances (started or adopted), for the handlers and the telemetry task.
    targets: Targets,
}

type Targets = std::sync::Arc<std::sync::Mutex<BTreeMap<String, SocketAddr>>>;

impl Agent {
    pub fn new(cfg: AgentConfig) -> Self {
        let mut spec = InstanceSpec::new(cfg.instances.command.clone());
        spec.port_range = (cfg.instances.port_range[0], cfg.instances.port_range[1]);
        spec.health_path = cfg.instances.health_path.clone();
        spec.start_timeout = Duration::from_millis(cfg.instances.start_timeout_ms);
        let mut desired = Desired::new(cfg.haproxy.backend.clone());
        if cfg.haproxy.check {
            desired = desired.with_health_check(Default::default());
        }
        Self {
            instances: tokio::sync::Mutex::new(Instances::new(spec)),
            desired: tokio::sync::Mutex::new(desired),
            weight_seq: Default::default(),
            haproxy: HaproxyClient::new(cfg.haproxy.socket.clone()),
            client: tokio::sync::Mutex::new(Client::new(cfg.endpoints.clone())),
            haproxy_pid: Default::default(),
            targets: Default::default(),
            cfg,
        }
    }

    /// Starts the configured instances, registers them and puts them behind HAProxy, then
    /// carries out actions until `stop` resolves.
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
        for name in self.cfg.instances.start.clone() {
            self.start_instance(&name, self.cfg.instances.initial_weight)
                .await
                .map_err(|e| anyhow::anyhow!("starting {name}: {e}"))?;
            self.register(&name).await?;
        }
        for a in self.cfg.instances.adopt.clone() {
            self.manage(&a.name, a.addr, a.weight).await;
            self.register(&a.name).await?;
        }
        if let Err(e) = self.restore_from_cluster().await {
            tracing::warn!(error = %e, "the backend is as configured, not as the cluster records it");
        }
        // HAProxy gets them all at once.
        self.reconcile().await.map_err(|e| anyhow::anyhow!(e))?;
        tokio::pin!(stop);
        let last = read_last_seq(&self.cfg.state_file)?;
        let telemetry = (self.cfg.telemetry.every_ms > 0).then(|| {
            tokio::spawn(push_telemetry(
                Client::new(self.cfg.endpoints.clone()),
                self.targets.clone(),
                Duration::from_millis(self.cfg.telemetry.every_ms),
            ))
        });
        let mut reload = tokio::time::interval(Duration::from_secs(1));
        reload.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        // Actions nobody holds behind the stream's position (a lapsed lease, a claim that
        // failed on the way) are looked for.
        let mut reoffered = tokio::time::interval(Duration::from_secs(2));
        reoffered.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        tracing::info!(name = %self.cfg.name, from = last + 1, "agent watching actions");
        let this = Arc::new(self);
        let mut work = Lanes::new(last);
        let state_file = this.cfg.state_file.clone();
        let result = loop {
            let mut stream = match this.watch(work.progress.position() + 1).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch actions; retrying");
                    tokio::select! {
                        _ = &mut stop => break Ok(()),
                        _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                    }
                }
            };
            let ended = loop {
                tokio::select! {
                    _ = &mut stop => break Some(Ok(())),
                    _ = reload.tick() => this.follow_reload().await,
                    _ = reoffered.tick() => {
                        for a in this.reoffered(work.progress.position()).await {
                            work.dispatch(&this, a, false);
                        }
                    }
                    Some(seq) = work.done.recv() => {
                        work.progress.finish(seq);
                        if let Err(e) = write_last_seq(&state_file, work.progress.position()) {
                            break Some(Err(e));
                        }
                    }
                    msg = stream.message() => match msg {
                        Ok(Some(action)) => {
                            work.dispatch(&this, action, true);
                            if let Err(e) = write_last_seq(&state_file, work.progress.position()) {
                                break Some(Err(e));
                            }
                        }
                        // A leader change: watch again after the last action handled (those
                        // still in flight are recognised when they come again).
                        Ok(None) | Err(_) => break None,
                    }
                }
            };
            if let Some(result) = ended {
                break result;
            }
        };
        telemetry.inspect(|t| t.abort());
        work.abort();
        this.shutdown().await;
        result
    }

    async fn shutdown(&self) {
        if let Err(e) = self.instances.lock().await.stop_all().await {
            tracing::warn!(error = %e, "stopping instances");
        }
    }

    async fn watch(&self, from_seq: u64) -> Result<tonic::Streaming<pb::Action>, Status> {
        let req = pb::WatchActionsRequest {
            orchestrator: self.cfg.name.clone(),
            capabilities: self.cfg.capabilities.clone(),
            from_seq,
        };
        self.client
            .lock()
            .await
            .call(|ch| {
                let req = req.clone();
                async move {
                    let mut c = ControlClient::new(ch);
                    Ok(c.watch_actions(req).await?.into_inner())
                }
            })
            .await
    }

    /// Carries out one action (if it is pending and this agent takes its kind) and reports.
    async fn handle(&self, action: pb::Action) {
        let Ok(kind) = augur_proto::action_kind_from_wire(action.kind) else {
            return;
        };
        let name = kind.as_str();
        if action.status != "pending" || !self.cfg.capabilities.iter().any(|c| c == name) {
            return;
        }
        // Only the orchestrator holding the action carries it out. A claim refused (another
        // holds it, or it finished) leaves it; a claim that failed on the way (no leader
        // yet, a lost connection) is tried again with the actions behind the stream.
        if let Err(e) = self.claim(&action.id).await {
            tracing::info!(id = %action.id, kind = name, code = ?e.code(), reason = %e.message(), "not claimed");
            return;
        }
        let renew = tokio::spawn(renew_claim(
            Client::new(self.cfg.endpoints.clone()),
            action.id.clone(),
            self.cfg.name.clone(),
            self.cfg.lease_ms,
        ));
        let by_hook = self
            .cfg
            .exec
            .as_ref()
            .is_some_and(|e| e.kinds.iter().any(|k| k == name));
        tracing::info!(id = %action.id, kind = name, target = %action.target, "carrying out");
        let outcome = if by_hook {
            self.exec(&action, name).await
        } else {
            match kind {
                ActionKind::Provision => self.provision(&action).await,
                ActionKind::Sync => self.sync(&action).await,
                ActionKind::Validate => self.validate(&action).await,
                ActionKind::SetWeights => self.set_weights(&action).await,
                ActionKind::Drain | ActionKind::Standby => self.drain(&action).await,
                ActionKind::Retire => self.retire(&action).await,
                ActionKind::Scale | ActionKind::Exec => {
                    Err(format!("{name} is not carried out by this agent"))
                }
            }
        };
        renew.abort();
        let (success, reason, kpis) = match outcome {
            Ok(kpis) => (true, String::new(), kpis),
            Err(reason) => (false, reason, None),
        };
        tracing::info!(id = %action.id, kind = name, success, %reason, "outcome");
        let req = pb::ReportOutcomeRequest {
            id: action.id.clone(),
            orchestrator: self.cfg.name.clone(),
            success,
            reason,
            kpis,
        };
        let sent = self
            .client
            .lock()
            .await
            .call(|ch| {
                let req = req.clone();
                async move {
                    ControlClient::new(ch).report_outcome(req).await?;
                    Ok(())
                }
            })
            .await;
        if let Err(e) = sent {
            tracing::warn!(id = %action.id, error = %e, "outcome not reported");
        }
    }

    async fn claim(&self, id: &str) -> Result<(), Status> {
        let mut client = self.client.lock().await;
        claim(&mut client, id, &self.cfg.name, self.cfg.lease_ms).await
    }

    /// The pending actions up to `last` that nobody holds: those that came back to the pool
    /// after a lease on them lapsed, and those this agent could not claim when the stream
    /// brought them (the claim call itself failed).
    async fn reoffered(&self, last: u64) -> Vec<pb::Action> {
        let listed = self
            .client
            .lock()
            .await
            .call(|ch| async move {
                ControlClient::new(ch)
                    .list_actions(pb::ListActionsRequest {
                        from_seq: 1,
                        limit: 0,
                        unclaimed_only: true,
                    })
                    .await
            })
            .await;
        let Ok(listed) = listed else {
            return Vec::new();
        };
        listed
            .into_inner()
            .actions
            .into_iter()
            .filter(|a| a.seq <= last)
            .collect()
    }

    /// An instance the agent answers for from now on: scraped, usable in actions, and wanted
    /// in the backend at `weight` (unless it already is). HAProxy gets it at the next
    /// [`Agent::reconcile`].
    async fn manage(&self, name: &str, addr: SocketAddr, weight: u16) {
        self.targets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned(), addr);
        let mut desired = self.desired.lock().await;
        if desired.get(name).is_none() {
            let state = State::Ready;
            desired.set(
                name,
                DesiredServer {
                    addr,
                    weight,
                    state,
                },
            );
        }
    }

    /// After a restart, what the cluster records for the backend's service wins over the
    /// config's initial weights: a shadow of one of this agent's instances that the cluster
    /// still routes to (promoted, or part-way through a shift) is started again and given the
    /// state the cluster holds for its original; an original whose shadow was promoted is
    /// drained again (standby); and the service's weights, when the cluster has set them,
    /// replace the initial ones. (The agent stops its instances when it stops.)
    async fn restore_from_cluster(&self) -> Result<(), String> {
        let service = self.cfg.haproxy.backend.clone();
        let (shadows, weights) = {
            let mut client = self.client.lock().await;
            let shadows = client
                .call(|ch| async move {
                    ControlClient::new(ch)
                        .list_shadows(pb::ListShadowsRequest {})
                        .await
                })
                .await
                .map_err(|e| format!("listing shadows: {}", e.message()))?
                .into_inner()
                .shadows;
            let weights = client
                .call(|ch| {
                    let service = service.clone();
                    async move {
                        TopologyClient::new(ch)
                            .get_weights(pb::GetWeightsRequest {
                                service,
                                consistency: pb::ReadConsistency::Linearizable as i32,
                            })
                            .await
                    }
                })
                .await;
            let weights = match weights {
                Ok(w) => w.into_inner().weights,
                Err(e) if e.code() == tonic::Code::NotFound => HashMap::new(),
                Err(e) => return Err(format!("reading {service}'s weights: {}", e.message())),
            };
            (shadows, weights)
        };
        let ours = |name: &str| {
            self.targets
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(name)
        };
        for rec in &shadows {
            if !ours(&rec.component) {
                continue;
            }
            let promoted = rec.state == "promoted";
            let routed = weights.get(&rec.shadow).is_some_and(|&w| w > 0);
            if promoted || routed {
                self.start_instance(&rec.shadow, 0).await?;
                if let Err(e) = self.sync_state(&rec.component, &rec.shadow).await {
                    tracing::warn!(shadow = %rec.shadow, error = %e, "restarted shadow without its state");
                }
                tracing::info!(shadow = %rec.shadow, state = %rec.state, "shadow started again");
            }
            if promoted {
                // As on standby; the cluster's weights, if it has any, are laid over below.
                drain_to(
                    &mut *self.desired.lock().await,
                    &rec.component,
                    Some(&rec.shadow),
                );
            }
        }
        let mut desired = self.desired.lock().await;
        for (name, &w) in &weights {
            if desired.get(name).is_some() {
                desired.set_weight(name, u16::try_from(w.min(256)).unwrap_or(256));
            }
        }
        Ok(())
    }

    /// Makes HAProxy match what the agent wants.
    async fn reconcile(&self) -> Result<(), String> {
        self.desired
            .lock()
            .await
            .reconcile(&self.haproxy)
            .await
            .map(|_| ())
            .map_err(|e| format!("haproxy: {e}"))
    }

    /// Starts `name` (unless it runs) and wants it in the backend at `weight`.
    async fn start_instance(&self, name: &str, weight: u16) -> Result<SocketAddr, String> {
        let addr = {
            let mut instances = self.instances.lock().await;
            let running = instances.is_alive(name);
            match instances.get(name) {
                Some(i) if running => i.addr(),
                _ => instances
                    .start(name)
                    .await
                    .map_err(|e| e.to_string())?
                    .addr(),
            }
        };
        self.manage(name, addr, weight).await;
        Ok(addr)
    }

    /// Registers an instance as a component of the backend's service.
    async fn register(&self, name: &str) -> anyhow::Result<()> {
        let labels = HashMap::from([("agent".to_owned(), self.cfg.name.clone())]);
        let p = &self.cfg.placement;
        let req = pb::UpsertComponentRequest {
            component: Some(pb::Component {
                id: name.to_owned(),
                class: self.cfg.instances.class.clone(),
                group: self.cfg.haproxy.backend.clone(),
                criticality: self.cfg.instances.criticality,
                placement: Some(pb::Placement {
                    host: p.host.clone(),
                    rack: p.rack.clone(),
                    zone: p.zone.clone(),
                }),
                labels,
            }),
        };
        self.client
            .lock()
            .await
            .call(|ch| {
                let req = req.clone();
                async move {
                    TopologyClient::new(ch).upsert_component(req).await?;
                    Ok(())
                }
            })
            .await?;
        Ok(())
    }

    fn shadow_param(action: &pb::Action) -> Result<String, String> {
        action
            .params
            .get("shadow")
            .cloned()
            .ok_or_else(|| format!("{} has no shadow parameter", action.id))
    }

    async fn provision(&self, action: &pb::Action) -> Outcome {
        let shadow = Self::shadow_param(action)?;
        self.start_instance(&shadow, 0).await?;
        self.reconcile().await?;
        Ok(None)
    }

    fn instance_addr(&self, name: &str) -> Result<SocketAddr, String> {
        self.targets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .copied()
            .ok_or_else(|| format!("{name} is not an instance this agent runs"))
    }

    async fn sync(&self, action: &pb::Action) -> Outcome {
        let shadow = Self::shadow_param(action)?;
        let version = self.sync_state(&action.target, &shadow).await?;
        tracing::info!(original = %action.target, %shadow, version, "state handed over");
        Ok(None)
    }

    /// Hands `original`'s state to `shadow` through the cluster: the original's snapshot
    /// (`GET /state`, JSON with a numeric `version`) is recorded in the replicated state
    /// (`Control.PutState`; a newer one already held is kept), then what the cluster holds is
    /// written to the shadow (`POST /state`). An original that no longer answers still has
    /// its last recorded state handed over. Returns the version the shadow got.
    async fn sync_state(&self, original: &str, shadow: &str) -> Result<u64, String> {
        let (from, to) = (self.instance_addr(original)?, self.instance_addr(shadow)?);
        let read = match http::get(from, "/state").await {
            Ok(r) if r.is_success() => Ok(r.body),
            Ok(r) => Err(format!("{original} answered {} to GET /state", r.status)),
            Err(e) => Err(format!("reading {original}'s state: {e}")),
        };
        match &read {
            Ok(body) => {
                let version =
                    snapshot_version(body).map_err(|e| format!("{original}'s state: {e}"))?;
                let req = pb::PutStateRequest {
                    component: original.to_owned(),
                    version,
                    data: body.to_vec(),
                    orchestrator: self.cfg.name.clone(),
                };
                let put = self
                    .client
                    .lock()
                    .await
                    .call(|ch| {
                        let req = req.clone();
                        async move { ControlClient::new(ch).put_state(req).await }
                    })
                    .await;
                match put {
                    Ok(_) => {}
                    // A newer snapshot is already held: it is the one handed over.
                    Err(e) if e.code() == tonic::Code::FailedPrecondition => {}
                    Err(e) => return Err(format!("recording {original}'s state: {}", e.message())),
                }
            }
            Err(e) => tracing::warn!(%original, error = %e, "handing over the last recorded state"),
        }
        let held = self
            .client
            .lock()
            .await
            .call(|ch| {
                let req = pb::GetStateRequest {
                    component: original.to_owned(),
                    consistency: pb::ReadConsistency::Linearizable as i32,
                };
                async move { ControlClient::new(ch).get_state(req).await }
            })
            .await
            .map_err(|e| match &read {
                Err(r) => format!("{r}; and the cluster holds none: {}", e.message()),
                Ok(_) => format!("reading {original}'s recorded state: {}", e.message()),
            })?
            .into_inner();
        let put = http::post(to, "/state", held.data)
            .await
            .map_err(|e| format!("writing {shadow}'s state: {e}"))?;
        if !put.is_success() {
            return Err(format!("{shadow} answered {} to POST /state", put.status));
        }
        Ok(held.version)
    }

    async fn validate(&self, action: &pb::Action) -> Outcome {
        let shadow = Self::shadow_param(action)?;
        let (orig, shad) = (
            self.instance_addr(&action.target)?,
            self.instance_addr(&shadow)?,
        );
        // The paths replayed: the original's keys. An original that can no longer answer for
        // its state (the crash a failover runs ahead of) does not fail the shadow: the shadow
        // was synced with that state, so its keys are the same ones.
        let keys = match state_keys(orig, &action.target).await {
            Ok(keys) => keys,
            Err(e) => {
                tracing::warn!(original = %action.target, error = %e, "validating on the shadow's keys");
                state_keys(shad, &shadow).await.unwrap_or_default()
            }
        };
        let paths: Vec<String> = if keys.is_empty() {
            vec!["/".to_owned()]
        } else {
            keys.iter().map(|k| format!("/kv/{k}")).collect()
        };
        // The noise reference, as Diffy does: another healthy instance of the service (else
        // the original itself, asked again). A body that differs between two healthy
        // instances (an instance name, a timestamp) is noise, not a difference of the shadow.
        let reference = self
            .targets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(n, _)| **n != action.target && **n != shadow && !n.contains(".shadow-"))
            .map(|(_, a)| *a)
            .unwrap_or(orig);
        // The shadow warms up first; its answers here are not judged.
        let began = Instant::now();
        let mut sent = 0;
        while began.elapsed() < Duration::from_millis(self.cfg.validate.warmup_ms) {
            futures::stream::iter(0..VALIDATE_IN_FLIGHT)
                .map(|i| {
                    let path = paths[(sent + i) % paths.len()].clone();
                    async move { call(shad, &path, &mut augur_plan::Kpis::default()).await }
                })
                .buffer_unordered(VALIDATE_IN_FLIGHT)
                .for_each(|_| async {})
                .await;
            sent += VALIDATE_IN_FLIGHT;
        }
        // Each replayed request goes to the three at once, and several are in flight: a
        // degrading original (slow, the reason it moves) does not hold the shadow's
        // validation up for the sum of its latencies.
        let rounds: Vec<_> = futures::stream::iter(0..self.cfg.validate.requests)
            .map(|i| {
                let path = paths[i % paths.len()].clone();
                async move {
                    let (mut ko, mut ks, mut kr) = Default::default();
                    // The side asked first every other round: on a busy host the request
                    // sent second waits longer for this task, which would bias one side.
                    let (a, b, r) = if i % 2 == 0 {
                        tokio::join!(
                            call(orig, &path, &mut ko),
                            call(shad, &path, &mut ks),
                            call(reference, &path, &mut kr)
                        )
                    } else {
                        let (b, a, r) = tokio::join!(
                            call(shad, &path, &mut ks),
                            call(orig, &path, &mut ko),
                            call(reference, &path, &mut kr)
                        );
                        (a, b, r)
                    };
                    (ko, ks, a, b, r)
                }
            })
            .buffered(VALIDATE_IN_FLIGHT)
            .collect()
            .await;
        let (mut o, mut s) = (augur_plan::Kpis::default(), augur_plan::Kpis::default());
        let (mut compared, mut mismatched, mut noisy) = (0usize, 0usize, 0usize);
        for (ko, ks, a, b, r) in rounds {
            for (total, part) in [(&mut o, ko), (&mut s, ks)] {
                total.requests += part.requests;
                total.errors += part.errors;
                total.latencies_ms.extend(part.latencies_ms);
            }
            compared += 1;
            // Only the shadow being worse counts: a failing original is why it moves.
            let shadow_worse = match (&a, &b) {
                (Some((sa, ba)), Some((sb, bb))) => {
                    let body_noise = r.as_ref().is_none_or(|(_, br)| br != ba);
                    noisy += usize::from(body_noise && ba != bb);
                    (*sa < 500 && *sb >= 500) || (*sa < 300 && *sb < 300 && ba != bb && !body_noise)
                }
                (Some((sa, _)), None) => *sa < 500,
                _ => false,
            };
            mismatched += usize::from(shadow_worse);
        }
        let share = mismatched as f64 / compared.max(1) as f64;
        if compared == 0 || share > self.cfg.validate.max_mismatch {
            return Err(format!(
                "{mismatched} of {compared} answers worse than the original's (allowed {:.0} %; {noisy} body differences were noise)",
                self.cfg.validate.max_mismatch * 100.0
            ));
        }
        let gate = augur_plan::GateConfig {
            min_latency_ratio: self.cfg.validate.min_latency_ratio,
            min_latency_delta_ms: self.cfg.validate.min_latency_delta_ms,
            ..augur_plan::GateConfig::default()
        };
        let verdict = augur_plan::judge(&o, &s, &gate);
        if !verdict.pass {
            return Err(verdict.reasons.join("; "));
        }
        Ok(None)
    }

    async fn set_weights(&self, action: &pb::Action) -> Outcome {
        let weights = action.params.get("weights").ok_or("no weights parameter")?;
        let weights = parse_weights(weights)?;
        let mut ours = 0;
        {
            let mut desired = self.desired.lock().await;
            let mut set_by = self.weight_seq.lock().unwrap_or_else(|e| e.into_inner());
            for (name, w) in &weights {
                if desired.get(name).is_some() {
                    let w =
                        u16::try_from(*w).map_err(|_| format!("weight {w} of {name} too large"))?;
                    ours += 1;
                    // Set by a newer action already (carried out for another component).
                    if set_by.get(name).is_some_and(|&seq| seq > action.seq) {
                        continue;
                    }
                    set_by.insert(name.clone(), action.seq);
                    desired.set_weight(name, w.min(256));
                }
            }
        }
        if ours == 0 {
            return Err("none of these servers runs behind this agent's HAProxy".into());
        }
        let step = action.params.contains_key("percent");
        if step {
            // The changes the original took since the last sync go over before more traffic.
            let shadow = Self::shadow_param(action)?;
            if let Err(e) = self.sync_state(&action.target, &shadow).await {
                tracing::warn!(original = %action.target, %shadow, error = %e, "state not caught up before the step");
            }
        }
        self.reconcile().await?;
        if !step {
            return Ok(None);
        }
        let shadow = Self::shadow_param(action)?;
        let min: u64 = action
            .params
            .get("min_requests")
            .and_then(|v| v.parse().ok())
            .unwrap_or(20);
        self.gate(&action.target, &shadow, min).await.map(Some)
    }

    /// Measures a step: HAProxy's request and error counters for both servers until the
    /// shadow has served `min` requests (within the window), then each instance's p99.
    async fn gate(&self, original: &str, shadow: &str, min: u64) -> Result<pb::Kpis, String> {
        let g = self.cfg.gate.clone();
        let start = self.counters(original, shadow).await?;
        let began = Instant::now();
        let now = loop {
            tokio::time::sleep(Duration::from_millis(g.poll_ms)).await;
            if !self.instances.lock().await.is_alive(shadow) {
                return Err(format!("the shadow {shadow} died"));
            }
            let now = self.counters(original, shadow).await?;
            let elapsed = began.elapsed();
            let enough = now.1 .0.saturating_sub(start.1 .0) >= min;
            if (enough && elapsed >= Duration::from_millis(g.min_window_ms))
                || elapsed >= Duration::from_millis(g.max_window_ms)
            {
                break now;
            }
        };
        let side = |a: (u64, u64), b: (u64, u64), p99_us: u64| pb::KpiSample {
            requests: b.0.saturating_sub(a.0),
            errors: b.1.saturating_sub(a.1),
            p99_us,
        };
        let p99 = |name: &str| {
            let addr = self.instance_addr(name).ok();
            async move {
                let Some(addr) = addr else { return 0 };
                match http::get(addr, "/metrics").await {
                    Ok(r) if r.is_success() => parse_metrics(&r.text())
                        .get("latency_p99_seconds")
                        .map(|s| (s * 1e6) as u64)
                        .unwrap_or(0),
                    _ => 0,
                }
            }
        };
        let (po, ps) = (p99(original).await, p99(shadow).await);
        Ok(pb::Kpis {
            original: Some(side(start.0, now.0, po)),
            shadow: Some(side(start.1, now.1, ps)),
        })
    }

    /// (requests, errors) of the original and the shadow, from `show stat`: errors are 5xx
    /// answers plus failed responses and connections.
    async fn counters(
        &self,
        original: &str,
        shadow: &str,
    ) -> Result<((u64, u64), (u64, u64)), String> {
        let stats = self
            .haproxy
            .show_stat()
            .await
            .map_err(|e| format!("haproxy stats: {e}"))?;
        let of = |name: &str| {
            stats
                .iter()
                .find(|s| s.pxname == self.cfg.haproxy.backend && s.svname == name)
                .map(|s| (s.stot, s.hrsp_5xx + s.eresp + s.econ))
                .unwrap_or((0, 0))
        };
        Ok((of(original), of(shadow)))
    }

    async fn drain(&self, action: &pb::Action) -> Outcome {
        let name = &action.target;
        {
            let mut desired = self.desired.lock().await;
            if desired.get(name).is_none() {
                return Err(format!("{name} is not behind this agent's HAProxy"));
            }
            let heir = drain_to(&mut desired, name, action.params.get("shadow"));
            let mut seqs = self.weight_seq.lock().unwrap_or_else(|e| e.into_inner());
            seqs.insert(name.clone(), action.seq);
            if let Some(heir) = heir {
                seqs.insert(heir, action.seq);
            }
        }
        self.reconcile().await?;
        Ok(None)
    }

    async fn retire(&self, action: &pb::Action) -> Outcome {
        let shadow = Self::shadow_param(action)?;
        self.desired.lock().await.remove(&shadow);
        self.reconcile().await?;
        self.targets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&shadow);
        let mut instances = self.instances.lock().await;
        if instances.get(&shadow).is_some() {
            // Already gone is as good as stopped.
            let _ = instances.stop(&shadow).await;
        }
        Ok(None)
    }

    async fn exec(&self, action: &pb::Action, kind: &str) -> Outcome {
        let Some(exec) = self.cfg.exec.clone() else {
            return Err("no exec hook is configured".into());
        };
        let mut cmd = tokio::process::Command::new(&exec.command[0]);
        cmd.args(&exec.command[1..])
            .env("AUGUR_ACTION_ID", &action.id)
            .env("AUGUR_ACTION_KIND", kind)
            .env("AUGUR_ACTION_TARGET", &action.target)
            .kill_on_drop(true);
        for (k, v) in &action.params {
            cmd.env(format!("AUGUR_PARAM_{}", k.to_uppercase()), v);
        }
        let run = tokio::time::timeout(Duration::from_millis(exec.timeout_ms), cmd.output());
        match run.await {
            Err(_) => Err(format!("the hook ran past {} ms", exec.timeout_ms)),
            Ok(Err(e)) => Err(format!("cannot run the hook {:?}: {e}", exec.command[0])),
            Ok(Ok(out)) if out.status.success() => Ok(None),
            Ok(Ok(out)) => {
                let err = String::from_utf8_lossy(&out.stderr);
                let tail: String = err
                    .chars()
                    .rev()
                    .take(300)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                Err(format!(
                    "the hook exited with {}: {}",
                    out.status,
                    tail.trim()
                ))
            }
        }
    }

    /// After an HAProxy reload (a new pid), its runtime servers are gone: put them back.
    async fn follow_reload(&self) {
        let Ok(info) = self.haproxy.show_info().await else {
            return;
        };
        let pid = Some(info.pid);
        let last = *self.haproxy_pid.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some() && last != pid {
            match self.desired.lock().await.reconcile(&self.haproxy).await {
                Ok(done) => tracing::info!(changes = done.len(), "haproxy reloaded; re-applied"),
                Err(e) => tracing::warn!(error = %e, "haproxy reloaded; re-applying failed"),
            }
        }
        *self.haproxy_pid.lock().unwrap_or_else(|e| e.into_inner()) = pid;
    }
}

/// Every `every`: scrapes each running instance and pushes its metrics: p99 latency (ms),
/// request rate and error ratio (from the counters' change) and memory (MB).
async fn claim(
    client: &mut Client,
    id: &str,
    orchestrator: &str,
    lease_ms: u64,
) -> Result<(), Status> {
    let req = pb::ClaimActionRequest {
        id: id.to_owned(),
        orchestrator: orchestrator.to_owned(),
        lease_ms,
    };
    client
        .call(|ch| {
            let req = req.clone();
            async move {
                ControlClient::new(ch).claim_action(req).await?;
                Ok(())
            }
        })
        .await
}

/// Which actions from the stream are handled: every one up to [`Progress::position`] is,
/// later ones may still be in flight. The position is what the agent saves and resumes after.
#[derive(Debug, Default)]
struct Progress {
    /// The highest sequence the stream brought.
    seen: u64,
    /// Sequences being carried out, with their action ids.
    in_flight: BTreeMap<u64, String>,
}

impl Progress {
    fn new(last: u64) -> Self {
        Self {
            seen: last,
            in_flight: BTreeMap::new(),
        }
    }

    /// Takes `seq` on, unless that action is in flight already (brought again after a
    /// reconnect, or offered again while this agent holds it).
    fn start(&mut self, seq: u64, id: &str, from_stream: bool) -> bool {
        if self.in_flight.values().any(|i| i == id) {
            return false;
        }
        if from_stream {
            self.seen = self.seen.max(seq);
        }
        self.in_flight.insert(seq, id.to_owned());
        true
    }

    fn finish(&mut self, seq: u64) {
        self.in_flight.remove(&seq);
    }

    /// Every action up to here is handled.
    fn position(&self) -> u64 {
        match self.in_flight.keys().next() {
            Some(&first) => self.seen.min(first.saturating_sub(1)),
            None => self.seen,
        }
    }
}

/// Actions being carried out: one lane per component (its actions in order), lanes at once.
struct Lanes {
    progress: Progress,
    lanes: HashMap<String, tokio::task::JoinHandle<()>>,
    done_tx: tokio::sync::mpsc::UnboundedSender<u64>,
    done: tokio::sync::mpsc::UnboundedReceiver<u64>,
}

/// Says an action is done when dropped, so a handler that panicked still frees its place.
struct Finished(u64, tokio::sync::mpsc::UnboundedSender<u64>);

impl Drop for Finished {
    fn drop(&mut self) {
        let _ = self.1.send(self.0);
    }
}

impl Lanes {
    fn new(last: u64) -> Self {
        let (done_tx, done) = tokio::sync::mpsc::unbounded_channel();
        Self {
            progress: Progress::new(last),
            lanes: HashMap::new(),
            done_tx,
            done,
        }
    }

    /// Carries `action` out after the ones before it on the same component.
    fn dispatch(&mut self, agent: &Arc<Agent>, action: pb::Action, from_stream: bool) {
        if !self.progress.start(action.seq, &action.id, from_stream) {
            return;
        }
        self.lanes.retain(|_, h| !h.is_finished());
        let before = self.lanes.remove(&action.target);
        let key = action.target.clone();
        let finished = Finished(action.seq, self.done_tx.clone());
        let agent = agent.clone();
        let task = tokio::spawn(async move {
            let _finished = finished;
            if let Some(before) = before {
                let _ = before.await;
            }
            agent.handle(action).await;
        });
        self.lanes.insert(key, task);
    }

    fn abort(&mut self) {
        for (_, lane) in self.lanes.drain() {
            lane.abort();
        }
    }
}

/// Renews a claim every third of its lease until aborted.
async fn renew_claim(mut client: Client, id: String, orchestrator: String, lease_ms: u64) {
    let every = Duration::from_millis((lease_ms / 3).max(1));
    loop {
        tokio::time::sleep(every).await;
        if let Err(e) = claim(&mut client, &id, &orchestrator, lease_ms).await {
            tracing::warn!(%id, error = %e, "lease not renewed");
        }
    }
}

async fn push_telemetry(mut client: Client, targets: Targets, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut prev: HashMap<String, (f64, f64, i64)> = HashMap::new();
    loop {
        tick.tick().await;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let list: Vec<(String, SocketAddr)> = targets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(n, a)| (n.clone(), *a))
            .collect();
        let mut samples = Vec::new();
        for (name, addr) in list {
            let Ok(r) = http::request(
                addr,
                hyper::Method::GET,
                "/metrics",
                Default::default(),
                Duration::from_millis(500),
            )
            .await
            else {
                continue;
            };
            let m = parse_metrics(&r.text());
            let mut push = |metric: &str, value: f64| {
                samples.push(pb::Sample {
                    component: name.clone(),
                    metric: metric.to_owned(),
                    timestamp_ms: now_ms,
                    value,
                })
            };
            if let Some(v) = m.get("latency_p99_seconds") {
                push("latency_p99_ms", v * 1e3);
            }
            if let Some(v) = m.get("memory_bytes") {
                push("memory_mb", v / 1e6);
            }
            let (req, err) = (
                m.get("requests_total").copied().unwrap_or(0.0),
                m.get("errors_total").copied().unwrap_or(0.0),
            );
            // The request rate goes out as the load metric (`requests_per_s`), which the
            // node sizes groups on but does not score for anomalies: it changes whenever
            // traffic is routed anew (a neighbour marked down, a shift, Augur's own), which
            // says nothing of whether the instance is about to fail.
            if let Some((r0, e0, t0)) = prev.insert(name.clone(), (req, err, now_ms)) {
                let errs = (err - e0).max(0.0);
                push(
                    "error_ratio",
                    if req > r0 { errs / (req - r0) } else { 0.0 },
                );
                if now_ms > t0 {
                    let per_s = (req - r0).max(0.0) * 1000.0 / (now_ms - t0) as f64;
                    push("requests_per_s", per_s);
                }
            }
        }
        if samples.is_empty() {
            continue;
        }
        let batch = pb::SampleBatch {
            samples,
            applied_index: 0,
        };
        let sent = client
            .call(|ch| {
                let batch = batch.clone();
                async move {
                    TelemetryClient::new(ch)
                        .push(tokio_stream::once(batch))
                        .await?;
                    Ok(())
                }
            })
            .await;
        if let Err(e) = sent {
            tracing::debug!(error = %e, "telemetry not pushed");
        }
    }
}

/// One replayed request: its status and body, or `None` when it failed outright; the
/// latency and outcome are added to `k`.
async fn call(addr: SocketAddr, path: &str, k: &mut augur_plan::Kpis) -> Option<(u16, Vec<u8>)> {
    k.requests += 1;
    match http::request(
        addr,
        hyper::Method::GET,
        path,
        Default::default(),
        Duration::from_secs(2),
    )
    .await
    {
        Ok(r) => {
            k.latencies_ms.push(r.latency.as_secs_f64() * 1e3);
            if r.status >= 500 {
                k.errors += 1;
            }
            Some((r.status, r.body.to_vec()))
        }
        Err(_) => {
            k.errors += 1;
            None
        }
    }
}

/// The keys of an instance's state, to replay reads of them.
/// Drains `original` in `desired`. A promoted `shadow` that is still at weight 0 takes its
/// share: when the cluster held no weights for the service (nothing was shifted), the
/// original's share here is all the traffic it had, and the shadow, added at weight 0, would
/// otherwise get none. Answers the shadow that took it over, if one did.
fn drain_to(desired: &mut Desired, original: &str, shadow: Option<&String>) -> Option<String> {
    let share = desired.get(original).map_or(0, |s| s.weight);
    let heir = shadow
        .filter(|s| share > 0 && desired.get(s).is_some_and(|d| d.weight == 0))
        .cloned();
    desired.set_weight(original, 0);
    desired.set_state(original, State::Drain);
    if let Some(heir) = &heir {
        tracing::info!(%original, shadow = %heir, weight = share, "the promoted shadow takes the original's share");
        desired.set_weight(heir, share);
        desired.set_state(heir, State::Ready);
    }
    heir
}

/// The first 64 keys of the state `name` at `addr` serves.
async fn state_keys(addr: SocketAddr, name: &str) -> Result<Vec<String>, String> {
    let r = http::get(addr, "/state")
        .await
        .map_err(|e| format!("reading {name}'s state: {e}"))?;
    if !r.is_success() {
        return Err(format!("{name} answered {} to GET /state", r.status));
    }
    let snap: crate::sample::Snapshot =
        serde_json::from_slice(&r.body).map_err(|e| format!("{name}'s state: {e}"))?;
    Ok(snap.entries.keys().take(64).cloned().collect())
}

/// `a=1,b=2` → the weights.
/// Replayed validation requests in flight at once (each to the original, the shadow and the
/// noise reference together).
const VALIDATE_IN_FLIGHT: usize = 8;

/// The `version` of a state snapshot (a JSON object).
fn snapshot_version(body: &[u8]) -> Result<u64, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    v.get("version")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| "no numeric \"version\" field".to_owned())
}

pub fn parse_weights(s: &str) -> Result<BTreeMap<String, u32>, String> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p
                .split_once('=')
                .ok_or_else(|| format!("weights: {p:?} is not NAME=WEIGHT"))?;
            let v = v
                .parse()
                .map_err(|_| format!("weights: {v:?} of {k} is not a number"))?;
            Ok((k.to_owned(), v))
        })
        .collect()
}

fn read_last_seq(path: &Path) -> anyhow::Result<u64> {
    match std::fs::read_to_string(path) {
        Ok(s) => s.trim().parse().map_err(|_| {
            anyhow::anyhow!("{}: not a sequence number: {:?}", path.display(), s.trim())
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(anyhow::anyhow!("reading {}: {e}", path.display())),
    }
}

/// Saves the last handled sequence number (write a temporary file, then rename it).
fn write_last_seq(path: &Path, seq: u64) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{seq}\n"))
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| anyhow::anyhow!("saving the last sequence to {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Result<AgentConfig, String> {
        let text = format!(
            r#"
name = "agent-1"
endpoints = ["127.0.0.1:7101"]
state_file = "/tmp/x"
[haproxy]
socket = "/tmp/h.sock"
backend = "web"
[instances]
command = ["augur", "sample", "--port", "{{port}}"]
port_range = [21000, 21100]
[placement]
host = "h1"
rack = "r1"
zone = "z1"
{extra}"#
        );
        let cfg: AgentConfig = toml::from_str(&text).map_err(|e| e.to_string())?;
        let p = cfg.problems();
        if p.is_empty() {
            Ok(cfg)
        } else {
            Err(p.join("\n"))
        }
    }

    #[test]
    fn a_minimal_config_takes_every_kind_but_scale() {
        let cfg = config("").unwrap();
        assert_eq!(cfg.capabilities.len(), 8);
        assert!(!cfg.capabilities.contains(&"scale".to_string()));
        assert_eq!(cfg.gate.max_window_ms, 30_000);
    }

    #[test]
    fn every_problem_is_listed_at_once() {
        let err = config(
            "[exec]\ncommand = []\nkinds = [\"teleport\"]\n[validate]\nrequests = 0\nmax_mismatch = 2.0\nmin_latency_ratio = 0.5\n",
        )
        .unwrap_err();
        for want in [
            "exec.command is empty",
            "unknown kind \"teleport\"",
            "validate: requests",
            "min_latency_ratio 0.5 (≥ 1 expected)",
        ] {
            assert!(err.contains(want), "{want} missing from {err}");
        }
        let unknown = config("colour = \"red\"\n").unwrap_err();
        assert!(unknown.contains("unknown field"), "{unknown}");
    }

    #[test]
    fn the_example_config_loads() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../cluster-configs/agent/agent.toml");
        let cfg = AgentConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.instances.start.len(), 3);
    }

    #[test]
    fn weights_parse_and_bad_ones_are_named() {
        let w = parse_weights("a=1,b.shadow-2=99").unwrap();
        assert_eq!(w["b.shadow-2"], 99);
        assert!(parse_weights("a=x").unwrap_err().contains("\"x\" of a"));
        assert!(parse_weights("a").unwrap_err().contains("NAME=WEIGHT"));
    }

    #[test]
    fn the_position_waits_for_the_oldest_action_in_flight() {
        let mut p = Progress::new(4);
        assert_eq!(p.position(), 4);
        assert!(p.start(5, "a5", true));
        assert!(p.start(6, "a6", true));
        assert!(p.start(7, "a7", true));
        assert_eq!(p.position(), 4);
        // 6 and 7 end first: 5 still holds the position.
        p.finish(7);
        p.finish(6);
        assert_eq!(p.position(), 4);
        p.finish(5);
        assert_eq!(p.position(), 7);
        // Brought again while in flight: not taken twice.
        assert!(p.start(8, "a8", true));
        assert!(!p.start(8, "a8", true));
        // An older one offered again (a lapsed lease) holds the position back while it runs.
        assert!(p.start(3, "a3", false));
        assert_eq!(p.position(), 2);
        p.finish(3);
        p.finish(8);
        assert_eq!(p.position(), 8);
    }

    #[test]
    fn the_last_sequence_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seq");
        assert_eq!(read_last_seq(&path).unwrap(), 0);
        write_last_seq(&path, 42).unwrap();
        assert_eq!(read_last_seq(&path).unwrap(), 42);
        std::fs::write(&path, "x").unwrap();
        assert!(read_last_seq(&path)
            .unwrap_err()
            .to_string()
            .contains("not a sequence"));
    }
}

//! The side-by-side experiment: one fault schedule, played against a real HAProxy in front
//! of real `augur-sample` processes under steady open-loop load, counting failed requests
//! and latency.
//!
//! [`run`] starts the instances of a [`Schedule`], HAProxy with each of them as a static
//! server of backend `app` (HTTP health checks on `/health`, by default
//! `check inter 1s fall 3 rise 2`), and the load ([`crate::loadgen`]) at time zero; it then
//! applies each [`Fault`] at its time by calling the instance directly (`POST /degrade` or
//! `POST /crash`), waits for the load schedule to end and writes a [`ScenarioReport`].
//! Crashed instances are not restarted.
//!
//! Failures are honest: `option redispatch` is off and `retries` is left at HAProxy's
//! default (3 connection retries, on the same server), so a request sent to a dead server
//! fails (HAProxy answers 503) until the health checks take the server out, and one in
//! flight when a server dies fails too (502).
//!
//! # Modes
//!
//! A [`Mode`] is what acts on top of HAProxy's own checks. [`Mode::reactive`] adds nothing:
//! the baseline. Another mode (Augur's node and agent) plugs in with [`Mode::with_hook`]:
//! its [`ModeHook::on_started`] is called once HAProxy, the instances and the load run,
//! before the first fault is due, with a [`RunEnv`] naming the instances, their ports, the
//! backend and HAProxy's admin socket; the hook keeps whatever it starts inside itself until
//! [`ModeHook::on_finished`], called when the load has ended and before anything is torn
//! down. The runner never assumes it owns HAProxy's server list: servers added, drained or
//! re-weighted at runtime by a hook are counted by the `x-instance` header of the answers.

use std::collections::BTreeSet;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use hyper::body::Bytes;
use hyper::Method;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::haproxy::{HaproxyClient, HaproxyConfig, HaproxyError, HaproxyProcess, HealthCheck};
use crate::http;
use crate::loadgen::{self, LoadConfig, LoadError, LoadReport};
use crate::process::{free_local_port, Instance, InstanceSpec, Instances, ProcessError};

/// Length of the bench schedule [`Schedule::bench`] is written for.
pub const BENCH_SECONDS: f64 = 150.0;
/// How long after a crash failures are still counted in the fault's window.
pub const WINDOW_TAIL: Duration = Duration::from_secs(10);
/// Deadline of the request that injects a fault.
const FAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an instance may take to exit once its crash is due.
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long HAProxy may take to report every server UP before the load starts.
const SERVERS_UP_TIMEOUT: Duration = Duration::from_secs(10);
/// Poll interval of that wait (a bounded poll on a condition).
const SERVERS_UP_POLL: Duration = Duration::from_millis(50);

/// What a fault does to its instance.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum FaultKind {
    /// `POST /degrade`: latency and errors ramp up over `ramp_s` (the health check fails
    /// only once the ramp is complete), and the process exits `crash_after_s` after the start.
    DegradeThenCrash { ramp_s: f64, crash_after_s: f64 },
    /// `POST /crash`: the process exits at once.
    Sudden,
}

impl FaultKind {
    /// Seconds from the fault's start to the process exit.
    pub fn crash_after_s(self) -> f64 {
        match self {
            FaultKind::DegradeThenCrash { crash_after_s, .. } => crash_after_s,
            FaultKind::Sudden => 0.0,
        }
    }

    /// `degrade_then_crash` or `sudden`.
    pub fn label(self) -> &'static str {
        match self {
            FaultKind::DegradeThenCrash { .. } => "degrade_then_crash",
            FaultKind::Sudden => "sudden",
        }
    }
}

/// One fault: at `at_s` seconds after the load starts, `kind` happens to `instance`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    pub at_s: f64,
    pub instance: String,
    #[serde(flatten)]
    pub kind: FaultKind,
}

impl Fault {
    /// The window its failures are counted in: `[at, at + crash_after + WINDOW_TAIL)`,
    /// clipped to the run. Windows of overlapping faults overlap.
    pub fn window(&self, duration_s: f64) -> (f64, f64) {
        let end = self.at_s + self.kind.crash_after_s() + WINDOW_TAIL.as_secs_f64();
        (self.at_s, end.min(duration_s))
    }
}

/// The instances of a run, its length, and the faults played against it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// Instance names, each a server of the backend.
    pub instances: Vec<String>,
    /// Seconds of load.
    pub duration_s: f64,
    /// At most one per instance (a crashed instance is not restarted).
    pub faults: Vec<Fault>,
}

fn seconds_ok(s: f64) -> bool {
    s.is_finite() && s >= 0.0
}

impl Schedule {
    /// The bench schedule, written for [`BENCH_SECONDS`] and scaled to `duration_s` (every
    /// time, ramp and crash delay alike): six instances `web-1`..`web-6`, three
    /// degrade-then-crash faults (ramp 40 s, crash after 60 s) on `web-1`, `web-3`, `web-5`
    /// at 10, 45 and 80 s, two sudden crashes on `web-2` and `web-4` at 30 and 75 s, and
    /// `web-6` untouched. HAProxy's detection time (about `fall × inter`) does not scale, so
    /// much shorter runs favour the reactive baseline less than they seem to.
    pub fn bench(duration_s: f64) -> Self {
        let k = duration_s / BENCH_SECONDS;
        let degrade = FaultKind::DegradeThenCrash {
            ramp_s: 40.0 * k,
            crash_after_s: 60.0 * k,
        };
        let fault = |at_s: f64, instance: &str, kind| Fault {
            at_s: at_s * k,
            instance: instance.to_owned(),
            kind,
        };
        Self {
            instances: (1..=6).map(|i| format!("web-{i}")).collect(),
            duration_s,
            faults: vec![
                fault(10.0, "web-1", degrade),
                fault(30.0, "web-2", FaultKind::Sudden),
                fault(45.0, "web-3", degrade),
                fault(75.0, "web-4", FaultKind::Sudden),
                fault(80.0, "web-5", degrade),
            ],
        }
    }

    /// The same faults `warmup_s` later, and the run that much longer: steady load first, so
    /// a monitor starts its faults with some history (the reactive baseline is not affected).
    pub fn delayed(mut self, warmup_s: f64) -> Self {
        for f in &mut self.faults {
            f.at_s += warmup_s;
        }
        self.duration_s += warmup_s;
        self
    }

    /// Checks the schedule and lists every problem at once.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if self.instances.is_empty() {
            problems.push("no instances".to_owned());
        }
        let mut names = BTreeSet::new();
        for name in &self.instances {
            let valid = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !valid {
                problems.push(format!(
                    "instance name {name:?}: only 1 to 64 ASCII letters, digits, '-', '_', '.'"
                ));
            }
            if !names.insert(name.as_str()) {
                problems.push(format!("instance {name} listed twice"));
            }
        }
        if !(self.duration_s.is_finite() && self.duration_s > 0.0) {
            problems.push(format!(
                "duration_s must be positive, got {}",
                self.duration_s
            ));
        }
        let mut faulted = BTreeSet::new();
        for (i, f) in self.faults.iter().enumerate() {
            let at = format!("fault {i} ({} on {})", f.kind.label(), f.instance);
            if !seconds_ok(f.at_s) || f.at_s >= self.duration_s {
                problems.push(format!(
                    "{at}: at_s must be within 0..{}, got {}",
                    self.duration_s, f.at_s
                ));
            }
            if !names.contains(f.instance.as_str()) {
                problems.push(format!("{at}: no instance named {}", f.instance));
            }
            if !faulted.insert(f.instance.as_str()) {
                problems.push(format!(
                    "{at}: {} already has a fault (crashed instances are not restarted)",
                    f.instance
                ));
            }
            if let FaultKind::DegradeThenCrash {
                ramp_s,
                crash_after_s,
            } = f.kind
            {
                if !seconds_ok(ramp_s) || !seconds_ok(crash_after_s) {
                    problems.push(format!(
                        "{at}: ramp_s and crash_after_s must be non-negative seconds, got \
                         {ramp_s} and {crash_after_s}"
                    ));
                }
            }
        }
        if !names.is_empty() && names.iter().all(|n| faulted.contains(n)) {
            problems.push("every instance has a fault: nothing would be left to serve".to_owned());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

/// A boxed future, for [`ModeHook`]'s methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
/// The error a [`ModeHook`] may return.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a run tells a mode: where everything is.
#[derive(Debug, Clone)]
pub struct RunEnv {
    /// HAProxy's HTTP frontend (where the load goes).
    pub frontend: std::net::SocketAddr,
    /// The backend every instance is a server of (`app`).
    pub backend: String,
    /// HAProxy's admin socket, and a client for it.
    pub haproxy_socket: PathBuf,
    pub haproxy: HaproxyClient,
    /// The scheduled instances; each is a static server of the same name.
    pub instances: Vec<Instance>,
    /// The spec the instances were started from, to start more the same way. Use a port
    /// range disjoint from `instance_spec.port_range` for them.
    pub instance_spec: InstanceSpec,
    /// The health checks HAProxy runs on every static server.
    pub health_check: HealthCheck,
    pub schedule: Schedule,
    /// Time zero of the schedule (when load request 0 was due).
    pub started: Instant,
    /// The run's scratch directory (HAProxy's config, socket and log are there).
    pub work_dir: PathBuf,
}

/// A mode's part in a run. See the [module docs](self) for when each method is called.
pub trait ModeHook: Send {
    /// Called once HAProxy, every instance and the load run, before the first fault is
    /// due. Start what the mode needs and keep it in `self`; return promptly (faults due
    /// meanwhile are applied late, as their `applied_at_s` shows). An error aborts the run.
    fn on_started<'a>(&'a mut self, env: &'a RunEnv) -> BoxFuture<'a, Result<(), BoxError>>;

    /// Called once the load has ended, before HAProxy and the instances are stopped. What it
    /// returns goes into the report's `mode_notes`; the hook is dropped right after.
    fn on_finished(&mut self) -> BoxFuture<'_, serde_json::Value>;
}

/// What acts on top of HAProxy's health checks during a run.
pub struct Mode {
    name: String,
    hook: Option<Box<dyn ModeHook>>,
}

impl std::fmt::Debug for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mode")
            .field("name", &self.name)
            .field("hook", &self.hook.is_some())
            .finish()
    }
}

impl Mode {
    /// HAProxy's own health checks alone: the baseline.
    pub fn reactive() -> Self {
        Self {
            name: "reactive".to_owned(),
            hook: None,
        }
    }

    /// A mode named `name` whose `hook` acts during the run.
    pub fn with_hook(name: impl Into<String>, hook: Box<dyn ModeHook>) -> Self {
        Self {
            name: name.into(),
            hook: Some(hook),
        }
    }

    /// The name the report carries.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Everything [`run`] needs besides the mode.
#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioConfig {
    pub schedule: Schedule,
    /// Load, in requests per second.
    pub rate: u32,
    /// Deadline of one load request.
    pub request_timeout: Duration,
    /// Passed to every instance as `--seed`.
    pub seed: u64,
    /// The `augur-sample` binary.
    pub sample_binary: PathBuf,
    /// Ports the scheduled instances are picked from.
    pub port_range: (u16, u16),
    /// HAProxy's checks on every server.
    pub health_check: HealthCheck,
    /// Weight of every static server.
    pub weight: u16,
    /// Scratch directory (created if missing): HAProxy's config, socket and log.
    pub work_dir: PathBuf,
}

impl ScenarioConfig {
    /// 200 req/s, 2 s request deadline, seed 0, ports 20000..=29999,
    /// `check inter 1s fall 3 rise 2`, weight 10.
    pub fn new(schedule: Schedule, sample_binary: PathBuf, work_dir: PathBuf) -> Self {
        Self {
            schedule,
            rate: 200,
            request_timeout: Duration::from_secs(2),
            seed: 0,
            sample_binary,
            port_range: (20000, 29999),
            health_check: HealthCheck::default(),
            weight: 10,
            work_dir,
        }
    }

    fn instance_spec(&self) -> InstanceSpec {
        InstanceSpec {
            port_range: self.port_range,
            ..InstanceSpec::new(vec![
                self.sample_binary.display().to_string(),
                "--port".to_owned(),
                "{port}".to_owned(),
                "--name".to_owned(),
                "{name}".to_owned(),
                "--seed".to_owned(),
                self.seed.to_string(),
            ])
        }
    }

    fn load_config(&self, frontend: std::net::SocketAddr) -> LoadConfig {
        LoadConfig {
            timeout: self.request_timeout,
            ..LoadConfig::new(
                frontend,
                self.rate,
                Duration::from_secs_f64(self.schedule.duration_s),
            )
        }
    }
}

/// Why a run could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("invalid scenario: {}", .problems.join("; "))]
    InvalidConfig { problems: Vec<String> },
    #[error("scratch directory {dir}: {source}")]
    WorkDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("starting instances: {0}")]
    Instance(#[from] ProcessError),
    #[error("haproxy: {0}")]
    Haproxy(#[from] HaproxyError),
    #[error("haproxy did not report every server UP within {timeout:?}; last: {last}")]
    ServersNotUp { timeout: Duration, last: String },
    #[error("load: {0}")]
    Load(#[from] LoadError),
    #[error("mode {mode} failed to start: {source}")]
    Mode {
        mode: String,
        #[source]
        source: BoxError,
    },
}

/// A scheduled instance as it ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    pub name: String,
    pub port: u16,
    pub pid: u32,
}

/// One fault as it happened and what it cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultReport {
    #[serde(flatten)]
    pub fault: Fault,
    /// When it was actually injected (seconds since time zero); `None` if injection failed.
    pub applied_at_s: Option<f64>,
    /// Why injection failed, if it did.
    pub error: Option<String>,
    /// `[from, to)` seconds: see [`Fault::window`].
    pub window_s: (f64, f64),
    /// Load requests due in the window, and how many of them failed (through any server).
    /// Windows of overlapping faults overlap, so these do not add up to the total.
    pub sent_in_window: u64,
    pub failed_in_window: u64,
    /// Failed requests the faulty instance itself answered (its injected 5xx errors).
    pub failed_answered_by_instance: u64,
    /// Failed requests charged to this fault alone, see [`attribute_failures`]; these and
    /// the report's `failed_unattributed` add up to its `failed`.
    pub failed_attributed: u64,
    /// The instance's exit code, if it exited before the end of the run.
    pub exit_code: Option<i32>,
}

/// A server of the backend as HAProxy saw it at the end (including any added at runtime).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerSummary {
    pub name: String,
    /// `UP`, `DOWN`, `MAINT`, …
    pub status: String,
    /// Sessions it served.
    pub stot: u64,
    pub hrsp_5xx: u64,
    /// Connection errors and response errors HAProxy counted against it.
    pub econ: u64,
    pub eresp: u64,
}

/// The outcome of a run, as written to JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScenarioReport {
    pub mode: String,
    pub seed: u64,
    pub rate: u32,
    pub duration_s: f64,
    /// The check keywords on every static server, e.g. `check inter 1000ms fall 3 rise 2`.
    pub health_check: String,
    /// How HAProxy retries: spelled out so a reader knows failures were not hidden.
    pub retries: String,
    pub redispatch: bool,
    pub schedule: Schedule,
    pub instances: Vec<InstanceInfo>,
    pub haproxy_pid: Option<u32>,
    /// Failed requests in total, and the 99th percentile latency of successful and of all
    /// requests: the headline figures (also inside `load`).
    pub failed: u64,
    pub p99_ok_ms: f64,
    pub p99_all_ms: f64,
    pub faults: Vec<FaultReport>,
    /// Failures [`attribute_failures`] charged to no fault.
    pub failed_unattributed: u64,
    pub load: LoadReport,
    pub haproxy_servers: Vec<ServerSummary>,
    /// What the mode's hook returned ([`serde_json::Value::Null`] for reactive).
    pub mode_notes: serde_json::Value,
}

fn secs_since(start: Instant) -> f64 {
    Instant::now()
        .saturating_duration_since(start)
        .as_secs_f64()
}

/// Charges every failed request to at most one fault: one answered by a faulty instance
/// (its injected errors) to that instance's fault; any other (no answer, or HAProxy's own
/// 502/503/504, which name no instance) to the fault, among those whose [`Fault::window`]
/// holds the request's due time, with the latest event (its start, or its crash for a
/// degrade-then-crash fault) at or before that time. Returns the count per fault, in
/// schedule order, and the failures charged to none.
pub fn attribute_failures(
    faults: &[Fault],
    duration_s: f64,
    rate: u32,
    records: &[loadgen::RequestRecord],
) -> (Vec<u64>, u64) {
    let mut per_fault = vec![0; faults.len()];
    let mut unattributed = 0;
    let rate = f64::from(rate.max(1));
    for r in records.iter().filter(|r| r.outcome.is_failure()) {
        let own = r
            .instance
            .as_deref()
            .and_then(|name| faults.iter().position(|f| f.instance == name));
        let due = r.index as f64 / rate;
        let latest_event = || {
            faults
                .iter()
                .enumerate()
                .filter_map(|(i, f)| {
                    let (from, to) = f.window(duration_s);
                    if !(from..to).contains(&due) {
                        return None;
                    }
                    let crash = f.at_s + f.kind.crash_after_s();
                    let event = if crash <= due { crash } else { f.at_s };
                    Some((i, event))
                })
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .map(|(i, _)| i)
        };
        match own.or_else(latest_event) {
            Some(i) => per_fault[i] += 1,
            None => unattributed += 1,
        }
    }
    (per_fault, unattributed)
}

/// Injects `fault` into `instance` by calling it directly.
async fn inject(instance: &Instance, kind: FaultKind) -> Result<(), String> {
    match kind {
        FaultKind::DegradeThenCrash {
            ramp_s,
            crash_after_s,
        } => {
            let path = format!("/degrade?ramp_s={ramp_s}&crash_after_s={crash_after_s}");
            let response = http::request(
                instance.addr(),
                Method::POST,
                &path,
                Bytes::new(),
                FAULT_REQUEST_TIMEOUT,
            )
            .await
            .map_err(|e| e.to_string())?;
            if response.is_success() {
                Ok(())
            } else {
                Err(format!(
                    "POST {path} answered {}: {}",
                    response.status,
                    response.text().trim()
                ))
            }
        }
        FaultKind::Sudden => {
            // A crash answers nothing: the connection breaks (or the deadline passes).
            match http::request(
                instance.addr(),
                Method::POST,
                "/crash",
                Bytes::new(),
                FAULT_REQUEST_TIMEOUT,
            )
            .await
            {
                Ok(response) => Err(format!(
                    "POST /crash answered {} instead of crashing",
                    response.status
                )),
                Err(_) => Ok(()),
            }
        }
    }
}

/// Polls HAProxy until every server of `backend` named in `names` is UP.
async fn wait_servers_up(
    client: &HaproxyClient,
    backend: &str,
    names: &[String],
) -> Result<(), ScenarioError> {
    let deadline = Instant::now() + SERVERS_UP_TIMEOUT;
    loop {
        let last = match client.show_stat().await {
            Ok(rows) => {
                let not_up: Vec<String> = names
                    .iter()
                    .filter(|name| {
                        !rows.iter().any(|r| {
                            r.is_server()
                                && r.pxname == backend
                                && &r.svname == *name
                                && r.status.starts_with("UP")
                        })
                    })
                    .cloned()
                    .collect();
                if not_up.is_empty() {
                    return Ok(());
                }
                format!("not UP: {}", not_up.join(", "))
            }
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(ScenarioError::ServersNotUp {
                timeout: SERVERS_UP_TIMEOUT,
                last,
            });
        }
        tokio::time::sleep(SERVERS_UP_POLL).await;
    }
}

/// Runs `config.schedule` in `mode` and reports. Everything started here is stopped before
/// this returns, on success and on error alike (on error, by drop).
pub async fn run(config: ScenarioConfig, mut mode: Mode) -> Result<ScenarioReport, ScenarioError> {
    let mut problems = config.schedule.validate().err().unwrap_or_default();
    if config.rate == 0 {
        problems.push("rate must be at least 1 request per second".to_owned());
    }
    if config.weight == 0 || config.weight > 256 {
        problems.push(format!(
            "weight must be within 1..=256, got {}",
            config.weight
        ));
    }
    if !problems.is_empty() {
        return Err(ScenarioError::InvalidConfig { problems });
    }
    let schedule = config.schedule.clone();
    std::fs::create_dir_all(&config.work_dir).map_err(|source| ScenarioError::WorkDir {
        dir: config.work_dir.clone(),
        source,
    })?;

    let spec = config.instance_spec();
    let mut instances = Instances::new(spec.clone());
    let mut haproxy_config =
        HaproxyConfig::new(free_local_port().map_err(|source| ScenarioError::WorkDir {
            dir: config.work_dir.clone(),
            source,
        })?)
        .with_health_check(config.health_check.clone());
    // Stated for the reader: no redispatch, HAProxy's default retries.
    haproxy_config.redispatch = false;
    haproxy_config.retries = None;
    let mut started_instances = Vec::new();
    for name in &schedule.instances {
        let instance = instances.start(name).await?;
        haproxy_config = haproxy_config.server(name.clone(), instance.addr(), config.weight);
        started_instances.push(instance);
    }
    let mut haproxy = HaproxyProcess::start(haproxy_config, &config.work_dir).await?;
    let client = haproxy.client();
    let backend = haproxy.config().backend.clone();
    wait_servers_up(&client, &backend, &schedule.instances).await?;

    let load = loadgen::start(config.load_config(haproxy.frontend_addr()))?;
    let started = load.started();
    tracing::info!(
        mode = mode.name(),
        rate = config.rate,
        duration_s = schedule.duration_s,
        "load started"
    );
    let env = RunEnv {
        frontend: haproxy.frontend_addr(),
        backend: backend.clone(),
        haproxy_socket: client.socket_path().to_owned(),
        haproxy: client.clone(),
        instances: started_instances.clone(),
        instance_spec: spec,
        health_check: config.health_check.clone(),
        schedule: schedule.clone(),
        started,
        work_dir: config.work_dir.clone(),
    };
    if let Some(hook) = mode.hook.as_mut() {
        hook.on_started(&env)
            .await
            .map_err(|source| ScenarioError::Mode {
                mode: mode.name.clone(),
                source,
            })?;
    }

    let mut order: Vec<usize> = (0..schedule.faults.len()).collect();
    order.sort_by(|&a, &b| schedule.faults[a].at_s.total_cmp(&schedule.faults[b].at_s));
    let mut applied: Vec<(Option<f64>, Option<String>, Option<i32>)> =
        vec![(None, None, None); schedule.faults.len()];
    for i in order {
        let fault = &schedule.faults[i];
        // Pacing by the schedule's clock, not synchronisation.
        tokio::time::sleep_until(started + Duration::from_secs_f64(fault.at_s)).await;
        let Some(instance) = instances.get(&fault.instance).cloned() else {
            applied[i].1 = Some(format!("instance {} is gone", fault.instance));
            continue;
        };
        let at = secs_since(started);
        match inject(&instance, fault.kind).await {
            Ok(()) => {
                tracing::warn!(instance = %fault.instance, kind = fault.kind.label(), at_s = at, "fault injected");
                applied[i].0 = Some(at);
                if fault.kind == FaultKind::Sudden {
                    match instances.wait_exit(&fault.instance, EXIT_TIMEOUT).await {
                        Ok(status) => applied[i].2 = status.code(),
                        Err(e) => applied[i].1 = Some(e.to_string()),
                    }
                }
            }
            Err(e) => applied[i].1 = Some(e),
        }
    }

    let load = load.finish().await;
    let mode_notes = match mode.hook.as_mut() {
        Some(hook) => hook.on_finished().await,
        None => serde_json::Value::Null,
    };
    drop(mode.hook.take());

    // Degrade faults whose crash was due before the end must have exited by now.
    for (i, fault) in schedule.faults.iter().enumerate() {
        let due = fault.at_s + fault.kind.crash_after_s();
        let pending = applied[i].0.is_some() && applied[i].2.is_none() && applied[i].1.is_none();
        if pending && due < schedule.duration_s && instances.get(&fault.instance).is_some() {
            match instances.wait_exit(&fault.instance, EXIT_TIMEOUT).await {
                Ok(status) => applied[i].2 = status.code(),
                Err(e) => applied[i].1 = Some(e.to_string()),
            }
        }
    }
    let haproxy_servers = match client.show_stat().await {
        Ok(rows) => rows
            .into_iter()
            .filter(|r| r.is_server() && r.pxname == backend)
            .map(|r| ServerSummary {
                name: r.svname,
                status: r.status,
                stot: r.stot,
                hrsp_5xx: r.hrsp_5xx,
                econ: r.econ,
                eresp: r.eresp,
            })
            .collect(),
        Err(error) => {
            tracing::warn!(%error, "final show stat");
            Vec::new()
        }
    };
    let haproxy_pid = haproxy.pid();
    if let Err(error) = instances.stop_all().await {
        tracing::warn!(%error, "stopping instances");
    }
    haproxy.stop().await;

    let (attributed, failed_unattributed) = attribute_failures(
        &schedule.faults,
        schedule.duration_s,
        config.rate,
        &load.records,
    );
    let faults: Vec<FaultReport> = schedule
        .faults
        .iter()
        .zip(applied)
        .zip(attributed)
        .map(
            |((fault, (applied_at_s, error, exit_code)), failed_attributed)| {
                let window_s = fault.window(schedule.duration_s);
                let (sent_in_window, failed_in_window) = load.between(
                    Duration::from_secs_f64(window_s.0),
                    Duration::from_secs_f64(window_s.1),
                );
                FaultReport {
                    fault: fault.clone(),
                    applied_at_s,
                    error,
                    window_s,
                    sent_in_window,
                    failed_in_window,
                    failed_answered_by_instance: load
                        .by_instance
                        .get(&fault.instance)
                        .map_or(0, |c| c.failed),
                    failed_attributed,
                    exit_code,
                }
            },
        )
        .collect();
    Ok(ScenarioReport {
        mode: mode.name,
        seed: config.seed,
        rate: config.rate,
        duration_s: schedule.duration_s,
        health_check: config.health_check.keywords(),
        retries: "haproxy default: 3 connection retries on the same server, no redispatch"
            .to_owned(),
        redispatch: false,
        instances: started_instances
            .iter()
            .map(|i| InstanceInfo {
                name: i.name.clone(),
                port: i.port,
                pid: i.pid,
            })
            .collect(),
        haproxy_pid,
        failed: load.failed,
        p99_ok_ms: load.latency_ok.p99_ms,
        p99_all_ms: load.latency_all.p99_ms,
        faults,
        failed_unattributed,
        schedule,
        load,
        haproxy_servers,
        mode_notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_schedule_is_valid_and_scales() {
        let full = Schedule::bench(BENCH_SECONDS);
        full.validate().unwrap();
        assert_eq!(full.instances.len(), 6);
        let kinds: Vec<&str> = full.faults.iter().map(|f| f.kind.label()).collect();
        assert_eq!(
            kinds.iter().filter(|k| **k == "degrade_then_crash").count(),
            3
        );
        assert_eq!(kinds.iter().filter(|k| **k == "sudden").count(), 2);
        // Every degrade crash happens within the run, and its window ends by the end.
        for f in &full.faults {
            assert!(f.at_s + f.kind.crash_after_s() < full.duration_s, "{f:?}");
        }
        assert_eq!(full.faults[4].window(full.duration_s), (80.0, 150.0));

        let short = Schedule::bench(15.0);
        short.validate().unwrap();
        assert_eq!(short.faults[0].at_s, 1.0);
        assert_eq!(
            short.faults[0].kind,
            FaultKind::DegradeThenCrash {
                ramp_s: 4.0,
                crash_after_s: 6.0
            }
        );
    }

    #[test]
    fn validation_reports_every_problem() {
        let schedule = Schedule {
            instances: vec!["a".into(), "a".into(), "b c".into()],
            duration_s: 10.0,
            faults: vec![
                Fault {
                    at_s: 12.0,
                    instance: "zz".into(),
                    kind: FaultKind::Sudden,
                },
                Fault {
                    at_s: 1.0,
                    instance: "a".into(),
                    kind: FaultKind::DegradeThenCrash {
                        ramp_s: -1.0,
                        crash_after_s: 2.0,
                    },
                },
                Fault {
                    at_s: 2.0,
                    instance: "a".into(),
                    kind: FaultKind::Sudden,
                },
            ],
        };
        assert_eq!(
            schedule.validate().unwrap_err(),
            [
                "instance a listed twice",
                "instance name \"b c\": only 1 to 64 ASCII letters, digits, '-', '_', '.'",
                "fault 0 (sudden on zz): at_s must be within 0..10, got 12",
                "fault 0 (sudden on zz): no instance named zz",
                "fault 1 (degrade_then_crash on a): ramp_s and crash_after_s must be \
                 non-negative seconds, got -1 and 2",
                "fault 2 (sudden on a): a already has a fault (crashed instances are not \
                 restarted)",
            ]
        );
    }

    #[test]
    fn schedule_round_trips_through_json() {
        let schedule = Schedule::bench(BENCH_SECONDS);
        let json = serde_json::to_string(&schedule).unwrap();
        assert!(json.contains(
            r#"{"at_s":10.0,"instance":"web-1","kind":"degrade_then_crash","ramp_s":40.0,"crash_after_s":60.0}"#
        ));
        let back: Schedule = serde_json::from_str(&json).unwrap();
        assert_eq!(back, schedule);
        let bad = r#"{"instances":["a"],"duration_s":1,"faults":[],"extra":1}"#;
        assert!(serde_json::from_str::<Schedule>(bad).is_err());
    }

    #[test]
    fn failures_are_charged_to_one_fault_each() {
        use crate::loadgen::{Outcome, RequestRecord};
        // "d" degrades at 0 and crashes at 20; "s" crashes at 10. Windows: [0, 30), [10, 20).
        let faults = [
            Fault {
                at_s: 0.0,
                instance: "d".into(),
                kind: FaultKind::DegradeThenCrash {
                    ramp_s: 5.0,
                    crash_after_s: 20.0,
                },
            },
            Fault {
                at_s: 10.0,
                instance: "s".into(),
                kind: FaultKind::Sudden,
            },
        ];
        let failure = |second: u64, outcome, instance: Option<&str>| RequestRecord {
            index: second,
            latency: Duration::from_millis(1),
            outcome,
            instance: instance.map(str::to_owned),
        };
        let records = [
            failure(5, Outcome::Status(500), Some("d")),
            failure(11, Outcome::Status(500), Some("d")),
            failure(11, Outcome::Timeout, None),
            failure(21, Outcome::Status(502), None),
            failure(21, Outcome::Ok, None),
            failure(12, Outcome::Status(503), Some("healthy")),
            failure(35, Outcome::Connect, None),
        ];
        // Rate 1: index = due second. Run of 40 s.
        let (per_fault, none) = attribute_failures(&faults, 40.0, 1, &records);
        assert_eq!(per_fault, [3, 2]);
        assert_eq!(none, 1);
    }

    #[test]
    fn windows_run_past_the_crash_and_clip_to_the_run() {
        let f = Fault {
            at_s: 4.0,
            instance: "s".into(),
            kind: FaultKind::DegradeThenCrash {
                ramp_s: 3.0,
                crash_after_s: 5.0,
            },
        };
        assert_eq!(f.window(100.0), (4.0, 19.0));
        assert_eq!(f.window(12.0), (4.0, 12.0));
        let s = Fault {
            kind: FaultKind::Sudden,
            ..f
        };
        assert_eq!(s.window(100.0), (4.0, 14.0));
    }
}

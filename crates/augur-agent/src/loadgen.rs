//! An open-loop, constant-rate HTTP/1 load generator, for the side-by-side experiment.
//!
//! Request `i` is due at `start + i / rate`, whatever happened to the earlier ones: each is
//! sent on its own task (fresh connection, `connection: close`, see [`crate::request`]) with
//! its own deadline, so a stalled backend shows up as failures and latency, never as fewer
//! requests. A run of `duration` at `rate` sends exactly `rate × duration` requests; if the
//! generator itself falls behind, late requests go out at once and their latency is counted
//! from when they were due (no coordinated omission).
//!
//! Every request is recorded: its outcome (2xx is ok; any other status, a refused or broken
//! connection, or the deadline is a failure), its latency, and the instance that answered
//! (the sample's `x-instance` header), so servers added or re-weighted at runtime by someone
//! else show up in the counts without being declared. Latency percentiles are exact (every
//! sample is kept and sorted at the end: a few hundred kB per 10 000 requests).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hyper::body::Bytes;
use hyper::Method;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::http::{self, HttpError};

/// The `x-instance` value used for answers without one (HAProxy's own 502/503/504) and for
/// requests that got no answer at all.
pub const NO_INSTANCE: &str = "-";

/// What to send, where, and how fast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadConfig {
    /// Usually HAProxy's frontend.
    pub target: SocketAddr,
    /// Path of every request (`GET`).
    pub path: String,
    /// Requests per second, spread evenly.
    pub rate: u32,
    /// How long requests are started for; the run sends `rate × duration` of them.
    pub duration: Duration,
    /// Deadline of one request, connect included; past it the request is a failure.
    pub timeout: Duration,
}

impl LoadConfig {
    /// `GET /` on `target` at `rate` req/s for `duration`, 2 s per-request deadline.
    pub fn new(target: SocketAddr, rate: u32, duration: Duration) -> Self {
        Self {
            target,
            path: "/".to_owned(),
            rate,
            duration,
            timeout: Duration::from_secs(2),
        }
    }

    /// How many requests the run sends: `rate × duration`, rounded down.
    pub fn total_requests(&self) -> u64 {
        (f64::from(self.rate) * self.duration.as_secs_f64()).floor() as u64
    }

    /// When request `index` is due, relative to the start.
    pub fn due(&self, index: u64) -> Duration {
        Duration::from_secs_f64(index as f64 / f64::from(self.rate.max(1)))
    }

    fn validate(&self) -> Result<(), LoadError> {
        let mut problems = Vec::new();
        if self.rate == 0 {
            problems.push("rate must be at least 1 request per second".to_owned());
        }
        if self.timeout.is_zero() {
            problems.push("timeout must be positive".to_owned());
        }
        if !self.path.starts_with('/') {
            problems.push(format!("path must start with '/', got {:?}", self.path));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(LoadError::InvalidConfig { problems })
        }
    }
}

/// Why a load run could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Every problem with the [`LoadConfig`], listed at once.
    #[error("invalid load config: {}", .problems.join("; "))]
    InvalidConfig { problems: Vec<String> },
}

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A 2xx answer.
    Ok,
    /// Any other status (HAProxy's 502/503/504, the sample's injected 500).
    Status(u16),
    /// The connection could not be opened.
    Connect,
    /// The connection broke or the answer was not HTTP.
    Protocol,
    /// No complete answer within the deadline.
    Timeout,
    /// The request could not even be built (a bad path; never with a validated config).
    Invalid,
}

impl Outcome {
    /// Whether this counts as a failed request.
    pub fn is_failure(self) -> bool {
        self != Outcome::Ok
    }

    /// A stable label for reports: `ok`, `status_503`, `connect`, `protocol`, `timeout`.
    pub fn label(self) -> String {
        match self {
            Outcome::Ok => "ok".to_owned(),
            Outcome::Status(code) => format!("status_{code}"),
            Outcome::Connect => "connect".to_owned(),
            Outcome::Protocol => "protocol".to_owned(),
            Outcome::Timeout => "timeout".to_owned(),
            Outcome::Invalid => "invalid".to_owned(),
        }
    }
}

/// One request as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// Position in the schedule; the request was due at `index / rate` s.
    pub index: u64,
    /// From when it was due to when it ended (answer, error or deadline).
    pub latency: Duration,
    pub outcome: Outcome,
    /// The `x-instance` header of the answer, if any.
    pub instance: Option<String>,
}

/// Counters readable while the load runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Requests sent so far.
    pub sent: u64,
    /// Requests that ended with a 2xx.
    pub ok: u64,
    /// Requests that ended otherwise.
    pub failed: u64,
}

#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
}

#[derive(Debug, Default)]
struct Shared {
    counters: Counters,
    records: Mutex<Vec<RequestRecord>>,
}

impl Shared {
    fn record(&self, record: RequestRecord) {
        let counter = if record.outcome.is_failure() {
            &self.counters.failed
        } else {
            &self.counters.ok
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(record);
    }
}

/// A load run in progress. Dropping it aborts the run.
#[derive(Debug)]
pub struct LoadHandle {
    config: LoadConfig,
    started: Instant,
    shared: Arc<Shared>,
    pacer: tokio::task::JoinHandle<()>,
}

/// Starts the run now (request 0 goes out at once) and returns at once.
pub fn start(config: LoadConfig) -> Result<LoadHandle, LoadError> {
    config.validate()?;
    let shared = Arc::new(Shared::default());
    let started = Instant::now();
    let pacer = tokio::spawn(pace(config.clone(), started, shared.clone()));
    Ok(LoadHandle {
        config,
        started,
        shared,
        pacer,
    })
}

/// Sends the schedule, then waits for the last request to end (each has a deadline, so this
/// ends at most `timeout` after the last one is due).
async fn pace(config: LoadConfig, started: Instant, shared: Arc<Shared>) {
    let total = config.total_requests();
    let mut in_flight = JoinSet::new();
    for index in 0..total {
        let due = started + config.due(index);
        // Pacing by design: this is the open-loop schedule, not synchronisation.
        tokio::time::sleep_until(due).await;
        shared.counters.sent.fetch_add(1, Ordering::Relaxed);
        in_flight.spawn(one_request(config.clone(), index, due, shared.clone()));
        // Reap finished tasks as we go, so the set holds only what is in flight.
        while in_flight.try_join_next().is_some() {}
    }
    while in_flight.join_next().await.is_some() {}
}

async fn one_request(config: LoadConfig, index: u64, due: Instant, shared: Arc<Shared>) {
    let result = http::request(
        config.target,
        Method::GET,
        &config.path,
        Bytes::new(),
        config.timeout,
    )
    .await;
    let latency = Instant::now().saturating_duration_since(due);
    let (outcome, instance) = match result {
        Ok(response) => {
            let outcome = if response.is_success() {
                Outcome::Ok
            } else {
                Outcome::Status(response.status)
            };
            (outcome, response.header("x-instance").map(str::to_owned))
        }
        Err(HttpError::Connect { .. }) => (Outcome::Connect, None),
        Err(HttpError::Protocol { .. }) => (Outcome::Protocol, None),
        Err(HttpError::Timeout { .. }) => (Outcome::Timeout, None),
        Err(HttpError::InvalidRequest { .. }) => (Outcome::Invalid, None),
    };
    shared.record(RequestRecord {
        index,
        latency,
        outcome,
        instance,
    });
}

impl LoadHandle {
    /// The configuration being run.
    pub fn config(&self) -> &LoadConfig {
        &self.config
    }

    /// When request 0 was due: time zero of the run.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Counters so far.
    pub fn progress(&self) -> Progress {
        let c = &self.shared.counters;
        Progress {
            sent: c.sent.load(Ordering::Relaxed),
            ok: c.ok.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
        }
    }

    /// Waits until every scheduled request was sent and has ended, and reports.
    pub async fn finish(mut self) -> LoadReport {
        if let Err(error) = (&mut self.pacer).await {
            // Only a panic in the pacer gets here; report what was recorded.
            tracing::error!(%error, "load pacer failed");
        }
        self.report()
    }

    /// Stops sending now, abandons requests in flight, and reports what ended so far.
    pub async fn stop(self) -> LoadReport {
        self.pacer.abort();
        self.report()
    }

    fn report(&self) -> LoadReport {
        let records = std::mem::take(
            &mut *self
                .shared
                .records
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        LoadReport::from_records(&self.config, self.progress().sent, records)
    }
}

impl Drop for LoadHandle {
    fn drop(&mut self) {
        self.pacer.abort();
    }
}

/// Latency percentiles in milliseconds (nearest rank; zero when there are no samples).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    /// Percentiles of `samples` (sorted here).
    pub fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        let at = |q: f64| -> f64 {
            if samples.is_empty() {
                return 0.0;
            }
            let rank = (q * samples.len() as f64).ceil() as usize;
            ms(samples[rank.clamp(1, samples.len()) - 1])
        };
        Self {
            count: samples.len() as u64,
            p50_ms: at(0.50),
            p90_ms: at(0.90),
            p99_ms: at(0.99),
            p999_ms: at(0.999),
            max_ms: samples.last().map_or(0.0, |d| ms(*d)),
        }
    }
}

fn ms(d: Duration) -> f64 {
    // Microsecond resolution is plenty for a report.
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// One second of the run, by when requests were due.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SecondBucket {
    /// Seconds since the start (`second ≤ due < second + 1`).
    pub second: u64,
    pub sent: u64,
    pub ok: u64,
    pub failed: u64,
    /// 99th percentile latency of this second's requests, failures included.
    pub p99_ms: f64,
}

/// Requests answered by one instance (as its `x-instance` header says).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceCounts {
    pub ok: u64,
    pub failed: u64,
}

/// Everything a run measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    /// Requests per second asked for.
    pub rate: u32,
    /// Seconds the schedule lasted.
    pub duration_s: f64,
    /// Requests sent.
    pub sent: u64,
    /// Requests that ended with a 2xx.
    pub ok: u64,
    /// Requests that ended otherwise (a sent request that never ended, after
    /// [`LoadHandle::stop`], counts as neither).
    pub failed: u64,
    /// Failures by kind: `status_503`, `connect`, `timeout`, …
    pub failed_by_kind: BTreeMap<String, u64>,
    /// Latency of successful requests.
    pub latency_ok: Latency,
    /// Latency of every request that ended, a timeout counting as the deadline.
    pub latency_all: Latency,
    /// Requests by answering instance; [`NO_INSTANCE`] for no header or no answer.
    pub by_instance: BTreeMap<String, InstanceCounts>,
    /// One entry per second of the schedule.
    pub per_second: Vec<SecondBucket>,
    /// Every request, in schedule order (left out of the JSON).
    #[serde(skip)]
    pub records: Vec<RequestRecord>,
}

impl LoadReport {
    /// Aggregates the records of a run of `config` that sent `sent` requests.
    pub fn from_records(config: &LoadConfig, sent: u64, mut records: Vec<RequestRecord>) -> Self {
        records.sort_unstable_by_key(|r| r.index);
        let rate = u64::from(config.rate.max(1));
        let seconds = config.total_requests().div_ceil(rate);
        let mut per_second: Vec<(SecondBucket, Vec<Duration>)> = (0..seconds)
            .map(|second| {
                let sent_in = sent.saturating_sub(second * rate).min(rate);
                let bucket = SecondBucket {
                    second,
                    sent: sent_in,
                    ..SecondBucket::default()
                };
                (bucket, Vec::new())
            })
            .collect();
        let mut report = LoadReport {
            rate: config.rate,
            duration_s: config.duration.as_secs_f64(),
            sent,
            ..LoadReport::default()
        };
        let mut ok_latencies = Vec::with_capacity(records.len());
        let mut all_latencies = Vec::with_capacity(records.len());
        for r in &records {
            let failed = r.outcome.is_failure();
            let instance = r.instance.as_deref().unwrap_or(NO_INSTANCE).to_owned();
            let counts = report.by_instance.entry(instance).or_default();
            if failed {
                report.failed += 1;
                counts.failed += 1;
                *report.failed_by_kind.entry(r.outcome.label()).or_default() += 1;
            } else {
                report.ok += 1;
                counts.ok += 1;
                ok_latencies.push(r.latency);
            }
            all_latencies.push(r.latency);
            if let Some((bucket, latencies)) = usize::try_from(r.index / rate)
                .ok()
                .and_then(|s| per_second.get_mut(s))
            {
                if failed {
                    bucket.failed += 1;
                } else {
                    bucket.ok += 1;
                }
                latencies.push(r.latency);
            }
        }
        report.latency_ok = Latency::of(ok_latencies);
        report.latency_all = Latency::of(all_latencies);
        report.per_second = per_second
            .into_iter()
            .map(|(mut bucket, latencies)| {
                bucket.p99_ms = Latency::of(latencies).p99_ms;
                bucket
            })
            .collect();
        report.records = records;
        report
    }

    /// Requests due within `[from, to)` (seconds since the start): `(sent, failed)`.
    pub fn between(&self, from: Duration, to: Duration) -> (u64, u64) {
        let rate = f64::from(self.rate.max(1));
        let first = (from.as_secs_f64() * rate).ceil() as u64;
        let end = (to.as_secs_f64() * rate).ceil() as u64;
        let in_window = self
            .records
            .iter()
            .filter(|r| (first..end).contains(&r.index));
        let (mut sent, mut failed) = (0, 0);
        for r in in_window {
            sent += 1;
            failed += u64::from(r.outcome.is_failure());
        }
        (sent, failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(rate: u32, seconds: u64) -> LoadConfig {
        LoadConfig::new(
            "127.0.0.1:9".parse().unwrap(),
            rate,
            Duration::from_secs(seconds),
        )
    }

    fn record(index: u64, ms: u64, outcome: Outcome, instance: Option<&str>) -> RequestRecord {
        RequestRecord {
            index,
            latency: Duration::from_millis(ms),
            outcome,
            instance: instance.map(str::to_owned),
        }
    }

    #[test]
    fn schedule_is_even_and_exact() {
        let c = config(200, 3);
        assert_eq!(c.total_requests(), 600);
        assert_eq!(c.due(0), Duration::ZERO);
        assert_eq!(c.due(200), Duration::from_secs(1));
        assert_eq!(c.due(1), Duration::from_millis(5));
    }

    #[test]
    fn invalid_config_lists_every_problem() {
        let mut c = config(0, 1);
        c.timeout = Duration::ZERO;
        c.path = "x".to_owned();
        let err = c.validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid load config: rate must be at least 1 request per second; \
             timeout must be positive; path must start with '/', got \"x\""
        );
    }

    #[test]
    fn aggregates_outcomes_instances_seconds_and_windows() {
        let c = config(2, 2);
        let records = vec![
            record(3, 40, Outcome::Status(503), None),
            record(0, 10, Outcome::Ok, Some("a")),
            record(1, 20, Outcome::Ok, Some("b")),
            record(2, 2000, Outcome::Timeout, None),
        ];
        let r = LoadReport::from_records(&c, 4, records);
        assert_eq!((r.sent, r.ok, r.failed), (4, 2, 2));
        assert_eq!(r.failed_by_kind.get("status_503"), Some(&1));
        assert_eq!(r.failed_by_kind.get("timeout"), Some(&1));
        assert_eq!(r.by_instance["a"], InstanceCounts { ok: 1, failed: 0 });
        assert_eq!(
            r.by_instance[NO_INSTANCE],
            InstanceCounts { ok: 0, failed: 2 }
        );
        assert_eq!(r.latency_ok.max_ms, 20.0);
        assert_eq!(r.latency_ok.p50_ms, 10.0);
        assert_eq!(r.latency_all.p99_ms, 2000.0);
        assert_eq!(r.per_second.len(), 2);
        assert_eq!((r.per_second[0].ok, r.per_second[0].failed), (2, 0));
        assert_eq!((r.per_second[1].sent, r.per_second[1].failed), (2, 2));
        // Index 2 and 3 are due at 1.0 s and 1.5 s.
        assert_eq!(
            r.between(Duration::from_secs(1), Duration::from_secs(2)),
            (2, 2)
        );
        assert_eq!(
            r.between(Duration::ZERO, Duration::from_millis(1001)),
            (3, 1)
        );
        let json = serde_json::to_value(&r).unwrap();
        assert!(json.get("records").is_none());
        assert_eq!(json["latency_all"]["max_ms"], 2000.0);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let l = Latency::of(samples);
        assert_eq!((l.p50_ms, l.p99_ms, l.max_ms), (50.0, 99.0, 100.0));
        assert_eq!(Latency::of(Vec::new()), Latency::default());
    }
}

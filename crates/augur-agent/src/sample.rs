//! The sample service (`augur-sample`): a small stateful HTTP service with the faults Augur
//! must see coming, used by the tests and the demo as the thing being failed over.
//!
//! It keeps a key-value map with a version counter that can be copied to a shadow
//! (`GET /state` → `POST /state`, newer version wins), and it can be told to fail:
//! - `POST /degrade?ramp_s=R&crash_after_s=C`: over R seconds extra latency rises to
//!   [`DEGRADE_MAX_EXTRA_LATENCY`], the error rate to [`DEGRADE_MAX_ERROR_RATE`] and
//!   simulated memory grows; after C seconds the service exits with code 1. The degradation
//!   shows in `/metrics` from the first instant (level starts at 0.1), so a predictor can
//!   see it long before the health check (503 only once the ramp is complete) does.
//! - `POST /crash`: exits at once with code 1, without answering.
//! - `POST /slow?ms=N`: a fixed extra latency on served requests (0 clears it).
//!
//! Errors are drawn from an RNG seeded by `--seed`, so a run is reproducible given the same
//! request sequence. "Exit" is a request to the caller of [`serve`]: the binary turns it
//! into `std::process::exit`, tests running the service in-process just see [`serve`]
//! return the code, with every connection dropped as a crash would drop them.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinError, JoinHandle, JoinSet};
use tokio::time::Instant;

/// Extra latency of a fully degraded instance.
pub const DEGRADE_MAX_EXTRA_LATENCY: Duration = Duration::from_millis(200);
/// Error probability of a fully degraded instance.
pub const DEGRADE_MAX_ERROR_RATE: f64 = 0.2;
/// Degrade level at the instant the fault starts, so it is visible at once.
const DEGRADE_INITIAL_LEVEL: f64 = 0.1;
const BASE_MEMORY_BYTES: f64 = 64.0 * 1024.0 * 1024.0;
const DEGRADE_MEMORY_BYTES: f64 = 448.0 * 1024.0 * 1024.0;
/// Latency percentiles cover this much recent history…
const LATENCY_WINDOW: Duration = Duration::from_secs(10);
/// …and at most this many requests of it.
const LATENCY_WINDOW_CAP: usize = 100_000;
/// Largest accepted request body.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Identity and seed of one sample instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleConfig {
    /// Sent back in the `x-instance` header of every response.
    pub name: String,
    /// Seeds the RNG that draws injected errors.
    pub seed: u64,
}

/// The replicated state: what `GET /state` returns and `POST /state` restores.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Bumped by every `PUT /kv/KEY`.
    pub version: u64,
    pub entries: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy)]
struct Degrade {
    started: Instant,
    ramp: Duration,
}

/// Progress of the degrade fault: [`DEGRADE_INITIAL_LEVEL`] at the start, 1 after `ramp`.
fn degrade_level(elapsed: Duration, ramp: Duration) -> f64 {
    if ramp.is_zero() {
        return 1.0;
    }
    let progress = (elapsed.as_secs_f64() / ramp.as_secs_f64()).min(1.0);
    DEGRADE_INITIAL_LEVEL + (1.0 - DEGRADE_INITIAL_LEVEL) * progress
}

/// The `q`-quantile (0..=1) of `samples`, nearest-rank; zero when empty.
fn quantile(mut samples: Vec<Duration>, q: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let rank = (q * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

#[derive(Debug)]
struct Inner {
    kv: Snapshot,
    degrade: Option<Degrade>,
    slow: Duration,
    rng: StdRng,
    requests_total: u64,
    errors_total: u64,
    window: VecDeque<(Instant, Duration)>,
}

impl Inner {
    fn level(&self, now: Instant) -> f64 {
        self.degrade.map_or(0.0, |d| {
            degrade_level(now.saturating_duration_since(d.started), d.ramp)
        })
    }

    fn record(&mut self, now: Instant, latency: Duration, error: bool) {
        self.requests_total += 1;
        self.errors_total += u64::from(error);
        self.window.push_back((now, latency));
        if self.window.len() > LATENCY_WINDOW_CAP {
            self.window.pop_front();
        }
        self.prune(now);
    }

    fn prune(&mut self, now: Instant) {
        while let Some(&(at, _)) = self.window.front() {
            if now.saturating_duration_since(at) <= LATENCY_WINDOW {
                break;
            }
            self.window.pop_front();
        }
    }
}

#[derive(Debug)]
struct Service {
    name: HeaderValue,
    display_name: String,
    started: Instant,
    inner: Mutex<Inner>,
    exit: watch::Sender<Option<i32>>,
}

type Body = Full<Bytes>;

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    respond(status, "text/plain; charset=utf-8", body)
}

fn json(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(body) => respond(status, "application/json", body),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding: {e}\n"),
        ),
    }
}

fn query_param<'a>(query: Option<&'a str>, key: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find_map(|(k, v)| (k == key).then_some(v))
}

/// A non-negative, finite number of seconds from the query, or `default` when absent.
fn seconds_param(query: Option<&str>, key: &str, default: f64) -> Result<Duration, String> {
    let Some(raw) = query_param(query, key) else {
        return Ok(Duration::from_secs_f64(default));
    };
    match raw.parse::<f64>() {
        Ok(s) if s.is_finite() && (0.0..=86_400.0).contains(&s) => Ok(Duration::from_secs_f64(s)),
        _ => Err(format!(
            "{key} must be a number of seconds within 0..=86400, got {raw:?}\n"
        )),
    }
}

impl Service {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
        let mut response = self.route(req).await;
        response
            .headers_mut()
            .insert("x-instance", self.name.clone());
        Ok(response)
    }

    async fn route(&self, req: Request<Incoming>) -> Response<Body> {
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let query = req.uri().query().map(str::to_owned);
        let query = query.as_deref();
        let key = path.strip_prefix("/kv/").filter(|k| !k.is_empty());
        match (&method, path.as_str(), key) {
            (&Method::GET, "/health", _) => self.health(),
            (&Method::GET, "/", _) => self.serve_request(None, None).await,
            (&Method::GET, _, Some(key)) => self.serve_request(Some(key), None).await,
            (&Method::PUT, _, Some(key)) => match read_body(req).await {
                Ok(value) => self.serve_request(Some(key), Some(value)).await,
                Err(response) => response,
            },
            (&Method::GET, "/state", _) => json(StatusCode::OK, &self.lock().kv),
            (&Method::POST, "/state", _) => match read_body(req).await {
                Ok(body) => self.restore(&body),
                Err(response) => response,
            },
            (&Method::GET, "/metrics", _) => self.metrics(),
            (&Method::POST, "/degrade", _) => self.degrade(query),
            (&Method::POST, "/slow", _) => self.slow(query),
            (&Method::POST, "/crash", _) => {
                tracing::warn!(name = %self.display_name, "crash fault: exiting with 1");
                self.exit.send_replace(Some(1));
                // A crash answers nothing; the connection dies with the process (or, in
                // process, with `serve`).
                std::future::pending().await
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    fn health(&self) -> Response<Body> {
        if self.lock().level(Instant::now()) >= 1.0 {
            text(StatusCode::SERVICE_UNAVAILABLE, "failing\n")
        } else {
            text(StatusCode::OK, "ok")
        }
    }

    /// A served request (`GET /`, `GET /kv/K`, `PUT /kv/K`): subject to faults, counted in
    /// the metrics.
    async fn serve_request(&self, key: Option<&str>, value: Option<Bytes>) -> Response<Body> {
        let started = Instant::now();
        let (extra, fail) = {
            let mut inner = self.lock();
            let level = inner.level(started);
            let extra = inner.slow + DEGRADE_MAX_EXTRA_LATENCY.mul_f64(level);
            let fail = level > 0.0 && inner.rng.random::<f64>() < DEGRADE_MAX_ERROR_RATE * level;
            (extra, fail)
        };
        if !extra.is_zero() {
            // Simulated service time, not synchronisation.
            tokio::time::sleep(extra).await;
        }
        let response = if fail {
            text(StatusCode::INTERNAL_SERVER_ERROR, "injected error\n")
        } else {
            let mut inner = self.lock();
            match (key, value) {
                (None, _) => text(
                    StatusCode::OK,
                    format!("hello from {}\n", self.display_name),
                ),
                (Some(key), Some(value)) => {
                    let value = String::from_utf8_lossy(&value).into_owned();
                    inner.kv.entries.insert(key.to_owned(), value);
                    inner.kv.version += 1;
                    json(
                        StatusCode::OK,
                        &serde_json::json!({ "version": inner.kv.version }),
                    )
                }
                (Some(key), None) => match inner.kv.entries.get(key) {
                    Some(v) => text(StatusCode::OK, v.clone()),
                    None => text(StatusCode::NOT_FOUND, "no such key\n"),
                },
            }
        };
        let now = Instant::now();
        self.lock().record(
            now,
            now.saturating_duration_since(started),
            response.status().is_server_error(),
        );
        response
    }

    fn restore(&self, body: &[u8]) -> Response<Body> {
        let snapshot: Snapshot = match serde_json::from_slice(body) {
            Ok(s) => s,
            Err(e) => return text(StatusCode::BAD_REQUEST, format!("bad snapshot: {e}\n")),
        };
        let mut inner = self.lock();
        let applied = snapshot.version > inner.kv.version;
        if applied {
            inner.kv = snapshot;
        }
        json(
            StatusCode::OK,
            &serde_json::json!({ "version": inner.kv.version, "applied": applied }),
        )
    }

    fn metrics(&self) -> Response<Body> {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.prune(now);
        let p99 = quantile(inner.window.iter().map(|&(_, l)| l).collect(), 0.99);
        let level = inner.level(now);
        let kv_bytes: usize = inner
            .kv
            .entries
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum();
        let memory = BASE_MEMORY_BYTES + DEGRADE_MEMORY_BYTES * level + kv_bytes as f64;
        let metrics: [(&str, &str, &str, f64); 7] = [
            (
                "requests_total",
                "counter",
                "Served requests (/, /kv).",
                inner.requests_total as f64,
            ),
            (
                "errors_total",
                "counter",
                "Served requests answered 5xx.",
                inner.errors_total as f64,
            ),
            (
                "latency_p99_seconds",
                "gauge",
                "99th percentile latency of served requests over the last 10 s.",
                p99.as_secs_f64(),
            ),
            (
                "memory_bytes",
                "gauge",
                "Simulated resident memory.",
                memory.round(),
            ),
            (
                "degrade_level",
                "gauge",
                "Degrade fault progress, 0 healthy to 1 fully degraded.",
                level,
            ),
            (
                "state_version",
                "gauge",
                "Version of the key-value state.",
                inner.kv.version as f64,
            ),
            (
                "uptime_seconds",
                "gauge",
                "Seconds since the service started.",
                now.saturating_duration_since(self.started).as_secs_f64(),
            ),
        ];
        drop(inner);
        let mut out = String::new();
        for (name, kind, help, value) in metrics {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            ));
        }
        respond(StatusCode::OK, "text/plain; version=0.0.4", out)
    }

    fn degrade(&self, query: Option<&str>) -> Response<Body> {
        let params = seconds_param(query, "ramp_s", 10.0)
            .and_then(|ramp| Ok((ramp, seconds_param(query, "crash_after_s", 20.0)?)));
        let (ramp, crash_after) = match params {
            Ok(p) => p,
            Err(message) => return text(StatusCode::BAD_REQUEST, message),
        };
        self.lock().degrade = Some(Degrade {
            started: Instant::now(),
            ramp,
        });
        tracing::warn!(name = %self.display_name, ?ramp, ?crash_after, "degrade fault started");
        let exit = self.exit.clone();
        tokio::spawn(async move {
            // The fault's schedule: the crash comes `crash_after` after the degrade starts.
            tokio::time::sleep(crash_after).await;
            exit.send_replace(Some(1));
        });
        json(
            StatusCode::ACCEPTED,
            &serde_json::json!({
                "ramp_s": ramp.as_secs_f64(),
                "crash_after_s": crash_after.as_secs_f64(),
            }),
        )
    }

    fn slow(&self, query: Option<&str>) -> Response<Body> {
        match query_param(query, "ms").map(str::parse::<u64>) {
            Some(Ok(ms)) if ms <= 60_000 => {
                self.lock().slow = Duration::from_millis(ms);
                text(StatusCode::OK, format!("slow {ms} ms\n"))
            }
            _ => text(
                StatusCode::BAD_REQUEST,
                "ms must be an integer within 0..=60000\n",
            ),
        }
    }
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, Response<Body>> {
    match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => Err(text(
            StatusCode::BAD_REQUEST,
            format!("reading body: {e}\n"),
        )),
    }
}

/// Serves the sample service on `listener` until a fault asks to exit, and returns the exit
/// code it asked for (1 for both crash faults). Open connections are dropped on return.
pub async fn serve(listener: TcpListener, config: SampleConfig) -> i32 {
    let (exit, mut exit_requested) = watch::channel(None);
    let service = Arc::new(Service {
        name: HeaderValue::from_str(&config.name)
            .unwrap_or_else(|_| HeaderValue::from_static("invalid-name")),
        display_name: config.name,
        started: Instant::now(),
        inner: Mutex::new(Inner {
            kv: Snapshot::default(),
            degrade: None,
            slow: Duration::ZERO,
            rng: StdRng::seed_from_u64(config.seed),
            requests_total: 0,
            errors_total: 0,
            window: VecDeque::new(),
        }),
        exit,
    });
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = exit_requested.changed() => {
                if let Some(code) = *exit_requested.borrow() {
                    return code;
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let service = service.clone();
                    connections.spawn(async move {
                        let handler = service_fn(move |req| service.clone().handle(req));
                        if let Err(error) = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), handler)
                            .await
                        {
                            tracing::debug!(%error, "sample connection ended with an error");
                        }
                    });
                }
                Err(error) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tracing::warn!(%error, "sample accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = connections.join_next() => {}
        }
    }
}

/// The sample service running in this process (on a tokio task), for tests.
#[derive(Debug)]
pub struct SampleServer {
    addr: SocketAddr,
    task: Option<JoinHandle<i32>>,
}

impl SampleServer {
    /// Binds `127.0.0.1:0` and serves there.
    pub async fn start(config: SampleConfig) -> std::io::Result<Self> {
        Self::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), config).await
    }

    /// Binds `addr` and serves there.
    pub async fn bind(addr: SocketAddr, config: SampleConfig) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        Ok(Self {
            addr,
            task: Some(tokio::spawn(serve(listener, config))),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits until a fault makes the service exit and returns its exit code.
    pub async fn wait_exit(mut self) -> Result<i32, JoinError> {
        match self.task.take() {
            Some(task) => task.await,
            None => Ok(0),
        }
    }
}

impl Drop for SampleServer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Parses Prometheus text (unlabelled samples, as `/metrics` emits) into name → value.
pub fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let name = parts.next()?;
            let value = parts.next()?.parse().ok()?;
            Some((name.to_owned(), value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn degrade_level_starts_visible_and_saturates() {
        let ramp = Duration::from_secs(10);
        assert_eq!(degrade_level(Duration::ZERO, ramp), DEGRADE_INITIAL_LEVEL);
        assert!((degrade_level(Duration::from_secs(5), ramp) - 0.55).abs() < 1e-9);
        assert_eq!(degrade_level(Duration::from_secs(60), ramp), 1.0);
        assert_eq!(degrade_level(Duration::ZERO, Duration::ZERO), 1.0);
    }

    #[test]
    fn quantile_is_nearest_rank() {
        let ms = |v: u64| Duration::from_millis(v);
        assert_eq!(quantile(vec![], 0.99), Duration::ZERO);
        assert_eq!(quantile(vec![ms(5)], 0.99), ms(5));
        let samples: Vec<Duration> = (1..=200).map(ms).collect();
        assert_eq!(quantile(samples, 0.99), ms(198));
    }

    #[test]
    fn query_and_seconds_parse() {
        assert_eq!(query_param(Some("a=1&ramp_s=2.5"), "ramp_s"), Some("2.5"));
        assert_eq!(query_param(None, "x"), None);
        assert_eq!(
            seconds_param(Some("ramp_s=2.5"), "ramp_s", 1.0),
            Ok(Duration::from_millis(2500))
        );
        assert_eq!(
            seconds_param(None, "ramp_s", 1.0),
            Ok(Duration::from_secs(1))
        );
        assert!(seconds_param(Some("ramp_s=-1"), "ramp_s", 1.0).is_err());
        assert!(seconds_param(Some("ramp_s=NaN"), "ramp_s", 1.0).is_err());
    }

    #[test]
    fn metrics_text_parses() {
        let m = parse_metrics("# HELP a x\n# TYPE a counter\na 3\nb 0.25\n");
        assert_eq!(m.get("a"), Some(&3.0));
        assert_eq!(m.get("b"), Some(&0.25));
    }
}

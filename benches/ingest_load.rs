//! End-to-end ingest, side by side: a load generator (this process) pushes the same samples
//! to an Augur node (`Telemetry.Push` over gRPC, another process) and to Prometheus (its
//! remote-write receiver, another process), one after the other on the same machine, and
//! reports samples/s accepted and per-push latency (p50/p99) for each, and the ratio.
//!
//! `cargo bench -p augur-cli --bench ingest_load -- --augur target/release/augur
//!  [--prometheus prometheus] [--components 10000] [--metrics 8] [--seconds 10]
//!  [--senders 4] [--batch 8000] [--interval-ms 1000]` (`benches/side-by-side/ingest-vs-prometheus.sh`
//! runs it). The load: every component reports every metric once a round; a round's
//! timestamp is `--interval-ms` after the last one's (the run replays time faster than real,
//! from far enough back that it stays in the past); each sender owns a slice of the
//! components, so every series stays in order. The node's resident memory is read after the
//! first round (which registers the components) and after the load.

#[path = "rss.rs"]
mod rss;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use augur_proto::pb;
use augur_proto::pb::telemetry_client::TelemetryClient;
use augur_proto::prom::{encode_remote_write, Label, PromSample, TimeSeries, WriteRequest};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;

/// End-to-end ingest: an Augur node, then Prometheus, under the same push load.
#[derive(clap::Parser)]
#[command(args_override_self = true)]
struct Args {
    /// The `augur` binary to run the node with.
    #[arg(long, default_value = "target/release/augur")]
    augur: PathBuf,
    /// The `prometheus` binary (Debian's).
    #[arg(long, default_value = "prometheus")]
    prometheus: String,
    /// Measure Augur alone.
    #[arg(long)]
    no_prometheus: bool,
    /// Monitored components (a multiple of --senders).
    #[arg(long, default_value_t = 10_000)]
    components: usize,
    /// Metrics a component.
    #[arg(long, default_value_t = 8)]
    metrics: usize,
    /// Seconds of load a target.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent senders, each with its own slice of the components.
    #[arg(long, default_value_t = 4)]
    senders: usize,
    /// Samples a push.
    #[arg(long, default_value_t = 8_000)]
    batch: usize,
    /// Time between a series' samples, ms (the rounds' timestamps step by it).
    #[arg(long, default_value_t = 1_000)]
    interval_ms: u64,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn parse_args() -> Args {
    let a = <Args as clap::Parser>::parse();
    let fail = |msg: String| -> ! {
        <Args as clap::CommandFactory>::command()
            .error(clap::error::ErrorKind::ValueValidation, msg)
            .exit()
    };
    for (name, v) in [
        ("--components", a.components),
        ("--metrics", a.metrics),
        ("--senders", a.senders),
        ("--batch", a.batch),
        ("--interval-ms", a.interval_ms as usize),
    ] {
        if v == 0 {
            fail(format!("{name} must be at least 1"));
        }
    }
    if !a.components.is_multiple_of(a.senders) {
        fail(format!(
            "--components {} must be a multiple of --senders {}",
            a.components, a.senders
        ));
    }
    a
}

impl Args {
    fn prometheus(&self) -> Option<&str> {
        (!self.no_prometheus).then_some(self.prometheus.as_str())
    }
}

/// What one target took.
#[derive(Default)]
struct Outcome {
    accepted: u64,
    rejected: u64,
    pushes: u64,
    busy: u64,
    latency_us: Option<Histogram<u64>>,
    elapsed: Duration,
}

impl Outcome {
    fn merge(&mut self, o: Outcome) {
        self.accepted += o.accepted;
        self.rejected += o.rejected;
        self.pushes += o.pushes;
        self.busy += o.busy;
        match (&mut self.latency_us, o.latency_us) {
            (Some(h), Some(o)) => h.add(o).expect("same bounds"),
            (slot @ None, o) => *slot = o,
            _ => {}
        }
    }

    fn rate(&self) -> f64 {
        self.accepted as f64 / self.elapsed.as_secs_f64()
    }

    fn quantile_ms(&self, q: f64) -> f64 {
        self.latency_us
            .as_ref()
            .map_or(f64::NAN, |h| h.value_at_quantile(q) as f64 / 1e3)
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The samples of one sender's slice for round `r`, in batches of `batch`: (component
/// index, metric index, timestamp ms, value).
fn round(
    slice: std::ops::Range<usize>,
    args: &Args,
    r: u64,
    start_ms: i64,
) -> Vec<Vec<(usize, usize, i64, f64)>> {
    let (metrics, batch) = (args.metrics, args.batch);
    let ts = start_ms + r as i64 * args.interval_ms as i64;
    let mut all = Vec::with_capacity(slice.len() * metrics);
    for c in slice {
        for m in 0..metrics {
            let v = 100.0 + ((c * 31 + m * 7 + r as usize) % 17) as f64;
            all.push((c, m, ts, v));
        }
    }
    all.chunks(batch).map(<[_]>::to_vec).collect()
}

/// Where a sender pushes (one per sender; its size does not matter).
#[derive(Clone)]
#[allow(clippy::large_enum_variant)]
enum Target {
    Augur(TelemetryClient<tonic::transport::Channel>),
    Prometheus(
        HttpClient<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
        hyper::Uri,
    ),
}

/// One batch, encoded for its target (not timed).
enum Payload {
    Augur(pb::SampleBatch),
    Prometheus(Bytes),
}

impl Target {
    async fn augur(addr: &str) -> Self {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect to the node");
        Target::Augur(
            TelemetryClient::new(channel)
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20),
        )
    }

    fn prometheus(port: u16) -> Self {
        let url = format!("http://127.0.0.1:{port}/api/v1/write")
            .parse()
            .expect("url");
        Target::Prometheus(HttpClient::builder(TokioExecutor::new()).build_http(), url)
    }

    fn encode(&self, batch: &[(usize, usize, i64, f64)]) -> Payload {
        match self {
            Target::Augur(_) => Payload::Augur(pb::SampleBatch {
                samples: batch
                    .iter()
                    .map(|&(c, m, ts, v)| pb::Sample {
                        component: format!("c{c}"),
                        metric: format!("m{m}"),
                        timestamp_ms: ts,
                        value: v,
                    })
                    .collect(),
                applied_index: 0,
            }),
            Target::Prometheus(..) => {
                Payload::Prometheus(Bytes::from(encode_remote_write(&WriteRequest {
                    timeseries: batch
                        .iter()
                        .map(|&(c, m, ts, v)| TimeSeries {
                            labels: vec![
                                Label {
                                    name: "__name__".into(),
                                    value: format!("m{m}"),
                                },
                                Label {
                                    name: "component".into(),
                                    value: format!("c{c}"),
                                },
                            ],
                            samples: vec![PromSample {
                                value: v,
                                timestamp: ts,
                            }],
                        })
                        .collect(),
                })))
            }
        }
    }

    /// Pushes one batch of `n` samples: how many were accepted, or `None` when the server
    /// said it is busy (retry). The payload is consumed, as a client would: no copy of it is
    /// made on the way (a busy answer makes the caller encode it again).
    async fn send(&mut self, payload: Payload, n: u64) -> Option<u64> {
        match (self, payload) {
            (Target::Augur(client), Payload::Augur(batch)) => {
                match client.push(futures::stream::iter([batch])).await {
                    Ok(s) => Some(s.into_inner().accepted.min(n)),
                    Err(e) if e.code() == tonic::Code::ResourceExhausted => None,
                    Err(e) => panic!("push failed: {e}"),
                }
            }
            (Target::Prometheus(client, url), Payload::Prometheus(body)) => {
                let http = hyper::Request::post(url.clone())
                    .header("content-encoding", "snappy")
                    .header("content-type", "application/x-protobuf")
                    .header("x-prometheus-remote-write-version", "0.1.0")
                    .body(Full::new(body))
                    .expect("request");
                let resp = client.request(http).await.expect("post to Prometheus");
                let ok = resp.status().is_success();
                let _ = resp.into_body().collect().await;
                Some(if ok { n } else { 0 })
            }
            _ => unreachable!("a payload is encoded for its own target"),
        }
    }
}

/// One sender: its slice of the components, round after round, until the time is up
/// (`--seconds 0`: one round, the warm-up that registers every component). Each push is
/// timed from its first attempt to its answer.
async fn drive(mut target: Target, args: &Args, sender: usize, start_ms: i64) -> Outcome {
    let per = args.components / args.senders;
    let slice = sender * per..(sender + 1) * per;
    let mut out = Outcome {
        latency_us: Some(histogram()),
        ..Outcome::default()
    };
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let mut r = 0;
    while (args.seconds == 0 && r == 0) || Instant::now() < deadline {
        for batch in round(slice.clone(), args, r, start_ms) {
            let mut payload = target.encode(&batch);
            let n = batch.len() as u64;
            let t = Instant::now();
            let accepted = loop {
                match target.send(payload, n).await {
                    Some(a) => break a,
                    None => {
                        out.busy += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        payload = target.encode(&batch);
                    }
                }
            };
            out.latency_us
                .as_mut()
                .expect("set")
                .record(t.elapsed().as_micros().max(1) as u64)
                .ok();
            out.pushes += 1;
            out.accepted += accepted;
            out.rejected += n - accepted;
        }
        r += 1;
    }
    out
}

async fn wait_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start_augur(args: &Args, dir: &std::path::Path) -> (Killed, String) {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let cfg = dir.join("node.toml");
    std::fs::write(
        &cfg,
        format!(
            "version = 1\n[node]\nid = 1\nlisten = \"{addr}\"\ndata_dir = \"{}\"\n\
             [cluster]\nbootstrap = true\nmembers = [{{ id = 1, addr = \"{addr}\" }}]\n\
             [telemetry]\nauto_register = true\n",
            dir.join("augur-data").display()
        ),
    )
    .expect("write the node config");
    let child = Command::new(&args.augur)
        .args(["serve", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start augur");
    wait_port(port, "augur").await;
    (Killed(child), addr)
}

async fn start_prometheus(bin: &str, dir: &std::path::Path) -> (Killed, u16) {
    let port = free_port();
    let cfg = dir.join("prometheus.yml");
    std::fs::write(&cfg, "global:\n  scrape_interval: 1h\n").expect("write prometheus.yml");
    let child = Command::new(bin)
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("prom-data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--web.enable-remote-write-receiver")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus");
    wait_port(port, "prometheus").await;
    (Killed(child), port)
}

/// The first round's timestamp: far enough back that the last round is still in the past
/// (at most 50 rounds a second).
fn start_ms(args: &Args) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    now - 3_600_000 - (50 * args.seconds * args.interval_ms) as i64
}

async fn run<F, Fut>(args: &Args, start_ms: i64, push: F) -> Outcome
where
    F: Fn(usize, i64) -> Fut,
    Fut: std::future::Future<Output = Outcome> + Send + 'static,
{
    let t = Instant::now();
    let tasks: Vec<_> = (0..args.senders)
        .map(|s| tokio::spawn(push(s, start_ms)))
        .collect();
    let mut total = Outcome::default();
    for task in tasks {
        total.merge(task.await.expect("sender"));
    }
    total.elapsed = t.elapsed();
    total
}

fn row(name: &str, o: &Outcome) -> String {
    format!(
        "| {name} | {:.0} | {:.1} | {:.1} | {} | {} | {} |",
        o.rate(),
        o.quantile_ms(0.5),
        o.quantile_ms(0.99),
        o.accepted,
        o.rejected,
        o.busy
    )
}

#[tokio::main]
async fn main() {
    let args: &'static Args = Box::leak(Box::new(parse_args()));
    let dir = tempfile::tempdir().expect("a scratch directory");
    println!(
        "load: {} components x {} metrics, a sample every {} ms, {} senders, batches of {}, \
         {} s per target; {} cores",
        args.components,
        args.metrics,
        args.interval_ms,
        args.senders,
        args.batch,
        args.seconds,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let (augur, addr) = start_augur(args, dir.path()).await;
    // The first round registers every component (auto-register): not timed.
    let warm = Args {
        seconds: 0,
        no_prometheus: true,
        prometheus: args.prometheus.clone(),
        augur: args.augur.clone(),
        ..*args
    };
    let warm: &'static Args = Box::leak(Box::new(warm));
    // Each sender its own connection.
    let sender = |args: &'static Args, shift_ms: i64| {
        let addr = addr.clone();
        move |s, t0| {
            let addr = addr.clone();
            async move { drive(Target::augur(&addr).await, args, s, t0 + shift_ms).await }
        }
    };
    let t0 = start_ms(args);
    let interval = args.interval_ms as i64;
    run(warm, t0, sender(warm, -interval)).await;
    let registered = rss::resident_bytes(&augur.0.id().to_string());
    let augur_out = run(args, t0, sender(args, 0)).await;
    let loaded = rss::resident_bytes(&augur.0.id().to_string());
    drop(augur);
    println!("| target | samples/s | p50 push (ms) | p99 push (ms) | accepted | rejected | busy retries |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    println!("{}", row("augur (gRPC Telemetry.Push)", &augur_out));
    if let (Some(reg), Some(end)) = (registered, loaded) {
        let per = |b: u64| b as f64 / args.components as f64;
        println!(
            "augur node resident: {:.0} MB after the first round, {:.0} MB after the load; \
             the whole process / components: {:.0} B, of it grown under the load: {:.0} B",
            reg as f64 / 1e6,
            end as f64 / 1e6,
            per(end),
            per(end.saturating_sub(reg))
        );
    }
    if let Some(bin) = args.prometheus() {
        let (prom, port) = start_prometheus(bin, dir.path()).await;
        let target = Target::prometheus(port);
        let prom_out = run(args, start_ms(args), move |s, t0| {
            drive(target.clone(), args, s, t0)
        })
        .await;
        drop(prom);
        println!("{}", row("prometheus (remote write)", &prom_out));
        println!(
            "ratio augur/prometheus (samples/s): {:.2}",
            augur_out.rate() / prom_out.rate()
        );
    }
}

//! Side-by-side Raft benchmark: Augur's three-node cluster against etcd's, same machine,
//! same run, same workload (~256-byte writes from 1, 16 and 64 concurrent clients), then
//! leader failover (SIGKILL of the leader → first successful write).
//!
//! `cargo bench -p augur-cli --bench raft_load -- --augur target/release/augur [--etcd etcd]`
//! (`benches/side-by-side/raft-vs-etcd.sh` runs it). Prints a Markdown report.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use augur_cli::Client;
use augur_proto::pb;
use base64::Engine;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;

/// The Raft benchmark: Augur's cluster, then etcd's, under the same load.
#[derive(clap::Parser)]
#[command(args_override_self = true)]
struct Args {
    /// The `augur` binary to run the three nodes with.
    #[arg(long, default_value = "target/release/augur")]
    augur: PathBuf,
    /// The `etcd` binary (Debian's etcd-server).
    #[arg(long, default_value = "etcd")]
    etcd: String,
    /// Measure Augur alone.
    #[arg(long)]
    no_etcd: bool,
    /// Seconds of load at each client count.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Augur leader kills (SIGKILL) for the failover figures.
    #[arg(long, default_value_t = 20)]
    kills: usize,
    /// etcd leader kills.
    #[arg(long, default_value_t = 5)]
    etcd_kills: usize,
    /// Concurrent client counts, one load phase each.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    clients: Vec<usize>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

impl Args {
    fn etcd(&self) -> Option<&str> {
        (!self.no_etcd).then_some(self.etcd.as_str())
    }
}

/// `AUGUR_BENCH_LOGS=DIR`: each Augur node's log goes to `DIR/augur-node<id>.log`.
fn log_dir() -> Option<std::path::PathBuf> {
    let dir = std::path::PathBuf::from(std::env::var_os("AUGUR_BENCH_LOGS")?);
    std::fs::create_dir_all(&dir).expect("AUGUR_BENCH_LOGS");
    Some(dir)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A node of either system: how to (re)start it.
struct Proc {
    cmd: Vec<String>,
    child: Option<Child>,
    /// Where its stdout and stderr go (appended across restarts); none: discarded.
    log: Option<std::path::PathBuf>,
}

impl Proc {
    fn start(&mut self) {
        let (out, err) = match &self.log {
            Some(path) => {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
                (Stdio::from(f.try_clone().expect("log")), Stdio::from(f))
            }
            None => (Stdio::null(), Stdio::null()),
        };
        let child = Command::new(&self.cmd[0])
            .args(&self.cmd[1..])
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.cmd[0]));
        self.child = Some(child);
    }
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().ok();
            c.wait().ok();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What the benchmark needs of a system under test.
trait System {
    fn name(&self) -> &'static str;
    fn procs(&mut self) -> &mut BTreeMap<u64, Proc>;
    async fn leader(&self) -> Option<u64>;
    /// Every node is up and has applied what the leader has (the cluster is whole again).
    async fn settled(&self) -> bool;
    /// A writer with its own connection; `endpoints` excludes none.
    async fn writer(&self, client_id: usize) -> Box<dyn Writer>;
}

trait Writer: Send {
    fn put(
        &mut self,
        key: String,
        value: String,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + '_>>;
}

// ---- Augur ----

struct Augur {
    _dir: tempfile::TempDir,
    addrs: BTreeMap<u64, String>,
    procs: BTreeMap<u64, Proc>,
}

impl Augur {
    fn start(bin: &std::path::Path) -> Self {
        let dir = tempfile::TempDir::new().unwrap();
        let addrs: BTreeMap<u64, String> = (1..=3)
            .map(|i| (i, format!("127.0.0.1:{}", free_port())))
            .collect();
        let members = addrs
            .iter()
            .map(|(i, a)| format!("{{ id = {i}, addr = \"{a}\" }}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut procs = BTreeMap::new();
        for (id, addr) in &addrs {
            let cfg = dir.path().join(format!("node{id}.toml"));
            std::fs::write(
                &cfg,
                format!(
                    "version = 1\n[node]\nid = {id}\nlisten = \"{addr}\"\ndata_dir = \"{}\"\n\
                     [cluster]\nbootstrap = true\nmembers = [{members}]\n[raft]\n{}\n",
                    dir.path().join(format!("data{id}")).display(),
                    // `AUGUR_BENCH_RAFT="heartbeat_ms = 50; max_payload_entries = 64"`: settings
                    // to try against the defaults.
                    std::env::var("AUGUR_BENCH_RAFT")
                        .unwrap_or_default()
                        .replace(';', "\n"),
                ),
            )
            .unwrap();
            let mut p = Proc {
                cmd: vec![
                    bin.display().to_string(),
                    "serve".into(),
                    "--config".into(),
                    cfg.display().to_string(),
                ],
                child: None,
                log: log_dir().map(|d| d.join(format!("augur-node{id}.log"))),
            };
            p.start();
            procs.insert(*id, p);
        }
        Self {
            _dir: dir,
            addrs,
            procs,
        }
    }
}

struct AugurWriter {
    client: Client,
}

impl Writer for AugurWriter {
    fn put(
        &mut self,
        key: String,
        value: String,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + '_>> {
        Box::pin(async move {
            let c = pb::Component {
                id: key,
                class: "bench".into(),
                group: "bench".into(),
                criticality: 3,
                placement: Some(pb::Placement {
                    host: "h1".into(),
                    rack: "r1".into(),
                    zone: "z1".into(),
                }),
                labels: [("payload".to_string(), value)].into_iter().collect(),
            };
            self.client
                .call(|ch| {
                    let c = c.clone();
                    async move {
                        pb::topology_client::TopologyClient::new(ch)
                            .upsert_component(pb::UpsertComponentRequest { component: Some(c) })
                            .await
                    }
                })
                .await
                .is_ok()
        })
    }
}

impl System for Augur {
    fn name(&self) -> &'static str {
        "augur"
    }
    fn procs(&mut self) -> &mut BTreeMap<u64, Proc> {
        &mut self.procs
    }
    async fn leader(&self) -> Option<u64> {
        for (id, addr) in &self.addrs {
            if self.procs[id].child.is_none() {
                continue;
            }
            let Ok(ep) = tonic::transport::Endpoint::from_shared(format!("http://{addr}")) else {
                continue;
            };
            let Ok(ch) = ep
                .connect_timeout(Duration::from_millis(200))
                .connect()
                .await
            else {
                continue;
            };
            if let Ok(s) = pb::cluster_client::ClusterClient::new(ch)
                .status(pb::StatusRequest {})
                .await
            {
                if s.get_ref().role == "leader" {
                    return Some(*id);
                }
            }
        }
        None
    }
    async fn settled(&self) -> bool {
        let mut applied = Vec::new();
        for addr in self.addrs.values() {
            let Ok(ep) = tonic::transport::Endpoint::from_shared(format!("http://{addr}")) else {
                return false;
            };
            let Ok(ch) = ep
                .connect_timeout(Duration::from_millis(200))
                .connect()
                .await
            else {
                return false;
            };
            let Ok(s) = pb::cluster_client::ClusterClient::new(ch)
                .status(pb::StatusRequest {})
                .await
            else {
                return false;
            };
            if s.get_ref().leader_id.is_none() {
                return false;
            }
            applied.push(s.get_ref().last_applied);
        }
        applied.iter().min() == applied.iter().max()
    }
    async fn writer(&self, client_id: usize) -> Box<dyn Writer> {
        // Spread clients' first contact over the nodes; redirects find the leader.
        let mut eps: Vec<String> = self.addrs.values().cloned().collect();
        let n = eps.len();
        eps.rotate_left(client_id % n);
        Box::new(AugurWriter {
            client: Client::new(eps),
        })
    }
}

// ---- etcd ----

struct Etcd {
    _dir: tempfile::TempDir,
    clients: BTreeMap<u64, String>,
    procs: BTreeMap<u64, Proc>,
}

impl Etcd {
    fn start(bin: &str) -> Self {
        let dir = tempfile::TempDir::new().unwrap();
        let peers: BTreeMap<u64, u16> = (1..=3).map(|i| (i, free_port())).collect();
        let clients: BTreeMap<u64, String> = (1..=3)
            .map(|i| (i, format!("http://127.0.0.1:{}", free_port())))
            .collect();
        let cluster = peers
            .iter()
            .map(|(i, p)| format!("n{i}=http://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut procs = BTreeMap::new();
        for i in 1..=3u64 {
            let mut p = Proc {
                cmd: vec![
                    bin.into(),
                    "--name".into(),
                    format!("n{i}"),
                    "--data-dir".into(),
                    dir.path().join(format!("n{i}")).display().to_string(),
                    "--listen-client-urls".into(),
                    clients[&i].clone(),
                    "--advertise-client-urls".into(),
                    clients[&i].clone(),
                    "--listen-peer-urls".into(),
                    format!("http://127.0.0.1:{}", peers[&i]),
                    "--initial-advertise-peer-urls".into(),
                    format!("http://127.0.0.1:{}", peers[&i]),
                    "--initial-cluster".into(),
                    cluster.clone(),
                    "--initial-cluster-state".into(),
                    "new".into(),
                    "--initial-cluster-token".into(),
                    "augur-bench".into(),
                ],
                child: None,
                log: None,
            };
            p.start();
            procs.insert(i, p);
        }
        Self {
            _dir: dir,
            clients,
            procs,
        }
    }
}

type Http = HttpClient<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

fn http_client() -> Http {
    let mut conn = hyper_util::client::legacy::connect::HttpConnector::new();
    conn.set_nodelay(true);
    HttpClient::builder(TokioExecutor::new())
        .pool_max_idle_per_host(64)
        .build(conn)
}

/// Per-request limit for etcd, as an etcd client's request context would set: short, so a
/// client on a dead or leaderless member moves on quickly (this favours etcd's failover).
const ETCD_REQUEST_TIMEOUT: Duration = Duration::from_millis(300);

async fn post(http: &Http, url: &str, body: String) -> Option<serde_json::Value> {
    let req = hyper::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .ok()?;
    let (ok, bytes) = tokio::time::timeout(ETCD_REQUEST_TIMEOUT, async {
        let resp = http.request(req).await.ok()?;
        let ok = resp.status().is_success();
        Some((ok, resp.into_body().collect().await.ok()?.to_bytes()))
    })
    .await
    .ok()??;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    (ok && v.get("error").is_none()).then_some(v)
}

struct EtcdWriter {
    http: Http,
    urls: Vec<String>,
    at: usize,
}

impl Writer for EtcdWriter {
    fn put(
        &mut self,
        key: String,
        value: String,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + '_>> {
        Box::pin(async move {
            let b64 = base64::engine::general_purpose::STANDARD;
            let body = serde_json::json!({ "key": b64.encode(key), "value": b64.encode(value) })
                .to_string();
            // Like an etcd client: stay on one member, move to the next one when it fails.
            for _ in 0..self.urls.len() * 50 {
                let url = format!("{}/v3/kv/put", self.urls[self.at]);
                if post(&self.http, &url, body.clone()).await.is_some() {
                    return true;
                }
                self.at = (self.at + 1) % self.urls.len();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            false
        })
    }
}

impl System for Etcd {
    fn name(&self) -> &'static str {
        "etcd"
    }
    fn procs(&mut self) -> &mut BTreeMap<u64, Proc> {
        &mut self.procs
    }
    async fn leader(&self) -> Option<u64> {
        let http = http_client();
        for (id, url) in &self.clients {
            if self.procs[id].child.is_none() {
                continue;
            }
            let Some(v) = post(&http, &format!("{url}/v3/maintenance/status"), "{}".into()).await
            else {
                continue;
            };
            if v["leader"].is_string() && v["leader"] == v["header"]["member_id"] {
                return Some(*id);
            }
        }
        None
    }
    async fn settled(&self) -> bool {
        let http = http_client();
        let mut seen = Vec::new();
        for url in self.clients.values() {
            let Some(v) = post(&http, &format!("{url}/v3/maintenance/status"), "{}".into()).await
            else {
                return false;
            };
            if !v["leader"].is_string() {
                return false;
            }
            seen.push((
                v["leader"].clone(),
                v["raftIndex"]
                    .as_str()
                    .and_then(|s| s.parse::<u64>().ok())
                    .unwrap_or(0),
            ));
        }
        let same_leader = seen.windows(2).all(|w| w[0].0 == w[1].0);
        let idx: Vec<u64> = seen.iter().map(|s| s.1).collect();
        same_leader && idx.iter().max().unwrap_or(&0) - idx.iter().min().unwrap_or(&0) <= 1
    }
    async fn writer(&self, client_id: usize) -> Box<dyn Writer> {
        let urls: Vec<String> = self.clients.values().cloned().collect();
        Box::new(EtcdWriter {
            http: http_client(),
            at: client_id % urls.len(),
            urls,
        })
    }
}

// ---- the workload ----

const VALUE_BYTES: usize = 200; // + key and envelope ≈ 256 bytes per command

struct LoadResult {
    clients: usize,
    writes: u64,
    secs: f64,
    p50_ms: f64,
    p99_ms: f64,
}

async fn wait_leader<S: System>(sys: &S) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(l) = sys.leader().await {
            return l;
        }
        assert!(
            Instant::now() < deadline,
            "{}: no leader within 60 s",
            sys.name()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn load<S: System>(sys: &S, clients: usize, secs: u64) -> LoadResult {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    let value = "v".repeat(VALUE_BYTES);
    for c in 0..clients {
        let mut w = sys.writer(c).await;
        w.put(format!("warm-{c}"), value.clone()).await;
        let stop = stop.clone();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                if w.put(format!("k-{c}-{}", i % 1000), value.clone()).await {
                    h.record(t.elapsed().as_micros().max(1) as u64).ok();
                }
                i += 1;
            }
            h
        }));
    }
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    for t in tasks {
        all.add(t.await.unwrap()).unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    LoadResult {
        clients,
        writes: all.len(),
        secs: elapsed,
        p50_ms: all.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: all.value_at_quantile(0.99) as f64 / 1000.0,
    }
}

/// SIGKILL the leader, time until a write succeeds, restart it and let it settle.
async fn failovers<S: System>(sys: &mut S, kills: usize) -> Vec<f64> {
    let mut times = Vec::new();
    let value = "v".repeat(VALUE_BYTES);
    for k in 0..kills {
        let leader = wait_leader(sys).await;
        let mut w = sys.writer(leader as usize).await;
        assert!(
            w.put(format!("pre-{k}"), value.clone()).await,
            "write before kill"
        );
        let t = Instant::now();
        sys.procs().get_mut(&leader).unwrap().kill();
        let mut n = 0;
        while !w.put(format!("post-{k}-{n}"), value.clone()).await {
            n += 1;
        }
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        eprintln!(
            "{}: kill {k} of node {leader}: first write after {ms:.0} ms",
            sys.name()
        );
        times.push(ms);
        sys.procs().get_mut(&leader).unwrap().start();
        // The next kill only once the restarted node has rejoined and caught up.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !sys.settled().await {
            assert!(
                Instant::now() < deadline,
                "{}: cluster did not settle",
                sys.name()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    times
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i]
}

async fn run_system<S: System>(
    mut sys: S,
    args: &Args,
    kills: usize,
) -> (Vec<LoadResult>, Vec<f64>) {
    wait_leader(&sys).await;
    let mut results = Vec::new();
    for &c in &args.clients {
        let r = load(&sys, c, args.seconds).await;
        eprintln!(
            "{}: {} clients: {:.0} writes/s, p50 {:.2} ms, p99 {:.2} ms",
            sys.name(),
            c,
            r.writes as f64 / r.secs,
            r.p50_ms,
            r.p99_ms
        );
        results.push(r);
    }
    let mut f = failovers(&mut sys, kills).await;
    f.sort_by(|a, b| a.partial_cmp(b).unwrap());
    eprintln!(
        "{}: failover median {:.0} ms, p99 {:.0} ms over {} kills",
        sys.name(),
        quantile(&f, 0.5),
        quantile(&f, 0.99),
        f.len()
    );
    (results, f)
}

fn main() {
    let args = <Args as clap::Parser>::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let augur = run_system(Augur::start(&args.augur), &args, args.kills).await;
        let etcd = match args.etcd() {
            Some(bin) => Some(run_system(Etcd::start(bin), &args, args.etcd_kills).await),
            None => None,
        };
        println!("| clients | augur writes/s | augur p50 / p99 ms | etcd writes/s | etcd p50 / p99 ms | ratio |");
        println!("|---:|---:|---:|---:|---:|---:|");
        for (i, a) in augur.0.iter().enumerate() {
            let at = a.writes as f64 / a.secs;
            match &etcd {
                Some((e, _)) => {
                    let e = &e[i];
                    let et = e.writes as f64 / e.secs;
                    println!(
                        "| {} | {:.0} | {:.2} / {:.2} | {:.0} | {:.2} / {:.2} | {:.2}× |",
                        a.clients, at, a.p50_ms, a.p99_ms, et, e.p50_ms, e.p99_ms, at / et
                    );
                }
                None => println!("| {} | {:.0} | {:.2} / {:.2} | – | – | – |", a.clients, at, a.p50_ms, a.p99_ms),
            }
        }
        let af = &augur.1;
        println!();
        println!("| failover (SIGKILL leader → first write) | kills | median ms | p99 ms | max ms |");
        println!("|---|---:|---:|---:|---:|");
        println!("| augur | {} | {:.0} | {:.0} | {:.0} |", af.len(), quantile(af, 0.5), quantile(af, 0.99), af.last().copied().unwrap_or(f64::NAN));
        if let Some((_, ef)) = &etcd {
            println!("| etcd | {} | {:.0} | {:.0} | {:.0} |", ef.len(), quantile(ef, 0.5), quantile(ef, 0.99), ef.last().copied().unwrap_or(f64::NAN));
        }
    });
}

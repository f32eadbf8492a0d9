//! `augur-side-by-side`: the predictive-against-reactive experiment on real processes.
//!
//! Plays the bench fault schedule ([`Schedule::bench`], scaled to `--seconds`) against a
//! real HAProxy in front of six `augur-sample` processes under `--rate` req/s, writes the
//! JSON report to `--out` and prints a short table. `--mode reactive`: HAProxy's own health
//! checks alone. `--mode augur`: the same, plus a single-node Augur cluster (`augur serve`,
//! planner acting) and the reference agent, which adopts the instances, pushes their metrics
//! as telemetry and carries out the failovers the planner decides.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use augur_agent::scenario::{
    self, BoxError, BoxFuture, Mode, ModeHook, RunEnv, ScenarioConfig, ScenarioReport, Schedule,
};
use clap::Parser;

/// The modes this binary can run.
const SUPPORTED_MODES: &[&str] = &["reactive", "augur"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ModeArg {
    Reactive,
    Augur,
}

fn parse_mode(s: &str) -> Result<ModeArg, String> {
    match s {
        "reactive" => Ok(ModeArg::Reactive),
        "augur" => Ok(ModeArg::Augur),
        other => Err(format!(
            "unsupported mode {other:?}; supported: {}",
            SUPPORTED_MODES.join(", ")
        )),
    }
}

/// One fault schedule against real HAProxy and sample-service processes, counting failed
/// requests and latency.
#[derive(Debug, Parser)]
#[command(name = "augur-side-by-side", version)]
struct Args {
    /// Who acts on failing instances: `reactive` (HAProxy health checks alone).
    #[arg(long, value_parser = parse_mode)]
    mode: ModeArg,
    /// Length of the run; the bench schedule is scaled to it.
    #[arg(long, default_value_t = 150.0)]
    seconds: f64,
    /// Seconds of steady load before the schedule's first second (the run is that much
    /// longer): Augur's predictors start with some history, as they would in production.
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// Load, in requests per second.
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// Seed passed to every sample instance.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where the JSON report goes.
    #[arg(long)]
    out: PathBuf,
    /// The `augur-sample` binary (default: next to this one).
    #[arg(long)]
    sample_bin: Option<PathBuf>,
    /// Scratch directory for HAProxy's config, socket and log (default: next to `--out`).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// The `augur` binary for `--mode augur` (default: next to this one).
    #[arg(long)]
    augur_bin: Option<PathBuf>,
}

/// `--mode augur`: an Augur node and the agent, started once the run is under way.
struct AugurHook {
    augur: PathBuf,
    node: Option<std::process::Child>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    agent: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    endpoint: String,
}

impl AugurHook {
    async fn start(&mut self, env: &RunEnv) -> anyhow::Result<()> {
        use augur_proto::pb;
        use augur_proto::pb::cluster_client::ClusterClient;
        use augur_proto::pb::topology_client::TopologyClient;
        let dir = env.work_dir.join("augur");
        std::fs::create_dir_all(&dir)?;
        let port = augur_agent::free_local_port()?;
        self.endpoint = format!("127.0.0.1:{port}");
        let node_cfg = dir.join("node.toml");
        std::fs::write(
            &node_cfg,
            format!(
                "version = 1\n[node]\nid = 1\nlisten = \"{ep}\"\ndata_dir = \"{data}\"\n\
                 [cluster]\nbootstrap = true\nmembers = [{{ id = 1, addr = \"{ep}\" }}]\n\
                 [planner]\nact = true\nevery_ms = 1000\n",
                ep = self.endpoint,
                data = dir.join("data").display()
            ),
        )?;
        let log = std::fs::File::create(dir.join("node.log"))?;
        self.node = Some(
            std::process::Command::new(&self.augur)
                .args(["serve", "--config"])
                .arg(&node_cfg)
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("starting {}", self.augur.display()))?,
        );
        let mut client = augur_proto::client::Client::new(vec![self.endpoint.clone()]);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let s = client
                .call(|c| async move { ClusterClient::new(c).status(pb::StatusRequest {}).await })
                .await;
            if s.is_ok_and(|s| s.into_inner().leader_id == Some(1)) {
                break;
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the node did not lead within 30 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        // The instances' host, and one in another zone with room for shadows.
        for (host, rack, zone) in [
            ("node-a1", "rack-a", "zone-a"),
            ("node-b1", "rack-b", "zone-b"),
        ] {
            let req = pb::UpsertHostRequest {
                placement: Some(pb::Placement {
                    host: host.into(),
                    rack: rack.into(),
                    zone: zone.into(),
                }),
                capacity: 32,
            };
            client
                .call(|c| {
                    let req = req.clone();
                    async move { TopologyClient::new(c).upsert_host(req).await }
                })
                .await?;
        }
        let [lo, hi] = [
            env.instance_spec.port_range.0,
            env.instance_spec.port_range.1,
        ];
        let (shadow_lo, shadow_hi) = if hi < 60_000 {
            (hi + 1, hi + 100)
        } else {
            (lo - 100, lo - 1)
        };
        let quote = |v: &str| format!("{v:?}");
        let command = env
            .instance_spec
            .command
            .iter()
            .map(|c| quote(c))
            .collect::<Vec<_>>()
            .join(", ");
        let adopt = env
            .instances
            .iter()
            .map(|i| {
                format!(
                    "[[instances.adopt]]\nname = {}\naddr = \"{}\"\n",
                    quote(&i.name),
                    i.addr()
                )
            })
            .collect::<String>();
        let agent_cfg = dir.join("agent.toml");
        std::fs::write(
            &agent_cfg,
            format!(
                "name = \"agent-1\"\nendpoints = [\"{ep}\"]\nstate_file = \"{state}\"\n\
                 [haproxy]\nsocket = \"{socket}\"\nbackend = {backend}\n\
                 [instances]\ncommand = [{command}]\nport_range = [{shadow_lo}, {shadow_hi}]\nhealth_path = {health}\n{adopt}\
                 [placement]\nhost = \"node-a1\"\nrack = \"rack-a\"\nzone = \"zone-a\"\n\
                 [gate]\nmin_window_ms = 1000\nmax_window_ms = 10000\npoll_ms = 200\n",
                ep = self.endpoint,
                state = dir.join("agent.seq").display(),
                socket = env.haproxy_socket.display(),
                backend = quote(&env.backend),
                health = quote(&env.instance_spec.health_path),
            ),
        )?;
        let cfg = augur_agent::AgentConfig::load(&agent_cfg)?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        self.stop = Some(tx);
        self.agent = Some(tokio::spawn(augur_agent::Agent::new(cfg).run(async {
            let _ = rx.await;
        })));
        // A failing original is better left quickly: two canary steps, not five.
        let policy = pb::SetPolicyRequest {
            group: env.backend.clone(),
            policy: Some(pb::Policy {
                risk_tolerance: 50,
                approval: "act".into(),
                canary_steps: vec![25, 100],
            }),
        };
        client
            .call(|c| {
                let req = policy.clone();
                async move { TopologyClient::new(c).set_policy(req).await }
            })
            .await?;
        // Equal shares of the service once the agent registered every instance.
        let n = env.instances.len() as u32;
        let weights: std::collections::HashMap<String, u32> = env
            .instances
            .iter()
            .enumerate()
            .map(|(i, inst)| (inst.name.clone(), 100 / n + u32::from((i as u32) < 100 % n)))
            .collect();
        let req = pb::SetWeightsRequest {
            service: env.backend.clone(),
            weights,
        };
        loop {
            let r = client
                .call(|c| {
                    let req = req.clone();
                    async move { TopologyClient::new(c).set_weights(req).await }
                })
                .await;
            if r.is_ok() {
                break;
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "weights not set: {r:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Ok(())
    }
}

impl ModeHook for AugurHook {
    fn on_started<'a>(&'a mut self, env: &'a RunEnv) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(async move { self.start(env).await.map_err(|e| e.into()) })
    }

    fn on_finished(&mut self) -> BoxFuture<'_, serde_json::Value> {
        Box::pin(async move {
            use augur_proto::pb;
            let mut client = augur_proto::client::Client::new(vec![self.endpoint.clone()]);
            let shadows = client
                .call(|c| async move {
                    pb::control_client::ControlClient::new(c)
                        .list_shadows(pb::ListShadowsRequest {})
                        .await
                })
                .await
                .map(|r| r.into_inner().shadows)
                .unwrap_or_default();
            let notes: Vec<serde_json::Value> = shadows
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "component": s.component,
                        "shadow": s.shadow,
                        "state": s.state,
                        "history": s.history.iter().map(|h| format!("{}: {}", h.state, h.reason)).collect::<Vec<_>>(),
                    })
                })
                .collect();
            if let Some(tx) = self.stop.take() {
                let _ = tx.send(());
            }
            if let Some(agent) = self.agent.take() {
                let _ = agent.await;
            }
            if let Some(mut node) = self.node.take() {
                let _ = node.kill();
                let _ = node.wait();
            }
            serde_json::json!({ "shadows": notes })
        })
    }
}

impl Drop for AugurHook {
    fn drop(&mut self) {
        if let Some(mut node) = self.node.take() {
            let _ = node.kill();
            let _ = node.wait();
        }
    }
}

fn sample_binary(args: &Args) -> anyhow::Result<PathBuf> {
    if let Some(path) = &args.sample_bin {
        return Ok(path.clone());
    }
    let me = std::env::current_exe().context("locating this binary")?;
    let path = me.with_file_name("augur-sample");
    anyhow::ensure!(
        path.is_file(),
        "no augur-sample next to {} (build it: cargo build --release -p augur-agent --bins, \
         or pass --sample-bin)",
        me.display()
    );
    Ok(path)
}

fn print_table(report: &ScenarioReport) {
    let load = &report.load;
    println!(
        "mode {}: {} requests at {} req/s over {} s, {} failed ({:.3}%), p50 {:.1} ms, \
         p99 {:.1} ms (ok) / {:.1} ms (all), max {:.1} ms",
        report.mode,
        load.sent,
        report.rate,
        report.duration_s,
        load.failed,
        100.0 * load.failed as f64 / load.sent.max(1) as f64,
        load.latency_ok.p50_ms,
        report.p99_ok_ms,
        report.p99_all_ms,
        load.latency_all.max_ms,
    );
    println!(
        "{:<8} {:<20} {:>7} {:>10} {:>12} {:>16} {:>6}",
        "instance", "fault", "at_s", "window_s", "failed", "in_window", "exit"
    );
    for f in &report.faults {
        println!(
            "{:<8} {:<20} {:>7.1} {:>10} {:>12} {:>16} {:>6}",
            f.fault.instance,
            f.fault.kind.label(),
            f.fault.at_s,
            format!("{:.0}..{:.0}", f.window_s.0, f.window_s.1),
            f.failed_attributed,
            format!("{}/{}", f.failed_in_window, f.sent_in_window),
            f.exit_code.map_or("-".to_owned(), |c| c.to_string()),
        );
        if let Some(error) = &f.error {
            println!("         injection failed: {error}");
        }
    }
    println!(
        "failed charged to no fault: {}; failures by kind: {}",
        report.failed_unattributed,
        load.failed_by_kind
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
}

fn write_report(path: &Path, report: &ScenarioReport) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let json = serde_json::to_vec_pretty(report).context("encoding the report")?;
    std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))
}

async fn run(args: Args) -> anyhow::Result<bool> {
    anyhow::ensure!(
        args.seconds.is_finite() && args.seconds >= 5.0,
        "--seconds must be at least 5, got {}",
        args.seconds
    );
    let mode = match args.mode {
        ModeArg::Reactive => Mode::reactive(),
        ModeArg::Augur => {
            let augur = match &args.augur_bin {
                Some(p) => p.clone(),
                None => std::env::current_exe()?.with_file_name("augur"),
            };
            anyhow::ensure!(
                augur.exists(),
                "{} is missing: build augur-cli, or pass --augur-bin",
                augur.display()
            );
            Mode::with_hook(
                "augur",
                Box::new(AugurHook {
                    augur,
                    node: None,
                    stop: None,
                    agent: None,
                    endpoint: String::new(),
                }),
            )
        }
    };
    let work_dir = match &args.work_dir {
        Some(dir) => dir.clone(),
        None => {
            let stem = args
                .out
                .file_stem()
                .map_or("run".into(), |s| s.to_string_lossy().into_owned());
            args.out.with_file_name(format!("{stem}.work"))
        }
    };
    let mut config = ScenarioConfig::new(
        Schedule::bench(args.seconds).delayed(args.warmup),
        sample_binary(&args)?,
        work_dir,
    );
    config.rate = args.rate;
    config.seed = args.seed;
    let report = scenario::run(config, mode).await?;
    write_report(&args.out, &report)?;
    print_table(&report);
    println!("report: {}", args.out.display());
    Ok(report.faults.iter().all(|f| f.error.is_none()))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("error: some faults could not be injected (see the report)");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

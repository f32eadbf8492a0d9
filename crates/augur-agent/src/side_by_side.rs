//! The headline experiment's Augur side and its report: [`augur_mode`] runs a single-node
//! Augur cluster with the planner acting and the reference agent alongside a scenario (see
//! [`crate::scenario`]); [`table`] and [`Comparison`] present one run and a pair.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;

use crate::scenario::{BoxError, BoxFuture, Mode, ModeHook, RunEnv, ScenarioReport};

/// The `augur` mode: `augur` (the binary) serves a single-node cluster with the planner
/// acting, and the reference agent adopts the instances, pushes their metrics and carries the
/// failovers out.
pub fn augur_mode(augur: PathBuf) -> Mode {
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

/// `--mode augur`: an Augur node and the agent, started once the run is under way.
pub struct AugurHook {
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
        // Each run is a new cluster: a data directory left by an earlier run (perhaps by
        // another version, whose log this one cannot read) is not reused.
        match std::fs::remove_dir_all(dir.join("data")) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).context("removing the previous run's data directory")
            }
            _ => {}
        }
        std::fs::create_dir_all(&dir)?;
        let port = crate::free_local_port()?;
        self.endpoint = format!("127.0.0.1:{port}");
        let node_cfg = dir.join("node.toml");
        std::fs::write(
            &node_cfg,
            format!(
                "version = 1\n[node]\nid = 1\nlisten = \"{ep}\"\ndata_dir = \"{data}\"\n\
                 [cluster]\nbootstrap = true\nmembers = [{{ id = 1, addr = \"{ep}\" }}]\n\
                 [telemetry]\ntick_ms = 500\nmodel = \"http-service\"\n[planner]\nact = true\nevery_ms = 500\n",
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
        let cfg = crate::AgentConfig::load(&agent_cfg)?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        self.stop = Some(tx);
        self.agent = Some(tokio::spawn(crate::Agent::new(cfg).run(async {
            let _ = rx.await;
        })));
        // A failing original is better left quickly: two canary steps, not five, the first
        // half its share (a smaller one takes longer to serve the requests its gate needs).
        let policy = pb::SetPolicyRequest {
            group: env.backend.clone(),
            policy: Some(pb::Policy {
                risk_tolerance: 50,
                approval: "act".into(),
                canary_steps: vec![50, 100],
                scaling: None,
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

/// The run's figures, and each fault's, as a table.
pub fn table(report: &ScenarioReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let load = &report.load;
    let _ = writeln!(
        out,
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
    let _ = writeln!(
        out,
        "{:<8} {:<20} {:>7} {:>10} {:>12} {:>16} {:>6}",
        "instance", "fault", "at_s", "window_s", "failed", "in_window", "exit"
    );
    for f in &report.faults {
        let _ = writeln!(
            out,
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
            let _ = writeln!(out, "         injection failed: {error}");
        }
    }
    let _ = writeln!(
        out,
        "failed charged to no fault: {}; failures by kind: {}",
        report.failed_unattributed,
        load.failed_by_kind
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    out
}

/// Writes the report as JSON, creating its folder.
pub fn write_report(path: &Path, report: &ScenarioReport) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let json = serde_json::to_vec_pretty(report).context("encoding the report")?;
    std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))
}

/// One fault kind's failed requests in both runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KindComparison {
    pub kind: String,
    pub reactive: u64,
    pub augur: u64,
    /// 1 − augur/reactive; `None` when the reactive run lost nothing to this kind.
    pub reduction: Option<f64>,
}

/// A reactive run and an Augur run of the same schedule, side by side.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub failed_reactive: u64,
    pub failed_augur: u64,
    pub p99_all_ms_reactive: f64,
    pub p99_all_ms_augur: f64,
    pub by_kind: Vec<KindComparison>,
    /// `[instance, kind, reactive, augur]` per fault.
    pub by_fault: Vec<(String, String, u64, u64)>,
    /// The Augur run's shadows: `[component, state]`.
    pub shadows: Vec<(String, String)>,
}

impl Comparison {
    pub fn of(reactive: &ScenarioReport, augur: &ScenarioReport) -> Self {
        let kinds = ["degrade_then_crash", "sudden"];
        let by_kind = kinds
            .iter()
            .map(|kind| {
                let sum = |r: &ScenarioReport| -> u64 {
                    r.faults
                        .iter()
                        .filter(|f| f.fault.kind.label() == *kind)
                        .map(|f| f.failed_attributed)
                        .sum()
                };
                let (r, a) = (sum(reactive), sum(augur));
                KindComparison {
                    kind: (*kind).to_owned(),
                    reactive: r,
                    augur: a,
                    reduction: (r > 0).then(|| 1.0 - a as f64 / r as f64),
                }
            })
            .collect();
        let by_fault = reactive
            .faults
            .iter()
            .zip(&augur.faults)
            .map(|(r, a)| {
                (
                    r.fault.instance.clone(),
                    r.fault.kind.label().to_owned(),
                    r.failed_attributed,
                    a.failed_attributed,
                )
            })
            .collect();
        let shadows = augur.mode_notes["shadows"]
            .as_array()
            .map(|v| {
                v.iter()
                    .map(|s| {
                        let field = |k: &str| s[k].as_str().unwrap_or_default().to_owned();
                        (field("component"), field("state"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            failed_reactive: reactive.failed,
            failed_augur: augur.failed,
            p99_all_ms_reactive: reactive.p99_all_ms,
            p99_all_ms_augur: augur.p99_all_ms,
            by_kind,
            by_fault,
            shadows,
        }
    }

    pub fn text(&self) -> String {
        let mut lines = vec![
            format!("{:<34}{:>10}{:>10}", "", "reactive", "augur"),
            format!(
                "{:<34}{:>10}{:>10}",
                "failed requests", self.failed_reactive, self.failed_augur
            ),
            format!(
                "{:<34}{:>10.1}{:>10.1}",
                "p99, all requests (ms)", self.p99_all_ms_reactive, self.p99_all_ms_augur
            ),
        ];
        for (instance, kind, r, a) in &self.by_fault {
            lines.push(format!(
                "  {:<32}{r:>10}{a:>10}",
                format!("{instance} {kind}")
            ));
        }
        for k in &self.by_kind {
            if let Some(red) = k.reduction {
                lines.push(format!(
                    "{}: {} -> {} failed ({:.1} % fewer)",
                    k.kind,
                    k.reactive,
                    k.augur,
                    100.0 * red
                ));
            }
        }
        let shadows: Vec<String> = self
            .shadows
            .iter()
            .map(|(c, s)| format!("{c} {s}"))
            .collect();
        lines.push(format!(
            "augur shadows: {} ({})",
            shadows.len(),
            shadows.join(", ")
        ));
        lines.join("\n")
    }
}

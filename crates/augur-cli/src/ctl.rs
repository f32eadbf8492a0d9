//! `augur ctl`: a client for a running cluster.

use std::collections::BTreeMap;
use std::time::Duration;

use augur_proto::pb;
use augur_proto::pb::cluster_client::ClusterClient;
use augur_proto::pb::control_client::ControlClient;
use augur_proto::pb::topology_client::TopologyClient;
use clap::{Args, Subcommand, ValueEnum};
use futures::StreamExt;
use serde::Serialize;
use tonic::Status;

use crate::forecast_ctl::ModelCommand;

use crate::forecast_ctl;
use crate::graph_ctl::{self, FlowsCommand, GraphFormat, TopologyCommand};
use crate::output::{members, ActionView, ComponentView, StatusView};
use crate::plan_ctl;
use augur_cli::Client;

/// The policy in force for `group` (its own, else the default).
async fn get_policy(client: &mut Client, group: &str) -> Result<pb::Policy, Status> {
    let group = group.to_owned();
    Ok(client
        .call(|c| {
            let group = group.clone();
            async move {
                TopologyClient::new(c)
                    .get_policy(pb::GetPolicyRequest {
                        group,
                        consistency: pb::ReadConsistency::Linearizable.into(),
                    })
                    .await
            }
        })
        .await?
        .into_inner())
}

/// One try of a call that legitimately takes long (an upload, a learner catching up).
pub(crate) const LONG_CALL: Duration = Duration::from_secs(120);

#[derive(Args)]
pub struct CtlArgs {
    /// Node(s) to talk to, HOST:PORT, comma-separated; redirects to the leader are followed.
    #[arg(
        long,
        global = true,
        env = "AUGUR_ENDPOINT",
        default_value = "127.0.0.1:7001",
        value_delimiter = ',',
        value_parser = parse_endpoint
    )]
    endpoint: Vec<String>,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum ReadMode {
    Linearizable,
    Local,
}

impl ReadMode {
    pub(crate) fn wire(self) -> i32 {
        match self {
            ReadMode::Linearizable => pb::ReadConsistency::Linearizable as i32,
            ReadMode::Local => pb::ReadConsistency::Local as i32,
        }
    }
}

#[derive(Subcommand)]
enum CtlCommand {
    /// The node's view: role, leader, term, applied index, members.
    Status,
    /// The cluster's members.
    Members,
    /// Adds a node as a non-voting learner and waits until it has caught up.
    AddLearner { id: u64, addr: String },
    /// Makes a learner a voter.
    Promote { id: u64 },
    /// Registers, lists and inspects components.
    #[command(subcommand)]
    Component(ComponentCommand),
    /// Sets or shows a service's traffic weights.
    #[command(subcommand)]
    Weights(WeightsCommand),
    /// Sets or shows a service group's policy (risk tolerance, approval, canary steps).
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Lists the action log, optionally following it.
    Actions {
        /// First sequence number to show.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Keep streaming new actions, reconnecting across leader changes.
        #[arg(long)]
        follow: bool,
    },
    /// Appends an action or reports its outcome (what orchestrators and the planner do).
    #[command(subcommand)]
    Action(ActionCommand),
    /// The dependency map: nodes, edges with their sources, recently faded edges.
    Graph {
        #[arg(long)]
        group: Option<String>,
        #[arg(long)]
        zone: Option<String>,
        /// `dot` prints Graphviz.
        #[arg(long, value_enum, default_value_t = GraphFormat::Text)]
        format: GraphFormat,
        #[arg(long, value_enum, default_value_t = ReadMode::Linearizable)]
        consistency: ReadMode,
    },
    /// Blast radius, action threshold and risk per component, largest blast radius first.
    Risk {
        /// Only this component.
        id: Option<String>,
        /// Most rows shown; 0 for all.
        #[arg(long, default_value_t = 0)]
        limit: u32,
    },
    /// A component's latest forecast: HPS, anomaly, P(fail) at 5 min / 1 h / 24 h, lead
    /// time, and the indicators behind it.
    Forecast { id: String },
    /// Failover plans: what the planner would do now (`plan` alone, nothing committed), the
    /// plans it recorded, their approval or rejection (`plan approve ID`).
    Plan {
        #[command(subcommand)]
        command: Option<plan_ctl::PlanCommand>,
    },
    /// The state snapshot the cluster holds for a component (recorded when a shadow of it
    /// was synced): version, size, who recorded it.
    State { id: String },
    /// Every component's shadow: where it runs, where it stands, and each step with its
    /// reason.
    Shadows,
    /// Start a failover now (e.g. before maintenance): a shadow on --host, or on the safest
    /// host with room in another failure domain, then provision, sync, validation, the gated
    /// traffic shift and promotion, as for a predicted failure.
    Failover {
        id: String,
        #[arg(long)]
        host: Option<String>,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Components by rising Health Projection Score (riskiest first).
    AtRisk {
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Only components whose risk, 1 − HPS/100, is at least this.
        #[arg(long, default_value_t = 0.0)]
        min_risk: f64,
    },
    /// Pushes samples from a CSV file (`component,metric,timestamp_ms,value`).
    Push { file: std::path::PathBuf },
    /// The LSTM every node scores with: `get` shows the recorded one and this node's, `set
    /// FILE` records a model saved by `augur train` (every node switches to it).
    #[command(subcommand)]
    Model(ModelCommand),
    /// What fails, and how likely, if this component fails.
    WhatIf {
        id: String,
        /// Simulated worlds (default 16).
        #[arg(long, default_value_t = 0)]
        samples: u32,
    },
    /// Ranks the components most likely to have caused an incident, from the node's metric
    /// history (the node the telemetry was pushed to).
    RootCause {
        /// When the fault started: unix seconds or ms, `YYYY-mm-dd HH:MM:SS` (UTC), `now`,
        /// or `now-10m` / `-10m` (units s, m, h).
        #[arg(long, allow_hyphen_values = true)]
        from: String,
        /// When the incident window ends (same forms); default: now.
        #[arg(long, default_value = "now", allow_hyphen_values = true)]
        to: String,
        /// Seconds of history before `--from` taken as the healthy reference; 0: all kept.
        #[arg(long, default_value_t = 0)]
        reference: u64,
        /// Rank by metrics alone, without the dependency graph's re-ranking.
        #[arg(long)]
        metrics_only: bool,
        /// Most rows shown; 0 for all.
        #[arg(long, default_value_t = 0)]
        limit: u32,
    },
    /// Applies or checks a topology file (hosts, components, declared dependencies).
    #[command(subcommand)]
    Topology(TopologyCommand),
    /// Records dependency edges from network flow records.
    #[command(subcommand)]
    Flows(FlowsCommand),
    /// Finds which components' failures precede others' in a metric recording (lagged
    /// Granger tests) and records them as causal edges.
    Causal {
        /// CSV: a `time` column, then one column per metric named `<component>_<metric>`.
        #[arg(long)]
        metrics: std::path::PathBuf,
        #[arg(long, default_value_t = 3)]
        max_lag: usize,
        #[arg(long, default_value_t = 0.01)]
        alpha: f64,
        #[arg(long, default_value_t = 0.05)]
        min_strength: f64,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Sets GROUP's policy (`*` for the default of groups without their own). What is not
    /// given keeps its value in the policy in force for GROUP (its own, else the default).
    Set {
        group: String,
        /// 0 (move at the first sign of risk) ..= 100 (only when failure is near certain).
        /// Default policy: 50.
        #[arg(long)]
        risk_tolerance: Option<u32>,
        /// `act`: carry plans out; `recommend`: only show them. Default policy: act.
        #[arg(long)]
        approval: Option<String>,
        /// Canary steps in percent, strictly rising, ending at 100. Default policy:
        /// 1,5,25,50,100.
        #[arg(long, value_delimiter = ',')]
        steps: Option<Vec<u32>>,
        /// Scale the group ahead of its forecast load: requests per second one instance
        /// serves. A group without it is never scaled.
        #[arg(long, conflicts_with = "no_scale")]
        scale_rps: Option<u32>,
        /// Spare capacity kept above the forecast peak, in percent (20 when scaling starts).
        #[arg(long)]
        scale_headroom: Option<u32>,
        /// Most instances the group may run (20 when scaling starts).
        #[arg(long)]
        scale_max: Option<u32>,
        /// How far ahead the load is projected, in seconds: about the time a new instance
        /// takes to start serving (120 when scaling starts).
        #[arg(long)]
        scale_horizon: Option<u32>,
        /// Stop scaling the group.
        #[arg(long)]
        no_scale: bool,
    },
    /// The policy in force for GROUP.
    Get { group: String },
}

#[derive(Serialize)]
struct PolicyView {
    group: String,
    risk_tolerance: u32,
    approval: String,
    canary_steps: Vec<u32>,
    scaling: Option<ScalingView>,
}

#[derive(Serialize)]
struct ScalingView {
    per_instance_rps: u32,
    headroom_percent: u32,
    max_instances: u32,
    horizon_s: u32,
}

#[derive(Subcommand)]
enum ComponentCommand {
    Register {
        id: String,
        #[arg(long)]
        zone: String,
        #[arg(long)]
        rack: String,
        #[arg(long)]
        host: String,
        #[arg(long, default_value = "default")]
        group: String,
        #[arg(long, default_value = "service")]
        class: String,
        #[arg(long, default_value_t = 3)]
        criticality: u32,
        /// KEY=VALUE, repeatable.
        #[arg(long = "label", value_parser = parse_pair)]
        labels: Vec<(String, String)>,
    },
    List {
        #[arg(long)]
        group: Option<String>,
        #[arg(long)]
        zone: Option<String>,
        #[arg(long, value_enum, default_value_t = ReadMode::Linearizable)]
        consistency: ReadMode,
    },
    Get {
        id: String,
        #[arg(long, value_enum, default_value_t = ReadMode::Linearizable)]
        consistency: ReadMode,
    },
    Remove {
        id: String,
    },
}

#[derive(Subcommand)]
enum WeightsCommand {
    /// `augur ctl weights set web web-1=60 web-2=40`
    Set {
        service: String,
        #[arg(value_parser = parse_pair, required = true)]
        weights: Vec<(String, String)>,
    },
    Get {
        service: String,
    },
}

#[derive(Subcommand)]
enum ActionCommand {
    Append {
        #[arg(long)]
        kind: String,
        #[arg(long)]
        target: String,
        /// Idempotency key; a retry with the same key returns the same action.
        #[arg(long)]
        request_id: Option<String>,
        #[arg(long = "param", value_parser = parse_pair)]
        params: Vec<(String, String)>,
    },
    Report {
        id: String,
        #[arg(long, default_value = "cli")]
        orchestrator: String,
        /// Report a failure with this reason (default: success).
        #[arg(long)]
        failed: Option<String>,
        /// A traffic step's KPIs: `REQUESTS/ERRORS/P99_MS` of the original, then the shadow,
        /// e.g. `--kpis 5000/5/40 300/0/41`.
        #[arg(long, num_args = 2, value_parser = parse_kpi)]
        kpis: Option<Vec<pb::KpiSample>>,
    },
    /// Takes a pending action for a lease (claiming again renews it); while held, no other
    /// orchestrator may claim it or report its outcome.
    Claim {
        id: String,
        #[arg(long, default_value = "cli")]
        orchestrator: String,
        #[arg(long, default_value_t = 30_000)]
        lease_ms: u64,
    },
}

fn parse_kpi(s: &str) -> Result<pb::KpiSample, String> {
    let parts: Vec<&str> = s.split('/').collect();
    let [r, e, p] = parts.as_slice() else {
        return Err(format!("{s:?} is not REQUESTS/ERRORS/P99_MS"));
    };
    let num = |v: &str, what: &str| {
        v.parse::<f64>()
            .ok()
            .filter(|x| x.is_finite() && *x >= 0.0)
            .ok_or_else(|| format!("{what} {v:?} in {s:?} is not a number ≥ 0"))
    };
    Ok(pb::KpiSample {
        requests: num(r, "requests")? as u64,
        errors: num(e, "errors")? as u64,
        p99_us: (num(p, "p99")? * 1e3) as u64,
    })
}

/// An endpoint as HOST:PORT (an `http://` in front is dropped): checked when the command
/// line is read, so a typo fails at once instead of being retried like a node that is down.
fn parse_endpoint(s: &str) -> Result<String, String> {
    let e = s.trim();
    let e = e.strip_prefix("http://").unwrap_or(e).trim_end_matches('/');
    // A URI's authority with a port, and no user (`user@`): another scheme (`https://`) or
    // a path is not an authority at all.
    let well_formed = !e.contains('@')
        && e.parse::<tonic::codegen::http::uri::Authority>()
            .is_ok_and(|a| !a.host().is_empty() && a.port_u16().is_some_and(|p| p > 0));
    if well_formed {
        Ok(e.to_owned())
    } else {
        Err(format!("{s:?} is not HOST:PORT"))
    }
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

pub(crate) fn print<T: Serialize>(output: Output, value: &T, text: impl FnOnce(&T) -> String) {
    match output {
        Output::Json => emit(&serde_json::to_string_pretty(value).expect("serializable")),
        Output::Text => emit(&text(value)),
    }
}

/// Writes `text` and a newline to stdout. A reader that went away (`ctl … | head`) ends the
/// process quietly, as for any Unix filter, instead of a panic with a backtrace.
pub(crate) fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{text}").and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

/// Runs a ctl command; answers the process exit code.
pub async fn run(args: CtlArgs) -> i32 {
    let output = args.output;
    match execute(args).await {
        Ok(()) => 0,
        Err(s) => {
            if output == Output::Json {
                let err = serde_json::json!({
                    "error": { "code": format!("{:?}", s.code()), "message": s.message() }
                });
                // The exit code says what happened even when nobody reads stdout any more.
                use std::io::Write;
                let _ = writeln!(std::io::stdout().lock(), "{err}");
            }
            eprintln!("error: {} ({:?})", s.message(), s.code());
            match s.code() {
                tonic::Code::InvalidArgument => 2,
                tonic::Code::NotFound => 3,
                tonic::Code::FailedPrecondition => 4,
                tonic::Code::Unavailable => 5,
                _ => 1,
            }
        }
    }
}

async fn execute(args: CtlArgs) -> Result<(), Status> {
    let output = args.output;
    let mut client = Client::new(args.endpoint);
    match args.command {
        CtlCommand::Status => {
            let s = client
                .call(|c| async move { ClusterClient::new(c).status(pb::StatusRequest {}).await })
                .await?
                .into_inner();
            print(output, &StatusView::from(s), |s| {
                format!(
                    "node {} is {} (term {}, leader {}, last log {}, applied {})",
                    s.id,
                    s.role,
                    s.term,
                    s.leader_id
                        .map(|l| format!("{l} at {}", s.leader_addr))
                        .unwrap_or("unknown".into()),
                    s.last_log_index,
                    s.last_applied
                )
            });
        }
        CtlCommand::Members => {
            let s = client
                .call(|c| async move { ClusterClient::new(c).status(pb::StatusRequest {}).await })
                .await?
                .into_inner();
            print(output, &members(s.members), |ms| {
                ms.iter()
                    .map(|m| {
                        format!(
                            "{:>4} {:<22} {:<7} shards: {} owned, {} standby",
                            m.id,
                            m.addr,
                            if m.voter { "voter" } else { "learner" },
                            m.shards_owned,
                            m.shards_standby
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        CtlCommand::Policy(PolicyCommand::Set {
            group,
            risk_tolerance,
            approval,
            steps,
            scale_rps,
            scale_headroom,
            scale_max,
            scale_horizon,
            no_scale,
        }) => {
            // Read, change what was given, write: a flag left out keeps its value.
            let current = get_policy(&mut client, &group).await?;
            let scale_flags =
                scale_headroom.is_some() || scale_max.is_some() || scale_horizon.is_some();
            let scaling = if no_scale {
                if scale_flags {
                    return Err(Status::invalid_argument(
                        "--no-scale with --scale-headroom, --scale-max or --scale-horizon",
                    ));
                }
                None
            } else {
                match (current.scaling, scale_rps) {
                    (None, None) if scale_flags => {
                        return Err(Status::invalid_argument(format!(
                            "{group} is not scaled: --scale-headroom, --scale-max and \
                             --scale-horizon need --scale-rps"
                        )))
                    }
                    (None, None) => None,
                    (old, rps) => {
                        let old = old.unwrap_or(pb::ScalingPolicy {
                            per_instance_rps: 0,
                            headroom_percent: 20,
                            max_instances: 20,
                            horizon_s: 120,
                        });
                        Some(pb::ScalingPolicy {
                            per_instance_rps: rps.unwrap_or(old.per_instance_rps),
                            headroom_percent: scale_headroom.unwrap_or(old.headroom_percent),
                            max_instances: scale_max.unwrap_or(old.max_instances),
                            horizon_s: scale_horizon.unwrap_or(old.horizon_s),
                        })
                    }
                }
            };
            let req = pb::SetPolicyRequest {
                group: group.clone(),
                policy: Some(pb::Policy {
                    risk_tolerance: risk_tolerance.unwrap_or(current.risk_tolerance),
                    approval: approval.unwrap_or(current.approval),
                    canary_steps: steps.unwrap_or(current.canary_steps),
                    scaling,
                }),
            };
            let r = client
                .call(|c| {
                    let req = req.clone();
                    async move { TopologyClient::new(c).set_policy(req).await }
                })
                .await?
                .into_inner();
            print(output, &r.log_index, |i| {
                format!("policy of {group} set (log index {i})")
            });
        }
        CtlCommand::Policy(PolicyCommand::Get { group }) => {
            let p = get_policy(&mut client, &group).await?;
            let view = PolicyView {
                group,
                risk_tolerance: p.risk_tolerance,
                approval: p.approval,
                canary_steps: p.canary_steps,
                scaling: p.scaling.map(|s| ScalingView {
                    per_instance_rps: s.per_instance_rps,
                    headroom_percent: s.headroom_percent,
                    max_instances: s.max_instances,
                    horizon_s: s.horizon_s,
                }),
            };
            print(output, &view, |v| {
                let scaling = v.scaling.as_ref().map_or("never scaled".to_owned(), |s| {
                    format!(
                        "scaled at {} req/s an instance, {} % headroom, at most {} instances, {} s ahead",
                        s.per_instance_rps, s.headroom_percent, s.max_instances, s.horizon_s
                    )
                });
                format!(
                    "{}: risk tolerance {}, approval {}, canary steps {:?}, {scaling}",
                    v.group, v.risk_tolerance, v.approval, v.canary_steps
                )
            });
        }
        CtlCommand::AddLearner { id, addr } => {
            // The node answers once the learner has caught up: longer than one call's try.
            let r = client
                .call_within(LONG_CALL, |c| {
                    let addr = addr.clone();
                    async move {
                        ClusterClient::new(c)
                            .add_learner(pb::AddLearnerRequest { id, addr })
                            .await
                    }
                })
                .await?
                .into_inner();
            print(output, &members(r.members), |_| {
                format!("node {id} added as a learner")
            });
        }
        CtlCommand::Promote { id } => {
            // Added to the voter set the leader holds (a set read from a follower behind it
            // could drop a voter promoted a moment ago).
            let r = client
                .call(|c| async move {
                    ClusterClient::new(c)
                        .change_membership(pb::ChangeMembershipRequest {
                            voters: vec![id],
                            add: true,
                        })
                        .await
                })
                .await?
                .into_inner();
            print(output, &members(r.members), |_| {
                format!("node {id} is a voter")
            });
        }
        CtlCommand::Component(cmd) => component(&mut client, output, cmd).await?,
        CtlCommand::Weights(cmd) => weights(&mut client, output, cmd).await?,
        CtlCommand::Actions { from, follow } => actions(&mut client, output, from, follow).await?,
        CtlCommand::Action(cmd) => action(&mut client, output, cmd).await?,
        CtlCommand::Graph {
            group,
            zone,
            format,
            consistency,
        } => graph_ctl::graph(&mut client, output, group, zone, format, consistency).await?,
        CtlCommand::Risk { id, limit } => graph_ctl::risk(&mut client, output, id, limit).await?,
        CtlCommand::Plan { command } => plan_ctl::plan_cmd(&mut client, output, command).await?,
        CtlCommand::Shadows => plan_ctl::shadows(&mut client, output).await?,
        CtlCommand::State { id } => plan_ctl::state(&mut client, output, id).await?,
        CtlCommand::Failover { id, host, reason } => {
            plan_ctl::failover(&mut client, output, id, host, reason).await?
        }
        CtlCommand::Forecast { id } => forecast_ctl::forecast(&mut client, output, id).await?,
        CtlCommand::AtRisk { limit, min_risk } => {
            forecast_ctl::at_risk(&mut client, output, limit, min_risk).await?
        }
        CtlCommand::Push { file } => forecast_ctl::push(&mut client, output, &file).await?,
        CtlCommand::Model(cmd) => forecast_ctl::model(&mut client, output, cmd).await?,
        CtlCommand::WhatIf { id, samples } => {
            graph_ctl::what_if(&mut client, output, id, samples).await?
        }
        CtlCommand::RootCause {
            from,
            to,
            reference,
            metrics_only,
            limit,
        } => {
            let now = graph_ctl::now_ms() as i64;
            let when = |what: &str, s: &str| {
                graph_ctl::parse_when(s, now)
                    .map_err(|e| Status::invalid_argument(format!("--{what} {s:?}: {e}")))
            };
            let req = augur_proto::pb::RankRootCausesRequest {
                from_ms: when("from", &from)?,
                to_ms: when("to", &to)?,
                reference_ms: (reference as i64).saturating_mul(1000),
                metrics_only,
                limit,
            };
            graph_ctl::root_cause(&mut client, output, req).await?
        }
        CtlCommand::Topology(cmd) => graph_ctl::topology(&mut client, output, cmd).await?,
        CtlCommand::Flows(cmd) => graph_ctl::flows(&mut client, output, cmd).await?,
        CtlCommand::Causal {
            metrics,
            max_lag,
            alpha,
            min_strength,
        } => {
            let opts = augur_graph::CausalOptions {
                max_lag,
                alpha,
                min_strength,
                ..Default::default()
            };
            opts.validate()
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            graph_ctl::causal(&mut client, output, metrics, opts).await?
        }
    }
    Ok(())
}

async fn component(
    client: &mut Client,
    output: Output,
    cmd: ComponentCommand,
) -> Result<(), Status> {
    match cmd {
        ComponentCommand::Register {
            id,
            zone,
            rack,
            host,
            group,
            class,
            criticality,
            labels,
        } => {
            let component = pb::Component {
                id: id.clone(),
                class,
                group,
                criticality,
                placement: Some(pb::Placement { host, rack, zone }),
                labels: labels.into_iter().collect(),
            };
            let r = client
                .call(|c| {
                    let component = Some(component.clone());
                    async move {
                        TopologyClient::new(c)
                            .upsert_component(pb::UpsertComponentRequest { component })
                            .await
                    }
                })
                .await?
                .into_inner();
            let view = serde_json::json!({ "id": id, "log_index": r.log_index });
            print(output, &view, |_| {
                format!("registered {id} (log index {})", r.log_index)
            });
        }
        ComponentCommand::List {
            group,
            zone,
            consistency,
        } => {
            let req = pb::ListComponentsRequest {
                consistency: consistency.wire(),
                group: group.unwrap_or_default(),
                zone: zone.unwrap_or_default(),
            };
            let r = client
                .call(|c| {
                    let req = req.clone();
                    async move { TopologyClient::new(c).list_components(req).await }
                })
                .await?
                .into_inner();
            let views: Vec<ComponentView> = r.components.into_iter().map(Into::into).collect();
            print(output, &views, |vs| {
                let mut lines = vec![format!(
                    "{:<24} {:<12} {:<12} {:>4}  {}",
                    "ID", "CLASS", "GROUP", "CRIT", "ZONE/RACK/HOST"
                )];
                lines.extend(vs.iter().map(ComponentView::line));
                lines.join("\n")
            });
        }
        ComponentCommand::Get { id, consistency } => {
            let r = client
                .call(|c| {
                    let id = id.clone();
                    async move {
                        TopologyClient::new(c)
                            .get_component(pb::GetComponentRequest {
                                id,
                                consistency: consistency.wire(),
                            })
                            .await
                    }
                })
                .await?
                .into_inner();
            print(output, &ComponentView::from(r), ComponentView::line);
        }
        ComponentCommand::Remove { id } => {
            let r = client
                .call(|c| {
                    let id = id.clone();
                    async move {
                        TopologyClient::new(c)
                            .remove_component(pb::RemoveComponentRequest { id })
                            .await
                    }
                })
                .await?
                .into_inner();
            let view = serde_json::json!({ "id": id, "log_index": r.log_index });
            print(output, &view, |_| format!("removed {id}"));
        }
    }
    Ok(())
}

async fn weights(client: &mut Client, output: Output, cmd: WeightsCommand) -> Result<(), Status> {
    match cmd {
        WeightsCommand::Set { service, weights } => {
            let mut parsed = std::collections::HashMap::new();
            for (k, v) in weights {
                let w: u32 = v.parse().map_err(|_| {
                    Status::invalid_argument(format!("weight of {k} is {v:?}, not a whole number"))
                })?;
                if parsed.insert(k.clone(), w).is_some() {
                    return Err(Status::invalid_argument(format!(
                        "{k} is named twice; give each instance's weight once"
                    )));
                }
            }
            let r = client
                .call(|c| {
                    let req = pb::SetWeightsRequest {
                        service: service.clone(),
                        weights: parsed.clone(),
                    };
                    async move { TopologyClient::new(c).set_weights(req).await }
                })
                .await?
                .into_inner();
            let view = serde_json::json!({ "service": service, "log_index": r.log_index });
            print(output, &view, |_| format!("weights of {service} set"));
        }
        WeightsCommand::Get { service } => {
            let r = client
                .call(|c| {
                    let req = pb::GetWeightsRequest {
                        service: service.clone(),
                        consistency: 0,
                    };
                    async move { TopologyClient::new(c).get_weights(req).await }
                })
                .await?
                .into_inner();
            let view: BTreeMap<String, u32> = r.weights.into_iter().collect();
            print(output, &view, |w| {
                w.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            });
        }
    }
    Ok(())
}

async fn action(client: &mut Client, output: Output, cmd: ActionCommand) -> Result<(), Status> {
    match cmd {
        ActionCommand::Append {
            kind,
            target,
            request_id,
            params,
        } => {
            let wire_kind =
                pb::ActionKind::from_str_name(&format!("ACTION_KIND_{}", kind.to_uppercase()))
                    .filter(|k| *k != pb::ActionKind::Unspecified)
                    .ok_or_else(|| {
                        Status::invalid_argument(format!("unknown action kind {kind:?}"))
                    })?;
            let request_id = request_id.unwrap_or_else(|| {
                format!(
                    "cli-{}-{}",
                    std::process::id(),
                    augur_cli::client::unique_suffix()
                )
            });
            let req = pb::AppendActionRequest {
                request_id,
                kind: wire_kind as i32,
                target,
                params: params.into_iter().collect(),
            };
            let r = client
                .call(|c| {
                    let req = req.clone();
                    async move { ControlClient::new(c).append_action(req).await }
                })
                .await?
                .into_inner();
            let view = serde_json::json!({ "id": r.id, "seq": r.seq, "duplicate": r.duplicate });
            print(output, &view, |_| {
                format!("action {} (seq {})", r.id, r.seq)
            });
        }
        ActionCommand::Report {
            id,
            orchestrator,
            failed,
            kpis,
        } => {
            let kpis = kpis.map(|k| pb::Kpis {
                original: Some(k[0]),
                shadow: Some(k[1]),
            });
            let req = pb::ReportOutcomeRequest {
                id: id.clone(),
                orchestrator,
                success: failed.is_none(),
                reason: failed.unwrap_or_default(),
                kpis,
            };
            client
                .call(|c| {
                    let req = req.clone();
                    async move { ControlClient::new(c).report_outcome(req).await }
                })
                .await?;
            print(output, &serde_json::json!({ "id": id }), |_| {
                format!("outcome of {id} recorded")
            });
        }
        ActionCommand::Claim {
            id,
            orchestrator,
            lease_ms,
        } => {
            let req = pb::ClaimActionRequest {
                id,
                orchestrator,
                lease_ms,
            };
            let r = client
                .call(|c| {
                    let req = req.clone();
                    async move { ControlClient::new(c).claim_action(req).await }
                })
                .await?
                .into_inner();
            let view = r.action.map(ActionView::from);
            print(output, &view, |v| match v {
                Some(a) => a.line(),
                None => "claimed".into(),
            });
        }
    }
    Ok(())
}

/// Streams the action log from `from`; with `follow`, reconnects after a lost node from the
/// last sequence seen, so nothing is skipped or shown twice.
async fn actions(
    client: &mut Client,
    output: Output,
    from: u64,
    follow: bool,
) -> Result<(), Status> {
    let mut next = from.max(1);
    if !follow {
        // Page by page (the node answers at most `PAGE` a call) until a short page.
        const PAGE: u32 = 1000;
        let mut views: Vec<ActionView> = Vec::new();
        loop {
            let from_seq = next;
            let page = client
                .call(|c| async move {
                    ControlClient::new(c)
                        .list_actions(pb::ListActionsRequest {
                            unclaimed_only: false,
                            from_seq,
                            limit: PAGE,
                        })
                        .await
                })
                .await?
                .into_inner()
                .actions;
            let full = page.len() == PAGE as usize;
            if let Some(last) = page.last() {
                next = last.seq + 1;
            }
            views.extend(page.into_iter().map(ActionView::from));
            if !full {
                break;
            }
        }
        print(output, &views, |vs| {
            vs.iter()
                .map(ActionView::line)
                .collect::<Vec<_>>()
                .join("\n")
        });
        return Ok(());
    }
    loop {
        let stream = client
            .call(|c| async move {
                ControlClient::new(c)
                    .watch_actions(pb::WatchActionsRequest {
                        orchestrator: "augur-ctl".into(),
                        capabilities: vec![],
                        from_seq: next,
                    })
                    .await
            })
            .await?;
        let mut stream = stream.into_inner();
        while let Some(item) = stream.next().await {
            match item {
                Ok(a) => {
                    next = a.seq + 1;
                    let view = ActionView::from(a);
                    match output {
                        Output::Json => emit(&serde_json::to_string(&view).expect("serializable")),
                        Output::Text => emit(&view.line()),
                    }
                }
                Err(_) => break,
            }
        }
        // The node went away: resume from the next sequence on another one.
        client.next_endpoint();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

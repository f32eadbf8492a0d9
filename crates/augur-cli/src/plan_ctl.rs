//! `augur ctl plan | shadows | failover`: what the planner would do, the failover plans it
//! recorded (and their approval), and the shadows that carry them out.

use std::collections::BTreeMap;

use augur_proto::pb;
use augur_proto::pb::control_client::ControlClient;
use augur_proto::pb::topology_client::TopologyClient;
use clap::Subcommand;
use serde::Serialize;
use tonic::Status;

use crate::ctl::{print, Output};
use crate::output::ActionView;
use augur_cli::Client;

#[derive(Subcommand)]
pub enum PlanCommand {
    /// What the planner would do now (the default): the failovers it would start, with
    /// shadow placement, severity, act or recommend, and why. Nothing is committed.
    Preview,
    /// Each service's footprint over zones, now and as desired, and the migrations the
    /// planner would propose towards it (for approval). Nothing is committed.
    Footprint,
    /// The failover plans recorded, newest first.
    List {
        /// Only those waiting (proposed) or about to start (approved).
        #[arg(long)]
        open: bool,
    },
    /// One plan: its history (who decided what, and why), its shadow's steps with their
    /// reasons, and the actions carried out for it.
    Get { id: String },
    /// Lets a proposed plan go ahead; the leader starts it at once.
    Approve {
        id: String,
        /// Who approves (recorded in the plan's history); defaults to $USER.
        #[arg(long)]
        by: Option<String>,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Turns a proposed plan down.
    Reject {
        id: String,
        #[arg(long)]
        by: Option<String>,
        #[arg(long, default_value = "")]
        note: String,
    },
}

/// `ctl plan ...`.
pub async fn plan_cmd(
    client: &mut Client,
    output: Output,
    cmd: Option<PlanCommand>,
) -> Result<(), Status> {
    match cmd.unwrap_or(PlanCommand::Preview) {
        PlanCommand::Preview => plan(client, output).await,
        PlanCommand::Footprint => footprint(client, output).await,
        PlanCommand::List { open } => list(client, output, open).await,
        PlanCommand::Get { id } => get(client, output, id).await,
        PlanCommand::Approve { id, by, note } => {
            decide(client, output, id, "approve", by, note).await
        }
        PlanCommand::Reject { id, by, note } => {
            decide(client, output, id, "reject", by, note).await
        }
    }
}

#[derive(Serialize)]
struct PlanView {
    id: String,
    kind: String,
    component: String,
    to: Option<PlacementView>,
    severity: String,
    reason: String,
    created_ms: u64,
    status: String,
    /// Set once started.
    #[serde(skip_serializing_if = "Option::is_none")]
    shadow: Option<String>,
    /// Scale plans: the instance the new one is made like.
    #[serde(skip_serializing_if = "Option::is_none")]
    template: Option<String>,
    history: Vec<PlanEventView>,
}

#[derive(Serialize)]
struct PlanEventView {
    at_ms: u64,
    status: String,
    by: String,
    note: String,
}

impl From<pb::Plan> for PlanView {
    fn from(p: pb::Plan) -> Self {
        PlanView {
            id: p.id,
            kind: p.kind,
            component: p.component,
            to: p.to.map(PlacementView::from),
            severity: p.severity,
            reason: p.reason,
            created_ms: p.created_ms,
            status: p.status,
            shadow: (!p.shadow.is_empty()).then_some(p.shadow),
            template: (!p.template.is_empty()).then_some(p.template),
            history: p
                .history
                .into_iter()
                .map(|e| PlanEventView {
                    at_ms: e.at_ms,
                    status: e.status,
                    by: e.by,
                    note: e.note,
                })
                .collect(),
        }
    }
}

impl PlanView {
    fn line(&self) -> String {
        let to = self.to.as_ref().map_or(String::new(), |p| {
            format!("{} ({}/{})", p.host, p.zone, p.rack)
        });
        format!(
            "{:<8} {:<9} {:<9} {:<20} {:<9} {:<24} {}",
            self.id,
            self.status,
            self.kind,
            self.component,
            self.severity,
            to,
            self.shadow.as_deref().unwrap_or("-")
        )
    }

    fn details(&self) -> Vec<String> {
        let mut lines = vec![self.line(), format!("    reason: {}", self.reason)];
        if let Some(t) = &self.template {
            lines.push(format!("    made like: {t}"));
        }
        for e in &self.history {
            let note = if e.note.is_empty() {
                String::new()
            } else {
                format!(": {}", e.note)
            };
            lines.push(format!("    {:<9} by {}{note}", e.status, e.by));
        }
        lines
    }
}

const PLAN_HEADER: &str =
    "PLAN     STATUS    KIND      COMPONENT            SEVERITY  TO                       SHADOW";

async fn list(client: &mut Client, output: Output, open_only: bool) -> Result<(), Status> {
    let r = client
        .call(|c| async move {
            ControlClient::new(c)
                .list_plans(pb::ListPlansRequest { open_only })
                .await
        })
        .await?
        .into_inner();
    let view: Vec<PlanView> = r.plans.into_iter().map(PlanView::from).collect();
    print(output, &view, |v| {
        if v.is_empty() {
            return "no plans".into();
        }
        let mut lines = vec![PLAN_HEADER.to_owned()];
        lines.extend(v.iter().map(PlanView::line));
        lines.join("\n")
    });
    Ok(())
}

#[derive(Serialize)]
struct PlanDetailView {
    plan: Option<PlanView>,
    shadow: Option<ShadowView>,
    actions: Vec<ActionView>,
}

async fn get(client: &mut Client, output: Output, id: String) -> Result<(), Status> {
    let r = client
        .call(|c| {
            let id = id.clone();
            async move {
                ControlClient::new(c)
                    .get_plan(pb::GetPlanRequest { id })
                    .await
            }
        })
        .await?
        .into_inner();
    let view = PlanDetailView {
        plan: r.plan.map(PlanView::from),
        shadow: r.shadow.map(ShadowView::from),
        actions: r.actions.into_iter().map(ActionView::from).collect(),
    };
    print(output, &view, |v| {
        let mut lines = Vec::new();
        if let Some(p) = &v.plan {
            lines.extend(p.details());
        }
        if let Some(s) = &v.shadow {
            lines.extend(s.lines());
        }
        if !v.actions.is_empty() {
            lines.push("actions:".into());
            lines.extend(v.actions.iter().map(|a| format!("  {}", a.line())));
        }
        lines.join("\n")
    });
    Ok(())
}

async fn decide(
    client: &mut Client,
    output: Output,
    id: String,
    decision: &str,
    by: Option<String>,
    note: String,
) -> Result<(), Status> {
    let req = pb::DecidePlanRequest {
        id,
        decision: decision.to_owned(),
        by: by
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "operator".into()),
        note,
    };
    // Not safe to send twice (a second one is refused as already done): a slow answer is
    // waited for rather than the request sent again to the next endpoint.
    let r = client
        .call_within(crate::ctl::LONG_CALL, |c| {
            let req = req.clone();
            async move { ControlClient::new(c).decide_plan(req).await }
        })
        .await?
        .into_inner();
    let view = r.plan.map(PlanView::from);
    print(output, &view, |v| match v {
        Some(p) => p.details().join("\n"),
        None => "the plan is no longer in the state".into(),
    });
    Ok(())
}

impl From<pb::Placement> for PlacementView {
    fn from(p: pb::Placement) -> Self {
        PlacementView {
            host: p.host,
            rack: p.rack,
            zone: p.zone,
        }
    }
}

impl From<pb::Shadow> for ShadowView {
    fn from(s: pb::Shadow) -> Self {
        ShadowView {
            component: s.component,
            shadow: s.shadow,
            placement: s.placement.map(PlacementView::from),
            state: s.state,
            in_flight: s.in_flight,
            history: s.history.into_iter().map(|h| (h.state, h.reason)).collect(),
            shift: (!s.service.is_empty()).then(|| ShiftView {
                service: s.service,
                weights_before: s.weights_before.into_iter().collect(),
                weights_verified: s.weights_verified.into_iter().collect(),
            }),
        }
    }
}

impl ShadowView {
    fn lines(&self) -> Vec<String> {
        let at = self.placement.as_ref().map_or(String::new(), |p| {
            format!(" on {} ({}/{})", p.host, p.zone, p.rack)
        });
        let mut lines = vec![format!(
            "{} -> {}{at}: {}",
            self.component, self.shadow, self.state
        )];
        for (state, reason) in &self.history {
            lines.push(format!("    {state:<12} {reason}"));
        }
        if let Some(f) = &self.shift {
            let show = |w: &BTreeMap<String, u32>| {
                w.iter()
                    .map(|(c, v)| format!("{c}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            lines.push(format!(
                "    service {}: before [{}], last verified [{}]",
                f.service,
                show(&f.weights_before),
                show(&f.weights_verified)
            ));
        }
        lines
    }
}

#[derive(Serialize)]
struct DecisionView {
    component: String,
    to: Option<PlacementView>,
    tier: String,
    severity: String,
    mode: String,
    p_fail: f64,
    threshold: f64,
    hps: f64,
    blast_radius: f64,
    reason: String,
}

#[derive(Serialize)]
struct PlacementView {
    host: String,
    rack: String,
    zone: String,
}

/// `ctl plan`: the failovers the planner would start now.
async fn plan(client: &mut Client, output: Output) -> Result<(), Status> {
    let req = pb::PlanFailoversRequest {
        consistency: pb::ReadConsistency::Linearizable as i32,
    };
    let r = client
        .call(|c| async move { TopologyClient::new(c).plan_failovers(req).await })
        .await?
        .into_inner();
    let view: Vec<DecisionView> = r
        .decisions
        .into_iter()
        .map(|d| DecisionView {
            component: d.component,
            to: d.to.map(PlacementView::from),
            tier: d.tier,
            severity: d.severity,
            mode: d.mode,
            p_fail: d.p_fail,
            threshold: d.threshold,
            hps: d.hps,
            blast_radius: d.blast_radius,
            reason: d.reason,
        })
        .collect();
    print(output, &view, |v| {
        if v.is_empty() {
            return "nothing to move: no component is over its action threshold".into();
        }
        let mut lines = vec![format!(
            "{:<20} {:>7} {:>9} {:>4}  {:<9} {:<9} shadow on",
            "COMPONENT", "P(FAIL)", "THRESHOLD", "HPS", "SEVERITY", "MODE"
        )];
        for d in v {
            let to = d.to.as_ref().map_or("no host with room".to_string(), |p| {
                format!("{} ({}/{}, {})", p.host, p.zone, p.rack, d.tier)
            });
            lines.push(format!(
                "{:<20} {:>7.3} {:>9.3} {:>4.0}  {:<9} {:<9} {to}",
                d.component, d.p_fail, d.threshold, d.hps, d.severity, d.mode
            ));
        }
        lines.join("\n")
    });
    Ok(())
}

#[derive(Serialize)]
struct ShadowView {
    component: String,
    shadow: String,
    placement: Option<PlacementView>,
    state: String,
    in_flight: bool,
    history: Vec<(String, String)>,
    /// Once a traffic shift started: its service and weights before it and last verified.
    #[serde(skip_serializing_if = "Option::is_none")]
    shift: Option<ShiftView>,
}

#[derive(Serialize)]
struct ShiftView {
    service: String,
    weights_before: BTreeMap<String, u32>,
    weights_verified: BTreeMap<String, u32>,
}

#[derive(Serialize)]
struct FailoverView {
    component: String,
    shadow: String,
    placement: Option<PlacementView>,
    plan: String,
}

/// `ctl failover ID`: starts a failover now.
pub async fn failover(
    client: &mut Client,
    output: Output,
    component: String,
    host: Option<String>,
    reason: Option<String>,
) -> Result<(), Status> {
    let req = pb::RequestFailoverRequest {
        component: component.clone(),
        host: host.unwrap_or_default(),
        reason: reason.unwrap_or_default(),
    };
    // Not safe to send twice (a second one is refused as already done): a slow answer is
    // waited for rather than the request sent again to the next endpoint.
    let r = client
        .call_within(crate::ctl::LONG_CALL, |c| {
            let req = req.clone();
            async move { ControlClient::new(c).request_failover(req).await }
        })
        .await?
        .into_inner();
    let view = FailoverView {
        component,
        shadow: r.shadow,
        placement: r.placement.map(PlacementView::from),
        plan: r.plan,
    };
    print(output, &view, |v| {
        let at = v.placement.as_ref().map_or(String::new(), |p| {
            format!(" on {} ({}/{})", p.host, p.zone, p.rack)
        });
        format!(
            "failover of {} started ({}): shadow {}{at} (follow it with `augur ctl plan get {}`)",
            v.component, v.plan, v.shadow, v.plan
        )
    });
    Ok(())
}

/// `ctl shadows`: every shadow and its steps.
pub async fn shadows(client: &mut Client, output: Output) -> Result<(), Status> {
    let r = client
        .call(|c| async move {
            ControlClient::new(c)
                .list_shadows(pb::ListShadowsRequest {})
                .await
        })
        .await?
        .into_inner();
    let view: Vec<ShadowView> = r.shadows.into_iter().map(ShadowView::from).collect();
    print(output, &view, |v| {
        if v.is_empty() {
            return "no shadows".into();
        }
        v.iter()
            .flat_map(ShadowView::lines)
            .collect::<Vec<_>>()
            .join("\n")
    });
    Ok(())
}

#[derive(Serialize)]
struct StateView {
    component: String,
    version: u64,
    bytes: usize,
    orchestrator: String,
    at_ms: u64,
}

/// `ctl state ID`: the state snapshot the cluster holds for a component.
pub async fn state(client: &mut Client, output: Output, component: String) -> Result<(), Status> {
    let r = client
        .call(|c| {
            let req = pb::GetStateRequest {
                component: component.clone(),
                consistency: pb::ReadConsistency::Linearizable as i32,
            };
            async move { ControlClient::new(c).get_state(req).await }
        })
        .await?
        .into_inner();
    let view = StateView {
        component: r.component,
        version: r.version,
        bytes: r.data.len(),
        orchestrator: r.orchestrator,
        at_ms: r.at_ms,
    };
    print(output, &view, |v| {
        format!(
            "{}: state version {}, {} bytes, recorded by {}",
            v.component, v.version, v.bytes, v.orchestrator
        )
    });
    Ok(())
}

#[derive(Serialize)]
struct FootprintView {
    service: String,
    instances: u32,
    zones_now: BTreeMap<String, u32>,
    zones_desired: BTreeMap<String, u32>,
    max_per_rack_now: u32,
    max_per_rack_desired: u32,
    max_per_host_now: u32,
    max_per_host_desired: u32,
    divergence: f64,
    threshold: f64,
    moves: Vec<MigrationView>,
}

#[derive(Serialize)]
struct MigrationView {
    component: String,
    from: Option<PlacementView>,
    to: Option<PlacementView>,
    hps: f64,
    blast_radius: f64,
    reason: String,
}

/// `ctl plan footprint`: each service's spread over zones, racks and hosts, and the
/// migrations towards the desired one.
async fn footprint(client: &mut Client, output: Output) -> Result<(), Status> {
    let req = pb::PlanFootprintsRequest {
        consistency: pb::ReadConsistency::Linearizable as i32,
    };
    let r = client
        .call(|c| async move { TopologyClient::new(c).plan_footprints(req).await })
        .await?
        .into_inner();
    let view: Vec<FootprintView> = r
        .footprints
        .into_iter()
        .map(|f| FootprintView {
            service: f.service,
            instances: f.instances,
            zones_now: f.zones_now.into_iter().collect(),
            zones_desired: f.zones_desired.into_iter().collect(),
            max_per_rack_now: f.max_per_rack_now,
            max_per_rack_desired: f.max_per_rack_desired,
            max_per_host_now: f.max_per_host_now,
            max_per_host_desired: f.max_per_host_desired,
            divergence: f.divergence,
            threshold: f.threshold,
            moves: f
                .moves
                .into_iter()
                .map(|m| MigrationView {
                    component: m.component,
                    from: m.from.map(PlacementView::from),
                    to: m.to.map(PlacementView::from),
                    hps: m.hps,
                    blast_radius: m.blast_radius,
                    reason: m.reason,
                })
                .collect(),
        })
        .collect();
    print(output, &view, |v| {
        if v.is_empty() {
            return "no service with two or more instances".into();
        }
        let zones = |z: &BTreeMap<String, u32>| {
            z.iter()
                .map(|(k, n)| format!("{k}={n}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let mut lines = Vec::new();
        for f in v {
            lines.push(format!(
                "{}: {} instances; now [{}], desired [{}]; most on a rack {} (desired {}), \
                 on a host {} (desired {}); {:.0} % out of place (tolerance {:.0} %)",
                f.service,
                f.instances,
                zones(&f.zones_now),
                zones(&f.zones_desired),
                f.max_per_rack_now,
                f.max_per_rack_desired,
                f.max_per_host_now,
                f.max_per_host_desired,
                100.0 * f.divergence,
                100.0 * f.threshold
            ));
            for m in &f.moves {
                lines.push(format!("    {}", m.reason));
            }
        }
        lines.join("\n")
    });
    Ok(())
}

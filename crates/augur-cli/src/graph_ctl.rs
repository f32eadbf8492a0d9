//! `augur ctl graph | risk | what-if | topology apply | flows push`: the dependency map.

use std::path::PathBuf;

use augur_graph::{
    aggregate_flows, causal_links, component_of, links_to_edges, parse_flows_csv,
    parse_topology_as, AddressBook, CausalOptions, EdgeUpdate, MetricFrame,
};
use augur_proto::pb;
use augur_proto::pb::topology_client::TopologyClient;
use augur_types::{CLOCK_SKEW_MS, MAX_EDGE_BATCH};
use clap::{Subcommand, ValueEnum};
use serde::Serialize;
use tonic::Status;

use crate::ctl::{print, Output, ReadMode};
use augur_cli::Client;

/// The label that carries a component's addresses (comma-separated ip or ip:port), which
/// flow records are matched against; `entry=true` marks a user-facing component.
pub const ADDRESSES_LABEL: &str = "addresses";
pub const ENTRY_LABEL: &str = "entry";

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    /// A table of nodes and edges (or JSON with --output json).
    Text,
    /// Graphviz DOT.
    Dot,
}

#[derive(Subcommand)]
pub enum TopologyCommand {
    /// Registers the hosts and components of a topology file and its declared dependencies.
    /// A file with errors is refused whole, with every error listed.
    Apply { file: PathBuf },
    /// Checks a topology file and lists every error; changes nothing.
    Check { file: PathBuf },
}

#[derive(Subcommand)]
pub enum FlowsCommand {
    /// Reads flow records (CSV: src,dst,bytes,connections,at_ms), maps addresses to
    /// components by their `addresses` label and records the edges.
    Push { file: PathBuf },
}

#[derive(Serialize)]
struct GraphView {
    nodes: Vec<NodeView>,
    edges: Vec<EdgeViewOut>,
    recently_faded: Vec<FadedView>,
}

#[derive(Serialize)]
struct NodeView {
    name: String,
    virtual_peer: bool,
    entry: bool,
    criticality: u32,
    group: String,
    zone: String,
}

#[derive(Serialize)]
struct ObservationView {
    source: String,
    strength: f64,
    last_seen_ms: u64,
    calls: Option<u64>,
    error_rate: Option<f64>,
    p99_ms: Option<f64>,
    bytes: u64,
}

#[derive(Serialize)]
struct EdgeViewOut {
    from: String,
    to: String,
    strength: f64,
    sources: Vec<ObservationView>,
}

#[derive(Serialize)]
struct FadedView {
    from: String,
    to: String,
    source: String,
    last_seen_ms: u64,
    edge_removed: bool,
}

impl From<pb::Graph> for GraphView {
    fn from(g: pb::Graph) -> Self {
        GraphView {
            nodes: g
                .nodes
                .into_iter()
                .map(|n| NodeView {
                    name: n.name,
                    virtual_peer: n.virtual_peer,
                    entry: n.entry,
                    criticality: n.criticality,
                    group: n.group,
                    zone: n.zone,
                })
                .collect(),
            edges: g
                .edges
                .into_iter()
                .map(|e| EdgeViewOut {
                    from: e.from,
                    to: e.to,
                    strength: e.strength,
                    sources: e
                        .observations
                        .into_iter()
                        .map(|o| ObservationView {
                            source: o.source,
                            strength: o.strength,
                            last_seen_ms: o.last_seen_ms,
                            calls: o.stats.as_ref().map(|s| s.calls),
                            error_rate: o.stats.as_ref().map(|s| {
                                augur_graph::CallStats {
                                    calls: s.calls,
                                    errors: s.errors,
                                    ..Default::default()
                                }
                                .error_rate()
                            }),
                            p99_ms: o.stats.as_ref().map(|s| s.p99_ms),
                            bytes: o.bytes,
                        })
                        .collect(),
                })
                .collect(),
            recently_faded: g
                .recently_faded
                .into_iter()
                .map(|f| FadedView {
                    from: f.from,
                    to: f.to,
                    source: f.source,
                    last_seen_ms: f.last_seen_ms,
                    edge_removed: f.edge_removed,
                })
                .collect(),
        }
    }
}

fn graph_text(g: &GraphView) -> String {
    let mut lines = vec![format!("{} nodes, {} edges", g.nodes.len(), g.edges.len())];
    for e in &g.edges {
        let sources: Vec<String> = e
            .sources
            .iter()
            .map(|o| match o.calls {
                Some(calls) => format!("{} ({calls} calls)", o.source),
                None => o.source.clone(),
            })
            .collect();
        lines.push(format!(
            "{} -> {}  strength {:.2}  [{}]",
            e.from,
            e.to,
            e.strength,
            sources.join(", ")
        ));
    }
    for f in &g.recently_faded {
        lines.push(format!(
            "faded: {} -> {} ({}, last seen {} ms){}",
            f.from,
            f.to,
            f.source,
            f.last_seen_ms,
            if f.edge_removed { ", edge removed" } else { "" }
        ));
    }
    lines.join("\n")
}

pub async fn graph(
    client: &mut Client,
    output: Output,
    group: Option<String>,
    zone: Option<String>,
    format: GraphFormat,
    consistency: ReadMode,
) -> Result<(), Status> {
    let req = pb::GetGraphRequest {
        consistency: consistency.wire(),
        group: group.unwrap_or_default(),
        zone: zone.unwrap_or_default(),
    };
    let g = client
        .call(|c| {
            let req = req.clone();
            async move { TopologyClient::new(c).get_graph(req).await }
        })
        .await?
        .into_inner();
    if format == GraphFormat::Dot {
        let dot = augur_proto::graph_from_wire(&g).to_dot();
        crate::ctl::emit(dot.strip_suffix('\n').unwrap_or(&dot));
        return Ok(());
    }
    print(output, &GraphView::from(g), graph_text);
    Ok(())
}

#[derive(Serialize)]
struct RiskView {
    component: String,
    blast_radius: f64,
    action_threshold: f64,
    p_fail: Option<f64>,
    risk: Option<f64>,
}

pub async fn risk(
    client: &mut Client,
    output: Output,
    component: Option<String>,
    limit: u32,
) -> Result<(), Status> {
    let req = pb::GetRiskRequest {
        consistency: pb::ReadConsistency::Linearizable as i32,
        component: component.unwrap_or_default(),
        limit,
    };
    let r = client
        .call(|c| {
            let req = req.clone();
            async move { TopologyClient::new(c).get_risk(req).await }
        })
        .await?
        .into_inner();
    let rows: Vec<RiskView> = r
        .risks
        .into_iter()
        .map(|r| RiskView {
            component: r.component,
            blast_radius: r.blast_radius,
            action_threshold: r.action_threshold,
            p_fail: r.p_fail,
            risk: r.risk,
        })
        .collect();
    print(output, &rows, |rows| {
        let mut lines = vec![format!(
            "{:<24} {:>12} {:>16} {:>8} {:>8}",
            "COMPONENT", "BLAST RADIUS", "ACT AT P(FAIL)", "P(FAIL)", "RISK"
        )];
        let opt = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.3}"));
        for r in rows {
            lines.push(format!(
                "{:<24} {:>12.3} {:>16.3} {:>8} {:>8}",
                r.component,
                r.blast_radius,
                r.action_threshold,
                opt(r.p_fail),
                opt(r.risk)
            ));
        }
        lines.join("\n")
    });
    Ok(())
}

#[derive(Serialize)]
struct WhatIfView {
    component: String,
    blast_radius: f64,
    impacts: Vec<ImpactView>,
}

#[derive(Serialize)]
struct ImpactView {
    component: String,
    probability: f64,
}

pub async fn what_if(
    client: &mut Client,
    output: Output,
    id: String,
    samples: u32,
) -> Result<(), Status> {
    let req = pb::WhatIfRequest {
        component: id.clone(),
        consistency: pb::ReadConsistency::Linearizable as i32,
        samples,
    };
    let r = client
        .call(|c| {
            let req = req.clone();
            async move { TopologyClient::new(c).what_if(req).await }
        })
        .await?
        .into_inner();
    let view = WhatIfView {
        component: id,
        blast_radius: r.blast_radius,
        impacts: r
            .impacts
            .into_iter()
            .map(|i| ImpactView {
                component: i.component,
                probability: i.probability,
            })
            .collect(),
    };
    print(output, &view, |v| {
        let mut lines = vec![format!(
            "if {} fails (blast radius {:.3}):",
            v.component, v.blast_radius
        )];
        for i in &v.impacts {
            lines.push(format!("  {:<24} {:.3}", i.component, i.probability));
        }
        lines.join("\n")
    });
    Ok(())
}

fn read_file(path: &PathBuf) -> Result<String, Status> {
    std::fs::read_to_string(path)
        .map_err(|e| Status::invalid_argument(format!("cannot read {}: {e}", path.display())))
}

pub async fn topology(
    client: &mut Client,
    output: Output,
    cmd: TopologyCommand,
) -> Result<(), Status> {
    let (path, apply) = match &cmd {
        TopologyCommand::Apply { file } => (file, true),
        TopologyCommand::Check { file } => (file, false),
    };
    let topo = parse_topology_file(path, &read_file(path)?).map_err(Status::invalid_argument)?;
    let dependencies = topo.edge_updates(0).len();
    if dependencies > MAX_EDGE_BATCH {
        // The cluster applies a file as one entry; it would refuse this one whole.
        return Err(Status::invalid_argument(format!(
            "{}: {dependencies} dependencies; a topology file holds at most {MAX_EDGE_BATCH}",
            path.display()
        )));
    }
    if !apply {
        let view = serde_json::json!({
            "hosts": topo.hosts().len(),
            "components": topo.components().len(),
            "edges": topo.edge_updates(0).len(),
        });
        print(output, &view, |_| {
            format!(
                "{} is valid: {} hosts, {} components, {} dependencies",
                path.display(),
                topo.hosts().len(),
                topo.components().len(),
                topo.edge_updates(0).len()
            )
        });
        return Ok(());
    }
    let hosts = topo
        .hosts()
        .iter()
        .map(|h| pb::UpsertHostRequest {
            placement: Some(pb::Placement {
                host: h.name.clone(),
                rack: h.rack.clone(),
                zone: h.zone.clone(),
            }),
            capacity: h.capacity,
        })
        .collect();
    let components = topo
        .components()
        .iter()
        .map(|c| {
            let unplaced = || "unplaced".to_owned();
            let mut labels = std::collections::HashMap::new();
            if c.entry {
                labels.insert(ENTRY_LABEL.to_owned(), "true".to_owned());
            }
            if !c.addresses.is_empty() {
                labels.insert(ADDRESSES_LABEL.to_owned(), c.addresses.join(","));
            }
            pb::Component {
                id: c.name.clone(),
                class: c.class.clone(),
                group: c.group.clone().unwrap_or_else(|| "default".into()),
                criticality: u32::from(c.criticality),
                placement: Some(pb::Placement {
                    host: c.host.clone().unwrap_or_else(unplaced),
                    rack: c.rack.clone().unwrap_or_else(unplaced),
                    zone: c.zone.clone().unwrap_or_else(unplaced),
                }),
                labels,
            }
        })
        .collect();
    let dependencies: Vec<pb::Dependency> = topo
        .edge_updates(0)
        .into_iter()
        .map(|u| pb::Dependency {
            from: u.from,
            to: u.to,
            strength: u.observation.strength,
        })
        .collect();
    let req = pb::ApplyTopologyRequest {
        hosts,
        components,
        dependencies,
    };
    let reply = client
        .call(|c| {
            let req = req.clone();
            async move { TopologyClient::new(c).apply_topology(req).await }
        })
        .await?
        .into_inner();
    let view = serde_json::json!({
        "hosts": topo.hosts().len(),
        "components": topo.components().len(),
        "edges": req.dependencies.len(),
        "withdrawn": reply.withdrawn,
        "edges_removed": reply.edges_removed,
        "log_index": reply.log_index,
    });
    print(output, &view, |_| {
        format!(
            "applied {}: {} hosts, {} components, {} dependencies; {} no longer declared \
             withdrawn ({} edges removed)",
            path.display(),
            topo.hosts().len(),
            topo.components().len(),
            req.dependencies.len(),
            reply.withdrawn,
            reply.edges_removed
        )
    });
    Ok(())
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Records `edges`, [`MAX_EDGE_BATCH`] a write. Every update is first checked as the node
/// checks it (its own rules, a time not ahead of the clock), so a bad one anywhere in the
/// input records nothing. A later write refused all the same (the graph full, the node's
/// clock behind this one) says how many were recorded before it.
async fn push_edges(client: &mut Client, edges: &[EdgeUpdate]) -> Result<(), Status> {
    let latest = now_ms().saturating_add(CLOCK_SKEW_MS);
    for u in edges {
        let bad = |why: String| {
            Status::invalid_argument(format!(
                "edge {} -> {}: {why}; nothing was recorded",
                u.from, u.to
            ))
        };
        u.validate().map_err(|e| bad(e.to_string()))?;
        if u.observation.last_seen_ms > latest {
            return Err(bad(format!(
                "seen at {} ms, more than {} s ahead of this clock",
                u.observation.last_seen_ms,
                CLOCK_SKEW_MS / 1000
            )));
        }
    }
    let mut recorded = 0;
    for chunk in edges.chunks(MAX_EDGE_BATCH) {
        let req = pb::UpsertEdgesRequest {
            updates: chunk.iter().map(augur_proto::edge_update_to_wire).collect(),
        };
        client
            .call(|c| {
                let req = req.clone();
                async move { TopologyClient::new(c).upsert_edges(req).await }
            })
            .await
            .map_err(|s| {
                if recorded == 0 {
                    return s;
                }
                Status::new(
                    s.code(),
                    format!(
                        "{}; {recorded} of the {} edge updates were recorded before it",
                        s.message(),
                        edges.len()
                    ),
                )
            })?;
        recorded += chunk.len();
    }
    Ok(())
}

pub async fn flows(client: &mut Client, output: Output, cmd: FlowsCommand) -> Result<(), Status> {
    let FlowsCommand::Push { file } = cmd;
    let text = read_file(&file)?;
    let records = parse_flows_csv(&text)
        .map_err(|e| Status::invalid_argument(format!("{}: {e}", file.display())))?;
    let components = client
        .call(|c| async move {
            TopologyClient::new(c)
                .list_components(pb::ListComponentsRequest::default())
                .await
        })
        .await?
        .into_inner()
        .components;
    let mut book = AddressBook::new();
    for c in &components {
        let Some(addrs) = c.labels.get(ADDRESSES_LABEL) else {
            continue;
        };
        for a in addrs.split(',').map(str::trim).filter(|a| !a.is_empty()) {
            book.insert(a, &c.id)
                .map_err(|e| Status::failed_precondition(format!("component {}: {e}", c.id)))?;
        }
    }
    let out = aggregate_flows(&records, &book)
        .map_err(|e| Status::invalid_argument(format!("{}: {e}", file.display())))?;
    push_edges(client, &out.updates).await?;
    print(output, &out.stats, |s| {
        format!(
            "{} flow records -> {} edges ({} unmapped sources, {} unmapped destinations, \
             {} within one component skipped)",
            s.records, s.edges, s.unmapped_src, s.unmapped_dst, s.self_flows_skipped
        )
    });
    Ok(())
}

#[derive(Serialize)]
struct CausalView {
    series: usize,
    links: Vec<augur_graph::CausalLink>,
}

/// Reads a metric recording, tests every pair of components' series for Granger causality
/// and records each link as a `causal` edge (effect depends on cause).
pub async fn causal(
    client: &mut Client,
    output: Output,
    metrics: PathBuf,
    opts: CausalOptions,
) -> Result<(), Status> {
    let text = read_file(&metrics)?;
    let frame = MetricFrame::from_csv(&text)
        .and_then(|f| f.check_time_order().map(|()| f))
        .map_err(|e| Status::invalid_argument(format!("{}: {e}", metrics.display())))?;
    let columns = frame.filled_series(component_of);
    let series: Vec<(&str, &[f64])> = columns
        .iter()
        .map(|(c, v)| (c.as_str(), v.as_slice()))
        .collect();
    let links = causal_links(&series, &opts)
        .map_err(|e| Status::invalid_argument(format!("{}: {e}", metrics.display())))?;
    push_edges(client, &links_to_edges(&links, now_ms())).await?;
    let view = CausalView {
        series: series.len(),
        links,
    };
    print(output, &view, |v| {
        let mut lines = vec![format!(
            "{} series, {} causal links recorded",
            v.series,
            v.links.len()
        )];
        for l in &v.links {
            lines.push(format!(
                "  {} -> {}  strength {:.3}  lag {}  p {:.1e}",
                l.cause, l.effect, l.strength, l.lag, l.p_value
            ));
        }
        lines.join("\n")
    });
    Ok(())
}

/// Reads a point in time for `ctl root-cause`, in unix ms: unix seconds or ms (a number
/// above 10^11 is ms), `YYYY-mm-dd HH:MM:SS` (UTC), `now`, or `now-<n><s|m|h>` (also
/// `-<n><unit>`).
pub fn parse_when(s: &str, now_ms: i64) -> Result<i64, String> {
    let t = s.trim();
    if t == "now" {
        return Ok(now_ms);
    }
    if let Some(ago) = t.strip_prefix("now-").or_else(|| t.strip_prefix('-')) {
        // The unit is the last character, which need not be one byte ("10м").
        let split = ago.char_indices().next_back().map_or(0, |(i, _)| i);
        let (n, unit) = ago.split_at(split);
        let n: i64 =
            n.parse().ok().filter(|n| *n >= 0).ok_or_else(|| {
                format!("{ago:?} is not a number of 0 or more followed by s, m or h")
            })?;
        let unit_ms = match unit {
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return Err(format!("unit {unit:?} is not one of s, m, h")),
        };
        return Ok(now_ms.saturating_sub(n.saturating_mul(unit_ms)));
    }
    if let Ok(n) = t.parse::<i64>() {
        return Ok(if n.unsigned_abs() > 100_000_000_000 {
            n
        } else {
            n.saturating_mul(1000)
        });
    }
    augur_predict::nab::parse_timestamp(t)
        .map(|secs| secs.saturating_mul(1000))
        .ok_or_else(|| {
            "not a time: give unix seconds or ms, YYYY-mm-dd HH:MM:SS, now, or now-10m".into()
        })
}

#[derive(Serialize)]
struct RootCauseView {
    from_ms: i64,
    to_ms: i64,
    series: u32,
    reference_rows: u32,
    window_rows: u32,
    causes: Vec<augur_graph::RankedCause>,
}

/// `ctl root-cause`: the node's ranking of an incident window.
pub async fn root_cause(
    client: &mut Client,
    output: Output,
    req: pb::RankRootCausesRequest,
) -> Result<(), Status> {
    let r = client
        .call(|c| async move { TopologyClient::new(c).rank_root_causes(req).await })
        .await?
        .into_inner();
    let view = RootCauseView {
        from_ms: req.from_ms,
        to_ms: req.to_ms,
        series: r.series,
        reference_rows: r.reference_rows,
        window_rows: r.window_rows,
        causes: r
            .causes
            .into_iter()
            .map(|c| augur_graph::RankedCause {
                component: c.component,
                score: c.score,
                metric: c.metric,
            })
            .collect(),
    };
    print(output, &view, |v| {
        format!(
            "{} series; {} reference rows, {} in the window; most likely cause first:\n{}",
            v.series,
            v.reference_rows,
            v.window_rows,
            crate::rca_cmd::ranking_text(&v.causes)
        )
    });
    Ok(())
}

/// Parses a topology file read from `path`, TOML or YAML by its extension; the error lists
/// every problem, one per line.
pub fn parse_topology_file(
    path: &std::path::Path,
    text: &str,
) -> Result<augur_graph::Topology, String> {
    parse_topology_as(text, augur_graph::TopologyFormat::of_path(path)).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
        format!(
            "{} has {} error{}:\n{}",
            path.display(),
            errors.len(),
            if errors.len() == 1 { "" } else { "s" },
            lines.join("\n")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::parse_when;

    #[test]
    fn times_in_every_form() {
        let now = 1_700_000_000_000;
        assert_eq!(parse_when("now", now), Ok(now));
        assert_eq!(parse_when("now-10m", now), Ok(now - 600_000));
        assert_eq!(parse_when("-2h", now), Ok(now - 7_200_000));
        assert_eq!(parse_when("-30s", now), Ok(now - 30_000));
        assert_eq!(parse_when("1652812675", now), Ok(1_652_812_675_000));
        assert_eq!(parse_when("1652812675123", now), Ok(1_652_812_675_123));
        assert_eq!(
            parse_when("2022-05-17 18:37:55", now),
            Ok(1_652_812_675_000)
        );
        for bad in [
            "-10d",
            "now-x",
            "now-10м",
            "-5分",
            "-",
            "yesterday",
            "2022-13-01 00:00:00",
            "",
            "now--5m",
        ] {
            assert!(parse_when(bad, now).is_err(), "{bad}");
        }
        // Extremes saturate instead of overflowing.
        assert_eq!(
            parse_when("now-9223372036854775807s", now),
            Ok(now - i64::MAX)
        );
        assert_eq!(parse_when("9223372036854775807", now), Ok(i64::MAX));
    }
}

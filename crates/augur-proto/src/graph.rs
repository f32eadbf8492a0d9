//! Dependency-map messages: edge updates in, graph, risk and what-if answers out.

use augur_graph::{
    BlastRadius, CallStats, DepGraph, Edge, EdgeSource, EdgeUpdate, FadedEdge, Impact, Node,
    Observation,
};

use crate::pb;
use crate::status::WireError;

fn stats_to_wire(s: &CallStats) -> pb::CallStats {
    pb::CallStats {
        calls: s.calls,
        errors: s.errors,
        p50_ms: s.p50_ms,
        p90_ms: s.p90_ms,
        p99_ms: s.p99_ms,
    }
}

fn stats_from_wire(s: pb::CallStats) -> CallStats {
    CallStats {
        calls: s.calls,
        errors: s.errors,
        p50_ms: s.p50_ms,
        p90_ms: s.p90_ms,
        p99_ms: s.p99_ms,
    }
}

pub fn observation_to_wire(o: &Observation) -> pb::EdgeObservation {
    pb::EdgeObservation {
        source: o.source.as_str().to_owned(),
        strength: o.strength,
        last_seen_ms: o.last_seen_ms,
        stats: o.stats.as_ref().map(stats_to_wire),
        bytes: o.bytes,
    }
}

fn observation_from_wire(o: pb::EdgeObservation) -> Result<Observation, WireError> {
    let source = EdgeSource::parse(&o.source).map_err(|e| WireError::Invalid {
        field: "observation.source",
        reason: e.to_string(),
    })?;
    Ok(Observation {
        source,
        strength: o.strength,
        last_seen_ms: o.last_seen_ms,
        stats: o.stats.map(stats_from_wire),
        bytes: o.bytes,
    })
}

/// A graph answer rebuilt as a [`DepGraph`] (for DOT output and client-side analysis).
/// Observations with an unknown source (from a newer server) are skipped.
pub fn graph_from_wire(g: &pb::Graph) -> DepGraph {
    let mut out = DepGraph::with_capacity(g.nodes.len(), g.edges.len());
    let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    for n in &g.nodes {
        out.upsert_node(Node {
            name: n.name.clone(),
            virtual_peer: n.virtual_peer,
            entry: n.entry,
            criticality: u8::try_from(n.criticality).unwrap_or(u8::MAX),
            group: some(&n.group),
            zone: some(&n.zone),
        });
    }
    for e in &g.edges {
        let mut edge = Edge::default();
        for o in e.observations.iter().cloned() {
            if let Ok(o) = observation_from_wire(o) {
                edge.observe(&o);
            }
        }
        out.insert_edge(&e.from, &e.to, edge);
    }
    out
}

/// An edge update off the wire, checked as far as it can be without the graph (names,
/// source, strength, self loops), so a bad one is refused before it reaches Raft.
pub fn edge_update_from_wire(u: pb::EdgeUpdate) -> Result<EdgeUpdate, WireError> {
    let o = u.observation.ok_or(WireError::Missing {
        field: "observation",
    })?;
    let update = EdgeUpdate {
        from: u.from,
        to: u.to,
        observation: observation_from_wire(o)?,
    };
    update.validate().map_err(|e| WireError::Invalid {
        field: "updates",
        reason: e.to_string(),
    })?;
    Ok(update)
}

pub fn edge_update_to_wire(u: &EdgeUpdate) -> pb::EdgeUpdate {
    pb::EdgeUpdate {
        from: u.from.clone(),
        to: u.to.clone(),
        observation: Some(observation_to_wire(&u.observation)),
    }
}

pub fn graph_node_to_wire(n: &Node) -> pb::GraphNode {
    pb::GraphNode {
        name: n.name.clone(),
        virtual_peer: n.virtual_peer,
        entry: n.entry,
        criticality: u32::from(n.criticality),
        group: n.group.clone().unwrap_or_default(),
        zone: n.zone.clone().unwrap_or_default(),
    }
}

pub fn graph_edge_to_wire(from: &str, to: &str, e: &Edge) -> pb::GraphEdge {
    pb::GraphEdge {
        from: from.to_owned(),
        to: to.to_owned(),
        strength: e.strength(),
        observations: e.observations.values().map(observation_to_wire).collect(),
    }
}

pub fn faded_edge_to_wire(f: &FadedEdge) -> pb::FadedEdge {
    pb::FadedEdge {
        from: f.from.clone(),
        to: f.to.clone(),
        source: f.source.as_str().to_owned(),
        last_seen_ms: f.last_seen_ms,
        edge_removed: f.edge_removed,
    }
}

pub fn impact_to_wire(i: &Impact) -> pb::Impact {
    pb::Impact {
        component: i.component.clone(),
        probability: i.probability,
    }
}

/// A component's risk row; `p_fail` comes from its forecast, when it has one.
pub fn risk_to_wire(b: &BlastRadius, threshold: f64, p_fail: Option<f64>) -> pb::ComponentRisk {
    pb::ComponentRisk {
        component: b.component.clone(),
        blast_radius: b.blast_radius,
        action_threshold: threshold,
        p_fail,
        risk: p_fail.map(|p| augur_graph::risk(p, b.blast_radius)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_edge_updates_name_the_problem() {
        let wire = |source: &str, strength: f64| pb::EdgeUpdate {
            from: "a".into(),
            to: "b".into(),
            observation: Some(pb::EdgeObservation {
                source: source.into(),
                strength,
                ..Default::default()
            }),
        };
        assert_eq!(
            edge_update_from_wire(wire("gossip", 1.0))
                .unwrap_err()
                .to_string(),
            "invalid field observation.source: unknown edge source \"gossip\"; expected declared, \
             trace, flow or causal"
        );
        assert!(edge_update_from_wire(wire("trace", 2.0))
            .unwrap_err()
            .to_string()
            .contains("strength 2"));
        let ok = edge_update_from_wire(wire("causal", 0.5)).unwrap();
        assert_eq!(edge_update_from_wire(edge_update_to_wire(&ok)).unwrap(), ok);
    }
}

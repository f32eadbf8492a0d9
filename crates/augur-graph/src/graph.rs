//! The dependency graph itself: nodes (components, and virtual peers seen only in traces),
//! directed edges `from → to` meaning "`from` depends on (calls) `to`", each edge carrying one
//! observation per source with its strength and when it was last seen.
//!
//! Failure flows against the edge direction: when `to` fails, `from` may fail with probability
//! equal to the edge's strength.

use std::collections::{BTreeMap, HashMap};

use petgraph::stable_graph::{EdgeIndex, NodeIndex, StableDiGraph};
use petgraph::visit::{EdgeRef, IntoEdgeReferences};
use petgraph::Direction;
use serde::{Deserialize, Serialize};

use crate::GraphError;

/// Where an edge was learned from. Ordered from most to least authoritative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EdgeSource {
    /// A topology file (CMDB) declared it. Declared edges never fade.
    Declared,
    /// Client and server spans of a trace were paired.
    Trace,
    /// A network flow record between two registered addresses.
    Flow,
    /// Metric series showed that failures of `to` precede failures of `from`.
    Causal,
}

impl EdgeSource {
    pub const ALL: [EdgeSource; 4] = [
        EdgeSource::Declared,
        EdgeSource::Trace,
        EdgeSource::Flow,
        EdgeSource::Causal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EdgeSource::Declared => "declared",
            EdgeSource::Trace => "trace",
            EdgeSource::Flow => "flow",
            EdgeSource::Causal => "causal",
        }
    }

    pub fn parse(s: &str) -> Result<Self, GraphError> {
        Self::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| GraphError::UnknownSource(s.to_owned()))
    }
}

/// Call statistics of a trace edge, as the OpenTelemetry service-graph connector keeps them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CallStats {
    pub calls: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
}

impl CallStats {
    pub fn error_rate(&self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            self.errors as f64 / self.calls as f64
        }
    }
}

/// What one source says about an edge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    pub source: EdgeSource,
    /// Probability in [0, 1] that a failure of the callee reaches the caller along this edge.
    pub strength: f64,
    /// Milliseconds since the Unix epoch, stamped by whoever observed it.
    pub last_seen_ms: u64,
    pub stats: Option<CallStats>,
    /// Bytes seen, for flow edges.
    pub bytes: u64,
}

impl Observation {
    pub fn new(source: EdgeSource, strength: f64, last_seen_ms: u64) -> Self {
        Self {
            source,
            strength,
            last_seen_ms,
            stats: None,
            bytes: 0,
        }
    }
}

/// One edge update, as it travels through Raft in batches: `from` depends on `to`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeUpdate {
    pub from: String,
    pub to: String,
    pub observation: Observation,
}

impl EdgeUpdate {
    /// Checks what can be checked without the graph: names, strength, self loops.
    pub fn validate(&self) -> Result<(), GraphError> {
        for name in [&self.from, &self.to] {
            if name.is_empty() || name.len() > 253 {
                return Err(GraphError::BadName(name.clone()));
            }
        }
        if self.from == self.to {
            return Err(GraphError::SelfLoop(self.from.clone()));
        }
        let s = self.observation.strength;
        if !(0.0..=1.0).contains(&s) {
            return Err(GraphError::BadStrength {
                from: self.from.clone(),
                to: self.to.clone(),
                strength: s,
            });
        }
        if let Some(st) = &self.observation.stats {
            let why = if st.errors > st.calls {
                Some(format!("{} errors in {} calls", st.errors, st.calls))
            } else {
                [st.p50_ms, st.p90_ms, st.p99_ms]
                    .into_iter()
                    .find(|v| !(v.is_finite() && *v >= 0.0))
                    .map(|v| format!("latency {v} ms is not a finite duration of 0 or more"))
            };
            if let Some(why) = why {
                return Err(GraphError::BadStats {
                    from: self.from.clone(),
                    to: self.to.clone(),
                    why,
                });
            }
        }
        Ok(())
    }
}

/// A node of the graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    /// A peer seen only from one side of a span, or an address with no registered component.
    pub virtual_peer: bool,
    /// User-facing: its failure is what blast radius counts.
    pub entry: bool,
    /// 1 (least) ..= 5 (most critical); weights entry points in the blast radius.
    pub criticality: u8,
    pub group: Option<String>,
    pub zone: Option<String>,
}

impl Node {
    pub fn component(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            virtual_peer: false,
            entry: false,
            criticality: 3,
            group: None,
            zone: None,
        }
    }

    pub fn virtual_peer(name: impl Into<String>) -> Self {
        Self {
            virtual_peer: true,
            ..Self::component(name)
        }
    }
}

/// An edge: the observations of each source, and their combination.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Edge {
    pub observations: BTreeMap<EdgeSource, Observation>,
}

impl Edge {
    /// The strongest claim of any source: structural sources say the call exists (a callee's
    /// failure reaches its callers), the causal source says how strongly failures followed.
    pub fn strength(&self) -> f64 {
        self.observations
            .values()
            .map(|o| o.strength)
            .fold(0.0, f64::max)
    }

    /// Records a source's observation: a newer one replaces the older, an older one is
    /// ignored (updates may arrive out of order from several nodes).
    pub fn observe(&mut self, obs: &Observation) {
        match self.observations.get(&obs.source) {
            Some(old) if old.last_seen_ms > obs.last_seen_ms => {}
            _ => {
                self.observations.insert(obs.source, obs.clone());
            }
        }
    }

    /// Whether an observation fades at `cutoff_ms`: not declared, and last seen before it.
    fn fades(o: &Observation, cutoff_ms: u64) -> bool {
        o.source != EdgeSource::Declared && o.last_seen_ms < cutoff_ms
    }

    /// Whether [`Edge::fade_before`] would remove anything.
    pub fn has_fading(&self, cutoff_ms: u64) -> bool {
        self.observations
            .values()
            .any(|o| Self::fades(o, cutoff_ms))
    }

    /// Removes the non-declared observations last seen before `cutoff_ms` and returns them.
    pub fn fade_before(&mut self, cutoff_ms: u64) -> Vec<Observation> {
        let old: Vec<EdgeSource> = self
            .observations
            .values()
            .filter(|o| Self::fades(o, cutoff_ms))
            .map(|o| o.source)
            .collect();
        old.into_iter()
            .filter_map(|s| self.observations.remove(&s))
            .collect()
    }

    /// [`Edge::fade_before`] for the edge `from → to`, as the records of what faded.
    pub fn fade_records(&mut self, from: &str, to: &str, cutoff_ms: u64) -> Vec<FadedEdge> {
        let gone = self.fade_before(cutoff_ms);
        let edge_removed = self.observations.is_empty();
        gone.into_iter()
            .map(|o| FadedEdge {
                from: from.to_owned(),
                to: to.to_owned(),
                source: o.source,
                last_seen_ms: o.last_seen_ms,
                edge_removed,
            })
            .collect()
    }

    pub fn last_seen_ms(&self) -> u64 {
        self.observations
            .values()
            .map(|o| o.last_seen_ms)
            .max()
            .unwrap_or(0)
    }
}

/// What [`DepGraph::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeChange {
    Added,
    Updated,
}

/// An observation removed by [`DepGraph::fade`] because it was not seen for too long.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FadedEdge {
    pub from: String,
    pub to: String,
    pub source: EdgeSource,
    pub last_seen_ms: u64,
    /// No source is left: the edge itself is gone.
    pub edge_removed: bool,
}

/// A borrowed view of one edge.
#[derive(Debug, Clone, Copy)]
pub struct EdgeView<'a> {
    pub from: &'a str,
    pub to: &'a str,
    pub edge: &'a Edge,
}

/// The dependency graph. Node names are unique; there is at most one edge per ordered pair.
#[derive(Debug, Clone, Default)]
pub struct DepGraph {
    graph: StableDiGraph<Node, Edge>,
    index: HashMap<String, NodeIndex>,
}

impl DepGraph {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(nodes: usize, edges: usize) -> Self {
        Self {
            graph: StableDiGraph::with_capacity(nodes, edges),
            index: HashMap::with_capacity(nodes),
        }
    }

    pub fn node_count(&self) -> usize {
        self.graph.node_count()
    }

    pub fn edge_count(&self) -> usize {
        self.graph.edge_count()
    }

    /// Inserts a node, or replaces the attributes of the node of that name. A component
    /// registered under a name first seen as a virtual peer stops being virtual.
    pub fn upsert_node(&mut self, node: Node) -> NodeIndex {
        match self.index.get(&node.name) {
            Some(&ix) => {
                self.graph[ix] = node;
                ix
            }
            None => {
                let name = node.name.clone();
                let ix = self.graph.add_node(node);
                self.index.insert(name, ix);
                ix
            }
        }
    }

    /// The node of that name, creating a virtual peer when there is none.
    pub fn ensure_node(&mut self, name: &str) -> NodeIndex {
        match self.index.get(name) {
            Some(&ix) => ix,
            None => self.upsert_node(Node::virtual_peer(name)),
        }
    }

    /// Removes a node and every edge touching it.
    pub fn remove_node(&mut self, name: &str) -> Option<Node> {
        let ix = self.index.remove(name)?;
        self.graph.remove_node(ix)
    }

    pub fn index_of(&self, name: &str) -> Option<NodeIndex> {
        self.index.get(name).copied()
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.index.get(name).map(|&ix| &self.graph[ix])
    }

    pub fn node_at(&self, ix: NodeIndex) -> &Node {
        &self.graph[ix]
    }

    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.graph.node_weights()
    }

    /// The edges whose propagation strength differs from `old`'s (added, removed or
    /// re-weighted), as `(from, to)`; `None` when the nodes differ in what propagation reads
    /// (names, entry points, criticalities), so everything must be recomputed.
    pub fn strength_changes(&self, old: &DepGraph) -> Option<Vec<(String, String)>> {
        if self.node_count() != old.node_count()
            || self.nodes().any(|n| {
                old.node(&n.name)
                    .is_none_or(|o| o.entry != n.entry || o.criticality != n.criticality)
            })
        {
            return None;
        }
        let mut changed = Vec::new();
        for e in self.edges() {
            if old.edge(e.from, e.to).map(Edge::strength) != Some(e.edge.strength()) {
                changed.push((e.from.to_owned(), e.to.to_owned()));
            }
        }
        for e in old.edges() {
            if self.edge(e.from, e.to).is_none() {
                changed.push((e.from.to_owned(), e.to.to_owned()));
            }
        }
        Some(changed)
    }

    /// Records an observation of `from → to`, creating missing nodes as virtual peers.
    /// A newer observation of the same source replaces the older one; an older one is ignored.
    pub fn apply(&mut self, update: &EdgeUpdate) -> Result<EdgeChange, GraphError> {
        update.validate()?;
        let a = self.ensure_node(&update.from);
        let b = self.ensure_node(&update.to);
        let obs = &update.observation;
        match self.graph.find_edge(a, b) {
            Some(e) => {
                self.graph[e].observe(obs);
                Ok(EdgeChange::Updated)
            }
            None => {
                let mut edge = Edge::default();
                edge.observe(obs);
                self.graph.add_edge(a, b, edge);
                Ok(EdgeChange::Added)
            }
        }
    }

    /// Inserts a whole edge (as kept in the replicated state), replacing any edge between
    /// the two; missing endpoints become virtual peers. An edge with no observation is skipped.
    pub fn insert_edge(&mut self, from: &str, to: &str, edge: Edge) {
        if edge.observations.is_empty() || from == to {
            return;
        }
        let a = self.ensure_node(from);
        let b = self.ensure_node(to);
        match self.graph.find_edge(a, b) {
            Some(e) => self.graph[e] = edge,
            None => {
                self.graph.add_edge(a, b, edge);
            }
        }
    }

    /// Removes one source's observation of `from → to`; the edge goes when none is left.
    /// Returns whether anything was removed.
    pub fn remove_observation(&mut self, from: &str, to: &str, source: EdgeSource) -> bool {
        let Some(e) = self.find(from, to) else {
            return false;
        };
        let removed = self.graph[e].observations.remove(&source).is_some();
        if self.graph[e].observations.is_empty() {
            self.graph.remove_edge(e);
        }
        removed
    }

    fn find(&self, from: &str, to: &str) -> Option<EdgeIndex> {
        let a = self.index_of(from)?;
        let b = self.index_of(to)?;
        self.graph.find_edge(a, b)
    }

    pub fn edge(&self, from: &str, to: &str) -> Option<&Edge> {
        self.find(from, to).map(|e| &self.graph[e])
    }

    pub fn edges(&self) -> impl Iterator<Item = EdgeView<'_>> {
        self.graph.edge_references().map(|e| EdgeView {
            from: &self.graph[e.source()].name,
            to: &self.graph[e.target()].name,
            edge: e.weight(),
        })
    }

    /// What `name` calls.
    pub fn callees(&self, name: &str) -> Vec<&str> {
        self.neighbours(name, Direction::Outgoing)
    }

    /// What calls `name`.
    pub fn callers(&self, name: &str) -> Vec<&str> {
        self.neighbours(name, Direction::Incoming)
    }

    fn neighbours(&self, name: &str, dir: Direction) -> Vec<&str> {
        let Some(ix) = self.index_of(name) else {
            return Vec::new();
        };
        let mut v: Vec<&str> = self
            .graph
            .neighbors_directed(ix, dir)
            .map(|n| self.graph[n].name.as_str())
            .collect();
        v.sort_unstable();
        v
    }

    /// Drops every non-declared observation last seen before `now_ms - ttl_ms`, and edges left
    /// with none. Returns what faded, sorted, so the change can be shown and counted.
    pub fn fade(&mut self, now_ms: u64, ttl_ms: u64) -> Vec<FadedEdge> {
        let cutoff = now_ms.saturating_sub(ttl_ms);
        let mut faded = Vec::new();
        let mut empty = Vec::new();
        let ids: Vec<EdgeIndex> = self.graph.edge_indices().collect();
        for e in ids {
            let (a, b) = self.graph.edge_endpoints(e).expect("live edge");
            let (from, to) = (self.graph[a].name.clone(), self.graph[b].name.clone());
            let edge = &mut self.graph[e];
            faded.extend(edge.fade_records(&from, &to, cutoff));
            if edge.observations.is_empty() {
                empty.push(e);
            }
        }
        for e in empty {
            self.graph.remove_edge(e);
        }
        faded.sort_by(|x, y| (&x.from, &x.to, x.source).cmp(&(&y.from, &y.to, y.source)));
        faded
    }

    /// The graph restricted to nodes matching the filter (edges between kept nodes only).
    pub fn filtered(&self, group: Option<&str>, zone: Option<&str>) -> DepGraph {
        let keep = |n: &Node| {
            group.is_none_or(|g| n.group.as_deref() == Some(g))
                && zone.is_none_or(|z| n.zone.as_deref() == Some(z))
        };
        let mut out = DepGraph::new();
        for n in self.nodes().filter(|n| keep(n)) {
            out.upsert_node(n.clone());
        }
        for e in self.graph.edge_references() {
            let (a, b) = (&self.graph[e.source()], &self.graph[e.target()]);
            if keep(a) && keep(b) {
                let (ia, ib) = (out.index[&a.name], out.index[&b.name]);
                out.graph.add_edge(ia, ib, e.weight().clone());
            }
        }
        out
    }

    /// Graphviz DOT, nodes and edges sorted by name so the output is stable.
    pub fn to_dot(&self) -> String {
        use std::fmt::Write;
        let mut nodes: Vec<&Node> = self.nodes().collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        let mut edges: Vec<EdgeView<'_>> = self.edges().collect();
        edges.sort_by(|a, b| (a.from, a.to).cmp(&(b.from, b.to)));
        let mut s = String::from("digraph augur {\n  rankdir=LR;\n");
        for n in nodes {
            let shape = if n.entry { "doublecircle" } else { "box" };
            let style = if n.virtual_peer { ",style=dashed" } else { "" };
            let _ = writeln!(s, "  \"{}\" [shape={shape}{style}];", escape(&n.name));
        }
        for e in edges {
            let sources: Vec<&str> = e.edge.observations.keys().map(|s| s.as_str()).collect();
            let _ = writeln!(
                s,
                "  \"{}\" -> \"{}\" [label=\"{:.2} {}\"];",
                escape(e.from),
                escape(e.to),
                e.edge.strength(),
                sources.join("+")
            );
        }
        s.push_str("}\n");
        s
    }

    /// The petgraph graph, for the algorithms in this crate.
    pub(crate) fn raw(&self) -> &StableDiGraph<Node, Edge> {
        &self.graph
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upd(from: &str, to: &str, source: EdgeSource, strength: f64, at: u64) -> EdgeUpdate {
        EdgeUpdate {
            from: from.into(),
            to: to.into(),
            observation: Observation::new(source, strength, at),
        }
    }

    #[test]
    fn apply_creates_virtual_peers_and_merges_sources() {
        let mut g = DepGraph::new();
        g.upsert_node(Node::component("web"));
        assert_eq!(
            g.apply(&upd("web", "db", EdgeSource::Trace, 0.5, 10))
                .unwrap(),
            EdgeChange::Added
        );
        assert!(g.node("db").unwrap().virtual_peer);
        assert!(!g.node("web").unwrap().virtual_peer);
        assert_eq!(
            g.apply(&upd("web", "db", EdgeSource::Causal, 0.9, 11))
                .unwrap(),
            EdgeChange::Updated
        );
        assert_eq!(g.edge("web", "db").unwrap().strength(), 0.9);
        // An older observation of the same source does not overwrite a newer one.
        g.apply(&upd("web", "db", EdgeSource::Causal, 0.1, 5))
            .unwrap();
        assert_eq!(g.edge("web", "db").unwrap().strength(), 0.9);
        assert_eq!(g.callees("web"), vec!["db"]);
        assert_eq!(g.callers("db"), vec!["web"]);
    }

    #[test]
    fn bad_updates_are_refused_and_change_nothing() {
        let mut g = DepGraph::new();
        let err = g
            .apply(&upd("a", "a", EdgeSource::Trace, 1.0, 1))
            .unwrap_err();
        assert_eq!(err.to_string(), "edge a -> a is a self loop");
        let err = g
            .apply(&upd("a", "b", EdgeSource::Trace, 1.5, 1))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "edge a -> b has strength 1.5; it must be within [0, 1]"
        );
        let with_stats = |errors, p99_ms| {
            let mut u = upd("a", "b", EdgeSource::Trace, 1.0, 1);
            u.observation.stats = Some(CallStats {
                calls: 10,
                errors,
                p50_ms: 1.0,
                p90_ms: 2.0,
                p99_ms,
            });
            u
        };
        let err = g.apply(&with_stats(11, 3.0)).unwrap_err();
        assert_eq!(err.to_string(), "edge a -> b: 11 errors in 10 calls");
        let err = g.apply(&with_stats(1, f64::NAN)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "edge a -> b: latency NaN ms is not a finite duration of 0 or more"
        );
        assert_eq!(g.node_count(), 0);
        g.apply(&with_stats(10, 3.0)).unwrap();
    }

    #[test]
    fn fading_keeps_declared_edges_and_reports_what_went() {
        let mut g = DepGraph::new();
        g.apply(&upd("a", "b", EdgeSource::Declared, 1.0, 0))
            .unwrap();
        g.apply(&upd("a", "b", EdgeSource::Trace, 1.0, 100))
            .unwrap();
        g.apply(&upd("a", "c", EdgeSource::Flow, 1.0, 100)).unwrap();
        g.apply(&upd("a", "d", EdgeSource::Flow, 1.0, 900)).unwrap();
        let faded = g.fade(1000, 500);
        assert_eq!(faded.len(), 2);
        assert_eq!((faded[0].to.as_str(), faded[0].edge_removed), ("b", false));
        assert_eq!((faded[1].to.as_str(), faded[1].edge_removed), ("c", true));
        assert!(g.edge("a", "b").is_some());
        assert!(g.edge("a", "c").is_none());
        assert!(g.edge("a", "d").is_some());
    }

    #[test]
    fn dot_output_is_stable() {
        let mut g = DepGraph::new();
        let mut fe = Node::component("front-end");
        fe.entry = true;
        g.upsert_node(fe);
        g.apply(&upd("front-end", "carts", EdgeSource::Declared, 1.0, 0))
            .unwrap();
        assert_eq!(
            g.to_dot(),
            "digraph augur {\n  rankdir=LR;\n  \"carts\" [shape=box,style=dashed];\n  \
             \"front-end\" [shape=doublecircle];\n  \"front-end\" -> \"carts\" \
             [label=\"1.00 declared\"];\n}\n"
        );
    }
}

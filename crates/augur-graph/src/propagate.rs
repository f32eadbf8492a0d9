//! How a failure spreads, and what it costs.
//!
//! The model is the independent cascade (live-edge) model: each edge `a → b` (a calls b) is
//! *live* with probability equal to its strength, independently, and when `b` fails every
//! caller reachable from `b` over live edges fails too. A simulation draws `samples` worlds.
//! Whether an edge is live in world `k` is a hash of the seed, `k` and the edge's two names,
//! so it does not depend on insertion order or on other edges: adding an edge never turns
//! another edge off, and every node computes the same numbers.
//!
//! - [`what_if`] answers "if X fails, what else fails, with what probability".
//! - [`blast_radii`] gives every component's **blast radius** at once: the
//!   criticality-weighted share of entry points (user-facing components) its failure reaches,
//!   averaged over the worlds. It walks each world once, carrying for every node the set of
//!   entry points that reach it as a bitset, so the cost is `samples × edges × entries/64`
//!   word operations, not one simulation per component.
//! - [`risk`] = P(fail) × blast radius, and [`action_threshold`] lowers the probability at
//!   which Augur acts as the blast radius grows.

use std::collections::VecDeque;

use petgraph::stable_graph::NodeIndex;
use petgraph::visit::{EdgeRef, IntoEdgeReferences, NodeIndexable};
use petgraph::Direction;
use serde::{Deserialize, Serialize};

use crate::graph::DepGraph;
use crate::GraphError;

/// How many worlds to draw, and from which seed. The default, 16 worlds, keeps every blast
/// radius of a 100k-component, 1M-edge graph under a second on two cores; a graph whose edges
/// all have strength 0 or 1 needs one world and gets exact answers whatever the setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PropagationOptions {
    pub samples: u32,
    pub seed: u64,
    /// Threads [`blast_radii`] may use; the answer is the same for any number.
    pub threads: usize,
}

impl Default for PropagationOptions {
    fn default() -> Self {
        Self {
            samples: 16,
            seed: 0x0a06_0b1a_57ed,
            threads: 1,
        }
    }
}

/// One component's chance of failing when the what-if target fails.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Impact {
    pub component: String,
    pub probability: f64,
}

/// Blast radius of one component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlastRadius {
    pub component: String,
    /// In [0, 1]: criticality-weighted share of entry points its failure reaches.
    pub blast_radius: f64,
}

/// The graph frozen into flat arrays for simulation: for every node, its callers (the edges
/// along which its failure travels), each with its liveness threshold and hash key.
struct Frozen {
    names: Vec<String>,
    /// CSR: callers of node `v` are `callers[start[v]..start[v + 1]]`.
    start: Vec<usize>,
    callers: Vec<u32>,
    threshold: Vec<u64>,
    key: Vec<u64>,
    /// Every edge is certainly live or certainly dead: one world says everything.
    deterministic: bool,
    entries: Vec<u32>,
    entry_weight: Vec<u64>,
}

impl Frozen {
    fn new(g: &DepGraph) -> Self {
        let raw = g.raw();
        let ids: Vec<NodeIndex> = raw.node_indices().collect();
        let mut dense = vec![u32::MAX; raw.node_bound()];
        for (i, ix) in ids.iter().enumerate() {
            dense[ix.index()] = i as u32;
        }
        let names: Vec<String> = ids.iter().map(|&ix| raw[ix].name.clone()).collect();
        let name_hash: Vec<u64> = names.iter().map(|n| hash_str(n)).collect();
        let n = ids.len();
        let mut count = vec![0usize; n + 1];
        for e in raw.edge_references() {
            count[dense[e.target().index()] as usize + 1] += 1;
        }
        for i in 0..n {
            count[i + 1] += count[i];
        }
        let start = count.clone();
        let m = raw.edge_count();
        let mut fill = count;
        let (mut callers, mut threshold, mut key) = (vec![0u32; m], vec![0u64; m], vec![0u64; m]);
        let mut deterministic = true;
        for e in raw.edge_references() {
            let (a, b) = (dense[e.source().index()], dense[e.target().index()]);
            let slot = fill[b as usize];
            fill[b as usize] += 1;
            let s = e.weight().strength();
            callers[slot] = a;
            threshold[slot] = strength_threshold(s);
            key[slot] = mix(name_hash[a as usize] ^ name_hash[b as usize].rotate_left(17));
            deterministic &= s <= 0.0 || s >= 1.0;
        }
        let mut entries = Vec::new();
        let mut entry_weight = Vec::new();
        for (i, &ix) in ids.iter().enumerate() {
            if raw[ix].entry {
                entries.push(i as u32);
                entry_weight.push(u64::from(raw[ix].criticality.max(1)));
            }
        }
        Self {
            names,
            start,
            callers,
            threshold,
            key,
            deterministic,
            entries,
            entry_weight,
        }
    }

    fn worlds(&self, opts: &PropagationOptions) -> u32 {
        if self.deterministic {
            1
        } else {
            opts.samples.max(1)
        }
    }

    #[inline]
    fn live(&self, slot: usize, world_salt: u64) -> bool {
        let t = self.threshold[slot];
        t == u64::MAX || (t != 0 && mix(self.key[slot] ^ world_salt) < t)
    }
}

fn strength_threshold(s: f64) -> u64 {
    if s >= 1.0 {
        u64::MAX
    } else if s <= 0.0 || s.is_nan() {
        0
    } else {
        (s * u64::MAX as f64) as u64
    }
}

fn world_salt(seed: u64, world: u32) -> u64 {
    mix(seed ^ mix(u64::from(world).wrapping_add(0x9e37_79b9_7f4a_7c15)))
}

/// SplitMix64's finaliser: a fast, well-mixed 64-bit hash.
#[inline]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// FNV-1a, then mixed: stable across runs and platforms, unlike `DefaultHasher`'s contract.
fn hash_str(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix(h)
}

/// Everything that fails, with its probability, if `component` fails: the component itself
/// with probability 1, then the rest most-likely first (ties by name).
pub fn what_if(
    g: &DepGraph,
    component: &str,
    opts: &PropagationOptions,
) -> Result<Vec<Impact>, GraphError> {
    if g.index_of(component).is_none() {
        return Err(GraphError::UnknownComponent(component.to_owned()));
    }
    let f = Frozen::new(g);
    let src = f
        .names
        .iter()
        .position(|n| n == component)
        .expect("indexed node is in the frozen graph") as u32;
    let worlds = f.worlds(opts);
    let n = f.names.len();
    let mut hits = vec![0u32; n];
    let mut seen = vec![u32::MAX; n];
    let mut queue = VecDeque::new();
    for w in 0..worlds {
        let salt = world_salt(opts.seed, w);
        seen[src as usize] = w;
        queue.push_back(src);
        while let Some(v) = queue.pop_front() {
            hits[v as usize] += 1;
            for slot in f.start[v as usize]..f.start[v as usize + 1] {
                let c = f.callers[slot];
                if seen[c as usize] != w && f.live(slot, salt) {
                    seen[c as usize] = w;
                    queue.push_back(c);
                }
            }
        }
    }
    let mut out: Vec<Impact> = hits
        .iter()
        .enumerate()
        .filter(|(_, &h)| h > 0)
        .map(|(i, &h)| Impact {
            component: f.names[i].clone(),
            probability: f64::from(h) / f64::from(worlds),
        })
        .collect();
    out.sort_by(|a, b| {
        (b.component == component)
            .cmp(&(a.component == component))
            .then(b.probability.total_cmp(&a.probability))
            .then_with(|| a.component.cmp(&b.component))
    });
    Ok(out)
}

/// The blast radius of one component from its [`what_if`] answer: the criticality-weighted
/// share of entry points among the impacts. Equal to its row of [`blast_radii`] for the same
/// options, without computing every other row.
pub fn blast_radius_of(g: &DepGraph, impacts: &[Impact]) -> f64 {
    let weight = |n: &crate::graph::Node| f64::from(n.criticality.max(1));
    let total: f64 = g.nodes().filter(|n| n.entry).map(weight).sum();
    if total == 0.0 {
        return 0.0;
    }
    let hit: f64 = impacts
        .iter()
        .filter_map(|i| {
            g.node(&i.component)
                .filter(|n| n.entry)
                .map(|n| weight(n) * i.probability)
        })
        .sum();
    (hit / total).min(1.0)
}

/// The blast radius of every node, sorted by name. With no entry point in the graph every
/// blast radius is 0: mark user-facing components `entry`.
pub fn blast_radii(g: &DepGraph, opts: &PropagationOptions) -> Vec<BlastRadius> {
    let f = Frozen::new(g);
    let n = f.names.len();
    let mut acc = vec![0.0f64; n];
    let total: u64 = f.entry_weight.iter().sum();
    if n > 0 && total > 0 {
        let worlds = f.worlds(opts);
        let walk = Walk::new(&f);
        // Worlds are independent: split them over threads. Counts are integers, so the sum
        // is the same whatever the split.
        let threads = opts.threads.clamp(1, worlds as usize) as u32;
        let per = worlds.div_ceil(threads);
        let counts: Vec<u64> = if threads == 1 {
            walk.count(opts.seed, 0..worlds)
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..threads)
                    .map(|t| {
                        let walk = &walk;
                        let range = t * per..((t + 1) * per).min(worlds);
                        s.spawn(move || walk.count(opts.seed, range))
                    })
                    .collect();
                let mut sum = vec![0u64; n];
                for h in handles {
                    let part = h.join().expect("propagation thread panicked");
                    for (a, b) in sum.iter_mut().zip(part) {
                        *a += b;
                    }
                }
                sum
            })
        };
        let norm = (total * u64::from(worlds)) as f64;
        for (a, c) in acc.iter_mut().zip(counts) {
            *a = c as f64 / norm;
        }
    }
    let mut out: Vec<BlastRadius> = f
        .names
        .into_iter()
        .zip(acc)
        .map(|(component, b)| BlastRadius {
            component,
            blast_radius: b.min(1.0),
        })
        .collect();
    out.sort_by(|a, b| a.component.cmp(&b.component));
    out
}

/// Brings `radii` (what [`blast_radii`] gave before some edges changed, for the same nodes,
/// entry points and criticalities) up to date with `g` after the edges `(from, to)` in
/// `changed` were added, removed or re-weighted: afterwards `radii` equals
/// [`blast_radii`] of `g`. A failure crosses `from → to` only when it starts at `to` or at
/// something `to` depends on, so only those rows are walked again, on `g` itself (no frozen
/// copy). Answers how many rows were walked. When more than an eighth of the graph would be,
/// or the walks could cross more than `worlds × edges / 4` edges (about what the bulk
/// computation costs), it recomputes everything instead and answers the node count.
pub fn update_blast_radii(
    g: &DepGraph,
    radii: &mut Vec<BlastRadius>,
    changed: &[(&str, &str)],
    opts: &PropagationOptions,
) -> usize {
    update_blast_radii_within(g, radii, changed, opts, (g.node_count() / 8).max(1))
}

/// [`update_blast_radii`], walking at most `limit` components before falling back.
fn update_blast_radii_within(
    g: &DepGraph,
    radii: &mut Vec<BlastRadius>,
    changed: &[(&str, &str)],
    opts: &PropagationOptions,
    limit: usize,
) -> usize {
    let raw = g.raw();
    let full = |radii: &mut Vec<BlastRadius>| {
        *radii = blast_radii(g, opts);
        radii.len()
    };
    if radii.len() != g.node_count() {
        return full(radii);
    }
    // The components whose failure may now spread differently.
    let mut affected: Vec<NodeIndex> = Vec::new();
    let mut marked = vec![false; raw.node_bound()];
    let mut stack: Vec<NodeIndex> = changed
        .iter()
        .filter_map(|&(_, to)| g.index_of(to))
        .collect();
    while let Some(v) = stack.pop() {
        if !std::mem::replace(&mut marked[v.index()], true) {
            affected.push(v);
            if affected.len() > limit {
                return full(radii);
            }
            stack.extend(raw.neighbors_directed(v, Direction::Outgoing));
        }
    }
    let total: u64 = raw
        .node_weights()
        .filter(|n| n.entry)
        .map(|n| u64::from(n.criticality.max(1)))
        .sum();
    if affected.is_empty() || total == 0 {
        return 0;
    }
    // Always `samples` worlds: when every edge is certain each world is the same, and the
    // ratio of the counts equals the one-world ratio that `blast_radii` computes then.
    let worlds = opts.samples.max(1);
    let norm = (total * u64::from(worlds)) as f64;
    // What the walks would cost at most (every edge live): when that is above about what
    // the bulk computation costs, that is cheaper. The estimate itself is one world's worth.
    let budget = (u64::from(worlds) * g.edge_count() as u64 / 4).max(1024);
    let mut reach = 0u64;
    let mut mark = vec![usize::MAX; raw.node_bound()];
    let mut queue = VecDeque::new();
    for (i, &src) in affected.iter().enumerate() {
        mark[src.index()] = i;
        queue.push_back(src);
        while let Some(v) = queue.pop_front() {
            for c in raw.neighbors_directed(v, Direction::Incoming) {
                reach += u64::from(worlds);
                if reach > budget {
                    return full(radii);
                }
                if mark[c.index()] != i {
                    mark[c.index()] = i;
                    queue.push_back(c);
                }
            }
        }
    }
    // `seen[v] == stamp`: reached in the current (component, world) walk.
    let mut seen = vec![0u64; raw.node_bound()];
    let mut stamp = 0u64;
    for &src in &affected {
        let mut hit = 0u64;
        for w in 0..worlds {
            let salt = world_salt(opts.seed, w);
            stamp += 1;
            seen[src.index()] = stamp;
            queue.push_back(src);
            while let Some(v) = queue.pop_front() {
                let node = &raw[v];
                if node.entry {
                    hit += u64::from(node.criticality.max(1));
                }
                let callee_hash = hash_str(&node.name).rotate_left(17);
                for e in raw.edges_directed(v, Direction::Incoming) {
                    let c = e.source();
                    if seen[c.index()] == stamp {
                        continue;
                    }
                    let t = strength_threshold(e.weight().strength());
                    let key = mix(hash_str(&raw[c].name) ^ callee_hash);
                    if t == u64::MAX || (t != 0 && mix(key ^ salt) < t) {
                        seen[c.index()] = stamp;
                        queue.push_back(c);
                    }
                }
            }
        }
        let name = &raw[src].name;
        if let Ok(row) = radii.binary_search_by(|b| b.component.as_str().cmp(name)) {
            radii[row].blast_radius = (hit as f64 / norm).min(1.0);
        } else {
            return full(radii);
        }
    }
    affected.len()
}

/// What every world's walk shares: the order, the weight classes.
struct Walk<'f> {
    f: &'f Frozen,
    /// Callers before callees; the nodes from `acyclic` on sit on or below a cycle.
    order: Vec<u32>,
    acyclic: usize,
    words: usize,
    classes: Vec<Vec<(u64, u64)>>,
}

impl<'f> Walk<'f> {
    fn new(f: &'f Frozen) -> Self {
        let words = f.entries.len().div_ceil(64);
        let (order, acyclic) = callers_first_order(f);
        Self {
            f,
            order,
            acyclic,
            words,
            classes: weight_classes(f, words),
        }
    }

    /// ORs into `row` the entry sets of `v`'s live callers; answers whether `row` changed.
    #[inline]
    fn pull(&self, reach: &[u64], v: usize, salt: u64, row: &mut [u64]) -> bool {
        let (f, words) = (self.f, self.words);
        let mut changed = 0u64;
        for slot in f.start[v]..f.start[v + 1] {
            if !f.live(slot, salt) {
                continue;
            }
            let src = f.callers[slot] as usize * words;
            for (r, &x) in row.iter_mut().zip(&reach[src..src + words]) {
                changed |= x & !*r;
                *r |= x;
            }
        }
        changed != 0
    }

    /// Over the given worlds, for every node, the summed criticality of the entry points
    /// its failure reaches. Each world computes, for every node, the set of entry points that
    /// reach it over live edges, as a bitset pulled from its callers in topological order;
    /// nodes on cycles are swept again until nothing changes.
    fn count(&self, seed: u64, worlds: std::ops::Range<u32>) -> Vec<u64> {
        let (f, words) = (self.f, self.words);
        let n = f.names.len();
        let mut acc = vec![0u64; n];
        let mut reach = vec![0u64; n * words];
        let mut row = vec![0u64; words];
        for w in worlds {
            let salt = world_salt(seed, w);
            reach.fill(0);
            for (bit, &e) in f.entries.iter().enumerate() {
                reach[e as usize * words + bit / 64] |= 1 << (bit % 64);
            }
            let mut sweep = &self.order[..];
            loop {
                let mut any = false;
                for &v in sweep {
                    let v = v as usize;
                    row.copy_from_slice(&reach[v * words..(v + 1) * words]);
                    if self.pull(&reach, v, salt, &mut row) {
                        reach[v * words..(v + 1) * words].copy_from_slice(&row);
                        any = true;
                    }
                }
                // One pass settles the acyclic part; the rest is swept until stable.
                sweep = &self.order[self.acyclic..];
                if !any || sweep.is_empty() {
                    break;
                }
            }
            for (v, a) in acc.iter_mut().enumerate() {
                let bits = &reach[v * words..(v + 1) * words];
                for (i, &word) in bits.iter().enumerate() {
                    if word != 0 {
                        for &(mask, weight) in &self.classes[i] {
                            *a += u64::from((word & mask).count_ones()) * weight;
                        }
                    }
                }
            }
        }
        acc
    }
}

/// For each word of the entry bitset: (mask of bits, weight) per distinct weight.
fn weight_classes(f: &Frozen, words: usize) -> Vec<Vec<(u64, u64)>> {
    let mut classes: Vec<Vec<(u64, u64)>> = vec![Vec::new(); words];
    for (bit, &w) in f.entry_weight.iter().enumerate() {
        let word = &mut classes[bit / 64];
        match word.iter_mut().find(|(_, x)| *x == w) {
            Some((mask, _)) => *mask |= 1 << (bit % 64),
            None => word.push((1 << (bit % 64), w)),
        }
    }
    classes
}

/// For each node, its callees with the slot of the edge (for liveness), in CSR form.
fn callee_index(f: &Frozen) -> (Vec<usize>, Vec<(u32, u32)>) {
    let n = f.names.len();
    let mut count = vec![0usize; n + 1];
    for &c in &f.callers {
        count[c as usize + 1] += 1;
    }
    for i in 0..n {
        count[i + 1] += count[i];
    }
    let start = count.clone();
    let mut fill = count;
    let mut out = vec![(0u32, 0u32); f.callers.len()];
    for callee in 0..n {
        for slot in f.start[callee]..f.start[callee + 1] {
            let caller = f.callers[slot] as usize;
            out[fill[caller]] = (callee as u32, slot as u32);
            fill[caller] += 1;
        }
    }
    (start, out)
}

/// Nodes ordered so that every caller comes before its callees (Kahn's algorithm), and how
/// many are so ordered; nodes on or below a cycle follow in index order.
fn callers_first_order(f: &Frozen) -> (Vec<u32>, usize) {
    let n = f.names.len();
    let mut indegree: Vec<u32> = f.start.windows(2).map(|w| (w[1] - w[0]) as u32).collect();
    let (out_start, out_slot) = callee_index(f);
    let mut order: Vec<u32> = (0..n as u32)
        .filter(|&v| indegree[v as usize] == 0)
        .collect();
    let mut head = 0;
    while head < order.len() {
        let v = order[head] as usize;
        head += 1;
        for &(callee, _) in &out_slot[out_start[v]..out_start[v + 1]] {
            indegree[callee as usize] -= 1;
            if indegree[callee as usize] == 0 {
                order.push(callee);
            }
        }
    }
    let acyclic = order.len();
    if acyclic < n {
        let mut placed = vec![false; n];
        for &v in &order {
            placed[v as usize] = true;
        }
        order.extend((0..n as u32).filter(|&v| !placed[v as usize]));
    }
    (order, acyclic)
}

/// Risk of a component: its probability of failing times its blast radius, in [0, 1].
pub fn risk(p_fail: f64, blast_radius: f64) -> f64 {
    (p_fail.clamp(0.0, 1.0) * blast_radius.clamp(0.0, 1.0)).clamp(0.0, 1.0)
}

/// When Augur acts on a forecast: at `p_fail ≥ action_threshold(blast)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RiskPolicy {
    /// The risk (P × blast radius) Augur tolerates without acting. Higher: fewer moves.
    pub risk_tolerance: f64,
    /// Never act below this probability, however large the blast radius.
    pub min_probability: f64,
    /// Always act at or above this probability, however small the blast radius.
    pub max_probability: f64,
}

impl Default for RiskPolicy {
    fn default() -> Self {
        Self {
            risk_tolerance: 0.5,
            min_probability: 0.05,
            max_probability: 0.9,
        }
    }
}

/// The failure probability at which a component with this blast radius is acted on: the
/// tolerance divided by the blast radius, clamped to the policy's bounds. A larger blast
/// radius never raises it.
pub fn action_threshold(blast_radius: f64, policy: &RiskPolicy) -> f64 {
    let b = blast_radius.clamp(0.0, 1.0);
    let raw = if b > 0.0 {
        policy.risk_tolerance / b
    } else {
        f64::INFINITY
    };
    raw.clamp(policy.min_probability, policy.max_probability)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::*;
    use crate::graph::{EdgeSource, EdgeUpdate, Node, Observation};

    fn edge(g: &mut DepGraph, from: &str, to: &str, s: f64) {
        g.apply(&EdgeUpdate {
            from: from.into(),
            to: to.into(),
            observation: Observation::new(EdgeSource::Declared, s, 0),
        })
        .unwrap();
    }

    fn entry(g: &mut DepGraph, name: &str, criticality: u8) {
        let mut n = Node::component(name);
        n.entry = true;
        n.criticality = criticality;
        g.upsert_node(n);
    }

    fn shop() -> DepGraph {
        let mut g = DepGraph::new();
        entry(&mut g, "front-end", 5);
        entry(&mut g, "admin", 1);
        edge(&mut g, "front-end", "orders", 1.0);
        edge(&mut g, "front-end", "catalogue", 1.0);
        edge(&mut g, "orders", "payment", 1.0);
        edge(&mut g, "admin", "catalogue", 1.0);
        g
    }

    fn radius(g: &DepGraph, name: &str) -> f64 {
        blast_radii(g, &PropagationOptions::default())
            .into_iter()
            .find(|b| b.component == name)
            .unwrap()
            .blast_radius
    }

    #[test]
    fn blast_radius_weighs_entry_points_by_criticality() {
        let g = shop();
        assert_eq!(radius(&g, "payment"), 5.0 / 6.0);
        assert_eq!(radius(&g, "catalogue"), 1.0);
        assert_eq!(radius(&g, "admin"), 1.0 / 6.0);
    }

    #[test]
    fn what_if_lists_the_failing_set() {
        let g = shop();
        let got: Vec<(String, f64)> = what_if(&g, "payment", &PropagationOptions::default())
            .unwrap()
            .into_iter()
            .map(|i| (i.component, i.probability))
            .collect();
        assert_eq!(
            got,
            vec![
                ("payment".into(), 1.0),
                ("front-end".into(), 1.0),
                ("orders".into(), 1.0)
            ]
        );
        assert_eq!(
            what_if(&g, "nope", &PropagationOptions::default())
                .unwrap_err()
                .to_string(),
            "unknown component nope"
        );
    }

    #[test]
    fn weak_edges_give_probabilities_near_their_strength() {
        let mut g = DepGraph::new();
        entry(&mut g, "a", 3);
        edge(&mut g, "a", "b", 0.3);
        let opts = PropagationOptions {
            samples: 4000,
            seed: 7,
            ..PropagationOptions::default()
        };
        let p = what_if(&g, "b", &opts).unwrap()[1].probability;
        assert!((p - 0.3).abs() < 0.03, "{p}");
        let b = blast_radii(&g, &opts);
        assert!((b[1].blast_radius - p).abs() < 1e-12, "{b:?} vs {p}");
    }

    #[test]
    fn action_threshold_falls_as_blast_radius_grows() {
        let p = RiskPolicy::default();
        assert_eq!(action_threshold(0.0, &p), 0.9);
        assert_eq!(action_threshold(1.0, &p), 0.5);
        assert!(action_threshold(1.0, &p) < action_threshold(0.7, &p));
        assert_eq!(risk(0.5, 0.5), 0.25);
    }

    /// Random graphs with a few entry points; `edges` are (from, to, strength) by index.
    fn arb_graph() -> impl Strategy<Value = (usize, Vec<(usize, usize, f64)>, Vec<usize>)> {
        (2usize..14).prop_flat_map(|n| {
            (
                Just(n),
                prop::collection::vec(
                    (0..n, 0..n, prop::sample::select(vec![0.0, 0.4, 1.0])),
                    0..40,
                ),
                prop::collection::vec(0..n, 0..4),
            )
        })
    }

    fn build(n: usize, edges: &[(usize, usize, f64)], entries: &[usize]) -> DepGraph {
        let mut g = DepGraph::new();
        for i in 0..n {
            let mut node = Node::component(format!("c{i}"));
            node.entry = entries.contains(&i);
            node.criticality = (i % 5 + 1) as u8;
            g.upsert_node(node);
        }
        for &(a, b, s) in edges {
            if a != b {
                edge(&mut g, &format!("c{a}"), &format!("c{b}"), s);
            }
        }
        g
    }

    proptest! {
        #[test]
        fn adding_an_edge_never_shrinks_a_blast_radius(
            (n, edges, entries) in arb_graph(), extra in (0usize..14, 0usize..14, 0.0f64..=1.0)
        ) {
            let (a, b, s) = (extra.0 % n, extra.1 % n, extra.2);
            prop_assume!(a != b);
            // The new edge must be new: an update of an existing one may lower its strength.
            let before_g = build(n, &edges, &entries);
            prop_assume!(before_g.edge(&format!("c{a}"), &format!("c{b}")).is_none());
            let opts = PropagationOptions { samples: 16, seed: 3, ..PropagationOptions::default() };
            let before = blast_radii(&before_g, &opts);
            let mut after_g = before_g.clone();
            edge(&mut after_g, &format!("c{a}"), &format!("c{b}"), s);
            let after = blast_radii(&after_g, &opts);
            for (x, y) in before.iter().zip(&after) {
                prop_assert!(y.blast_radius >= x.blast_radius - 1e-12, "{x:?} -> {y:?}");
            }
        }

        #[test]
        fn one_what_if_agrees_with_the_bulk_computation(
            (n, edges, entries) in arb_graph(), target in 0usize..14
        ) {
            let g = build(n, &edges, &entries);
            let target = format!("c{}", target % n);
            let opts = PropagationOptions { samples: 16, seed: 9, ..PropagationOptions::default() };
            let one = blast_radius_of(&g, &what_if(&g, &target, &opts).unwrap());
            let bulk = blast_radii(&g, &opts).into_iter().find(|b| b.component == target).unwrap();
            prop_assert!((one - bulk.blast_radius).abs() < 1e-9, "{one} vs {bulk:?}");
        }

        #[test]
        fn an_update_equals_the_bulk_computation(
            (n, edges, entries) in arb_graph(),
            changes in prop::collection::vec(
                (0usize..14, 0usize..14, prop::sample::select(vec![0.0, 0.4, 1.0])),
                1..4,
            ),
        ) {
            let opts = PropagationOptions { samples: 16, seed: 3, ..PropagationOptions::default() };
            let g = build(n, &edges, &entries);
            let before = blast_radii(&g, &opts);
            let mut after_g = g.clone();
            let mut changed = Vec::new();
            for &(a, b, s) in &changes {
                let (a, b) = (format!("c{}", a % n), format!("c{}", b % n));
                if a == b {
                    continue;
                }
                if s == 0.0 {
                    after_g.remove_observation(&a, &b, EdgeSource::Declared);
                } else {
                    edge(&mut after_g, &a, &b, s);
                }
                changed.push((a, b));
            }
            let changed: Vec<(&str, &str)> =
                changed.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
            // Never falling back, so the incremental walk is what is checked.
            let mut radii = before;
            update_blast_radii_within(&after_g, &mut radii, &changed, &opts, usize::MAX);
            prop_assert_eq!(radii, blast_radii(&after_g, &opts));
        }

        #[test]
        fn threads_do_not_change_the_answer((n, edges, entries) in arb_graph()) {
            let g = build(n, &edges, &entries);
            let one = PropagationOptions { samples: 12, seed: 5, threads: 1 };
            let three = PropagationOptions { threads: 3, ..one };
            prop_assert_eq!(blast_radii(&g, &one), blast_radii(&g, &three));
        }

        #[test]
        fn nothing_depends_on_it_means_zero_unless_entry((n, edges, entries) in arb_graph()) {
            let g = build(n, &edges, &entries);
            for b in blast_radii(&g, &PropagationOptions { samples: 8, seed: 1, ..PropagationOptions::default() }) {
                let is_entry = g.node(&b.component).unwrap().entry;
                if g.callers(&b.component).is_empty() && !is_entry {
                    prop_assert_eq!(b.blast_radius, 0.0);
                }
            }
        }

        #[test]
        fn impact_set_is_the_reachable_set_at_full_strength(
            (n, edges, entries) in arb_graph(), target in 0usize..14
        ) {
            let full: Vec<_> = edges.iter().map(|&(a, b, _)| (a, b, 1.0)).collect();
            let g = build(n, &full, &entries);
            let target = format!("c{}", target % n);
            // Reachable against the edges: who (transitively) calls the target.
            let mut callers: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for e in g.edges() {
                callers.entry(e.to.into()).or_default().push(e.from.into());
            }
            let mut reach = BTreeSet::from([target.clone()]);
            let mut stack = vec![target.clone()];
            while let Some(v) = stack.pop() {
                for c in callers.get(&v).into_iter().flatten() {
                    if reach.insert(c.clone()) {
                        stack.push(c.clone());
                    }
                }
            }
            let got = what_if(&g, &target, &PropagationOptions::default()).unwrap();
            prop_assert!(got.iter().all(|i| i.probability == 1.0));
            let got: BTreeSet<String> = got.into_iter().map(|i| i.component).collect();
            prop_assert_eq!(got, reach);
        }
    }
}

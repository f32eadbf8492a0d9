//! Dependency edges from traces, paired the way the OpenTelemetry Collector's service-graph
//! connector pairs them: a client (or producer) span and the server (or consumer) span whose
//! parent it is make one call `client.service → server.service`.
//!
//! Spans arrive in any order and in any batching, so each side waits for its partner up to
//! [`ServiceGraphOptions::wait_ms`]. What never pairs is either dropped or, as in the
//! connector, turned into an edge to a virtual node: a client span naming its peer
//! (`peer.service`, `server.address`, `net.peer.name`) becomes `client → peer`, and a server
//! span with no parent at all (a trace entered from outside) becomes [`USER_NODE`]` → server`.
//!
//! Pure and synchronous: the time travels in the arguments, nothing is random, and every
//! output is sorted. Bad spans are counted, never fatal.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::graph::{CallStats, EdgeSource, EdgeUpdate, Observation};

/// The virtual node that calls a server span with no parent (the connector's "user"). Its
/// `~` is outside the component id rule, so it never merges with a component named `user`.
pub const USER_NODE: &str = "~user";

/// Longest component name an [`EdgeUpdate`] accepts.
const MAX_NAME_LEN: usize = 253;

/// The role of a span in a call, as OpenTelemetry defines it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpanKind {
    Client,
    Server,
    Producer,
    Consumer,
    Internal,
    Unspecified,
}

/// One span, reduced to what pairing needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// `None` (or all zeros) for the root span of a trace.
    pub parent_span_id: Option<[u8; 8]>,
    /// The resource's `service.name`.
    pub service: String,
    pub kind: SpanKind,
    pub start_ns: u64,
    pub end_ns: u64,
    /// The span's status is ERROR.
    pub error: bool,
    /// Who a client span calls, from `peer.service`, else `server.address`, else
    /// `net.peer.name`; names the virtual peer if no server span ever answers.
    pub peer_service: Option<String>,
}

impl Span {
    fn parent(&self) -> Option<[u8; 8]> {
        self.parent_span_id.filter(|p| *p != [0; 8])
    }

    fn duration_ns(&self) -> u64 {
        self.end_ns.saturating_sub(self.start_ns)
    }
}

/// Tuning of a [`ServiceGraph`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceGraphOptions {
    /// How long an unpaired span waits for its partner before [`ServiceGraph::expire`]
    /// drops it (or turns it into a virtual-node edge).
    pub wait_ms: u64,
    /// Most unpaired spans held at once; beyond it the oldest are expired early and
    /// counted as evicted.
    pub max_pending: usize,
    /// How far a server span may start before, or end after, its client span before the
    /// pair is counted as clock skew. Skewed pairs are still paired.
    pub clock_skew_tolerance_ms: u64,
    /// An edge's running totals are forgotten after this long without a call (its next
    /// call starts them again), so names seen once do not stay for the life of the process.
    pub edge_idle_ms: u64,
    /// Most edges whose totals are kept; a new one beyond it evicts the longest idle.
    pub max_edges: usize,
}

impl Default for ServiceGraphOptions {
    fn default() -> Self {
        Self {
            wait_ms: 10_000,
            max_pending: 10_000,
            clock_skew_tolerance_ms: 100,
            edge_idle_ms: 60 * 60 * 1000,
            max_edges: 10_000,
        }
    }
}

/// What one [`ServiceGraph::ingest`] call did with its spans.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestSummary {
    /// Spans handed in.
    pub received: u64,
    /// Client/server pairs completed: one call each.
    pub paired: u64,
    /// Root server spans recorded as a call from [`USER_NODE`].
    pub from_user: u64,
    /// Spans waiting for their partner after this call, from this batch and earlier ones.
    pub pending: u64,
    /// Internal and unspecified spans, which say nothing about calls between services.
    pub ignored_kind: u64,
    /// Service name empty or longer than 253 bytes.
    pub unknown_service: u64,
    /// End before start.
    pub end_before_start: u64,
    /// All-zero trace or span id.
    pub zero_id: u64,
    /// Same pairing key as a span already waiting; the later one is dropped.
    pub duplicate: u64,
    /// Pairs whose server span starts before, or ends after, the client span by more than
    /// the tolerance. Still paired.
    pub clock_skew: u64,
    /// Calls of a service to itself, which the graph cannot hold; not recorded.
    pub self_call: u64,
    /// Waiting spans expired early because more than `max_pending` were held.
    pub evicted: u64,
    /// Of the evicted spans, client spans recorded as a call to their virtual peer.
    pub evicted_to_peer: u64,
}

impl IngestSummary {
    /// Spans dropped as malformed (not counting ignored kinds and duplicates).
    pub fn malformed(&self) -> u64 {
        self.unknown_service + self.end_before_start + self.zero_id
    }
}

/// What one [`ServiceGraph::expire`] call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExpireSummary {
    /// Waiting spans that waited `wait_ms` or longer, all outcomes together.
    pub expired: u64,
    /// Client spans recorded as a call to their virtual peer.
    pub to_virtual_peer: u64,
    /// Client spans with no peer attribute, dropped.
    pub unpaired_client: u64,
    /// Server spans whose parent client span never arrived, dropped.
    pub missing_parent: u64,
    /// Virtual-peer calls of a service to itself, not recorded.
    pub self_call: u64,
    /// Edges whose totals were forgotten: idle for `edge_idle_ms`, or the longest idle one
    /// when a new edge came beyond `max_edges`.
    pub edges_forgotten: u64,
}

/// Everything counted since the [`ServiceGraph`] was made: the sums of every ingest and
/// expiry summary (`ingest.pending` is left at 0), and the state now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServiceGraphStats {
    pub ingest: IngestSummary,
    pub expire: ExpireSummary,
    /// Spans waiting now.
    pub pending: u64,
    /// Edges recorded and not yet drained.
    pub undrained_edges: u64,
}

impl IngestSummary {
    fn add(&mut self, o: &IngestSummary) {
        self.received += o.received;
        self.paired += o.paired;
        self.from_user += o.from_user;
        self.ignored_kind += o.ignored_kind;
        self.unknown_service += o.unknown_service;
        self.end_before_start += o.end_before_start;
        self.zero_id += o.zero_id;
        self.duplicate += o.duplicate;
        self.clock_skew += o.clock_skew;
        self.self_call += o.self_call;
        self.evicted += o.evicted;
        self.evicted_to_peer += o.evicted_to_peer;
    }
}

impl ExpireSummary {
    fn add(&mut self, o: &ExpireSummary) {
        self.expired += o.expired;
        self.to_virtual_peer += o.to_virtual_peer;
        self.unpaired_client += o.unpaired_client;
        self.missing_parent += o.missing_parent;
        self.self_call += o.self_call;
        self.edges_forgotten += o.edges_forgotten;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Server,
}

/// Trace id and the span id both sides share: the client's own id, the server's parent id.
type PairKey = ([u8; 16], [u8; 8]);

#[derive(Debug, Clone)]
struct Waiting {
    span: Span,
    since_ms: u64,
    seq: u64,
}

/// Pairs client and server spans into per-edge call statistics. See the module docs.
///
/// Call [`ingest`](Self::ingest) with each batch, [`expire`](Self::expire) periodically, and
/// [`drain_edges`](Self::drain_edges) to take what was learned since the last drain.
#[derive(Debug, Clone)]
pub struct ServiceGraph {
    options: ServiceGraphOptions,
    clients: HashMap<PairKey, Waiting>,
    servers: HashMap<PairKey, Waiting>,
    /// Waiting spans by arrival; arrival times never decrease along it.
    order: BTreeMap<u64, (Side, PairKey)>,
    next_seq: u64,
    /// Latest time seen; a `now_ms` behind it is taken as this.
    clock_ms: u64,
    /// Every edge's calls since the engine started: an observation carries running totals,
    /// so the newest one of an edge says everything and a lost one loses nothing.
    edges: BTreeMap<(String, String), EdgeCalls>,
    /// Every edge of `edges` by its last call (`last_ms`), longest idle first: the cap evicts
    /// its first and idle edges expire from its front, without a scan of every edge.
    by_last_call: BTreeSet<(u64, (String, String))>,
    /// Edges with calls since the last drain.
    dirty: BTreeSet<(String, String)>,
    stats: ServiceGraphStats,
}

impl Default for ServiceGraph {
    fn default() -> Self {
        Self::new(ServiceGraphOptions::default())
    }
}

impl ServiceGraph {
    pub fn new(options: ServiceGraphOptions) -> Self {
        Self {
            options,
            clients: HashMap::new(),
            servers: HashMap::new(),
            order: BTreeMap::new(),
            next_seq: 0,
            clock_ms: 0,
            edges: BTreeMap::new(),
            by_last_call: BTreeSet::new(),
            dirty: BTreeSet::new(),
            stats: ServiceGraphStats::default(),
        }
    }

    pub fn options(&self) -> &ServiceGraphOptions {
        &self.options
    }

    /// Spans waiting for their partner now.
    pub fn pending(&self) -> usize {
        self.order.len()
    }

    /// Cumulative counters.
    pub fn stats(&self) -> ServiceGraphStats {
        ServiceGraphStats {
            pending: self.order.len() as u64,
            undrained_edges: self.dirty.len() as u64,
            ..self.stats
        }
    }

    /// Pairs what can be paired, holds the rest, and evicts the oldest waiting spans beyond
    /// `max_pending`.
    pub fn ingest(&mut self, spans: impl IntoIterator<Item = Span>, now_ms: u64) -> IngestSummary {
        let now = self.tick(now_ms);
        let mut sum = IngestSummary::default();
        for span in spans {
            sum.received += 1;
            self.ingest_one(span, now, &mut sum);
        }
        while self.order.len() > self.options.max_pending {
            let Some((_, (side, key))) = self.order.pop_first() else {
                break;
            };
            sum.evicted += 1;
            if let Some(w) = self.take(side, &key) {
                if side == Side::Client && self.record_to_peer(&w.span) == PeerOutcome::Recorded {
                    sum.evicted_to_peer += 1;
                }
            }
        }
        sum.pending = self.order.len() as u64;

        self.stats.ingest.add(&sum);
        sum
    }

    /// Ends the wait of every span that waited `wait_ms` or longer: a client span naming a
    /// peer becomes a call to that virtual peer; other spans are dropped.
    pub fn expire(&mut self, now_ms: u64) -> ExpireSummary {
        let now = self.tick(now_ms);
        let mut sum = ExpireSummary::default();
        while let Some((&seq, &(side, key))) = self.order.first_key_value() {
            let waiting = match side {
                Side::Client => self.clients.get(&key),
                Side::Server => self.servers.get(&key),
            };
            let Some(waiting) = waiting.filter(|w| w.seq == seq) else {
                // Not reachable: `order` and the two maps change together.
                self.order.pop_first();
                continue;
            };
            if now.saturating_sub(waiting.since_ms) < self.options.wait_ms {
                break;
            }
            self.order.pop_first();
            let Some(w) = self.take(side, &key) else {
                continue;
            };
            sum.expired += 1;
            match side {
                Side::Server => sum.missing_parent += 1,
                Side::Client => match self.record_to_peer(&w.span) {
                    PeerOutcome::Recorded => sum.to_virtual_peer += 1,
                    PeerOutcome::SelfCall => sum.self_call += 1,
                    PeerOutcome::NoPeer => sum.unpaired_client += 1,
                },
            }
        }
        // Totals of edges with no call for `edge_idle_ms` (and none undrained) go.
        let idle = self.options.edge_idle_ms;
        let mut undrained = Vec::new();
        while let Some((last_ms, _)) = self.by_last_call.first() {
            if now.saturating_sub(*last_ms) < idle {
                break;
            }
            let Some(entry) = self.by_last_call.pop_first() else {
                break;
            };
            if self.dirty.contains(&entry.1) {
                undrained.push(entry);
            } else {
                self.edges.remove(&entry.1);
                sum.edges_forgotten += 1;
            }
        }
        self.by_last_call.extend(undrained);
        self.stats.expire.add(&sum);
        sum
    }

    /// One trace observation per edge that saw calls since the last drain, sorted by
    /// `(from, to)`, stamped `now_ms`, with the edge's running totals (calls, errors, and
    /// latency percentiles since the engine started).
    pub fn drain_edges(&mut self, now_ms: u64) -> Vec<EdgeUpdate> {
        std::mem::take(&mut self.dirty)
            .into_iter()
            .map(|key| {
                let stats = self.edges.get(&key).map(EdgeCalls::stats);
                let (from, to) = key;
                EdgeUpdate {
                    from,
                    to,
                    observation: Observation {
                        stats,
                        ..Observation::new(EdgeSource::Trace, 1.0, now_ms)
                    },
                }
            })
            .collect()
    }

    fn tick(&mut self, now_ms: u64) -> u64 {
        self.clock_ms = self.clock_ms.max(now_ms);
        self.clock_ms
    }

    fn ingest_one(&mut self, mut span: Span, now: u64, sum: &mut IngestSummary) {
        // A peer name no edge could carry is dropped now, not held while the span waits.
        if span.peer_service.as_deref().is_some_and(|p| !valid_name(p)) {
            span.peer_service = None;
        }
        let side = match span.kind {
            SpanKind::Client | SpanKind::Producer => Side::Client,
            SpanKind::Server | SpanKind::Consumer => Side::Server,
            SpanKind::Internal | SpanKind::Unspecified => {
                sum.ignored_kind += 1;
                return;
            }
        };
        if span.trace_id == [0; 16] || span.span_id == [0; 8] {
            sum.zero_id += 1;
            return;
        }
        if !valid_name(&span.service) {
            sum.unknown_service += 1;
            return;
        }
        if span.end_ns < span.start_ns {
            sum.end_before_start += 1;
            return;
        }
        match side {
            Side::Client => {
                let key = (span.trace_id, span.span_id);
                if let Some(server) = self.servers.remove(&key) {
                    self.order.remove(&server.seq);
                    self.record_pair(&span, &server.span, sum);
                } else if self.clients.contains_key(&key) {
                    sum.duplicate += 1;
                } else {
                    self.wait(Side::Client, key, span, now);
                }
            }
            Side::Server => {
                let Some(parent) = span.parent() else {
                    match self.record(USER_NODE, &span.service, span.duration_ns(), span.error) {
                        true => sum.from_user += 1,
                        false => sum.self_call += 1,
                    }
                    return;
                };
                let key = (span.trace_id, parent);
                if let Some(client) = self.clients.remove(&key) {
                    self.order.remove(&client.seq);
                    self.record_pair(&client.span, &span, sum);
                } else if self.servers.contains_key(&key) {
                    sum.duplicate += 1;
                } else {
                    self.wait(Side::Server, key, span, now);
                }
            }
        }
    }

    fn wait(&mut self, side: Side, key: PairKey, span: Span, now: u64) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.insert(seq, (side, key));
        let w = Waiting {
            span,
            since_ms: now,
            seq,
        };
        match side {
            Side::Client => self.clients.insert(key, w),
            Side::Server => self.servers.insert(key, w),
        };
    }

    fn take(&mut self, side: Side, key: &PairKey) -> Option<Waiting> {
        match side {
            Side::Client => self.clients.remove(key),
            Side::Server => self.servers.remove(key),
        }
    }

    fn record_pair(&mut self, client: &Span, server: &Span, sum: &mut IngestSummary) {
        let tolerance_ns = self
            .options
            .clock_skew_tolerance_ms
            .saturating_mul(1_000_000);
        if server.start_ns.saturating_add(tolerance_ns) < client.start_ns
            || server.end_ns > client.end_ns.saturating_add(tolerance_ns)
        {
            sum.clock_skew += 1;
        }
        let error = client.error || server.error;
        match self.record(
            &client.service,
            &server.service,
            client.duration_ns(),
            error,
        ) {
            true => sum.paired += 1,
            false => sum.self_call += 1,
        }
    }

    fn record_to_peer(&mut self, client: &Span) -> PeerOutcome {
        let Some(peer) = client.peer_service.as_deref().filter(|p| valid_name(p)) else {
            return PeerOutcome::NoPeer;
        };
        match self.record(&client.service, peer, client.duration_ns(), client.error) {
            true => PeerOutcome::Recorded,
            false => PeerOutcome::SelfCall,
        }
    }

    /// Records one call; `false` (and nothing recorded) for a call of a service to itself.
    fn record(&mut self, from: &str, to: &str, latency_ns: u64, error: bool) -> bool {
        if from == to {
            return false;
        }
        let key = (from.to_owned(), to.to_owned());
        let now = self.clock_ms;
        if let Some(edge) = self.edges.get_mut(&key) {
            edge.add(latency_ns, error);
            if edge.last_ms != now {
                let entry = (edge.last_ms, key);
                self.by_last_call.remove(&entry);
                edge.last_ms = now;
                self.by_last_call.insert((now, entry.1.clone()));
                self.dirty.insert(entry.1);
            } else {
                self.dirty.insert(key);
            }
            return true;
        }
        if self.edges.len() >= self.options.max_edges {
            // Room for a new edge: the longest idle one's totals go (drained first, if it
            // still has calls to report, they are lost with it and counted).
            if let Some((_, oldest)) = self.by_last_call.pop_first() {
                self.edges.remove(&oldest);
                self.dirty.remove(&oldest);
                self.stats.expire.edges_forgotten += 1;
            }
        }
        let mut edge = EdgeCalls {
            last_ms: now,
            ..EdgeCalls::default()
        };
        edge.add(latency_ns, error);
        self.edges.insert(key.clone(), edge);
        self.by_last_call.insert((now, key.clone()));
        self.dirty.insert(key);
        true
    }

    /// Edges whose running totals are kept now.
    pub fn edges_kept(&self) -> usize {
        self.edges.len()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PeerOutcome {
    Recorded,
    NoPeer,
    SelfCall,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_LEN
}

/// Calls of one edge since the last drain.
#[derive(Debug, Clone, Default)]
struct EdgeCalls {
    calls: u64,
    errors: u64,
    latency: LatencyHistogram,
    /// The engine's clock at its last call.
    last_ms: u64,
}

impl EdgeCalls {
    fn add(&mut self, latency_ns: u64, error: bool) {
        self.calls += 1;
        self.errors += u64::from(error);
        self.latency.record(latency_ns / 1_000);
    }

    fn stats(&self) -> CallStats {
        CallStats {
            calls: self.calls,
            errors: self.errors,
            p50_ms: self.latency.quantile_us(0.50) / 1_000.0,
            p90_ms: self.latency.quantile_us(0.90) / 1_000.0,
            p99_ms: self.latency.quantile_us(0.99) / 1_000.0,
        }
    }
}

/// Latencies in microseconds, in log-linear buckets: exact below 8 µs, then 8 buckets per
/// power of two (at most 12.5 % wide). Integer arithmetic only, so every node computes the
/// same buckets. Latencies are capped at 2^40 µs (about 12 days), which bounds it to 312
/// buckets; only buckets that saw a call are stored.
#[derive(Debug, Clone, Default)]
struct LatencyHistogram {
    buckets: BTreeMap<u16, u64>,
    count: u64,
    min_us: u64,
    max_us: u64,
}

const SUB_BUCKET_BITS: u32 = 3;
const SUB_BUCKETS: u64 = 1 << SUB_BUCKET_BITS;
const MAX_LATENCY_US: u64 = (1 << 40) - 1;

impl LatencyHistogram {
    fn record(&mut self, us: u64) {
        let us = us.min(MAX_LATENCY_US);
        if self.count == 0 {
            self.min_us = us;
            self.max_us = us;
        } else {
            self.min_us = self.min_us.min(us);
            self.max_us = self.max_us.max(us);
        }
        self.count += 1;
        *self.buckets.entry(bucket_of(us)).or_default() += 1;
    }

    /// Nearest-rank quantile: the middle of the bucket holding it, kept within the
    /// smallest and largest value recorded. Zero when empty.
    fn quantile_us(&self, q: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (&bucket, &n) in &self.buckets {
            seen += n;
            if seen >= rank {
                let (lo, hi) = bucket_bounds(bucket);
                let mid = lo as f64 + (hi - lo) as f64 / 2.0;
                return mid.clamp(self.min_us as f64, self.max_us as f64);
            }
        }
        self.max_us as f64
    }
}

fn bucket_of(us: u64) -> u16 {
    if us < SUB_BUCKETS {
        return us as u16;
    }
    let exp = 63 - us.leading_zeros();
    let shift = exp - SUB_BUCKET_BITS;
    let sub = (us >> shift) & (SUB_BUCKETS - 1);
    (SUB_BUCKETS + u64::from(shift) * SUB_BUCKETS + sub) as u16
}

/// The smallest and largest value of a bucket.
fn bucket_bounds(bucket: u16) -> (u64, u64) {
    let b = u64::from(bucket);
    if b < SUB_BUCKETS {
        return (b, b);
    }
    let shift = (b - SUB_BUCKETS) / SUB_BUCKETS;
    let sub = (b - SUB_BUCKETS) % SUB_BUCKETS;
    let lo = (SUB_BUCKETS + sub) << shift;
    (lo, lo + (1 << shift) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn tid(n: u8) -> [u8; 16] {
        let mut t = [0; 16];
        t[15] = n;
        t[0] = 0xab;
        t
    }

    fn sid(n: u8) -> [u8; 8] {
        [0x5a, 0, 0, 0, 0, 0, 0, n]
    }

    /// A span of `service` in trace `t` lasting `[start_ms, end_ms]`.
    fn span(
        t: u8,
        id: u8,
        parent: Option<u8>,
        service: &str,
        kind: SpanKind,
        start_ms: u64,
        end_ms: u64,
    ) -> Span {
        Span {
            trace_id: tid(t),
            span_id: sid(id),
            parent_span_id: parent.map(sid),
            service: service.into(),
            kind,
            start_ns: start_ms * MS,
            end_ns: end_ms * MS,
            error: false,
            peer_service: None,
        }
    }

    /// One trace front-end → orders → payment: the orders call takes `10 + t` ms and the
    /// payment call `t` ms; every 5th payment call fails on the server side.
    fn chain(t: u8) -> Vec<Span> {
        let d = u64::from(t);
        let mut pay_server = span(t, 4, Some(3), "payment", SpanKind::Server, 3, 3 + d);
        pay_server.error = t.is_multiple_of(5);
        vec![
            span(t, 1, None, "front-end", SpanKind::Client, 0, 10 + d + 1),
            span(t, 2, Some(1), "orders", SpanKind::Server, 1, 10 + d),
            span(t, 3, Some(2), "orders", SpanKind::Client, 2, 2 + d + 2),
            pay_server,
        ]
    }

    fn stats_of(edges: &[EdgeUpdate], from: &str, to: &str) -> CallStats {
        let e = edges
            .iter()
            .find(|e| e.from == from && e.to == to)
            .unwrap_or_else(|| panic!("no edge {from} -> {to} in {edges:?}"));
        e.observation.stats.clone().unwrap()
    }

    #[test]
    fn chain_in_mixed_order_gives_two_edges_with_counts_and_percentiles() {
        let mut spans: Vec<Span> = (1..=100).flat_map(chain).collect();
        // Servers before clients for half the traces, and the batches cut across traces.
        spans.reverse();
        spans[..200].rotate_left(7);
        let mut g = ServiceGraph::default();
        let mut paired = 0;
        for (i, batch) in spans.chunks(37).enumerate() {
            let s = g.ingest(batch.to_vec(), 1_000 + i as u64);
            paired += s.paired;
            assert_eq!(s.malformed(), 0);
            assert_eq!(s.duplicate, 0);
            assert_eq!(s.clock_skew, 0);
        }
        assert_eq!(paired, 200);
        assert_eq!(g.pending(), 0);

        let edges = g.drain_edges(5_000);
        let names: Vec<(&str, &str)> = edges
            .iter()
            .map(|e| (e.from.as_str(), e.to.as_str()))
            .collect();
        assert_eq!(names, [("front-end", "orders"), ("orders", "payment")]);
        for e in &edges {
            assert_eq!(e.observation.source, EdgeSource::Trace);
            assert_eq!(e.observation.strength, 1.0);
            assert_eq!(e.observation.last_seen_ms, 5_000);
            e.validate().unwrap();
        }

        // front-end's client spans last 12..=111 ms; orders' client spans 3..=102 ms.
        let fo = stats_of(&edges, "front-end", "orders");
        assert_eq!((fo.calls, fo.errors), (100, 0));
        let op = stats_of(&edges, "orders", "payment");
        assert_eq!((op.calls, op.errors), (100, 20));
        assert!((op.error_rate() - 0.2).abs() < 1e-9);
        for (got, want) in [
            (fo.p50_ms, 61.0),
            (fo.p90_ms, 101.0),
            (fo.p99_ms, 110.0),
            (op.p50_ms, 52.0),
            (op.p90_ms, 92.0),
            (op.p99_ms, 101.0),
        ] {
            assert!(
                (got - want).abs() <= want * 0.07,
                "percentile {got} ms, want about {want} ms"
            );
        }
        assert!(fo.p50_ms <= fo.p90_ms && fo.p90_ms <= fo.p99_ms);

        // Drained: nothing until new calls.
        assert!(g.drain_edges(6_000).is_empty());
        let st = g.stats();
        assert_eq!(
            (st.ingest.received, st.ingest.paired, st.pending),
            (400, 200, 0)
        );

        // A later drain carries running totals: the newest observation says everything.
        g.ingest(chain(101), 7_000);
        let later = g.drain_edges(8_000);
        assert_eq!(later.len(), 2);
        let op = stats_of(&later, "orders", "payment");
        assert_eq!((op.calls, op.errors), (101, 20));
    }

    #[test]
    fn constant_latency_gives_exact_percentiles() {
        let mut g = ServiceGraph::default();
        let spans = (1..=10).flat_map(|t| {
            [
                span(t, 1, None, "a", SpanKind::Client, 0, 7),
                span(t, 2, Some(1), "b", SpanKind::Server, 1, 6),
            ]
        });
        g.ingest(spans, 0);
        let s = stats_of(&g.drain_edges(1), "a", "b");
        assert_eq!((s.p50_ms, s.p90_ms, s.p99_ms), (7.0, 7.0, 7.0));
    }

    #[test]
    fn bad_spans_are_counted_and_good_spans_still_pair() {
        let mut spans = chain(1);
        let mut zero_trace = span(2, 1, None, "a", SpanKind::Client, 0, 1);
        zero_trace.trace_id = [0; 16];
        let mut zero_span = span(2, 1, None, "a", SpanKind::Client, 0, 1);
        zero_span.span_id = [0; 8];
        spans.extend([
            zero_trace,
            zero_span,
            span(3, 1, None, "", SpanKind::Client, 0, 1),
            span(3, 2, None, &"x".repeat(254), SpanKind::Server, 0, 1),
            span(4, 1, None, "a", SpanKind::Client, 5, 4),
            span(5, 1, None, "a", SpanKind::Internal, 0, 1),
            span(5, 2, None, "a", SpanKind::Unspecified, 0, 1),
            // A second copy of a client span that is waiting.
            span(6, 1, None, "a", SpanKind::Client, 0, 5),
            span(6, 1, None, "a", SpanKind::Client, 0, 5),
            // A server span that started 1 s before its client and is paired anyway.
            span(7, 1, None, "a", SpanKind::Client, 1_000, 1_010),
            span(7, 2, Some(1), "b", SpanKind::Server, 0, 1_005),
            // A call to itself.
            span(8, 1, None, "a", SpanKind::Client, 0, 5),
            span(8, 2, Some(1), "a", SpanKind::Server, 1, 4),
            // A server span whose client never comes.
            span(9, 2, Some(1), "b", SpanKind::Server, 1, 4),
        ]);
        let mut g = ServiceGraph::new(ServiceGraphOptions {
            wait_ms: 100,
            ..ServiceGraphOptions::default()
        });
        let s = g.ingest(spans, 0);
        assert_eq!(s.zero_id, 2);
        assert_eq!(s.unknown_service, 2);
        assert_eq!(s.end_before_start, 1);
        assert_eq!(s.malformed(), 5);
        assert_eq!(s.ignored_kind, 2);
        assert_eq!(s.duplicate, 1);
        assert_eq!(s.clock_skew, 1);
        assert_eq!(s.self_call, 1);
        assert_eq!(s.paired, 3);
        assert_eq!(s.pending, 2);

        let x = g.expire(99);
        assert_eq!(x, ExpireSummary::default());
        let x = g.expire(100);
        assert_eq!(x.expired, 2);
        assert_eq!(x.missing_parent, 1);
        assert_eq!(x.unpaired_client, 1);
        assert_eq!(g.pending(), 0);

        let edges = g.drain_edges(100);
        let names: Vec<(&str, &str)> = edges
            .iter()
            .map(|e| (e.from.as_str(), e.to.as_str()))
            .collect();
        assert_eq!(
            names,
            [("a", "b"), ("front-end", "orders"), ("orders", "payment")]
        );
        let st = g.stats();
        assert_eq!(st.expire.missing_parent, 1);
        assert_eq!(st.ingest.zero_id, 2);
        assert_eq!(st.ingest.clock_skew, 1);
    }

    /// A client span and its server span in trace `t`: a call of `from` to `to`.
    fn call(t: u8, from: &str, to: &str) -> [Span; 2] {
        [
            span(t, 1, None, from, SpanKind::Client, 0, 10),
            span(t, 2, Some(1), to, SpanKind::Server, 1, 9),
        ]
    }

    use proptest::strategy::Strategy;

    proptest::proptest! {
        /// The index of edges by their last call evicts and expires the same edges as a scan
        /// of every edge would: at the cap the longest idle (ties by name), and at expiry
        /// every drained edge idle past `edge_idle_ms`.
        #[test]
        fn the_last_call_index_evicts_and_expires_what_a_scan_would(
            ops in proptest::collection::vec(
                // Half the steps take no time: ties in the last call, broken by name.
                (0u8..4, 0usize..6, 0usize..6, (0u64..600).prop_map(|d| d.saturating_sub(300))),
                1..200,
            )
        ) {
            const IDLE: u64 = 500;
            const CAP: usize = 5;
            let mut g = ServiceGraph::new(ServiceGraphOptions {
                edge_idle_ms: IDLE,
                max_edges: CAP,
                ..ServiceGraphOptions::default()
            });
            // The model: each edge's last call and whether it has calls not drained yet.
            let mut model: BTreeMap<(String, String), (u64, bool)> = BTreeMap::new();
            let mut forgotten = 0u64;
            let mut now = 0u64;
            for (op, a, b, dt) in ops {
                now += dt;
                if op < 3 {
                    let key = (format!("s{a}"), format!("s{b}"));
                    g.tick(now);
                    proptest::prop_assert_eq!(g.record(&key.0, &key.1, 1_000, false), a != b);
                    if a == b {
                        continue;
                    }
                    if !model.contains_key(&key) && model.len() >= CAP {
                        let oldest = model
                            .iter()
                            .min_by_key(|(_, (ms, _))| *ms)
                            .map(|(k, _)| k.clone())
                            .expect("a full model");
                        model.remove(&oldest);
                        forgotten += 1;
                    }
                    model.insert(key, (now, true));
                } else {
                    if dt % 2 == 0 {
                        g.drain_edges(now);
                        model.values_mut().for_each(|v| v.1 = false);
                    }
                    g.expire(now);
                    let before = model.len();
                    model.retain(|_, (ms, undrained)| *undrained || now - *ms < IDLE);
                    forgotten += (before - model.len()) as u64;
                }
                let kept: Vec<_> = g.edges.iter().map(|(k, e)| (k.clone(), e.last_ms)).collect();
                let want: Vec<_> = model.iter().map(|(k, (ms, _))| (k.clone(), *ms)).collect();
                proptest::prop_assert_eq!(kept, want);
                let mut index: Vec<_> = g.edges.iter().map(|(k, e)| (e.last_ms, k.clone())).collect();
                index.sort();
                proptest::prop_assert_eq!(g.by_last_call.iter().cloned().collect::<Vec<_>>(), index);
                proptest::prop_assert_eq!(g.stats.expire.edges_forgotten, forgotten);
            }
        }
    }

    /// Edge totals are bounded: names seen once do not stay for the life of the process.
    #[test]
    fn edge_totals_are_forgotten_when_idle_and_capped() {
        let mut g = ServiceGraph::new(ServiceGraphOptions {
            edge_idle_ms: 1_000,
            max_edges: 2,
            ..ServiceGraphOptions::default()
        });
        g.ingest(call(1, "a", "b"), 0);
        g.ingest(call(2, "a", "c"), 10);
        assert_eq!(g.edges_kept(), 2);
        // A third edge: the longest idle (a -> b) goes.
        g.ingest(call(3, "a", "d"), 20);
        assert_eq!(g.edges_kept(), 2);
        assert_eq!(g.stats().expire.edges_forgotten, 1);
        let drained: Vec<(String, String)> = g
            .drain_edges(20)
            .into_iter()
            .map(|e| (e.from, e.to))
            .collect();
        assert_eq!(
            drained,
            [("a".into(), "c".into()), ("a".into(), "d".into())]
        );
        // Drained and idle past `edge_idle_ms`: forgotten.
        assert_eq!(g.expire(1_009).edges_forgotten, 0);
        assert_eq!(g.expire(1_020).edges_forgotten, 2);
        assert_eq!(g.edges_kept(), 0);
    }

    #[test]
    fn skew_within_tolerance_is_not_counted() {
        let mut g = ServiceGraph::new(ServiceGraphOptions {
            clock_skew_tolerance_ms: 5,
            ..ServiceGraphOptions::default()
        });
        let s = g.ingest(
            [
                span(1, 1, None, "a", SpanKind::Client, 100, 200),
                span(1, 2, Some(1), "b", SpanKind::Server, 96, 204),
            ],
            0,
        );
        assert_eq!((s.paired, s.clock_skew), (1, 0));
        let s = g.ingest(
            [
                span(2, 1, None, "a", SpanKind::Client, 100, 200),
                span(2, 2, Some(1), "b", SpanKind::Server, 100, 206),
            ],
            0,
        );
        assert_eq!((s.paired, s.clock_skew), (1, 1));
    }

    #[test]
    fn client_with_peer_becomes_an_edge_to_the_virtual_peer_after_wait() {
        let mut g = ServiceGraph::default();
        let mut c = span(1, 1, None, "orders", SpanKind::Client, 0, 30);
        c.peer_service = Some("shipping".into());
        c.error = true;
        g.ingest([c], 1_000);
        assert_eq!(g.expire(10_999).expired, 0);
        assert!(g.drain_edges(10_999).is_empty());
        let x = g.expire(11_000);
        assert_eq!((x.expired, x.to_virtual_peer), (1, 1));
        let edges = g.drain_edges(11_000);
        assert_eq!(edges.len(), 1);
        assert_eq!(
            (edges[0].from.as_str(), edges[0].to.as_str()),
            ("orders", "shipping")
        );
        let s = edges[0].observation.stats.clone().unwrap();
        assert_eq!((s.calls, s.errors, s.p50_ms), (1, 1, 30.0));
    }

    #[test]
    fn a_waiting_client_span_does_not_hold_a_peer_name_no_edge_could_carry() {
        let mut g = ServiceGraph::default();
        let mut c = span(1, 1, None, "orders", SpanKind::Client, 0, 30);
        c.peer_service = Some("x".repeat(100_000));
        let s = g.ingest([c], 0);
        assert_eq!(s.pending, 1);
        assert!(g.clients.values().all(|w| w.span.peer_service.is_none()));
    }

    #[test]
    fn client_with_peer_that_gets_its_server_pairs_normally() {
        let mut g = ServiceGraph::default();
        let mut c = span(1, 1, None, "orders", SpanKind::Client, 0, 30);
        c.peer_service = Some("shipping-lb".into());
        g.ingest([c], 0);
        g.ingest(
            [span(1, 2, Some(1), "shipping", SpanKind::Server, 1, 29)],
            5_000,
        );
        g.expire(60_000);
        let edges = g.drain_edges(60_000);
        assert_eq!(edges.len(), 1);
        assert_eq!(edges[0].to, "shipping");
    }

    #[test]
    fn root_server_span_is_a_call_from_user() {
        let mut g = ServiceGraph::default();
        let mut root = span(1, 1, None, "front-end", SpanKind::Server, 0, 40);
        root.parent_span_id = Some([0; 8]);
        let s = g.ingest([root], 0);
        assert_eq!((s.from_user, s.pending), (1, 0));
        let edges = g.drain_edges(0);
        assert_eq!(
            (edges[0].from.as_str(), edges[0].to.as_str()),
            (USER_NODE, "front-end")
        );
        // Not a name a component can have: a component called `user` stays apart.
        assert!(!USER_NODE.chars().all(crate::is_id_char));
    }

    #[test]
    fn producer_and_consumer_pair_like_client_and_server() {
        let mut g = ServiceGraph::default();
        let s = g.ingest(
            [
                span(1, 2, Some(1), "billing", SpanKind::Consumer, 50, 60),
                span(1, 1, None, "orders", SpanKind::Producer, 0, 2),
            ],
            0,
        );
        assert_eq!(s.paired, 1);
        let edges = g.drain_edges(0);
        assert_eq!(
            (edges[0].from.as_str(), edges[0].to.as_str()),
            ("orders", "billing")
        );
    }

    #[test]
    fn pending_spans_stay_bounded_and_the_oldest_are_evicted() {
        let mut g = ServiceGraph::new(ServiceGraphOptions {
            max_pending: 50,
            ..ServiceGraphOptions::default()
        });
        let mut evicted = 0;
        for round in 0..20u64 {
            let spans = (0..=255u8).map(|t| {
                let mut c = span(
                    t,
                    (round % 250) as u8 + 1,
                    None,
                    "a",
                    SpanKind::Client,
                    0,
                    3,
                );
                c.trace_id[1] = round as u8;
                c.peer_service = (t == 0).then(|| "peer".to_owned());
                c
            });
            let s = g.ingest(spans, round);
            assert!(g.pending() <= 50);
            assert_eq!(s.pending, 50);
            evicted += s.evicted;
        }
        assert_eq!(evicted, 20 * 256 - 50);
        assert_eq!(g.stats().ingest.evicted, evicted);
        // The newest are the ones kept: the last round's spans pair.
        let pairs = (206..=255u8).map(|t| {
            let mut s = span(t, 2, Some(20), "b", SpanKind::Server, 1, 2);
            s.trace_id[1] = 19;
            s
        });
        assert_eq!(g.ingest(pairs, 100).paired, 50);
        // Evicted client spans that named a peer still count as calls to it.
        let edges = g.drain_edges(100);
        assert_eq!(stats_of(&edges, "a", "peer").calls, 20);
        assert_eq!(stats_of(&edges, "a", "b").calls, 50);
    }

    #[test]
    fn time_going_backwards_does_not_unorder_expiry() {
        let mut g = ServiceGraph::new(ServiceGraphOptions {
            wait_ms: 10,
            ..ServiceGraphOptions::default()
        });
        g.ingest([span(1, 1, None, "a", SpanKind::Client, 0, 1)], 100);
        g.ingest([span(2, 1, None, "a", SpanKind::Client, 0, 1)], 50);
        assert_eq!(g.expire(109).expired, 0);
        assert_eq!(g.expire(110).expired, 2);
    }

    #[test]
    fn zero_max_pending_holds_nothing() {
        let mut g = ServiceGraph::new(ServiceGraphOptions {
            max_pending: 0,
            ..ServiceGraphOptions::default()
        });
        let s = g.ingest([span(1, 1, None, "a", SpanKind::Client, 0, 1)], 0);
        assert_eq!((s.evicted, s.pending), (1, 0));
    }

    #[test]
    fn histogram_buckets_cover_every_value_once() {
        let mut prev_hi = None;
        for b in 0..=bucket_of(MAX_LATENCY_US) {
            let (lo, hi) = bucket_bounds(b);
            assert!(lo <= hi);
            if let Some(p) = prev_hi {
                assert_eq!(lo, p + 1, "gap before bucket {b}");
            }
            assert_eq!(bucket_of(lo), b);
            assert_eq!(bucket_of(hi), b);
            if lo >= SUB_BUCKETS {
                assert!((hi - lo + 1) * 8 <= lo, "bucket {b} wider than 12.5 %");
            }
            prev_hi = Some(hi);
        }
        assert_eq!(prev_hi, Some(MAX_LATENCY_US));
        assert!(bucket_of(MAX_LATENCY_US) < 312);
    }
}

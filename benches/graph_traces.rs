//! The trace engine at its edge cap: pairing a client and a server span into a call on an
//! edge it already keeps, and on a new edge, which evicts the longest idle of the 10,000
//! edges kept (the default `max_edges`).

use std::hint::black_box;

use augur_graph::{ServiceGraph, ServiceGraphOptions, Span, SpanKind};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};

const MS: u64 = 1_000_000;

/// The two spans of one call from `from` to `to`, in trace `n`, at `at_ms`.
fn call(n: u64, from: String, to: String, at_ms: u64) -> [Span; 2] {
    let mut trace_id = [0u8; 16];
    trace_id[..8].copy_from_slice(&n.to_le_bytes());
    let span = |id: u8, parent: Option<[u8; 8]>, service: String, kind| Span {
        trace_id,
        span_id: [id; 8],
        parent_span_id: parent,
        service,
        kind,
        start_ns: at_ms * MS,
        end_ns: (at_ms + 5) * MS,
        error: false,
        peer_service: None,
    };
    [
        span(1, None, from, SpanKind::Client),
        span(2, Some([1; 8]), to, SpanKind::Server),
    ]
}

/// An engine holding `max_edges` edges (`svc-i` → `db-i`), each called once, a ms apart.
fn full() -> (ServiceGraph, u64) {
    let mut g = ServiceGraph::new(ServiceGraphOptions::default());
    let edges = g.options().max_edges as u64;
    for i in 1..=edges {
        g.ingest(call(i, format!("svc-{i}"), format!("db-{i}"), i), i);
    }
    assert_eq!(g.edges_kept() as u64, edges);
    g.drain_edges(edges);
    (g, edges)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("trace_edges_at_cap");
    group.bench_function("call_on_a_kept_edge", |b| {
        let (mut g, mut n) = full();
        b.iter(|| {
            n += 1;
            let i = n % 10_000 + 1;
            black_box(g.ingest(call(n, format!("svc-{i}"), format!("db-{i}"), n), n));
        });
    });
    group.bench_function("call_on_a_new_edge_evicting_the_longest_idle", |b| {
        let (mut g, mut n) = full();
        b.iter_batched(
            || {
                n += 1;
                (call(n, format!("svc-{n}"), format!("new-{n}"), n), n)
            },
            |(spans, at_ms)| black_box(g.ingest(spans, at_ms)),
            BatchSize::SmallInput,
        );
        assert_eq!(g.edges_kept(), 10_000);
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

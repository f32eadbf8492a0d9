//! Propagation over a large dependency graph: every component's blast radius on a
//! 100k-component, 1M-edge graph, a single what-if, and the incremental update of one edge.
//!
//! `cargo bench -p augur-graph --bench graph_propagation` (figures in docs/benchmarks.md).

use std::hint::black_box;
use std::time::Duration;

use augur_graph::{
    blast_radii, update_blast_radii, what_if, DepGraph, EdgeSource, EdgeUpdate, Node, Observation,
    PropagationOptions,
};
use criterion::{criterion_group, criterion_main, Criterion};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const NODES: usize = 100_000;
const EDGES_PER_NODE: usize = 10;
const ENTRIES: usize = 1_000;
const LAYERS: usize = 10;

/// A layered service graph: entry points on top, each component calling ten components in
/// deeper layers; half the edges certain (declared), half of measured strength 0.1–0.9.
fn big_graph() -> DepGraph {
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let mut g = DepGraph::with_capacity(NODES, NODES * EDGES_PER_NODE);
    let per_layer = NODES / LAYERS;
    for i in 0..NODES {
        let mut n = Node::component(format!("svc-{i}"));
        n.entry = i < ENTRIES;
        n.criticality = (i % 5 + 1) as u8;
        g.upsert_node(n);
    }
    for i in 0..NODES {
        let layer = i / per_layer;
        if layer + 1 == LAYERS {
            continue;
        }
        let lo = (layer + 1) * per_layer;
        let span = NODES - lo;
        for k in 0..EDGES_PER_NODE * LAYERS / (LAYERS - 1) {
            let to = lo + rng.random_range(0..span);
            let strength = if k % 2 == 0 {
                1.0
            } else {
                0.1 + 0.8 * (rng.random_range(0..1000) as f64 / 1000.0)
            };
            let _ = g.apply(&EdgeUpdate {
                from: format!("svc-{i}"),
                to: format!("svc-{to}"),
                observation: Observation::new(EdgeSource::Trace, strength, 1),
            });
        }
    }
    g
}

fn bench(c: &mut Criterion) {
    let g = big_graph();
    eprintln!(
        "graph: {} components, {} edges, {ENTRIES} entry points",
        g.node_count(),
        g.edge_count()
    );
    let mut group = c.benchmark_group("propagation");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    for (samples, threads) in [(16, 1), (16, 2), (32, 2), (64, 2)] {
        let opts = PropagationOptions {
            samples,
            seed: 1,
            threads,
        };
        group.bench_function(
            format!("blast_radii_all_100k_1M_{samples}_worlds_{threads}_threads"),
            |b| b.iter(|| black_box(blast_radii(&g, &opts))),
        );
    }
    let opts = PropagationOptions {
        samples: 32,
        ..PropagationOptions::default()
    };
    group.bench_function("what_if_one_component_32_worlds", |b| {
        b.iter(|| black_box(what_if(&g, "svc-95000", &opts).unwrap()))
    });
    group.finish();

    // One edge re-weighted, then every blast radius brought up to date: on a component deep
    // in the graph (what most edges are), and on one in the layer under the entry points.
    let opts = PropagationOptions {
        threads: 2,
        ..PropagationOptions::default()
    };
    let radii = blast_radii(&g, &opts);
    for (name, from, to) in [
        (
            "incremental/blast_radii_after_one_edge_last_layer",
            "svc-80000",
            "svc-95000",
        ),
        (
            "incremental/blast_radii_after_one_edge_layer_8",
            "svc-70000",
            "svc-85000",
        ),
        (
            "incremental/blast_radii_after_one_edge_layer_7",
            "svc-60000",
            "svc-75000",
        ),
    ] {
        let mut g = g.clone();
        let mut radii = radii.clone();
        let mut strength = 0.5;
        let walked = std::cell::Cell::new(0);
        c.bench_function(name, |b| {
            b.iter(|| {
                strength = if strength == 0.5 { 0.6 } else { 0.5 };
                g.apply(&EdgeUpdate {
                    from: from.into(),
                    to: to.into(),
                    observation: Observation::new(EdgeSource::Causal, strength, 1),
                })
                .unwrap();
                walked.set(update_blast_radii(&g, &mut radii, &[(from, to)], &opts));
            })
        });
        eprintln!("{name}: {} components walked", walked.get());
        assert_eq!(
            radii,
            blast_radii(&g, &opts),
            "the update equals the bulk answer"
        );
    }

    let mut g = g;
    let mut rng = StdRng::seed_from_u64(42);
    let mut t = 2;
    c.bench_function("incremental/apply_one_edge_update_1M_graph", |b| {
        b.iter(|| {
            t += 1;
            let from = rng.random_range(0..NODES);
            let to = rng.random_range(0..NODES);
            let update = EdgeUpdate {
                from: format!("svc-{from}"),
                to: format!("svc-{}", if to == from { (to + 1) % NODES } else { to }),
                observation: Observation::new(EdgeSource::Causal, 0.5, t),
            };
            black_box(g.apply(&update).unwrap())
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

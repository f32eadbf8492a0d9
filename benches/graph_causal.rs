//! `causal_links` over 400 metric series of 600 points (≈ 160k ordered Granger tests), the
//! size the control plane analyses per window. Series are seeded random walks, two per
//! component, with a few planted causal pairs; recall and false links of that set are printed
//! once before timing.

use std::collections::BTreeSet;
use std::hint::black_box;

use augur_graph::{causal_links, CausalOptions};
use criterion::{criterion_group, criterion_main, Criterion};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

const SERIES: usize = 400;
const POINTS: usize = 600;
const PLANTED: usize = 20;

struct Data {
    names: Vec<String>,
    values: Vec<Vec<f64>>,
    /// (cause component, effect component) of each planted pair.
    planted: BTreeSet<(String, String)>,
}

/// Series `i` belongs to component `svc-{i / 2}`. Each series is a random walk whose steps are
/// AR(1) noise; for `k < PLANTED`, the steps of series `4k + 2` also carry `0.5 ×` the steps of
/// series `4k` delayed by `1 + k % 3` samples.
fn synthetic(seed: u64) -> Data {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut steps: Vec<Vec<f64>> = (0..SERIES)
        .map(|_| {
            let mut prev = 0.0;
            (0..POINTS)
                .map(|_| {
                    prev = 0.5 * prev + rng.sample::<f64, _>(StandardNormal);
                    prev
                })
                .collect()
        })
        .collect();
    let mut planted = BTreeSet::new();
    let names: Vec<String> = (0..SERIES).map(|i| format!("svc-{:03}", i / 2)).collect();
    for k in 0..PLANTED {
        let (c, e, lag) = (4 * k, 4 * k + 2, 1 + k % 3);
        let cause = steps[c].clone();
        let mut noise = StdRng::seed_from_u64(seed ^ (k as u64 + 1));
        for t in lag..POINTS {
            steps[e][t] = 0.5 * cause[t - lag] + noise.sample::<f64, _>(StandardNormal);
        }
        planted.insert((names[c].clone(), names[e].clone()));
    }
    let values = steps
        .into_iter()
        .map(|s| {
            let mut level = 100.0;
            s.into_iter()
                .map(|d| {
                    level += d;
                    level
                })
                .collect()
        })
        .collect();
    Data {
        names,
        values,
        planted,
    }
}

fn report(data: &Data, series: &[(&str, &[f64])], opts: &CausalOptions) {
    let start = std::time::Instant::now();
    let links = causal_links(series, opts).expect("valid synthetic input");
    let took = start.elapsed();
    let found: BTreeSet<(String, String)> = links
        .iter()
        .map(|l| (l.cause.clone(), l.effect.clone()))
        .collect();
    let hits = data.planted.intersection(&found).count();
    let reversed = data
        .planted
        .iter()
        .filter(|(c, e)| found.contains(&(e.clone(), c.clone())))
        .count();
    let weakest = links
        .iter()
        .filter(|l| data.planted.contains(&(l.cause.clone(), l.effect.clone())))
        .map(|l| l.strength)
        .fold(f64::INFINITY, f64::min);
    println!(
        "graph_causal: {} series x {} points, threads {}, min_strength {}: one call {:.2?}; \
         planted recall {hits}/{} \
         (weakest strength {weakest:.3}), reversed {reversed}, other links {}",
        SERIES,
        POINTS,
        opts.threads,
        opts.min_strength,
        took,
        data.planted.len(),
        links.len() - hits - reversed,
    );
}

fn bench(c: &mut Criterion) {
    let data = synthetic(0xA11C_E5ED);
    let series: Vec<(&str, &[f64])> = data
        .names
        .iter()
        .zip(&data.values)
        .map(|(n, v)| (n.as_str(), v.as_slice()))
        .collect();
    // What `alpha` alone lets through over ~160k tests, without the strength floor.
    report(
        &data,
        &series,
        &CausalOptions {
            min_strength: 0.0,
            ..CausalOptions::default()
        },
    );
    let mut group = c.benchmark_group("causal_links_400x600");
    for threads in [1, 2] {
        let opts = CausalOptions {
            threads,
            ..CausalOptions::default()
        };
        report(&data, &series, &opts);
        group.bench_function(format!("threads_{threads}"), |b| {
            b.iter(|| causal_links(black_box(&series), black_box(&opts)).unwrap())
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = bench
}
criterion_main!(benches);

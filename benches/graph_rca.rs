//! `rank_root_causes` on a synthetic frame: 400 metric columns over 100 components, 600 rows
//! at 1 s with the fault at row 300. Target: ≤ 50 ms per ranking.

use augur_graph::{rank_root_causes, MetricFrame, RcaOptions};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ROWS: usize = 600;
const FAULT_ROW: usize = 300;
const COLUMNS: usize = 400;
const KINDS: [&str; 4] = ["cpu", "mem", "lat_99", "err"];

fn synthetic_frame() -> MetricFrame {
    let mut rng = StdRng::seed_from_u64(42);
    let times: Vec<i64> = (0..ROWS as i64).map(|t| 1_700_000_000 + t).collect();
    let columns = (0..COLUMNS)
        .map(|c| {
            let name = format!("svc-{:03}_{}", c / KINDS.len(), KINDS[c % KINDS.len()]);
            let level = 1.0 + 100.0 * rng.random::<f64>();
            // One component in twenty goes wrong at the fault.
            let jump = if (c / KINDS.len()) % 20 == 7 {
                level
            } else {
                0.0
            };
            let values = (0..ROWS)
                .map(|r| {
                    let noise = level * 0.05 * (rng.random::<f64>() - 0.5);
                    level + noise + if r >= FAULT_ROW { jump } else { 0.0 }
                })
                .collect();
            (name, values)
        })
        .collect();
    MetricFrame::new(times, columns).expect("consistent synthetic frame")
}

fn bench_rank(c: &mut Criterion) {
    let frame = synthetic_frame();
    let fault_time = frame.times()[FAULT_ROW];
    let opts = RcaOptions::default();
    c.bench_function("rank_root_causes 400 metrics x 600 rows", |b| {
        b.iter(|| rank_root_causes(black_box(&frame), black_box(fault_time), &opts).unwrap())
    });
}

criterion_group!(benches, bench_rank);
criterion_main!(benches);

//! LSTM scoring throughput: one batched step for B components (8 inputs, hidden 64), the
//! node's per-tick work. Component-steps per second = B / time per step.
//!
//! `cargo bench -p augur-predict --bench predict_lstm`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use augur_predict::lstm::{LstmModel, ModelMeta};

fn bench(c: &mut Criterion) {
    let features: Vec<String> = (0..8).map(|i| format!("m{i}")).collect();
    let model = LstmModel::new(ModelMeta::new(features, 64, 30, 1)).unwrap();
    let mut g = c.benchmark_group("lstm_step_hidden64");
    g.sample_size(20);
    for batch in [1_000usize, 10_000, 50_000] {
        let x: Vec<f32> = (0..batch * 8)
            .map(|i| ((i % 17) as f32 - 8.0) / 8.0)
            .collect();
        let mut h = vec![0f32; batch * 64];
        let mut cs = vec![0f32; batch * 64];
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, &batch| {
            b.iter(|| model.step(batch, &x, &mut h, &mut cs).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

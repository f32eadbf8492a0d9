//! A seeded synthetic fleet: the data the shipped default model is trained on, so anyone can
//! regenerate it (`augur train --synthetic --out MODEL`). Each component has up to 8 metrics
//! with a daily-like season, noise and slow drift; some degrade (one or more metrics drift
//! away, faster and faster) and then fail, some suffer a sudden spike that is not a failure.

use crate::ensemble::OnlineNorm;
use crate::lstm::{SeededRng, Sequence};

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct FleetSpec {
    pub components: usize,
    pub steps: usize,
    pub metrics: usize,
    pub period: usize,
    /// Label horizon: rows within this many steps of a failure are positive.
    pub horizon: usize,
    pub seed: u64,
}

impl Default for FleetSpec {
    fn default() -> Self {
        Self {
            components: 192,
            steps: 480,
            metrics: 8,
            period: 96,
            horizon: 30,
            seed: 2026,
        }
    }
}

/// One component's raw series: `steps × metrics` values and its failure step, if any.
#[derive(Debug, Clone)]
pub struct SyntheticComponent {
    pub values: Vec<Vec<f64>>,
    pub fails_at: Option<usize>,
}

/// Generates the fleet.
pub fn fleet(spec: &FleetSpec) -> Vec<SyntheticComponent> {
    let mut rng = SeededRng::new(spec.seed);
    (0..spec.components)
        .map(|_| {
            let used = 1 + (rng.next_u64() % spec.metrics as u64) as usize;
            let base: Vec<f64> = (0..used).map(|_| 10.0 + rng.unit() * 90.0).collect();
            let amp: Vec<f64> = base.iter().map(|b| b * rng.unit() * 0.2).collect();
            let noise: Vec<f64> = base
                .iter()
                .map(|b| b * (0.01 + rng.unit() * 0.04))
                .collect();
            let phase = rng.unit() * std::f64::consts::TAU;
            let fails_at = if rng.unit() < 0.4 {
                Some(spec.steps / 3 + (rng.next_u64() % (spec.steps as u64 / 2)) as usize)
            } else {
                None
            };
            let onset = fails_at.map(|f| f.saturating_sub(20 + (rng.next_u64() % 60) as usize));
            let sick: Vec<bool> = (0..used).map(|j| j == 0 || rng.unit() < 0.3).collect();
            let spike = if rng.unit() < 0.3 {
                Some((rng.next_u64() % spec.steps as u64) as usize)
            } else {
                None
            };
            let mut drift = vec![0.0; used];
            let mut values = Vec::with_capacity(spec.steps);
            for t in 0..spec.steps {
                let season = (t as f64 / spec.period as f64 * std::f64::consts::TAU + phase).sin();
                let mut row = vec![0.0; spec.metrics];
                for j in 0..used {
                    drift[j] += rng.normal() * noise[j] * 0.05;
                    let mut v = base[j] + amp[j] * season + drift[j] + rng.normal() * noise[j];
                    if let (Some(o), Some(f)) = (onset, fails_at) {
                        if t >= o && sick[j] {
                            let k = (t - o) as f64 / (f - o).max(1) as f64;
                            v += base[j] * 0.8 * k * k;
                        }
                    }
                    if spike.is_some_and(|s| s == t) {
                        v += base[j] * 0.5;
                    }
                    row[j] = v;
                }
                values.push(row);
                if fails_at == Some(t) {
                    break;
                }
            }
            SyntheticComponent { values, fails_at }
        })
        .collect()
}

/// The fleet as model sequences, scaled by the node's own online normaliser, with labels
/// "fails within `horizon` steps".
pub fn sequences(fleet: &[SyntheticComponent], spec: &FleetSpec) -> Vec<Sequence> {
    fleet
        .iter()
        .map(|c| {
            let len = c.values.len();
            let mut norms: Vec<OnlineNorm> =
                (0..spec.metrics).map(|_| OnlineNorm::default()).collect();
            let mut rows = Vec::with_capacity(len * spec.metrics);
            for r in &c.values {
                for (j, v) in r.iter().enumerate() {
                    rows.push(if *v == 0.0 { 0.0 } else { norms[j].scale(*v) });
                }
            }
            let labels = (0..len)
                .map(|t| match c.fails_at {
                    Some(f) if f >= t && f - t <= spec.horizon => 1.0,
                    _ => 0.0,
                })
                .collect();
            Sequence {
                rows,
                labels: Some(labels),
                len,
            }
        })
        .collect()
}

/// Trains the shipped default model: 8 inputs, `hidden` units, on [`fleet`] with `seed`.
pub fn train_default(
    seed: u64,
    epochs: usize,
    hidden: usize,
    on_epoch: impl FnMut(crate::lstm::EpochReport),
) -> Result<(crate::lstm::LstmModel, usize), crate::PredictError> {
    let spec = FleetSpec {
        seed,
        ..Default::default()
    };
    let seqs = sequences(&fleet(&spec), &spec);
    let opts = crate::lstm::TrainOptions {
        epochs,
        seed,
        chunk: 48,
        batch: 32,
        learning_rate: 1e-2,
        ..Default::default()
    };
    let features = (0..spec.metrics).map(|i| format!("metric{i}")).collect();
    let meta = crate::lstm::ModelMeta::new(features, hidden, spec.horizon as u32, seed);
    let mut model = crate::lstm::LstmModel::new(meta)?;
    model.train(&seqs, opts, on_epoch)?;
    Ok((model, seqs.len()))
}

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
    scaled_sequences(fleet, spec.metrics, spec.horizon, true)
}

/// Each component's rows through its own online normalisers (a 0 left at 0 and unseen
/// when `zero_is_unused`: a slot the component does not use), labelled "fails within
/// `horizon` steps".
fn scaled_sequences(
    fleet: &[SyntheticComponent],
    width: usize,
    horizon: usize,
    zero_is_unused: bool,
) -> Vec<Sequence> {
    fleet
        .iter()
        .map(|c| {
            let len = c.values.len();
            let mut norms: Vec<OnlineNorm> = (0..width).map(|_| OnlineNorm::default()).collect();
            let mut rows = Vec::with_capacity(len * width);
            for r in &c.values {
                for (j, v) in r.iter().enumerate() {
                    let unused = zero_is_unused && *v == 0.0;
                    rows.push(if unused { 0.0 } else { norms[j].scale(*v) });
                }
            }
            let labels = (0..len)
                .map(|t| match c.fails_at {
                    Some(f) if f >= t && f - t <= horizon => 1.0,
                    _ => 0.0,
                })
                .collect();
            Sequence {
                rows,
                labels: Some(labels),
                ttf: None,
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
    let features = (0..spec.metrics).map(|i| format!("metric{i}")).collect();
    train_on(&seqs, features, &spec, epochs, hidden, on_epoch)
}

/// Trains a new model, its inputs named by `features`, on `seqs` (the shipped models'
/// settings).
fn train_on(
    seqs: &[Sequence],
    features: Vec<String>,
    spec: &FleetSpec,
    epochs: usize,
    hidden: usize,
    on_epoch: impl FnMut(crate::lstm::EpochReport),
) -> Result<(crate::lstm::LstmModel, usize), crate::PredictError> {
    let opts = crate::lstm::TrainOptions {
        epochs,
        seed: spec.seed,
        chunk: 48,
        batch: 32,
        learning_rate: 1e-2,
        ..Default::default()
    };
    let meta = crate::lstm::ModelMeta::new(features, hidden, spec.horizon as u32, spec.seed);
    let mut model = crate::lstm::LstmModel::new(meta)?;
    model.train(seqs, opts, on_epoch)?;
    Ok((model, seqs.len()))
}

/// The metrics an HTTP service instance reports through the reference agent, in the order
/// the [`http_fleet`] model reads them (by name).
pub const HTTP_FEATURES: [&str; 3] = ["latency_p99_ms", "error_ratio", "memory_mb"];

/// A seeded fleet of HTTP service instances as the reference agent sees them, one step a
/// second: latency p99 (noisy), error ratio (often exactly 0) and memory (often constant).
/// What sets it apart from [`fleet`] is what is *not* a failure: the latency of a healthy
/// instance jumps for seconds to tens of seconds when its host is busy (a neighbour
/// starting, a burst of load), with its errors and memory unchanged. A degradation before a
/// failure always moves errors or memory too: a leak, a failing dependency or disk, an
/// overload that starts to shed requests.
pub fn http_fleet(spec: &FleetSpec) -> Vec<SyntheticComponent> {
    let mut rng = SeededRng::new(spec.seed);
    (0..spec.components)
        .map(|_| {
            let lat = 1.0 + rng.unit() * 49.0;
            let lat_noise = lat * (0.03 + rng.unit() * 0.2);
            let mem = 50.0 + rng.unit() * 1950.0;
            let mem_noise = if rng.unit() < 0.5 {
                0.0
            } else {
                mem * (0.001 + rng.unit() * 0.01)
            };
            let rate = 20.0 + rng.unit() * 180.0;
            let err_base = if rng.unit() < 0.6 {
                0.0
            } else {
                rng.unit() * 0.01
            };
            let fails_at = (rng.unit() < 0.5)
                .then(|| spec.steps / 3 + (rng.next_u64() % (spec.steps as u64 / 2)) as usize);
            let onset = fails_at.map(|f| f.saturating_sub(20 + (rng.next_u64() % 70) as usize));
            // 0: everything degrades together, 1: a leak (latency late), 2: errors first.
            let kind = rng.next_u64() % 3;
            let (lat_gain, err_gain, mem_gain) = (
                2.0 + rng.unit() * 30.0,
                0.05 + rng.unit() * 0.3,
                0.3 + rng.unit() * 4.0,
            );
            let mut bump: Option<(usize, usize, f64)> = None;
            let mut mem_level = mem;
            let mut drift = 0.0;
            let mut values = Vec::with_capacity(spec.steps);
            for t in 0..spec.steps {
                // A busy host: latency alone, for 3 to 30 steps, 1.5 to 8 times as high.
                if bump.is_none() && rng.unit() < 0.012 {
                    let len = 3 + (rng.next_u64() % 28) as usize;
                    bump = Some((t, len, 0.5 + rng.unit() * 7.0));
                }
                let mut busy = 0.0;
                if let Some((start, len, amp)) = bump {
                    let i = t - start;
                    busy = lat * amp * (1.0 - i as f64 / len as f64).sqrt();
                    if i + 1 >= len {
                        bump = None;
                    }
                }
                if rng.unit() < 0.003 {
                    mem_level *= 1.0 + (rng.unit() - 0.5) * 0.1;
                }
                drift += rng.normal() * lat_noise * 0.02;
                let mut l = lat + drift + busy + rng.normal().abs() * lat_noise;
                let mut m = mem_level + rng.normal() * mem_noise;
                let errors = binomial(&mut rng, rate, err_base);
                let blip = if rng.unit() < 0.005 { 1.0 } else { 0.0 };
                let mut e = (errors + blip) / rate;
                if let (Some(o), Some(f)) = (onset, fails_at) {
                    if t >= o {
                        let k = (t - o) as f64 / (f - o).max(1) as f64;
                        let late = |from: f64| ((k - from) / (1.0 - from)).max(0.0);
                        let (kl, ke, km) = match kind {
                            0 => (k, k, k),
                            1 => (late(0.7), late(0.9), k * k),
                            _ => (k * 0.3, k, late(0.5)),
                        };
                        l += lat * lat_gain * kl;
                        e += err_gain * ke;
                        m += mem * mem_gain * km;
                    }
                }
                l = l.max(0.1);
                m = m.max(1.0);
                values.push(vec![l, e.min(1.0), m]);
                if fails_at == Some(t) {
                    break;
                }
            }
            SyntheticComponent { values, fails_at }
        })
        .collect()
}

/// Errors among `n` requests with probability `p` each (a normal approximation, ≥ 0).
fn binomial(rng: &mut SeededRng, n: f64, p: f64) -> f64 {
    if p <= 0.0 {
        return 0.0;
    }
    (n * p + rng.normal() * (n * p * (1.0 - p)).sqrt())
        .round()
        .max(0.0)
}

/// A fleet as model sequences, scaled exactly as a node scales a live metric (every value,
/// zeros too, through its own online normaliser), labelled "fails within `horizon` steps".
pub fn live_scaled_sequences(fleet: &[SyntheticComponent], horizon: usize) -> Vec<Sequence> {
    let width = fleet
        .first()
        .and_then(|c| c.values.first())
        .map_or(0, Vec::len);
    scaled_sequences(fleet, width, horizon, false)
}

/// The HTTP service model's horizon, in steps (seconds of the agent's scrape): longer than
/// the slowest degradation [`http_fleet`] makes (90 steps), so a degrading instance is
/// labelled "fails within the horizon" from its first step of degradation.
pub const HTTP_HORIZON_STEPS: usize = 120;

/// Trains the shipped HTTP service model: the [`HTTP_FEATURES`], read by name, on
/// [`http_fleet`] with `seed`.
pub fn train_http_service(
    seed: u64,
    epochs: usize,
    hidden: usize,
    on_epoch: impl FnMut(crate::lstm::EpochReport),
) -> Result<(crate::lstm::LstmModel, usize), crate::PredictError> {
    let spec = http_spec(seed);
    let seqs = live_scaled_sequences(&http_fleet(&spec), spec.horizon);
    let features = HTTP_FEATURES.iter().map(|f| f.to_string()).collect();
    train_on(&seqs, features, &spec, epochs, hidden, on_epoch)
}

/// The [`http_fleet`] the HTTP service model is trained on (and held out on, another seed).
pub fn http_spec(seed: u64) -> FleetSpec {
    FleetSpec {
        seed,
        components: 256,
        steps: 600,
        metrics: HTTP_FEATURES.len(),
        horizon: HTTP_HORIZON_STEPS,
        ..Default::default()
    }
}

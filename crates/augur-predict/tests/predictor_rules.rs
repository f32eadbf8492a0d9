//! The predictor's rules as properties: a constant series never alarms, a step change always
//! does within a few samples once the detectors have learnt (300 samples), whatever the level,
//! noise and history length.

use augur_predict::lstm::SeededRng;
use augur_predict::predictor::{default_hazard, ComponentPredictor, PredictorConfig, ALARM};
use proptest::prelude::*;

fn run(values: &[f64]) -> Vec<f64> {
    let cfg = PredictorConfig::default();
    let hz = default_hazard();
    let mut p = ComponentPredictor::new(8);
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            p.ingest(&cfg, "m", i as i64 * 1000, *v).unwrap();
            p.apply_step(&[0.0], 0.0, &hz, "t").anomaly
        })
        .collect()
}

fn noise(seed: u64, n: usize) -> Vec<f64> {
    let mut rng = SeededRng::new(seed);
    (0..n).map(|_| rng.unit() - 0.5).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_constant_series_never_alarms(level in -1e6..1e6f64, n in 1usize..600) {
        let scores = run(&vec![level; n]);
        prop_assert!(scores.iter().all(|s| *s < ALARM), "max {}", scores.iter().fold(0.0f64, |a, b| a.max(*b)));
    }

    #[test]
    fn a_step_change_alarms_within_three_samples(
        level in 1.0..1e5f64,
        noise_frac in 0.0..0.02f64,
        step in 0.3..5.0f64,
        up in any::<bool>(),
        history in 320usize..700,
        seed in any::<u64>(),
    ) {
        let amp = level * noise_frac;
        let shift = if up { level * step } else { -level * step.min(0.9) };
        let values: Vec<f64> = noise(seed, history + 10)
            .into_iter()
            .enumerate()
            .map(|(i, e)| level + e * amp + if i >= history { shift } else { 0.0 })
            .collect();
        let scores = run(&values);
        let first = scores[history..].iter().position(|s| *s >= ALARM);
        prop_assert!(first.is_some_and(|k| k < 3), "{:?}", &scores[history - 2..history + 5]);
    }
}

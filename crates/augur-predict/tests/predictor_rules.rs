//! The predictor's rules as properties: a constant series never alarms, a step change always
//! does within a few samples once the detectors have learnt (300 samples), whatever the level,
//! noise and history length. The same for the `novelty` detector's alarms (a score ≥ 0.5),
//! except that a step inside the rest after an earlier alarm belongs to that alarm's event.

use augur_predict::lstm::SeededRng;
use augur_predict::novelty::{Novelty, NoveltyConfig};
use augur_predict::predictor::{default_hazard, ComponentPredictor, PredictorConfig, ALARM};
use augur_predict::Detector;
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

fn novelty(values: &[f64]) -> Vec<f64> {
    let mut d = Novelty::new(0, NoveltyConfig::default());
    values
        .iter()
        .enumerate()
        .map(|(i, v)| d.score(i as i64 * 60, *v))
        .collect()
}

fn step_series(
    level: f64,
    noise_frac: f64,
    step: f64,
    up: bool,
    history: usize,
    seed: u64,
) -> Vec<f64> {
    let amp = level * noise_frac;
    let shift = if up {
        level * step
    } else {
        -level * step.min(0.9)
    };
    noise(seed, history + 10)
        .into_iter()
        .enumerate()
        .map(|(i, e)| level + e * amp + if i >= history { shift } else { 0.0 })
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
        let values = step_series(level, noise_frac, step, up, history, seed);
        let scores = run(&values);
        let first = scores[history..].iter().position(|s| *s >= ALARM);
        prop_assert!(first.is_some_and(|k| k < 3), "{:?}", &scores[history - 2..history + 5]);
    }

    #[test]
    fn a_constant_series_never_raises_a_novelty_alarm(level in -1e6..1e6f64, n in 1usize..1500) {
        let scores = novelty(&vec![level; n]);
        prop_assert!(scores.iter().all(|s| *s < 0.5), "max {}", scores.iter().fold(0.0f64, |a, b| a.max(*b)));
    }

    #[test]
    fn a_step_change_raises_a_novelty_alarm_unless_resting(
        level in 1.0..1e5f64,
        noise_frac in 0.0..0.02f64,
        step in 0.3..5.0f64,
        up in any::<bool>(),
        history in 1500usize..2500,
        seed in any::<u64>(),
    ) {
        let rest = NoveltyConfig::default().rest_rows;
        let values = step_series(level, noise_frac, step, up, history, seed);
        let scores = novelty(&values);
        // An alarm in the `rest` rows before the step silences the step's row.
        let resting = scores[history - rest..history].iter().any(|s| *s >= 0.5);
        prop_assert!(
            scores[history] >= 0.5 || resting,
            "{:?}",
            &scores[history - 2..history + 3]
        );
    }
}

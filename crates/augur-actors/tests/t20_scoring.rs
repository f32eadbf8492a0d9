//! Micro-batched scoring: one model step per tick for every due component, forecasts, risk.

mod common;

use augur_actors::{risk_of, PredictorSystem, Sample};
use augur_types::ComponentId;
use common::{config, ids, sample, start, Noise};

#[tokio::test]
async fn n_due_components_make_exactly_one_step_of_size_n() {
    let sys = start(config(3));
    let cs = ids("node", 37);
    sys.register(cs.clone()).await.unwrap();
    let two_metrics = |ts: i64| -> Vec<Sample> {
        cs.iter()
            .flat_map(|c| [sample(c, "cpu", ts, 0.5), sample(c, "mem", ts, 0.7)])
            .collect()
    };
    assert_eq!(sys.ingest(two_metrics(1000)).await.unwrap().accepted, 74);
    let shards = sys.observe_shards().await.unwrap();
    assert!(
        shards.iter().all(|s| s.due > 0),
        "37 ids spread over the 3 shards: {shards:?}"
    );

    let r = sys.tick().await.unwrap();
    assert_eq!((r.batch_size, r.steps, r.scored), (37, 1, 37));
    let r = sys.tick().await.unwrap();
    assert_eq!(
        (r.batch_size, r.steps, r.scored),
        (0, 0, 0),
        "nothing new, nothing scored"
    );

    let five: Vec<Sample> = cs[..5]
        .iter()
        .map(|c| sample(c, "cpu", 2000, 0.6))
        .collect();
    sys.ingest(five.clone()).await.unwrap();
    assert_eq!(sys.tick().await.unwrap().batch_size, 5);

    // Samples that are all rejected do not make a component due.
    let s = sys.ingest(five).await.unwrap();
    assert_eq!(s.duplicate, 5);
    assert_eq!(sys.tick().await.unwrap().batch_size, 0);
    for c in &cs {
        assert!(
            sys.forecast(c).await.unwrap().is_some(),
            "{c} has a forecast"
        );
    }
}

/// Ten components, one metric each, noisy around 100; `stepped` jumps to 130 at step 300.
/// One batch and one tick per step. Returns the forecasts' anomaly of `stepped` after the jump.
async fn run_step_change(sys: &PredictorSystem, cs: &[ComponentId], stepped: usize) -> Vec<f64> {
    let mut noise = Noise::new(42);
    let mut after = Vec::new();
    for t in 0..305i64 {
        let batch = cs
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let level = if i == stepped && t >= 300 {
                    130.0
                } else {
                    100.0
                };
                sample(c, "latency_ms", t * 1000, level + noise.next())
            })
            .collect();
        assert_eq!(sys.ingest(batch).await.unwrap().accepted, cs.len() as u64);
        assert_eq!(sys.tick().await.unwrap().batch_size, cs.len());
        if t >= 300 {
            after.push(sys.forecast(&cs[stepped]).await.unwrap().unwrap().anomaly);
        }
    }
    after
}

#[tokio::test]
async fn a_step_change_makes_its_component_anomalous_and_the_riskiest() {
    let sys = start(config(2));
    let cs = ids("svc", 10);
    sys.register(cs.clone()).await.unwrap();
    let after = run_step_change(&sys, &cs, 3).await;
    assert!(after[0] > 0.99, "anomaly right after the step: {after:?}");

    let at_risk = sys.list_at_risk(3, 0.0).await.unwrap();
    assert_eq!(at_risk.len(), 3);
    assert_eq!(at_risk[0].0, cs[3], "{at_risk:#?}");
    assert!(
        at_risk.windows(2).all(|w| w[0].1.hps <= w[1].1.hps),
        "lowest HPS first"
    );
    let worst = &at_risk[0].1;
    assert!(
        worst.why.iter().any(|(name, _)| name == "latency_ms"),
        "{:?}",
        worst.why
    );

    // `min_risk` between the first and the second keeps only the first.
    let cut = (risk_of(&at_risk[0].1) + risk_of(&at_risk[1].1)) / 2.0;
    let risky = sys.list_at_risk(10, cut).await.unwrap();
    assert_eq!(
        risky.iter().map(|(c, _)| c).collect::<Vec<_>>(),
        [&cs[3]],
        "{risky:#?}"
    );
    assert_eq!(sys.list_at_risk(100, 0.0).await.unwrap().len(), 10);
    assert!(sys.list_at_risk(0, 0.0).await.unwrap().is_empty());
}

#[tokio::test]
async fn the_same_samples_give_the_same_forecasts() {
    let cs = ids("svc", 10);
    let mut runs = Vec::new();
    for shards in [2, 2, 3] {
        let sys = start(config(shards));
        sys.register(cs.clone()).await.unwrap();
        run_step_change(&sys, &cs, 7).await;
        let mut forecasts = Vec::new();
        for c in &cs {
            forecasts.push(sys.forecast(c).await.unwrap().unwrap());
        }
        runs.push(forecasts);
    }
    assert_eq!(runs[0], runs[1], "two runs, same shards");
    for (a, b) in runs[0].iter().zip(&runs[2]) {
        assert!((a.hps - b.hps).abs() < 1e-6 && (a.anomaly - b.anomaly).abs() < 1e-9);
    }
}

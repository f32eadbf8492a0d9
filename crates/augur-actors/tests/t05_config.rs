//! Settings: defaults, validation reporting every error at once, unknown keys refused.

mod common;

use augur_actors::{ActorsConfig, ActorsError, PredictorSystem};

#[test]
fn defaults_are_valid_and_documented_values() {
    let cfg = ActorsConfig::default().validate().unwrap();
    assert_eq!(
        (cfg.shards, cfg.tick_ms, cfg.auto_register),
        (1, 1_000, false)
    );
    assert_eq!(cfg.max_batch, 1_000_000);
}

#[test]
fn validation_reports_every_error_at_once() {
    let mut cfg = ActorsConfig {
        shards: 0,
        max_batch: 0,
        ..ActorsConfig::default()
    };
    cfg.predictor.window = 1;
    cfg.predictor.max_metrics = 0;
    cfg.predictor.out_of_order_tolerance_ms = -5;
    let errors: Vec<String> = cfg
        .validate()
        .unwrap_err()
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert_eq!(
        errors,
        [
            "shards: must be in 1..=256, got 0",
            "predictor.window: must be at least 2, got 1",
            "predictor.max_metrics: must be at least 1",
            "predictor.out_of_order_tolerance_ms: must not be negative, got -5",
            "max_batch: must be at least 1",
        ]
    );
}

#[test]
fn start_refuses_a_bad_config() {
    let cfg = ActorsConfig {
        shards: 300,
        ..common::config(1)
    };
    let err = PredictorSystem::start(cfg, common::model()).unwrap_err();
    assert!(matches!(err, ActorsError::Config(ref e) if e.len() == 1));
    assert_eq!(
        err.to_string(),
        "invalid actors config: shards: must be in 1..=256, got 300"
    );
}

#[test]
fn unknown_keys_are_refused_and_missing_ones_default() {
    let cfg: ActorsConfig =
        serde_json::from_str(r#"{"shards": 4, "auto_register": true}"#).unwrap();
    assert_eq!(
        (cfg.shards, cfg.auto_register, cfg.tick_ms),
        (4, true, 1_000)
    );
    let err = serde_json::from_str::<ActorsConfig>(r#"{"shard": 4}"#).unwrap_err();
    assert!(
        err.to_string().starts_with("unknown field `shard`"),
        "{err}"
    );
}

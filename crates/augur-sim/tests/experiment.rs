//! The experiment is deterministic and Augur does what it is for: on a short seeded run,
//! degrade-then-crash faults are moved before they crash, sudden crashes cost the same as
//! without Augur (nothing to predict), and no shift leaves a service's weights off 100.

use augur_sim::{run, FleetConfig, SimConfig};

fn short() -> SimConfig {
    SimConfig {
        seed: 3,
        fleet: FleetConfig {
            hours: 6.0,
            services: 6,
            instances_per_service: 4,
            degrading_faults: 5,
            sudden_faults: 2,
            false_alarms: 3,
            ..FleetConfig::default()
        },
        ..SimConfig::default()
    }
}

#[test]
fn augur_moves_traffic_before_degrading_instances_crash() {
    let model = augur_predict::default_model().unwrap();
    let mut events = Vec::new();
    let report = run(&short(), &model, &mut |e, _| events.push(e.clone())).unwrap();
    let (a, p) = (&report.reactive, &report.predictive);

    // Reactive failover sees every degrading instance crash under traffic.
    assert_eq!(a.missed, 5, "{a:?}");
    assert_eq!(a.shifts_started, 0);
    // Augur moved most of them first, each with a lead time before its crash.
    assert!(p.predicted >= 4, "{p:?}");
    assert_eq!(p.predicted + p.missed, 5);
    assert_eq!(p.lead_times_s.len() as u32, p.predicted);
    assert!(p.lead_times_s.iter().all(|&l| l > 0.0), "{p:?}");
    assert!(
        p.requests.failed_degrade_then_crash * 2 < a.requests.failed_degrade_then_crash,
        "{p:?} vs {a:?}"
    );
    // Sudden crashes give no warning: the same cost either way (a shadow elsewhere in the
    // service may shift the split a little).
    let (ps, rs) = (
        p.requests.failed_sudden as f64,
        a.requests.failed_sudden as f64,
    );
    assert!((ps - rs).abs() <= 0.25 * rs.max(1.0), "{ps} vs {rs}");
    assert_eq!(p.requests.total, a.requests.total);
    // Every shift ends: promoted, rolled back, or still in flight at the end of the run.
    assert!(p.promotions + p.rollbacks <= p.shifts_started);
    assert!(events
        .iter()
        .any(|e| e.what.contains("promoted its shadow")));

    // Same seed, same report.
    let again = run(&short(), &model, &mut |_, _| {}).unwrap();
    assert_eq!(again, report);
}

#[test]
fn bad_configs_are_refused() {
    let model = augur_predict::default_model().unwrap();
    let mut cfg = short();
    cfg.fleet.degrading_faults = 100;
    let e = run(&cfg, &model, &mut |_, _| {}).unwrap_err();
    assert!(e.to_string().contains("faults for 24 instances"), "{e}");
    let mut cfg = short();
    cfg.tick_s = 0.0;
    assert!(run(&cfg, &model, &mut |_, _| {}).is_err());
}

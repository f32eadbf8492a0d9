//! Samples in: routing, counting every outcome, windows, limits.

mod common;

use augur_actors::{ActorsConfig, ActorsError, IngestSummary, AUTO_SWEEP_TICKS};
use augur_types::ComponentId;
use common::{config, id, ids, sample, start, MODEL_VERSION};

#[tokio::test]
async fn samples_then_a_tick_give_a_forecast_with_the_model_version() {
    let sys = start(config(2));
    let c = id("api-1");
    sys.register([c.clone()]).await.unwrap();
    let batch = (0..20)
        .map(|t| sample(&c, "latency", t * 1000, 10.0 + t as f64))
        .collect();
    assert_eq!(sys.ingest(batch).await.unwrap().accepted, 20);
    assert_eq!(
        sys.forecast(&c).await.unwrap(),
        None,
        "no forecast before a tick"
    );

    let report = sys.tick().await.unwrap();
    assert_eq!((report.scored, report.batch_size, report.steps), (1, 1, 1));
    let f = sys
        .forecast(&c)
        .await
        .unwrap()
        .expect("forecast after the tick");
    assert_eq!(&*f.model_version, MODEL_VERSION);
    assert_eq!(sys.model_version(), MODEL_VERSION);
    assert_eq!(f.at_ms, 19_000);
    assert!((0.0..=100.0).contains(&f.hps) && (0.0..=1.0).contains(&f.anomaly));
    assert!(f.p_fail.windows(2).all(|w| w[0] <= w[1]), "{:?}", f.p_fail);
}

/// A batch of components `a` and `b` (registered) and `ghost` (not) with one sample of
/// every kind a metric limit of 2 refuses, and five that are taken.
fn mixed_batch() -> Vec<augur_actors::Sample> {
    let (a, b, ghost) = (id("a"), id("b"), id("ghost"));
    vec![
        sample(&a, "m1", 1000, 1.0),
        sample(&a, "m1", 1000, 2.0),     // duplicate
        sample(&ghost, "m1", 1000, 1.0), // unknown component
        sample(&a, "m1", 500, 1.0),      // out of order
        sample(&b, "m1", 1000, 7.0),
        sample(&a, "m1", 2000, f64::NAN), // not finite
        sample(&a, "m2", 1000, 1.0),
        sample(&a, "m3", 1000, 1.0),           // a third metric: too many
        sample(&a, "m1", 3000, f64::INFINITY), // not finite
        sample(&ghost, "m2", 1000, 1.0),       // unknown component
        sample(&a, "m1", 3000, 3.0),
        sample(&b, "m1", 2000, 8.0),
    ]
}

/// An ingest that keeps what was taken (the node's metric history) gets back every sample
/// the actors took, in order, and none they refused: no duplicate, no sample out of order,
/// not finite, of a metric over the limit, or of an unknown component.
#[tokio::test]
async fn an_ingest_hands_back_the_samples_taken_and_no_other() {
    let mut cfg = config(3);
    cfg.predictor.max_metrics = 2;
    let sys = augur_actors::PredictorSystem::start_with(
        cfg,
        common::model(),
        augur_predict::predictor::default_hazard(),
        true,
    )
    .unwrap();
    let (a, b) = (id("a"), id("b"));
    sys.register([a.clone(), b.clone()]).await.unwrap();
    let batch = mixed_batch();
    let mut ingested = sys.ingest_keeping(batch.clone()).await.unwrap();
    assert_eq!(ingested.summary.accepted, 5);
    ingested.taken.sort_by(|x, y| x.0.cmp(&y.0));
    let row = |m: &str, t, v| (m.to_owned(), t, v);
    assert_eq!(
        ingested.taken,
        [
            (
                a.clone(),
                vec![
                    row("m1", 1000, 1.0),
                    row("m2", 1000, 1.0),
                    row("m1", 3000, 3.0)
                ]
            ),
            (b.clone(), vec![row("m1", 1000, 7.0), row("m1", 2000, 8.0)]),
        ]
    );
    // The same batch again: all refused (duplicates and the rest), nothing handed back.
    let again = sys.ingest_keeping(batch).await.unwrap();
    assert_eq!(again.summary.accepted, 0);
    assert!(again.taken.is_empty(), "{:?}", again.taken);
    // A first sample refused and a later one taken: only the later comes back.
    let mixed = sys
        .ingest_keeping(vec![
            sample(&a, "m1", 1000, 5.0),
            sample(&a, "m1", 4000, 4.0),
        ])
        .await
        .unwrap();
    assert_eq!(mixed.taken, [(a.clone(), vec![row("m1", 4000, 4.0)])]);
    // A system not started to keep them hands nothing back.
    let plain = start(config(1));
    plain.register([a.clone()]).await.unwrap();
    let kept = plain
        .ingest_keeping(vec![sample(&a, "m1", 1, 1.0)])
        .await
        .unwrap();
    assert_eq!((kept.summary.accepted, kept.taken.len()), (1, 0));
}

#[tokio::test]
async fn rejects_are_counted_per_kind_and_never_poison_the_batch() {
    let mut cfg = config(3);
    cfg.predictor.max_metrics = 2;
    let sys = start(cfg);
    let (a, b, ghost) = (id("a"), id("b"), id("ghost"));
    sys.register([a.clone(), b.clone()]).await.unwrap();
    let batch = mixed_batch();
    let summary = sys.ingest(batch).await.unwrap();
    assert_eq!(
        summary,
        IngestSummary {
            accepted: 5,
            not_finite: 2,
            out_of_order: 1,
            duplicate: 1,
            too_many_metrics: 1,
            unknown_component: 2,
            ..IngestSummary::default()
        }
    );
    assert_eq!(summary.total(), 12);

    let snap = sys.observe(&a).await.unwrap().unwrap();
    let fills: Vec<_> = snap
        .metrics
        .iter()
        .map(|m| (m.name.as_str(), m.ts_ms, m.value, m.window_fill))
        .collect();
    assert_eq!(fills, [("m1", 3000, 3.0, 2), ("m2", 1000, 1.0, 1)]);
    let snap = sys.observe(&b).await.unwrap().unwrap();
    assert_eq!(
        (snap.metrics[0].ts_ms, snap.metrics[0].window_fill),
        (2000, 2)
    );
    assert_eq!(sys.observe(&ghost).await.unwrap(), None);

    let shards = sys.observe_shards().await.unwrap();
    let mut total = IngestSummary::default();
    shards.iter().for_each(|s| total.merge(&s.ingested));
    assert_eq!(total, summary, "the shards' own counters agree");
    assert_eq!(shards.iter().map(|s| s.actors).sum::<usize>(), 2);
}

#[tokio::test]
async fn unknown_components_are_counted_and_dropped_unless_auto_register() {
    let sys = start(config(2));
    let batch = || {
        ids("svc", 10)
            .iter()
            .map(|c| sample(c, "cpu", 1, 0.5))
            .collect::<Vec<_>>()
    };
    let s = sys.ingest(batch()).await.unwrap();
    assert_eq!((s.accepted, s.unknown_component), (0, 10));
    assert_eq!(sys.tick().await.unwrap().batch_size, 0);
    let shards = sys.observe_shards().await.unwrap();
    assert_eq!(
        shards.iter().map(|s| s.registered).sum::<usize>(),
        0,
        "nothing was created"
    );

    let sys = start(ActorsConfig {
        auto_register: true,
        ..config(2)
    });
    let s = sys.ingest(batch()).await.unwrap();
    assert_eq!((s.accepted, s.unknown_component), (10, 0));
    assert_eq!(sys.tick().await.unwrap().batch_size, 10);
}

/// An auto-registered component that goes quiet is forgotten, its actor stopped; a registered
/// one is kept however quiet, and one that keeps sending stays.
#[tokio::test]
async fn quiet_auto_registered_components_are_forgotten() {
    let sys = start(ActorsConfig {
        auto_register: true,
        auto_forget_ticks: 100,
        ..config(2)
    });
    let (quiet, busy, kept) = (id("quiet-1"), id("busy-1"), id("kept-1"));
    sys.register([kept.clone()]).await.unwrap();
    let all = [&quiet, &busy, &kept].map(|c| sample(c, "cpu", 0, 0.5));
    assert_eq!(sys.ingest(all.to_vec()).await.unwrap().accepted, 3);
    let count = || async {
        sys.observe_shards()
            .await
            .unwrap()
            .iter()
            .map(|s| (s.registered, s.actors))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    };
    // Sweeps come every AUTO_SWEEP_TICKS ticks; "busy" sends on every tick.
    let sweeps_past = 100 / AUTO_SWEEP_TICKS + 2;
    for t in 1..=sweeps_past * AUTO_SWEEP_TICKS {
        if t == 100 {
            assert_eq!(
                count().await,
                (3, 3),
                "none is forgotten before 100 quiet ticks"
            );
        }
        let s = sys
            .ingest(vec![sample(&busy, "cpu", t as i64, 0.5)])
            .await
            .unwrap();
        assert_eq!(s.accepted, 1);
        sys.tick().await.unwrap();
    }
    assert_eq!(count().await, (2, 2));
    assert_eq!(sys.observe(&quiet).await.unwrap(), None);
    assert!(sys.observe(&kept).await.unwrap().is_some());
    // A forgotten component that sends again starts afresh.
    let s = sys
        .ingest(vec![sample(&quiet, "cpu", 1, 0.5)])
        .await
        .unwrap();
    assert_eq!(s.accepted, 1);
    let snap = sys.observe(&quiet).await.unwrap().expect("started again");
    assert_eq!(snap.metrics[0].window_fill, 1);
}

#[tokio::test]
async fn observe_shows_window_fill_and_the_dirty_flag() {
    let mut cfg = config(1);
    cfg.predictor.window = 16;
    let sys = start(cfg);
    let c = id("db-1");
    assert_eq!(sys.register([c.clone(), c.clone()]).await.unwrap(), 1);
    assert_eq!(
        sys.observe(&c).await.unwrap(),
        None,
        "no actor before the first sample"
    );

    let batch = |from: i64| {
        (from..from + 10)
            .map(|t| sample(&c, "iops", t, t as f64))
            .collect()
    };
    sys.ingest(batch(0)).await.unwrap();
    let snap = sys.observe(&c).await.unwrap().unwrap();
    assert_eq!(snap.component, c);
    let m = &snap.metrics[0];
    assert_eq!((m.name.as_str(), m.ts_ms, m.value), ("iops", 9, 9.0));
    assert_eq!((m.window_fill, m.window_capacity), (10, 16));
    assert!(snap.dirty && snap.forecast.is_none() && snap.heap_bytes > 0);

    sys.ingest(batch(10)).await.unwrap();
    sys.tick().await.unwrap();
    let snap = sys.observe(&c).await.unwrap().unwrap();
    assert_eq!(
        snap.metrics[0].window_fill, 16,
        "the window is full, not longer"
    );
    assert!(!snap.dirty && snap.forecast.is_some() && snap.restarts == 0);
    serde_json::to_string(&snap).expect("snapshots serialise");
}

#[tokio::test]
async fn a_batch_over_the_limit_is_refused_whole() {
    let sys = start(ActorsConfig {
        max_batch: 10,
        auto_register: true,
        ..config(2)
    });
    let c = id("x");
    let batch = (0..11).map(|t| sample(&c, "cpu", t, 1.0)).collect();
    let err = sys.ingest(batch).await.unwrap_err();
    assert!(matches!(
        err,
        ActorsError::BatchTooLarge { len: 11, max: 10 }
    ));
    assert_eq!(
        err.to_string(),
        "batch of 11 samples is over the limit of 10"
    );
    assert!(!err.is_retriable());
    assert_eq!(
        sys.observe(&c).await.unwrap(),
        None,
        "nothing of it was taken"
    );
    assert_eq!(
        sys.ingest(Vec::new()).await.unwrap(),
        IngestSummary::default()
    );
}

#[tokio::test]
async fn deregistered_components_are_forgotten() {
    let sys = start(config(2));
    let cs = ids("w", 4);
    sys.register(cs.clone()).await.unwrap();
    sys.ingest(cs.iter().map(|c| sample(c, "cpu", 1, 1.0)).collect())
        .await
        .unwrap();
    assert_eq!(sys.deregister(cs[..2].to_vec()).await.unwrap(), 2);
    assert_eq!(sys.observe(&cs[0]).await.unwrap(), None);
    assert_eq!(
        sys.tick().await.unwrap().batch_size,
        2,
        "only the remaining ones are scored"
    );
    let s = sys
        .ingest(cs.iter().map(|c| sample(c, "cpu", 2, 1.0)).collect())
        .await
        .unwrap();
    assert_eq!((s.accepted, s.unknown_component), (2, 2));
}

#[tokio::test]
async fn a_large_interleaved_batch_is_taken_whole() {
    // Over the size grouped inline: grouped on the blocking pool. Metric-major order, so each
    // component's samples are spread over the whole batch.
    let sys = start(ActorsConfig {
        auto_register: true,
        ..config(3)
    });
    let cs = ids("big", 625);
    let metrics = ["a", "b", "c", "d", "e", "f", "g", "h"];
    let batch: Vec<_> = metrics
        .iter()
        .flat_map(|m| cs.iter().map(move |c| sample(c, m, 1000, 1.0)))
        .collect();
    assert_eq!(batch.len(), 5000);
    let s = sys.ingest(batch).await.unwrap();
    assert_eq!((s.accepted, s.total()), (5000, 5000));
    let snap = sys.observe(&cs[17]).await.unwrap().unwrap();
    let names: Vec<_> = snap.metrics.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, metrics, "each component's samples in batch order");
    assert_eq!(sys.tick().await.unwrap().batch_size, 625);
}

/// One node's windows warm another's copies of the same components: the copy that took only
/// the latest samples gets the older ones first, and a component the copy does not know is
/// not taken on.
#[tokio::test]
async fn a_peers_windows_warm_the_copies_that_missed_their_start() {
    let (peer, here) = (start(config(2)), start(config(2)));
    let (c, stranger) = (id("db-1"), id("cache-1"));
    peer.register([c.clone(), stranger.clone()]).await.unwrap();
    here.register([c.clone()]).await.unwrap();
    let series = |comp: &ComponentId, from: i64, to: i64| {
        (from..to)
            .map(|t| sample(comp, "latency_ms", t * 1000, 100.0 + (t % 5) as f64))
            .collect::<Vec<_>>()
    };
    let mut all = series(&c, 0, 100);
    all.extend(series(&stranger, 0, 10));
    assert_eq!(peer.ingest(all).await.unwrap().accepted, 110);
    assert_eq!(here.ingest(series(&c, 90, 100)).await.unwrap().accepted, 10);

    let windows = peer
        .windows(vec![c.clone(), stranger.clone(), id("nobody")])
        .await
        .unwrap();
    // The default window holds 64 samples: db-1's last 64, and cache-1's 10.
    assert_eq!(windows.len(), 64 + 10);
    // db-1's window has room for 54 more, all older than here's oldest; cache-1 is unknown here.
    assert_eq!(here.seed(windows).await.unwrap(), 54);
    let snap = here.observe(&c).await.unwrap().unwrap();
    assert_eq!(snap.metrics[0].window_fill, 64);
    assert_eq!(here.observe(&stranger).await.unwrap(), None);
    // Due for scoring, and scored as the peer's copy is.
    assert_eq!(here.tick().await.unwrap().batch_size, 1);
    let f = here.forecast(&c).await.unwrap().unwrap();
    assert_eq!(f.samples, 64);
}

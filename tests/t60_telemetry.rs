//! Telemetry in, forecasts out, through a real node: samples pushed over gRPC and over
//! Prometheus remote write reach the component actors; bad samples are counted by kind and
//! never poison their batch; a component whose metric steps away tops `ctl at-risk`, and its
//! forecast names the metric; `ctl risk` gains P(fail) and risk.

mod common;

use std::time::Duration;

use augur_predict::lstm::SeededRng;
use augur_proto::pb;
use augur_proto::prom::{encode_remote_write, Label, PromSample, TimeSeries, WriteRequest};
use common::*;
use serde_json::Value;

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// A seeded noisy series around `level` (±1%): the same values every run.
fn noisy(n: usize, level: f64, seed: u64) -> Vec<f64> {
    let mut rng = SeededRng::new(seed);
    (0..n)
        .map(|_| level + (rng.unit() - 0.5) * level * 0.02)
        .collect()
}

/// Pushes `samples` to node 1 over one stream, in batches of `per_batch`.
async fn push(cluster: &Cluster, samples: Vec<pb::Sample>, per_batch: usize) -> pb::PushSummary {
    let batches: Vec<pb::SampleBatch> = samples
        .chunks(per_batch)
        .map(|c| pb::SampleBatch {
            samples: c.to_vec(),
            applied_index: 0,
        })
        .collect();
    push_to(&cluster.addr(1), batches).await
}

fn sample(component: &str, metric: &str, ts: i64, value: f64) -> pb::Sample {
    pb::Sample {
        component: component.into(),
        metric: metric.into(),
        timestamp_ms: ts,
        value,
    }
}

/// Registers api, db, cache and queue on h1 (zone z1) with hosts h1, h2 (another zone) and h3
/// (another rack of z1), and answers 400 samples a component of latency around 100 ms, db's
/// stepping up fivefold for the last 5 (the detectors learn for the first 300).
async fn four_components_db_stepping(cluster: &Cluster) -> Vec<pb::Sample> {
    let mut client = augur_cli::Client::new(cluster.endpoints());
    for id in ["api", "db", "cache", "queue"] {
        assert!(register(&mut client, id).await, "register {id}");
    }
    // The components run on h1 (zone z1); h2 is in another zone, h3 in another rack of z1.
    upsert_hosts(
        &mut client,
        &[("h1", "r1", "z1"), ("h2", "r2", "z2"), ("h3", "r3", "z1")],
    )
    .await;

    // 400 samples per component (the detectors learn for 300); db's latency steps up fivefold
    // for the last 5.
    let mut batch = Vec::new();
    for (k, id) in ["api", "db", "cache", "queue"].iter().enumerate() {
        for (i, v) in noisy(400, 100.0, k as u64 + 1).into_iter().enumerate() {
            let v = if *id == "db" && i >= 395 { v * 5.0 } else { v };
            batch.push(sample(id, "latency_ms", i as i64 * 1000, v));
        }
    }
    batch
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_samples_become_forecasts_and_bad_ones_are_counted() {
    let rw_port = free_ports(1)[0];
    let extra = Box::leak(
        format!("[telemetry]\ntick_ms = 50\nremote_write_listen = \"127.0.0.1:{rw_port}\"\n")
            .into_boxed_str(),
    );
    let (cluster, ep) = single_node(extra).await;
    let mut batch = four_components_db_stepping(&cluster).await;
    // Bad samples, in the same batch: each is counted and the rest is taken.
    batch.push(sample("api", "latency_ms", 500_000, f64::NAN));
    batch.push(sample("ghost", "latency_ms", 1, 1.0));
    batch.push(sample("not a valid id!", "latency_ms", 1, 1.0));
    batch.push(sample("api", "latency_ms", 399_000, 100.0)); // duplicate of the last one
    batch.push(sample("api", "latency_ms", 5_000, 100.0)); // far behind: out of order
                                                           // A day ahead of the node's clock (it would make every later sample of the metric look
                                                           // out of order), and before 1970: bad timestamps.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    batch.push(sample("cache", "latency_ms", now_ms + 86_400_000, 1.0));
    batch.push(sample("cache", "latency_ms", -5, 1.0));
    // Metric names: empty, over 128 bytes, a control character.
    batch.push(sample("cache", "", 450_000, 1.0));
    batch.push(sample("cache", &"m".repeat(129), 450_000, 1.0));
    batch.push(sample("cache", "lat\nency", 450_000, 1.0));
    let summary = push(&cluster, batch, 10_000).await;
    assert_eq!(summary.batches, 1);
    assert_eq!(summary.accepted, 1600);
    assert_eq!(summary.not_finite, 1);
    assert_eq!(summary.unknown_component, 2);
    assert_eq!(summary.duplicate, 1);
    assert_eq!(summary.out_of_order, 1);
    assert_eq!(summary.bad_timestamp, 2);
    assert_eq!(summary.bad_metric, 3);
    // cache's metric still takes its next sample: the refused one from the future moved
    // nothing.
    let next = push(
        &cluster,
        vec![sample("cache", "latency_ms", 400_000, 100.0)],
        10,
    )
    .await;
    assert_eq!(next.accepted, 1, "{next:?}");

    // The scorer ticks every 50 ms: wait until db's forecast shows the step.
    let top = eventually("db at the top of at-risk", Duration::from_secs(20), || {
        let ep = ep.clone();
        async move {
            let (code, out, _) = ctl(&ep, &["--output", "json", "at-risk", "--limit", "4"]);
            if code != 0 {
                return None;
            }
            let rows = json(&out);
            let rows = rows.as_array()?.clone();
            (rows.len() == 4 && rows[0]["component"] == "db").then_some(rows)
        }
    })
    .await;
    let db = &top[0];
    assert!(db["anomaly"].as_f64().unwrap() > 0.99, "{db}");
    assert!(
        db["hps"].as_f64().unwrap() < top[1]["hps"].as_f64().unwrap(),
        "{top:?}"
    );
    assert!(db["why"].to_string().contains("latency_ms"), "{db}");
    assert!(
        db["model_version"].as_str().unwrap().starts_with("lstm-"),
        "{db}"
    );
    let p = db["p_fail_1h"].as_f64().unwrap();
    assert!(db["p_fail_5m"].as_f64().unwrap() <= p && p <= db["p_fail_24h"].as_f64().unwrap());

    // The planner would move db, and only db, to the other zone (nothing is committed).
    let (code, out, err) = ctl(&ep, &["--output", "json", "plan"]);
    assert_eq!(code, 0, "{err}");
    let plan = json(&out);
    let plan = plan.as_array().unwrap();
    assert_eq!(plan.len(), 1, "{plan:?}");
    let d = &plan[0];
    assert_eq!(d["component"], "db", "{d}");
    assert!(d["p_fail"].as_f64() >= d["threshold"].as_f64(), "{d}");
    assert_eq!(d["to"]["host"], "h2", "{d}");
    assert_eq!(d["tier"], "other_zone", "{d}");
    assert_eq!(d["mode"], "act", "{d}");
    assert!(
        d["reason"].as_str().unwrap().contains("shadow on h2"),
        "{d}"
    );

    let (code, out, err) = ctl(&ep, &["--output", "json", "forecast", "api"]);
    assert_eq!(code, 0, "{err}");
    assert!(json(&out)["anomaly"].as_f64().unwrap() < 0.99, "{out}");
    let (code, _, err) = ctl(&ep, &["forecast", "ghost"]);
    assert_ne!(code, 0);
    assert!(err.contains("no forecast for ghost"), "{err}");

    // Risk = P(fail) × blast radius for components with a forecast.
    let (code, out, err) = ctl(&ep, &["--output", "json", "risk"]);
    assert_eq!(code, 0, "{err}");
    let risks = json(&out);
    let db_risk = risks
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["component"] == "db")
        .unwrap();
    assert!(db_risk["p_fail"].as_f64().is_some(), "{db_risk}");

    // Prometheus remote write: the component comes from the `component` label.
    let label = |n: &str, v: &str| Label {
        name: n.into(),
        value: v.into(),
    };
    let req = WriteRequest {
        timeseries: vec![
            TimeSeries {
                labels: vec![
                    label("__name__", "queue_depth"),
                    label("component", "queue"),
                ],
                samples: (0..10)
                    .map(|i| PromSample {
                        value: 3.0,
                        timestamp: 600_000 + i,
                    })
                    .collect(),
            },
            TimeSeries {
                labels: vec![label("__name__", "queue_depth")],
                samples: vec![PromSample {
                    value: 3.0,
                    timestamp: 1,
                }],
            },
        ],
    };
    let status = remote_write(&format!("127.0.0.1:{rw_port}"), encode_remote_write(&req)).await;
    assert_eq!(status, 204);
    assert_eq!(
        remote_write(&format!("127.0.0.1:{rw_port}"), b"garbage".to_vec()).await,
        400
    );
    // Six bytes whose snappy header claims 4 GiB: refused as too large, nothing allocated.
    assert_eq!(
        remote_write(
            &format!("127.0.0.1:{rw_port}"),
            vec![0xff, 0xff, 0xff, 0xff, 0x0f, 0x00]
        )
        .await,
        413
    );
    // Remote write 2.0 would decode as a 1.0 request with no series: refused (415), so the
    // sender falls back to 1.0, instead of answered 204 with every sample dropped.
    let rw = format!("127.0.0.1:{rw_port}");
    let v2 = [
        ("content-encoding", "snappy"),
        (
            "content-type",
            "application/x-protobuf;proto=io.prometheus.write.v2.Request",
        ),
        ("x-prometheus-remote-write-version", "2.0.0"),
    ];
    assert_eq!(
        remote_write_with(&rw, encode_remote_write(&req), &v2).await,
        415
    );
    assert_eq!(
        remote_write_with(&rw, encode_remote_write(&req), &v2[..2]).await,
        415,
        "the content type alone names 2.0"
    );
    assert_eq!(
        remote_write_with(&rw, encode_remote_write(&req), &[]).await,
        204,
        "no headers: taken as 1.0"
    );
    // One series of 1,000,001 empty samples: a small body over the actors' `max_batch`
    // (1,000,000), refused by counting before anything is decoded.
    let mut series = [0x12u8, 0x00].repeat(1_000_001);
    let mut raw = vec![0x0a];
    prost::encoding::encode_varint(series.len() as u64, &mut raw);
    raw.append(&mut series);
    let body = snap::raw::Encoder::new().compress_vec(&raw).unwrap();
    assert_eq!(remote_write(&rw, body).await, 413);
    // Two million empty series and no sample: 2 bytes each on the wire, 48 decoded. Refused
    // by the count too (a 1 MiB body of them took gigabytes to decode).
    let body = snap::raw::Encoder::new()
        .compress_vec(&[0x0au8, 0x00].repeat(2_000_000))
        .unwrap();
    assert_eq!(remote_write(&rw, body).await, 413);
    eventually(
        "remote-written samples in queue's window",
        Duration::from_secs(10),
        || {
            let ep = ep.clone();
            async move {
                let (_, out, _) = ctl(&ep, &["--output", "json", "forecast", "queue"]);
                (serde_json::from_str::<Value>(&out).ok()?["at_ms"].as_i64()? >= 600_009)
                    .then_some(())
            }
        },
    )
    .await;
}

/// The node keeps a history of what it is pushed: `ctl root-cause` ranks an incident window
/// from it (a database whose CPU jumped, under a caller whose latency jumped more: metrics
/// alone blame the caller, the graph the database), and the causal tests that run over it
/// turn a lagged influence into a `causal` edge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_causes_and_causal_edges_come_from_the_live_history() {
    let (cluster, ep) =
        single_node("[telemetry]\ncausal_every_s = 1\ncausal_window_s = 600\n").await;
    apply_sock_shop(&ep);

    // 600 s at 1 s. From 400 s carts' latency triples and carts-db's CPU rises 2.5-fold.
    // orders' queue is a random walk and shipping's follows it one step later.
    let mut rng = SeededRng::new(42);
    let mut walk = 100.0;
    let mut walks = Vec::new();
    for _ in 0..600 {
        walk += (rng.unit() - 0.5) * 10.0;
        walks.push(walk);
    }
    let mut batch = Vec::new();
    let (latency, cpu, flat) = (noisy(600, 50.0, 1), noisy(600, 20.0, 2), noisy(600, 5.0, 3));
    for i in 0..600 {
        let ts = i as i64 * 1000;
        let fault = i >= 400;
        let lat = if fault { latency[i] * 3.0 } else { latency[i] };
        let db = if fault { cpu[i] * 2.5 } else { cpu[i] };
        batch.push(sample("carts", "latency_ms", ts, lat));
        batch.push(sample("carts-db", "cpu", ts, db));
        batch.push(sample("catalogue", "cpu", ts, flat[i]));
        batch.push(sample("orders", "queue", ts, walks[i]));
        let follow = if i == 0 { walks[0] } else { walks[i - 1] };
        batch.push(sample("shipping", "queue", ts, follow + (rng.unit() - 0.5)));
    }
    let summary = push(&cluster, batch, 1000).await;
    assert_eq!(summary.accepted, 3000, "{summary:?}");

    let rank = |extra: &[&str]| {
        let mut args = vec![
            "--output",
            "json",
            "root-cause",
            "--from",
            "400",
            "--to",
            "599",
        ];
        args.extend_from_slice(extra);
        let (code, out, err) = ctl(&ep, &args);
        assert_eq!(code, 0, "{err}");
        json(&out)
    };
    let by_metrics = rank(&["--metrics-only"]);
    assert_eq!(by_metrics["series"], 5, "{by_metrics}");
    assert_eq!(by_metrics["reference_rows"], 400, "{by_metrics}");
    assert_eq!(by_metrics["window_rows"], 200, "{by_metrics}");
    let first = |v: &Value, k: usize| v["causes"][k]["component"].clone();
    assert_eq!(first(&by_metrics, 0), "carts", "{by_metrics}");
    assert_eq!(by_metrics["causes"][0]["metric"], "carts/latency_ms");
    assert_eq!(first(&by_metrics, 1), "carts-db", "{by_metrics}");
    let with_graph = rank(&[]);
    assert_eq!(first(&with_graph, 0), "carts-db", "{with_graph}");
    assert_eq!(first(&with_graph, 1), "carts", "{with_graph}");

    // Bad windows are refused, naming the problem.
    let (code, _, err) = ctl(&ep, &["root-cause", "--from", "500", "--to", "400"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("before it starts"), "{err}");
    let (code, _, err) = ctl(&ep, &["root-cause", "--from", "yesterday"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--from \"yesterday\""), "{err}");
    // A window before any history: nothing to compare with.
    let (code, _, err) = ctl(&ep, &["root-cause", "--from", "0", "--to", "0"]);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("cannot rank"), "{err}");

    // shipping's queue follows orders': a causal edge shipping -> orders (shipping depends
    // on what orders does) appears once the tests have run.
    eventually(
        "a causal edge from the history",
        Duration::from_secs(20),
        || {
            let ep = ep.clone();
            async move {
                let (_, out, _) = ctl(&ep, &["--output", "json", "graph"]);
                let g: Value = serde_json::from_str(&out).ok()?;
                g["edges"].as_array()?.iter().find(|e| {
                    e["from"] == "shipping"
                        && e["to"] == "orders"
                        && e["sources"]
                            .as_array()
                            .is_some_and(|s| s.iter().any(|s| s["source"] == "causal"))
                })?;
                Some(())
            }
        },
    )
    .await;
}

/// The model is in the replicated state: the node records the one it started with, a model
/// set with `ctl model set` replaces it, the node switches to it and its forecasts say so;
/// a file that is not a model is refused and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_in_use_is_the_one_the_state_records() {
    let (cluster, ep) = single_node("[telemetry]\ntick_ms = 50\n").await;
    let model_get = |ep: String| async move {
        let (code, out, err) = ctl(&ep, &["--output", "json", "model", "get"]);
        assert_eq!(code, 0, "{err}");
        json(&out)
    };
    let shipped = augur_predict::default_model().unwrap().meta.version;
    let got = eventually(
        "the shipped model recorded",
        Duration::from_secs(20),
        || {
            let ep = ep.clone();
            let shipped = shipped.clone();
            async move {
                let v = model_get(ep).await;
                (v["recorded_version"] == shipped.as_str()).then_some(v)
            }
        },
    )
    .await;
    assert_eq!(got["in_use_version"], shipped.as_str(), "{got}");

    // Another model (a different shape: 16 hidden units), saved as `augur train` would.
    let dir = tempfile::TempDir::new().unwrap();
    let path = dir.path().join("other.safetensors");
    let features = (0..8).map(|i| format!("f{i}")).collect();
    let mut other = augur_predict::lstm::LstmModel::new(augur_predict::lstm::ModelMeta::new(
        features, 16, 30, 99,
    ))
    .unwrap();
    let version = other.save(&path).unwrap();
    assert_ne!(version, shipped);

    let garbage = dir.path().join("garbage.bin");
    std::fs::write(&garbage, b"not a model").unwrap();
    let (code, _, err) = ctl(&ep, &["model", "set", garbage.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a model the node can serve"), "{err}");
    assert_eq!(
        model_get(ep.clone()).await["recorded_version"],
        shipped.as_str()
    );

    let (code, out, err) = ctl(&ep, &["model", "set", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&version), "{out}");
    assert!(register(&mut augur_cli::Client::new(cluster.endpoints()), "api").await);
    eventually(
        "the node switched to the recorded model",
        Duration::from_secs(20),
        || {
            let ep = ep.clone();
            let version = version.clone();
            async move { (model_get(ep).await["in_use_version"] == version.as_str()).then_some(()) }
        },
    )
    .await;

    // Forecasts come from the new model.
    let batch: Vec<pb::Sample> = noisy(50, 10.0, 5)
        .into_iter()
        .enumerate()
        .map(|(i, v)| sample("api", "latency_ms", i as i64 * 1000, v))
        .collect();
    let summary = push(&cluster, batch, 1000).await;
    assert_eq!(summary.accepted, 50, "{summary:?}");
    eventually(
        "a forecast by the new model",
        Duration::from_secs(20),
        || {
            let ep = ep.clone();
            let version = version.clone();
            async move {
                let (code, out, _) = ctl(&ep, &["--output", "json", "forecast", "api"]);
                (code == 0 && json(&out)["model_version"] == version.as_str()).then_some(())
            }
        },
    )
    .await;
}

/// With `planner.act`, the leader commits the planner's decision: db's shadow is requested on
/// the host in the other zone and a `Provision` action for it reaches orchestrators, once;
/// the outcomes an orchestrator reports then move the shadow through sync and validation
/// to a rollback when validation fails, each step once and with its reason.
/// Registers four components and pushes their history, db's latency stepping up at the end.
async fn push_db_failing(cluster: &Cluster) {
    let batch = four_components_db_stepping(cluster).await;
    assert_eq!(push(cluster, batch, 10_000).await.accepted, 1600);
}

/// The first action of `kind` in the log, once there is one.
async fn first_action(ep: &str, kind: &'static str) -> Value {
    eventually(kind, Duration::from_secs(20), || async move {
        let (_, out, _) = ctl(ep, &["--output", "json", "actions"]);
        let v: Value = serde_json::from_str(&out).ok()?;
        v.as_array()?.iter().find(|a| a["kind"] == kind).cloned()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_commits_a_failover_for_a_failing_component() {
    let (cluster, ep) =
        single_node("[telemetry]\ntick_ms = 50\n[planner]\nact = true\nevery_ms = 100\n").await;
    push_db_failing(&cluster).await;
    let actions = eventually(
        "a Provision action for db's shadow",
        Duration::from_secs(20),
        || {
            let ep = ep.clone();
            async move {
                let (code, out, _) = ctl(&ep, &["--output", "json", "actions"]);
                let v: Value = serde_json::from_str(&out).ok()?;
                (code == 0 && v.as_array()?.iter().any(|a| a["kind"] == "provision")).then_some(v)
            }
        },
    )
    .await;
    let a = actions
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["kind"] == "provision")
        .unwrap();
    assert_eq!(a["target"], "db", "{a}");
    assert!(
        a["params"]["shadow"]
            .as_str()
            .unwrap()
            .starts_with("db.shadow-"),
        "{a}"
    );
    assert_eq!(a["params"]["host"], "h2", "{a}");
    assert_eq!(a["params"]["zone"], "z2", "{a}");
    assert!(
        a["params"]["reason"]
            .as_str()
            .unwrap()
            .contains("threshold"),
        "{a}"
    );
    // The shadow request is in the replicated state with the planner's reason.
    let (code, out, err) = ctl(&ep, &["--output", "json", "shadows"]);
    assert_eq!(code, 0, "{err}");
    let shadows = json(&out);
    let s = &shadows[0];
    assert_eq!(s["component"], "db", "{out}");
    assert_eq!(s["shadow"], a["params"]["shadow"], "{out}");
    assert_eq!(s["placement"]["host"], "h2", "{out}");
    assert_eq!(s["state"], "requested", "{out}");
    assert_eq!(s["in_flight"], true, "{out}");
    assert_eq!(s["history"][0][1], a["params"]["reason"], "{out}");
    // The shadow is in flight, so db leaves the plan; and no second failover was started.
    eventually("db out of the plan", Duration::from_secs(20), || {
        let ep = ep.clone();
        async move {
            let (code, out, _) = ctl(&ep, &["--output", "json", "plan"]);
            let v: Value = serde_json::from_str(&out).ok()?;
            (code == 0 && !v.as_array()?.iter().any(|d| d["component"] == "db")).then_some(())
        }
    })
    .await;
    let (_, out, _) = ctl(&ep, &["--output", "json", "actions"]);
    let provisions = json(&out)
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "provision")
        .count();
    assert_eq!(provisions, 1, "{out}");

    // This test is the orchestrator: each outcome it reports moves the shadow on through
    // Raft, and the leader appends the next action once.
    let action_of = |kind: &'static str| {
        let ep = ep.clone();
        async move {
            first_action(&ep, kind).await["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    // The first shadow's record, whether current or replaced by a newer one.
    let first_shadow = a["params"]["shadow"].clone();
    let shadow_state = |want: &'static str| {
        let ep = ep.clone();
        let first_shadow = first_shadow.clone();
        async move {
            eventually(want, Duration::from_secs(20), || {
                let ep = ep.clone();
                let first_shadow = first_shadow.clone();
                async move {
                    let (_, out, _) = ctl(&ep, &["--output", "json", "shadows"]);
                    let v: Value = serde_json::from_str(&out).ok()?;
                    let s = v.as_array()?.iter().find(|s| s["shadow"] == first_shadow)?;
                    (s["state"] == want).then(|| s.clone())
                }
            })
            .await
        }
    };
    let report = |id: String, failed: Option<&str>| {
        let mut args = vec![
            "action",
            "report",
            id.as_str(),
            "--orchestrator",
            "test-orch",
        ];
        if let Some(reason) = failed {
            args.extend(["--failed", reason]);
        }
        let (code, _, err) = ctl(&ep, &args);
        assert_eq!(code, 0, "{err}");
    };
    report(action_of("provision").await, None);
    shadow_state("syncing").await;
    report(action_of("sync").await, None);
    shadow_state("validating").await;
    report(
        action_of("validate").await,
        Some("p99 twice the original's"),
    );
    shadow_state("rolledback").await;
    // A rolled-back shadow is retired (the planner leaves db alone until then).
    report(action_of("retire").await, None);
    let shadow = shadow_state("retired").await;
    let steps: Vec<&str> = shadow["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h[0].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "requested",
            "provisioned",
            "syncing",
            "validating",
            "rolledback",
            "retired"
        ],
        "{shadow}"
    );
    assert!(shadow["history"][4][1]
        .as_str()
        .unwrap()
        .contains("p99 twice"));
    // Each action once, in order. (db, still at risk, may now get a new shadow: a second
    // provision, for another shadow.)
    let (_, out, _) = ctl(&ep, &["--output", "json", "actions"]);
    let actions = json(&out);
    let kinds: Vec<&str> = actions
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds[..4],
        ["provision", "sync", "validate", "retire"],
        "{out}"
    );
    for a in &actions.as_array().unwrap()[4..] {
        assert_eq!(a["kind"], "provision", "{out}");
        assert_ne!(
            a["params"]["shadow"], actions[0]["params"]["shadow"],
            "{out}"
        );
    }
}

/// When a group's policy only recommends, the planner records a *proposed* plan and nothing
/// moves: no shadow, no action. `ctl plan approve` lets it go ahead: the leader starts it at
/// once (the shadow named after the plan, its `Provision` action), and `ctl plan get` shows who
/// decided what, the shadow's steps with their reasons, and the actions. Rejecting a started
/// plan, or deciding an unknown one, is refused and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recommended_plan_waits_for_approval() {
    let (cluster, ep) =
        single_node("[telemetry]\ntick_ms = 50\n[planner]\nact = true\nevery_ms = 100\n").await;
    let (code, _, err) = ctl(&ep, &["policy", "set", "*", "--approval", "recommend"]);
    assert_eq!(code, 0, "{err}");
    push_db_failing(&cluster).await;
    // (The four components share one zone while another has room: the footprint planner
    // proposes migrations for them too; db's failover takes its migration over.)
    let plan = eventually(
        "a proposed failover for db",
        Duration::from_secs(20),
        || {
            let ep = ep.clone();
            async move {
                let (code, out, _) = ctl(&ep, &["--output", "json", "plan", "list"]);
                let v: Value = serde_json::from_str(&out).ok()?;
                let p = v
                    .as_array()?
                    .iter()
                    .find(|p| p["component"] == "db" && p["kind"] == "failover")?
                    .clone();
                (code == 0).then_some(p)
            }
        },
    )
    .await;
    let id = plan["id"].as_str().unwrap().to_owned();
    assert_eq!(plan["status"], "proposed", "{plan}");
    assert_eq!(plan["to"]["host"], "h2", "{plan}");
    assert!(plan["reason"].as_str().unwrap().contains("threshold"));
    // Waiting: the planner would still move db, but only recommends it; nothing has moved.
    let (_, out, _) = ctl(&ep, &["--output", "json", "plan"]);
    let preview = json(&out);
    let db = preview
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["component"] == "db")
        .expect("db still due");
    assert_eq!(db["mode"], "recommend", "{out}");
    let (_, out, _) = ctl(&ep, &["--output", "json", "actions"]);
    assert_eq!(json(&out).as_array().unwrap().len(), 0, "{out}");
    let (_, out, _) = ctl(&ep, &["--output", "json", "shadows"]);
    assert_eq!(json(&out).as_array().unwrap().len(), 0, "{out}");

    // An operator's failover to another host than the open plan's would be quietly placed
    // by the plan: refused, naming the plan.
    let (code, _, err) = ctl(&ep, &["failover", "db", "--host", "h3"]);
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!("{id} is open for db, to host h2")),
        "{err}"
    );
    // A shadow on db's own host would fail with it.
    let (code, _, err) = ctl(&ep, &["failover", "db", "--host", "h1"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("db runs on host h1; a shadow goes to another host"),
        "{err}"
    );

    for (args, want) in [
        (vec!["plan", "approve", "plan-999"], "unknown plan"),
        (vec!["plan", "approve", "db"], "unknown plan"),
    ] {
        let (code, _, err) = ctl(&ep, &args);
        assert_ne!(code, 0, "{args:?}");
        assert!(err.contains(want), "{args:?}: {err}");
    }

    let (code, out, err) = ctl(
        &ep,
        &[
            "--output", "json", "plan", "approve", &id, "--by", "alice", "--note", "go",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let approved = json(&out);
    let shadow = format!("db.shadow-{}", id.trim_start_matches("plan-"));
    assert_eq!(approved["status"], "started", "{out}");
    assert_eq!(approved["shadow"], shadow.as_str(), "{out}");
    // Proposed (as a migration, then as a failover), approved by alice, started.
    let steps: Vec<(&str, &str)> = approved["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["status"].as_str().unwrap(), e["by"].as_str().unwrap()))
        .filter(|(status, _)| *status != "proposed")
        .collect();
    assert_eq!(
        steps,
        [("approved", "alice"), ("started", "leader")],
        "{out}"
    );
    let history = approved["history"].as_array().unwrap();
    assert_eq!(history[history.len() - 2]["note"], "go", "{out}");
    assert!(
        approved["reason"].as_str().unwrap().contains("threshold"),
        "{out}"
    );

    // The plan's detail: the shadow requested with the plan's reason, and its Provision action.
    let (code, out, err) = ctl(&ep, &["--output", "json", "plan", "get", &id]);
    assert_eq!(code, 0, "{err}");
    let detail = json(&out);
    assert_eq!(detail["shadow"]["shadow"], shadow.as_str(), "{out}");
    assert_eq!(detail["shadow"]["history"][0][0], "requested", "{out}");
    assert!(detail["shadow"]["history"][0][1]
        .as_str()
        .unwrap()
        .starts_with(&format!("{id}: ")));
    let kinds: Vec<&str> = detail["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["provision"], "{out}");

    // A started plan cannot be rejected; the refusal changes nothing.
    let (code, _, err) = ctl(&ep, &["plan", "reject", &id]);
    assert_ne!(code, 0);
    assert!(err.contains("cannot go from started to rejected"), "{err}");
    let (_, out, _) = ctl(&ep, &["--output", "json", "plan", "get", &id]);
    assert_eq!(json(&out)["plan"]["status"], "started", "{out}");
}

/// Action leases: an orchestrator that claims an action holds it (others can neither claim it
/// nor report it); when its lease lapses the leader puts the action back and another
/// orchestrator takes it over; an action nobody claims in time fails, and the shadow lifecycle
/// rolls back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lapsed_lease_goes_to_another_orchestrator_and_an_unclaimed_action_fails() {
    let (cluster, ep) = single_node(
        "[telemetry]\ntick_ms = 50\n[planner]\nact = true\nevery_ms = 100\n\
         claim_within_ms = 5000\nmax_lapses = 3\n",
    )
    .await;
    push_db_failing(&cluster).await;
    let provision = first_action(&ep, "provision").await;
    let id = provision["id"].as_str().unwrap().to_owned();
    let claim = |who: &str, lease: &str| {
        ctl(
            &ep,
            &[
                "--output",
                "json",
                "action",
                "claim",
                &id,
                "--orchestrator",
                who,
                "--lease-ms",
                lease,
            ],
        )
    };
    let (code, out, err) = claim("orch-a", "60000");
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["claimed_by"], "orch-a", "{out}");
    // Held by orch-a: orch-b can neither claim it nor report it.
    let (code, _, err) = claim("orch-b", "60000");
    assert_ne!(code, 0);
    assert!(err.contains("held by orch-a"), "{err}");
    let (code, _, err) = ctl(&ep, &["action", "report", &id, "--orchestrator", "orch-b"]);
    assert_ne!(code, 0);
    assert!(err.contains("held by orch-a"), "{err}");
    // orch-a renews for 200 ms and goes silent: the lease lapses and the action is back.
    let (code, _, err) = claim("orch-a", "200");
    assert_eq!(code, 0, "{err}");
    let released = eventually("the lapsed lease released", Duration::from_secs(20), || {
        let ep = ep.clone();
        let id = id.clone();
        async move {
            let (_, out, _) = ctl(&ep, &["--output", "json", "actions"]);
            let v: Value = serde_json::from_str(&out).ok()?;
            let a = v
                .as_array()?
                .iter()
                .find(|a| a["id"] == id.as_str())?
                .clone();
            (a["lapses"] == 1 && a.get("claimed_by").is_none()).then_some(a)
        }
    })
    .await;
    assert_eq!(released["status"], "pending", "{released}");
    // orch-b takes it over and carries it out.
    let (code, _, err) = claim("orch-b", "60000");
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = ctl(&ep, &["action", "report", &id, "--orchestrator", "orch-b"]);
    assert_eq!(code, 0, "{err}");
    // Nobody claims the sync: it fails once the claim window passes, and the shadow rolls
    // back with that reason.
    let sync = first_action(&ep, "sync").await;
    let shadow = eventually("the shadow rolled back", Duration::from_secs(30), || {
        let ep = ep.clone();
        async move {
            let (_, out, _) = ctl(&ep, &["--output", "json", "shadows"]);
            let v: Value = serde_json::from_str(&out).ok()?;
            let s = v.as_array()?.first()?.clone();
            (s["state"] == "rolledback" || s["state"] == "retired").then_some(s)
        }
    })
    .await;
    let (_, out, _) = ctl(&ep, &["--output", "json", "actions"]);
    let actions = json(&out);
    let sync = actions
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == sync["id"])
        .unwrap();
    assert_eq!(
        sync["status"], "failed: no orchestrator claimed it within 5000 ms",
        "{out}"
    );
    assert_eq!(sync["orchestrator"], "augur", "{out}");
    let steps: Vec<&str> = shadow["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h[0].as_str().unwrap())
        .collect();
    assert_eq!(
        steps[..4],
        ["requested", "provisioned", "syncing", "rolledback"],
        "{shadow}"
    );
    assert!(
        shadow["history"][3][1]
            .as_str()
            .unwrap()
            .contains("no orchestrator claimed it"),
        "{shadow}"
    );
}

/// Predictive scaling end to end: a group whose policy scales, with its load rising, gets
/// scale plans ahead of the peak; each registers its instance where the group has fewest and
/// asks orchestrators to provision it; a provisioned one takes an equal share of the traffic
/// (the weights reach orchestrators), a failed one is forgotten, and a new plan replaces it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rising_load_scales_the_group_out_ahead_of_its_peak() {
    let (cluster, ep) =
        single_node("[telemetry]\ntick_ms = 50\n[planner]\nact = true\nevery_ms = 100\n").await;
    let mut client = augur_cli::Client::new(cluster.endpoints());
    for id in ["web-1", "web-2"] {
        assert!(register(&mut client, id).await, "register {id}");
    }
    upsert_hosts(
        &mut client,
        &[("h1", "r1", "z1"), ("h2", "r2", "z2"), ("h3", "r3", "z3")],
    )
    .await;
    let (code, _, err) = ctl(&ep, &["weights", "set", "web", "web-1=50", "web-2=50"]);
    assert_eq!(code, 0, "{err}");
    // Bad input names what is wrong and changes nothing.
    let (code, _, err) = ctl(&ep, &["policy", "set", "web", "--scale-rps", "0"]);
    assert_ne!(code, 0);
    assert!(err.contains("at least 1"), "{err}");
    let (code, _, err) = ctl(&ep, &["policy", "set", "web", "--scale-rps", "100"]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = ctl(&ep, &["--output", "json", "policy", "get", "web"]);
    assert_eq!(json(&out)["scaling"]["per_instance_rps"], 100, "{out}");
    // A flag left out keeps its value: changing the approval keeps the scaling and steps.
    let (code, _, err) = ctl(&ep, &["policy", "set", "web", "--approval", "act"]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = ctl(&ep, &["--output", "json", "policy", "get", "web"]);
    let p = json(&out);
    assert_eq!(p["scaling"]["per_instance_rps"], 100, "{out}");
    assert_eq!(p["scaling"]["headroom_percent"], 20, "{out}");
    assert_eq!(
        p["canary_steps"],
        serde_json::json!([1, 5, 25, 50, 100]),
        "{out}"
    );
    let (code, _, err) = ctl(&ep, &["policy", "set", "db", "--scale-max", "3"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("need --scale-rps"), "{err}");

    // 20 samples each (fewer than the planner's min_samples: no failover risk counts), 80
    // req/s rising by 0.5 a second: 179 req/s heading to 299 in 120 s, 359 with 20 %
    // headroom, so 4 instances at 100 req/s: 2 more.
    let batch: Vec<pb::Sample> = ["web-1", "web-2"]
        .iter()
        .flat_map(|id| {
            (0..20).map(move |i| sample(id, "requests_per_s", i * 1000, 80.0 + 0.5 * i as f64))
        })
        .collect();
    assert_eq!(push(&cluster, batch, 1000).await.accepted, 40);
    // The next tick's forecast carries the load's level and trend.
    let load = eventually("web-1's load forecast", Duration::from_secs(20), || {
        let ep = ep.clone();
        async move {
            let (_, out, _) = ctl(&ep, &["--output", "json", "forecast", "web-1"]);
            let f: Value = serde_json::from_str(&out).ok()?;
            let l = f.get("load")?.as_array()?;
            let (level, per_s) = (l.first()?.as_f64()?, l.get(1)?.as_f64()?);
            // (A tick during the push may have scored part of it.)
            ((level - 89.5).abs() < 0.01).then_some(per_s)
        }
    })
    .await;
    assert!((load - 0.5).abs() < 0.01, "{load}");

    let scale_plans = |ep: String, want: usize| async move {
        eventually("scale plans started", Duration::from_secs(20), || {
            let ep = ep.clone();
            async move {
                let ps: Vec<Value> = plans(&ep)
                    .into_iter()
                    .filter(|p| p["kind"] == "scale")
                    .collect();
                (ps.len() == want && ps.iter().all(|p| p["status"] != "approved")).then_some(ps)
            }
        })
        .await
    };
    let ps = scale_plans(ep.clone(), 2).await;
    let mut zones: Vec<&str> = ps
        .iter()
        .map(|p| p["to"]["zone"].as_str().unwrap())
        .collect();
    zones.sort_unstable();
    assert_eq!(zones, ["z2", "z3"], "where the group has none yet");
    for p in &ps {
        assert_eq!(p["status"], "started", "{p}");
        assert!(p["template"].as_str().unwrap().starts_with("web-"), "{p}");
        assert!(
            p["reason"].as_str().unwrap().contains("heading to 299"),
            "{p}"
        );
    }
    // Each new instance is registered and its provision action is in the log, once.
    let (_, out, _) = ctl(&ep, &["--output", "json", "actions"]);
    let actions = json(&out);
    let provisions: Vec<&Value> = actions
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "provision")
        .collect();
    assert_eq!(provisions.len(), 2, "{out}");
    let provision_of = |instance: &str| -> String {
        let a = provisions
            .iter()
            .find(|a| a["params"]["shadow"] == instance)
            .unwrap_or_else(|| panic!("no provision for {instance}: {out}"));
        assert_eq!(a["target"], instance, "{a}");
        a["id"].as_str().unwrap().to_owned()
    };
    let ids = component_ids(&cluster.addr(1), false).await.unwrap();
    assert!(ids.contains(&"web.scale-1".to_owned()) && ids.contains(&"web.scale-2".to_owned()));

    // This test is the orchestrator: one comes up, the other does not.
    let ok = provision_of("web.scale-1");
    let failed = provision_of("web.scale-2");
    let (code, _, err) = ctl(
        &ep,
        &["action", "report", &ok, "--orchestrator", "test-orch"],
    );
    assert_eq!(code, 0, "{err}");
    let args = [
        "action",
        "report",
        &failed,
        "--orchestrator",
        "test-orch",
        "--failed",
        "no port left",
    ];
    let (code, _, err) = ctl(&ep, &args);
    assert_eq!(code, 0, "{err}");

    let weights = eventually(
        "web.scale-1 in the weights",
        Duration::from_secs(20),
        || {
            let ep = ep.clone();
            async move {
                let (_, out, _) = ctl(&ep, &["--output", "json", "weights", "get", "web"]);
                let w: Value = serde_json::from_str(&out).ok()?;
                w.get("web.scale-1").is_some().then_some(w)
            }
        },
    )
    .await;
    assert_eq!(weights["web.scale-1"], 33, "{weights}");
    let sum: u64 = weights
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(sum, 100, "{weights}");
    let set = first_action(&ep, "set_weights").await;
    assert!(
        set["params"]["weights"]
            .as_str()
            .unwrap()
            .contains("web.scale-1=33"),
        "{set}"
    );
    // The failed one is forgotten, its plan expired with the reason, and a new plan (a new
    // name) takes its place: the load still wants four.
    let ps = scale_plans(ep.clone(), 3).await;
    let expired = ps.iter().find(|p| p["component"] == "web.scale-2").unwrap();
    assert_eq!(expired["status"], "expired", "{expired}");
    assert!(
        expired["history"].as_array().unwrap().last().unwrap()["note"]
            .as_str()
            .unwrap()
            .contains("no port left"),
        "{expired}"
    );
    assert!(ps.iter().any(|p| p["component"] == "web.scale-3"), "{ps:?}");
    let ids = component_ids(&cluster.addr(1), false).await.unwrap();
    assert!(!ids.contains(&"web.scale-2".to_owned()), "{ids:?}");
    drop(cluster);
}

/// A batch a peer sends on carries how far that peer had applied the replicated state; the
/// receiver waits to have applied as far before judging it, so a component registered just
/// before its first samples is taken there, not refused as unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_batch_is_judged_after_the_registration_its_sender_had_applied() {
    use pb::telemetry_client::TelemetryClient;
    use pb::topology_client::TopologyClient;
    // One forward slot, so a waiting forward shows as a refused second one.
    let (cluster, _) =
        single_node("[telemetry]\nmax_inflight_batches = 1\nforward_catch_up_ms = 60000\n").await;
    let addr = cluster.addr(1);
    // The leader's own first writes (the model, the shard map) are in: the next entry is the
    // registration below.
    let applied = eventually(
        "the node's own writes applied",
        Duration::from_secs(20),
        || {
            let addr = addr.clone();
            async move {
                let s = status(&addr).await?;
                let model = TelemetryClient::new(channel(&addr).await?)
                    .get_model(pb::GetModelRequest {})
                    .await
                    .ok()?
                    .into_inner();
                (s.shard_epoch > 0 && !model.recorded_version.is_empty()).then_some(())?;
                status(&addr).await.map(|s| s.last_applied)
            }
        },
    )
    .await;

    // As if sent on by a peer that had applied one entry more: the registration.
    let waiting = spawn_forward(
        &addr,
        vec![sample("late-1", "latency_ms", 1000, 5.0)],
        applied + 1,
    );
    wait_forward_slots_full(&addr).await;
    let registered = TopologyClient::new(channel(&addr).await.expect("channel"))
        .upsert_component(pb::UpsertComponentRequest {
            component: Some(component("late-1", "web")),
        })
        .await
        .expect("register late-1")
        .into_inner();
    assert_eq!(
        registered.log_index,
        applied + 1,
        "another entry came between: the test's premise does not hold"
    );
    let summary = waiting.await.unwrap().expect("forward").into_inner();
    assert_eq!(summary.accepted, 1, "{summary:?}");
    assert_eq!(summary.unknown_component, 0, "{summary:?}");
}

/// A real Prometheus (Debian's, installed by `make deps`) remote-writes into a node: it
/// scrapes its own `/metrics` with a `component` label and sends the samples on, and the
/// component's forecast is built from them. Proves the receiver takes what a real sender
/// sends (protocol 1.0 headers, snappy, its batching), not only what our own client writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_remote_writes_into_a_node() {
    let [rw_port, prom_port] = free_ports(2)[..] else {
        unreachable!()
    };
    let extra = Box::leak(
        format!("[telemetry]\ntick_ms = 50\nremote_write_listen = \"127.0.0.1:{rw_port}\"\n")
            .into_boxed_str(),
    );
    let (_cluster, ep) = single_node(extra).await;
    let (code, _, err) = ctl(
        &ep,
        &[
            "component",
            "register",
            "prom-self",
            "--zone",
            "z",
            "--rack",
            "r",
            "--host",
            "h",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let dir = tempfile::TempDir::new().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n\
             scrape_configs:\n  - job_name: self\n    static_configs:\n      - targets: \
             [\"127.0.0.1:{prom_port}\"]\n        labels:\n          component: prom-self\n\
             remote_write:\n  - url: http://127.0.0.1:{rw_port}/api/v1/write\n    \
             queue_config:\n      batch_send_deadline: 1s\n"
        ),
    )
    .unwrap();
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            self.0.kill().ok();
            self.0.wait().ok();
        }
    }
    let _prometheus = Killed(
        std::process::Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("prometheus (Debian's `prometheus`; `make deps` installs it)"),
    );
    // A forecast, then a later one: the samples keep coming, scrape after scrape.
    let at = |after: i64| {
        let ep = ep.clone();
        async move {
            let (_, out, _) = ctl(&ep, &["--output", "json", "forecast", "prom-self"]);
            let f: Value = serde_json::from_str(&out).ok()?;
            f["hps"].as_f64()?;
            f["at_ms"].as_i64().filter(|&t| t > after)
        }
    };
    let first = eventually(
        "prom-self's first forecast",
        Duration::from_secs(60),
        || at(0),
    )
    .await;
    eventually("a later forecast", Duration::from_secs(60), || at(first)).await;
}

//! The sample service: state replication, faults and their metrics, in process and as a
//! real process.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use augur_agent::{parse_metrics, Instances, SampleConfig, SampleServer, Snapshot};
use common::{eventually, sample_spec};

fn config(name: &str) -> SampleConfig {
    SampleConfig {
        name: name.to_owned(),
        seed: 7,
    }
}

async fn metrics(addr: std::net::SocketAddr) -> BTreeMap<String, f64> {
    let response = augur_agent::get(addr, "/metrics").await.unwrap();
    assert_eq!(response.status, 200);
    parse_metrics(&response.text())
}

#[tokio::test]
async fn t30_state_snapshot_round_trips_to_a_shadow() {
    let primary = SampleServer::start(config("primary")).await.unwrap();
    let shadow = SampleServer::start(config("shadow")).await.unwrap();
    let (p, s) = (primary.addr(), shadow.addr());

    for (key, value) in [("a", "1"), ("b", "2"), ("a", "3")] {
        let r = augur_agent::put(p, &format!("/kv/{key}"), value)
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let r = augur_agent::get(p, "/kv/a").await.unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "3"));
    assert_eq!(r.header("x-instance"), Some("primary"));

    let snapshot = augur_agent::get(p, "/state").await.unwrap();
    let parsed: Snapshot = serde_json::from_slice(&snapshot.body).unwrap();
    assert_eq!(parsed.version, 3);
    assert_eq!(parsed.entries.len(), 2);

    let r = augur_agent::post(s, "/state", snapshot.body.clone())
        .await
        .unwrap();
    assert_eq!(r.text(), r#"{"applied":true,"version":3}"#);
    let r = augur_agent::get(s, "/kv/a").await.unwrap();
    assert_eq!(
        (r.text().as_str(), r.header("x-instance")),
        ("3", Some("shadow"))
    );
    assert_eq!(
        augur_agent::get(s, "/state").await.unwrap().body,
        snapshot.body
    );

    // An older snapshot does not overwrite newer state.
    let stale = serde_json::to_vec(&Snapshot {
        version: 1,
        entries: BTreeMap::from([("a".to_owned(), "old".to_owned())]),
    })
    .unwrap();
    let r = augur_agent::post(s, "/state", stale).await.unwrap();
    assert_eq!(r.text(), r#"{"applied":false,"version":3}"#);
    assert_eq!(augur_agent::get(s, "/kv/a").await.unwrap().text(), "3");

    let r = augur_agent::post(s, "/state", "not json").await.unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(augur_agent::get(s, "/kv/zz").await.unwrap().status, 404);
    assert_eq!(augur_agent::get(s, "/nope").await.unwrap().status, 404);
}

#[tokio::test]
async fn t30_slow_adds_fixed_latency_seen_in_metrics() {
    let server = SampleServer::start(config("slow")).await.unwrap();
    let addr = server.addr();
    let before = augur_agent::get(addr, "/").await.unwrap();
    assert_eq!(before.text(), "hello from slow\n");
    assert_eq!(
        augur_agent::post(addr, "/slow?ms=120", "")
            .await
            .unwrap()
            .status,
        200
    );
    let r = augur_agent::get(addr, "/").await.unwrap();
    assert!(r.latency >= Duration::from_millis(120), "{:?}", r.latency);
    let m = metrics(addr).await;
    assert_eq!(m["requests_total"], 2.0);
    assert_eq!(m["errors_total"], 0.0);
    assert!(m["latency_p99_seconds"] >= 0.12, "{m:?}");
    assert_eq!(m["degrade_level"], 0.0);
    assert_eq!(
        augur_agent::post(addr, "/slow?ms=x", "")
            .await
            .unwrap()
            .status,
        400
    );
}

#[tokio::test]
async fn t30_degrade_shows_in_metrics_then_the_process_exits() {
    let mut instances = Instances::new(sample_spec(20));
    let inst = instances.start("victim").await.unwrap();
    let addr = inst.addr();
    let healthy = metrics(addr).await;
    assert_eq!(healthy["degrade_level"], 0.0);

    // The crash far off, so the checks below do not race it; the scheduled crash itself is
    // shown on an instance of its own at the end.
    let r = inst
        .post("/degrade?ramp_s=1&crash_after_s=600", "")
        .await
        .unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    // Visible at once, before any request is slow or failing.
    let m = metrics(addr).await;
    assert!(m["degrade_level"] >= 0.1, "{m:?}");
    assert!(m["memory_bytes"] > healthy["memory_bytes"], "{m:?}");

    // Load in rounds of 10 concurrent requests until latency and errors have risen.
    let degraded = eventually(
        "latency and errors to rise",
        Duration::from_secs(3),
        || async {
            let round: Vec<_> = (0..10).map(|_| augur_agent::get(addr, "/")).collect();
            for response in futures_join(round).await {
                let status = response.ok()?.status;
                assert!(status == 200 || status == 500, "{status}");
            }
            let m = metrics(addr).await;
            (m["errors_total"] > 0.0 && m["latency_p99_seconds"] >= 0.1).then_some(m)
        },
    )
    .await;
    assert!(
        degraded["requests_total"] > degraded["errors_total"],
        "{degraded:?}"
    );
    // After the ramp the health check fails too; the reactive baseline sees only this.
    eventually("health 503", Duration::from_secs(3), || async {
        let r = augur_agent::get(addr, "/health").await.ok()?;
        (r.status == 503).then_some(())
    })
    .await;

    // The degrade's scheduled crash: exits with code 1 when it is due.
    let timed = instances.start("timed").await.unwrap();
    let r = timed
        .post("/degrade?ramp_s=0&crash_after_s=1", "")
        .await
        .unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    let status = instances
        .wait_exit("timed", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(status.code(), Some(1), "{status}");
}

#[tokio::test]
async fn t30_crash_exits_at_once_with_code_1() {
    let mut instances = Instances::new(sample_spec(21));
    let inst = instances.start("crashy").await.unwrap();
    // A crash answers nothing: the request fails with the connection.
    assert!(inst.post("/crash", "").await.is_err());
    let status = instances
        .wait_exit("crashy", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(status.code(), Some(1), "{status}");

    // In process, `serve` returns the code and drops the connections.
    let server = SampleServer::start(config("inproc")).await.unwrap();
    let addr = server.addr();
    assert!(augur_agent::post(addr, "/crash", "").await.is_err());
    assert_eq!(server.wait_exit().await.unwrap(), 1);
    assert!(augur_agent::get(addr, "/health").await.is_err());
}

/// Runs the futures concurrently (no `futures` dependency needed for this one use).
async fn futures_join<F: std::future::Future + Send + 'static>(futures: Vec<F>) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(handles.len());
    for handle in handles {
        outputs.push(handle.await.unwrap());
    }
    outputs
}

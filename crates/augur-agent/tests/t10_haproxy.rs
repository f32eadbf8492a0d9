//! A real HAProxy in front of real `augur-sample` processes, steered through the runtime API.

mod common;

use std::time::Duration;

use augur_agent::{
    free_local_port, Action, Desired, DesiredServer, HaproxyClient, HaproxyConfig, HaproxyError,
    HaproxyProcess, HealthCheck, Instances, ServerOptions, State,
};
use common::{count_by_instance, eventually, sample_spec};
use tempfile::TempDir;

struct Fixture {
    haproxy: HaproxyProcess,
    client: HaproxyClient,
    instances: Instances,
    // Last: the directory outlives the processes using it.
    _dir: TempDir,
}

/// HAProxy with backend `app` and one static server (weight 10) per name, each a sample
/// process.
async fn fixture(slot: u16, names: &[&str], check: Option<HealthCheck>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut instances = Instances::new(sample_spec(slot));
    let mut config = HaproxyConfig::new(free_local_port().unwrap());
    config.health_check = check;
    for name in names {
        let instance = instances.start(name).await.unwrap();
        config = config.server(*name, instance.addr(), 10);
    }
    let haproxy = HaproxyProcess::start(config, dir.path())
        .await
        .unwrap_or_else(|e| panic!("starting haproxy (install it: apt-get install haproxy): {e}"));
    let client = haproxy.client();
    Fixture {
        haproxy,
        client,
        instances,
        _dir: dir,
    }
}

#[tokio::test]
async fn t10_traffic_reaches_both_servers_and_shows_in_stats() {
    let f = fixture(0, &["s1", "s2"], None).await;
    let counts = count_by_instance(f.haproxy.frontend_addr(), 200).await;
    assert_eq!(counts.get("s1"), Some(&100), "{counts:?}");
    assert_eq!(counts.get("s2"), Some(&100), "{counts:?}");

    let stats = f.client.show_stat().await.unwrap();
    for name in ["s1", "s2"] {
        let row = stats
            .iter()
            .find(|r| r.is_server() && r.pxname == "app" && r.svname == name)
            .unwrap_or_else(|| panic!("no stat row for {name}: {stats:?}"));
        assert_eq!(row.stot, 100, "{row:?}");
        assert_eq!((row.hrsp_2xx, row.hrsp_5xx), (100, 0), "{row:?}");
        assert_eq!(row.uweight, Some(10));
        assert_eq!(row.status, "no check");
    }
    let info = f.client.show_info().await.unwrap();
    assert_eq!(Some(info.pid), f.haproxy.pid());
}

#[tokio::test]
async fn t10_weight_zero_moves_all_traffic_to_the_other_server() {
    let f = fixture(1, &["s1", "s2"], None).await;
    f.client.set_weight("app", "s1", 0).await.unwrap();
    let weight = f.client.get_weight("app", "s1").await.unwrap();
    assert_eq!((weight.current, weight.initial), (0, 10));

    let counts = count_by_instance(f.haproxy.frontend_addr(), 200).await;
    assert_eq!(counts.get("s2"), Some(&200), "{counts:?}");

    f.client.set_weight("app", "s1", 10).await.unwrap();
    let counts = count_by_instance(f.haproxy.frontend_addr(), 20).await;
    assert_eq!(counts.len(), 2, "{counts:?}");
}

#[tokio::test]
async fn t10_drain_moves_new_traffic_away() {
    let f = fixture(2, &["s1", "s2"], None).await;
    f.client.set_state("app", "s2", State::Drain).await.unwrap();
    let servers = f.client.servers("app").await.unwrap();
    let states: Vec<_> = servers
        .iter()
        .map(|s| (s.name.as_str(), s.state()))
        .collect();
    assert_eq!(states, [("s1", State::Ready), ("s2", State::Drain)]);

    let counts = count_by_instance(f.haproxy.frontend_addr(), 200).await;
    assert_eq!(counts.get("s1"), Some(&200), "{counts:?}");

    f.client.set_state("app", "s2", State::Ready).await.unwrap();
    let counts = count_by_instance(f.haproxy.frontend_addr(), 20).await;
    assert_eq!(counts.len(), 2, "{counts:?}");
}

#[tokio::test]
async fn t10_server_added_at_runtime_takes_traffic_until_deleted() {
    let mut f = fixture(3, &["s1"], None).await;
    let s3 = f.instances.start("s3").await.unwrap();
    let s4 = f.instances.start("s4").await.unwrap();
    f.client
        .add_ready_server("app", "s3", s3.addr(), &ServerOptions::weight(10))
        .await
        .unwrap();
    // Plain `add server` leaves the server in maintenance: no traffic.
    f.client
        .add_server("app", "s4", s4.addr(), 10)
        .await
        .unwrap();

    let servers = f.client.servers("app").await.unwrap();
    let view: Vec<_> = servers
        .iter()
        .map(|s| (s.name.as_str(), s.addr, s.weight, s.state()))
        .collect();
    assert_eq!(
        view,
        [
            (
                "s1",
                f.instances.get("s1").unwrap().addr(),
                10,
                State::Ready
            ),
            ("s3", s3.addr(), 10, State::Ready),
            ("s4", s4.addr(), 10, State::Maint),
        ]
    );
    let counts = count_by_instance(f.haproxy.frontend_addr(), 100).await;
    assert_eq!(
        (counts.get("s1"), counts.get("s3"), counts.get("s4")),
        (Some(&50), Some(&50), None),
        "{counts:?}"
    );

    f.client.del_server("app", "s3").await.unwrap();
    f.client.del_server("app", "s4").await.unwrap();
    let names: Vec<_> = f
        .client
        .servers("app")
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["s1"]);
    let counts = count_by_instance(f.haproxy.frontend_addr(), 20).await;
    assert_eq!(counts.get("s1"), Some(&20), "{counts:?}");
}

#[tokio::test]
async fn t10_runtime_server_with_health_check_comes_up() {
    let check = HealthCheck {
        inter: Duration::from_millis(100),
        fall: 3,
        rise: 2,
    };
    let mut f = fixture(4, &["s1"], Some(check.clone())).await;
    let s2 = f.instances.start("s2").await.unwrap();
    let options = ServerOptions {
        weight: 10,
        check: Some(check),
    };
    f.client
        .add_ready_server("app", "s2", s2.addr(), &options)
        .await
        .unwrap();
    let client = f.client.clone();
    let status = eventually("s2 UP with L7OK", Duration::from_secs(10), || {
        let client = client.clone();
        async move {
            let stats = client.show_stat().await.ok()?;
            let row = stats.into_iter().find(|r| r.svname == "s2")?;
            (row.status == "UP").then_some(row)
        }
    })
    .await;
    assert_eq!(status.check_status.as_deref(), Some("L7OK"));
}

#[tokio::test]
async fn t10_bad_requests_give_clear_errors() {
    let f = fixture(5, &["s1"], None).await;
    let err = f.client.set_weight("app", "nope", 5).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "haproxy rejected `set server app/nope weight 5`: No such server."
    );
    assert!(!err.is_retriable());
    let err = f
        .client
        .set_state("other", "s1", State::Ready)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "haproxy rejected `set server other/s1 state ready`: No such backend."
    );
    let err = f.client.servers("other").await.unwrap_err();
    assert!(
        matches!(err, HaproxyError::Rejected { ref message, .. } if message == "Can't find backend.")
    );
    let addr = f.instances.get("s1").unwrap().addr();
    let err = f.client.add_server("app", "s1", addr, 1).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "haproxy rejected `add server app/s1 {addr} weight 1`: \
             Already exists a server with the same name in backend."
        )
    );
    let err = f.client.del_server("app", "nope").await.unwrap_err();
    assert!(
        matches!(err, HaproxyError::Rejected { ref message, .. } if message == "No such server.")
    );

    // Refused before anything reaches HAProxy.
    let err = f
        .client
        .set_weight("app", "s1 weight 0", 5)
        .await
        .unwrap_err();
    assert!(
        matches!(err, HaproxyError::InvalidName { what: "server", .. }),
        "{err}"
    );
    let err = f.client.set_weight("app", "s1", 257).await.unwrap_err();
    assert!(matches!(err, HaproxyError::InvalidWeight { .. }), "{err}");
    assert_eq!(f.client.get_weight("app", "s1").await.unwrap().current, 10);
}

#[tokio::test]
async fn t10_reload_then_reconcile_restores_runtime_servers() {
    let mut f = fixture(6, &["s1"], None).await;
    let s2 = f.instances.start("s2").await.unwrap();
    let s3 = f.instances.start("s3").await.unwrap();
    let mut desired = Desired::new("app");
    let s2_want = DesiredServer {
        addr: s2.addr(),
        weight: 7,
        state: State::Ready,
    };
    let s3_want = DesiredServer {
        addr: s3.addr(),
        weight: 3,
        state: State::Drain,
    };
    desired.set("s2", s2_want);
    desired.set("s3", s3_want);
    let added = desired.reconcile(&f.client).await.unwrap();
    assert_eq!(
        added,
        [
            Action::Add {
                name: "s2".into(),
                server: s2_want
            },
            Action::Add {
                name: "s3".into(),
                server: s3_want
            },
        ]
    );
    assert_eq!(desired.reconcile(&f.client).await.unwrap(), []);

    let pid_before = f.client.show_info().await.unwrap().pid;
    f.haproxy.reload().await.unwrap();
    let pid_after = f.client.show_info().await.unwrap().pid;
    assert_ne!(pid_before, pid_after, "a reload is visible as a new pid");
    let names: Vec<_> = f
        .client
        .servers("app")
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["s1"], "runtime servers are gone after a reload");

    assert_eq!(desired.reconcile(&f.client).await.unwrap(), added);
    let servers = f.client.servers("app").await.unwrap();
    let view: Vec<_> = servers
        .iter()
        .map(|s| (s.name.as_str(), s.weight, s.state()))
        .collect();
    assert_eq!(
        view,
        [
            ("s1", 10, State::Ready),
            ("s2", 7, State::Ready),
            ("s3", 3, State::Drain)
        ]
    );
    assert_eq!(f.client.get_weight("app", "s2").await.unwrap().current, 7);
    // s1 (10) and s2 (7) share the traffic; drained s3 gets none.
    // Weighted round robin is smooth, not exact over an arbitrary window: ~100/70.
    let counts = count_by_instance(f.haproxy.frontend_addr(), 170).await;
    let s2_share = counts.get("s2").copied().unwrap_or(0);
    assert!((65..=75).contains(&s2_share), "{counts:?}");
    assert_eq!(counts.get("s3"), None, "{counts:?}");
}

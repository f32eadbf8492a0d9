//! Basics across real processes: the shipped three-node configs elect and replicate; a full
//! restart keeps the state; a fourth node joins as a learner and is promoted.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use augur_cli::Client;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_three_node_configs_elect_a_leader_and_replicate() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../cluster-configs/three-node");
    let configs: Vec<PathBuf> = (1..=3)
        .map(|i| root.join(format!("node{i}.toml")))
        .collect();
    let cluster = Cluster::from_configs(&configs);
    let leader = cluster.wait_leader().await;

    let mut client = Client::new(cluster.endpoints());
    for i in 0..10 {
        assert!(register(&mut client, &format!("c{i}")).await);
    }
    let leader_status = status(&cluster.addr(leader)).await.unwrap();
    for id in 1..=3 {
        cluster.wait_applied(id, leader_status.last_applied).await;
        let ids = component_ids(&cluster.addr(id), true).await.unwrap();
        assert_eq!(ids.len(), 10, "node {id} has every component");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_restart_keeps_state_and_a_fourth_node_joins_and_is_promoted() {
    let mut cluster = Cluster::start(
        3,
        RaftKnobs {
            snapshot_every: 20,
            keep_after_snapshot: 5,
            ..RaftKnobs::default()
        },
    );
    cluster.wait_leader().await;
    let mut client = Client::new(cluster.endpoints());
    for i in 0..50 {
        assert!(register(&mut client, &format!("c{i}")).await);
    }
    for id in 1..=3 {
        cluster.kill(id);
    }
    for id in 1..=3 {
        cluster.restart(id);
    }
    let leader = cluster.wait_leader().await;
    let _ = leader;
    let mut ids = linearizable_ids(cluster.endpoints()).await;
    ids.sort();
    let mut want: Vec<String> = (0..50).map(|i| format!("c{i}")).collect();
    want.sort();
    assert_eq!(ids, want, "state intact after all nodes restarted");

    // A fourth node: learner first, then voter, through the CLI as an operator would.
    let addr4 = cluster.add_node(4);
    let endpoint = cluster.endpoints()[0..3].join(",");
    let (code, _, err) = ctl(&endpoint, &["add-learner", "4", &addr4]);
    assert_eq!(code, 0, "add-learner failed: {err}");
    let (code, _, err) = ctl(&endpoint, &["promote", "4"]);
    assert_eq!(code, 0, "promote failed: {err}");
    let (code, out, _) = ctl(&endpoint, &["members", "--output", "json"]);
    assert_eq!(code, 0);
    let members: serde_json::Value = serde_json::from_str(&out).unwrap();
    let voters = members
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["voter"] == true)
        .count();
    assert_eq!(voters, 4, "{out}");
    let leader_status = status(&cluster.addr(cluster.wait_leader().await))
        .await
        .unwrap();
    cluster.wait_applied(4, leader_status.last_applied).await;
    let ids4 = component_ids(&addr4, true).await.unwrap();
    assert_eq!(ids4.len(), 50, "the new node holds the whole state");
}

/// `/metrics` has Raft's term, commit and apply positions, the leader changes and the RPC
/// latencies; a node elected once counts one leader change, however often its metrics move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_exports_its_raft_metrics() {
    let ports = free_ports(2);
    let dir = tempfile::TempDir::new().unwrap();
    let addr = format!("127.0.0.1:{}", ports[0]);
    let metrics: std::net::SocketAddr = format!("127.0.0.1:{}", ports[1]).parse().unwrap();
    let data_dir = dir.path().join("node1");
    let config = dir.path().join("node1.toml");
    let text = node_config(
        1,
        &addr,
        &data_dir,
        &[(1, addr.clone())],
        true,
        RaftKnobs::default(),
    )
    .replacen(
        "[cluster]",
        &format!("metrics_listen = \"{metrics}\"\n[cluster]"),
        1,
    );
    std::fs::write(&config, text).unwrap();
    let mut node = NodeProc::new(1, addr.clone(), config, data_dir);
    node.start();
    let cluster = Cluster {
        nodes: [(1, node)].into(),
        dir,
    };
    cluster.wait_leader().await;
    let mut client = Client::new(cluster.endpoints());
    for i in 0..20 {
        assert!(register(&mut client, &format!("c{i}")).await);
    }
    let st = status(&addr).await.unwrap();
    let (applied, term) = (st.last_applied, st.term);
    // A gauge's value, from the exposition's `name value` line.
    fn gauge(body: &str, name: &str) -> Option<f64> {
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }
    let body = eventually(
        "metrics at the last write",
        Duration::from_secs(10),
        || async move {
            let r = augur_agent::get(metrics, "/metrics").await.ok()?;
            let body = String::from_utf8_lossy(&r.body).into_owned();
            (gauge(&body, "augur_raft_last_applied")? >= applied as f64).then_some(body)
        },
    )
    .await;
    let value = |name: &str| gauge(&body, name);
    assert_eq!(value("augur_raft_term"), Some(term as f64), "{body}");
    assert_eq!(value("augur_raft_is_leader"), Some(1.0), "{body}");
    assert_eq!(
        value("augur_raft_leader_changes_total"),
        Some(1.0),
        "one election, one change:\n{body}"
    );
    assert!(body.contains("augur_rpc_duration_seconds"), "{body}");
    assert!(gauge(&body, "augur_raft_apply_lag").is_some(), "{body}");
}

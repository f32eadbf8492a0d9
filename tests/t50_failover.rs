//! Faults across real processes: `kill -9` of the leader under load, catch-up by log and by
//! snapshot, and an action watcher that resumes across a leader change.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use augur_cli::Client;
use augur_proto::pb;
use augur_proto::pb::control_client::ControlClient;
use common::*;

/// Writes components `prefix-0..` until told to stop; records those acknowledged.
fn spawn_writer(
    endpoints: Vec<String>,
    prefix: &'static str,
    acked: Arc<Mutex<Vec<String>>>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut client = Client::new(endpoints);
        let mut i = 0;
        while !*stop.borrow() {
            let id = format!("{prefix}-{i}");
            if register(&mut client, &id).await {
                acked.lock().unwrap().push(id);
            }
            i += 1;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_loses_no_acknowledged_write_and_the_node_catches_up() {
    let mut cluster = Cluster::start(
        3,
        RaftKnobs {
            snapshot_every: 100,
            keep_after_snapshot: 10,
            ..RaftKnobs::default()
        },
    );
    let first = cluster.wait_leader().await;
    let acked = Arc::new(Mutex::new(Vec::new()));

    // Round 1: kill the leader under load; few writes, so it catches up by log.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let writer = spawn_writer(cluster.endpoints(), "a", acked.clone(), stop_rx);
    eventually(
        "20 acknowledged writes",
        std::time::Duration::from_secs(30),
        || {
            let n = acked.lock().unwrap().len();
            async move { (n >= 20).then_some(()) }
        },
    )
    .await;
    let first_term = status(&cluster.addr(first)).await.unwrap().term;
    cluster.kill(first);
    let second = cluster.wait_leader().await;
    // A new election, not a stale answer: the new leader's term is past the killed one's.
    let second_term = status(&cluster.addr(second)).await.unwrap().term;
    assert!(second_term > first_term, "{first_term} -> {second_term}");
    let at_kill = acked.lock().unwrap().len();
    eventually(
        "writes through the new leader",
        std::time::Duration::from_secs(30),
        || {
            let n = acked.lock().unwrap().len();
            async move { (n >= at_kill + 20).then_some(()) }
        },
    )
    .await;
    stop_tx.send(true).unwrap();
    writer.await.unwrap();
    let before_restart = status(&cluster.addr(second)).await.unwrap();
    assert!(
        before_restart.snapshot_index == 0 || before_restart.purged_index == 0,
        "round 1 should not have compacted the log yet: {before_restart:?}"
    );
    cluster.restart(first);
    cluster
        .wait_applied(first, before_restart.last_applied)
        .await;

    // Round 2: kill the new leader, write past a snapshot so the log is compacted beyond
    // what the killed node has; it must catch up by snapshot.
    let killed = second;
    let killed_last = status(&cluster.addr(killed)).await.unwrap().last_log_index;
    cluster.kill(killed);
    let third = cluster.wait_leader().await;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let writer = spawn_writer(cluster.endpoints(), "b", acked.clone(), stop_rx);
    let addr3 = cluster.addr(third);
    eventually(
        "the leader to purge past the killed node's log",
        std::time::Duration::from_secs(60),
        || {
            let addr3 = addr3.clone();
            async move {
                status(&addr3)
                    .await
                    .filter(|s| s.purged_index > killed_last)
                    .map(|_| ())
            }
        },
    )
    .await;
    stop_tx.send(true).unwrap();
    writer.await.unwrap();
    cluster.restart(killed);
    let leader_status = status(&addr3).await.unwrap();
    cluster
        .wait_applied(killed, leader_status.last_applied)
        .await;
    let caught_up = status(&cluster.addr(killed)).await.unwrap();
    assert!(
        caught_up.snapshot_index > killed_last,
        "node {killed} caught up by snapshot: {caught_up:?}, last log before kill {killed_last}"
    );

    // No acknowledged write is lost: every one is in a linearizable read and in every
    // replica's local state.
    let acked: BTreeSet<String> = acked.lock().unwrap().iter().cloned().collect();
    cluster.wait_leader().await;
    // Through the redirect-following client: leadership may still move after the restart.
    let seen: BTreeSet<String> = linearizable_ids(cluster.endpoints())
        .await
        .into_iter()
        .collect();
    let lost: Vec<_> = acked.difference(&seen).collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    for id in 1..=3 {
        let local: BTreeSet<String> = component_ids(&cluster.addr(id), true)
            .await
            .unwrap()
            .into_iter()
            .collect();
        assert!(
            acked.is_subset(&local),
            "node {id} misses acknowledged writes"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn action_watch_resumes_after_a_leader_change_without_gap_or_duplicate() {
    let mut cluster = Cluster::start(3, RaftKnobs::default());
    let leader = cluster.wait_leader().await;
    let mut client = Client::new(cluster.endpoints());
    assert!(register(&mut client, "web-1").await);

    // The watcher is `augur ctl actions --follow`, pointed at the leader first.
    let mut endpoints = vec![cluster.addr(leader)];
    endpoints.extend(
        cluster
            .endpoints()
            .into_iter()
            .filter(|e| *e != cluster.addr(leader)),
    );
    let watcher = Command::new(AUGUR)
        .args([
            "ctl",
            "--output",
            "json",
            "--endpoint",
            &endpoints.join(","),
            "actions",
            "--follow",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed however the test ends, a panic included.
    let mut watcher = KillOnDrop(watcher);
    let (line_tx, mut line_rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let stdout = watcher.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            if line_tx.send(v["seq"].as_u64().unwrap()).is_err() {
                return;
            }
        }
    });

    let mut seen = Vec::new();
    for n in 0..30 {
        append(&mut client, n).await;
    }
    while seen.len() < 30 {
        seen.push(next_seq(&mut line_rx, seen.len()).await);
    }
    cluster.kill(leader);
    cluster.wait_leader().await;
    for n in 30..60 {
        append(&mut client, n).await;
    }
    // A retried request id appends nothing new.
    assert_eq!(append(&mut client, 59).await, 60);
    while seen.len() < 60 {
        seen.push(next_seq(&mut line_rx, seen.len()).await);
    }
    drop(watcher);
    assert_eq!(
        seen,
        (1..=60).collect::<Vec<u64>>(),
        "every action once, in order"
    );
}

/// Appends a drain of web-1 with request id `req-N`; answers its sequence number.
async fn append(client: &mut Client, n: usize) -> u64 {
    let req = pb::AppendActionRequest {
        request_id: format!("req-{n}"),
        kind: pb::ActionKind::Drain as i32,
        target: "web-1".into(),
        params: Default::default(),
    };
    client
        .call(move |ch| {
            let req = req.clone();
            async move { ControlClient::new(ch).append_action(req).await }
        })
        .await
        .unwrap()
        .into_inner()
        .seq
}

/// A child process killed (and reaped) when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

/// The watcher's next action: one it misses must fail the test, not hang it.
async fn next_seq(rx: &mut tokio::sync::mpsc::UnboundedReceiver<u64>, after: usize) -> u64 {
    tokio::time::timeout(std::time::Duration::from_secs(60), rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no action after the {after} seen in 60 s"))
        .expect("the watcher's output ended")
}

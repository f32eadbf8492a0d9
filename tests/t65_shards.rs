//! The shard map across real processes: the leader spreads the components' shards over the
//! three nodes, each with an owner and a standby; samples pushed to one node reach both; when
//! an owning node is killed mid-stream, its components' forecasts go on from the standby's
//! warm windows and the leader hands the dead node's shards over.

mod common;

use std::time::Duration;

use augur_predict::lstm::SeededRng;
use augur_proto::pb;
use augur_proto::pb::telemetry_client::TelemetryClient;
use common::*;

const COMPONENTS: usize = 12;

fn ids() -> Vec<String> {
    (0..COMPONENTS).map(|i| format!("svc-{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_killed_mid_stream_hands_its_components_to_a_warm_standby() {
    // The leader spreads the shards: every member owns some and stands by for others.
    let (mut cluster, leader, entry) = spread_and_registered(RaftKnobs::default()).await;
    // No wait for the other nodes to apply the registrations: a forwarded batch carries the
    // leader's applied position, and its receiver catches up to it before judging the samples
    // (a component registered just before its first samples is not refused as unknown).

    // 150 steps of every component, all pushed to the leader.
    let mut rng = SeededRng::new(7);
    let ids = ids();
    let before: Vec<pb::SampleBatch> = (0..150).map(|k| fleet_step(&ids, k, &mut rng)).collect();
    let summary = push_to(&entry, before).await;
    assert_eq!(summary.accepted, 150 * COMPONENTS as u64 * 2, "{summary:?}");
    assert_eq!(summary.lost + summary.unknown_component, 0, "{summary:?}");

    // Each component is scored by its owner; some are owned by the other two nodes.
    let mut served = Vec::new();
    for id in ids.clone() {
        let f = eventually(
            &format!("a forecast of {id}"),
            Duration::from_secs(20),
            || {
                let (entry, id) = (entry.clone(), id.clone());
                async move { forecast_via(&entry, &id).await.filter(|f| f.samples >= 150) }
            },
        )
        .await;
        served.push((id, f.node));
    }
    let (victim_component, victim) = served
        .iter()
        .find(|(_, node)| *node != leader)
        .cloned()
        .expect("a component owned by a follower");
    assert!(
        served.iter().any(|(_, n)| *n == leader),
        "the leader owns some too: {served:?}"
    );

    // Kill its owner mid-stream and keep pushing to the leader.
    let mut k = 150;
    let t = kill_and_follow(
        &mut cluster,
        victim,
        &entry,
        &victim_component,
        &ids,
        &mut k,
        &mut rng,
    )
    .await;
    eprintln!(
        "forecasts of {victim_component} resumed on node {} {} ms after node {victim} was killed ({} steps)",
        t.forecast.node,
        t.resumed.as_millis(),
        t.steps
    );
    // Warm: the standby's window holds what was pushed before the kill.
    assert!(
        t.forecast.samples > t.steps as u64 + 100,
        "the standby's window was cold: {} samples",
        t.forecast.samples
    );

    // The leader notices the dead node and moves its shards to their standbys.
    member_until(
        "the dead node's shards handed over",
        &entry,
        victim,
        Duration::from_secs(20),
        |dead| dead.shards_owned == 0 && dead.shards_standby == 0,
    )
    .await;
    // Samples go on being taken in full, and the fleet's list has every component, each
    // forecast up to date.
    let summary = push_to(&entry, vec![fleet_step(&ids, k, &mut rng)]).await;
    assert_eq!(summary.accepted, COMPONENTS as u64 * 2, "{summary:?}");
    let listed = eventually("every component listed", Duration::from_secs(20), || {
        let entry = entry.clone();
        async move {
            let ch = channel(&entry).await?;
            let rows = TelemetryClient::new(ch)
                .list_at_risk(pb::ListAtRiskRequest {
                    limit: 100,
                    min_risk: 0.0,
                    this_node_only: false,
                    shards: vec![],
                })
                .await
                .ok()?
                .into_inner()
                .forecasts;
            // Warm: each forecast comes from a node that took the component's samples since
            // before the kill, or (once the next map evens the owners out) from its standby of
            // the map before, warmed from the owner's window when it took the role: a full
            // window of 64 steps at least. No sample is pushed while this waits.
            let warm = |f: &pb::Forecast| f.at_ms == k * 1000 && f.samples >= 64;
            (rows.len() == COMPONENTS && rows.iter().all(warm)).then_some(rows)
        }
    })
    .await;
    assert!(
        listed.iter().all(|f| f.samples >= 64),
        "all warm: {listed:?}"
    );
}

/// A member that has applied no shard map yet cannot tell which node owns a sample's
/// component: here the first node of a new three-node cluster, alone (no quorum, so no leader
/// and no map), and a node not yet added to any cluster. Each refuses a push with
/// `UNAVAILABLE` and a retry hint instead of taking samples the map may not give it; the
/// member takes the same push once the others are up and the leader has recorded a map.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_without_a_shard_map_refuses_samples_until_it_has_one() {
    let mut cluster = Cluster::configured(3, RaftKnobs::default());
    cluster.restart(1);
    let first = cluster.addr(1);
    let alone = eventually(
        "node 1 up, knowing its two peers",
        Duration::from_secs(30),
        || async { status(&first).await.filter(|s| s.members.len() == 3) },
    )
    .await;
    assert_eq!((alone.shard_epoch, alone.leader_id), (0, None), "{alone:?}");

    let mut rng = SeededRng::new(5);
    let step = fleet_step(&ids(), 1, &mut rng);
    let err = TelemetryClient::new(channel(&first).await.expect("channel"))
        .push(futures::stream::iter(vec![step.clone()]))
        .await
        .expect_err("no map, no owners");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(err.message().contains("no shard map"), "{err:?}");
    assert!(err.metadata().get("retry-after-ms").is_some(), "{err:?}");

    // Nor does a node not yet added to any cluster (its membership is empty).
    let outsider = cluster.add_node(4);
    eventually("node 4 up", Duration::from_secs(30), || async {
        status(&outsider).await
    })
    .await;
    let err = TelemetryClient::new(channel(&outsider).await.expect("channel"))
        .push(futures::stream::iter(vec![step.clone()]))
        .await
        .expect_err("not a member of any cluster yet");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    cluster.kill(4);

    cluster.restart(2);
    cluster.restart(3);
    let leader = cluster.wait_leader().await;
    shards_spread(&cluster.addr(leader)).await;
    let mut client = augur_cli::Client::new(cluster.endpoints());
    for id in ids() {
        assert!(register(&mut client, &id).await, "register {id}");
    }
    cluster.wait_all_applied(leader).await;
    let summary = push_to(&first, vec![step]).await;
    assert_eq!(summary.accepted, 2 * COMPONENTS as u64, "{summary:?}");
    // All taken (nothing of the refused push was kept to count as a duplicate), and each
    // component's owner and standby scored it.
    holders_scored(&cluster, 1000, 1).await;
}

/// Three nodes with `knobs`, once the leader has spread the shards over them and every
/// component of [`ids`] is registered: the cluster, the leader's id and its address.
async fn spread_and_registered(knobs: RaftKnobs) -> (Cluster, u64, String) {
    let cluster = Cluster::start(3, knobs);
    let leader = cluster.wait_leader().await;
    let entry = cluster.addr(leader);
    shards_spread(&entry).await;
    let mut client = augur_cli::Client::new(cluster.endpoints());
    for id in ids() {
        assert!(register(&mut client, &id).await, "register {id}");
    }
    (cluster, leader, entry)
}

/// Waits for a settled shard map over all three nodes: owners and standby roles even to
/// within one shard (the leader changes such a map no more), and every node warm at it.
/// A map still moving would hand standby roles to nodes that hold only a warmed window.
async fn shards_spread(entry: &str) {
    eventually(
        "a settled shard map over all three nodes",
        Duration::from_secs(30),
        || async move {
            let s = status(entry).await?;
            let even = |count: fn(&pb::Member) -> u32| {
                let counts: Vec<u32> = s.members.iter().map(count).collect();
                let (lo, hi) = (counts.iter().min()?, counts.iter().max()?);
                (*lo > 0 && hi - lo <= 1).then_some(())
            };
            (s.shard_epoch > 0 && s.members.len() == 3).then_some(())?;
            even(|m| m.shards_owned)?;
            even(|m| m.shards_standby)?;
            for m in &s.members {
                let ms = status(&m.addr).await?;
                (ms.shard_epoch == s.shard_epoch && ms.warm_shard_epoch == s.shard_epoch)
                    .then_some(())?;
            }
            Some(())
        },
    )
    .await;
}

/// Waits until both holders of every component of [`ids`] (its owner and its standby) have
/// scored its sample at `at_ms`, with at least `min_samples` samples taken.
async fn holders_scored(cluster: &Cluster, at_ms: i64, min_samples: u64) {
    let nodes: Vec<String> = (1..=3).map(|n| cluster.addr(n)).collect();
    for id in ids() {
        eventually(
            &format!("{id}'s owner and standby at {at_ms} ms"),
            Duration::from_secs(20),
            || {
                let (id, nodes) = (id.clone(), nodes.clone());
                async move {
                    let mut holders = 0;
                    for n in &nodes {
                        if let Some(f) = own_forecast(n, &id).await {
                            if f.at_ms == at_ms && f.samples >= min_samples {
                                holders += 1;
                            }
                        }
                    }
                    (holders == 2).then_some(())
                }
            },
        )
        .await;
    }
}

/// `node`'s own forecast of `component` (as owner or standby), if it has one.
async fn own_forecast(node: &str, component: &str) -> Option<pb::Forecast> {
    forecast_from(node, component, true).await
}

/// A node restarted empty warms its windows from the other holder of each component it
/// serves (the standby of those it owns, the owner of those it stands by for): with no
/// sample pushed since, it has full windows and forecasts again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_warms_its_windows_from_its_peers() {
    let (mut cluster, leader, entry) = spread_and_registered(RaftKnobs::default()).await;
    // 100 steps: more than the 64 a window holds.
    let mut rng = SeededRng::new(11);
    let ids = ids();
    let steps: Vec<pb::SampleBatch> = (0..100).map(|k| fleet_step(&ids, k, &mut rng)).collect();
    let summary = push_to(&entry, steps).await;
    assert_eq!(summary.accepted, 100 * COMPONENTS as u64 * 2, "{summary:?}");

    let restarted = (1..=3).find(|&n| n != leader).expect("a follower");
    let node = cluster.addr(restarted);
    let served = |node: String| {
        let ids = ids.clone();
        async move {
            let mut warm = Vec::new();
            for id in &ids {
                if let Some(f) = own_forecast(&node, id).await {
                    warm.push((id.clone(), f.samples));
                }
            }
            warm
        }
    };
    let before = eventually(
        "its forecasts before the restart",
        Duration::from_secs(20),
        || {
            let served = served(node.clone());
            async move {
                let w = served.await;
                (w.len() >= 4 && w.iter().all(|(_, n)| *n == 100)).then_some(w)
            }
        },
    )
    .await;

    cluster.kill(restarted);
    cluster.restart(restarted);
    // Nothing is pushed from here on: all it holds comes from its peers.
    let after = eventually(
        "warm windows after the restart",
        Duration::from_secs(30),
        || {
            let served = served(node.clone());
            async move {
                let w = served.await;
                (w.len() >= 4 && w.iter().all(|(_, n)| *n == 64)).then_some(w)
            }
        },
    )
    .await;
    eprintln!(
        "node {restarted} served {} components before the restart, {} after, each with a full \
         window of 64 steps",
        before.len(),
        after.len()
    );
    // It says so: warm at the map it serves (the leader hands ownership only to such a node).
    eventually("the node warm at its map", Duration::from_secs(20), || {
        let node = node.clone();
        async move {
            let s = status(&node).await?;
            (s.shard_epoch > 0 && s.warm_shard_epoch == s.shard_epoch).then_some(())
        }
    })
    .await;
}

/// An owner too busy to take its share answers `RESOURCE_EXHAUSTED`; the push to another node
/// comes back with that answer, its retry hint, and how many samples the other owners took
/// (sent again, those count as duplicates).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_owner_fails_the_push_saying_how_much_was_taken() {
    let (cluster, leader, entry) = spread_and_registered(RaftKnobs {
        // One forwarded batch at a time, and a forward may wait a minute for its sender's
        // position: a forward from "the future" with an unknown component holds a node's
        // only slot.
        extra_toml: "[telemetry]\nmax_inflight_batches = 1\nforward_catch_up_ms = 60000\n",
        ..RaftKnobs::default()
    })
    .await;
    let busy = cluster.addr((1..=3).find(|&n| n != leader).expect("a follower"));
    // A sample of a component the node does not know, from a sender "ahead" of it: the node
    // waits to catch up before it judges the sample, holding its only forward slot.
    let ghost = pb::Sample {
        component: "ghost".into(),
        metric: "cpu".into(),
        timestamp_ms: 1,
        value: 1.0,
    };
    let held = spawn_forward(&busy, vec![ghost], u64::MAX);
    wait_forward_slots_full(&busy).await;

    let mut rng = SeededRng::new(3);
    let step = fleet_step(&ids(), 0, &mut rng);
    let err = TelemetryClient::new(channel(&entry).await.expect("channel"))
        .push(futures::stream::iter(vec![step]))
        .await
        .expect_err("the busy node owns some of the components");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(err.metadata().get("retry-after-ms").is_some(), "{err:?}");
    let msg = err.message();
    assert!(
        msg.contains("samples of this batch were taken all the same"),
        "{msg}"
    );
    // Some of the 24 samples were the other two nodes' to take, and they took them.
    let taken: u64 = msg
        .split("; ")
        .last()
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {msg}"));
    assert!((1..24).contains(&taken), "{msg}");
    held.abort();
}

/// A remote-write body decodes to many times the message limit; what the node that took it
/// sends on to each owner and standby is cut into forwards within that limit (a forward over
/// it is refused), so every holder of every component takes all of its samples.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_write_larger_than_a_message_reaches_every_owner_in_pieces() {
    use augur_proto::prom::{encode_remote_write, Label, PromSample, TimeSeries, WriteRequest};
    let port = free_ports(1)[0];
    // Each node listens on an address of its own on the loopback network.
    let extra = Box::leak(
        format!("[telemetry]\nremote_write_listen = \"127.0.0.{{node}}:{port}\"\n")
            .into_boxed_str(),
    );
    let (cluster, leader, _) = spread_and_registered(RaftKnobs {
        extra_toml: extra,
        ..RaftKnobs::default()
    })
    .await;
    // A long metric name makes each sample several times larger in a forward (which names
    // the component and the metric in every sample) than in a remote write (once a series).
    const STEPS: i64 = 400;
    let metric = "requests_waiting_in_the_accept_queue_of_the_listener";
    let label = |n: &str, v: &str| Label {
        name: n.into(),
        value: v.into(),
    };
    let req = WriteRequest {
        timeseries: ids()
            .iter()
            .map(|id| TimeSeries {
                labels: vec![label("__name__", metric), label("component", id)],
                samples: (1..=STEPS)
                    .map(|k| PromSample {
                        value: 5.0,
                        timestamp: k * 1000,
                    })
                    .collect(),
            })
            .collect(),
    };
    let body = encode_remote_write(&req);
    // The harness's limits.max_message_bytes: the body fits it, its samples do not.
    let limit = 65_536;
    assert!(body.len() < limit, "a body of {} bytes", body.len());
    let rw = format!("127.0.0.{leader}:{port}");
    assert_eq!(remote_write(&rw, body).await, 204);

    // Every node that holds a component (its owner and its standby) took all of its samples.
    holders_scored(&cluster, STEPS * 1000, STEPS as u64).await;
}

/// The fleet's at-risk list asks each node for its riskiest forecasts of the shards it owns
/// and, apart, of those it stands by for, keeping the owner's row else the standby's: with an
/// owner dead and the map not yet moved on (here it never does), every component is still
/// listed once, and a top-k list is the full list's first k. A read of every forecast asks
/// the standbys only for the dead owner's shards, and misses none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_at_risk_list_asks_the_standbys_for_a_dead_owners_shards() {
    let (mut cluster, leader, entry) = spread_and_registered(RaftKnobs {
        // The leader never takes a member for dead: the map keeps naming the dead owner.
        cluster_toml: "dead_after_probes = 1000000",
        ..RaftKnobs::default()
    })
    .await;
    let mut rng = SeededRng::new(11);
    let ids = ids();
    let steps: Vec<pb::SampleBatch> = (0..80).map(|k| fleet_step(&ids, k, &mut rng)).collect();
    let summary = push_to(&entry, steps).await;
    assert_eq!(summary.lost + summary.unknown_component, 0, "{summary:?}");

    let list = |limit: u32, this_node_only: bool, shards: Vec<u32>| {
        let entry = entry.clone();
        async move {
            TelemetryClient::new(channel(&entry).await.expect("channel"))
                .list_at_risk(pb::ListAtRiskRequest {
                    limit,
                    min_risk: 0.0,
                    this_node_only,
                    shards,
                })
                .await
                .map(|r| r.into_inner().forecasts)
        }
    };
    let everyone =
        |rows: &[pb::Forecast]| rows.len() == COMPONENTS && rows.iter().all(|f| f.at_ms == 79_000);
    // Both holders have scored the last step: the standbys can stand in.
    holders_scored(&cluster, 79_000, 80).await;
    let before = list(100, false, vec![]).await.expect("the list");
    assert!(everyone(&before), "{} rows: {before:?}", before.len());

    // A follower that owns shards dies; the map still names it.
    let victim = (1..=3).find(|&n| n != leader).expect("a follower");
    cluster.kill(victim);
    let all = list(100, false, vec![]).await.expect("the list");
    assert!(everyone(&all), "{} rows: {all:?}", all.len());
    let top = list(3, false, vec![]).await.expect("the top 3");
    let names =
        |rows: &[pb::Forecast]| rows.iter().map(|f| f.component.clone()).collect::<Vec<_>>();
    assert_eq!(names(&top), names(&all[..3]));
    // A read of the whole fleet (`GetRisk` of the graph, what the planner reads each round)
    // asks the owners, then the standbys of the silent owner's shards only: every component
    // still has its P(fail).
    let (code, out, err) = ctl(&entry, &["--output", "json", "risk"]);
    assert_eq!(code, 0, "{err}");
    let risks: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let with_p_fail = risks
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| r["p_fail"].as_f64().is_some())
        .count();
    assert_eq!(with_p_fail, COMPONENTS, "{out}");

    // A node's own list narrowed to shards: the components of those shards it holds.
    let mine = list(100, true, vec![0, 1, 2, 3]).await.expect("own list");
    assert!(
        mine.iter().all(|f| augur_types::shard_of(&f.component) < 4),
        "{mine:?}"
    );
    // Bad input: a shard that does not exist, or shards without this_node_only.
    let err = list(100, true, vec![64]).await.expect_err("shard 64");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("shard 64 does not exist"), "{err:?}");
    let err = list(100, false, vec![1])
        .await
        .expect_err("shards of the fleet");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
}

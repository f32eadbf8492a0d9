//! Shard takeover on a three-node loopback cluster: 64 components' telemetry is pushed to
//! one node; the node that owns the most shards (other than the one pushed to) is killed
//! with SIGKILL, and two times are measured:
//!
//! - *resumed*: kill → the first forecast of a sample pushed after the kill, for a component
//!   the dead node owned, made by another node (its standby, from warm windows);
//! - *handed over*: kill → the shard map records no shard on the dead node.
//!
//! The dead node is restarted and the cluster settles before the next round.
//!
//! `cargo bench -p augur-cli --bench shard_takeover [-- --rounds N]`. Prints a Markdown table.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use augur_predict::lstm::SeededRng;
use common::*;

/// Shard takeover after a SIGKILL, on a three-node loopback cluster.
#[derive(clap::Parser)]
#[command(args_override_self = true)]
struct Args {
    /// Kill-and-restart rounds.
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() {
    let rounds = <Args as clap::Parser>::parse().rounds;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(run(rounds));
}

async fn run(rounds: usize) {
    let mut cluster = Cluster::start(3, RaftKnobs::default());
    let ids: Vec<String> = (0..64).map(|i| format!("svc-{i}")).collect();
    let leader = cluster.wait_leader().await;
    let mut client = augur_cli::Client::new(cluster.endpoints());
    for id in &ids {
        assert!(register(&mut client, id).await, "register {id}");
    }
    cluster.wait_all_applied(leader).await;
    let mut rng = SeededRng::new(11);
    let mut k = 0i64;
    let mut resumed = Vec::new();
    let mut handed = Vec::new();
    let mut entry_id = leader;
    for round in 0..rounds {
        // Warm every window (again, after a restart) on every node that serves it.
        let lead = cluster.wait_leader().await;
        cluster.wait_all_applied(lead).await;
        let entry = cluster.addr(entry_id);
        let warm: Vec<_> = (0..150)
            .map(|_| {
                k += 1;
                fleet_step(&ids, k - 1, &mut rng)
            })
            .collect();
        push_to(&entry, warm).await;
        // Who scores what, as the pushed-to node resolves it.
        let mut served = Vec::new();
        for id in &ids {
            let f = eventually(
                &format!("a forecast of {id}"),
                Duration::from_secs(30),
                || {
                    let (entry, id) = (entry.clone(), id.clone());
                    let at = (k - 1) * 1000;
                    async move { forecast_via(&entry, &id).await.filter(|f| f.at_ms == at) }
                },
            )
            .await;
            served.push((id.clone(), f.node));
        }
        let count = |n: u64| served.iter().filter(|(_, s)| *s == n).count();
        let Some(victim) = (1..=3u64)
            .filter(|&n| n != entry_id)
            .max_by_key(|&n| count(n))
            .filter(|&n| count(n) > 0)
        else {
            eprintln!("round {round}: no node but the pushed-to one owns anything; stopping");
            break;
        };
        let component = served.iter().find(|(_, s)| *s == victim).unwrap().0.clone();
        let status_addr = entry.clone();
        let t = kill_and_follow(
            &mut cluster,
            victim,
            &entry,
            &component,
            &ids,
            &mut k,
            &mut rng,
        )
        .await;
        let killed_at = Instant::now() - t.resumed;
        member_until(
            "the dead node's shards handed over",
            &status_addr,
            victim,
            Duration::from_secs(30),
            |dead| dead.shards_owned == 0,
        )
        .await;
        let handed_over = killed_at.elapsed();
        eprintln!(
            "round {round}: node {victim} killed ({} of 64 components); {component} resumed on node {} after {} ms ({} samples in its window); shards handed over after {} ms",
            count(victim),
            t.forecast.node,
            t.resumed.as_millis(),
            t.forecast.samples,
            handed_over.as_millis()
        );
        resumed.push(t.resumed.as_secs_f64() * 1000.0);
        handed.push(handed_over.as_secs_f64() * 1000.0);
        cluster.restart(victim);
        // The restarted node takes standby roles; wait until the map gives it some.
        member_until(
            "the restarted node to stand by",
            &status_addr,
            victim,
            Duration::from_secs(60),
            |back| back.shards_standby > 0,
        )
        .await;
        // Push next to a node that is sure to be up; rotate so each node gets killed.
        entry_id = victim;
    }
    let stats = |xs: &mut Vec<f64>| {
        xs.sort_by(f64::total_cmp);
        let q = |p: f64| xs[((xs.len() - 1) as f64 * p).round() as usize];
        (q(0.5), xs[xs.len() - 1])
    };
    if resumed.is_empty() {
        return;
    }
    let n = resumed.len();
    let (rm, rx) = stats(&mut resumed);
    let (hm, hx) = stats(&mut handed);
    println!("| shard takeover (SIGKILL of an owner) | rounds | median ms | max ms |");
    println!("|---|---:|---:|---:|");
    println!("| forecasts resumed from the standby | {n} | {rm:.0} | {rx:.0} |");
    println!("| shards handed over in the map | {n} | {hm:.0} | {hx:.0} |");
}

//! The node's side of the dependency map: edges learned here (from traces) are gathered and
//! committed in batches, through the leader wherever this node stands; and the leader fades
//! the observations nobody has seen for `graph.edge_ttl_ms`.

use std::time::Duration;

use augur_graph::EdgeUpdate;
use augur_proto::{edge_update_to_wire, leader_from_status, pb};
use augur_types::{Applied, Command, MAX_EDGE_BATCH};
use tokio::sync::mpsc;

use crate::config::GraphSection;
use crate::node::{LeaderTicks, Node};
use crate::service::now_ms;

/// Where edge updates learned on this node go. Bounded: when the committer falls behind,
/// updates are dropped and counted rather than queued without limit (the next drain of the
/// trace engine carries the same edges again).
#[derive(Clone)]
pub struct EdgeSink {
    tx: mpsc::Sender<Vec<EdgeUpdate>>,
}

impl EdgeSink {
    pub fn send(&self, updates: Vec<EdgeUpdate>) {
        if updates.is_empty() {
            return;
        }
        let n = updates.len() as u64;
        if self.tx.try_send(updates).is_err() {
            metrics::counter!("augur_graph_edge_updates_dropped_total").increment(n);
        }
    }
}

/// Starts the committer: every `flush_every_ms` it proposes what arrived, merged, in
/// batches of at most [`MAX_EDGE_BATCH`].
pub fn spawn_committer(node: Node, cfg: &GraphSection) -> EdgeSink {
    let (tx, mut rx) = mpsc::channel::<Vec<EdgeUpdate>>(1024);
    let every = Duration::from_millis(cfg.flush_every_ms);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut pending: Vec<EdgeUpdate> = Vec::new();
        loop {
            tokio::select! {
                got = rx.recv() => match got {
                    Some(mut u) => pending.append(&mut u),
                    None => break,
                },
                _ = tick.tick() => {
                    if pending.is_empty() {
                        continue;
                    }
                    let batch = merge(std::mem::take(&mut pending));
                    for chunk in batch.chunks(MAX_EDGE_BATCH) {
                        if let Err(e) = commit(&node, chunk.to_vec()).await {
                            metrics::counter!("augur_graph_edge_updates_dropped_total")
                                .increment(chunk.len() as u64);
                            tracing::warn!(error = %e, edges = chunk.len(), "edge batch not committed");
                        } else {
                            metrics::counter!("augur_graph_edge_updates_committed_total")
                                .increment(chunk.len() as u64);
                        }
                    }
                }
            }
        }
    });
    EdgeSink { tx }
}

/// Keeps the newest observation per (from, to, source), so a batch carries each edge once.
fn merge(mut updates: Vec<EdgeUpdate>) -> Vec<EdgeUpdate> {
    updates.sort_by(|a, b| {
        (&a.from, &a.to, a.observation.source)
            .cmp(&(&b.from, &b.to, b.observation.source))
            .then(b.observation.last_seen_ms.cmp(&a.observation.last_seen_ms))
    });
    updates.dedup_by(|later, first| {
        later.from == first.from
            && later.to == first.to
            && later.observation.source == first.observation.source
    });
    updates
}

/// Proposes the batch here, or on the leader when this node is not it.
async fn commit(node: &Node, updates: Vec<EdgeUpdate>) -> Result<(), tonic::Status> {
    let wire: Vec<pb::EdgeUpdate> = updates.iter().map(edge_update_to_wire).collect();
    match node.write(Command::UpsertEdges(updates)).await {
        Ok(_) => Ok(()),
        Err(status) => {
            let Some(addr) = leader_from_status(&status) else {
                return Err(status);
            };
            let mut client = pb::topology_client::TopologyClient::connect(format!("http://{addr}"))
                .await
                .map_err(|e| tonic::Status::unavailable(format!("leader {addr}: {e}")))?;
            client
                .upsert_edges(pb::UpsertEdgesRequest { updates: wire })
                .await
                .map(|_| ())
        }
    }
}

/// On the leader, every `fade_every_ms`: fade what was not seen for `edge_ttl_ms`.
pub fn spawn_fader(node: Node, cfg: &GraphSection) {
    let every = Duration::from_millis(cfg.fade_every_ms);
    let ttl_ms = cfg.edge_ttl_ms;
    tokio::spawn(async move {
        let mut ticks = LeaderTicks::new(every);
        loop {
            ticks.next(&node).await;
            let cutoff = now_ms().saturating_sub(ttl_ms);
            let has_fading = node
                .state
                .read(|s| s.edges.values().any(|e| e.has_fading(cutoff)));
            if !has_fading {
                continue;
            }
            let cmd = Command::FadeEdges {
                now_ms: now_ms(),
                ttl_ms,
            };
            match node.write(cmd).await {
                Ok((_, Applied::Faded { observations })) => {
                    metrics::counter!("augur_graph_edges_faded_total")
                        .increment(u64::from(observations));
                    tracing::info!(observations, "faded unseen edges");
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "fade not committed"),
            }
        }
    });
}

/// Runs the causal-strength tests over this node's metric history every `every`, on the last
/// `window` before its newest sample, and sends the links found as `causal` edges (effect
/// depends on cause) to `edges`, which commits them in batches. At most `max_series` series
/// are tested, those that moved most lately. Too little history is not an
/// error: the run is skipped until there is enough.
pub fn spawn_causal(
    history: std::sync::Arc<augur_graph::MetricHistory>,
    edges: EdgeSink,
    every: Duration,
    window: Duration,
    max_series: usize,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let history = history.clone();
            let window_ms = window.as_millis() as i64;
            let run =
                tokio::task::spawn_blocking(move || causal_edges(&history, window_ms, max_series))
                    .await;
            match run {
                Ok(Ok(found)) => {
                    metrics::counter!("augur_graph_causal_runs_total").increment(1);
                    metrics::gauge!("augur_graph_causal_links").set(found.len() as f64);
                    edges.send(found);
                }
                Ok(Err(e)) => tracing::debug!(error = %e, "causal tests skipped"),
                Err(e) => tracing::warn!(error = %e, "causal tests failed"),
            }
        }
    });
}

/// One run of the causal tests over the history's last `window_ms`; see [`spawn_causal`].
pub fn causal_edges(
    history: &augur_graph::MetricHistory,
    window_ms: i64,
    max_series: usize,
) -> anyhow::Result<Vec<EdgeUpdate>> {
    let newest = history
        .newest_ms()
        .ok_or_else(|| anyhow::anyhow!("no history yet"))?;
    let frame = history.frame(newest - window_ms + 1, newest)?;
    let opts = augur_graph::CausalOptions::default();
    if frame.len() < opts.min_len() {
        anyhow::bail!(
            "{} rows of history, the tests need {}",
            frame.len(),
            opts.min_len()
        );
    }
    let mut columns = frame.filled_series(augur_graph::history_component);
    if columns.len() > max_series {
        // Test the series that moved most in the last tenth of the window: pairs grow with
        // the square of the series, and a flat series shows no influence anyway.
        let times = frame.times();
        let recent = times[times.len() - times.len().div_ceil(10)];
        let rca = augur_graph::RcaOptions::default();
        let mut scored: Vec<(f64, (String, Vec<f64>))> = columns
            .into_iter()
            .map(|c| {
                let s = augur_graph::metric_score(times, &c.1, recent, &rca).unwrap_or(0.0);
                (s, c)
            })
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1 .0.cmp(&b.1 .0)));
        scored.truncate(max_series);
        metrics::counter!("augur_graph_causal_series_skipped_total")
            .increment((frame.names().len() - max_series) as u64);
        columns = scored.into_iter().map(|(_, c)| c).collect();
    }
    let series: Vec<(&str, &[f64])> = columns
        .iter()
        .map(|(c, v)| (c.as_str(), v.as_slice()))
        .collect();
    let links = augur_graph::causal_links(&series, &opts)?;
    Ok(augur_graph::links_to_edges(&links, now_ms()))
}

#[cfg(test)]
mod tests {
    use augur_graph::{EdgeSource, Observation};

    use super::*;

    #[test]
    fn merge_keeps_the_newest_observation_per_edge_and_source() {
        let u = |to: &str, source, at| EdgeUpdate {
            from: "a".into(),
            to: to.into(),
            observation: Observation::new(source, 1.0, at),
        };
        let merged = merge(vec![
            u("b", EdgeSource::Trace, 1),
            u("b", EdgeSource::Trace, 3),
            u("b", EdgeSource::Flow, 2),
            u("c", EdgeSource::Trace, 1),
        ]);
        let got: Vec<(&str, EdgeSource, u64)> = merged
            .iter()
            .map(|m| {
                (
                    m.to.as_str(),
                    m.observation.source,
                    m.observation.last_seen_ms,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("b", EdgeSource::Trace, 3),
                ("b", EdgeSource::Flow, 2),
                ("c", EdgeSource::Trace, 1)
            ]
        );
    }
}

//! The shard map at work (see [`augur_types::ShardMap`]): the leader keeps every shard on
//! live nodes, and every node sends each sample to its shard's owner and standby and reads
//! forecasts from them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use augur_actors::Sample;
use augur_predict::predictor::{Forecast, LoadTrend};
use augur_proto::pb;
use augur_types::{shard_of, Command, ComponentId, NodeId, ShardMap};
use futures::future::join_all;
use tonic::transport::{Channel, Endpoint};

use crate::node::{member_addr, LeaderTicks, Node};

/// How long one call to a peer (a forward, a forecast read) may take.
const PEER_TIMEOUT: Duration = Duration::from_secs(2);

/// Connections to the other controller nodes, by id, at the addresses the membership gives.
#[derive(Clone)]
pub struct Peers {
    raft: augur_store::Raft,
    /// This node's id.
    pub me: NodeId,
    channels: Arc<Mutex<HashMap<NodeId, (String, Channel)>>>,
    /// How far this node's warm-ups have come.
    pub warmth: Arc<Warmth>,
    /// The most bytes one `Forward` message may hold: `limits.max_message_bytes`, as for a
    /// pushed batch (the same on every node, as the configuration is assumed to be).
    max_forward_bytes: usize,
}

/// How far a node has warmed the components the shard maps gave it: the latest map epoch
/// such that every warm-up begun for it, or for an earlier one, has ended.
#[derive(Debug, Default)]
pub struct Warmth(Mutex<WarmthState>);

#[derive(Debug, Default)]
struct WarmthState {
    in_flight: usize,
    /// The latest epoch a sync reached; warm once nothing is in flight.
    pending: u64,
    warm: u64,
}

impl WarmthState {
    /// With nothing in flight, warm at the latest epoch a sync reached.
    fn settle(&mut self) {
        if self.in_flight == 0 {
            self.warm = self.warm.max(self.pending);
        }
    }
}

impl Warmth {
    /// A sync reached map `epoch` (after beginning any warm-up it needs).
    pub fn synced(&self, epoch: u64) {
        let mut w = self.0.lock().expect("warmth lock");
        w.pending = w.pending.max(epoch);
        w.settle();
    }

    /// A warm-up begins.
    pub fn begin(&self) {
        self.0.lock().expect("warmth lock").in_flight += 1;
    }

    /// A warm-up ended (done, or given up).
    pub fn end(&self) {
        let mut w = self.0.lock().expect("warmth lock");
        w.in_flight = w.in_flight.saturating_sub(1);
        w.settle();
    }

    /// The epoch this node is warm at.
    pub fn epoch(&self) -> u64 {
        self.0.lock().expect("warmth lock").warm
    }
}

/// What a forward to one node came to: the summaries of the chunks it took, and, when a
/// chunk was refused or could not be sent, why and how many samples were left unsent (that
/// chunk and the ones after it).
#[derive(Debug, Default)]
pub struct Forwarded {
    pub taken: augur_actors::IngestSummary,
    pub failed: Option<(tonic::Status, u64)>,
}

impl Peers {
    pub fn new(raft: augur_store::Raft, me: NodeId, max_forward_bytes: usize) -> Self {
        Self {
            raft,
            me,
            channels: Arc::default(),
            warmth: Arc::default(),
            max_forward_bytes,
        }
    }

    /// A channel to `id` (connected lazily; reused while its address stays the same), or
    /// `None` when `id` is not a member.
    pub fn channel(&self, id: NodeId) -> Option<Channel> {
        let addr = member_addr(&self.raft, id)?;
        let mut channels = self.channels.lock().expect("peers lock");
        if let Some((a, c)) = channels.get(&id) {
            if *a == addr {
                return Some(c.clone());
            }
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}")).ok()?;
        let channel = endpoint
            .connect_timeout(Duration::from_millis(500))
            .timeout(PEER_TIMEOUT)
            .tcp_nodelay(true)
            .connect_lazy();
        channels.insert(id, (addr, channel.clone()));
        Some(channel)
    }

    /// Whether the membership this node knows is this node alone (a single-node cluster);
    /// not when it names others, nor when it is empty (a node not yet added to a cluster).
    pub fn alone(&self) -> bool {
        let m = self.raft.metrics().borrow().membership_config.clone();
        let mut ids = m.membership().nodes().map(|(id, _)| *id);
        ids.next() == Some(self.me) && ids.next().is_none()
    }

    /// A telemetry client to `id`, or `UNAVAILABLE` when `id` is not a member.
    fn telemetry(
        &self,
        id: NodeId,
    ) -> Result<pb::telemetry_client::TelemetryClient<Channel>, tonic::Status> {
        let c = self
            .channel(id)
            .ok_or_else(|| tonic::Status::unavailable(format!("node {id} is not a member")))?;
        Ok(pb::telemetry_client::TelemetryClient::new(c)
            .max_decoding_message_size(256 * 1024 * 1024)
            .max_encoding_message_size(256 * 1024 * 1024))
    }

    /// Sends `samples` to `id` to take as they are, in order, in as many `Forward` messages as
    /// the message limit needs (a remote-write body can decode to many times that limit).
    /// Stops at the first chunk that fails: the chunks after it are not sent, so a
    /// component's samples never arrive out of order.
    pub async fn forward(&self, id: NodeId, samples: Vec<Sample>, applied_index: u64) -> Forwarded {
        let mut out = Forwarded::default();
        let mut client = match self.telemetry(id) {
            Ok(c) => c,
            Err(s) => {
                out.failed = Some((s, samples.len() as u64));
                return out;
            }
        };
        let mut left = samples.len() as u64;
        for samples in forward_chunks(samples, self.max_forward_bytes) {
            let n = samples.len() as u64;
            let batch = pb::SampleBatch {
                samples,
                applied_index,
            };
            match client.forward(batch).await {
                Ok(reply) => {
                    out.taken
                        .merge(&crate::predict::summary_from_wire(&reply.into_inner()));
                    left -= n;
                }
                Err(s) => {
                    out.failed = Some((s, left));
                    break;
                }
            }
        }
        out
    }

    /// `id`'s windows of `components`, as samples.
    pub async fn windows(
        &self,
        id: NodeId,
        components: &[ComponentId],
    ) -> Result<Vec<Sample>, tonic::Status> {
        let mut client = self.telemetry(id)?;
        let req = pb::GetWindowsRequest {
            components: components.iter().map(|c| c.to_string()).collect(),
        };
        let batch = client.get_windows(req).await?.into_inner();
        batch
            .samples
            .into_iter()
            .map(|s| {
                let component = ComponentId::new(s.component)
                    .map_err(|e| tonic::Status::internal(format!("a peer's window: {e}")))?;
                Ok(Sample {
                    component,
                    metric: s.metric,
                    ts_ms: s.timestamp_ms,
                    value: s.value,
                })
            })
            .collect()
    }

    /// `id`'s own forecast of `component`, if it has one.
    pub async fn forecast(
        &self,
        id: NodeId,
        component: &str,
    ) -> Result<Option<(NodeId, Forecast)>, tonic::Status> {
        let mut client = self.telemetry(id)?;
        let req = pb::GetForecastRequest {
            component: component.to_string(),
            this_node_only: true,
        };
        match client.get_forecast(req).await {
            Ok(f) => Ok(Some((id, forecast_from_wire(f.into_inner()).1))),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(s),
        }
    }

    /// `id`'s own forecasts of the components of `shards` (every one it holds when empty),
    /// its `limit` riskiest with risk at least `min_risk` (rows with an invalid id dropped).
    pub async fn forecasts(
        &self,
        id: NodeId,
        shards: &[usize],
        limit: usize,
        min_risk: f64,
    ) -> Result<Vec<(ComponentId, Forecast)>, tonic::Status> {
        let mut client = self.telemetry(id)?;
        let req = pb::ListAtRiskRequest {
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
            min_risk,
            this_node_only: true,
            shards: shards.iter().map(|&s| s as u32).collect(),
        };
        let rows = client.list_at_risk(req).await?.into_inner().forecasts;
        Ok(rows
            .into_iter()
            .map(forecast_from_wire)
            .filter_map(|(id, f)| ComponentId::new(id).ok().map(|id| (id, f)))
            .collect())
    }

    /// `id`'s warm shard epoch, when it answers a status call within `within`.
    async fn probe(&self, id: NodeId, within: Duration) -> Option<u64> {
        let channel = self.channel(id)?;
        let mut client = pb::cluster_client::ClusterClient::new(channel);
        match tokio::time::timeout(within, client.status(pb::StatusRequest {})).await {
            Ok(Ok(r)) => Some(r.into_inner().warm_shard_epoch),
            _ => None,
        }
    }
}

/// A forecast back from the wire (the inverse of `forecast_to_wire`).
pub fn forecast_from_wire(f: pb::Forecast) -> (String, Forecast) {
    let forecast = Forecast {
        at_ms: f.at_ms,
        anomaly: f.anomaly,
        p_fail: [f.p_fail_5m, f.p_fail_1h, f.p_fail_24h],
        lead_time_s: f.lead_time_s,
        hps: f.hps,
        why: f.why.into_iter().map(|i| (i.name, i.weight)).collect(),
        model_version: f.model_version.into(),
        samples: f.samples,
        load: f.load.map(|l| LoadTrend {
            level: l.level,
            per_s: l.per_s,
        }),
    };
    (f.component, forecast)
}

/// Where a batch's samples go: to this node (as owner, as standby) and to others.
#[derive(Debug, Default)]
pub struct Split {
    /// Samples of shards this node owns.
    pub owned: Vec<Sample>,
    /// Samples of shards this node stands by for.
    pub standby: Vec<Sample>,
    /// Samples for each other node that owns their shard.
    pub to_owner: HashMap<NodeId, Vec<Sample>>,
    /// Samples for each other node that stands by for their shard.
    pub to_standby: HashMap<NodeId, Vec<Sample>>,
}

impl Split {
    /// Sends each sample to its shard's owner and standby under `map`, as seen from `me`.
    pub fn of(map: &ShardMap, me: NodeId, samples: Vec<Sample>) -> Self {
        let mut split = Split::default();
        for s in samples {
            let a = map.shards[shard_of(s.component.as_str())];
            if let Some(standby) = a.standby {
                let copy = s.clone();
                if standby == me {
                    split.standby.push(copy);
                } else {
                    split.to_standby.entry(standby).or_default().push(copy);
                }
            }
            if a.owner == me {
                split.owned.push(s);
            } else {
                split.to_owner.entry(a.owner).or_default().push(s);
            }
        }
        split
    }
}

/// Whether `me` serves every shard alone (a single node): nothing to route.
pub fn serves_alone(map: &ShardMap, me: NodeId) -> bool {
    map.shards
        .iter()
        .all(|a| a.owner == me && a.standby.is_none())
}

/// The shards of `map` by the node `pick` names for each (none: left out).
pub fn group_shards(
    map: &ShardMap,
    pick: impl Fn(&augur_types::ShardAssignment) -> Option<NodeId>,
) -> BTreeMap<NodeId, Vec<usize>> {
    group_shards_where(map, |_, a| pick(a))
}

/// [`group_shards`], with `pick` told the shard's number too.
pub fn group_shards_where(
    map: &ShardMap,
    pick: impl Fn(usize, &augur_types::ShardAssignment) -> Option<NodeId>,
) -> BTreeMap<NodeId, Vec<usize>> {
    let mut out = BTreeMap::<NodeId, Vec<usize>>::new();
    for (shard, a) in map.shards.iter().enumerate() {
        if let Some(node) = pick(shard, a) {
            out.entry(node).or_default().push(shard);
        }
    }
    out
}

/// On the leader, every `probe`: asks every member for its status (waiting up to `timeout`
/// for each answer), and when a member missed `dead_after` probes in a row (or a member
/// joined), commits a shard map that serves every shard from live nodes: a dead owner's
/// shards go to their warm standbys.
pub fn spawn_keeper(node: Node, peers: Peers, probe: Duration, timeout: Duration, dead_after: u32) {
    tokio::spawn(async move {
        let mut ticks = LeaderTicks::new(probe);
        let mut missed: HashMap<NodeId, u32> = HashMap::new();
        loop {
            ticks.next(&node).await;
            let members: Vec<NodeId> = {
                let m = node.raft.metrics().borrow().membership_config.clone();
                m.membership().nodes().map(|(id, _)| *id).collect()
            };
            let others: Vec<NodeId> = members.iter().copied().filter(|&m| m != peers.me).collect();
            let answers = join_all(others.iter().map(|&m| peers.probe(m, timeout))).await;
            missed.retain(|id, _| members.contains(id));
            let mut warm_at: HashMap<NodeId, u64> = HashMap::new();
            warm_at.insert(peers.me, peers.warmth.epoch());
            for (&id, answer) in others.iter().zip(answers) {
                let n = missed.entry(id).or_default();
                match answer {
                    Some(epoch) => {
                        *n = 0;
                        warm_at.insert(id, epoch);
                    }
                    None => *n = n.saturating_add(1),
                }
            }
            let live: Vec<NodeId> = members
                .iter()
                .copied()
                .filter(|id| missed.get(id).is_none_or(|&n| n < dead_after))
                .collect();
            let current = node.state.read(|s| s.shards.clone());
            // Ownership goes only to a node warm at the current map.
            let epoch = current.as_ref().map_or(0, |m| m.epoch);
            let warm = |n: NodeId| warm_at.get(&n).is_some_and(|&e| e >= epoch);
            let Some(next) = ShardMap::rebalanced_when(current.as_ref(), &live, warm) else {
                continue;
            };
            let dead: Vec<NodeId> = members
                .iter()
                .copied()
                .filter(|id| !live.contains(id))
                .collect();
            match node.write(Command::SetShards(next)).await {
                Ok((index, _)) => {
                    metrics::counter!("augur_shard_map_changes_total").increment(1);
                    tracing::info!(?live, ?dead, index, "shard map changed");
                }
                Err(e) => tracing::debug!(error = %e, "shard map not changed"),
            }
        }
    });
}

/// Bytes a `SampleBatch` spends on everything but its samples (`applied_index`), with room.
const BATCH_OVERHEAD: usize = 16;

/// `samples` on the wire, cut in order into batches of at most `max_bytes` encoded bytes each
/// (a sample larger than that on its own still travels, alone).
pub fn forward_chunks(samples: Vec<Sample>, max_bytes: usize) -> Vec<Vec<pb::Sample>> {
    let budget = max_bytes.saturating_sub(BATCH_OVERHEAD);
    let mut chunks = Vec::new();
    let (mut chunk, mut size) = (Vec::new(), 0usize);
    for s in samples {
        let s = crate::predict::sample_to_wire(s);
        // One field of a repeated message: its tag, its length, its body.
        let len = prost::Message::encoded_len(&s);
        let field = 1 + prost::length_delimiter_len(len) + len;
        if !chunk.is_empty() && size + field > budget {
            chunks.push(std::mem::take(&mut chunk));
            size = 0;
        }
        chunk.push(s);
        size += field;
    }
    if !chunk.is_empty() {
        chunks.push(chunk);
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(c: &str) -> Sample {
        Sample {
            component: ComponentId::new(c).unwrap(),
            metric: "m".into(),
            ts_ms: 1,
            value: 1.0,
        }
    }

    #[test]
    fn each_sample_goes_to_its_owner_and_its_standby_once() {
        let map = ShardMap::rebalanced(None, &[1, 2, 3]).unwrap();
        let samples: Vec<Sample> = (0..300).map(|i| sample(&format!("c{i}"))).collect();
        let split = Split::of(&map, 1, samples.clone());
        let mut seen: HashMap<String, Vec<NodeId>> = HashMap::new();
        let mut note = |node: NodeId, xs: &[Sample]| {
            for s in xs {
                seen.entry(s.component.to_string()).or_default().push(node);
            }
        };
        note(1, &split.owned);
        note(1, &split.standby);
        for (n, xs) in split.to_owner.iter().chain(&split.to_standby) {
            note(*n, xs);
        }
        for s in &samples {
            let a = map.assignment(s.component.as_str());
            let mut want = vec![a.owner, a.standby.unwrap()];
            want.sort_unstable();
            let mut got = seen[s.component.as_str()].clone();
            got.sort_unstable();
            assert_eq!(got, want, "{}", s.component);
        }
        assert!(!serves_alone(&map, 1));
        assert!(serves_alone(&ShardMap::rebalanced(None, &[1]).unwrap(), 1));
    }

    #[test]
    fn a_forward_is_cut_in_order_into_messages_within_the_limit() {
        let samples: Vec<Sample> = (0..5_000)
            .map(|i| Sample {
                component: ComponentId::new(format!("component-{}", i % 7)).unwrap(),
                metric: format!("metric-{}", i % 3),
                ts_ms: 1_700_000_000_000 + i,
                value: i as f64,
            })
            .collect();
        let max = 4 * 1024;
        let chunks = forward_chunks(samples.clone(), max);
        assert!(chunks.len() > 10, "{} chunks", chunks.len());
        for c in &chunks {
            let batch = pb::SampleBatch {
                samples: c.clone(),
                applied_index: u64::MAX,
            };
            let len = prost::Message::encoded_len(&batch);
            assert!(len <= max, "a chunk of {len} bytes");
            // Not cut much below the limit either.
            assert!(
                len > max / 2 || c == chunks.last().unwrap(),
                "a chunk of {len} bytes"
            );
        }
        let back: Vec<i64> = chunks.concat().iter().map(|s| s.timestamp_ms).collect();
        let want: Vec<i64> = samples.iter().map(|s| s.ts_ms).collect();
        assert_eq!(back, want);
        // All in one message when the limit allows; one sample over the limit still travels.
        assert_eq!(forward_chunks(samples.clone(), usize::MAX).len(), 1);
        assert_eq!(forward_chunks(samples[..3].to_vec(), 1).len(), 3);
        assert!(forward_chunks(Vec::new(), max).is_empty());
    }

    #[test]
    fn a_node_is_warm_at_a_map_once_every_warm_up_begun_by_then_has_ended() {
        let w = Warmth::default();
        assert_eq!(w.epoch(), 0);
        w.synced(1);
        assert_eq!(w.epoch(), 1, "nothing to warm");
        // Map 2 gives components to warm; map 3 comes while that runs, with more.
        w.begin();
        w.synced(2);
        w.begin();
        w.synced(3);
        assert_eq!(w.epoch(), 1);
        w.end();
        assert_eq!(w.epoch(), 1, "one warm-up still runs");
        w.end();
        assert_eq!(w.epoch(), 3);
        // A sync with nothing to warm, while nothing runs, is warm at once.
        w.synced(4);
        assert_eq!(w.epoch(), 4);
    }
}

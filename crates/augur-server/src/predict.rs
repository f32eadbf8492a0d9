//! The node's predictors: the actor system, kept in step with the registered components, and
//! the Prometheus remote-write receiver.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use augur_actors::{ActorsConfig, ActorsError, IngestSummary, PredictorSystem, Sample};
use augur_graph::{HistoryConfig, MetricHistory};
use augur_predict::lstm::LstmModel;
use augur_predict::predictor::{default_hazard, Forecast, PredictorConfig};
use augur_store::StateReader;
use augur_types::{ComponentId, NodeId};
use futures::future::join_all;
use tokio::sync::Mutex;

use crate::config::TelemetrySection;
use crate::shards::{group_shards, group_shards_where, serves_alone, Peers, Split};
use tonic::Status;

/// The predictor actors plus the set of components they were told about.
#[derive(Clone)]
pub struct Predictors {
    /// The running actors; replaced (cold) when the replicated state records another model.
    system: Arc<std::sync::RwLock<PredictorSystem>>,
    actors: ActorsConfig,
    /// The model this node started with (version and bytes), recorded by the leader when the
    /// state has none.
    own_model: Arc<augur_types::ModelRecord>,
    switching: Arc<Mutex<()>>,
    state: StateReader,
    synced: Arc<Mutex<Synced>>,
    /// The applied index of the last sync, readable without the lock (checked on every push).
    synced_index: Arc<AtomicU64>,
    /// Recent series of the components served here, for root causes and causal strength:
    /// what the actors took (see [`Predictors::ingest`]) and what warm-ups copied.
    pub history: Arc<MetricHistory>,
    auto_register: bool,
    /// `telemetry.max_future_ms`: what [`Door`] lets through.
    max_future_ms: i64,
    /// `telemetry.forward_catch_up_ms`: see [`Predictors::catch_up_to`].
    forward_catch_up: Duration,
    /// The other nodes: where samples and forecast reads of their shards go.
    peers: Peers,
}

impl Predictors {
    /// Loads the model (the configured file or the one shipped in the binary) and starts the
    /// actors.
    pub fn start(cfg: &TelemetrySection, state: StateReader, peers: Peers) -> anyhow::Result<Self> {
        let (own_model, model) = configured_model(cfg.model.as_deref())
            .map_err(|e| anyhow::anyhow!("telemetry.model: {e}"))?;
        let model_version = model.meta.version.clone();
        let shards = if cfg.shards == 0 {
            crate::service::default_parallelism()
        } else {
            cfg.shards
        };
        let actors = ActorsConfig {
            shards,
            tick_ms: cfg.tick_ms,
            predictor: PredictorConfig {
                window: cfg.window,
                max_metrics: cfg.max_metrics,
                out_of_order_tolerance_ms: cfg.out_of_order_tolerance_ms,
                limits: Vec::new(),
                season: cfg.season,
                load_metric: cfg.load_metric.clone(),
                // From the model, when it names its inputs (ComponentSetup).
                inputs: Vec::new(),
            },
            auto_register: cfg.auto_register,
            // At least a tick when on: a second's worth may be less than one.
            auto_forget_ticks: match cfg.auto_forget_s {
                0 => 0,
                s => (s.saturating_mul(1000) / cfg.tick_ms.max(1)).max(1),
            },
            ..ActorsConfig::default()
        };
        let history = Arc::new(
            MetricHistory::new(HistoryConfig {
                step_ms: cfg.history_step_ms,
                slots: (cfg.history_s * 1000 / cfg.history_step_ms.max(1) as u64).max(1) as usize,
                max_metrics: cfg.max_metrics,
            })
            .map_err(|e| anyhow::anyhow!("telemetry history: {e}"))?,
        );
        let system =
            PredictorSystem::start_with(actors.clone(), Arc::new(model), default_hazard(), true)
                .map_err(|e| anyhow::anyhow!("cannot start the predictor actors: {e}"))?;
        Ok(Self {
            system: Arc::new(std::sync::RwLock::new(system)),
            actors,
            own_model: Arc::new(augur_types::ModelRecord {
                version: model_version,
                bytes: own_model,
            }),
            switching: Arc::new(Mutex::new(())),
            state,
            synced: Arc::new(Mutex::new(Synced::default())),
            synced_index: Arc::new(AtomicU64::new(0)),
            history,
            auto_register: cfg.auto_register,
            max_future_ms: cfg.max_future_ms,
            forward_catch_up: Duration::from_millis(cfg.forward_catch_up_ms),
            peers,
        })
    }

    /// The checks at this node's door, against its clock now.
    pub fn door(&self) -> Door {
        Door {
            now_ms: i64::try_from(crate::service::now_ms()).unwrap_or(i64::MAX),
            max_future_ms: self.max_future_ms,
        }
    }

    /// Runs `work` in a task of its own that holds `permit` (the caller's in-flight slot)
    /// until it ends. A caller that gives up (a client that cancels, a peer's timeout)
    /// therefore neither frees its slot while the work goes on nor cuts it short: the
    /// actors' samples still reach the history, and the counts `/metrics`.
    pub async fn holding<T: Send + 'static>(
        permit: tokio::sync::OwnedSemaphorePermit,
        work: impl std::future::Future<Output = Result<T, Status>> + Send + 'static,
    ) -> Result<T, Status> {
        tokio::spawn(async move {
            let _permit = permit;
            work.await
        })
        .await
        .map_err(|_| Status::internal("the task taking the samples failed"))?
    }

    /// Takes a client's batch ([`Predictors::take`]) [`holding`](Predictors::holding) its
    /// slot, and records in `/metrics`, under `source`, what was taken and what the door
    /// refused (`refused`), also when the batch failed part way.
    pub async fn take_recorded(
        &self,
        samples: Vec<Sample>,
        refused: IngestSummary,
        permit: tokio::sync::OwnedSemaphorePermit,
        source: &'static str,
    ) -> Result<IngestSummary, Status> {
        let this = self.clone();
        Self::holding(permit, async move {
            let (mut counted, res) = match this.take(samples).await {
                Ok(s) => (s, Ok(())),
                Err(NotTaken { status, taken }) => (taken, Err(status)),
            };
            counted.merge(&refused);
            record(&counted, source);
            res.map(|()| counted)
        })
        .await
    }

    /// Takes a batch from a client: each sample goes to its shard's owner and standby (this
    /// node's actors, or another node's). The summary is the owners' judgement; the samples
    /// of an owner that cannot be reached count as lost (its standby still took them). A
    /// saturated owner's `RESOURCE_EXHAUSTED` comes back with its retry hint, saying how many
    /// samples were taken (by the other owners, and by that owner in the chunks before); any
    /// failure comes with what was taken all the same ([`NotTaken`]). A batch over the
    /// actors' `max_batch` is refused before any of it is sent anywhere.
    async fn take(&self, samples: Vec<Sample>) -> Result<IngestSummary, NotTaken> {
        self.system()
            .admits(samples.len())
            .map_err(|e| NotTaken::nothing(actors_status(e)))?;
        let me = self.peers.me;
        // What the owners must have applied to judge these samples as this node would.
        let applied = self.state.last_applied_index();
        let map = match self.state.read(|s| s.shards.clone()) {
            Some(map) if !serves_alone(&map, me) => map,
            // A member of a larger cluster that has applied no map yet (a new cluster before
            // its leader's first, a learner still catching up), or a node not yet added to
            // any, does not know the owners: the samples would land on actors the map will
            // not give it. A single node takes everything, map or not.
            None if !self.peers.alone() => {
                metrics::counter!("augur_push_refused_no_map_total").increment(1);
                return Err(NotTaken::nothing(with_retry_hint(
                    Status::unavailable(
                        "this node has applied no shard map yet (or is not yet a member of an \
                         initialized cluster), so it cannot tell which node owns these \
                         samples' components; the leader records a map once it has probed \
                         the members; try again",
                    ),
                    NO_MAP_RETRY_MS,
                )));
            }
            _ => {
                return self
                    .ingest(samples)
                    .await
                    .map_err(|e| NotTaken::nothing(actors_status(e)))
            }
        };
        let split = Split::of(&map, me, samples);
        let here = |xs: Vec<Sample>| async move {
            if xs.is_empty() {
                Ok(IngestSummary::default())
            } else {
                self.ingest(xs).await
            }
        };
        let there = |to: std::collections::HashMap<u64, Vec<Sample>>| {
            join_all(to.into_iter().map(|(node, xs)| async move {
                (node, self.peers.forward(node, xs, applied).await)
            }))
        };
        let (owned, standby, to_owner, to_standby) = tokio::join!(
            here(split.owned),
            here(split.standby),
            there(split.to_owner),
            there(split.to_standby)
        );
        // This node's own share failed after the others were sent (its actors stopped for
        // a model switch): what the other owners took is still counted and reported.
        let (mut summary, own_failure) = match owned {
            Ok(s) => (s, None),
            Err(e) => (IngestSummary::default(), Some(actors_status(e))),
        };
        if let Err(e) = standby {
            tracing::debug!(error = %e, "standby samples not taken");
        }
        let mut saturated: Option<(u64, Status)> = None;
        for (node, reply) in to_owner {
            summary.merge(&reply.taken);
            match reply.failed {
                None => {}
                Some((s, _)) if s.code() == tonic::Code::ResourceExhausted => {
                    saturated.get_or_insert((node, s));
                }
                Some((s, unsent)) => {
                    metrics::counter!("augur_forward_failures_total", "role" => "owner")
                        .increment(1);
                    tracing::debug!(node, error = %s, "cannot forward samples to their owner");
                    summary.lost += unsent;
                }
            }
        }
        for (node, reply) in to_standby {
            if let Some((s, _)) = reply.failed {
                metrics::counter!("augur_forward_failures_total", "role" => "standby").increment(1);
                tracing::debug!(node, error = %s, "cannot forward samples to their standby");
            }
        }
        if let Some(s) = own_failure {
            let status = Status::new(
                s.code(),
                format!(
                    "this node: {}; {} samples of this batch were taken all the same by their \
                     other owners (sent again, they count as duplicate)",
                    s.message(),
                    summary.accepted
                ),
            );
            return Err(NotTaken {
                status,
                taken: summary,
            });
        }
        if let Some((node, s)) = saturated {
            // The owner's answer, with its retry hint (and nothing else of its headers), and
            // what was taken all the same (by the other owners, or by this one before it filled
            // up): sent again, those count as duplicates.
            let mut out = Status::resource_exhausted(format!(
                "node {node}: {}; {} samples of this batch were taken all the same \
                 (sent again, they count as duplicate)",
                s.message(),
                summary.accepted
            ));
            if let Some(v) = s.metadata().get(RETRY_AFTER_MS) {
                out.metadata_mut().insert(RETRY_AFTER_MS, v.clone());
            }
            return Err(NotTaken {
                status: out,
                taken: summary,
            });
        }
        Ok(summary)
    }

    /// A component's latest forecast: from its owner, or from its standby when the owner has
    /// none or cannot be reached.
    pub async fn forecast(&self, id: &ComponentId) -> Result<Option<(u64, Forecast)>, Status> {
        let me = self.peers.me;
        let assignment = self
            .state
            .read(|s| s.shards.as_ref().map(|m| m.assignment(id.as_str())));
        let here = || async {
            let f = self.system().forecast(id).await.map_err(actors_status)?;
            Ok::<_, Status>(f.map(|f| (me, f)))
        };
        let Some(a) = assignment else {
            return here().await;
        };
        let (mut answered, mut failed) = (false, None);
        for node in std::iter::once(a.owner).chain(a.standby) {
            let reply = if node == me {
                here().await
            } else {
                self.peers.forecast(node, id.as_str()).await
            };
            match reply {
                Ok(Some(f)) => return Ok(Some(f)),
                Ok(None) => answered = true,
                Err(e) => failed = Some(e),
            }
        }
        match failed {
            Some(e) if !answered => Err(e),
            _ => Ok(None),
        }
    }

    /// The fleet's `limit` riskiest forecasts with risk (1 − HPS/100) at least `min_risk`,
    /// riskiest first: each component's from its owner, or from its standby where the owner
    /// has none (it did not answer, or holds no forecast of it yet). Each node is asked, at
    /// once, for its `limit` riskiest of the shards it owns and of those it stands by for, so
    /// a top-k list costs at most 2k rows a node, not the fleet. Exact while every owner
    /// holds its components' forecasts (an owner's rows compete only with each other); where
    /// the standbys stand in, a standby row that loses to its owner's can crowd one out.
    pub async fn fleet_forecasts(
        &self,
        limit: usize,
        min_risk: f64,
    ) -> Result<Vec<(ComponentId, Forecast)>, Status> {
        let Some(map) = self.shared_map() else {
            return self.own_forecasts(&[], limit, min_risk).await;
        };
        let (owned, standby) = tokio::join!(
            self.gather(group_shards(&map, |a| Some(a.owner)), limit, min_risk),
            self.gather(group_shards(&map, |a| a.standby), limit, min_risk)
        );
        if !owned.answered && !standby.answered {
            return Err(Status::unavailable("no node answered with its forecasts"));
        }
        let mut best: std::collections::HashMap<ComponentId, Forecast> =
            owned.rows.into_iter().collect();
        for (id, f) in standby.rows {
            best.entry(id).or_insert(f);
        }
        let mut rows: Vec<(ComponentId, Forecast)> = best.into_iter().collect();
        augur_actors::rank_at_risk(&mut rows, limit, min_risk);
        Ok(rows)
    }

    /// Every component's forecast, unranked, for reads of the whole fleet (the planner's
    /// round, `GetRisk` of the whole graph): each node is asked for the shards it owns, and
    /// the standbys only for the shards where an owner fell short: it did not answer, or it
    /// answered without a forecast of a registered component (just restarted, still warming
    /// up, or its actors just restarted on a new model). Where the owners hold every
    /// forecast, a round carries each forecast once instead of twice.
    pub async fn all_forecasts(&self) -> Result<Vec<(ComponentId, Forecast)>, Status> {
        let Some(map) = self.shared_map() else {
            return self.own_forecasts(&[], usize::MAX, 0.0).await;
        };
        let owned = self
            .gather(group_shards(&map, |a| Some(a.owner)), usize::MAX, 0.0)
            .await;
        let mut rows = owned.rows;
        let mut answered = owned.answered;
        let have: std::collections::HashSet<&ComponentId> = rows.iter().map(|(id, _)| id).collect();
        let mut short: Vec<bool> = map
            .shards
            .iter()
            .map(|a| owned.silent.contains(&a.owner))
            .collect();
        self.state.read(|s| {
            for id in s.components.keys().filter(|id| !have.contains(id)) {
                short[augur_types::shard_of(id.as_str())] = true;
            }
        });
        // A standby that did not answer as an owner is not asked again.
        let ask = group_shards_where(&map, |shard, a| {
            a.standby
                .filter(|s| short[shard] && !owned.silent.contains(s))
        });
        let mut missing = Vec::new();
        if !ask.is_empty() {
            let standby = self.gather(ask, usize::MAX, 0.0).await;
            answered |= standby.answered;
            missing.extend(
                standby
                    .rows
                    .into_iter()
                    .filter(|(id, _)| !have.contains(id)),
            );
        }
        drop(have);
        rows.extend(missing);
        if !answered {
            return Err(Status::unavailable("no node answered with its forecasts"));
        }
        Ok(rows)
    }

    /// Asks each node (this one its own actors) for its forecasts of the shards named for it.
    async fn gather(
        &self,
        shards_of: BTreeMap<NodeId, Vec<usize>>,
        limit: usize,
        min_risk: f64,
    ) -> Gathered {
        let me = self.peers.me;
        let replies = join_all(shards_of.iter().map(|(&node, shards)| async move {
            let rows = if node == me {
                self.own_forecasts(shards, limit, min_risk).await
            } else {
                self.peers.forecasts(node, shards, limit, min_risk).await
            };
            (node, rows)
        }))
        .await;
        let mut out = Gathered::default();
        for (node, reply) in replies {
            match reply {
                Ok(r) => {
                    out.answered = true;
                    out.rows.extend(r);
                }
                Err(e) => {
                    tracing::debug!(node, error = %e, "no forecasts from a node");
                    out.silent.insert(node);
                }
            }
        }
        out
    }

    /// This node's own forecasts of the components of `shards` (all it holds when empty): its
    /// `limit` riskiest with risk at least `min_risk`, riskiest first.
    pub async fn own_forecasts(
        &self,
        shards: &[usize],
        limit: usize,
        min_risk: f64,
    ) -> Result<Vec<(ComponentId, Forecast)>, Status> {
        if shards.is_empty() {
            return self
                .system()
                .list_at_risk(limit, min_risk)
                .await
                .map_err(actors_status);
        }
        let mut wanted = [false; augur_types::SHARD_COUNT];
        for &s in shards {
            if let Some(w) = wanted.get_mut(s) {
                *w = true;
            }
        }
        let mut rows = self
            .system()
            .list_at_risk(usize::MAX, min_risk)
            .await
            .map_err(actors_status)?;
        rows.retain(|(id, _)| wanted[augur_types::shard_of(id.as_str())]);
        augur_actors::rank_at_risk(&mut rows, limit, min_risk);
        Ok(rows)
    }

    /// Waits (at most `telemetry.forward_catch_up_ms`) until this node has applied the entries
    /// up to `index`, a forwarding node's position, when a component of `samples` is unknown
    /// here: one its sender knew may have been registered in between. Gives up quietly: the
    /// samples are then judged against what is applied. No wait when every component is
    /// known (or auto-registered).
    pub async fn catch_up_to(&self, index: u64, samples: &[augur_proto::pb::Sample]) {
        if index <= self.state.last_applied_index() || self.auto_register {
            return;
        }
        let all_known = self.state.read(|s| {
            samples
                .iter()
                .all(|x| s.components.contains_key(x.component.as_str()))
        });
        if !all_known && !self.state.wait_applied(index, self.forward_catch_up).await {
            metrics::counter!("augur_forward_apply_wait_timeouts_total").increment(1);
            tracing::debug!(
                index,
                "forwarded samples judged before their sender's position"
            );
        }
    }

    /// Takes a batch into this node's own actors, which judge and count each sample; the
    /// samples they took (handed back, not copied) then go into the history, so it holds
    /// nothing they refused. Recorded here, on the async threads, not on the actors' busy
    /// ones: feeding it from the actors cost ~8 % of the ingest rate. Callers run it in a
    /// task of their own ([`Predictors::holding`]), so one that gives up cannot leave samples
    /// the actors took out of the history.
    pub async fn ingest(&self, samples: Vec<Sample>) -> Result<IngestSummary, ActorsError> {
        self.sync().await;
        let ingested = self.system().ingest_keeping(samples).await?;
        keep_in_history(
            &self.history,
            ingested
                .taken
                .iter()
                .flat_map(|(id, xs)| xs.iter().map(|(m, t, v)| (id.as_str(), m.as_str(), *t, *v))),
        );
        Ok(ingested.summary)
    }

    /// The shard map, unless there is none or it has this node serve every shard alone:
    /// then every sample and forecast is this node's own.
    fn shared_map(&self) -> Option<augur_types::ShardMap> {
        let me = self.peers.me;
        self.state
            .read(|s| s.shards.clone().filter(|m| !serves_alone(m, me)))
    }

    /// This node's id.
    pub fn me(&self) -> u64 {
        self.peers.me
    }

    /// The running actors (a cheap handle).
    pub fn system(&self) -> PredictorSystem {
        self.system.read().expect("predictors lock").clone()
    }

    /// Restarts the actors with the model the state records, if it is not the one running.
    /// The new actors start cold (windows refill); every known component is registered.
    async fn adopt_recorded_model(&self) {
        let _one_at_a_time = self.switching.lock().await;
        let running = self.system().model_version().to_owned();
        let Some(record) = self
            .state
            .read(|s| s.model.as_ref().filter(|m| m.version != running).cloned())
        else {
            return;
        };
        let model = match node_model(&record.bytes) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(version = %record.version, error = %e, "cannot load the recorded model");
                return;
            }
        };
        let actors = self.actors.clone();
        let started = tokio::task::spawn_blocking(move || {
            PredictorSystem::start_with(actors, Arc::new(model), default_hazard(), true)
        })
        .await;
        let system = match started {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot start predictors with the recorded model");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "starting the predictors failed");
                return;
            }
        };
        let old = std::mem::replace(&mut *self.system.write().expect("predictors lock"), system);
        old.shutdown();
        // The new actors know no component yet: the sync that follows registers them all.
        *self.synced.lock().await = Synced::default();
        self.synced_index.store(0, Ordering::Release);
        metrics::counter!("augur_model_switches_total").increment(1);
        tracing::info!(from = %running, to = %record.version, "switched to the recorded model");
    }

    /// Brings the actors' set of components up to the applied state: new components are
    /// registered, removed ones forgotten. Cheap when nothing was applied since the last call.
    pub async fn sync(&self) {
        let applied = self.state.last_applied_index();
        if applied > 0 && self.synced_index.load(Ordering::Acquire) >= applied {
            return;
        }
        self.adopt_recorded_model().await;
        let mut synced = self.synced.lock().await;
        if synced.applied >= applied && applied > 0 {
            return;
        }
        // The ids that came and went since the last sync, from the state's recent history; the
        // whole set (one copy of every id) only when that history does not reach back.
        // Only the components of the shards this node owns or stands by for (all of them
        // while there is no shard map); a new map means a full pass.
        let me = self.peers.me;
        let (cursor, shard_epoch) = (synced.cursor, synced.shard_epoch);
        let (now_cursor, now_epoch, changes) = self.state.read(|s| {
            let map = s.shards.as_ref();
            let epoch = map.map_or(0, |m| m.epoch);
            let mine = |id: &ComponentId| map.is_none_or(|m| m.serves(me, id.as_str()));
            let changes = cursor
                .filter(|_| epoch == shard_epoch)
                .and_then(|c| s.id_changes_since(c))
                .map(|v| v.into_iter().filter(|(id, _)| mine(id)).collect::<Vec<_>>())
                .ok_or_else(|| {
                    s.components
                        .keys()
                        .filter(|id| mine(id))
                        .cloned()
                        .collect::<BTreeSet<ComponentId>>()
                });
            (s.id_cursor(), epoch, changes)
        });
        let (added, removed, now) = match changes {
            Ok(changes) => {
                let mut now = std::mem::take(&mut synced.ids);
                let (mut added, mut removed) = (BTreeSet::new(), BTreeSet::new());
                for (id, add) in changes {
                    if add {
                        removed.remove(&id);
                        if now.insert(id.clone()) {
                            added.insert(id);
                        }
                    } else if now.remove(&id) && !added.remove(&id) {
                        removed.insert(id);
                    }
                }
                (
                    added.into_iter().collect::<Vec<_>>(),
                    removed.into_iter().collect::<Vec<_>>(),
                    now,
                )
            }
            Err(now) => {
                let added = now.difference(&synced.ids).cloned().collect();
                let removed = synced.ids.difference(&now).cloned().collect();
                (added, removed, now)
            }
        };
        // Until this sync completes, the next one reads the whole set; what failed here is
        // left out of (or kept in) `ids`, so that one retries it.
        synced.ids = now;
        synced.cursor = None;
        if !added.is_empty() {
            if let Err(e) = self.system().register(added.clone()).await {
                tracing::warn!(error = %e, "cannot register components with the predictors");
                added.iter().for_each(|id| {
                    synced.ids.remove(id);
                });
                return;
            }
        }
        if !added.is_empty() {
            self.spawn_warm_up(added);
        }
        if !removed.is_empty() {
            // Deregistered first: once that is answered no actor of theirs takes a sample.
            // A batch answered just before can still be recorded after the history forgets
            // them; those samples age out with the rest (see docs/architecture.md).
            if let Err(e) = self.system().deregister(removed.clone()).await {
                tracing::warn!(error = %e, "cannot deregister components");
                synced.ids.extend(removed);
                return;
            }
            self.history.forget(removed.iter().map(ComponentId::as_str));
        }
        synced.applied = applied;
        synced.cursor = Some(now_cursor);
        synced.shard_epoch = now_epoch;
        self.peers.warmth.synced(now_epoch);
        self.synced_index.store(applied, Ordering::Release);
    }

    /// Warms the windows of components this node just took on (a new shard map, a restart)
    /// from the other node that holds them (the standby of those it owns, the owner of those
    /// it stands by for), in the background: their older samples go in before what has
    /// arrived here since (see [`PredictorSystem::seed`]), and into the history.
    fn spawn_warm_up(&self, added: Vec<ComponentId>) {
        let Some(map) = self.shared_map() else {
            return;
        };
        let me = self.peers.me;
        let mut from: std::collections::BTreeMap<u64, Vec<ComponentId>> = Default::default();
        for id in added {
            let a = map.assignment(id.as_str());
            let source = if a.owner == me {
                a.standby
            } else {
                Some(a.owner)
            };
            if let Some(node) = source.filter(|&n| n != me) {
                from.entry(node).or_default().push(id);
            }
        }
        if from.is_empty() {
            return;
        }
        let this = self.clone();
        self.peers.warmth.begin();
        tokio::spawn(async move {
            this.warm_up(from).await;
            this.peers.warmth.end();
        });
    }

    /// See [`Predictors::spawn_warm_up`]. A peer that does not answer is asked again a few
    /// times, further apart each time, before its components are left to warm from the
    /// samples that arrive.
    async fn warm_up(&self, from: BTreeMap<u64, Vec<ComponentId>>) {
        for (node, ids) in from {
            for chunk in ids.chunks(WARM_UP_CHUNK) {
                let mut tries = 0u32;
                let samples = loop {
                    match self.peers.windows(node, chunk).await {
                        Ok(s) => break Some(s),
                        Err(e) if tries < WARM_UP_TRIES => {
                            tries += 1;
                            tracing::debug!(node, error = %e, tries, "no windows yet; asking again");
                            tokio::time::sleep(WARM_UP_RETRY * tries).await;
                        }
                        Err(e) => {
                            tracing::warn!(node, error = %e, "no windows to warm up from");
                            break None;
                        }
                    }
                };
                let Some(samples) = samples else {
                    break;
                };
                // The peer's actors took these (its windows hold nothing else).
                keep_in_history(
                    &self.history,
                    samples
                        .iter()
                        .map(|x| (x.component.as_str(), x.metric.as_str(), x.ts_ms, x.value)),
                );
                match self.system().seed(samples).await {
                    Ok(n) => {
                        metrics::counter!("augur_warm_up_samples_total").increment(n);
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot seed the windows");
                        return;
                    }
                }
            }
        }
    }

    /// On the leader, while the state records no model: records this node's own, so every
    /// node ends up scoring with the same one.
    pub fn spawn_model_recorder(&self, node: crate::node::Node) {
        let own = self.own_model.clone();
        let mut metrics = node.raft.metrics();
        tokio::spawn(async move {
            loop {
                if node.is_leader() && node.state.read(|s| s.model.is_none()) {
                    let record = augur_types::ModelRecord::clone(&own);
                    match node.write(augur_types::Command::SetModel(record)).await {
                        Ok(_) => {
                            tracing::info!(version = %own.version, "recorded this node's model")
                        }
                        Err(e) => tracing::debug!(error = %e, "model not recorded yet"),
                    }
                }
                if node.state.read(|s| s.model.is_some()) || metrics.changed().await.is_err() {
                    return;
                }
            }
        });
    }

    /// Keeps [`Predictors::sync`] running on every applied change, and drops from the
    /// history, once a minute, the components whose samples have all aged out of it.
    pub fn spawn_sync(&self) {
        let history = self.history.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(60));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let gone = history.prune();
                if gone > 0 {
                    metrics::counter!("augur_history_components_pruned_total")
                        .increment(gone as u64);
                }
            }
        });
        let this = self.clone();
        let mut changes = self.state.subscribe();
        tokio::spawn(async move {
            loop {
                this.sync().await;
                if changes.changed().await.is_err() {
                    return;
                }
            }
        });
    }
}

/// What the actors were last brought up to: the applied index, the state's component-id
/// cursor (`None` until a sync completes), the shard map's epoch and the ids registered.
#[derive(Debug, Default)]
struct Synced {
    applied: u64,
    cursor: Option<augur_types::IdCursor>,
    shard_epoch: u64,
    ids: BTreeSet<ComponentId>,
}

/// A gRPC status for a failure of this node's actors.
/// A model the node can serve and record in the Raft state: one [`LstmModel::for_node`]
/// accepts, within what a [`augur_types::ModelRecord`] may hold. The reason names the problem.
pub fn node_model(bytes: &[u8]) -> Result<LstmModel, String> {
    let model = LstmModel::for_node(bytes).map_err(|e| e.to_string())?;
    augur_types::ModelRecord::check(&model.meta.version, bytes.len()).map_err(|e| e.to_string())?;
    Ok(model)
}

/// The model `telemetry.model` names (a shipped one by name, or a file), or the shipped
/// default: its bytes and the model, checked by [`node_model`]. The reason names the path.
pub fn configured_model(path: Option<&Path>) -> Result<(Vec<u8>, LstmModel), String> {
    let bytes = match path {
        Some(p) => match p.to_str().and_then(augur_predict::builtin_model) {
            Some(bytes) => bytes.to_vec(),
            None => std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?,
        },
        None => augur_predict::DEFAULT_MODEL.to_vec(),
    };
    let model = node_model(&bytes).map_err(|e| match path {
        Some(p) => format!("{}: {e}", p.display()),
        None => e,
    })?;
    Ok((bytes, model))
}

pub fn actors_status(e: ActorsError) -> Status {
    match e {
        ActorsError::BatchTooLarge { .. } | ActorsError::Config(_) => {
            Status::invalid_argument(e.to_string())
        }
        ActorsError::Model { .. } => Status::internal(e.to_string()),
        _ => Status::unavailable(e.to_string()),
    }
}

/// A summary on the wire (one batch's worth of counts; `batches` is the caller's).
pub fn summary_to_wire(s: &IngestSummary) -> augur_proto::pb::PushSummary {
    augur_proto::pb::PushSummary {
        batches: 0,
        accepted: s.accepted,
        not_finite: s.not_finite,
        unknown_component: s.unknown_component,
        out_of_order: s.out_of_order,
        duplicate: s.duplicate,
        too_many_metrics: s.too_many_metrics,
        lost: s.lost,
        bad_timestamp: s.bad_timestamp,
        bad_metric: s.bad_metric,
    }
}

/// A sample as the wire carries it (a forward, a peer's windows).
pub fn sample_to_wire(s: Sample) -> augur_proto::pb::Sample {
    augur_proto::pb::Sample {
        component: s.component.into(),
        metric: s.metric,
        timestamp_ms: s.ts_ms,
        value: s.value,
    }
}

/// The counts of a summary from the wire.
pub fn summary_from_wire(s: &augur_proto::pb::PushSummary) -> IngestSummary {
    IngestSummary {
        accepted: s.accepted,
        not_finite: s.not_finite,
        unknown_component: s.unknown_component,
        out_of_order: s.out_of_order,
        duplicate: s.duplicate,
        too_many_metrics: s.too_many_metrics,
        lost: s.lost,
        bad_timestamp: s.bad_timestamp,
        bad_metric: s.bad_metric,
    }
}

/// Counts a summary into `/metrics`.
pub fn record(summary: &IngestSummary, source: &'static str) {
    for (kind, n) in summary.by_kind() {
        if n > 0 {
            metrics::counter!("augur_ingest_samples_total", "kind" => kind, "source" => source)
                .increment(n);
        }
    }
}

/// Records `(component, metric, ts_ms, value)` samples the actors took into `history`,
/// counting what it kept.
fn keep_in_history<'a>(
    history: &MetricHistory,
    samples: impl IntoIterator<Item = (&'a str, &'a str, i64, f64)>,
) {
    let recorded = history.record(samples);
    metrics::counter!("augur_history_samples_total").increment(recorded.kept);
}

/// A batch that was not wholly taken: why, and what of it was taken all the same (by
/// the owners that were reached before, or beside, the one that failed).
#[derive(Debug)]
pub struct NotTaken {
    pub status: Status,
    pub taken: IngestSummary,
}

impl NotTaken {
    /// Refused before any of the batch went anywhere.
    fn nothing(status: Status) -> Self {
        Self {
            status,
            taken: IngestSummary::default(),
        }
    }
}

/// What the nodes asked for forecasts answered.
#[derive(Default)]
struct Gathered {
    rows: Vec<(ComponentId, Forecast)>,
    /// Some node answered (perhaps with no rows).
    answered: bool,
    /// The nodes that did not answer.
    silent: std::collections::BTreeSet<NodeId>,
}

/// Components a node asks a peer's windows of at once (default windows: ~32 KiB each).
const WARM_UP_CHUNK: usize = 16;

/// Times a warm-up asks a peer again after it did not answer, and the first wait (each
/// wait is longer by as much): 0.5 + 1 + 1.5 + 2 + 2.5 s in all.
const WARM_UP_TRIES: u32 = 5;
const WARM_UP_RETRY: Duration = Duration::from_millis(500);

/// The metadata key of a saturated node's retry hint, in milliseconds.
pub const RETRY_AFTER_MS: &str = "retry-after-ms";

/// The retry hint of a push refused because the node has applied no shard map yet.
const NO_MAP_RETRY_MS: u64 = 500;

/// `RESOURCE_EXHAUSTED` saying `message`, with the retry hint.
pub fn saturated(message: impl Into<String>, retry_after_ms: u64) -> Status {
    with_retry_hint(Status::resource_exhausted(message), retry_after_ms)
}

/// `status` with a retry hint of `retry_after_ms` in its metadata.
fn with_retry_hint(mut status: Status, retry_after_ms: u64) -> Status {
    if let Ok(v) = retry_after_ms.to_string().parse() {
        status.metadata_mut().insert(RETRY_AFTER_MS, v);
    }
    status
}

/// What a sample must pass at a node's door (gRPC push, forward, remote write) before any
/// actor or the history sees it: checks that need the node's clock or that no later stage
/// makes.
#[derive(Debug, Clone, Copy)]
pub struct Door {
    pub now_ms: i64,
    pub max_future_ms: i64,
}

impl Door {
    /// Makes a sample, or counts in `refused` why not: an id that is not a valid component id
    /// (`unknown_component`), a metric name that is empty, over 128 bytes or holds a control
    /// character (`bad_metric`), a timestamp before 1970 or more than `max_future_ms` ahead of
    /// the clock (`bad_timestamp`).
    pub fn sample(
        &self,
        component: impl Into<String>,
        metric: String,
        ts_ms: i64,
        value: f64,
        refused: &mut IngestSummary,
    ) -> Option<Sample> {
        let Ok(component) = ComponentId::new(component) else {
            refused.unknown_component += 1;
            return None;
        };
        if metric.is_empty()
            || metric.len() > augur_types::MAX_ID_LEN
            || metric.chars().any(char::is_control)
        {
            refused.bad_metric += 1;
            return None;
        }
        if ts_ms < 0 || ts_ms > self.now_ms.saturating_add(self.max_future_ms) {
            refused.bad_timestamp += 1;
            return None;
        }
        Some(Sample {
            component,
            metric,
            ts_ms,
            value,
        })
    }

    /// A batch from the wire through [`Door::sample`]: the samples let in, and the counts of
    /// those refused.
    pub fn batch(&self, samples: Vec<augur_proto::pb::Sample>) -> (Vec<Sample>, IngestSummary) {
        let mut refused = IngestSummary::default();
        // The decoded strings move into the samples: no copy per sample.
        let samples = samples
            .into_iter()
            .filter_map(|s| {
                self.sample(s.component, s.metric, s.timestamp_ms, s.value, &mut refused)
            })
            .collect();
        (samples, refused)
    }
}

/// How long a remote-write client may take to send its body.
const REMOTE_WRITE_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// How many times its compressed size a remote-write body may decompress to.
const REMOTE_WRITE_MAX_EXPANSION: usize = 32;

/// Why a remote-write request is in a protocol this receiver does not read, if it is: 2.0
/// (`X-Prometheus-Remote-Write-Version` 2.x, or a `Content-Type` naming another message
/// than `prometheus.WriteRequest`), a body not in protobuf, or not snappy-compressed. Such a
/// body could decode as a 1.0 request with no series and be answered 204 with every sample
/// dropped; the specification's answer is 415, so the sender can fall back to 1.0. Headers
/// left out are taken as 1.0's.
fn unsupported_remote_write(headers: &hyper::HeaderMap) -> Option<String> {
    let text = |name: &str| {
        headers.get(name).map(|v| {
            v.to_str()
                .unwrap_or("(not text)")
                .trim()
                .to_ascii_lowercase()
        })
    };
    if let Some(v) = text("x-prometheus-remote-write-version") {
        if !v.starts_with("0.") && !v.starts_with("1.") {
            return Some(format!(
                "remote-write version {v} is not served here; send 1.0 \
                 (prometheus.WriteRequest)\n"
            ));
        }
    }
    if let Some(v) = text("content-type") {
        let mut parts = v.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default();
        let proto = parts.find_map(|p| p.strip_prefix("proto="));
        if media != "application/x-protobuf"
            || proto.is_some_and(|p| p.trim_matches('"') != "prometheus.writerequest")
        {
            return Some(format!(
                "content type {v} is not served here; send application/x-protobuf \
                 (prometheus.WriteRequest, remote write 1.0)\n"
            ));
        }
    }
    if let Some(v) = text("content-encoding") {
        if v != "snappy" {
            return Some(format!(
                "content encoding {v} is not served here; send snappy\n"
            ));
        }
    }
    None
}

/// Serves `POST /api/v1/write` (Prometheus remote write 1.0) on `addr` until the process
/// ends. 204 on success; 400 naming the problem for a body that cannot be read or a batch
/// that cannot be taken; 413 for a body over `max_body` bytes (or that decompresses to more
/// than 32 times that); 408 for a body not sent within 30 s; 429 with `Retry-After` when the
/// node is saturated. The body is read before an in-flight slot is taken, so a slow sender
/// holds none.
pub async fn serve_remote_write(
    addr: SocketAddr,
    predictors: Predictors,
    label: String,
    inflight: Arc<tokio::sync::Semaphore>,
    max_body: usize,
) -> anyhow::Result<()> {
    use http_body_util::{BodyExt, Full, Limited};
    use hyper::body::Bytes;
    use hyper::{Method, Response, StatusCode};

    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for remote write"))?;
    tracing::info!(%addr, "remote-write receiver serving");
    let label = Arc::new(label);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "remote-write accept failed");
                continue;
            }
        };
        // Replies go out at once, not after the client's delayed ACK (Nagle).
        stream.set_nodelay(true).ok();
        let predictors = predictors.clone();
        let label = label.clone();
        let inflight = inflight.clone();
        tokio::spawn(async move {
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let predictors = predictors.clone();
                    let label = label.clone();
                    let inflight = inflight.clone();
                    async move {
                        let reply = |code: StatusCode, msg: String| {
                            let mut r = Response::new(Full::new(Bytes::from(msg)));
                            *r.status_mut() = code;
                            r
                        };
                        if req.method() != Method::POST || req.uri().path() != "/api/v1/write" {
                            return Ok::<_, hyper::Error>(reply(
                                StatusCode::NOT_FOUND,
                                "only POST /api/v1/write is served here\n".into(),
                            ));
                        }
                        if let Some(why) = unsupported_remote_write(req.headers()) {
                            return Ok(reply(StatusCode::UNSUPPORTED_MEDIA_TYPE, why));
                        }
                        let read = tokio::time::timeout(
                            REMOTE_WRITE_BODY_TIMEOUT,
                            Limited::new(req.into_body(), max_body).collect(),
                        )
                        .await;
                        let body = match read {
                            Ok(Ok(b)) => b.to_bytes(),
                            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                                return Ok(reply(
                                    StatusCode::PAYLOAD_TOO_LARGE,
                                    format!("body is over the limit of {max_body} bytes\n"),
                                ))
                            }
                            Ok(Err(e)) => {
                                return Ok(reply(
                                    StatusCode::BAD_REQUEST,
                                    format!("reading the body: {e}\n"),
                                ))
                            }
                            Err(_) => {
                                return Ok(reply(
                                    StatusCode::REQUEST_TIMEOUT,
                                    format!(
                                        "body not sent within {} s\n",
                                        REMOTE_WRITE_BODY_TIMEOUT.as_secs()
                                    ),
                                ))
                            }
                        };
                        // 429, with a retry hint of a second.
                        let saturated = || {
                            let mut r = reply(StatusCode::TOO_MANY_REQUESTS, "saturated\n".into());
                            r.headers_mut().insert(
                                "retry-after",
                                hyper::header::HeaderValue::from_static("1"),
                            );
                            r
                        };
                        let Ok(permit) = inflight.try_acquire_owned() else {
                            return Ok(saturated());
                        };
                        let max_decoded = max_body.saturating_mul(REMOTE_WRITE_MAX_EXPANSION);
                        let max_samples = predictors.system().max_batch();
                        // Decompressing and decoding up to 32 MiB is CPU work: off the
                        // runtime's workers.
                        let decoded = tokio::task::spawn_blocking(move || {
                            augur_proto::prom::decode_remote_write(&body, max_decoded, max_samples)
                        })
                        .await;
                        use augur_proto::prom::RemoteWriteError as Rw;
                        let wr = match decoded {
                            Ok(Ok(w)) => w,
                            Ok(Err(
                                e @ (Rw::TooLarge { .. }
                                | Rw::TooManySamples { .. }
                                | Rw::TooManyElements { .. }),
                            )) => {
                                return Ok(reply(StatusCode::PAYLOAD_TOO_LARGE, format!("{e}\n")))
                            }
                            Ok(Err(e)) => {
                                return Ok(reply(StatusCode::BAD_REQUEST, format!("{e}\n")))
                            }
                            Err(e) => {
                                return Ok(reply(
                                    StatusCode::INTERNAL_SERVER_ERROR,
                                    format!("decoding failed: {e}\n"),
                                ))
                            }
                        };
                        let (labeled, left) = augur_proto::prom::remote_write_samples(&wr, &label);
                        if left.stale_markers > 0 {
                            metrics::counter!("augur_remote_write_stale_markers_total")
                                .increment(left.stale_markers);
                        }
                        let mut refused = IngestSummary {
                            unknown_component: left.no_component,
                            bad_metric: left.no_metric,
                            ..IngestSummary::default()
                        };
                        let door = predictors.door();
                        let samples: Vec<Sample> = labeled
                            .iter()
                            .filter_map(|s| {
                                door.sample(
                                    s.component,
                                    s.metric.to_owned(),
                                    s.ts_ms,
                                    s.value,
                                    &mut refused,
                                )
                            })
                            .collect();
                        match predictors
                            .take_recorded(samples, refused, permit, "remote_write")
                            .await
                        {
                            Ok(_) => Ok(reply(StatusCode::NO_CONTENT, String::new())),
                            Err(e) if e.code() == tonic::Code::ResourceExhausted => Ok(saturated()),
                            // Senders retry a 5xx and drop a 4xx: a batch that can never be
                            // taken is a 400, only a node that cannot serve now is a 503.
                            Err(e) => {
                                let code = match e.code() {
                                    tonic::Code::InvalidArgument | tonic::Code::OutOfRange => {
                                        StatusCode::BAD_REQUEST
                                    }
                                    _ => StatusCode::SERVICE_UNAVAILABLE,
                                };
                                Ok(reply(code, format!("{}\n", e.message())))
                            }
                        }
                    }
                });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await
            {
                tracing::debug!(error = %e, "remote-write connection ended");
            }
        });
    }
}

//! The handle the rest of the node uses: see [`PredictorSystem`].

use std::sync::{mpsc, Arc};
use std::time::Duration;

use actix::prelude::*;
use augur_predict::hazard::HazardModel;
use augur_predict::lstm::LstmModel;
use augur_predict::predictor::{default_hazard, Forecast};
use augur_types::ComponentId;
use futures::future::join_all;

use crate::component::{ComponentSetup, Ingested};
use crate::config::ActorsConfig;
use crate::error::ActorsError;
use crate::report::{ComponentSnapshot, IngestSummary, Sample, ShardSnapshot, TickReport};
use crate::scorer::{Scorer, Tick};
use crate::shard::{
    group_by_shard, AtRisk, Deregister, ForecastOf, IngestGroups, ObserveComponent, ObserveShard,
    Register, SeedGroups, Shard, WindowsOf, SHARD_MAILBOX,
};

/// Batches up to this many samples are grouped on the caller's thread (well under 0.5 ms);
/// larger ones on tokio's blocking pool when there is a runtime.
const INLINE_GROUPING_MAX: usize = 4_096;

/// The shard of a component among `shards`: FNV-1a of the id, modulo.
pub fn shard_of(id: &ComponentId, shards: usize) -> usize {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in id.as_str().bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    (h % shards.max(1) as u64) as usize
}

/// A component's risk in `[0, 1]`: `1 − HPS/100`.
pub fn risk_of(forecast: &Forecast) -> f64 {
    (1.0 - forecast.hps / 100.0).clamp(0.0, 1.0)
}

/// The node's predictors, as one cloneable handle with plain async methods, callable from
/// any tokio task (every future is `Send`; `Addr` is `Send`) over actors that run on their
/// own threads:
///
/// ```text
/// thread "augur-actors"   actix System: the Scorer (+ one SyncArbiter thread for the model)
/// K arbiter threads       one Shard each, and the ComponentActors of its components
/// ```
///
/// A component belongs to shard [`shard_of`]`(id, K)`: stable across runs and nodes.
/// [`PredictorSystem::ingest`] groups a batch by component and shard on the caller's thread
/// (one hash per run of a component's samples; tens of ns a sample) and sends each shard its
/// part in one message. Dropping the last clone (or
/// [`PredictorSystem::shutdown`]) stops the actors and their threads.
#[derive(Debug, Clone)]
pub struct PredictorSystem {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    shards: Vec<Addr<Shard>>,
    scorer: Addr<Scorer>,
    system: System,
    max_batch: usize,
    model_version: String,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.system.stop();
    }
}

impl PredictorSystem {
    /// Starts the actors with [`default_hazard`]. See [`PredictorSystem::start_with_hazard`].
    pub fn start(cfg: ActorsConfig, model: Arc<LstmModel>) -> Result<Self, ActorsError> {
        Self::start_with_hazard(cfg, model, default_hazard())
    }

    /// Validates `cfg`, then starts a dedicated thread running an actix `System` with
    /// `cfg.shards` arbiters, one [`Shard`] on each, and the [`Scorer`]. Blocks until they
    /// are up (a few ms): call it at startup, from any thread, inside a tokio runtime or not.
    pub fn start_with_hazard(
        cfg: ActorsConfig,
        model: Arc<LstmModel>,
        hazard: HazardModel,
    ) -> Result<Self, ActorsError> {
        Self::start_with(cfg, model, hazard, false)
    }

    /// [`PredictorSystem::start_with_hazard`]; with `keep_taken`, an ingest hands back the
    /// samples the actors took ([`PredictorSystem::ingest_keeping`]).
    pub fn start_with(
        cfg: ActorsConfig,
        model: Arc<LstmModel>,
        hazard: HazardModel,
        keep_taken: bool,
    ) -> Result<Self, ActorsError> {
        let cfg = cfg.validate().map_err(ActorsError::Config)?;
        let setup = Arc::new(ComponentSetup {
            keep_taken,
            ..ComponentSetup::new(cfg.predictor.clone(), hazard, &model.meta)
        });
        let model_version = setup.model_version.clone();
        let period = (cfg.tick_ms > 0).then(|| Duration::from_millis(cfg.tick_ms));
        let (shards, auto_register) = (cfg.shards, cfg.auto_register);
        let auto_forget_ticks = cfg.auto_forget_ticks;
        let (tx, rx) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("augur-actors".into())
            .spawn(move || {
                let runner = System::new();
                let arbiters: Vec<Arbiter> = (0..shards).map(|_| Arbiter::new()).collect();
                let started = runner.block_on(async {
                    let shards: Vec<Addr<Shard>> = arbiters
                        .iter()
                        .enumerate()
                        .map(|(i, arbiter)| {
                            let setup = Arc::clone(&setup);
                            Shard::start_in_arbiter(&arbiter.handle(), move |ctx| {
                                ctx.set_mailbox_capacity(SHARD_MAILBOX);
                                let auto = auto_register.then_some(auto_forget_ticks);
                                Shard::new(i, setup, auto)
                            })
                        })
                        .collect();
                    let scorer = Scorer::new(shards.clone(), model, period).start();
                    (shards, scorer, System::current())
                });
                if tx.send(started).is_err() {
                    return;
                }
                if let Err(e) = runner.run() {
                    tracing::error!(error = %e, "actor system ended with an error");
                }
                for arbiter in arbiters {
                    arbiter.stop();
                    let _ = arbiter.join();
                }
            })
            .map_err(ActorsError::Spawn)?;
        let (shards, scorer, system) = rx.recv().map_err(|_| ActorsError::Stopped)?;
        tracing::info!(shards = shards.len(), model = %model_version, "predictor actors started");
        Ok(Self {
            inner: Arc::new(Inner {
                shards,
                scorer,
                system,
                max_batch: cfg.max_batch,
                model_version: model_version.to_string(),
            }),
        })
    }

    /// Stops the actors (also done when the last handle is dropped); calls on any clone
    /// answer [`ActorsError::Stopped`] once they are gone.
    pub fn shutdown(&self) {
        self.inner.system.stop();
    }

    /// The number of shards.
    pub fn shards(&self) -> usize {
        self.inner.shards.len()
    }

    /// The model version written into forecasts.
    pub fn model_version(&self) -> &str {
        &self.inner.model_version
    }

    fn shard(&self, id: &ComponentId) -> &Addr<Shard> {
        &self.inner.shards[shard_of(id, self.inner.shards.len())]
    }

    fn split<T>(&self, items: Vec<T>, id: impl Fn(&T) -> &ComponentId) -> Vec<Vec<T>> {
        let k = self.inner.shards.len();
        if k == 1 {
            return vec![items];
        }
        let mut parts: Vec<Vec<T>> = (0..k)
            .map(|_| Vec::with_capacity(items.len() / k))
            .collect();
        for item in items {
            parts[shard_of(id(&item), k)].push(item);
        }
        parts
    }

    /// Allows components: their samples are taken from now on (their actors start on the
    /// first one). Answers how many were new.
    pub async fn register(
        &self,
        ids: impl IntoIterator<Item = ComponentId>,
    ) -> Result<usize, ActorsError> {
        self.count_per_shard(ids, Register).await
    }

    /// Forgets components and stops their actors. Answers how many were known.
    pub async fn deregister(
        &self,
        ids: impl IntoIterator<Item = ComponentId>,
    ) -> Result<usize, ActorsError> {
        self.count_per_shard(ids, Deregister).await
    }

    /// Sends shard `i` the message made of `parts[i]`, skipping empty parts; answers the
    /// replies of those sent.
    async fn send_parts<T, M>(
        &self,
        parts: Vec<Vec<T>>,
        message: impl Fn(Vec<T>) -> M,
    ) -> Vec<Result<M::Result, actix::MailboxError>>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        Shard: Handler<M>,
    {
        let sends = self
            .inner
            .shards
            .iter()
            .zip(parts)
            .filter(|(_, p)| !p.is_empty())
            .map(|(s, p)| s.send(message(p)));
        join_all(sends).await
    }

    /// Sends each shard its part of `ids` as one message and adds up the counts it answers.
    async fn count_per_shard<M>(
        &self,
        ids: impl IntoIterator<Item = ComponentId>,
        message: fn(Vec<ComponentId>) -> M,
    ) -> Result<usize, ActorsError>
    where
        M: Message<Result = usize> + Send + 'static,
        Shard: Handler<M>,
    {
        let parts = self.split(ids.into_iter().collect(), |id| id);
        let counts = self.send_parts(parts, message).await;
        counts.into_iter().try_fold(0, |sum, n| Ok(sum + n?))
    }

    /// The most samples one batch may hold (`max_batch`).
    pub fn max_batch(&self) -> usize {
        self.inner.max_batch
    }

    /// Whether a batch of `len` samples may be taken at all (`BatchTooLarge` if not): what
    /// [`PredictorSystem::ingest`] checks first.
    pub fn admits(&self, len: usize) -> Result<(), ActorsError> {
        if len > self.inner.max_batch {
            return Err(ActorsError::BatchTooLarge {
                len,
                max: self.inner.max_batch,
            });
        }
        Ok(())
    }

    /// Takes a batch of samples. A bad sample is counted under its kind and never stops the
    /// rest; a batch over `max_batch` is refused whole. Answers when every sample has been
    /// taken or counted.
    pub async fn ingest(&self, samples: Vec<Sample>) -> Result<IngestSummary, ActorsError> {
        Ok(self.ingest_keeping(samples).await?.summary)
    }

    /// [`PredictorSystem::ingest`], answering also, when the system was started to keep them
    /// ([`PredictorSystem::start_with`]), each component's samples the actors took: nothing
    /// they refused (a duplicate, a sample out of order, not finite, over the metric limit, of
    /// an unknown component). The samples come back, not copies: keeping them costs nothing
    /// on the actors' threads.
    pub async fn ingest_keeping(&self, samples: Vec<Sample>) -> Result<Ingested, ActorsError> {
        self.admits(samples.len())?;
        if samples.is_empty() {
            return Ok(Ingested::default());
        }
        let k = self.inner.shards.len();
        let parts = match tokio::runtime::Handle::try_current() {
            // Grouping takes tens of ns a sample: keep big batches off the async threads.
            Ok(rt) if samples.len() > INLINE_GROUPING_MAX => rt
                .spawn_blocking(move || group_by_shard(samples, k))
                .await
                .map_err(|_| ActorsError::Stopped)?,
            _ => group_by_shard(samples, k),
        };
        let replies = self.send_parts(parts, IngestGroups).await;
        let mut out = Ingested::default();
        for reply in replies {
            let reply = reply?;
            out.summary.merge(&reply.summary);
            out.taken.extend(reply.taken);
        }
        Ok(out)
    }

    /// The windows of these components (those that have had a sample here), as samples:
    /// what a peer seeds its copies with ([`PredictorSystem::seed`]).
    pub async fn windows(&self, ids: Vec<ComponentId>) -> Result<Vec<Sample>, ActorsError> {
        let parts = self.split(ids, |id| id);
        let mut out = Vec::new();
        for reply in self.send_parts(parts, WindowsOf).await {
            out.extend(reply?);
        }
        Ok(out)
    }

    /// Warms the windows of known components with older samples of their series from a
    /// peer's copies (see [`ComponentPredictor::seed`]); samples of unknown components are
    /// left out. Answers how many went in.
    ///
    /// [`ComponentPredictor::seed`]: augur_predict::predictor::ComponentPredictor::seed
    pub async fn seed(&self, samples: Vec<Sample>) -> Result<u64, ActorsError> {
        self.admits(samples.len())?;
        let parts = group_by_shard(samples, self.inner.shards.len());
        let mut n = 0;
        for reply in self.send_parts(parts, SeedGroups).await {
            n += reply?;
        }
        Ok(n)
    }

    /// Scores every component that had samples since its last step, in one batched model
    /// step, now. With `tick_ms > 0` this also happens on the timer.
    pub async fn tick(&self) -> Result<TickReport, ActorsError> {
        self.inner.scorer.send(Tick).await?
    }

    /// A component's last forecast; `None` if it is unknown or not scored yet.
    pub async fn forecast(&self, id: &ComponentId) -> Result<Option<Forecast>, ActorsError> {
        Ok(self.shard(id).send(ForecastOf(id.clone())).await?)
    }

    /// A component's snapshot; `None` if it is unknown or has had no sample yet.
    pub async fn observe(
        &self,
        id: &ComponentId,
    ) -> Result<Option<ComponentSnapshot>, ActorsError> {
        Ok(self.shard(id).send(ObserveComponent(id.clone())).await?)
    }

    /// Every shard's snapshot, in shard order.
    pub async fn observe_shards(&self) -> Result<Vec<ShardSnapshot>, ActorsError> {
        let replies = join_all(self.inner.shards.iter().map(|s| s.send(ObserveShard))).await;
        Ok(replies.into_iter().collect::<Result<_, _>>()?)
    }

    /// The up to `limit` scored components with the lowest Health Projection Score whose risk
    /// ([`risk_of`]) is at least `min_risk`, riskiest first (ties by id).
    pub async fn list_at_risk(
        &self,
        limit: usize,
        min_risk: f64,
    ) -> Result<Vec<(ComponentId, Forecast)>, ActorsError> {
        let max_hps = 100.0 * (1.0 - min_risk.clamp(0.0, 1.0));
        let msg = AtRisk { limit, max_hps };
        let replies = join_all(self.inner.shards.iter().map(|s| s.send(msg))).await;
        let mut all = Vec::new();
        for reply in replies {
            all.extend(reply?);
        }
        rank_at_risk(&mut all, limit, min_risk);
        Ok(all)
    }
}

/// Keeps the up to `limit` forecasts whose risk ([`risk_of`]) is at least `min_risk`,
/// riskiest (lowest HPS) first, ties by id: the order of [`PredictorSystem::list_at_risk`].
pub fn rank_at_risk(all: &mut Vec<(ComponentId, Forecast)>, limit: usize, min_risk: f64) {
    let max_hps = 100.0 * (1.0 - min_risk.clamp(0.0, 1.0));
    all.retain(|(_, f)| f.hps <= max_hps);
    all.sort_by(|a, b| a.1.hps.total_cmp(&b.1.hps).then_with(|| a.0.cmp(&b.0)));
    all.truncate(limit);
}

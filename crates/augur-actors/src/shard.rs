//! The per-arbiter router: see [`Shard`].

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use augur_predict::predictor::Forecast;
use augur_types::ComponentId;
use futures::future::join_all;

use crate::component::{
    ApplyStep, ComponentActor, ComponentSetup, ExportWindows, GetForecast, IngestPart, Ingested,
    Observe, Retire, Seed, TakeInputs,
};
use crate::config::AUTO_SWEEP_TICKS;
use crate::gather::gather;
use crate::report::{ComponentSnapshot, IngestSummary, Sample, ShardSnapshot};
use crate::system::shard_of;

/// Room for this many messages from callers before a sender waits: each caller usually has
/// one batch in flight, so this is about how many callers can queue at once.
pub const SHARD_MAILBOX: usize = 64;

/// Allows components on this shard; answers how many were new.
#[derive(Debug, Clone, Message)]
#[rtype(result = "usize")]
pub struct Register(pub Vec<ComponentId>);

/// Forgets components and stops their actors; answers how many were known.
#[derive(Debug, Clone, Message)]
#[rtype(result = "usize")]
pub struct Deregister(pub Vec<ComponentId>);

/// A batch of samples for components of this shard; answers the counts per outcome.
#[derive(Debug, Clone, Message)]
#[rtype(result = "IngestSummary")]
pub struct IngestBatch(pub Vec<Sample>);

/// Asks for the windows of these components (those with an actor) as samples.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Vec<Sample>")]
pub struct WindowsOf(pub Vec<ComponentId>);

/// Older samples from a peer's copies, grouped by component (each once), for components
/// this shard knows; answers how many went in. See [`Seed`].
#[derive(Debug, Message)]
#[rtype(result = "u64")]
pub(crate) struct SeedGroups(pub Vec<Group>);

/// Asks for a [`ShardSnapshot`].
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "ShardSnapshot")]
pub struct ObserveShard;

/// Asks one component of this shard for its snapshot.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Option<ComponentSnapshot>")]
pub struct ObserveComponent(pub ComponentId);

/// Asks one component of this shard for its forecast.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Option<Forecast>")]
pub struct ForecastOf(pub ComponentId);

/// The up to `limit` components with the lowest Health Projection Score at or below
/// `max_hps`, lowest first (ties by id).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Vec<(ComponentId, Forecast)>")]
pub struct AtRisk {
    /// Most components answered.
    pub limit: usize,
    /// Highest score answered.
    pub max_hps: f64,
}

/// Scoring: the stacked inputs of every due component, in id order.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "ShardInputs")]
pub(crate) struct CollectInputs;

/// This shard's part of a batched step, `ids.len()` rows in `ids` order.
#[derive(Debug, Clone, Default)]
pub(crate) struct ShardInputs {
    pub ids: Vec<ComponentId>,
    /// Whether the component wrote its row (it was due).
    pub present: Vec<bool>,
    pub x: Vec<f32>,
    pub h: Vec<f32>,
    pub c: Vec<f32>,
}

impl ShardInputs {
    /// Room for `n` rows, all absent; the ids are set by the caller.
    pub fn new(n: usize, inputs: usize, hidden: usize) -> Self {
        Self {
            ids: Vec::new(),
            present: vec![false; n],
            x: vec![0.0; n * inputs],
            h: vec![0.0; n * hidden],
            c: vec![0.0; n * hidden],
        }
    }

    /// Drops the absent rows, keeping the order of the others.
    fn compact(mut self, inputs: usize, hidden: usize) -> Self {
        if self.present.iter().all(|p| *p) {
            return self;
        }
        let mut kept = 0;
        for row in 0..self.ids.len() {
            if !self.present[row] {
                continue;
            }
            if kept != row {
                self.ids.swap(kept, row);
                self.x
                    .copy_within(row * inputs..(row + 1) * inputs, kept * inputs);
                self.h
                    .copy_within(row * hidden..(row + 1) * hidden, kept * hidden);
                self.c
                    .copy_within(row * hidden..(row + 1) * hidden, kept * hidden);
            }
            kept += 1;
        }
        self.ids.truncate(kept);
        self.present = vec![true; kept];
        self.x.truncate(kept * inputs);
        self.h.truncate(kept * hidden);
        self.c.truncate(kept * hidden);
        self
    }
}

/// The batched step's outputs for one shard's rows, shared by its components.
#[derive(Debug, Clone, Default)]
pub(crate) struct StepRows {
    pub inputs: usize,
    pub hidden: usize,
    pub next: Vec<f32>,
    pub p_fail: Vec<f32>,
    pub h: Vec<f32>,
    pub c: Vec<f32>,
}

/// Scoring: the step's outputs for the rows this shard sent, in the same order. Answers how
/// many components took theirs.
#[derive(Debug, Clone, Message)]
#[rtype(result = "usize")]
pub(crate) struct ApplyBatch {
    pub ids: Vec<ComponentId>,
    pub rows: StepRows,
}

/// Scoring failed: these components are still due.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub(crate) struct Requeue(pub Vec<ComponentId>);

/// One component as the shard knows it.
#[derive(Debug, Default)]
struct Slot {
    /// Started on the first sample.
    actor: Option<Addr<ComponentActor>>,
    /// In `Shard::due`.
    due: bool,
    /// From the last step that scored it.
    hps: Option<f64>,
    /// Created by a sample (auto-registered), not registered: forgotten when it goes quiet.
    auto: bool,
    /// The shard's tick count at its last sample.
    last_tick: u64,
}

/// The router of one arbiter: its components' actors, which are due, their last scores.
///
/// Crossing arbiters is expensive (~80k request/replies per second) and messages within one
/// are cheap (~2 M/s), so callers send a shard whole batches ([`IngestBatch`], or grouped by
/// component already from [`PredictorSystem::ingest`](crate::PredictorSystem::ingest)); the
/// shard sends one message per component to actors that live on its own thread (created on
/// the first sample of a registered component, or of any component with `auto_register`).
/// The actors add their counts to one tally for the batch instead of each answering: a
/// oneshot channel and a future per component cost more than the samples themselves.
///
/// It also keeps the components that are due for scoring (sent samples since their last
/// step) and each one's last Health Projection Score, so a tick asks only those actors for
/// their inputs and [`AtRisk`] asks only the riskiest for their forecasts.
pub struct Shard {
    index: usize,
    setup: Arc<ComponentSetup>,
    /// `Some(forget_after_ticks)` with `auto_register` on (0: never forget).
    auto: Option<u64>,
    /// Scoring ticks seen.
    tick: u64,
    components: HashMap<ComponentId, Slot>,
    due: Vec<ComponentId>,
    ingested: IngestSummary,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("index", &self.index)
            .field("components", &self.components.len())
            .finish_non_exhaustive()
    }
}

impl Shard {
    /// An empty shard. Start it in its arbiter with a mailbox of [`SHARD_MAILBOX`]. `auto`:
    /// take unregistered components, forgetting them after that many quiet ticks (0: never).
    pub fn new(index: usize, setup: Arc<ComponentSetup>, auto: Option<u64>) -> Self {
        Self {
            index,
            setup,
            auto,
            tick: 0,
            components: HashMap::new(),
            due: Vec::new(),
            ingested: IngestSummary::default(),
        }
    }

    fn publish_size(&self) {
        metrics::gauge!("augur_components", "shard" => self.index.to_string())
            .set(self.components.len() as f64);
    }

    /// Forgets the auto-registered components without a sample for `auto` ticks: dropping
    /// the only address stops the actor.
    fn forget_quiet(&mut self) {
        let Some(after) = self.auto.filter(|&t| t > 0) else {
            return;
        };
        let tick = self.tick;
        let before = self.components.len();
        self.components
            .retain(|_, s| !s.auto || tick - s.last_tick <= after);
        let forgotten = before - self.components.len();
        if forgotten > 0 {
            metrics::counter!("augur_components_forgotten_total").increment(forgotten as u64);
            self.publish_size();
        }
    }

    fn actor(&self, id: &ComponentId) -> Option<&Addr<ComponentActor>> {
        self.components.get(id).and_then(|s| s.actor.as_ref())
    }
}

impl Actor for Shard {
    type Context = Context<Self>;
}

impl Handler<Register> for Shard {
    type Result = usize;

    fn handle(&mut self, msg: Register, _: &mut Context<Self>) -> usize {
        let before = self.components.len();
        for id in msg.0 {
            self.components.entry(id).or_default().auto = false;
        }
        self.publish_size();
        self.components.len() - before
    }
}

impl Handler<Deregister> for Shard {
    type Result = ResponseFuture<usize>;

    /// Dropping the only address stops the actor once its mailbox is empty. Each actor is
    /// retired first, and the answer waits for it: by then every message queued before has
    /// been handled, and none after will take a sample.
    fn handle(&mut self, msg: Deregister, _: &mut Context<Self>) -> Self::Result {
        let mut retiring = Vec::new();
        let mut removed = 0;
        for id in &msg.0 {
            if let Some(slot) = self.components.remove(id) {
                removed += 1;
                if let Some(actor) = slot.actor {
                    retiring.push(actor.send(Retire));
                }
            }
        }
        self.publish_size();
        Box::pin(async move {
            // A mailbox error means the actor is gone already: nothing left to retire.
            join_all(retiring).await;
            removed
        })
    }
}

impl Handler<IngestBatch> for Shard {
    type Result = ResponseActFuture<Self, IngestSummary>;

    fn handle(&mut self, msg: IngestBatch, ctx: &mut Context<Self>) -> Self::Result {
        let groups = group_by_shard(msg.0, 1).pop().unwrap_or_default();
        Box::pin(
            self.handle(IngestGroups(groups), ctx)
                .map(|ingested, _, _| ingested.summary),
        )
    }
}

/// One component's samples of a batch, in batch order.
pub(crate) type Group = crate::component::ComponentSamples;

/// A batch already grouped by component (each component once), for this shard.
#[derive(Debug, Message)]
#[rtype(result = "Ingested")]
pub(crate) struct IngestGroups(pub Vec<Group>);

impl Handler<IngestGroups> for Shard {
    type Result = ResponseActFuture<Self, Ingested>;

    fn handle(&mut self, msg: IngestGroups, _: &mut Context<Self>) -> Self::Result {
        let (tally, done) = gather(Ingested::default());
        let mut unknown = 0;
        let mut created = false;
        for (id, samples) in msg.0 {
            if !self.components.contains_key(&id) {
                if self.auto.is_none() {
                    unknown += samples.len() as u64;
                    continue;
                }
                let slot = Slot {
                    auto: true,
                    ..Slot::default()
                };
                self.components.insert(id.clone(), slot);
                created = true;
            }
            let slot = self
                .components
                .get_mut(&id)
                .expect("present or just inserted");
            slot.last_tick = self.tick;
            let actor = slot.actor.get_or_insert_with(|| {
                ComponentActor::start_supervised(id.clone(), Arc::clone(&self.setup))
            });
            actor.do_send(IngestPart {
                samples,
                counted: None,
                taken: None,
                part: tally.clone(),
            });
            if !slot.due {
                slot.due = true;
                self.due.push(id);
            }
        }
        if created {
            self.publish_size();
        }
        tally.add(|t| t.summary.unknown_component += unknown);
        drop(tally);
        Box::pin(
            async move { done.await.unwrap_or_default() }
                .into_actor(self)
                .map(|ingested, shard, _| {
                    for (kind, n) in ingested.summary.by_kind() {
                        if n > 0 {
                            metrics::counter!("augur_samples_total", "outcome" => kind)
                                .increment(n);
                        }
                    }
                    shard.ingested.merge(&ingested.summary);
                    ingested
                }),
        )
    }
}

/// A batch's samples grouped by component, and the groups by shard (of `shards`): each
/// component once, its samples in batch order. A run of one component's samples costs one
/// hash; done on the thread that built the samples, which also frees their ids there.
pub(crate) fn group_by_shard(samples: Vec<Sample>, shards: usize) -> Vec<Vec<Group>> {
    let mut index: HashMap<ComponentId, usize> = HashMap::new();
    let mut groups: Vec<Vec<(String, i64, f64)>> = Vec::new();
    let mut run: Option<Group> = None;
    let mut flush = |run: Group, index: &mut HashMap<ComponentId, usize>| {
        let (id, mut samples) = run;
        match index.get(&id) {
            Some(&i) => groups[i].append(&mut samples),
            None => {
                index.insert(id, groups.len());
                groups.push(samples);
            }
        }
    };
    for s in samples {
        match &mut run {
            Some((id, v)) if *id == s.component => v.push((s.metric, s.ts_ms, s.value)),
            _ => {
                if let Some(r) = run.take() {
                    flush(r, &mut index);
                }
                let mut v = Vec::with_capacity(8);
                v.push((s.metric, s.ts_ms, s.value));
                run = Some((s.component, v));
            }
        }
    }
    if let Some(r) = run {
        flush(r, &mut index);
    }
    let mut parts: Vec<Vec<Group>> = (0..shards.max(1)).map(|_| Vec::new()).collect();
    let mut groups: Vec<Option<Vec<(String, i64, f64)>>> = groups.into_iter().map(Some).collect();
    let mut order: Vec<(ComponentId, usize)> = index.into_iter().collect();
    // Batch order of first appearance: the same batch makes the same messages.
    order.sort_unstable_by_key(|(_, i)| *i);
    for (id, i) in order {
        let shard = if shards > 1 { shard_of(&id, shards) } else { 0 };
        if let Some(samples) = groups[i].take() {
            parts[shard].push((id, samples));
        }
    }
    parts
}

impl Handler<WindowsOf> for Shard {
    type Result = ResponseFuture<Vec<Sample>>;

    fn handle(&mut self, msg: WindowsOf, _: &mut Context<Self>) -> Self::Result {
        let reqs: Vec<_> = msg
            .0
            .into_iter()
            .filter_map(|id| {
                let req = self.actor(&id)?.send(ExportWindows);
                Some((id, req))
            })
            .collect();
        Box::pin(async move {
            let (ids, reqs): (Vec<_>, Vec<_>) = reqs.into_iter().unzip();
            let mut out = Vec::new();
            for (id, rows) in ids.into_iter().zip(join_all(reqs).await) {
                for (metric, ts_ms, value) in rows.unwrap_or_default() {
                    out.push(Sample {
                        component: id.clone(),
                        metric,
                        ts_ms,
                        value,
                    });
                }
            }
            out
        })
    }
}

impl Handler<SeedGroups> for Shard {
    type Result = ResponseFuture<u64>;

    /// Only components this shard knows (registered, or auto-registered) are seeded: a peer's
    /// copy is no reason to take a component on.
    fn handle(&mut self, msg: SeedGroups, _: &mut Context<Self>) -> Self::Result {
        let mut reqs = Vec::new();
        for (id, samples) in msg.0 {
            let Some(slot) = self.components.get_mut(&id) else {
                continue;
            };
            let actor = slot.actor.get_or_insert_with(|| {
                ComponentActor::start_supervised(id.clone(), Arc::clone(&self.setup))
            });
            reqs.push(actor.send(Seed(samples)));
            if !slot.due {
                slot.due = true;
                self.due.push(id);
            }
        }
        Box::pin(async move { join_all(reqs).await.into_iter().flatten().sum() })
    }
}

impl Handler<ObserveShard> for Shard {
    type Result = MessageResult<ObserveShard>;

    fn handle(&mut self, _: ObserveShard, _: &mut Context<Self>) -> Self::Result {
        MessageResult(ShardSnapshot {
            index: self.index,
            registered: self.components.len(),
            actors: self
                .components
                .values()
                .filter(|s| s.actor.is_some())
                .count(),
            due: self.due.len(),
            ingested: self.ingested,
        })
    }
}

impl Handler<ObserveComponent> for Shard {
    type Result = ResponseFuture<Option<ComponentSnapshot>>;

    fn handle(&mut self, msg: ObserveComponent, _: &mut Context<Self>) -> Self::Result {
        let req = self.actor(&msg.0).map(|a| a.send(Observe));
        Box::pin(async move { req?.await.ok() })
    }
}

impl Handler<ForecastOf> for Shard {
    type Result = ResponseFuture<Option<Forecast>>;

    fn handle(&mut self, msg: ForecastOf, _: &mut Context<Self>) -> Self::Result {
        let req = self.actor(&msg.0).map(|a| a.send(GetForecast));
        Box::pin(async move { req?.await.ok().flatten() })
    }
}

impl Handler<AtRisk> for Shard {
    type Result = ResponseFuture<Vec<(ComponentId, Forecast)>>;

    fn handle(&mut self, msg: AtRisk, _: &mut Context<Self>) -> Self::Result {
        let mut found: Vec<(f64, &ComponentId, &Addr<ComponentActor>)> = self
            .components
            .iter()
            .filter_map(|(id, s)| match (s.hps, &s.actor) {
                (Some(hps), Some(a)) if hps <= msg.max_hps => Some((hps, id, a)),
                _ => None,
            })
            .collect();
        found.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(b.1)));
        // A few more than asked for: an actor restarted since its last score keeps that score
        // here but has no forecast, and must not take a place from the next one.
        let limit = msg.limit;
        found.truncate(limit.saturating_mul(2).saturating_add(16));
        let reqs: Vec<_> = found
            .into_iter()
            .map(|(_, id, a)| (id.clone(), a.send(GetForecast)))
            .collect();
        Box::pin(async move {
            let (ids, reqs): (Vec<_>, Vec<_>) = reqs.into_iter().unzip();
            ids.into_iter()
                .zip(join_all(reqs).await)
                .filter_map(|(id, f)| Some((id, f.ok()??)))
                .take(limit)
                .collect()
        })
    }
}

impl Handler<CollectInputs> for Shard {
    type Result = ResponseFuture<ShardInputs>;

    fn handle(&mut self, _: CollectInputs, _: &mut Context<Self>) -> Self::Result {
        self.tick += 1;
        if self.tick.is_multiple_of(AUTO_SWEEP_TICKS) {
            self.forget_quiet();
        }
        let mut due = std::mem::take(&mut self.due);
        // Rows in id order: the same samples give the same batch on every run.
        due.sort_unstable();
        // An id deregistered and registered again while due can be listed twice.
        due.dedup();
        let mut ids = Vec::with_capacity(due.len());
        for id in due {
            let Some(slot) = self.components.get_mut(&id) else {
                continue;
            };
            slot.due = false;
            if slot.actor.is_some() {
                ids.push(id);
            }
        }
        let (inputs, hidden) = (self.setup.inputs, self.setup.hidden);
        let (part, done) = gather(ShardInputs::new(ids.len(), inputs, hidden));
        for (row, id) in ids.iter().enumerate() {
            if let Some(actor) = self.actor(id) {
                actor.do_send(TakeInputs {
                    row,
                    part: part.clone(),
                });
            }
        }
        // Nothing has run yet: the actors are on this thread.
        part.add(|batch| batch.ids = ids);
        drop(part);
        Box::pin(async move {
            done.await
                .map(|b| b.compact(inputs, hidden))
                .unwrap_or_default()
        })
    }
}

impl Handler<ApplyBatch> for Shard {
    type Result = ResponseActFuture<Self, usize>;

    fn handle(&mut self, msg: ApplyBatch, _: &mut Context<Self>) -> Self::Result {
        let ApplyBatch { ids, rows } = msg;
        let rows = Arc::new(rows);
        let (part, done) = gather(vec![None; ids.len()]);
        for (row, id) in ids.iter().enumerate() {
            if let Some(actor) = self.actor(id) {
                actor.do_send(ApplyStep {
                    rows: Arc::clone(&rows),
                    row,
                    part: part.clone(),
                });
            }
        }
        drop(part);
        Box::pin(
            async move { done.await.unwrap_or_default() }
                .into_actor(self)
                .map(move |scores, shard, _| {
                    let mut scored = 0;
                    for (id, hps) in ids.iter().zip(scores) {
                        if let (Some(hps), Some(slot)) = (hps, shard.components.get_mut(id)) {
                            slot.hps = Some(hps);
                            scored += 1;
                        }
                    }
                    scored
                }),
        )
    }
}

impl Handler<Requeue> for Shard {
    type Result = ();

    fn handle(&mut self, msg: Requeue, _: &mut Context<Self>) {
        for id in msg.0 {
            if let Some(slot) = self.components.get_mut(&id) {
                if !slot.due {
                    slot.due = true;
                    self.due.push(id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(component: &str, metric: &str, ts_ms: i64) -> Sample {
        let component = ComponentId::new(component).unwrap();
        Sample {
            component,
            metric: metric.into(),
            ts_ms,
            value: ts_ms as f64,
        }
    }

    #[test]
    fn grouping_keeps_each_components_samples_in_batch_order() {
        let batch = vec![
            s("a", "x", 1),
            s("a", "y", 2),
            s("b", "x", 3),
            s("a", "x", 4),
            s("c", "x", 5),
            s("b", "y", 6),
        ];
        let parts = group_by_shard(batch, 1);
        let got: Vec<(&str, Vec<i64>)> = parts[0]
            .iter()
            .map(|(id, v)| (id.as_str(), v.iter().map(|(_, t, _)| *t).collect()))
            .collect();
        assert_eq!(
            got,
            [("a", vec![1, 2, 4]), ("b", vec![3, 6]), ("c", vec![5])]
        );
    }

    #[test]
    fn grouping_puts_each_component_on_its_shard() {
        let batch: Vec<Sample> = (0..200)
            .map(|i| s(&format!("c{}", i % 50), "m", i))
            .collect();
        let parts = group_by_shard(batch, 3);
        assert_eq!(parts.len(), 3);
        assert_eq!(
            parts.iter().map(Vec::len).sum::<usize>(),
            50,
            "each component once"
        );
        for (k, part) in parts.iter().enumerate() {
            for (id, samples) in part {
                assert_eq!(shard_of(id, 3), k);
                assert_eq!(samples.len(), 4);
            }
        }
    }
}

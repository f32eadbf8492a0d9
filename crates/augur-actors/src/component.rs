//! The actor of one monitored component: a thin shell over its
//! [`ComponentPredictor`]. Every handler is a few lines that call the pure model.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use actix::prelude::*;
use augur_predict::hazard::HazardModel;
use augur_predict::lstm::ModelMeta;
use augur_predict::predictor::{ComponentPredictor, Forecast, PredictorConfig};
use augur_types::ComponentId;

use crate::gather::Part;
use crate::report::{ComponentSnapshot, IngestSummary, MetricSnapshot};
use crate::shard::{ShardInputs, StepRows};

/// What every component of a node shares: the predictor settings, the hazard model and the
/// shape and version of the LSTM that scores them.
#[derive(Debug, Clone)]
pub struct ComponentSetup {
    /// Settings of each component's predictor.
    pub predictor: PredictorConfig,
    /// The failure-hazard model that turns anomaly and LSTM output into P(fail).
    pub hazard: HazardModel,
    /// Written into every forecast.
    pub model_version: Arc<str>,
    /// The LSTM's input width (metrics beyond it are scored by the detectors only).
    pub inputs: usize,
    /// The LSTM's hidden width: each component's state is two vectors of it.
    pub hidden: usize,
    /// Whether ingests from a shard hand back the samples they took ([`Ingested::taken`]),
    /// for a caller that keeps them (the node's metric history).
    pub keep_taken: bool,
}

impl ComponentSetup {
    /// The setup for a model; an unsaved model (empty version) is named
    /// `lstm-<inputs>x<hidden>-unsaved`.
    /// The predictor reads the model's inputs by name when the model names them.
    pub fn new(mut predictor: PredictorConfig, hazard: HazardModel, meta: &ModelMeta) -> Self {
        if predictor.inputs.is_empty() {
            predictor.inputs = meta.input_names();
        }
        let model_version = if meta.version.is_empty() {
            format!("lstm-{}x{}-unsaved", meta.inputs, meta.hidden)
        } else {
            meta.version.clone()
        };
        Self {
            predictor,
            hazard,
            model_version: model_version.into(),
            inputs: meta.inputs,
            hidden: meta.hidden,
            keep_taken: false,
        }
    }
}

/// Samples for this component: `(metric, ts_ms, value)`. Answers the counts per outcome.
#[derive(Debug, Clone, Message)]
#[rtype(result = "IngestSummary")]
pub struct Ingest {
    /// `(metric, ts_ms, value)`, taken in order.
    pub samples: Vec<(String, i64, f64)>,
}

/// Asks for a [`ComponentSnapshot`].
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "ComponentSnapshot")]
pub struct Observe;

/// Asks for the windows as samples `(metric, ts_ms, value)`, for a peer to warm its copy.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Vec<(String, i64, f64)>")]
pub struct ExportWindows;

/// Older samples of the component's series, from a peer's copy: see
/// [`ComponentPredictor::seed`]. Answers how many went in.
#[derive(Debug, Clone, Message)]
#[rtype(result = "u64")]
pub struct Seed(pub Vec<(String, i64, f64)>);

/// Asks for the last forecast.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Option<Forecast>")]
pub struct GetForecast;

/// What a batch's actors did with it: the counts per outcome, and, where the setup keeps
/// them ([`ComponentSetup::keep_taken`]), each component's samples they took, in order.
#[derive(Debug, Default)]
pub struct Ingested {
    /// How many samples went which way.
    pub summary: IngestSummary,
    /// Per component, the `(metric, ts_ms, value)` taken (empty unless kept).
    pub taken: Vec<ComponentSamples>,
}

/// One component's samples, `(metric, ts_ms, value)` each, in order.
pub type ComponentSamples = (ComponentId, Vec<(String, i64, f64)>);

/// [`Ingest`] from the shard, without a reply: the counts (and the samples taken) go to the
/// batch's tally when the message is dropped (after its handler ran; or undelivered, then
/// its samples count `lost`).
pub(crate) struct IngestPart {
    pub samples: Vec<(String, i64, f64)>,
    pub counted: Option<IngestSummary>,
    pub taken: Option<ComponentSamples>,
    pub part: Part<Ingested>,
}

impl Message for IngestPart {
    type Result = ();
}

impl Drop for IngestPart {
    fn drop(&mut self) {
        let lost = IngestSummary {
            lost: self.samples.len() as u64,
            ..Default::default()
        };
        let counted = self.counted.take().unwrap_or(lost);
        let taken = self.taken.take();
        self.part.add(|tally| {
            tally.summary.merge(&counted);
            tally.taken.extend(taken);
        });
    }
}

/// Scoring, first half: a due component (samples since its last step) writes its inputs and
/// LSTM state into `row` of the shard's batch; others leave the row absent.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct TakeInputs {
    pub row: usize,
    pub part: Part<ShardInputs>,
}

/// Scoring, second half: the component's row of the batched step's outputs. It writes its
/// new Health Projection Score into `row` of the shard's results, unless the result is for a
/// state it no longer has (it was restarted since [`TakeInputs`]).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct ApplyStep {
    pub rows: Arc<StepRows>,
    pub row: usize,
    pub part: Part<Vec<Option<f64>>>,
}

/// From its shard, when the component is deregistered: take no sample after this (they are
/// counted `unknown_component`), so none is taken once the answer is in.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub(crate) struct Retire;

/// One monitored component: its predictor state and last forecast, a thin shell over
/// [`ComponentPredictor`].
///
/// Messages: [`Ingest`] (answers the counts per outcome), [`Observe`] (a
/// [`ComponentSnapshot`]), [`GetForecast`]; and, from its shard, the two halves of a scoring
/// step.
///
/// Supervision: the actor runs under [`actix::Supervisor`] ([`ComponentActor::start_supervised`]).
/// actix does not catch panics itself, so each mutating handler runs the model inside
/// `catch_unwind`; a panic there is logged, counted (`augur_component_restarts_total`) and
/// turned into a stop, and the supervisor restarts the actor on the same mailbox with an
/// empty predictor ([`Supervised::restarting`]). Its address stays valid, the samples of the
/// failed message are counted `lost`, later messages are handled as usual, and the component
/// starts over like a newly registered one (windows refill, LSTM state from zero);
/// [`ComponentSnapshot::restarts`] counts the restarts.
pub struct ComponentActor {
    id: ComponentId,
    setup: Arc<ComponentSetup>,
    predictor: ComponentPredictor,
    /// Inputs were handed out for a step whose result has not come back.
    in_step: bool,
    /// Samples arrived while `in_step`: still due after the result is applied.
    redo: bool,
    /// Deregistered ([`Retire`]): samples still queued for it are not taken.
    retired: bool,
    restarts: u32,
}

impl std::fmt::Debug for ComponentActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentActor")
            .field("id", &self.id)
            .field("restarts", &self.restarts)
            .finish_non_exhaustive()
    }
}

impl ComponentActor {
    /// A component with empty state.
    pub fn new(id: ComponentId, setup: Arc<ComponentSetup>) -> Self {
        let predictor = ComponentPredictor::new(setup.hidden);
        Self {
            id,
            setup,
            predictor,
            in_step: false,
            redo: false,
            retired: false,
            restarts: 0,
        }
    }

    /// Starts the actor supervised, in the current arbiter, with an unbounded mailbox: its
    /// only sender is its shard, on the same thread, which bounds what it sends (one message
    /// per batch and per tick) and relies on their order.
    pub fn start_supervised(id: ComponentId, setup: Arc<ComponentSetup>) -> Addr<Self> {
        Supervisor::start(move |ctx: &mut Context<Self>| {
            ctx.set_mailbox_capacity(0);
            Self::new(id, setup)
        })
    }

    /// Runs `f`; a panic in it stops the actor (the supervisor restarts it empty) and gives
    /// `None`.
    fn shielded<R>(
        &mut self,
        ctx: &mut Context<Self>,
        f: impl FnOnce(&mut Self) -> R,
    ) -> Option<R> {
        match catch_unwind(AssertUnwindSafe(|| f(self))) {
            Ok(r) => Some(r),
            Err(panic) => {
                let why = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(
                    component = %self.id,
                    panic = %why,
                    "component actor panicked; restarting it with empty state"
                );
                metrics::counter!("augur_component_restarts_total").increment(1);
                ctx.stop();
                None
            }
        }
    }

    /// Judges `samples` in order; with `keep`, leaves in it only those taken (in place:
    /// nothing to allocate).
    fn ingest(&mut self, samples: &mut Vec<(String, i64, f64)>, keep: bool) -> IngestSummary {
        if self.retired {
            return IngestSummary {
                unknown_component: samples.len() as u64,
                ..IngestSummary::default()
            };
        }
        let mut summary = IngestSummary::default();
        let cfg = &self.setup.predictor;
        let predictor = &mut self.predictor;
        // `retain` visits each sample once, in order.
        let mut judge = |(metric, ts_ms, value): &(String, i64, f64)| match predictor
            .ingest(cfg, metric, *ts_ms, *value)
        {
            Ok(()) => {
                summary.accepted += 1;
                true
            }
            Err(why) => {
                summary.reject(why);
                false
            }
        };
        if keep {
            samples.retain(|x| judge(x));
        } else {
            for x in samples.iter() {
                judge(x);
            }
        }
        if summary.accepted > 0 && self.in_step {
            self.redo = true;
        }
        summary
    }

    fn is_due(&self) -> bool {
        self.predictor.is_dirty() || self.redo
    }

    fn take_inputs(&mut self, row: usize, part: &Part<ShardInputs>) {
        if !self.is_due() {
            return;
        }
        let (inputs, hidden) = (self.setup.inputs, self.setup.hidden);
        part.add(|batch| {
            self.predictor
                .lstm_input(&mut batch.x[row * inputs..(row + 1) * inputs]);
            let (h, c) = self.predictor.state_mut();
            batch.h[row * hidden..(row + 1) * hidden].copy_from_slice(h);
            batch.c[row * hidden..(row + 1) * hidden].copy_from_slice(c);
            batch.present[row] = true;
        });
        self.in_step = true;
        self.redo = false;
    }

    fn apply(&mut self, rows: &StepRows, row: usize) -> Option<f64> {
        let (inputs, hidden) = (self.setup.inputs, self.setup.hidden);
        if !self.in_step || rows.hidden != hidden || rows.inputs != inputs {
            return None;
        }
        self.in_step = false;
        let (h, c) = self.predictor.state_mut();
        h.copy_from_slice(&rows.h[row * hidden..(row + 1) * hidden]);
        c.copy_from_slice(&rows.c[row * hidden..(row + 1) * hidden]);
        let next = &rows.next[row * inputs..(row + 1) * inputs];
        let setup = &self.setup;
        if tracing::enabled!(target: "augur_actors::lstm_step", tracing::Level::DEBUG) {
            // What the LSTM saw and said, for looking into a forecast after the fact
            // (`RUST_LOG=augur_actors::lstm_step=debug`).
            let mut x = vec![0.0; inputs];
            self.predictor.lstm_input(&mut x);
            let names: Vec<String> = self.predictor.latest().into_iter().map(|m| m.0).collect();
            tracing::debug!(
                target: "augur_actors::lstm_step",
                component = %self.id,
                p_fail = rows.p_fail[row],
                ?x,
                ?names,
                "lstm step"
            );
        }
        let f = self.predictor.apply_step(
            next,
            rows.p_fail[row],
            &setup.hazard,
            setup.model_version.clone(),
        );
        Some(f.hps)
    }

    fn snapshot(&self) -> ComponentSnapshot {
        let window_capacity = self.setup.predictor.window.max(2);
        ComponentSnapshot {
            component: self.id.clone(),
            metrics: self
                .predictor
                .latest()
                .into_iter()
                .map(|(name, ts_ms, value, window_fill)| MetricSnapshot {
                    name,
                    ts_ms,
                    value,
                    window_fill,
                    window_capacity,
                })
                .collect(),
            forecast: self.predictor.forecast().cloned(),
            dirty: self.is_due(),
            heap_bytes: self.predictor.heap_bytes() + self.id.as_str().len(),
            restarts: self.restarts,
        }
    }
}

impl Actor for ComponentActor {
    type Context = Context<Self>;
}

impl Supervised for ComponentActor {
    /// After a panic: forget everything but the id and the restart count.
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.predictor = ComponentPredictor::new(self.setup.hidden);
        self.in_step = false;
        self.redo = false;
        self.restarts += 1;
    }
}

impl Handler<Ingest> for ComponentActor {
    type Result = MessageResult<Ingest>;

    fn handle(&mut self, mut msg: Ingest, ctx: &mut Context<Self>) -> Self::Result {
        let lost = IngestSummary {
            lost: msg.samples.len() as u64,
            ..Default::default()
        };
        MessageResult(
            self.shielded(ctx, |this| this.ingest(&mut msg.samples, false))
                .unwrap_or(lost),
        )
    }
}

impl Handler<Retire> for ComponentActor {
    type Result = ();

    fn handle(&mut self, _: Retire, _: &mut Context<Self>) {
        self.retired = true;
    }
}

impl Handler<ExportWindows> for ComponentActor {
    type Result = MessageResult<ExportWindows>;

    fn handle(&mut self, _: ExportWindows, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.predictor.windows())
    }
}

impl Handler<Seed> for ComponentActor {
    type Result = u64;

    fn handle(&mut self, msg: Seed, ctx: &mut Context<Self>) -> u64 {
        self.shielded(ctx, |this| {
            let n = this.predictor.seed(&this.setup.predictor, &msg.0);
            if n > 0 && this.in_step {
                this.redo = true;
            }
            n
        })
        .unwrap_or(0)
    }
}

impl Handler<Observe> for ComponentActor {
    type Result = MessageResult<Observe>;

    fn handle(&mut self, _: Observe, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.snapshot())
    }
}

impl Handler<GetForecast> for ComponentActor {
    type Result = Option<Forecast>;

    fn handle(&mut self, _: GetForecast, _: &mut Context<Self>) -> Self::Result {
        self.predictor.forecast().cloned()
    }
}

impl Handler<IngestPart> for ComponentActor {
    type Result = ();

    fn handle(&mut self, mut msg: IngestPart, ctx: &mut Context<Self>) {
        let keep = self.setup.keep_taken;
        let sent = msg.samples.len() as u64;
        let Some(summary) = self.shielded(ctx, |this| this.ingest(&mut msg.samples, keep)) else {
            // A panic part way through may have left fewer in `samples`: all were lost.
            msg.counted = Some(IngestSummary {
                lost: sent,
                ..IngestSummary::default()
            });
            return;
        };
        if keep && summary.accepted > 0 {
            msg.taken = Some((self.id.clone(), std::mem::take(&mut msg.samples)));
        }
        msg.counted = Some(summary);
    }
}

impl Handler<TakeInputs> for ComponentActor {
    type Result = ();

    fn handle(&mut self, msg: TakeInputs, ctx: &mut Context<Self>) {
        self.shielded(ctx, |this| this.take_inputs(msg.row, &msg.part));
    }
}

impl Handler<ApplyStep> for ComponentActor {
    type Result = ();

    fn handle(&mut self, msg: ApplyStep, ctx: &mut Context<Self>) {
        if let Some(hps) = self
            .shielded(ctx, |this| this.apply(&msg.rows, msg.row))
            .flatten()
        {
            msg.part.add(|scores| scores[msg.row] = Some(hps));
        }
    }
}

#[cfg(test)]
mod tests {
    use augur_predict::predictor::default_hazard;

    use super::*;
    use crate::gather::gather;

    /// Makes the handler panic, as a bug in the model would.
    #[derive(Message)]
    #[rtype(result = "()")]
    struct Crash;

    impl Handler<Crash> for ComponentActor {
        type Result = ();

        fn handle(&mut self, _: Crash, ctx: &mut Context<Self>) {
            self.shielded(ctx, |_| panic!("injected panic"));
        }
    }

    fn setup() -> Arc<ComponentSetup> {
        let meta = ModelMeta::new(vec!["a".into(), "b".into()], 4, 10, 1);
        Arc::new(ComponentSetup::new(
            PredictorConfig::default(),
            default_hazard(),
            &meta,
        ))
    }

    fn samples(from: i64, n: i64) -> Ingest {
        Ingest {
            samples: (from..from + n)
                .map(|t| ("cpu".to_string(), t, 1.0))
                .collect(),
        }
    }

    #[actix::test]
    async fn a_panicking_actor_is_restarted_empty_at_the_same_address() {
        let id = ComponentId::new("db-1").unwrap();
        let addr = ComponentActor::start_supervised(id, setup());
        let s = addr.send(samples(0, 5)).await.unwrap();
        assert_eq!(s.accepted, 5);
        assert_eq!(addr.send(Observe).await.unwrap().metrics[0].window_fill, 5);

        addr.send(Crash).await.unwrap();

        let snap = addr.send(Observe).await.unwrap();
        assert_eq!(snap.restarts, 1);
        assert!(snap.metrics.is_empty() && snap.forecast.is_none() && !snap.dirty);
        // Old timestamps are taken again: the state really is new.
        assert_eq!(addr.send(samples(0, 3)).await.unwrap().accepted, 3);
        assert_eq!(addr.send(Observe).await.unwrap().metrics[0].window_fill, 3);
    }

    /// A retired actor takes nothing more: samples queued behind the retirement are counted
    /// `unknown_component`, and none is handed back as taken.
    #[actix::test]
    async fn a_retired_actor_takes_no_more_samples() {
        let addr = ComponentActor::start_supervised(ComponentId::new("db-1").unwrap(), setup());
        assert_eq!(addr.send(samples(0, 5)).await.unwrap().accepted, 5);
        // Sent without waiting, as the shard does: handled in order all the same.
        addr.do_send(Retire);
        let after = addr.send(samples(5, 3)).await.unwrap();
        assert_eq!((after.accepted, after.unknown_component), (0, 3));
        assert_eq!(addr.send(Observe).await.unwrap().metrics[0].window_fill, 5);
    }

    /// The first half of a step for one component: its row, if it was due.
    async fn take(addr: &Addr<ComponentActor>, id: &ComponentId) -> Option<StepRows> {
        let mut batch = ShardInputs::new(1, 2, 4);
        batch.ids.push(id.clone());
        let (part, rx) = gather(batch);
        addr.do_send(TakeInputs { row: 0, part });
        let batch = rx.await.unwrap();
        batch.present[0].then(|| StepRows {
            inputs: 2,
            hidden: 4,
            next: vec![0.0; 2],
            p_fail: vec![0.5],
            h: batch.h,
            c: batch.c,
        })
    }

    /// The second half: the new score, if it was taken.
    async fn apply(addr: &Addr<ComponentActor>, rows: StepRows) -> Option<f64> {
        let (part, rx) = gather(vec![None]);
        addr.do_send(ApplyStep {
            rows: Arc::new(rows),
            row: 0,
            part,
        });
        rx.await.unwrap()[0]
    }

    #[actix::test]
    async fn a_step_result_for_a_state_lost_in_a_restart_is_ignored() {
        let id = ComponentId::new("db-2").unwrap();
        let addr = ComponentActor::start_supervised(id.clone(), setup());
        addr.send(samples(0, 5)).await.unwrap();
        let rows = take(&addr, &id).await.expect("due");
        addr.send(Crash).await.unwrap();
        assert_eq!(apply(&addr, rows).await, None);
        assert!(addr.send(GetForecast).await.unwrap().is_none());
    }

    #[actix::test]
    async fn samples_during_a_step_keep_the_component_due() {
        let id = ComponentId::new("db-3").unwrap();
        let addr = ComponentActor::start_supervised(id.clone(), setup());
        assert!(
            take(&addr, &id).await.is_none(),
            "not due before any sample"
        );
        addr.send(samples(0, 5)).await.unwrap();
        let rows = take(&addr, &id).await.expect("due");
        addr.send(samples(5, 1)).await.unwrap();
        assert!(apply(&addr, rows).await.is_some());
        assert!(addr.send(Observe).await.unwrap().dirty);
        let rows = take(&addr, &id).await.expect("still due");
        assert!(apply(&addr, rows).await.is_some());
        assert!(take(&addr, &id).await.is_none(), "scored, no longer due");
    }

    #[actix::test]
    async fn an_ingest_dropped_unhandled_counts_its_samples_lost() {
        let (part, rx) = gather(Ingested::default());
        drop(IngestPart {
            samples: samples(0, 3).samples,
            counted: None,
            taken: None,
            part,
        });
        let ingested = rx.await.unwrap();
        assert_eq!((ingested.summary.lost, ingested.taken.len()), (3, 0));
    }
}

//! Micro-batched scoring: see [`Scorer`].

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use augur_predict::lstm::LstmModel;
use futures::future::join_all;

use crate::error::ActorsError;
use crate::report::TickReport;
use crate::shard::{ApplyBatch, CollectInputs, Requeue, Shard, ShardInputs, StepRows};

/// Scores every due component now; answers what the tick did.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<TickReport, ActorsError>")]
pub struct Tick;

/// One batched model step, run on the worker thread.
#[derive(Debug, Message)]
#[rtype(result = "Result<StepResult, String>")]
struct Step {
    batch: usize,
    x: Vec<f32>,
    h: Vec<f32>,
    c: Vec<f32>,
}

/// The step's outputs and the new state, row-major by component.
#[derive(Debug)]
struct StepResult {
    next: Vec<f32>,
    p_fail: Vec<f32>,
    h: Vec<f32>,
    c: Vec<f32>,
}

/// Runs model steps off the async threads.
struct StepWorker {
    model: Arc<LstmModel>,
}

impl Actor for StepWorker {
    type Context = SyncContext<Self>;
}

impl Handler<Step> for StepWorker {
    type Result = Result<StepResult, String>;

    fn handle(&mut self, msg: Step, _: &mut SyncContext<Self>) -> Self::Result {
        let Step {
            batch,
            x,
            mut h,
            mut c,
        } = msg;
        let model = &self.model;
        let out = catch_unwind(AssertUnwindSafe(|| model.step(batch, &x, &mut h, &mut c)))
            .map_err(|_| "the model step panicked".to_string())?
            .map_err(|e| e.to_string())?;
        Ok(StepResult {
            next: out.next,
            p_fail: out.p_fail,
            h,
            c,
        })
    }
}

/// The batcher, one per node. On each [`Tick`] (its own timer, or an explicit message) it
/// collects the inputs and LSTM state of every due component from every shard, stacks them
/// into one batch, runs ONE [`LstmModel::step`] for the whole batch on a [`SyncArbiter`]
/// thread (never on an async one), and hands each shard its rows back; the shard gives each
/// component its slice, which updates its forecast.
///
/// Ticks never overlap (the scorer handles [`Tick`] atomically), so a component's state is
/// never out for two steps at once. If the step fails, every component stays due.
pub struct Scorer {
    shards: Vec<Addr<Shard>>,
    worker: Addr<StepWorker>,
    period: Option<Duration>,
    inputs: usize,
    hidden: usize,
}

impl std::fmt::Debug for Scorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scorer")
            .field("shards", &self.shards.len())
            .field("period", &self.period)
            .finish_non_exhaustive()
    }
}

impl Scorer {
    /// A scorer over `shards`, stepping `model` on its own thread; it ticks itself every
    /// `period` if one is given. Call from inside a running actix `System`.
    pub fn new(shards: Vec<Addr<Shard>>, model: Arc<LstmModel>, period: Option<Duration>) -> Self {
        let (inputs, hidden) = (model.meta.inputs, model.meta.hidden);
        // One thread: steps are serialised by the scorer anyway, and one batched matmul
        // already uses what the tensor library parallelises.
        let worker = SyncArbiter::start(1, move || StepWorker {
            model: Arc::clone(&model),
        });
        Self {
            shards,
            worker,
            period,
            inputs,
            hidden,
        }
    }
}

impl Actor for Scorer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(period) = self.period {
            ctx.run_interval(period, |_, ctx| ctx.notify(Tick));
        }
    }
}

impl Handler<Tick> for Scorer {
    type Result = AtomicResponse<Self, Result<TickReport, ActorsError>>;

    fn handle(&mut self, _: Tick, _: &mut Context<Self>) -> Self::Result {
        let fut = score(
            self.shards.clone(),
            self.worker.clone(),
            self.inputs,
            self.hidden,
        );
        AtomicResponse::new(Box::pin(fut.into_actor(self).map(|report, _, _| {
            if let Err(e) = &report {
                tracing::warn!(error = %e, "scoring tick failed");
            }
            report
        })))
    }
}

async fn score(
    shards: Vec<Addr<Shard>>,
    worker: Addr<StepWorker>,
    inputs: usize,
    hidden: usize,
) -> Result<TickReport, ActorsError> {
    let started = Instant::now();
    let parts: Vec<ShardInputs> = join_all(shards.iter().map(|s| s.send(CollectInputs)))
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let batch: usize = parts.iter().map(|p| p.ids.len()).sum();
    if batch == 0 {
        return Ok(TickReport::default());
    }
    let (mut x, mut h, mut c) = (
        Vec::with_capacity(batch * inputs),
        Vec::with_capacity(batch * hidden),
        Vec::with_capacity(batch * hidden),
    );
    for p in &parts {
        x.extend_from_slice(&p.x);
        h.extend_from_slice(&p.h);
        c.extend_from_slice(&p.c);
    }
    let out = match worker.send(Step { batch, x, h, c }).await? {
        Ok(out) => out,
        Err(message) => {
            for (shard, part) in shards.iter().zip(parts) {
                shard.do_send(Requeue(part.ids));
            }
            return Err(ActorsError::Model { message });
        }
    };
    let mut applies = Vec::with_capacity(shards.len());
    let mut row = 0;
    for (shard, part) in shards.iter().zip(parts) {
        let n = part.ids.len();
        if n == 0 {
            continue;
        }
        let (a, b) = (row, row + n);
        applies.push(shard.send(ApplyBatch {
            ids: part.ids,
            rows: StepRows {
                inputs,
                hidden,
                next: out.next[a * inputs..b * inputs].to_vec(),
                p_fail: out.p_fail[a..b].to_vec(),
                h: out.h[a * hidden..b * hidden].to_vec(),
                c: out.c[a * hidden..b * hidden].to_vec(),
            },
        }));
        row = b;
    }
    let scored = join_all(applies)
        .await
        .into_iter()
        .map(|r| r.unwrap_or(0))
        .sum();
    metrics::histogram!("augur_score_batch_size").record(batch as f64);
    metrics::histogram!("augur_score_tick_seconds").record(started.elapsed().as_secs_f64());
    tracing::debug!(batch, scored, elapsed = ?started.elapsed(), "scoring tick");
    Ok(TickReport {
        scored,
        batch_size: batch,
        steps: 1,
    })
}

//! One run of the experiment. See the crate docs.

use std::collections::BTreeMap;

use augur_plan::judge::{judge, GateConfig, Kpis};
use augur_plan::shift::{GateOutcome, Shift, ShiftStep, DEFAULT_STEPS};
use augur_plan::{plan_failovers, ComponentRisk, Mode as DecisionMode, PlannerConfig};
use augur_predict::lstm::{LstmModel, SeededRng};
use augur_predict::predictor::{default_hazard, ComponentPredictor, PredictorConfig};
use augur_predict::threshold::{Direction, Limit};
use augur_types::{
    Component, ComponentId, ControlState, Host, Placement, ShadowRecord, ShadowState,
    TrafficWeights,
};
use thiserror::Error;

use crate::fleet::{FaultKind, Fleet, FleetConfig, Observation};
use crate::report::{Event, Report, RunReport};

/// A component whose HPS is back at or above this (and P(fail) under its threshold) has
/// recovered: a failover not yet shifting traffic is cancelled.
const RECOVERED_HPS: f64 = 50.0;

/// The fleet's error rate when nothing is wrong.
const BACKGROUND_ERRORS: f64 = 0.001;

#[derive(Debug, Error)]
pub enum SimError {
    #[error("sim config: {0}")]
    Config(String),
    #[error("model: {0}")]
    Model(String),
    /// A rule of the planner was broken: a bug.
    #[error("invariant broken: {0}")]
    Invariant(String),
}

/// Which failover runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Health checks only.
    Reactive,
    /// Health checks, and Augur moving traffic first.
    Predictive,
}

/// The experiment's knobs.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub fleet: FleetConfig,
    pub seed: u64,
    /// Simulated seconds per tick.
    pub tick_s: f64,
    /// How long a health check takes to see a crash (`inter 1s fall 3`: 3 s).
    pub detect_s: f64,
    /// Ticks P(fail) must stay over the threshold before a failover starts.
    pub confirm_ticks: u32,
    pub provision_s: f64,
    pub sync_s: f64,
    pub validate_s: f64,
    /// How long each shift step is gated.
    pub step_s: f64,
    /// Share of shadows that come up slow (the gate must catch them).
    pub bad_shadow_p: f64,
    /// A component whose shift rolled back is not moved again for this long.
    pub cooldown_s: f64,
    /// Cancel a failover before any traffic moves when the component has recovered.
    pub cancel_on_recovery: bool,
    pub planner: PlannerConfig,
    pub gate: GateConfig,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            fleet: FleetConfig::default(),
            seed: 7,
            tick_s: 10.0,
            detect_s: 3.0,
            confirm_ticks: 3,
            provision_s: 60.0,
            sync_s: 30.0,
            validate_s: 30.0,
            step_s: 30.0,
            bad_shadow_p: 0.1,
            cooldown_s: 600.0,
            cancel_on_recovery: true,
            planner: PlannerConfig::default(),
            gate: GateConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Provisioning { until: f64 },
    Syncing { until: f64 },
    Validating { until: f64 },
    Shifting { until: f64 },
}

#[derive(Debug)]
struct ShadowRun {
    id: ComponentId,
    host: usize,
    bad: bool,
    phase: Phase,
    shift: Option<Shift>,
    decided_s: f64,
    /// Whether the instance was degrading towards a crash when the shift started.
    warranted: bool,
}

/// One slot of a service: the original instance (until it is replaced) and its shadow.
#[derive(Debug)]
struct Slot {
    id: ComponentId,
    /// Replaced by a healthy shadow (the original process retired).
    replaced: bool,
    host: usize,
    shadow: Option<ShadowRun>,
    predictor: ComponentPredictor,
    /// Consecutive ticks over / under the action threshold.
    over: u32,
    under: u32,
    cooldown_until: f64,
    /// When its current crash was first seen (for the health check's delay).
    down_since: Option<f64>,
}

/// Runs both modes on the same fleet and fault schedule and reports them side by side.
pub fn run(
    cfg: &SimConfig,
    model: &LstmModel,
    on_event: &mut dyn FnMut(&Event, f64),
) -> Result<Report, SimError> {
    if !(cfg.tick_s > 0.0 && cfg.detect_s >= 0.0 && cfg.fleet.hours > 1.0) {
        return Err(SimError::Config(
            "tick_s must be positive and hours above 1".into(),
        ));
    }
    let total = cfg.fleet.degrading_faults + cfg.fleet.sudden_faults + cfg.fleet.false_alarms;
    if total > cfg.fleet.services * cfg.fleet.instances_per_service {
        return Err(SimError::Config(format!(
            "{total} faults for {} instances",
            cfg.fleet.services * cfg.fleet.instances_per_service
        )));
    }
    let fleet = Fleet::generate(cfg.fleet.clone(), cfg.seed);
    let reactive = run_one(cfg, &fleet, model, Mode::Reactive, on_event)?;
    let predictive = run_one(cfg, &fleet, model, Mode::Predictive, on_event)?;
    let ratio = |p: u64, r: u64| {
        if r == 0 {
            0.0
        } else {
            1.0 - p as f64 / r as f64
        }
    };
    let fault_failed = |r: &RunReport| {
        r.requests.failed_degrade_then_crash
            + r.requests.failed_sudden
            + r.requests.failed_false_alarm
    };
    Ok(Report {
        seed: cfg.seed,
        hours: cfg.fleet.hours,
        components: fleet.instances.len(),
        hosts: fleet.hosts(),
        faults_degrade_then_crash: cfg.fleet.degrading_faults,
        faults_sudden: cfg.fleet.sudden_faults,
        false_alarms: cfg.fleet.false_alarms,
        reduction_degrade_then_crash: ratio(
            predictive.requests.failed_degrade_then_crash,
            reactive.requests.failed_degrade_then_crash,
        ),
        reduction_sudden: ratio(
            predictive.requests.failed_sudden,
            reactive.requests.failed_sudden,
        ),
        reduction_all_faults: ratio(fault_failed(&predictive), fault_failed(&reactive)),
        reactive,
        predictive,
    })
}

fn state_of(fleet: &Fleet) -> ControlState {
    let mut s = ControlState::default();
    for h in 0..fleet.hosts() {
        let (host, rack, zone) = fleet.host_names(h);
        s.hosts.insert(
            host.clone(),
            Host {
                placement: Placement { host, rack, zone },
                capacity: fleet.cfg.host_capacity,
            },
        );
    }
    for inst in &fleet.instances {
        let id = ComponentId::new(inst.name.clone()).expect("generated names are valid ids");
        let (host, rack, zone) = fleet.host_names(inst.host);
        s.components.insert(
            id.clone(),
            Component {
                id,
                class: "service".into(),
                group: format!("svc{:02}", inst.service),
                criticality: 3,
                placement: Placement { host, rack, zone },
                labels: BTreeMap::new(),
            },
        );
    }
    s
}

fn run_one(
    cfg: &SimConfig,
    fleet: &Fleet,
    model: &LstmModel,
    mode: Mode,
    on_event: &mut dyn FnMut(&Event, f64),
) -> Result<RunReport, SimError> {
    let mode_name = match mode {
        Mode::Reactive => "reactive",
        Mode::Predictive => "predictive",
    };
    let mut report = RunReport {
        mode: mode_name.into(),
        ..RunReport::default()
    };
    let mut emit = |t: f64, what: String, progress: f64| {
        on_event(
            &Event {
                t_s: t,
                mode: mode_name.into(),
                what,
            },
            progress,
        )
    };
    let (inputs, hidden) = (model.meta.inputs, model.meta.hidden);
    let predictor_cfg = PredictorConfig {
        limits: vec![(
            "mem_pct".into(),
            Limit {
                value: 100.0,
                direction: Direction::Rising,
            },
        )],
        inputs: model.meta.input_names(),
        ..PredictorConfig::default()
    };
    let hazard = default_hazard();
    // One copy of the version for every forecast.
    let version: std::sync::Arc<str> = model.meta.version.as_str().into();
    let mut state = state_of(fleet);
    let mut slots: Vec<Slot> = fleet
        .instances
        .iter()
        .map(|inst| Slot {
            id: ComponentId::new(inst.name.clone()).expect("valid"),
            replaced: false,
            host: inst.host,
            shadow: None,
            predictor: ComponentPredictor::new(hidden),
            over: 0,
            under: 0,
            cooldown_until: 0.0,
            down_since: None,
        })
        .collect();
    let per_service = fleet.cfg.instances_per_service;
    let mut weights: Vec<TrafficWeights> = (0..fleet.cfg.services)
        .map(|s| {
            let n = per_service as u32;
            (0..per_service)
                .map(|k| {
                    let w = 100 / n + u32::from((k as u32) < 100 % n);
                    (slots[s * per_service + k].id.clone(), w)
                })
                .collect()
        })
        .collect();
    // The same noise in both runs: one generator for the fleet's telemetry, another for
    // what only the predictive run draws.
    let mut noise = SeededRng::new(cfg.seed ^ 0x5151);
    let mut extra = SeededRng::new(cfg.seed ^ 0xa5a5);
    let ticks = (fleet.cfg.hours * 3600.0 / cfg.tick_s).ceil() as usize;
    let mut healthy_s = 0.0;
    // Failed requests by cause, summed unrounded: [background, degrade, sudden, false alarm].
    let mut failed = [0.0f64; 4];
    let fault_of = |i: usize| fleet.faults.iter().find(|f| f.instance == i).copied();
    for tick in 0..ticks {
        let t = tick as f64 * cfg.tick_s;
        let progress = tick as f64 / ticks as f64;
        // What every original process shows now (drawn in both runs alike).
        let obs: Vec<Observation> = (0..slots.len())
            .map(|i| fleet.observe(i, t, &mut noise))
            .collect();
        for (i, slot) in slots.iter().enumerate() {
            let fault = fault_of(i);
            let in_degrade = fault.is_some_and(|f| {
                f.kind == FaultKind::DegradeThenCrash
                    && t >= f.start_s
                    && t < f.start_s + f.duration_s
            });
            if slot.replaced || (obs[i].up && !in_degrade) {
                healthy_s += cfg.tick_s;
            }
        }
        // Traffic: every service's requests over its members in rotation.
        for (s, w) in weights.iter().enumerate() {
            let rps = fleet.cfg.service_rps;
            let requests = rps * cfg.tick_s;
            report.requests.total += requests as u64;
            // (weight, error rate, caused by, down and still in rotation)
            let mut members: Vec<(f64, f64, Option<FaultKind>, bool)> = Vec::new();
            for k in 0..per_service {
                let i = s * per_service + k;
                let slot = &mut slots[i];
                if let Some(&wt) = w.get(&slot.id) {
                    let (up, err, cause) = if slot.replaced {
                        (true, 0.001, None)
                    } else {
                        let o = obs[i];
                        let cause = fault_of(i).filter(|f| t >= f.start_s).map(|f| f.kind);
                        (o.up, o.error_rate, cause)
                    };
                    if up {
                        slot.down_since = None;
                        members.push((f64::from(wt), err, cause, false));
                    } else {
                        let since = *slot.down_since.get_or_insert(t);
                        // Still in rotation until the health check has seen it.
                        if t - since < cfg.detect_s {
                            members.push((f64::from(wt), 1.0, cause, true));
                        }
                    }
                }
                if let Some(sh) = &slot.shadow {
                    if let Some(&wt) = w.get(&sh.id) {
                        let err = 0.001;
                        members.push((f64::from(wt), err, None, false));
                    }
                }
            }
            let sum: f64 = members.iter().map(|m| m.0).sum();
            if sum <= 0.0 {
                // Nothing in rotation: every request fails, blamed on the fault that took
                // the last member down.
                failed[2] += requests;
                continue;
            }
            for (wt, err, cause, detecting) in members {
                let share = requests * wt / sum;
                // A crashed member fails its share for the health check's delay only.
                let lost = if detecting {
                    share * (cfg.detect_s / cfg.tick_s).min(1.0)
                } else {
                    share * err
                };
                // A faulty member's errors beyond the fleet's background rate are the fault's.
                let background = if detecting {
                    0.0
                } else {
                    share * BACKGROUND_ERRORS.min(err)
                };
                let slot = match cause {
                    Some(FaultKind::DegradeThenCrash) => 1,
                    Some(FaultKind::Sudden) => 2,
                    Some(FaultKind::FalseAlarm) => 3,
                    None => 0,
                };
                failed[0] += background;
                failed[slot] += lost - background;
            }
        }
        // Count crashes of instances still serving traffic (missed faults).
        for (i, slot) in slots.iter().enumerate() {
            if let Some(f) = fault_of(i) {
                if f.kind == FaultKind::DegradeThenCrash {
                    let crash = f.start_s + f.duration_s;
                    if t <= crash && crash < t + cfg.tick_s {
                        if slot.replaced {
                            report.predicted += 1;
                        } else {
                            report.missed += 1;
                            emit(
                                t,
                                format!("{} crashed while serving traffic", slot.id),
                                progress,
                            );
                        }
                    }
                }
            }
        }
        if mode == Mode::Reactive {
            continue;
        }

        // Telemetry into each component's predictor (the process serving as it: the original
        // until replaced, then its replacement, which is healthy).
        let mut dirty = Vec::new();
        // Whether each instance answered this tick: a down one sends nothing, and its last
        // forecast (from before it went down) is not acted on.
        let mut up_now = vec![true; slots.len()];
        for (i, slot) in slots.iter_mut().enumerate() {
            let o = if slot.replaced {
                let base = &fleet.instances[i];
                Observation {
                    up: true,
                    latency_ms: fleet.healthy_latency_ms(i, t) * (1.0 + 0.04 * extra.normal()),
                    error_rate: 0.001,
                    mem_pct: base.base_mem_pct + 1.5 * extra.normal(),
                }
            } else {
                obs[i]
            };
            up_now[i] = o.up;
            if !o.up {
                continue;
            }
            let ts = (t * 1000.0) as i64;
            for (metric, v) in [
                ("latency_ms", o.latency_ms),
                ("error_rate", o.error_rate),
                ("mem_pct", o.mem_pct),
            ] {
                let _ = slot.predictor.ingest(&predictor_cfg, metric, ts, v);
            }
            if slot.predictor.is_dirty() {
                dirty.push(i);
            }
        }
        // One batched model step for every component with new samples.
        if !dirty.is_empty() {
            let b = dirty.len();
            let (mut x, mut h, mut c) = (
                vec![0f32; b * inputs],
                Vec::with_capacity(b * hidden),
                Vec::with_capacity(b * hidden),
            );
            for (row, &i) in dirty.iter().enumerate() {
                slots[i]
                    .predictor
                    .lstm_input(&mut x[row * inputs..(row + 1) * inputs]);
                let (hh, cc) = slots[i].predictor.state_mut();
                h.extend_from_slice(hh);
                c.extend_from_slice(cc);
            }
            let out = model
                .step(b, &x, &mut h, &mut c)
                .map_err(|e| SimError::Model(e.to_string()))?;
            for (row, &i) in dirty.iter().enumerate() {
                let p = &mut slots[i].predictor;
                let (hh, cc) = p.state_mut();
                hh.copy_from_slice(&h[row * hidden..(row + 1) * hidden]);
                cc.copy_from_slice(&c[row * hidden..(row + 1) * hidden]);
                p.apply_step(
                    &out.next[row * inputs..(row + 1) * inputs],
                    out.p_fail[row],
                    &hazard,
                    version.clone(),
                );
            }
        }

        // Risk of every component, and the planner's decisions on those confirmed over their
        // threshold.
        let mut risks = BTreeMap::new();
        for (i, slot) in slots.iter_mut().enumerate() {
            let Some(f) = slot.predictor.forecast().filter(|_| up_now[i]) else {
                slot.over = 0;
                continue;
            };
            let s = fleet.instances[i].service;
            let share = weights[s].get(&slot.id).copied().unwrap_or(0);
            let r = ComponentRisk {
                p_fail: f.p_fail[1],
                hps: f.hps,
                blast_radius: f64::from(share) / 100.0,
            };
            let policy = state.policy_for(&format!("svc{s:02}"));
            let threshold = augur_plan::failover::threshold(r.blast_radius, &policy, &cfg.planner);
            if r.p_fail >= threshold {
                slot.over += 1;
                slot.under = 0;
            } else {
                slot.over = 0;
                // Recovered: under the threshold AND a healthy projection (no limit being
                // approached), not merely a detector that got used to a degradation.
                if r.hps >= RECOVERED_HPS {
                    slot.under += 1;
                } else {
                    slot.under = 0;
                }
            }
            if slot.over >= cfg.confirm_ticks && slot.shadow.is_none() && t >= slot.cooldown_until {
                risks.insert(slot.id.clone(), r);
            }
        }
        for d in plan_failovers(&state, &risks, &cfg.planner) {
            let i = slots
                .iter()
                .position(|s| s.id == d.component)
                .expect("planned slots exist");
            let Some(to) = d.to else {
                report.no_room += 1;
                continue;
            };
            if d.mode == DecisionMode::Recommend {
                report.recommendations += 1;
                continue;
            }
            let host = (0..fleet.hosts())
                .find(|&h| fleet.host_names(h).0 == to.host)
                .expect("planned hosts exist");
            let fault = fault_of(i);
            let warranted = !slots[i].replaced
                && fault.is_some_and(|f| {
                    f.kind == FaultKind::DegradeThenCrash
                        && t >= f.start_s
                        && t < f.start_s + f.duration_s
                });
            let why_false = if warranted {
                ""
            } else {
                match fault {
                    Some(f) if f.kind == FaultKind::FalseAlarm && t >= f.start_s => {
                        " [false alarm]"
                    }
                    _ => " [healthy]",
                }
            };
            report.shifts_started += 1;
            let shadow_id = ComponentId::new(format!("{}-s{}", slots[i].id, report.shifts_started))
                .expect("valid id");
            state.shadows.insert(
                slots[i].id.clone(),
                ShadowRecord {
                    shadow: shadow_id.clone(),
                    placement: to.clone(),
                    state: ShadowState::Requested,
                    history: vec![(ShadowState::Requested, d.reason.clone())],
                    shift: None,
                },
            );
            emit(
                t,
                format!("{}: {}{why_false}", slots[i].id, d.reason),
                progress,
            );
            slots[i].shadow = Some(ShadowRun {
                id: shadow_id,
                host,
                bad: extra.unit() < cfg.bad_shadow_p,
                phase: Phase::Provisioning {
                    until: t + cfg.provision_s,
                },
                shift: None,
                decided_s: t,
                warranted,
            });
        }

        // Advance every shadow in flight. By index: the body reads `slots[i]` for the gate
        // and then updates it, which an iterator's borrow would not allow.
        #[allow(clippy::needless_range_loop)]
        for i in 0..slots.len() {
            let Some(mut sh) = slots[i].shadow.take() else {
                continue;
            };
            let s = fleet.instances[i].service;
            let (mut keep, mut retry) = (true, false);
            // Before any traffic has moved, a failover whose risk has gone (P(fail) back under
            // its threshold for as long as it took to confirm it) is cancelled.
            if cfg.cancel_on_recovery && sh.shift.is_none() && slots[i].under >= cfg.confirm_ticks {
                report.cancelled += 1;
                emit(
                    t,
                    format!(
                        "{}: risk subsided before traffic moved; failover cancelled",
                        slots[i].id
                    ),
                    progress,
                );
                state.shadows.remove(&slots[i].id);
                slots[i].over = 0;
                continue;
            }
            match sh.phase {
                Phase::Provisioning { until } if t >= until => {
                    sh.phase = Phase::Syncing {
                        until: t + cfg.sync_s,
                    };
                }
                Phase::Syncing { until } if t >= until => {
                    sh.phase = Phase::Validating {
                        until: t + cfg.validate_s,
                    };
                }
                Phase::Validating { until } if t >= until => {
                    let verdict = gate(fleet, t, i, &slots[i], &sh, &obs, cfg, &mut extra);
                    if verdict.pass {
                        let mut shift = Shift::new(
                            weights[s].clone(),
                            slots[i].id.clone(),
                            sh.id.clone(),
                            &DEFAULT_STEPS,
                        )
                        .map_err(|e| SimError::Config(e.to_string()))?;
                        if let ShiftStep::Apply { weights: w, .. } = shift.start() {
                            weights[s] = w;
                        }
                        sh.shift = Some(shift);
                        sh.phase = Phase::Shifting {
                            until: t + cfg.step_s,
                        };
                        if !sh.warranted {
                            report.false_shifts += 1;
                        }
                    } else {
                        report.rollbacks += 1;
                        emit(
                            t,
                            format!(
                                "{}: validation failed ({}); shadow retired, another one next",
                                slots[i].id,
                                verdict.reasons.join("; ")
                            ),
                            progress,
                        );
                        // No traffic moved and the risk is unchanged: the fault was the
                        // shadow's, so the component is planned again at once.
                        retry = true;
                        keep = false;
                    }
                }
                Phase::Shifting { until } if t >= until => {
                    let verdict = gate(fleet, t, i, &slots[i], &sh, &obs, cfg, &mut extra);
                    let outcome = if verdict.pass {
                        GateOutcome::Pass
                    } else {
                        GateOutcome::Fail(verdict.reasons.join("; "))
                    };
                    let shift = sh.shift.as_mut().expect("shifting has a shift");
                    match shift.on_gate(outcome) {
                        ShiftStep::Apply { weights: w, .. } => {
                            weights[s] = w;
                            sh.phase = Phase::Shifting {
                                until: t + cfg.step_s,
                            };
                        }
                        ShiftStep::Promote { weights: mut w } => {
                            // The shadow takes the original's place (and name); the original
                            // process is retired.
                            let share = w.remove(&sh.id).unwrap_or(0);
                            w.insert(slots[i].id.clone(), share);
                            weights[s] = w;
                            report.promotions += 1;
                            if sh.warranted {
                                let crash = fault_of(i).and_then(|f| f.crash_s()).unwrap_or(t);
                                report.lead_times_s.push(crash - sh.decided_s);
                            }
                            slots[i].replaced = true;
                            slots[i].host = sh.host;
                            slots[i].predictor = ComponentPredictor::new(hidden);
                            slots[i].over = 0;
                            let to = state.shadows[&slots[i].id].placement.clone();
                            state
                                .components
                                .update(&slots[i].id, |c| c.placement = to)
                                .expect("known");
                            emit(
                                t,
                                format!(
                                    "{}: promoted its shadow; the original is retired",
                                    slots[i].id
                                ),
                                progress,
                            );
                            keep = false;
                        }
                        ShiftStep::RollBack { weights: w, reason } => {
                            weights[s] = w;
                            report.rollbacks += 1;
                            emit(
                                t,
                                format!("{}: shift rolled back ({reason})", slots[i].id),
                                progress,
                            );
                            keep = false;
                        }
                    }
                }
                _ => {}
            }
            if keep {
                slots[i].shadow = Some(sh);
            } else {
                state.shadows.remove(&slots[i].id);
                if !retry {
                    slots[i].cooldown_until = t + cfg.cooldown_s;
                    slots[i].over = 0;
                }
            }
        }
        if let Some(w) = weights.iter().find(|w| w.values().sum::<u32>() != 100) {
            return Err(SimError::Invariant(format!(
                "weights {w:?} do not sum to 100 at {t} s"
            )));
        }
        if tick % 360 == 0 {
            emit(t, format!("{:.0} h simulated", t / 3600.0), progress);
        }
    }
    let r = &mut report.requests;
    r.failed_background = failed[0].round() as u64;
    r.failed_degrade_then_crash = failed[1].round() as u64;
    r.failed_sudden = failed[2].round() as u64;
    r.failed_false_alarm = failed[3].round() as u64;
    r.failed = failed.iter().sum::<f64>().round() as u64;
    report.healthy_component_hours = healthy_s / 3600.0;
    report.false_shifts_per_100_healthy_hours = if healthy_s > 0.0 {
        f64::from(report.false_shifts) / report.healthy_component_hours * 100.0
    } else {
        0.0
    };
    report.lead_times_s.sort_by(f64::total_cmp);
    Ok(report)
}

/// The gate of the current step: the shadow's KPIs against the original's over a step's
/// requests (a sample of them, as a mirror would see). A dead original is judged against
/// its healthy self.
#[allow(clippy::too_many_arguments)]
fn gate(
    fleet: &Fleet,
    t: f64,
    i: usize,
    slot: &Slot,
    sh: &ShadowRun,
    obs: &[Observation],
    cfg: &SimConfig,
    rng: &mut SeededRng,
) -> augur_plan::Verdict {
    let base = &fleet.instances[i];
    let healthy = fleet.healthy_latency_ms(i, t);
    let o = if obs[i].up && !slot.replaced {
        obs[i]
    } else {
        Observation {
            up: true,
            latency_ms: healthy,
            error_rate: 0.001,
            mem_pct: base.base_mem_pct,
        }
    };
    let n = 200;
    let sample = |lat: f64, err: f64, rng: &mut SeededRng| Kpis {
        requests: n,
        errors: (0..n).filter(|_| rng.unit() < err).count() as u64,
        latencies_ms: (0..n).map(|_| lat * (0.1 * rng.normal()).exp()).collect(),
    };
    let original = sample(o.latency_ms, o.error_rate, rng);
    let shadow_latency = healthy * if sh.bad { 1.6 } else { 1.0 };
    let shadow = sample(shadow_latency, 0.001, rng);
    judge(&original, &shadow, &cfg.gate)
}

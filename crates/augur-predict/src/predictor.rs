//! One component's predictor state, as the node keeps it: a ring window per metric, online
//! normalisation, the detectors' state, the LSTM's hidden state and the last forecast. The
//! actor that owns it is a thin shell: samples in ([`ComponentPredictor::ingest`]), one
//! batched LSTM step per tick (inputs out with [`ComponentPredictor::lstm_input`], results in
//! with [`ComponentPredictor::apply_step`]), the forecast out.
//!
//! Memory is bounded: at most `max_metrics` metrics, each a window of `window` f32 values plus
//! a few dozen bytes of detector state.

use std::collections::HashSet;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use crate::ensemble::MetricDetector;
use crate::hazard::HazardModel;
use crate::hps::{health_projection_score, HpsInputs};
use crate::threshold::{level_and_trend, time_to_threshold, Limit};
use crate::window::Window;

/// The anomaly score at which a metric counts as alarming.
pub const ALARM: f64 = 0.99;

/// A metric's anomaly above which it is named in a forecast's `why`.
pub const WHY_MIN_ANOMALY: f64 = 0.9;

/// Per-node settings of every component's predictor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictorConfig {
    /// Samples kept per metric.
    pub window: usize,
    /// Metrics tracked per component; more are rejected.
    pub max_metrics: usize,
    /// How far back (ms) a sample may be behind the metric's newest and still be taken.
    pub out_of_order_tolerance_ms: i64,
    /// Known limits by metric name (disk, memory, temperature), for the lead time.
    pub limits: Vec<(String, Limit)>,
    /// Season length in samples for Holt-Winters; 0: none (no memory per season slot).
    pub season: usize,
    /// The metric that measures a component's load (requests per second), whose level and
    /// trend each forecast carries for predictive scaling.
    #[serde(default = "default_load_metric")]
    pub load_metric: String,
    /// The LSTM's inputs by metric name, from a model that names them
    /// ([`crate::lstm::ModelMeta::input_names`]): a metric takes its name's slot, and a metric
    /// the model does not name takes none (its detectors still score it). Empty (a model
    /// trained on unnamed slots): the metrics take the slots in the order first seen.
    #[serde(default)]
    pub inputs: Vec<String>,
}

fn default_load_metric() -> String {
    "requests_per_s".to_owned()
}

impl Default for PredictorConfig {
    fn default() -> Self {
        Self {
            window: 64,
            max_metrics: 8,
            out_of_order_tolerance_ms: 0,
            limits: Vec::new(),
            season: 0,
            load_metric: default_load_metric(),
            inputs: Vec::new(),
        }
    }
}

/// Why a sample was not taken. Each kind is counted by the ingest path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SampleReject {
    /// NaN, an infinity, or a value beyond what the window stores (|v| > f32::MAX, which it
    /// would hold as an infinity and turn the load and lead-time estimates into NaN).
    NotFinite,
    OutOfOrder,
    Duplicate,
    TooManyMetrics,
}

impl SampleReject {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotFinite => "not_finite",
            Self::OutOfOrder => "out_of_order",
            Self::Duplicate => "duplicate",
            Self::TooManyMetrics => "too_many_metrics",
        }
    }
}

/// One metric's state: the window (6 bytes a sample, [`Window`]) and the detectors.
#[derive(Debug, Clone)]
struct MetricState {
    /// Interned: every component's `cpu` is one allocation.
    name: Arc<str>,
    window: Window,
    detector: MetricDetector,
    /// Where the metric's limit is in [`PredictorConfig::limits`].
    limit: Option<u16>,
    lead_time_s: Option<f32>,
    /// The load metric: its window gives the load's trend; it is not scored for anomalies
    /// (routing changes it, not health).
    is_load: bool,
    /// Its LSTM input slot, if the model takes it.
    slot: Option<u8>,
}

impl MetricState {
    /// The window as `(t_seconds, value)`, oldest first: what the trend fits read.
    fn seconds(
        &self,
    ) -> impl DoubleEndedIterator<Item = (f64, f64)> + ExactSizeIterator + Clone + '_ {
        self.window
            .iter()
            .map(|(t, x)| (t as f64 / 1000.0, f64::from(x)))
    }
}

/// The names [`intern`] shares, and the size past which it next drops the unused ones.
#[derive(Default)]
struct Names {
    set: HashSet<Arc<str>>,
    sweep_at: usize,
}

static NAMES: LazyLock<Mutex<Names>> = LazyLock::new(Default::default);

/// The least size at which [`intern`] sweeps.
const INTERN_SWEEP_MIN: usize = 1024;

/// The one shared copy of a metric name. A name no window holds any more (its components
/// deregistered or forgotten, its actors restarted) is dropped at the next sweep, which
/// comes when the set has doubled since the last one: names that come and go (components
/// registered automatically and forgotten) cost amortised O(1) each, not memory for the
/// life of the process.
fn intern(name: &str) -> Arc<str> {
    let mut names = NAMES.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(n) = names.set.get(name) {
        return n.clone();
    }
    if names.set.len() >= names.sweep_at {
        // Held by the set alone: no metric state uses it.
        names.set.retain(|n| Arc::strong_count(n) > 1);
        names.sweep_at = INTERN_SWEEP_MIN.max(2 * names.set.len());
    }
    let n: Arc<str> = Arc::from(name);
    names.set.insert(n.clone());
    n
}

/// The forecast of one component, as `GetForecast` returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forecast {
    pub at_ms: i64,
    /// Ensemble anomaly score in [0, 1].
    pub anomaly: f64,
    /// P(fail within 5 min, 1 h, 24 h).
    pub p_fail: [f64; 3],
    /// Seconds until the nearest known limit is reached, if one is being approached.
    pub lead_time_s: Option<f64>,
    pub hps: f64,
    /// The indicators that moved it, strongest first: (name, contribution).
    pub why: Vec<(String, f64)>,
    /// Shared by every forecast made with the same model.
    pub model_version: Arc<str>,
    /// Samples per metric seen so far: how much history the detectors had.
    #[serde(default)]
    pub samples: u64,
    /// Where the load metric ([`PredictorConfig::load_metric`]) stands and heads; `None`
    /// when the component reports none.
    #[serde(default)]
    pub load: Option<LoadTrend>,
}

/// A component's load: the recency-weighted trend's level at the newest sample and its slope.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LoadTrend {
    /// Requests per second now.
    pub level: f64,
    /// Change per second.
    pub per_s: f64,
}

/// A component's predictor.
#[derive(Debug, Clone)]
pub struct ComponentPredictor {
    metrics: Vec<MetricState>,
    /// The LSTM state: `h` then `c`, `hidden` values each, in one allocation.
    hc: Box<[f32]>,
    dirty: bool,
    /// Windows were filled from a peer ([`ComponentPredictor::seed`]) and no newer sample
    /// has come since: a sample the peer's window held and that was on its way here too
    /// (same time, same value) is taken, not a duplicate.
    seeded: bool,
    last_ms: i64,
    /// In-order samples taken, every metric together.
    samples: u64,
    /// The load metric's level and trend (per second), as of its newest sample.
    load: Option<(f32, f32)>,
    forecast: Option<Forecast>,
}

impl ComponentPredictor {
    pub fn new(hidden: usize) -> Self {
        Self {
            metrics: Vec::new(),
            hc: vec![0.0; 2 * hidden].into_boxed_slice(),
            dirty: false,
            seeded: false,
            last_ms: 0,
            samples: 0,
            load: None,
            forecast: None,
        }
    }

    /// Takes one sample or says why not; a rejected sample changes nothing.
    pub fn ingest(
        &mut self,
        cfg: &PredictorConfig,
        metric: &str,
        ts_ms: i64,
        value: f64,
    ) -> Result<(), SampleReject> {
        if !value.is_finite() || value.abs() > f64::from(f32::MAX) {
            return Err(SampleReject::NotFinite);
        }
        let idx = match self.metrics.iter().position(|m| &*m.name == metric) {
            Some(i) => i,
            None => {
                if self.metrics.len() >= cfg.max_metrics {
                    return Err(SampleReject::TooManyMetrics);
                }
                let limit = cfg
                    .limits
                    .iter()
                    .position(|(n, _)| n == metric)
                    .and_then(|i| u16::try_from(i).ok());
                let is_load = metric == cfg.load_metric;
                let slot = if is_load {
                    None
                } else if cfg.inputs.is_empty() {
                    Some(self.scored().count())
                } else {
                    cfg.inputs.iter().position(|n| n == metric)
                };
                self.metrics.push(MetricState {
                    name: intern(metric),
                    window: Window::new(cfg.window),
                    detector: MetricDetector::new(cfg.season),
                    limit,
                    lead_time_s: None,
                    is_load,
                    slot: slot.and_then(|s| u8::try_from(s).ok()),
                });
                self.metrics.len() - 1
            }
        };
        let m = &mut self.metrics[idx];
        if let Some(last) = m.window.last_ms() {
            if ts_ms == last || (ts_ms < last && m.window.contains(ts_ms)) {
                let seeded_copy = self.seeded
                    && m.window
                        .iter()
                        .any(|(t, v)| t == ts_ms && v.to_bits() == (value as f32).to_bits());
                return if seeded_copy {
                    Ok(())
                } else {
                    Err(SampleReject::Duplicate)
                };
            }
            if ts_ms < last {
                if last.saturating_sub(ts_ms) > cfg.out_of_order_tolerance_ms {
                    return Err(SampleReject::OutOfOrder);
                }
                // Within tolerance: slot it into the window, without touching the detectors;
                // unless the window is full and it is older than all it holds.
                if !m.window.insert(ts_ms, value as f32) {
                    return Err(SampleReject::OutOfOrder);
                }
                return Ok(());
            }
        }
        m.window.insert(ts_ms, value as f32);
        if !m.is_load {
            m.detector.update(value);
        }
        if let Some((_, limit)) = m.limit.and_then(|i| cfg.limits.get(usize::from(i))) {
            m.lead_time_s = time_to_threshold(m.seconds(), *limit).map(|s| s as f32);
        }
        if m.is_load {
            self.load = level_and_trend(m.seconds()).map(|(l, s)| (l as f32, s as f32));
        }
        self.dirty = true;
        self.seeded = false;
        self.last_ms = self.last_ms.max(ts_ms);
        self.samples += 1;
        Ok(())
    }

    /// Whether samples arrived since the last step.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Fills `out` (the model's `inputs` slots) with the newest scaled value of each metric
    /// in its slot (see [`PredictorConfig::inputs`]); slots no metric takes stay 0.
    pub fn lstm_input(&self, out: &mut [f32]) {
        out.iter_mut().for_each(|v| *v = 0.0);
        for m in self.scored() {
            if let Some(v) = m.slot.and_then(|s| out.get_mut(usize::from(s))) {
                *v = m.detector.scaled();
            }
        }
    }

    /// The LSTM state, `hidden` values each.
    pub fn state_mut(&mut self) -> (&mut [f32], &mut [f32]) {
        let hidden = self.hc.len() / 2;
        self.hc.split_at_mut(hidden)
    }

    /// Takes the batched step's results (`next` forecasts of the scaled inputs, the LSTM's
    /// P(fail)) and makes the forecast.
    pub fn apply_step(
        &mut self,
        next: &[f32],
        lstm_p_fail: f32,
        hazard: &HazardModel,
        model_version: impl Into<Arc<str>>,
    ) -> &Forecast {
        for m in self.metrics.iter_mut() {
            if let Some(p) = m.slot.and_then(|s| next.get(usize::from(s))) {
                m.detector.set_prediction(*p);
            }
        }
        self.dirty = false;
        let anomaly = self
            .scored()
            .map(|m| m.detector.anomaly())
            .fold(0.0, f64::max);
        let lead = self
            .metrics
            .iter()
            .filter_map(|m| m.lead_time_s.map(f64::from))
            .fold(None, |a: Option<f64>, l| Some(a.map_or(l, |a| a.min(l))));
        let x = [anomaly, lstm_p_fail as f64];
        let p_fail = hazard.p_horizons(&x);
        let hps = health_projection_score(&HpsInputs {
            p_fail_1h: p_fail[1],
            anomaly,
            lead_time_s: lead,
        });
        // Alarming metrics by their detectors, and by the LSTM's residual (named
        // `<metric>:lstm_residual`); names are cloned only for those that make the list.
        let mut why: Vec<(String, f64)> = self
            .scored()
            .flat_map(|m| {
                let by_detectors = (m.detector.anomaly() > WHY_MIN_ANOMALY)
                    .then(|| (m.name.to_string(), m.detector.anomaly()));
                let by_lstm = (m.detector.lstm_anomaly() >= ALARM).then(|| {
                    (
                        format!("{}:lstm_residual", m.name),
                        m.detector.lstm_anomaly(),
                    )
                });
                by_detectors.into_iter().chain(by_lstm)
            })
            .collect();
        why.sort_by(|a, b| b.1.total_cmp(&a.1));
        why.truncate(3);
        for (name, c) in hazard.contributions(&x).into_iter().take(2) {
            if c > 0.0 {
                why.push((name, c));
            }
        }
        if let Some(l) = lead {
            if l < 3600.0 {
                why.push(("time_to_limit_s".into(), l));
            }
        }
        self.forecast = Some(Forecast {
            at_ms: self.last_ms,
            anomaly,
            p_fail,
            lead_time_s: lead,
            hps,
            why,
            model_version: model_version.into(),
            samples: self.samples / self.metrics.len().max(1) as u64,
            load: self.load.map(|(level, per_s)| LoadTrend {
                level: f64::from(level),
                per_s: f64::from(per_s),
            }),
        });
        self.forecast.as_ref().expect("just set")
    }

    pub fn forecast(&self) -> Option<&Forecast> {
        self.forecast.as_ref()
    }

    /// The metrics scored for anomalies (all but the load metric), in the order first seen.
    fn scored(&self) -> impl Iterator<Item = &MetricState> {
        self.metrics.iter().filter(|m| !m.is_load)
    }

    /// The newest `(ts_ms, value)` of each metric: what `Observe` shows.
    pub fn latest(&self) -> Vec<(String, i64, f32, usize)> {
        self.metrics
            .iter()
            .filter_map(|m| {
                m.window
                    .iter()
                    .next_back()
                    .map(|(t, v)| (m.name.to_string(), t, v, m.window.len()))
            })
            .collect()
    }

    /// Every metric's window as samples `(metric, ts_ms, value)`, each oldest first: what a
    /// peer needs to warm its copy ([`ComponentPredictor::seed`]).
    pub fn windows(&self) -> Vec<(String, i64, f64)> {
        self.metrics
            .iter()
            .flat_map(|m| {
                m.window
                    .iter()
                    .map(|(t, v)| (m.name.to_string(), t, f64::from(v)))
            })
            .collect()
    }

    /// Warms the windows with older samples of the same series (a peer's copy, for a node
    /// that just took the component on or restarted). For each metric whose window is not
    /// full: the given samples older than all it holds go first, then what it held is taken
    /// again, so the window and the detectors see the series in time order, as if it had
    /// all come here. The window is refilled from its own samples, which are all the metric
    /// ever had here while it is not full. Samples not older than the window, of full
    /// windows, or of metrics beyond `max_metrics` are left out. Answers how many went in.
    pub fn seed(&mut self, cfg: &PredictorConfig, samples: &[(String, i64, f64)]) -> u64 {
        let mut by_metric: std::collections::BTreeMap<&str, Vec<(i64, f64)>> = Default::default();
        for (metric, t, v) in samples {
            by_metric.entry(metric).or_default().push((*t, *v));
        }
        let mut taken = 0;
        for (metric, mut older) in by_metric {
            let held = self.window(metric);
            if held.len() >= cfg.window {
                continue;
            }
            let first = held.first().map(|&(t, _)| t);
            older.retain(|&(t, _)| first.is_none_or(|f| t < f));
            older.sort_by_key(|&(t, _)| t);
            older.dedup_by_key(|&mut (t, _)| t);
            if older.is_empty() {
                continue;
            }
            if let Some(m) = self.metrics.iter_mut().find(|m| &*m.name == metric) {
                // Its place (and LSTM slot) stays; what it learnt is learnt again below.
                m.window = Window::new(cfg.window);
                m.detector = MetricDetector::new(cfg.season);
                m.lead_time_s = None;
            }
            let counted = self.samples;
            let mut n = 0;
            for (t, v) in older {
                n += u64::from(self.ingest(cfg, metric, t, v).is_ok());
            }
            for (t, v) in held {
                // Taken before: in order, so taken again.
                let _ = self.ingest(cfg, metric, t, f64::from(v));
            }
            self.samples = counted + n;
            taken += n;
        }
        // The held samples were taken again in order, which clears the mark: set it last.
        self.seeded |= taken > 0;
        taken
    }

    /// The window of `metric`, oldest first.
    pub fn window(&self, metric: &str) -> Vec<(i64, f32)> {
        self.metrics
            .iter()
            .find(|m| &*m.name == metric)
            .map(|m| m.window.iter().collect())
            .unwrap_or_default()
    }

    /// Heap bytes held, for the memory benchmark.
    pub fn heap_bytes(&self) -> usize {
        self.metrics.capacity() * std::mem::size_of::<MetricState>()
            + self
                .metrics
                .iter()
                .map(|m| m.window.heap_bytes() + m.detector.heap_bytes())
                .sum::<usize>()
            + self.hc.len() * 4
    }
}

/// The hazard model a node uses before one is trained for its fleet: features
/// `[anomaly, lstm_p_fail]`, a base rate of one failure per 30 days, rising steeply with both.
pub fn default_hazard() -> HazardModel {
    HazardModel {
        features: vec!["anomaly".into(), "lstm_p_fail".into()],
        mean: vec![0.5, 0.0],
        std: vec![1.0, 1.0],
        // λ = base · e^{6(a − 0.5)} · e^{8 p}: a certain anomaly alone ×20, a certain LSTM
        // failure ×3000 (about P = 0.98 within the hour).
        weights: vec![6.0, 8.0],
        bias: (1.0f64 / (30.0 * 24.0)).ln(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interned_names_no_state_holds_are_swept() {
        let kept = intern("interned_names_test_kept");
        for i in 0..10_000 {
            drop(intern(&format!("interned_names_test_{i}")));
        }
        let len = NAMES.lock().unwrap().set.len();
        // Other tests of this binary intern names too: a bound, not an exact count.
        assert!(len <= 2 * INTERN_SWEEP_MIN + 1, "{len} names held");
        assert!(Arc::ptr_eq(&kept, &intern("interned_names_test_kept")));
    }

    fn feed(
        p: &mut ComponentPredictor,
        cfg: &PredictorConfig,
        values: impl Iterator<Item = f64>,
    ) -> Vec<f64> {
        let hz = default_hazard();
        let mut out = Vec::new();
        for (i, v) in values.enumerate() {
            p.ingest(cfg, "latency", i as i64 * 1000, v).unwrap();
            let f = p.apply_step(&[0.0], 0.0, &hz, "test");
            out.push(f.anomaly);
        }
        out
    }

    #[test]
    fn a_peers_older_samples_warm_a_window_that_took_only_the_latest() {
        let cfg = PredictorConfig {
            window: 64,
            ..PredictorConfig::default()
        };
        let value = |t: i64| 100.0 + (t % 7) as f64;
        // The peer had the whole series; this copy only its last 20 samples, and no cpu.
        let (mut peer, mut here) = (ComponentPredictor::new(4), ComponentPredictor::new(4));
        for t in 0..100 {
            peer.ingest(&cfg, "latency", t * 1000, value(t)).unwrap();
            peer.ingest(&cfg, "cpu", t * 1000, 0.5).unwrap();
        }
        for t in 80..100 {
            here.ingest(&cfg, "latency", t * 1000, value(t)).unwrap();
        }
        let seeded = here.seed(&cfg, &peer.windows());
        // latency: the 44 samples before here's oldest that its window has room for are
        // among the 80 older ones the peer's window holds from 36 s on; cpu: all 64.
        assert_eq!(seeded, 44 + 64);
        assert_eq!(here.window("latency"), peer.window("latency"));
        assert_eq!(here.window("cpu"), peer.window("cpu"));
        assert!(here.is_dirty());
        // Seeding again, or into full windows, adds nothing.
        assert_eq!(here.seed(&cfg, &peer.windows()), 0);
        // A window that is not full takes only what is older than all it holds.
        let mut late = ComponentPredictor::new(4);
        late.ingest(&cfg, "latency", 50_000, value(50)).unwrap();
        assert_eq!(late.seed(&cfg, &peer.windows()), 14 + 64);
        let lat = late.window("latency");
        assert_eq!(lat.len(), 15);
        assert_eq!((lat[0].0, lat[14].0), (36_000, 50_000));
    }

    #[test]
    fn samples_a_warm_up_took_from_the_peer_are_taken_again_not_duplicates() {
        let cfg = PredictorConfig::default();
        let mut peer = ComponentPredictor::new(4);
        for t in 0..30 {
            peer.ingest(&cfg, "cpu", t * 1000, t as f64).unwrap();
        }
        // A new copy warmed from the peer while samples 28 and 29 were on their way to it.
        let mut here = ComponentPredictor::new(4);
        assert_eq!(here.seed(&cfg, &peer.windows()), 30);
        assert_eq!(here.ingest(&cfg, "cpu", 28_000, 28.0), Ok(()));
        assert_eq!(here.ingest(&cfg, "cpu", 29_000, 29.0), Ok(()));
        assert_eq!(here.window("cpu").len(), 30, "nothing added twice");
        // Another value at a time it holds is a duplicate all the same.
        assert_eq!(
            here.ingest(&cfg, "cpu", 29_000, 1.5),
            Err(SampleReject::Duplicate)
        );
        // Once a newer sample came, a sample sent twice is a duplicate again.
        here.ingest(&cfg, "cpu", 30_000, 30.0).unwrap();
        assert_eq!(
            here.ingest(&cfg, "cpu", 29_000, 29.0),
            Err(SampleReject::Duplicate)
        );
    }

    #[test]
    fn a_model_that_names_its_inputs_reads_each_metric_by_name() {
        let named = PredictorConfig {
            inputs: vec!["latency".into(), "error_ratio".into(), "memory".into()],
            ..PredictorConfig::default()
        };
        let mut p = ComponentPredictor::new(4);
        // Arrival order differs from the model's, and one metric is unknown to it.
        for t in 0..40 {
            let ts = t * 1000;
            let wobble = if t % 2 == 0 { 1.0 } else { -1.0 };
            p.ingest(&named, "memory", ts, 500.0 + wobble).unwrap();
            p.ingest(&named, "disk", ts, 70.0 + wobble).unwrap();
            p.ingest(&named, "latency", ts, 20.0 + wobble).unwrap();
        }
        p.ingest(&named, "memory", 40_000, 900.0).unwrap();
        let mut x = [9.0; 3];
        p.lstm_input(&mut x);
        assert_eq!(x[1], 0.0, "no error ratio reported: its slot stays 0");
        assert!(x[2] > 3.0, "memory's jump lands in memory's slot: {x:?}");
        assert!(x[0].abs() < 2.0, "latency in latency's slot: {x:?}");

        // Unnamed slots (the synthetic model's): the order first seen.
        let unnamed = PredictorConfig::default();
        let mut q = ComponentPredictor::new(4);
        for t in 0..40 {
            let wobble = if t % 2 == 0 { 1.0 } else { -1.0 };
            q.ingest(&unnamed, "memory", t * 1000, 500.0 + wobble)
                .unwrap();
            q.ingest(&unnamed, "latency", t * 1000, 20.0 + wobble)
                .unwrap();
        }
        q.ingest(&unnamed, "memory", 40_000, 900.0).unwrap();
        let mut y = [9.0; 3];
        q.lstm_input(&mut y);
        assert!(y[0] > 3.0 && y[2] == 0.0, "{y:?}");
    }

    #[test]
    fn a_forecast_carries_the_load_metrics_level_and_trend() {
        let cfg = PredictorConfig::default();
        let hz = default_hazard();
        let mut p = ComponentPredictor::new(4);
        p.ingest(&cfg, "latency", 0, 5.0).unwrap();
        assert_eq!(p.apply_step(&[0.0], 0.0, &hz, "test").load, None);
        // 100 req/s rising by 2 a second.
        for i in 0..30 {
            let ts = i * 1000;
            p.ingest(&cfg, "requests_per_s", ts, 100.0 + 2.0 * i as f64)
                .unwrap();
        }
        let f = p.apply_step(&[0.0], 0.0, &hz, "test");
        let load = f.load.unwrap();
        assert!((load.level - 158.0).abs() < 1e-3, "{load:?}");
        assert!((load.per_s - 2.0).abs() < 1e-4, "{load:?}");
        // Load is not health: a jump in it (traffic routed anew) is not scored.
        p.ingest(&cfg, "requests_per_s", 30_000, 1000.0).unwrap();
        let f = p.apply_step(&[0.0], 0.0, &hz, "test");
        assert!(f.anomaly <= 0.5 + 1e-9 && f.why.is_empty(), "{f:?}");
        let mut slots = [9.0; 2];
        p.lstm_input(&mut slots);
        assert_eq!(slots[1], 0.0, "the load metric takes no LSTM input slot");
        let other = PredictorConfig {
            load_metric: "rps".into(),
            ..cfg
        };
        let mut q = ComponentPredictor::new(4);
        q.ingest(&other, "requests_per_s", 0, 100.0).unwrap();
        assert_eq!(q.apply_step(&[0.0], 0.0, &hz, "test").load, None);
    }

    #[test]
    fn a_constant_series_never_alarms() {
        let cfg = PredictorConfig::default();
        let mut p = ComponentPredictor::new(4);
        let scores = feed(&mut p, &cfg, std::iter::repeat_n(42.0, 500));
        assert!(
            scores.iter().all(|s| *s <= 0.5 + 1e-6),
            "{:?}",
            scores.iter().fold(0.0f64, |a, b| a.max(*b))
        );
    }

    #[test]
    fn a_step_change_alarms_within_k_samples() {
        let cfg = PredictorConfig::default();
        let mut p = ComponentPredictor::new(4);
        let mut s = 1u64;
        let noisy = (0..400).map(move |i| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let noise = ((s >> 33) % 1000) as f64 / 1000.0 - 0.5;
            if i < 300 {
                100.0 + noise
            } else {
                130.0 + noise
            }
        });
        let scores = feed(&mut p, &cfg, noisy);
        let first = scores[300..].iter().position(|s| *s > 0.99);
        assert!(
            first.is_some_and(|k| k < 3) && scores[300..].iter().any(|s| *s >= ALARM),
            "{:?}",
            &scores[295..310]
        );
    }

    /// The LSTM forecasts 0 (the scaled mean) throughout; after a step its residual alarms
    /// and the forecast names it beside the detectors' verdict.
    #[test]
    fn an_alarming_lstm_residual_is_named_in_why() {
        let cfg = PredictorConfig::default();
        let mut p = ComponentPredictor::new(4);
        let mut rng = crate::lstm::SeededRng::new(3);
        let values = (0..400).map(move |i| {
            let level = if i < 395 { 100.0 } else { 160.0 };
            level + rng.unit() - 0.5
        });
        feed(&mut p, &cfg, values);
        let why: Vec<&str> = p
            .forecast()
            .unwrap()
            .why
            .iter()
            .map(|(n, _)| n.as_str())
            .collect();
        assert!(why.contains(&"latency"), "{why:?}");
        assert!(why.contains(&"latency:lstm_residual"), "{why:?}");
    }

    #[test]
    fn a_late_sample_the_full_window_cannot_hold_is_out_of_order() {
        let cfg = PredictorConfig {
            out_of_order_tolerance_ms: 1_000,
            window: 4,
            ..Default::default()
        };
        let mut p = ComponentPredictor::new(4);
        for t in [100, 200, 300, 400] {
            p.ingest(&cfg, "a", t, 1.0).unwrap();
        }
        // Within tolerance, but older than all four samples the full window holds.
        assert_eq!(p.ingest(&cfg, "a", 50, 2.0), Err(SampleReject::OutOfOrder));
        // Inside the window's span it is taken.
        p.ingest(&cfg, "a", 250, 2.0).unwrap();
        assert_eq!(
            p.window("a").iter().map(|s| s.0).collect::<Vec<_>>(),
            [200, 250, 300, 400]
        );
    }

    #[test]
    fn rejects_change_nothing() {
        let cfg = PredictorConfig {
            max_metrics: 1,
            ..Default::default()
        };
        let mut p = ComponentPredictor::new(4);
        p.ingest(&cfg, "a", 10, 1.0).unwrap();
        assert_eq!(p.ingest(&cfg, "a", 10, 2.0), Err(SampleReject::Duplicate));
        assert_eq!(p.ingest(&cfg, "a", 5, 2.0), Err(SampleReject::OutOfOrder));
        for v in [f64::NAN, f64::INFINITY, 1e39, -1e39] {
            assert_eq!(p.ingest(&cfg, "a", 11, v), Err(SampleReject::NotFinite));
        }
        assert_eq!(
            p.ingest(&cfg, "b", 11, 1.0),
            Err(SampleReject::TooManyMetrics)
        );
        assert_eq!(p.window("a"), vec![(10, 1.0)]);
    }

    /// The memory budget (8 KiB a component with 8 metrics) rests on this: 8 metric states
    /// take 3,072 B, one of mimalloc's size classes, with the windows (384 B a metric) beside.
    #[test]
    fn a_metric_state_fits_its_budget() {
        assert!(std::mem::size_of::<MetricState>() <= 384);
        let mut p = ComponentPredictor::new(0);
        let cfg = PredictorConfig::default();
        for (i, m) in ["a", "b", "c", "d", "e", "f", "g", "h"].iter().enumerate() {
            for t in 0..100 {
                p.ingest(&cfg, m, 1_000 * t, (i + t as usize) as f64)
                    .unwrap();
            }
        }
        assert_eq!(p.heap_bytes(), 8 * 384 + 8 * 64 * 6);
    }
}

//! Which component most likely caused an incident, from metric series alone (BARO-style robust
//! scores) and, optionally, with the dependency graph.
//!
//! Rows before the fault time are the reference; rows at or after it are the anomalous window.
//! Each metric is scored by how far its window strays from the reference median, in units of
//! the reference's interquartile range: `max |x - median| / IQR`. Medians and quartiles shrug
//! off a fault time that is a minute early or late. A component scores the maximum over its
//! metrics (`<component>_<metric>`: the component is the part of the column name before the
//! first `_`).
//!
//! An IQR of 0 (a flat or mostly flat reference) must not make the score unit-dependent, as a
//! fixed fallback of 1 would: the scale then falls back to the standard deviation, then to a
//! fraction of the median's magnitude, and a metric that was exactly 0 and then moved gets
//! `max_score`.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;
use thiserror::Error;

use crate::DepGraph;

/// For a normal distribution, IQR = 1.349 σ: puts the fallback scales in IQR units.
const IQR_PER_STD: f64 = 1.349;

/// Why metrics could not be parsed or ranked.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum RcaError {
    #[error("csv is empty: no header row")]
    EmptyCsv,
    #[error("csv header has no time column; header is {0:?}")]
    MissingTimeColumn(String),
    #[error("column {0:?} appears twice in the header")]
    DuplicateColumn(String),
    #[error("csv line {line} has {found} fields; the header has {expected}")]
    RaggedRow {
        line: u64,
        found: usize,
        expected: usize,
    },
    #[error("csv line {line}: time {value:?} is not unix seconds within ±10^12")]
    BadTime { line: u64, value: String },
    #[error("csv line {line}, column {column:?}: {value:?} is not a number")]
    BadValue {
        line: u64,
        column: String,
        value: String,
    },
    #[error("csv line {line}: {message}")]
    Csv { line: u64, message: String },
    #[error("frames to concatenate differ: {0}")]
    ColumnMismatch(String),
    #[error("frame has no metric columns")]
    NoMetrics,
    #[error("no rows before the fault time {0}: nothing to compare against")]
    NoReference(i64),
    #[error("no rows at or after the fault time {0}: nothing anomalous to score")]
    NoAnomalousRows(i64),
    #[error("anomalous csv has no rows: no fault time to default to")]
    EmptyAnomalous,
    #[error(
        "data row {row}: time {after} is not after {before}; lagged tests read rows as steps \
         in time order"
    )]
    NotInTimeOrder { row: usize, before: i64, after: i64 },
    #[error("option {name} is {value}; {expected}")]
    BadOption {
        name: &'static str,
        value: f64,
        expected: &'static str,
    },
}

/// Metric series on one time line: a `time` column (unix seconds) and named `f64` columns.
/// Missing values (empty cells, NaN, infinities) are stored as NaN and skipped by statistics.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MetricFrame {
    times: Vec<i64>,
    names: Vec<String>,
    /// Column-major: `columns[c][row]`.
    columns: Vec<Vec<f64>>,
}

impl MetricFrame {
    /// Builds a frame from its parts. Each column must have one value per time.
    pub fn new(times: Vec<i64>, columns: Vec<(String, Vec<f64>)>) -> Result<Self, RcaError> {
        let mut seen = HashSet::new();
        let mut names = Vec::with_capacity(columns.len());
        let mut values = Vec::with_capacity(columns.len());
        for (name, col) in columns {
            if !seen.insert(name.clone()) {
                return Err(RcaError::DuplicateColumn(name));
            }
            if col.len() != times.len() {
                return Err(RcaError::ColumnMismatch(format!(
                    "column {name:?} has {} values for {} times",
                    col.len(),
                    times.len()
                )));
            }
            names.push(name);
            values.push(col);
        }
        Ok(Self {
            times,
            names,
            columns: values,
        })
    }

    /// Parses CSV text with a header. The column named `time` (any case) holds unix seconds
    /// (integers, or decimals rounded down); every other column is a metric. Empty cells and
    /// `NaN` are missing values.
    pub fn from_csv(text: &str) -> Result<Self, RcaError> {
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(text.as_bytes());
        let header = reader.headers().map_err(csv_error)?.clone();
        if header.is_empty() || (header.len() == 1 && header[0].is_empty()) {
            return Err(RcaError::EmptyCsv);
        }
        let time_ix = header
            .iter()
            .position(|h| h.eq_ignore_ascii_case("time"))
            .ok_or_else(|| {
                RcaError::MissingTimeColumn(header.iter().collect::<Vec<_>>().join(","))
            })?;
        let mut names = Vec::with_capacity(header.len() - 1);
        let mut seen = HashSet::new();
        for (i, h) in header.iter().enumerate() {
            if !seen.insert(h) {
                return Err(RcaError::DuplicateColumn(h.to_owned()));
            }
            if i != time_ix {
                names.push(h.to_owned());
            }
        }
        let mut times = Vec::new();
        let mut columns = vec![Vec::new(); names.len()];
        for record in reader.records() {
            let record = record.map_err(csv_error)?;
            let line = record.position().map_or(0, |p| p.line());
            if record.len() != header.len() {
                return Err(RcaError::RaggedRow {
                    line,
                    found: record.len(),
                    expected: header.len(),
                });
            }
            let mut col = 0;
            for (i, cell) in record.iter().enumerate() {
                if i == time_ix {
                    times.push(parse_time(cell).ok_or_else(|| RcaError::BadTime {
                        line,
                        value: cell.to_owned(),
                    })?);
                } else {
                    let v = parse_value(cell).ok_or_else(|| RcaError::BadValue {
                        line,
                        column: names[col].clone(),
                        value: cell.to_owned(),
                    })?;
                    columns[col].push(v);
                    col += 1;
                }
            }
        }
        Ok(Self {
            times,
            names,
            columns,
        })
    }

    /// This frame's rows followed by `other`'s. Both must have the same metric columns, in any
    /// order; the result keeps this frame's order.
    pub fn concat(&self, other: &MetricFrame) -> Result<MetricFrame, RcaError> {
        let other_ix: HashMap<&str, usize> = other
            .names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        let mine: HashSet<&str> = self.names.iter().map(String::as_str).collect();
        let missing_there: Vec<&str> = self
            .names
            .iter()
            .map(String::as_str)
            .filter(|n| !other_ix.contains_key(n))
            .collect();
        let missing_here: Vec<&str> = other
            .names
            .iter()
            .map(String::as_str)
            .filter(|n| !mine.contains(n))
            .collect();
        if !missing_there.is_empty() || !missing_here.is_empty() {
            let mut parts = Vec::new();
            if !missing_there.is_empty() {
                parts.push(format!("second lacks {}", missing_there.join(", ")));
            }
            if !missing_here.is_empty() {
                parts.push(format!("first lacks {}", missing_here.join(", ")));
            }
            return Err(RcaError::ColumnMismatch(parts.join("; ")));
        }
        let mut times = self.times.clone();
        times.extend_from_slice(&other.times);
        let columns = self
            .names
            .iter()
            .zip(&self.columns)
            .map(|(name, col)| {
                let mut c = col.clone();
                c.extend_from_slice(&other.columns[other_ix[name.as_str()]]);
                c
            })
            .collect();
        Ok(MetricFrame {
            times,
            names: self.names.clone(),
            columns,
        })
    }

    /// Moves every time by `delta` seconds, e.g. to lay two recordings end to end.
    pub fn shift_time(&mut self, delta: i64) {
        for t in &mut self.times {
            *t = t.saturating_add(delta);
        }
    }

    pub fn times(&self) -> &[i64] {
        &self.times
    }

    /// Refuses rows out of time order or with a repeated time (rows numbered from 1 after the
    /// header): a lag of k rows must be k steps back in time.
    pub fn check_time_order(&self) -> Result<(), RcaError> {
        match self.times.windows(2).position(|w| w[1] <= w[0]) {
            Some(i) => Err(RcaError::NotInTimeOrder {
                row: i + 2,
                before: self.times[i],
                after: self.times[i + 1],
            }),
            None => Ok(()),
        }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.times.len()
    }

    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }

    /// Metric column names, in header order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn column(&self, name: &str) -> Option<&[f64]> {
        let i = self.names.iter().position(|n| n == name)?;
        Some(&self.columns[i])
    }

    /// Earliest time, if any rows.
    pub fn first_time(&self) -> Option<i64> {
        self.times.iter().copied().min()
    }

    /// Latest time, if any rows.
    /// Every column that has a value, its gaps filled with the last value seen (the first
    /// seen, before it), named by its component (`owner`): what the causal-strength tests
    /// take.
    pub fn filled_series(&self, owner: impl Fn(&str) -> &str) -> Vec<(String, Vec<f64>)> {
        self.names
            .iter()
            .zip(&self.columns)
            .filter_map(|(name, column)| {
                let first = column.iter().copied().find(|v| v.is_finite())?;
                let mut last = first;
                let values = column
                    .iter()
                    .map(|&v| {
                        if v.is_finite() {
                            last = v;
                        }
                        last
                    })
                    .collect();
                Some((owner(name).to_owned(), values))
            })
            .collect()
    }

    pub fn last_time(&self) -> Option<i64> {
        self.times.iter().copied().max()
    }
}

fn csv_error(e: csv::Error) -> RcaError {
    let line = e.position().map_or(0, |p| p.line());
    RcaError::Csv {
        line,
        message: e.to_string().to_lowercase(),
    }
}

/// Unix seconds within ±10^12 (some 30,000 years either way): far enough for any clock, and
/// small enough that lining recordings up (a shift by the gap between them) cannot overflow.
const MAX_ABS_TIME: i64 = 1_000_000_000_000;

fn parse_time(cell: &str) -> Option<i64> {
    let t = match cell.parse::<i64>() {
        Ok(t) => t,
        Err(_) => {
            let f = cell.parse::<f64>().ok()?;
            if !(f.is_finite() && f.abs() <= MAX_ABS_TIME as f64) {
                return None;
            }
            f.floor() as i64
        }
    };
    (-MAX_ABS_TIME..=MAX_ABS_TIME).contains(&t).then_some(t)
}

fn parse_value(cell: &str) -> Option<f64> {
    if cell.is_empty() {
        return Some(f64::NAN);
    }
    let v = cell.parse::<f64>().ok()?;
    Some(if v.is_finite() { v } else { f64::NAN })
}

/// Tuning of the ranking. The defaults are the evaluated ones (docs/evaluation.md).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RcaOptions {
    /// The scale is at least this fraction of |median|: a spread finer than that is taken as
    /// measurement grain, and a change against a flat reference scores as a relative change,
    /// the same whatever the unit.
    pub relative_floor: f64,
    /// Scores are capped here; a metric that was exactly 0 and then moved scores this much.
    pub max_score: f64,
    /// Graph variant: a component is anomalous when it scores at least this.
    pub graph_min_score: f64,
    /// Graph variant: an anomalous callee is lifted just above an anomalous caller when its
    /// score is at least this share of the caller's.
    pub graph_callee_ratio: f64,
}

impl Default for RcaOptions {
    fn default() -> Self {
        Self {
            relative_floor: 0.01,
            max_score: 1.0e6,
            graph_min_score: 10.0,
            graph_callee_ratio: 0.5,
        }
    }
}

impl RcaOptions {
    /// Checks that every option is finite and in range.
    pub fn validate(&self) -> Result<(), RcaError> {
        let checks: [(&'static str, f64, bool, &'static str); 4] = [
            (
                "relative_floor",
                self.relative_floor,
                self.relative_floor >= 0.0,
                "it must be positive",
            ),
            (
                "max_score",
                self.max_score,
                self.max_score > 0.0,
                "it must be positive",
            ),
            (
                "graph_min_score",
                self.graph_min_score,
                self.graph_min_score >= 0.0,
                "it must be zero or more",
            ),
            (
                "graph_callee_ratio",
                self.graph_callee_ratio,
                self.graph_callee_ratio > 0.0,
                "it must be positive",
            ),
        ];
        for (name, value, ok, expected) in checks {
            if !value.is_finite() || !ok {
                return Err(RcaError::BadOption {
                    name,
                    value,
                    expected,
                });
            }
        }
        Ok(())
    }
}

/// One candidate root cause.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RankedCause {
    pub component: String,
    /// Robust anomaly score, in reference IQRs; higher is more anomalous.
    pub score: f64,
    /// The metric column that gave the score.
    pub metric: String,
}

/// The component a metric column belongs to: the part before the first `_`, or the whole
/// name when there is none.
pub fn component_of(metric: &str) -> &str {
    metric.split_once('_').map_or(metric, |(c, _)| c)
}

/// The robust score of one metric column: rows with `time < fault_time` are the reference,
/// the others the anomalous window. `None` when either side has no finite value.
pub fn metric_score(
    times: &[i64],
    values: &[f64],
    fault_time: i64,
    opts: &RcaOptions,
) -> Option<f64> {
    let mut reference = Vec::with_capacity(values.len());
    let mut window = Vec::with_capacity(values.len());
    for (&t, &v) in times.iter().zip(values) {
        if !v.is_finite() {
            continue;
        }
        if t < fault_time {
            reference.push(v);
        } else {
            window.push(v);
        }
    }
    if reference.is_empty() || window.is_empty() {
        return None;
    }
    reference.sort_unstable_by(f64::total_cmp);
    let median = quantile(&reference, 0.5);
    let deviation = window
        .iter()
        .map(|x| (x - median).abs())
        .fold(0.0_f64, f64::max);
    if deviation == 0.0 {
        return Some(0.0);
    }
    let iqr = quantile(&reference, 0.75) - quantile(&reference, 0.25);
    let spread = if iqr > 0.0 {
        iqr
    } else {
        IQR_PER_STD * std_dev(&reference)
    };
    let scale = spread.max(opts.relative_floor * median.abs());
    let score = if scale > 0.0 {
        deviation / scale
    } else {
        opts.max_score
    };
    Some(score.min(opts.max_score))
}

/// Linear interpolation between closest ranks (numpy's default) over sorted, non-empty data.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

fn std_dev(xs: &[f64]) -> f64 {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    (xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n).sqrt()
}

/// Ranks components by their most anomalous metric, most likely cause first; ties go by
/// component name. Rows with `time < fault_time` are the reference, the others the window.
pub fn rank_root_causes(
    frame: &MetricFrame,
    fault_time: i64,
    opts: &RcaOptions,
) -> Result<Vec<RankedCause>, RcaError> {
    rank_root_causes_by(frame, fault_time, opts, component_of)
}

/// [`rank_root_causes`] with the component of each column given by `owner` (for frames whose
/// columns are not named `<component>_<metric>`, such as the node's history).
pub fn rank_root_causes_by(
    frame: &MetricFrame,
    fault_time: i64,
    opts: &RcaOptions,
    owner: impl Fn(&str) -> &str,
) -> Result<Vec<RankedCause>, RcaError> {
    opts.validate()?;
    if frame.names.is_empty() {
        return Err(RcaError::NoMetrics);
    }
    if !frame.times.iter().any(|&t| t < fault_time) {
        return Err(RcaError::NoReference(fault_time));
    }
    if !frame.times.iter().any(|&t| t >= fault_time) {
        return Err(RcaError::NoAnomalousRows(fault_time));
    }
    let mut best: BTreeMap<&str, (f64, &str)> = BTreeMap::new();
    for (name, col) in frame.names.iter().zip(&frame.columns) {
        let Some(score) = metric_score(&frame.times, col, fault_time, opts) else {
            continue;
        };
        let entry = best.entry(owner(name)).or_insert((f64::NEG_INFINITY, name));
        // Strictly greater, so among equal metrics the first column in the header wins.
        if score > entry.0 {
            *entry = (score, name);
        }
    }
    let mut ranked: Vec<RankedCause> = best
        .into_iter()
        .map(|(component, (score, metric))| RankedCause {
            component: component.to_owned(),
            score,
            metric: metric.to_owned(),
        })
        .collect();
    sort_ranking(&mut ranked);
    Ok(ranked)
}

fn sort_ranking(ranked: &mut [RankedCause]) {
    ranked.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.component.cmp(&b.component))
    });
}

/// Parses a normal and an anomalous CSV (same columns) and ranks their components.
/// `fault_time` defaults to the earliest time of the anomalous CSV.
pub fn rank_from_csv(
    normal: &str,
    anomalous: &str,
    fault_time: Option<i64>,
    opts: &RcaOptions,
) -> Result<Vec<RankedCause>, RcaError> {
    let normal = MetricFrame::from_csv(normal)?;
    let anomalous = MetricFrame::from_csv(anomalous)?;
    rank_recordings(&normal, &anomalous, fault_time, opts)
}

/// Ranks from two recordings already read: laid end to end ([`join_recordings`]), the fault
/// time defaulting to the first anomalous row.
pub fn rank_recordings(
    normal: &MetricFrame,
    anomalous: &MetricFrame,
    fault_time: Option<i64>,
    opts: &RcaOptions,
) -> Result<Vec<RankedCause>, RcaError> {
    let (frame, start) = join_recordings(normal, anomalous)?;
    rank_root_causes(&frame, fault_time.unwrap_or(start), opts)
}

/// Lays a normal recording and an anomalous one end to end on one time line: recordings are
/// often taken hours apart, so the normal one is moved to end one second before the anomalous
/// one starts. Answers the joined frame and the anomalous recording's first time, where the
/// fault is taken to start. A given fault time is then read on the anomalous recording's clock.
pub fn join_recordings(
    normal: &MetricFrame,
    anomalous: &MetricFrame,
) -> Result<(MetricFrame, i64), RcaError> {
    let start = anomalous.first_time().ok_or(RcaError::EmptyAnomalous)?;
    let mut normal = normal.clone();
    if let Some(end) = normal.last_time() {
        normal.shift_time(start - 1 - end);
    }
    Ok((normal.concat(anomalous)?, start))
}

/// Re-ranks with the dependency graph (`a → b`: a calls b, so b's failure shows in a's
/// latency). When a caller and one of its callees are both anomalous (score at least
/// `graph_min_score`) and the callee scores at least `graph_callee_ratio` of the caller, the
/// callee is lifted just above the caller: the deeper anomaly is the likelier cause, which
/// metrics alone cannot tell. Lifts follow chains (a callee of a callee), and scores only rise,
/// so unrelated components keep their order. Components unknown to the graph are untouched.
pub fn rank_with_graph(
    causes: &[RankedCause],
    graph: &DepGraph,
    opts: &RcaOptions,
) -> Vec<RankedCause> {
    let mut ranked = causes.to_vec();
    let index: HashMap<String, usize> = ranked
        .iter()
        .enumerate()
        .map(|(i, c)| (c.component.clone(), i))
        .collect();
    let original: Vec<f64> = ranked.iter().map(|c| c.score).collect();
    let anomalous = |s: f64| s >= opts.graph_min_score;
    // Each pass lifts callees over their callers; a chain of length n settles in n passes, and
    // a bound on passes keeps cycles from lifting forever.
    for _ in 0..ranked.len() {
        let mut changed = false;
        for caller in 0..ranked.len() {
            if !anomalous(original[caller]) {
                continue;
            }
            for callee in graph.callees(&ranked[caller].component) {
                let Some(&j) = index.get(callee) else {
                    continue;
                };
                if j == caller
                    || !anomalous(original[j])
                    || original[j] < opts.graph_callee_ratio * original[caller]
                {
                    continue;
                }
                let lifted = next_up(ranked[caller].score);
                if ranked[j].score < lifted {
                    ranked[j].score = lifted;
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    sort_ranking(&mut ranked);
    ranked
}

/// The smallest score that ranks strictly above `s` (by a relative hair, so it survives
/// printing with a few digits only as a tie, and sorting always).
fn next_up(s: f64) -> f64 {
    let bumped = s + s.abs() * 1e-9;
    if bumped > s {
        bumped
    } else {
        f64::from_bits(s.to_bits() + 1)
    }
}

/// The 1-based rank of `component` in a ranking, if it is there.
pub fn rank_of(causes: &[RankedCause], component: &str) -> Option<usize> {
    causes
        .iter()
        .position(|c| c.component == component)
        .map(|i| i + 1)
}

/// Top-k accuracy over cases: `ac[k-1]` = share of cases whose true cause ranked within the
/// top k; `avg5` = mean of AC@1..AC@5.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopKAccuracy {
    pub cases: usize,
    pub ac: [f64; 5],
    pub avg5: f64,
}

/// Computes AC@1..AC@5 and Avg@5 from each case's rank of the true cause (`None`: not ranked).
pub fn top_k_accuracy(ranks: &[Option<usize>]) -> TopKAccuracy {
    let mut ac = [0.0; 5];
    if !ranks.is_empty() {
        for (k, slot) in ac.iter_mut().enumerate() {
            let hits = ranks
                .iter()
                .filter(|r| r.is_some_and(|r| r <= k + 1))
                .count();
            *slot = hits as f64 / ranks.len() as f64;
        }
    }
    TopKAccuracy {
        cases: ranks.len(),
        ac,
        avg5: ac.iter().sum::<f64>() / 5.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EdgeSource, EdgeUpdate, Observation};

    /// A deterministic wiggle in [-1, 1], so tests need no random numbers.
    fn wiggle(i: usize, k: usize) -> f64 {
        (((i * 7919 + k * 104_729) % 1000) as f64 / 500.0) - 1.0
    }

    /// 100 reference rows at t = 0..100 and 50 window rows at t = 100..150.
    fn frame(columns: Vec<(&str, Vec<f64>)>) -> MetricFrame {
        let n = columns[0].1.len();
        MetricFrame::new(
            (0..n as i64).collect(),
            columns
                .into_iter()
                .map(|(name, v)| (name.to_owned(), v))
                .collect(),
        )
        .unwrap()
    }

    fn noisy(level: f64, noise: f64, k: usize, jump_at: usize, jump: f64) -> Vec<f64> {
        (0..150)
            .map(|i| {
                let base = level + noise * wiggle(i, k);
                if i >= jump_at {
                    base + jump
                } else {
                    base
                }
            })
            .collect()
    }

    fn cause(component: &str, score: f64) -> RankedCause {
        RankedCause {
            component: component.to_owned(),
            score,
            metric: format!("{component}_cpu"),
        }
    }

    #[test]
    fn rows_out_of_time_order_are_named() {
        let csv = |times: &str| {
            let rows: String = times.split(',').map(|t| format!("{t},1.0\n")).collect();
            MetricFrame::from_csv(&format!("time,web_cpu\n{rows}")).unwrap()
        };
        assert_eq!(csv("1,2,3").check_time_order(), Ok(()));
        assert_eq!(
            csv("1,3,2").check_time_order().unwrap_err().to_string(),
            "data row 3: time 2 is not after 3; lagged tests read rows as steps in time order"
        );
        assert_eq!(
            csv("1,2,2").check_time_order(),
            Err(RcaError::NotInTimeOrder {
                row: 3,
                before: 2,
                after: 2
            })
        );
    }

    #[test]
    fn a_jumping_metric_ranks_its_service_first() {
        let f = frame(vec![
            ("web_cpu", noisy(20.0, 2.0, 1, 150, 0.0)),
            ("web_lat_99", noisy(0.2, 0.02, 2, 100, 0.03)),
            ("carts-db_mem", noisy(3.0e8, 1.0e6, 3, 100, 2.0e8)),
            ("carts-db_cpu", noisy(5.0, 0.5, 4, 150, 0.0)),
            ("orders_cpu", noisy(1.0, 0.1, 5, 120, 0.2)),
        ]);
        let ranked = rank_root_causes(&f, 100, &RcaOptions::default()).unwrap();
        let names: Vec<&str> = ranked.iter().map(|c| c.component.as_str()).collect();
        assert_eq!(names[0], "carts-db");
        assert_eq!(ranked[0].metric, "carts-db_mem");
        assert_eq!(names.len(), 3);
        assert!(ranked.windows(2).all(|w| w[0].score >= w[1].score));
    }

    #[test]
    fn a_flat_reference_that_changes_ranks_high_without_dividing_by_zero() {
        let mut flat = vec![4.0; 150];
        for v in &mut flat[100..] {
            *v = 8.0;
        }
        let f = frame(vec![
            ("a_cpu", noisy(50.0, 5.0, 1, 100, 3.0)),
            ("b_conn", flat),
            ("c_mem", vec![7.0; 150]),
        ]);
        let ranked = rank_root_causes(&f, 100, &RcaOptions::default()).unwrap();
        assert_eq!(ranked[0].component, "b");
        assert!(ranked.iter().all(|c| c.score.is_finite()));
        // Doubling from a flat 4 is a relative change of 1: scale 1% of 4.
        assert!((ranked[0].score - 100.0).abs() < 1e-9, "{ranked:?}");
        assert_eq!(ranked.last().unwrap().component, "c");
        assert_eq!(ranked.last().unwrap().score, 0.0);
    }

    #[test]
    fn scores_do_not_depend_on_units() {
        let mut flat = vec![4.0; 150];
        flat[120] = 5.0;
        let bytes: Vec<f64> = flat.iter().map(|v| v * 1.0e6).collect();
        let noisy_mb = noisy(300.0, 3.0, 9, 100, 30.0);
        let noisy_bytes: Vec<f64> = noisy_mb.iter().map(|v| v * 1.0e6).collect();
        let opts = RcaOptions::default();
        let t: Vec<i64> = (0..150).collect();
        for (a, b) in [(flat, bytes), (noisy_mb, noisy_bytes)] {
            let sa = metric_score(&t, &a, 100, &opts).unwrap();
            let sb = metric_score(&t, &b, 100, &opts).unwrap();
            assert!((sa - sb).abs() <= 1e-9 * sa.abs(), "{sa} vs {sb}");
        }
    }

    #[test]
    fn zero_then_moving_metric_gets_the_cap() {
        let mut v = vec![0.0; 150];
        v[130] = 1e-3;
        let t: Vec<i64> = (0..150).collect();
        let opts = RcaOptions::default();
        assert_eq!(metric_score(&t, &v, 100, &opts), Some(opts.max_score));
    }

    #[test]
    fn missing_values_are_skipped() {
        let mut v = noisy(10.0, 1.0, 1, 100, 50.0);
        v[3] = f64::NAN;
        v[120] = f64::NAN;
        let t: Vec<i64> = (0..150).collect();
        let s = metric_score(&t, &v, 100, &RcaOptions::default()).unwrap();
        assert!(s.is_finite() && s > 10.0);
        let empty = vec![f64::NAN; 150];
        assert_eq!(metric_score(&t, &empty, 100, &RcaOptions::default()), None);
    }

    #[test]
    fn a_late_or_early_fault_time_keeps_the_ranking() {
        let f = frame(vec![
            ("web_cpu", noisy(20.0, 2.0, 1, 100, 4.0)),
            ("db_cpu", noisy(5.0, 0.5, 2, 100, 20.0)),
            ("queue_mem", noisy(100.0, 3.0, 3, 150, 0.0)),
        ]);
        for fault in [80, 100, 120] {
            let ranked = rank_root_causes(&f, fault, &RcaOptions::default()).unwrap();
            assert_eq!(ranked[0].component, "db", "fault time {fault}");
        }
    }

    #[test]
    fn ties_break_by_name() {
        let f = frame(vec![
            ("zeta_cpu", noisy(1.0, 0.1, 1, 100, 1.0)),
            ("alpha_cpu", noisy(1.0, 0.1, 1, 100, 1.0)),
        ]);
        let ranked = rank_root_causes(&f, 100, &RcaOptions::default()).unwrap();
        assert_eq!(ranked[0].score, ranked[1].score);
        assert_eq!(ranked[0].component, "alpha");
    }

    #[test]
    fn component_is_the_part_before_the_first_underscore() {
        assert_eq!(component_of("carts-db_cpu"), "carts-db");
        assert_eq!(component_of("carts_lat_99"), "carts");
        assert_eq!(component_of("uptime"), "uptime");
    }

    #[test]
    fn ranking_refuses_an_empty_side_or_bad_options() {
        let f = frame(vec![("a_cpu", noisy(1.0, 0.1, 1, 100, 1.0))]);
        let opts = RcaOptions::default();
        assert_eq!(
            rank_root_causes(&f, 0, &opts),
            Err(RcaError::NoReference(0))
        );
        assert_eq!(
            rank_root_causes(&f, 150, &opts),
            Err(RcaError::NoAnomalousRows(150))
        );
        let bad = RcaOptions {
            relative_floor: f64::NAN,
            ..RcaOptions::default()
        };
        let err = rank_root_causes(&f, 100, &bad).unwrap_err();
        assert!(err.to_string().contains("relative_floor"), "{err}");
        let none = MetricFrame::new(vec![1, 2], vec![]).unwrap();
        assert_eq!(rank_root_causes(&none, 2, &opts), Err(RcaError::NoMetrics));
    }

    #[test]
    fn csv_parses_with_missing_values() {
        let f = MetricFrame::from_csv("time,a_cpu,b_mem\n1,1.5,\n2,NaN,3\n3.9,2,4\n").unwrap();
        assert_eq!(f.times(), &[1, 2, 3]);
        assert_eq!(f.names(), &["a_cpu".to_owned(), "b_mem".to_owned()]);
        let a = f.column("a_cpu").unwrap();
        assert_eq!(a[0], 1.5);
        assert!(a[1].is_nan());
        assert!(f.column("b_mem").unwrap()[0].is_nan());
        // The time column may sit anywhere.
        let g = MetricFrame::from_csv("x_cpu,Time\n1,10\n").unwrap();
        assert_eq!(g.times(), &[10]);
        assert_eq!(g.names(), &["x_cpu".to_owned()]);
    }

    #[test]
    fn bad_csv_errors_name_the_problem() {
        let cases = [
            ("", "no header"),
            ("t,a_cpu\n1,2\n", "no time column"),
            ("time,a_cpu,a_cpu\n1,2,3\n", "\"a_cpu\" appears twice"),
            (
                "time,a_cpu\n1,2\n2\n",
                "line 3 has 1 fields; the header has 2",
            ),
            (
                "time,a_cpu\n1,2\n2,x7\n",
                "line 3, column \"a_cpu\": \"x7\"",
            ),
            ("time,a_cpu\nsoon,2\n", "line 2: time \"soon\""),
        ];
        for (text, want) in cases {
            let err = MetricFrame::from_csv(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
            assert_eq!(err, err.to_lowercase(), "{err}");
        }
    }

    #[test]
    fn concat_matches_columns_by_name() {
        let a = MetricFrame::from_csv("time,x_cpu,y_mem\n1,1,10\n").unwrap();
        let b = MetricFrame::from_csv("y_mem,time,x_cpu\n20,2,2\n").unwrap();
        let c = a.concat(&b).unwrap();
        assert_eq!(c.times(), &[1, 2]);
        assert_eq!(c.column("x_cpu").unwrap(), &[1.0, 2.0]);
        assert_eq!(c.column("y_mem").unwrap(), &[10.0, 20.0]);
        let d = MetricFrame::from_csv("time,x_cpu,z_lat\n2,2,1\n").unwrap();
        let err = a.concat(&d).unwrap_err().to_string();
        assert!(err.contains("second lacks y_mem"), "{err}");
        assert!(err.contains("first lacks z_lat"), "{err}");
    }

    #[test]
    fn rank_from_csv_defaults_the_fault_time_to_the_first_anomalous_row() {
        let mut normal = String::from("time,web_cpu,db_cpu\n");
        let mut anomalous = String::from("time,db_cpu,web_cpu\n");
        for i in 0..60 {
            normal += &format!("{i},{},{}\n", 10.0 + wiggle(i, 1), 5.0 + wiggle(i, 2));
            let t = 1000 + i;
            anomalous += &format!("{t},{},{}\n", 50.0 + wiggle(i, 3), 11.0 + wiggle(i, 4));
        }
        let ranked = rank_from_csv(&normal, &anomalous, None, &RcaOptions::default()).unwrap();
        assert_eq!(ranked[0].component, "db");
        let explicit =
            rank_from_csv(&normal, &anomalous, Some(1000), &RcaOptions::default()).unwrap();
        assert_eq!(ranked, explicit);
        let err = rank_from_csv(&normal, "time,db_cpu\n", None, &RcaOptions::default());
        assert_eq!(err, Err(RcaError::EmptyAnomalous));
        // Times at the ends of i64 are refused, not wrapped when the recordings are joined.
        for t in ["-9223372036854775808", "9e17"] {
            let err = rank_from_csv(
                &normal,
                &format!("time,db_cpu\n{t},1\n"),
                None,
                &RcaOptions::default(),
            );
            assert!(matches!(err, Err(RcaError::BadTime { .. })), "{t}: {err:?}");
        }
    }

    fn graph(edges: &[(&str, &str)]) -> DepGraph {
        let mut g = DepGraph::new();
        for (from, to) in edges {
            g.apply(&EdgeUpdate {
                from: (*from).to_owned(),
                to: (*to).to_owned(),
                observation: Observation::new(EdgeSource::Declared, 1.0, 0),
            })
            .unwrap();
        }
        g
    }

    fn order(causes: &[RankedCause]) -> Vec<&str> {
        causes.iter().map(|c| c.component.as_str()).collect()
    }

    #[test]
    fn graph_lifts_an_anomalous_callee_over_its_anomalous_caller() {
        // web → api → db; db's slowness shows most in web's latency.
        let g = graph(&[("web", "api"), ("api", "db"), ("web", "cache")]);
        let causes = vec![
            cause("web", 90.0),
            cause("api", 80.0),
            cause("db", 60.0),
            cause("cache", 70.0),
            cause("batch", 5.0),
        ];
        let opts = RcaOptions::default();
        let ranked = rank_with_graph(&causes, &g, &opts);
        // db rides the chain to the top; cache, another anomalous callee of web, rises above
        // web too; the barely anomalous batch stays last.
        assert_eq!(order(&ranked)[..2], ["db", "api"]);
        assert!(order(&ranked).contains(&"cache"));
        assert_eq!(order(&ranked).last(), Some(&"batch"));
        assert_eq!(ranked.len(), causes.len());
        assert!(ranked.windows(2).all(|w| w[0].score >= w[1].score));
    }

    #[test]
    fn graph_leaves_a_clear_root_cause_alone() {
        let g = graph(&[("web", "api"), ("api", "db")]);
        let opts = RcaOptions::default();
        // The callee is barely anomalous next to its caller: no lift.
        let causes = vec![cause("api", 500.0), cause("db", 20.0), cause("web", 15.0)];
        assert_eq!(rank_with_graph(&causes, &g, &opts), causes);
        // The callee is not anomalous at all: no lift.
        let causes = vec![cause("web", 12.0), cause("api", 9.0)];
        assert_eq!(rank_with_graph(&causes, &g, &opts), causes);
        // Components outside the graph keep their place.
        let causes = vec![cause("x", 50.0), cause("y", 40.0)];
        assert_eq!(rank_with_graph(&causes, &g, &opts), causes);
    }

    #[test]
    fn graph_lifting_ends_on_a_cycle() {
        let g = graph(&[("a", "b"), ("b", "a")]);
        let causes = vec![cause("a", 40.0), cause("b", 30.0)];
        let ranked = rank_with_graph(&causes, &g, &RcaOptions::default());
        assert_eq!(ranked.len(), 2);
        assert!(ranked.iter().all(|c| c.score.is_finite() && c.score < 41.0));
    }

    #[test]
    fn top_k_accuracy_counts_hits() {
        let acc = top_k_accuracy(&[Some(1), Some(2), Some(6), None]);
        assert_eq!(acc.cases, 4);
        assert_eq!(acc.ac, [0.25, 0.5, 0.5, 0.5, 0.5]);
        assert!((acc.avg5 - 0.45).abs() < 1e-12);
        assert_eq!(top_k_accuracy(&[]).ac, [0.0; 5]);
        let causes = vec![cause("a", 2.0), cause("b", 1.0)];
        assert_eq!(rank_of(&causes, "b"), Some(2));
        assert_eq!(rank_of(&causes, "c"), None);
    }
}

//! The Numenta Anomaly Benchmark's scoring rules (Lavin & Ahmad 2015), reimplemented from NAB's
//! own scorer (`nab/sweeper.py`, `nab/optimizer.py`, `nab/runner.py`) so that numbers produced
//! here are comparable with the published ones.
//!
//! - Each series starts with a probationary period, [`probationary_period`] rows, that is never
//!   scored: a detector may use it to learn.
//! - Every row carries a weight. Inside an anomaly window it rewards a detection, from `a_tp` at
//!   the window's first row decaying with [`scaled_sigmoid`] towards 0 at its last; outside
//!   windows it penalises one, by up to `a_fp`, less so right after a window ends.
//! - A row whose anomaly score is `>= threshold` is a detection. A window earns the weight of its
//!   first scored detection, or costs `a_fn` when it has none; every detection outside windows
//!   adds its (negative) weight.
//! - One threshold is chosen per detector and profile, the one that maximises the corpus total,
//!   and the total is normalised to `100 * (raw - null) / (perfect - null)`.
//!
//! Where NAB's code and its description part ways, this module follows the code:
//! - a window lying wholly inside the probationary period is neither a hit nor a miss (NAB drops
//!   its rows before scoring), so it does not count in `null`; `perfect` still counts every
//!   window, as NAB's normaliser counts every labelled window;
//! - when no threshold beats detecting nothing, the reported threshold is 1.1, NAB's start value;
//!   among equal totals the highest threshold wins, as in NAB's stable sort;
//! - when a window's end timestamp is repeated in the data, the window ends at its first row.
//!
//! It departs from NAB in four places, all invisible on NAB's corpus:
//! - `null` is the total of detecting nothing; NAB takes the best total of its null detector (a
//!   constant 0.5), which equals it unless flagging every row beats flagging none;
//! - a false positive after a one-row window weighs `-a_fp`, where NAB divides by zero;
//! - a window maps to the rows between its limits, where NAB requires both limits to be row
//!   timestamps;
//! - [`ProfileScore::tp`] and [`ProfileScore::fn_`] count windows, where NAB's result files
//!   count rows.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};

use crate::PredictError;

/// Share of each series, from its start, that is never scored.
pub const PROBATION_PERCENT: f64 = 0.15;

/// The probationary period never exceeds this share of 5000 rows (750 rows).
const PROBATION_CAP_ROWS: f64 = 5000.0;

/// The threshold NAB reports when detecting nothing scores best: above every valid score.
pub const NO_DETECTION_THRESHOLD: f64 = 1.1;

/// The label file under a corpus root.
const LABELS_FILE: &str = "labels/combined_windows.json";

/// A NAB application profile: the weights of a true positive, a false positive and a false
/// negative.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Profile {
    /// NAB's name for the profile, as in its `config/profiles.json`.
    pub name: &'static str,
    /// Reward for detecting a window at its first row (`tpWeight`).
    pub a_tp: f64,
    /// Cost of a detection far from any window (`fpWeight`).
    pub a_fp: f64,
    /// Cost of a window without a detection (`fnWeight`).
    pub a_fn: f64,
}

/// NAB's three profiles: standard, low false-positive rate, low false-negative rate.
pub const PROFILES: [Profile; 3] = [
    Profile {
        name: "standard",
        a_tp: 1.0,
        a_fp: 0.11,
        a_fn: 1.0,
    },
    Profile {
        name: "reward_low_FP_rate",
        a_tp: 1.0,
        a_fp: 0.22,
        a_fn: 1.0,
    },
    Profile {
        name: "reward_low_FN_rate",
        a_tp: 1.0,
        a_fp: 0.11,
        a_fn: 2.0,
    },
];

/// The profile of [`PROFILES`] called `name`, if any.
pub fn profile(name: &str) -> Option<&'static Profile> {
    let all: &'static [Profile; 3] = &PROFILES;
    all.iter().find(|p| p.name == name)
}

/// One series of the corpus with its labelled anomaly windows.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LabeledSeries {
    /// Path relative to the corpus' `data/` folder: `<category>/<file>.csv`.
    pub name: String,
    /// Row timestamps, unix seconds (UTC), non-decreasing (NAB's data repeats a few).
    pub timestamps: Vec<i64>,
    /// Row values, one per timestamp.
    pub values: Vec<f64>,
    /// Anomaly windows as inclusive row index ranges, sorted and disjoint.
    pub windows: Vec<(usize, usize)>,
}

/// The score of one detector under one profile at one threshold.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ProfileScore {
    /// The profile's name.
    pub profile: &'static str,
    /// A row is a detection when its anomaly score is `>=` this.
    pub threshold: f64,
    /// The corpus total: window rewards, minus misses, minus false positives.
    pub raw: f64,
    /// The total of a detector that detects nothing.
    pub null: f64,
    /// The total of a detector that detects every window at its first row and nothing else.
    pub perfect: f64,
    /// `100 * (raw - null) / (perfect - null)`: 0 for detecting nothing, 100 for perfect.
    pub normalized: f64,
    /// Windows with at least one scored detection.
    pub tp: usize,
    /// Scored detections outside every window (rows).
    pub fp: usize,
    /// Scored windows without a detection.
    #[serde(rename = "fn")]
    pub fn_: usize,
}

/// Number of rows at the start of a series of `rows` rows that are not scored:
/// `min(floor(0.15 * rows), 0.15 * 5000)`.
pub fn probationary_period(rows: usize) -> usize {
    let share = (PROBATION_PERCENT * rows as f64).floor();
    // Both operands are non-negative and at most 750, so the cast is exact.
    share.min(PROBATION_PERCENT * PROBATION_CAP_ROWS) as usize
}

/// NAB's reward curve over a position relative to a window, in window lengths: -1 at the
/// window's first row gives about 0.987, 0 at its end gives 0, positive positions (after a
/// window) fall towards -1, and anything beyond 3 is exactly -1.
pub fn scaled_sigmoid(position: f64) -> f64 {
    if position > 3.0 {
        -1.0
    } else {
        2.0 / (1.0 + (5.0 * position).exp()) - 1.0
    }
}

/// How one row counts, once the profile's weights are applied.
#[derive(Debug, Clone, Copy)]
enum Row {
    /// In the probationary period: ignored.
    Probation,
    /// Inside window `window` (index into the series' windows): a detection earns `weight`.
    Window { window: usize, weight: f64 },
    /// Outside every window: a detection adds `weight` (negative).
    Outside { weight: f64 },
}

/// A sum that keeps the rounding error of each addition (Neumaier), so that a running total
/// updated row by row matches one summed afresh.
#[derive(Debug, Clone, Copy)]
struct Sum {
    sum: f64,
    compensation: f64,
}

impl Sum {
    fn new(start: f64) -> Self {
        Self {
            sum: start,
            compensation: 0.0,
        }
    }

    fn add(&mut self, x: f64) {
        let t = self.sum + x;
        if self.sum.abs() >= x.abs() {
            self.compensation += (self.sum - t) + x;
        } else {
            self.compensation += (x - t) + self.sum;
        }
        self.sum = t;
    }

    fn value(self) -> f64 {
        self.sum + self.compensation
    }
}

/// The windows of `series` that are well formed for `rows` rows: in order, each within the
/// series and after the previous one. On validated input this is every window.
fn usable_windows(series: &LabeledSeries, rows: usize) -> Vec<(usize, usize)> {
    let mut sorted = series.windows.clone();
    sorted.sort_unstable();
    let mut kept: Vec<(usize, usize)> = Vec::with_capacity(sorted.len());
    for (start, end) in sorted {
        let after_previous = kept.last().is_none_or(|&(_, prev_end)| start > prev_end);
        if start <= end && end < rows && after_previous {
            kept.push((start, end));
        }
    }
    kept
}

/// Weighs every row of a series under `profile`, as NAB's `calcSweepScore` does.
fn weigh_rows(rows: usize, windows: &[(usize, usize)], profile: &Profile) -> Vec<Row> {
    let probation = probationary_period(rows);
    let max_tp = scaled_sigmoid(-1.0);
    let mut out = Vec::with_capacity(rows);
    // The previous window's last row and width, once one has ended.
    let mut previous: Option<(usize, f64)> = None;
    let outside = |i: usize, previous: Option<(usize, f64)>| match previous {
        None => -profile.a_fp,
        // A one-row window divides by zero: the position is +inf and the weight -a_fp.
        Some((end, width)) => scaled_sigmoid((i - end) as f64 / (width - 1.0)) * profile.a_fp,
    };
    let mut next_row = 0;
    for (window, &(start, end)) in windows.iter().enumerate() {
        for i in next_row..start {
            out.push(Row::Outside {
                weight: outside(i, previous),
            });
        }
        let width = (end - start + 1) as f64;
        for i in start..=end {
            let position = -((end - i + 1) as f64) / width;
            let weight = scaled_sigmoid(position) * profile.a_tp / max_tp;
            out.push(Row::Window { window, weight });
        }
        previous = Some((end, width));
        next_row = end + 1;
    }
    for i in next_row..rows {
        out.push(Row::Outside {
            weight: outside(i, previous),
        });
    }
    for row in out.iter_mut().take(probation) {
        *row = Row::Probation;
    }
    out
}

/// Number of windows with at least one row after the probationary period.
fn scored_windows(rows: usize, windows: &[(usize, usize)]) -> usize {
    let probation = probationary_period(rows);
    windows.iter().filter(|&&(_, end)| end >= probation).count()
}

/// Checks that `scores` fits `series` and that every series is well formed: as many score
/// vectors as series, one score per row, each in `[0, 1]`, timestamps and values of equal
/// length, windows sorted, disjoint and within the series.
pub fn validate(series: &[LabeledSeries], scores: &[Vec<f64>]) -> Result<(), PredictError> {
    if series.len() != scores.len() {
        return Err(PredictError::param(
            "scores",
            format!("{} score vectors for {} series", scores.len(), series.len()),
        ));
    }
    for (s, sc) in series.iter().zip(scores) {
        let rows = s.timestamps.len();
        if s.values.len() != rows {
            return Err(PredictError::input(
                &s.name,
                format!("{rows} timestamps but {} values", s.values.len()),
            ));
        }
        if sc.len() != rows {
            return Err(PredictError::input(
                &s.name,
                format!("{} anomaly scores for {rows} rows", sc.len()),
            ));
        }
        if let Some((row, value)) = sc
            .iter()
            .enumerate()
            .find(|(_, v)| !(0.0..=1.0).contains(*v))
        {
            return Err(PredictError::input(
                &s.name,
                format!("row {row}: anomaly score {value} is not in [0, 1]"),
            ));
        }
        let mut previous_end: Option<usize> = None;
        for (k, &(start, end)) in s.windows.iter().enumerate() {
            let problem = if start > end {
                Some("starts after it ends".to_owned())
            } else if end >= rows {
                Some(format!(
                    "ends past the last row ({})",
                    rows.saturating_sub(1)
                ))
            } else if previous_end.is_some_and(|prev| start <= prev) {
                Some("does not start after the previous window ends".to_owned())
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(PredictError::input(
                    &s.name,
                    format!("window {k} [{start}, {end}] {problem}"),
                ));
            }
            previous_end = Some(end);
        }
    }
    Ok(())
}

fn check_profile(profile: &Profile) -> Result<(), PredictError> {
    let ok = profile.a_tp.is_finite()
        && profile.a_tp > 0.0
        && profile.a_fp.is_finite()
        && profile.a_fp >= 0.0
        && profile.a_fn.is_finite()
        && profile.a_fn >= 0.0;
    if ok {
        Ok(())
    } else {
        Err(PredictError::param(
            "profile",
            format!(
                "{}: weights must be finite, a_tp > 0, a_fp >= 0 and a_fn >= 0 (got {}, {}, {})",
                profile.name, profile.a_tp, profile.a_fp, profile.a_fn
            ),
        ))
    }
}

/// Scores the corpus at NAB's optimal threshold for `profile`: the one threshold, shared by all
/// series, that maximises the corpus total. `scores[i]` holds one anomaly score per row of
/// `series[i]`.
///
/// Sorts every scored row once and sweeps thresholds downwards, updating the total row by row:
/// O(N log N) for N rows.
///
/// # Errors
/// A [`PredictError`] naming the series when the input fails [`validate`], or when the corpus
/// has no anomaly window (the normalised score is then undefined), or when the profile's weights
/// are not finite and positive.
pub fn score_corpus(
    series: &[LabeledSeries],
    scores: &[Vec<f64>],
    profile: &Profile,
) -> Result<ProfileScore, PredictError> {
    check_profile(profile)?;
    validate(series, scores)?;
    let total_windows: usize = series.iter().map(|s| s.windows.len()).sum();
    if total_windows == 0 {
        return Err(PredictError::param(
            "series",
            "the corpus has no anomaly window, so the normalised score is undefined",
        ));
    }

    // Every scored row: its anomaly score, its window (numbered across the corpus), its weight.
    let mut points: Vec<(f64, Option<usize>, f64)> = Vec::new();
    let mut scored = 0;
    let mut offset = 0;
    for (s, sc) in series.iter().zip(scores) {
        let rows = s.timestamps.len();
        scored += scored_windows(rows, &s.windows);
        for (row, &score) in weigh_rows(rows, &s.windows, profile).iter().zip(sc) {
            match *row {
                Row::Probation => {}
                Row::Window { window, weight } => {
                    points.push((score, Some(offset + window), weight))
                }
                Row::Outside { weight } => points.push((score, None, weight)),
            }
        }
        offset += s.windows.len();
    }
    points.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));

    let null = -profile.a_fn * scored as f64;
    let mut best_hit: Vec<Option<f64>> = vec![None; total_windows];
    let mut total = Sum::new(null);
    let mut best = (NO_DETECTION_THRESHOLD, null);
    let mut i = 0;
    while i < points.len() {
        let threshold = points[i].0;
        while i < points.len() && points[i].0 == threshold {
            let (_, window, weight) = points[i];
            match window {
                None => total.add(weight),
                Some(w) => match best_hit[w] {
                    None => {
                        total.add(profile.a_fn);
                        total.add(weight);
                        best_hit[w] = Some(weight);
                    }
                    Some(hit) if weight > hit => {
                        total.add(weight - hit);
                        best_hit[w] = Some(weight);
                    }
                    Some(_) => {}
                },
            }
            i += 1;
        }
        let value = total.value();
        if value > best.1 {
            best = (threshold, value);
        }
    }
    Ok(score_at_threshold(series, scores, profile, best.0))
}

/// Scores the corpus at a given threshold: a row is a detection when its anomaly score is
/// `>= threshold`.
///
/// Meant for input that passed [`validate`] (as [`score_corpus`] checks); otherwise it does not
/// panic but scores only what is well formed: rows past the shorter of timestamps and scores
/// are ignored, NaN scores never detect, malformed or overlapping windows are dropped. With no
/// window at all `normalized` is NaN.
pub fn score_at_threshold(
    series: &[LabeledSeries],
    scores: &[Vec<f64>],
    profile: &Profile,
    threshold: f64,
) -> ProfileScore {
    let mut raw = Sum::new(0.0);
    let (mut scored, mut total_windows, mut tp, mut fp, mut fn_) = (0, 0, 0, 0, 0);
    for (s, sc) in series.iter().zip(scores) {
        let rows = s.timestamps.len();
        let windows = usable_windows(s, rows);
        total_windows += windows.len();
        let probation = probationary_period(rows);
        let mut first_hit: Vec<Option<f64>> = vec![None; windows.len()];
        for (row, &score) in weigh_rows(rows, &windows, profile).iter().zip(sc) {
            // NaN scores never detect.
            let detected = score >= threshold;
            if !detected {
                continue;
            }
            match *row {
                Row::Probation => {}
                Row::Window { window, weight } => {
                    first_hit[window].get_or_insert(weight);
                }
                Row::Outside { weight } => {
                    raw.add(weight);
                    fp += 1;
                }
            }
        }
        for (&(_, end), hit) in windows.iter().zip(first_hit) {
            if end < probation {
                continue;
            }
            scored += 1;
            match hit {
                Some(weight) => {
                    raw.add(weight);
                    tp += 1;
                }
                None => {
                    raw.add(-profile.a_fn);
                    fn_ += 1;
                }
            }
        }
    }
    let raw = raw.value();
    let null = -profile.a_fn * scored as f64;
    let perfect = profile.a_tp * total_windows as f64;
    let normalized = if perfect == null {
        f64::NAN
    } else {
        100.0 * (raw - null) / (perfect - null)
    };
    ProfileScore {
        profile: profile.name,
        threshold,
        raw,
        null,
        perfect,
        normalized,
        tp,
        fp,
        fn_,
    }
}

/// Parses `YYYY-mm-dd HH:MM:SS[.ffffff]` (a `T` may replace the space), read as UTC, into unix
/// seconds; a fraction of a second is dropped (the result is the floor). `None` when the text
/// is not such a timestamp or names no real date (month 13, February 30th, hour 24).
pub fn parse_timestamp(s: &str) -> Option<i64> {
    parse_timestamp_parts(s).map(|(seconds, _)| seconds)
}

/// Like [`parse_timestamp`], keeping the fraction of a second in nanoseconds.
fn parse_timestamp_parts(s: &str) -> Option<(i64, u32)> {
    let b = s.trim().as_bytes();
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !(b[10] == b' ' || b[10] == b'T')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let number = |from: usize, to: usize| -> Option<i64> {
        b[from..to].iter().try_fold(0i64, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    };
    let (year, month, day) = (number(0, 4)?, number(5, 7)?, number(8, 10)?);
    let (hour, minute, second) = (number(11, 13)?, number(14, 16)?, number(17, 19)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let nanos = match &b[19..] {
        [] => 0,
        [b'.', digits @ ..] if (1..=9).contains(&digits.len()) => {
            let mut n: u32 = 0;
            for &c in digits {
                if !c.is_ascii_digit() {
                    return None;
                }
                n = n * 10 + u32::from(c - b'0');
            }
            // At most 9 digits, so the exponent is at most 8.
            n * 10u32.pow(9 - digits.len() as u32)
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    Some((days * 86_400 + hour * 3_600 + minute * 60 + second, nanos))
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Formats unix seconds as `YYYY-mm-dd HH:MM:SS` (UTC), the form of NAB's data files.
pub fn format_timestamp(t: i64) -> String {
    let (year, month, day) = civil_from_days(t.div_euclid(86_400));
    let second_of_day = t.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        second_of_day / 3_600,
        second_of_day % 3_600 / 60,
        second_of_day % 60
    )
}

/// Reads a NAB corpus: `root/data/<category>/<file>.csv` (columns `timestamp,value`) and
/// `root/labels/combined_windows.json` (series name to a list of `[start, end]` timestamps).
/// A window covers the rows from the first at or after its start to the last at or before its
/// end (to the first of them when the end timestamp is repeated, as in NAB). Series come back
/// sorted by name.
///
/// # Errors
/// A [`PredictError`] naming the file (and the line, for a data row) when a file cannot be
/// read or parsed, a data file has no label entry or a label entry no data file, a timestamp is
/// before the previous row's, or a window covers no row or overlaps another.
pub fn read_corpus(root: &Path) -> Result<Vec<LabeledSeries>, PredictError> {
    let labels_path = root.join(LABELS_FILE);
    let text = fs::read_to_string(&labels_path).map_err(|e| PredictError::io(&labels_path, e))?;
    let labels: BTreeMap<String, Vec<(String, String)>> = serde_json::from_str(&text)
        .map_err(|e| PredictError::input(&labels_path, format!("invalid label file: {e}")))?;

    let data_dir = root.join("data");
    let names = list_data_files(&data_dir)?;
    if let Some(missing) = labels.keys().find(|name| !names.contains(*name)) {
        return Err(PredictError::input(
            &labels_path,
            format!(
                "labels {missing} but {} does not exist",
                data_dir.join(missing).display()
            ),
        ));
    }

    let mut corpus = Vec::with_capacity(names.len());
    for name in names {
        let path = data_dir.join(&name);
        let limits = labels.get(&name).ok_or_else(|| {
            PredictError::input(
                &path,
                format!("no entry for {name} in {}", labels_path.display()),
            )
        })?;
        let (timestamps, values) = read_series(&path)?;
        let windows = map_windows(&timestamps, limits)
            .map_err(|message| PredictError::input(&labels_path, format!("{name}: {message}")))?;
        corpus.push(LabeledSeries {
            name,
            timestamps,
            values,
            windows,
        });
    }
    Ok(corpus)
}

/// Reads one unlabelled `timestamp,value` series; its name is `<parent folder>/<file>`, so
/// [`write_results`] lays its scores out as NAB does.
pub fn read_series_file(path: &Path) -> Result<LabeledSeries, PredictError> {
    let (timestamps, values) = read_series(path)?;
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let category = path.parent().and_then(|p| p.file_name()).map_or_else(
        || "series".to_string(),
        |c| c.to_string_lossy().into_owned(),
    );
    Ok(LabeledSeries {
        name: format!("{category}/{file}"),
        timestamps,
        values,
        windows: Vec::new(),
    })
}

/// The `<category>/<file>.csv` names under `data_dir`, sorted; hidden entries and files that do
/// not end in `.csv` are skipped, as are files directly in `data_dir` (NAB keeps a README there).
fn list_data_files(data_dir: &Path) -> Result<BTreeSet<String>, PredictError> {
    let read = |dir: &Path| -> Result<Vec<(String, PathBuf)>, PredictError> {
        let mut entries = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| PredictError::io(dir, e))? {
            let path = entry.map_err(|e| PredictError::io(dir, e))?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
                return Err(PredictError::input(&path, "file name is not UTF-8"));
            };
            if !name.starts_with('.') {
                entries.push((name, path));
            }
        }
        Ok(entries)
    };
    let mut names = BTreeSet::new();
    for (category, dir) in read(data_dir)? {
        if !dir.is_dir() {
            continue;
        }
        for (file, path) in read(&dir)? {
            if file.ends_with(".csv") && path.is_file() {
                names.insert(format!("{category}/{file}"));
            }
        }
    }
    Ok(names)
}

/// Reads the `timestamp` and `value` columns of one data file.
fn read_series(path: &Path) -> Result<(Vec<i64>, Vec<f64>), PredictError> {
    let file = fs::File::open(path).map_err(|e| PredictError::io(path, e))?;
    let mut reader = csv::Reader::from_reader(BufReader::new(file));
    let headers = reader
        .headers()
        .map_err(|e| PredictError::input(path, e.to_string()))?;
    let column = |name: &str| {
        headers
            .iter()
            .position(|h| h.trim() == name)
            .ok_or_else(|| {
                PredictError::input(path, format!("line 1: no {name:?} column in the header"))
            })
    };
    let (t_col, v_col) = (column("timestamp")?, column("value")?);

    let (mut timestamps, mut values) = (Vec::new(), Vec::new());
    for record in reader.records() {
        let record = record.map_err(|e| PredictError::input(path, e.to_string()))?;
        let line = record.position().map_or(0, csv::Position::line);
        let field = |col: usize| record.get(col).unwrap_or("").trim();
        let raw_t = field(t_col);
        let t = parse_timestamp(raw_t).ok_or_else(|| {
            PredictError::input(
                path,
                format!("line {line}: {raw_t:?} is not a timestamp (YYYY-mm-dd HH:MM:SS)"),
            )
        })?;
        // NAB's data repeats a timestamp now and then; it never goes back in time.
        if timestamps.last().is_some_and(|&previous| t < previous) {
            return Err(PredictError::input(
                path,
                format!("line {line}: timestamp {raw_t} is before the previous row's"),
            ));
        }
        let raw_v = field(v_col);
        let v = raw_v
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| {
                PredictError::input(
                    path,
                    format!("line {line}: value {raw_v:?} is not a finite number"),
                )
            })?;
        timestamps.push(t);
        values.push(v);
    }
    if timestamps.is_empty() {
        return Err(PredictError::input(path, "no data rows"));
    }
    Ok((timestamps, values))
}

/// Maps `[start, end]` timestamp windows to inclusive row ranges, sorted; the message of an
/// error names the window.
fn map_windows(
    timestamps: &[i64],
    limits: &[(String, String)],
) -> Result<Vec<(usize, usize)>, String> {
    let mut windows = Vec::with_capacity(limits.len());
    for (k, (start, end)) in limits.iter().enumerate() {
        let parse = |s: &str| {
            parse_timestamp_parts(s).ok_or_else(|| {
                format!("window {k}: {s:?} is not a timestamp (YYYY-mm-dd HH:MM:SS[.ffffff])")
            })
        };
        let (start_s, start_ns) = parse(start)?;
        let (end_s, _) = parse(end)?;
        // First row at or after the start; a fraction of a second moves it one second later.
        let first_allowed = if start_ns > 0 { start_s + 1 } else { start_s };
        let first = timestamps.partition_point(|&t| t < first_allowed);
        // Last row at or before the end; when the end timestamp is repeated, its first row, as
        // NAB ends a window at `timestamps.index(end)`.
        let at_end = timestamps.partition_point(|&t| t < end_s);
        let last = if timestamps.get(at_end) == Some(&end_s) {
            Some(at_end)
        } else {
            at_end.checked_sub(1)
        };
        match last {
            Some(last) if first <= last => windows.push((first, last)),
            _ => {
                return Err(format!(
                    "window {k} [{start}, {end}] covers no row of the series"
                ))
            }
        }
    }
    windows.sort_unstable();
    for pair in windows.windows(2) {
        if pair[1].0 <= pair[0].1 {
            return Err(format!(
                "windows over rows {:?} and {:?} overlap",
                pair[0], pair[1]
            ));
        }
    }
    Ok(windows)
}

/// Writes one NAB result file, `<out_dir>/<detector>/<category>/<detector>_<file>.csv`, with
/// the columns `timestamp,value,anomaly_score` and one row per row of `series`; returns its
/// path.
///
/// # Errors
/// A [`PredictError`] when `detector` is empty or holds a path separator, the series' name is
/// not `<category>/<file>`, `scores` does not hold one score in `[0, 1]` per row, or the file
/// cannot be written.
pub fn write_results(
    out_dir: &Path,
    detector: &str,
    series: &LabeledSeries,
    scores: &[f64],
) -> Result<PathBuf, PredictError> {
    if detector.is_empty() || detector.contains(['/', '\\']) {
        return Err(PredictError::param(
            "detector",
            format!("{detector:?} must be a non-empty name without path separators"),
        ));
    }
    let (category, file) = series
        .name
        .split_once('/')
        .filter(|(c, f)| !c.is_empty() && !f.is_empty() && !f.contains('/'))
        .ok_or_else(|| PredictError::input(&series.name, "series name is not <category>/<file>"))?;
    validate(std::slice::from_ref(series), &[scores.to_vec()])?;

    let dir = out_dir.join(detector).join(category);
    fs::create_dir_all(&dir).map_err(|e| PredictError::io(&dir, e))?;
    let path = dir.join(format!("{detector}_{file}"));
    let out = fs::File::create(&path).map_err(|e| PredictError::io(&path, e))?;
    let mut writer = csv::Writer::from_writer(BufWriter::new(out));
    let io = |e: csv::Error| PredictError::io(&path, e.into());
    writer
        .write_record(["timestamp", "value", "anomaly_score"])
        .map_err(io)?;
    for ((&t, value), score) in series.timestamps.iter().zip(&series.values).zip(scores) {
        writer
            .write_record([format_timestamp(t), value.to_string(), score.to_string()])
            .map_err(io)?;
    }
    writer.flush().map_err(|e| PredictError::io(&path, e))?;
    Ok(path)
}

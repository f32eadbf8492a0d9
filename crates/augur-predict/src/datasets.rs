//! Readers for the evaluation sets in `shared/data` (see its README): C-MAPSS run-to-failure
//! engines and the Azure predictive-maintenance tables. Each reader names the file and line of
//! anything it cannot read. NAB's reader is in [`crate::nab`].

use std::collections::BTreeMap;
use std::path::Path;

use crate::lstm::{Scaling, Sequence};
use crate::nab::parse_timestamp;
use crate::PredictError;

/// One C-MAPSS engine: its rows, oldest first, each `cycle, settings(3), sensors(21)`.
#[derive(Debug, Clone)]
pub struct Engine {
    pub id: u32,
    pub rows: Vec<Vec<f32>>,
}

/// Column names of a C-MAPSS row after the engine id. The cycle is the engine's age: online,
/// as every sensor is (row t knows its own cycle), and what a fleet's age-at-failure
/// distribution is read from.
pub fn cmapss_columns() -> Vec<String> {
    std::iter::once("cycle".to_string())
        .chain((1..=3).map(|i| format!("setting{i}")))
        .chain((1..=21).map(|i| format!("s{i}")))
        .collect()
}

/// Reads `PM_train.txt` (space separated: id, cycle, 3 settings, 21 sensors).
pub fn read_cmapss(path: &Path) -> Result<Vec<Engine>, PredictError> {
    let text = std::fs::read_to_string(path).map_err(|e| PredictError::io(path, e))?;
    let mut engines: BTreeMap<u32, Vec<(u32, Vec<f32>)>> = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        if fields.len() != 26 {
            return Err(PredictError::input(
                path,
                format!(
                    "line {}: {} fields, want 26 (id, cycle, 3 settings, 21 sensors)",
                    n + 1,
                    fields.len()
                ),
            ));
        }
        let bad = |what: &str| PredictError::input(path, format!("line {}: bad {what}", n + 1));
        let id: u32 = fields[0].parse().map_err(|_| bad("engine id"))?;
        let cycle: u32 = fields[1].parse().map_err(|_| bad("cycle"))?;
        let vals = fields[1..]
            .iter()
            .map(|f| f.parse::<f32>().ok().filter(|v| v.is_finite()))
            .collect::<Option<Vec<f32>>>()
            .ok_or_else(|| bad("number"))?;
        engines.entry(id).or_default().push((cycle, vals));
    }
    if engines.is_empty() {
        return Err(PredictError::input(path, "no rows"));
    }
    Ok(engines
        .into_iter()
        .map(|(id, mut rows)| {
            rows.sort_by_key(|r| r.0);
            Engine {
                id,
                rows: rows.into_iter().map(|r| r.1).collect(),
            }
        })
        .collect())
}

/// The columns worth feeding a model: those that vary across `engines` (relative spread
/// above 1e-4), with their min and max.
pub fn informative_columns(engines: &[Engine]) -> (Vec<usize>, Scaling) {
    let width = engines
        .first()
        .map_or(0, |e| e.rows.first().map_or(0, Vec::len));
    let mut keep = Vec::new();
    let (mut min, mut max) = (Vec::new(), Vec::new());
    for j in 0..width {
        let (lo, hi) = engines
            .iter()
            .flat_map(|e| e.rows.iter().map(move |r| r[j]))
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), v| {
                (a.min(v), b.max(v))
            });
        if hi - lo > 1e-4 * hi.abs().max(1.0) {
            keep.push(j);
            min.push(lo);
            max.push(hi);
        }
    }
    (keep, Scaling::Fleet { min, max })
}

/// An engine as a model sequence: the kept columns scaled, and per row the label "fails
/// within `horizon` cycles" (the engine fails at its last row) and the cycles left before it.
pub fn cmapss_sequence(e: &Engine, keep: &[usize], scaling: &Scaling, horizon: usize) -> Sequence {
    let len = e.rows.len();
    let mut rows = Vec::with_capacity(len * keep.len());
    for r in &e.rows {
        let mut row: Vec<f32> = keep.iter().map(|&j| r[j]).collect();
        scaling.apply(&mut row);
        rows.extend(row);
    }
    let labels = (0..len)
        .map(|t| if len - 1 - t <= horizon { 1.0 } else { 0.0 })
        .collect();
    Sequence {
        rows,
        labels: Some(labels),
        ttf: Some((0..len).map(|t| (len - 1 - t) as f32).collect()),
        len,
    }
}

/// The Azure predictive-maintenance tables, joined per machine and hour.
#[derive(Debug, Clone)]
pub struct AzurePdm {
    /// Hours since the Unix epoch of every telemetry row, per machine (sorted).
    pub machines: BTreeMap<u32, MachineHistory>,
    pub components: Vec<String>,
}

/// One machine's history.
#[derive(Debug, Clone, Default)]
pub struct MachineHistory {
    pub model: String,
    pub age: f64,
    /// (hour, [volt, rotate, pressure, vibration])
    pub telemetry: Vec<(i64, [f64; 4])>,
    /// (hour, error index 0..5)
    pub errors: Vec<(i64, usize)>,
    /// (hour, component index): maintenance replacements (failures are also replacements).
    pub replacements: Vec<(i64, usize)>,
    /// (hour, component index)
    pub failures: Vec<(i64, usize)>,
}

const AZ_COMPONENTS: [&str; 4] = ["comp1", "comp2", "comp3", "comp4"];
const AZ_ERRORS: [&str; 5] = ["error1", "error2", "error3", "error4", "error5"];
const AZ_MODELS: [&str; 4] = ["model1", "model2", "model3", "model4"];

fn csv_rows(path: &Path, header: &[&str]) -> Result<Vec<csv::StringRecord>, PredictError> {
    let mut r =
        csv::Reader::from_path(path).map_err(|e| PredictError::input(path, e.to_string()))?;
    let h = r
        .headers()
        .map_err(|e| PredictError::input(path, e.to_string()))?
        .clone();
    if h.iter().collect::<Vec<_>>() != header {
        return Err(PredictError::input(
            path,
            format!("header {:?}, want {header:?}", h.iter().collect::<Vec<_>>()),
        ));
    }
    r.records()
        .enumerate()
        .map(|(n, rec)| rec.map_err(|e| PredictError::input(path, format!("row {}: {e}", n + 2))))
        .collect()
}

fn hour_of(path: &Path, row: usize, s: &str) -> Result<i64, PredictError> {
    parse_timestamp(s)
        .map(|t| t.div_euclid(3600))
        .ok_or_else(|| PredictError::input(path, format!("row {row}: bad datetime {s:?}")))
}

fn machine_of(path: &Path, row: usize, s: &str) -> Result<u32, PredictError> {
    s.parse()
        .map_err(|_| PredictError::input(path, format!("row {row}: bad machineID {s:?}")))
}

fn index_of(path: &Path, row: usize, s: &str, names: &[&str]) -> Result<usize, PredictError> {
    names.iter().position(|n| *n == s).ok_or_else(|| {
        PredictError::input(
            path,
            format!("row {row}: unknown {s:?}, want one of {names:?}"),
        )
    })
}

/// Reads the five `PdM_*.csv` tables from `dir`.
pub fn read_azure(dir: &Path) -> Result<AzurePdm, PredictError> {
    let mut machines: BTreeMap<u32, MachineHistory> = BTreeMap::new();
    let p = dir.join("PdM_machines.csv");
    for (n, r) in csv_rows(&p, &["machineID", "model", "age"])?
        .iter()
        .enumerate()
    {
        let m = machine_of(&p, n + 2, &r[0])?;
        let age = r[2]
            .parse()
            .map_err(|_| PredictError::input(&p, format!("row {}: bad age", n + 2)))?;
        index_of(&p, n + 2, &r[1], &AZ_MODELS)?;
        machines.insert(
            m,
            MachineHistory {
                model: r[1].to_string(),
                age,
                ..Default::default()
            },
        );
    }
    let get = |p: &Path, n: usize, id: &str| -> Result<u32, PredictError> {
        let m = machine_of(p, n, id)?;
        if machines.contains_key(&m) {
            Ok(m)
        } else {
            Err(PredictError::input(
                p,
                format!("row {n}: machine {m} is not in PdM_machines.csv"),
            ))
        }
    };
    let mut tele = Vec::new();
    let p = dir.join("PdM_telemetry.csv");
    for (n, r) in csv_rows(
        &p,
        &[
            "datetime",
            "machineID",
            "volt",
            "rotate",
            "pressure",
            "vibration",
        ],
    )?
    .iter()
    .enumerate()
    {
        let m = get(&p, n + 2, &r[1])?;
        let mut v = [0.0; 4];
        for k in 0..4 {
            v[k] = r[2 + k]
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| {
                    PredictError::input(&p, format!("row {}: bad value {:?}", n + 2, &r[2 + k]))
                })?;
        }
        tele.push((m, hour_of(&p, n + 2, &r[0])?, v));
    }
    let mut errors = Vec::new();
    let p = dir.join("PdM_errors.csv");
    for (n, r) in csv_rows(&p, &["datetime", "machineID", "errorID"])?
        .iter()
        .enumerate()
    {
        errors.push((
            get(&p, n + 2, &r[1])?,
            hour_of(&p, n + 2, &r[0])?,
            index_of(&p, n + 2, &r[2], &AZ_ERRORS)?,
        ));
    }
    let mut maint = Vec::new();
    let p = dir.join("PdM_maint.csv");
    for (n, r) in csv_rows(&p, &["datetime", "machineID", "comp"])?
        .iter()
        .enumerate()
    {
        maint.push((
            get(&p, n + 2, &r[1])?,
            hour_of(&p, n + 2, &r[0])?,
            index_of(&p, n + 2, &r[2], &AZ_COMPONENTS)?,
        ));
    }
    let mut fails = Vec::new();
    let p = dir.join("PdM_failures.csv");
    for (n, r) in csv_rows(&p, &["datetime", "machineID", "failure"])?
        .iter()
        .enumerate()
    {
        fails.push((
            get(&p, n + 2, &r[1])?,
            hour_of(&p, n + 2, &r[0])?,
            index_of(&p, n + 2, &r[2], &AZ_COMPONENTS)?,
        ));
    }
    for (m, h, v) in tele {
        machines.entry(m).or_default().telemetry.push((h, v));
    }
    for (m, h, e) in errors {
        machines.entry(m).or_default().errors.push((h, e));
    }
    for (m, h, c) in maint {
        machines.entry(m).or_default().replacements.push((h, c));
    }
    for (m, h, c) in fails {
        let mh = machines.entry(m).or_default();
        mh.failures.push((h, c));
        mh.replacements.push((h, c));
    }
    for mh in machines.values_mut() {
        mh.telemetry.sort_by_key(|r| r.0);
        mh.errors.sort();
        mh.replacements.sort();
        mh.failures.sort();
    }
    Ok(AzurePdm {
        machines,
        components: AZ_COMPONENTS.iter().map(|s| s.to_string()).collect(),
    })
}

/// One row of the hazard data set: a machine at an hour.
#[derive(Debug, Clone)]
pub struct HazardRow {
    pub machine: u32,
    pub hour: i64,
    pub features: Vec<f64>,
    /// Per component: fails within the horizon after this hour.
    pub fails_within: [bool; 4],
}

/// Feature names of [`azure_rows`], in order.
pub fn azure_feature_names() -> Vec<String> {
    let sig = ["volt", "rotate", "pressure", "vibration"];
    let mut f = Vec::new();
    for s in sig {
        f.push(format!("{s}_mean_3h"));
        f.push(format!("{s}_mean_24h"));
        f.push(format!("{s}_std_24h"));
    }
    for e in AZ_ERRORS {
        f.push(format!("{e}_count_24h"));
    }
    for c in AZ_COMPONENTS {
        f.push(format!("{c}_hours_since_replaced"));
    }
    for c in AZ_COMPONENTS {
        f.push(format!("{c}_past_failures"));
    }
    f.push("age".into());
    for m in AZ_MODELS {
        f.push(format!("is_{m}"));
    }
    f
}

/// Builds the per-hour rows (from the 24th hour of each machine's telemetry), with labels for
/// a failure in `(hour, hour + horizon_h]`. Replacement ages start at the first telemetry hour
/// when no earlier maintenance is on record.
pub fn azure_rows(pdm: &AzurePdm, horizon_h: i64) -> Vec<HazardRow> {
    let mut out = Vec::new();
    for (&m, mh) in &pdm.machines {
        let t = &mh.telemetry;
        let Some(&(first_hour, _)) = t.first() else {
            continue;
        };
        for i in 23..t.len() {
            let hour = t[i].0;
            let mut f = Vec::with_capacity(30);
            for s in 0..4 {
                let last3: Vec<f64> = t[i - 2..=i].iter().map(|r| r.1[s]).collect();
                let last24: Vec<f64> = t[i - 23..=i].iter().map(|r| r.1[s]).collect();
                let mean24 = last24.iter().sum::<f64>() / 24.0;
                let var24 = last24.iter().map(|v| (v - mean24).powi(2)).sum::<f64>() / 23.0;
                f.push(last3.iter().sum::<f64>() / 3.0);
                f.push(mean24);
                f.push(var24.sqrt());
            }
            for e in 0..5 {
                f.push(
                    mh.errors
                        .iter()
                        .filter(|(h, k)| *k == e && *h > hour - 24 && *h <= hour)
                        .count() as f64,
                );
            }
            for c in 0..4 {
                let last = mh
                    .replacements
                    .iter()
                    .filter(|(h, k)| *k == c && *h <= hour)
                    .map(|(h, _)| *h)
                    .max()
                    .unwrap_or(first_hour.min(hour));
                f.push((hour - last) as f64);
            }
            for c in 0..4 {
                f.push(
                    mh.failures
                        .iter()
                        .filter(|(h, k)| *k == c && *h <= hour)
                        .count() as f64,
                );
            }
            f.push(mh.age);
            for model in AZ_MODELS {
                f.push(if mh.model == model { 1.0 } else { 0.0 });
            }
            let mut fails_within = [false; 4];
            for &(h, c) in &mh.failures {
                if h > hour && h <= hour + horizon_h {
                    fails_within[c] = true;
                }
            }
            out.push(HazardRow {
                machine: m,
                hour,
                features: f,
                fails_within,
            });
        }
    }
    out
}

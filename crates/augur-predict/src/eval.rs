//! The evaluations behind `augur train` and `augur backtest`: each takes a data set from
//! `shared/data`, trains or replays, and reports the figures `docs/evaluation.md` quotes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::datasets::{
    azure_feature_names, azure_rows, cmapss_sequence, informative_columns, read_azure, read_cmapss,
};
use crate::ensemble::{detector, online_detector};
use crate::hazard::{FitOptions, HazardModel};
use crate::hps::{health_projection_score, HpsInputs};
use crate::lstm::{EpochReport, LstmModel, ModelMeta, SeededRng, TrainOptions};
use crate::nab::{read_corpus, score_corpus, write_results, LabeledSeries, ProfileScore, PROFILES};
use crate::plot::{backtest_svg, quantile_bins, reliability_bins, reliability_svg};
use crate::{Detector, PredictError};

/// Precision, recall and F1 of binary decisions.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Confusion {
    pub tp: usize,
    pub fp: usize,
    pub fn_: usize,
    pub tn: usize,
}

impl Confusion {
    pub fn add(&mut self, predicted: bool, actual: bool) {
        match (predicted, actual) {
            (true, true) => self.tp += 1,
            (true, false) => self.fp += 1,
            (false, true) => self.fn_ += 1,
            (false, false) => self.tn += 1,
        }
    }
    pub fn precision(&self) -> f64 {
        self.tp as f64 / (self.tp + self.fp).max(1) as f64
    }
    pub fn recall(&self) -> f64 {
        self.tp as f64 / (self.tp + self.fn_).max(1) as f64
    }
    pub fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        }
    }
}

/// The threshold on `pairs` (score, label) with the best F1.
pub fn best_f1_threshold(pairs: &[(f64, bool)]) -> f64 {
    let mut sorted: Vec<(f64, bool)> = pairs.to_vec();
    sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
    let positives = sorted.iter().filter(|p| p.1).count();
    let (mut tp, mut fp, mut best, mut best_t) = (0usize, 0usize, -1.0, 0.5);
    for (i, &(s, y)) in sorted.iter().enumerate() {
        if y {
            tp += 1;
        } else {
            fp += 1;
        }
        if sorted.get(i + 1).is_some_and(|n| n.0 == s) {
            continue;
        }
        let f1 = 2.0 * tp as f64 / (2 * tp + fp + (positives - tp)) as f64;
        if f1 > best {
            best = f1;
            best_t = s;
        }
    }
    best_t
}

/// What C-MAPSS training reports.
#[derive(Debug, Clone, Serialize)]
pub struct CmapssReport {
    pub train_engines: usize,
    pub test_engines: Vec<u32>,
    pub features: Vec<String>,
    pub horizon_cycles: usize,
    /// LSTMs merged into the model ([`CmapssOptions::members`]).
    pub members: usize,
    pub threshold: f64,
    /// Every cycle of every held-out engine.
    pub all_cycles: Confusion,
    pub all_cycles_f1: f64,
    pub all_cycles_precision: f64,
    pub all_cycles_recall: f64,
    /// F1 at the held-out engines' own best threshold: an oracle, for scale only (how much
    /// the threshold chosen on the training engines costs), never a result.
    pub held_out_best_f1: f64,
    pub model_version: String,
}

/// Most members of a C-MAPSS model.
pub const MAX_MEMBERS: usize = 16;

/// How far apart the seeds of a model's members are.
const MEMBER_SEED_STEP: u64 = 1_000_003;

/// Options for the C-MAPSS run.
#[derive(Debug, Clone, Copy)]
pub struct CmapssOptions {
    pub hidden: usize,
    pub horizon: usize,
    pub holdout: f64,
    /// LSTMs trained from different initial weights on the same engines, merged into one
    /// model that averages them ([`LstmModel::merge`]).
    pub members: usize,
    pub train: TrainOptions,
}

impl Default for CmapssOptions {
    fn default() -> Self {
        Self {
            hidden: 32,
            horizon: 30,
            holdout: 0.2,
            members: 5,
            train: TrainOptions {
                epochs: 150,
                chunk: 50,
                batch: 16,
                learning_rate: 1e-2,
                seed: 7,
                fail_weight: 1.0,
                positive_weight: 1.0,
                ttf_weight: 1.0,
                final_lr_ratio: 0.05,
                average_last: 0.3,
            },
        }
    }
}

/// Trains the LSTM on C-MAPSS engines (a seeded `holdout` share held out), writes it to
/// `out`, and scores P(fail within `horizon` cycles) at every cycle of the held-out engines.
/// The decision threshold is chosen on the training engines.
pub fn cmapss(
    data: &Path,
    out: &Path,
    opts: CmapssOptions,
    mut on_epoch: impl FnMut(EpochReport),
) -> Result<CmapssReport, PredictError> {
    if !(0.0..1.0).contains(&opts.holdout) {
        return Err(PredictError::param("holdout", "must be in [0, 1)"));
    }
    if !(1..=MAX_MEMBERS).contains(&opts.members) {
        return Err(PredictError::param(
            "members",
            format!("must be 1 to {MAX_MEMBERS}"),
        ));
    }
    let engines = read_cmapss(data)?;
    let mut order: Vec<usize> = (0..engines.len()).collect();
    SeededRng::new(opts.train.seed).shuffle(&mut order);
    let n_test = ((engines.len() as f64) * opts.holdout).round() as usize;
    let (test_idx, train_idx) = order.split_at(n_test);
    let train: Vec<_> = train_idx.iter().map(|&i| engines[i].clone()).collect();
    let mut test: Vec<_> = test_idx.iter().map(|&i| engines[i].clone()).collect();
    test.sort_by_key(|e| e.id);
    let (keep, scaling) = informative_columns(&train);
    let names = crate::datasets::cmapss_columns();
    let features: Vec<String> = keep.iter().map(|&j| names[j].clone()).collect();
    let mut meta = ModelMeta::new(
        features.clone(),
        opts.hidden,
        opts.horizon as u32,
        opts.train.seed,
    );
    meta.scaling = scaling.clone();
    let train_seqs: Vec<_> = train
        .iter()
        .map(|e| cmapss_sequence(e, &keep, &scaling, opts.horizon))
        .collect();
    let test_seqs: Vec<_> = test
        .iter()
        .map(|e| cmapss_sequence(e, &keep, &scaling, opts.horizon))
        .collect();
    let mut members = Vec::new();
    for m in 0..opts.members {
        // Member m starts from its own weights (and batch order); the split stays the seed's.
        let mut meta = meta.clone();
        let mut train = opts.train;
        meta.seed = opts.train.seed.wrapping_add(m as u64 * MEMBER_SEED_STEP);
        train.seed = meta.seed;
        let mut model = LstmModel::new(meta)?;
        model.train(&train_seqs, train, &mut on_epoch)?;
        members.push(model);
    }
    // One member merges into a copy of itself.
    let mut model = LstmModel::merge(&members)?;
    let version = model.save(out)?;
    let pairs = |seqs: &[crate::lstm::Sequence]| -> Result<Vec<(f64, bool)>, PredictError> {
        let refs: Vec<_> = seqs.iter().collect();
        let outs = model.run(&refs)?;
        Ok(seqs
            .iter()
            .zip(outs)
            .flat_map(|(s, o)| {
                let labels = s.labels.clone().unwrap_or_default();
                o.p_fail
                    .into_iter()
                    .zip(labels)
                    .map(|(p, l)| (p as f64, l > 0.5))
                    .collect::<Vec<_>>()
            })
            .collect())
    };
    let threshold = best_f1_threshold(&pairs(&train_seqs)?);
    let test_pairs = pairs(&test_seqs)?;
    let confusion_at = |t: f64| {
        let mut c = Confusion::default();
        for &(p, y) in &test_pairs {
            c.add(p >= t, y);
        }
        c
    };
    let c = confusion_at(threshold);
    let held_out_best_f1 = confusion_at(best_f1_threshold(&test_pairs)).f1();
    Ok(CmapssReport {
        train_engines: train.len(),
        test_engines: test.iter().map(|e| e.id).collect(),
        features,
        horizon_cycles: opts.horizon,
        members: opts.members,
        threshold,
        all_cycles_f1: c.f1(),
        all_cycles_precision: c.precision(),
        all_cycles_recall: c.recall(),
        all_cycles: c,
        held_out_best_f1,
        model_version: version,
    })
}

/// What the Azure PdM hazard evaluation reports.
#[derive(Debug, Clone, Serialize)]
pub struct AzureReport {
    pub split_hour: String,
    pub train_rows: usize,
    pub test_rows: usize,
    pub per_component: Vec<(String, f64, Confusion)>,
    pub micro: Confusion,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub calibration_svg: Option<PathBuf>,
}

/// Fits one hazard model per component on the hours before `split` (rows whose 24 h label
/// window ends before it) and scores the hours after it. Writes the models as JSON to `out`
/// and, beside it, a reliability diagram of the test predictions.
pub fn azure(
    data: &Path,
    out: &Path,
    split: &str,
    fit: FitOptions,
) -> Result<AzureReport, PredictError> {
    let split_h = crate::nab::parse_timestamp(split)
        .ok_or_else(|| PredictError::param("split", format!("bad datetime {split:?}")))?
        .div_euclid(3600);
    let pdm = read_azure(data)?;
    let rows = azure_rows(&pdm, 24);
    let train: Vec<_> = rows.iter().filter(|r| r.hour + 24 < split_h).collect();
    // A test row's label window must lie within the data: one reaching past the last hour
    // of telemetry would be labelled "no failure" whatever comes after.
    let last_h = rows.iter().map(|r| r.hour).max().unwrap_or(i64::MIN);
    let test: Vec<_> = rows
        .iter()
        .filter(|r| r.hour >= split_h && r.hour + 24 <= last_h)
        .collect();
    if train.is_empty() || test.is_empty() {
        return Err(PredictError::param(
            "split",
            format!("{split} leaves no rows on one side"),
        ));
    }
    let names = azure_feature_names();
    let x: Vec<Vec<f64>> = train.iter().map(|r| r.features.clone()).collect();
    let mut models = Vec::new();
    let mut per_component = Vec::new();
    let mut micro = Confusion::default();
    let mut calib = Vec::new();
    let mut hps_pairs = Vec::new();
    for (c, comp) in pdm.components.iter().enumerate() {
        let y: Vec<bool> = train.iter().map(|r| r.fails_within[c]).collect();
        let model = HazardModel::fit(names.clone(), &x, &y, fit)?;
        let train_pairs: Vec<(f64, bool)> = train
            .iter()
            .zip(&y)
            .map(|(r, &l)| (model.p_within(&r.features, 24.0), l))
            .collect();
        let t = best_f1_threshold(&train_pairs);
        let mut conf = Confusion::default();
        for r in &test {
            let p = model.p_within(&r.features, 24.0);
            conf.add(p >= t, r.fails_within[c]);
            micro.add(p >= t, r.fails_within[c]);
            calib.push((p, r.fails_within[c]));
            let hps = health_projection_score(&HpsInputs {
                p_fail_1h: model.p_within(&r.features, 1.0),
                ..Default::default()
            });
            hps_pairs.push((1.0 - hps / 100.0, r.fails_within[c]));
        }
        per_component.push((comp.clone(), t, conf));
        models.push((comp.clone(), model));
    }
    let json = serde_json::to_string_pretty(&models)
        .map_err(|e| PredictError::param("models", e.to_string()))?;
    std::fs::write(out, json).map_err(|e| PredictError::io(out, e))?;
    let svg_path = out.with_extension("calibration.svg");
    let svg = reliability_svg(
        "Azure PdM test split: P(fail within 24 h) vs observed",
        &reliability_bins(&calib, 10),
    );
    std::fs::write(&svg_path, svg).map_err(|e| PredictError::io(&svg_path, e))?;
    let hps_path = out.with_extension("hps.svg");
    let svg = reliability_svg(
        "Azure PdM test: HPS deciles (x: 1 − HPS/100, y: share failing within 24 h)",
        &quantile_bins(&hps_pairs, 10),
    );
    std::fs::write(&hps_path, svg).map_err(|e| PredictError::io(&hps_path, e))?;
    Ok(AzureReport {
        split_hour: split.to_string(),
        train_rows: train.len(),
        test_rows: test.len(),
        per_component,
        precision: micro.precision(),
        recall: micro.recall(),
        f1: micro.f1(),
        micro,
        calibration_svg: Some(svg_path),
    })
}

/// The Azure hazard models' L2 penalty: a month of training data needs a strong one
/// (`docs/evaluation.md` has the sweep).
pub const AZURE_L2: f64 = 0.1;

/// Replays `series` through a fresh detector `name` online: one score per row, each from the
/// rows up to it.
pub fn replay(
    name: &str,
    series: &LabeledSeries,
    model: Option<Arc<LstmModel>>,
) -> Result<Vec<f64>, PredictError> {
    let mut d = online_detector(name, model)?;
    Ok(run_series(d.as_mut(), series))
}

/// One score a row of `series`, in order.
fn run_series(d: &mut dyn Detector, series: &LabeledSeries) -> Vec<f64> {
    series
        .timestamps
        .iter()
        .zip(&series.values)
        .map(|(&t, &v)| d.score(t, v))
        .collect()
}

/// Replays every series of `corpus` through its own detector from `make` (one thread a
/// series) and scores the corpus under each of NAB's profiles: the scores row by row, then
/// the profile scores.
pub fn score_nab<F>(
    corpus: &[LabeledSeries],
    make: F,
) -> Result<(Vec<Vec<f64>>, Vec<ProfileScore>), PredictError>
where
    F: Fn(&LabeledSeries) -> Result<Box<dyn Detector>, PredictError> + Sync,
{
    let make = &make;
    let scores: Vec<Vec<f64>> = std::thread::scope(|s| {
        let handles: Vec<_> = corpus
            .iter()
            .map(|series| s.spawn(move || Ok(run_series(make(series)?.as_mut(), series))))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(PredictError::param("detector", "panicked")))
            })
            .collect::<Result<Vec<_>, _>>()
    })?;
    let profile_scores = PROFILES
        .iter()
        .map(|p| score_corpus(corpus, &scores, p))
        .collect::<Result<_, _>>()?;
    Ok((scores, profile_scores))
}

/// What a NAB backtest reports.
#[derive(Debug, Clone, Serialize)]
pub struct NabReport {
    pub detector: String,
    pub series: usize,
    pub windows: usize,
    pub scores: Vec<ProfileScore>,
}

/// Replays every series of the NAB corpus at `root` through detector `name` (online), writes
/// NAB's result files and one SVG per series under `out`, and scores the corpus under each
/// profile with NAB's rules.
pub fn nab(
    root: &Path,
    name: &str,
    model: Option<Arc<LstmModel>>,
    out: Option<&Path>,
) -> Result<NabReport, PredictError> {
    let corpus = read_corpus(root)?;
    // Check the name before the work.
    detector(name, 60, model.clone())?;
    let (scores, profile_scores) = score_nab(&corpus, |_| online_detector(name, model.clone()))?;
    if let Some(out) = out {
        let standard = profile_scores.first().map(|s| s.threshold);
        for (series, sc) in corpus.iter().zip(&scores) {
            write_results(out, name, series, sc)?;
            let svg_path = out
                .join("plots")
                .join(format!("{}.svg", series.name.replace('/', "__")));
            if let Some(dir) = svg_path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| PredictError::io(dir, e))?;
            }
            let svg = backtest_svg(
                &format!("{name}: {}", series.name),
                &series.values,
                sc,
                &series.windows,
                standard,
            );
            std::fs::write(&svg_path, svg).map_err(|e| PredictError::io(&svg_path, e))?;
        }
    }
    Ok(NabReport {
        detector: name.to_string(),
        series: corpus.len(),
        windows: corpus.iter().map(|s| s.windows.len()).sum(),
        scores: profile_scores,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small fleet in C-MAPSS's layout: one sensor climbs with wear towards each engine's
    /// failure, another cycles, the rest are constant.
    fn fleet(dir: &Path) -> PathBuf {
        let mut text = String::new();
        for id in 1..=10u32 {
            let life = 40 + id * 3;
            for cycle in 1..=life {
                let wear = cycle as f32 / life as f32;
                let mut row = vec![id as f32, cycle as f32, 0.0, 0.0, 100.0];
                row.extend((1..=21).map(|s| match s {
                    2 => 640.0 + 5.0 * wear,
                    3 => 1500.0 + (cycle % 7) as f32,
                    _ => 1.0,
                }));
                let row: Vec<String> = row.iter().map(f32::to_string).collect();
                text += &row.join(" ");
                text.push('\n');
            }
        }
        let path = dir.join("PM_train.txt");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn members_are_merged_into_one_model() {
        let dir = tempfile::tempdir().unwrap();
        let data = fleet(dir.path());
        let mut opts = CmapssOptions {
            hidden: 4,
            horizon: 10,
            members: 2,
            ..Default::default()
        };
        opts.train.epochs = 2;
        opts.train.chunk = 20;
        opts.train.batch = 4;
        let out = dir.path().join("m.safetensors");
        let report = cmapss(&data, &out, opts, |_| {}).unwrap();
        assert_eq!(report.members, 2);
        let model = LstmModel::load(&out).unwrap();
        assert_eq!(model.meta.hidden, 8, "two members of 4 units");
        assert_eq!(model.meta.version, report.model_version);
        // Out of range: named, and nothing is written.
        let bad = dir.path().join("bad.safetensors");
        for members in [0, MAX_MEMBERS + 1] {
            let err = cmapss(&data, &bad, CmapssOptions { members, ..opts }, |_| {})
                .unwrap_err()
                .to_string();
            assert!(err.contains("members"), "{err}");
        }
        assert!(!bad.exists());
    }
}

//! `augur train` and `augur backtest`: fit the predictors on a data set and replay series
//! through them offline, with the figures `docs/evaluation.md` quotes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use augur_predict::eval::{self, CmapssOptions};
use augur_predict::lstm::{EpochReport, LstmModel};
use augur_predict::synthetic::train_default;
use augur_predict::{nab, plot};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::ctl::print;

#[derive(Args)]
pub struct TrainArgs {
    /// What to learn from: C-MAPSS `PM_train.txt` (the LSTM's failure head), an Azure PdM
    /// folder (`PdM_*.csv`: the hazard model). Leave out with `--synthetic`.
    #[arg(long, required_unless_present = "synthetic")]
    data: Option<PathBuf>,
    /// Train the default model on the seeded synthetic fleet instead.
    #[arg(long, conflicts_with = "data")]
    synthetic: bool,
    /// Where to write the model (safetensors for the LSTM, JSON for the hazard model).
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    #[arg(long)]
    epochs: Option<usize>,
    #[arg(long)]
    hidden: Option<usize>,
    /// C-MAPSS: LSTMs trained from different initial weights (seeds `seed`, `seed` +
    /// 1,000,003, …), merged into one model that averages them.
    #[arg(long, conflicts_with = "synthetic")]
    members: Option<usize>,
    /// Share of C-MAPSS engines held out for the evaluation.
    #[arg(long, default_value_t = 0.2)]
    holdout: f64,
    /// Azure PdM: the first hour of the test split.
    #[arg(long, default_value = "2015-02-01 00:00:00")]
    split: String,
    /// Azure PdM: the hazard model's L2 penalty (a month of training data needs a strong one).
    #[arg(long, default_value_t = eval::AZURE_L2)]
    l2: f64,
    #[arg(long, value_enum, default_value_t = crate::ctl::Output::Text)]
    output: crate::ctl::Output,
}

#[derive(Args)]
pub struct BacktestArgs {
    /// A CSV series (`timestamp,value`), a folder of them, or a NAB corpus (a folder with
    /// `data/` and `labels/combined_windows.json`: scored by NAB's rules).
    #[arg(long)]
    data: PathBuf,
    /// One of zscore, ewma, holt-winters, novelty, lstm, ensemble, null.
    #[arg(long, default_value = "ensemble")]
    detector: String,
    /// Where to write the scores (NAB's result layout) and the plots.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The LSTM model; default: the one shipped in the binary.
    #[arg(long)]
    model: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = crate::ctl::Output::Text)]
    output: crate::ctl::Output,
}

fn bar(epochs: usize) -> ProgressBar {
    let pb = ProgressBar::new(epochs as u64);
    pb.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] epoch {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb
}

fn on_epoch(pb: &ProgressBar) -> impl FnMut(EpochReport) + '_ {
    |r: EpochReport| {
        pb.inc(1);
        pb.set_message(format!(
            "next-step loss {:.4}, failure loss {:.4}",
            r.next_loss, r.fail_loss
        ));
    }
}

pub fn train(args: TrainArgs) -> anyhow::Result<()> {
    if args.synthetic {
        let epochs = args.epochs.unwrap_or(25);
        let pb = bar(epochs);
        let (mut model, n) =
            train_default(args.seed, epochs, args.hidden.unwrap_or(32), on_epoch(&pb))?;
        pb.finish();
        let version = model.save(&args.out)?;
        print(
            args.output,
            &serde_json::json!({ "model_version": version, "sequences": n }),
            |_| {
                format!(
                    "wrote {} ({version}) from {n} synthetic components",
                    args.out.display()
                )
            },
        );
        return Ok(());
    }
    let data = args.data.as_deref().context("--data is required")?;
    if data.is_dir() && data.join("PdM_telemetry.csv").exists() {
        let fit = augur_predict::hazard::FitOptions {
            l2: args.l2,
            ..Default::default()
        };
        let report = eval::azure(data, &args.out, &args.split, fit)?;
        print(args.output, &report, |_| {
            let mut lines = Vec::new();
            lines.push(format!(
                "hazard models → {} (test from {})",
                args.out.display(),
                report.split_hour
            ));
            lines.push("component  threshold  precision  recall  f1".to_string());
            for (c, t, conf) in &report.per_component {
                lines.push(format!(
                    "{c:<10} {t:>9.4} {:>10.3} {:>7.3} {:>5.3}",
                    conf.precision(),
                    conf.recall(),
                    conf.f1()
                ));
            }
            lines.push(format!(
                "all        {:>9} {:>10.3} {:>7.3} {:>5.3}",
                "", report.precision, report.recall, report.f1
            ));
            if let Some(svg) = &report.calibration_svg {
                lines.push(format!("calibration plot: {}", svg.display()));
            }
            lines.join("\n")
        });
        return Ok(());
    }
    if data.is_file() {
        let mut opts = CmapssOptions {
            holdout: args.holdout,
            ..Default::default()
        };
        opts.train.seed = args.seed;
        if let Some(e) = args.epochs {
            opts.train.epochs = e;
        }
        if let Some(h) = args.hidden {
            opts.hidden = h;
        }
        if let Some(m) = args.members {
            opts.members = m;
        }
        let pb = bar(opts.train.epochs.saturating_mul(opts.members));
        let report = eval::cmapss(data, &args.out, opts, on_epoch(&pb))?;
        pb.finish();
        print(args.output, &report, |_| {
            let mut lines = Vec::new();
            lines.push(format!(
                "{} ({}, {} LSTM{} merged) trained on {} engines; held out {}",
                args.out.display(),
                report.model_version,
                report.members,
                if report.members == 1 { "" } else { "s" },
                report.train_engines,
                report.test_engines.len()
            ));
            lines.push(format!(
                "P(fail within {} cycles) ≥ {:.3} on every held-out cycle: precision {:.3} recall {:.3} F1 {:.3}",
                report.horizon_cycles,
                report.threshold,
                report.all_cycles_precision,
                report.all_cycles_recall,
                report.all_cycles_f1
            ));
            lines.join("\n")
        });
        return Ok(());
    }
    bail!(
        "{}: not a C-MAPSS file or an Azure PdM folder (PdM_telemetry.csv)",
        data.display()
    )
}

fn load_model(path: Option<&Path>) -> anyhow::Result<Arc<LstmModel>> {
    Ok(Arc::new(match path {
        // Scored as the node scores it (online z-scores in), so held to what the node serves.
        Some(p) => {
            let bytes = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
            LstmModel::for_node(&bytes).with_context(|| format!("{}", p.display()))?
        }
        None => augur_predict::default_model()?,
    }))
}

pub fn backtest(args: BacktestArgs) -> anyhow::Result<()> {
    // Only the `lstm` detector reads the model (the node's ensemble uses it for P(fail)).
    let model = if args.detector == "lstm" {
        Some(load_model(args.model.as_deref())?)
    } else {
        None
    };
    if args.data.join("labels/combined_windows.json").exists() {
        let report = eval::nab(&args.data, &args.detector, model, args.out.as_deref())?;
        print(args.output, &report, |_| {
            let mut lines = Vec::new();
            lines.push(format!(
                "{}: {} series, {} windows",
                report.detector, report.series, report.windows
            ));
            for s in &report.scores {
                lines.push(format!(
                    "{:<20} {:>6.1}  (threshold {:.4}, {} TP, {} FP, {} FN)",
                    s.profile, s.normalized, s.threshold, s.tp, s.fp, s.fn_
                ));
            }
            lines.join("\n")
        });
        return Ok(());
    }
    let files: Vec<PathBuf> = if args.data.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&args.data)
            .with_context(|| format!("cannot read {}", args.data.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "csv"))
            .collect();
        v.sort();
        v
    } else {
        vec![args.data.clone()]
    };
    if files.is_empty() {
        bail!("{}: no .csv files", args.data.display());
    }
    // Every file is read and scored before anything is written: a bad file half way through
    // leaves no partial results behind.
    let mut scored = Vec::with_capacity(files.len());
    for f in &files {
        let series = nab::read_series_file(f)?;
        let scores = eval::replay(&args.detector, &series, model.clone())?;
        scored.push((series, scores));
    }
    let mut summary = Vec::new();
    for (series, scores) in &scored {
        let alarms = scores
            .iter()
            .filter(|s| **s >= augur_predict::predictor::ALARM)
            .count();
        if let Some(out) = &args.out {
            let written = nab::write_results(out, &args.detector, series, scores)?;
            let svg = written.with_extension("svg");
            std::fs::write(
                &svg,
                plot::backtest_svg(&series.name, &series.values, scores, &[], None),
            )
            .with_context(|| format!("cannot write {}", svg.display()))?;
        }
        summary.push(
            serde_json::json!({ "series": series.name, "rows": scores.len(), "alarms": alarms }),
        );
    }
    print(args.output, &summary, |_| {
        let mut lines = Vec::new();
        for s in &summary {
            lines.push(format!(
                "{}: {} rows, {} at or above {}",
                s["series"],
                s["rows"],
                s["alarms"],
                augur_predict::predictor::ALARM
            ));
        }
        lines.join("\n")
    });
    Ok(())
}

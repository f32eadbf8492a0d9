//! The evaluations of `docs/evaluation.md` without building the node (no RocksDB):
//! `cargo run --release -p augur-predict --example evaluate -- nab ROOT DETECTOR [OUT]`,
//! `… -- cmapss PM_train.txt OUT_MODEL`, `… -- azure DIR OUT_JSON`. The CLI's
//! `augur backtest` and `augur train` call the same functions.
//! `… -- novelty-sweep ROOT` scores the `novelty` detector's knobs one at a time around
//! their defaults (the sensitivity table of `docs/evaluation.md`).

use std::path::Path;
use std::sync::Arc;

/// The defaults, or `EPOCHS`, `HIDDEN`, `LR`, `LRMIN` (final lr ratio), `AVG` (share of
/// epochs averaged), `TTF` (time-to-failure head weight), `SEED` from the environment (for
/// sweeps).
fn cmapss_options() -> augur_predict::eval::CmapssOptions {
    fn set<T: std::str::FromStr>(key: &str, field: &mut T) {
        if let Some(v) = std::env::var(key).ok().and_then(|v| v.parse().ok()) {
            *field = v;
        }
    }
    let mut o = augur_predict::eval::CmapssOptions::default();
    set("EPOCHS", &mut o.train.epochs);
    set("HIDDEN", &mut o.hidden);
    set("LR", &mut o.train.learning_rate);
    set("LRMIN", &mut o.train.final_lr_ratio);
    set("AVG", &mut o.train.average_last);
    set("TTF", &mut o.train.ttf_weight);
    set("SEED", &mut o.train.seed);
    set("MEMBERS", &mut o.members);
    o
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str).ok_or("missing argument");
    let report = match arg(0)? {
        "nab" => {
            let model = Arc::new(augur_predict::default_model()?);
            let out = args.get(3).map(Path::new);
            serde_json::to_string_pretty(&augur_predict::eval::nab(
                Path::new(arg(1)?),
                arg(2)?,
                Some(model),
                out,
            )?)?
        }
        "cmapss" => serde_json::to_string_pretty(&augur_predict::eval::cmapss(
            Path::new(arg(1)?),
            Path::new(arg(2)?),
            cmapss_options(),
            |r| {
                eprintln!(
                    "epoch {}/{}: next {:.4} fail {:.4}",
                    r.epoch, r.epochs, r.next_loss, r.fail_loss
                )
            },
        )?)?,
        "azure" => serde_json::to_string_pretty(&augur_predict::eval::azure(
            Path::new(arg(1)?),
            Path::new(arg(2)?),
            "2015-02-01 00:00:00",
            augur_predict::hazard::FitOptions {
                l2: std::env::var("L2")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(augur_predict::eval::AZURE_L2),
                epochs: std::env::var("EPOCHS")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(300),
                ..Default::default()
            },
        )?)?,
        "novelty-sweep" => {
            novelty_sweep(Path::new(arg(1)?))?;
            return Ok(());
        }
        other => {
            return Err(format!(
                "unknown evaluation {other:?}: nab, cmapss, azure or novelty-sweep"
            )
            .into())
        }
    };
    println!("{report}");
    Ok(())
}

/// One line per configuration: the knob changed, then standard / low FP / low FN.
fn novelty_sweep(root: &Path) -> Result<(), Box<dyn std::error::Error>> {
    use augur_predict::novelty::{Novelty, NoveltyConfig};
    let corpus = augur_predict::nab::read_corpus(root)?;
    let d = NoveltyConfig::default();
    let mut configs = vec![("default".to_string(), d)];
    for levels in [8, 12] {
        configs.push((format!("levels {levels}"), NoveltyConfig { levels, ..d }));
    }
    for (range_rows, mark_rows) in [(200, 100), (300, 150), (600, 300)] {
        configs.push((
            format!("learn {range_rows}+{mark_rows}"),
            NoveltyConfig {
                range_rows,
                mark_rows,
                ..d
            },
        ));
    }
    for rest_rows in [0, 50, 150] {
        configs.push((
            format!("rest {rest_rows}"),
            NoveltyConfig { rest_rows, ..d },
        ));
    }
    for likelihood in [0.999, 0.9995, 0.99995, 1.1] {
        configs.push((
            format!("likelihood {likelihood}"),
            NoveltyConfig { likelihood, ..d },
        ));
    }
    println!("| configuration | standard | low FP | low FN | TP / FP / FN (standard) |");
    println!("|---|---:|---:|---:|---|");
    for (label, cfg) in configs {
        let (_, p) = augur_predict::eval::score_nab(&corpus, |_| {
            Ok(Box::new(augur_predict::ensemble::StepLearning::new(
                move |step| {
                    let period = augur_predict::baseline::daily_period(step);
                    Box::new(Novelty::new(period, cfg))
                },
            )))
        })?;
        println!(
            "| {label} | {:.1} | {:.1} | {:.1} | {} / {} / {} |",
            p[0].normalized, p[1].normalized, p[2].normalized, p[0].tp, p[0].fp, p[0].fn_
        );
    }
    Ok(())
}

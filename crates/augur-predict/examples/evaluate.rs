//! The evaluations of `docs/evaluation.md` without building the node (no RocksDB):
//! `cargo run --release -p augur-predict --example evaluate -- nab ROOT DETECTOR [OUT]`,
//! `… -- cmapss PM_train.txt OUT_MODEL`, `… -- azure DIR OUT_JSON`. The CLI's
//! `augur backtest` and `augur train` call the same functions.
//! `… -- novelty-sweep ROOT` scores the `novelty` detector's knobs one at a time around
//! their defaults (the sensitivity table of `docs/evaluation.md`).
//! `… -- novelty-exp ROOT SPEC…` scores `novelty` configurations (`key=value,…`, see
//! `novelty_spec`) on the whole corpus and on its two halves (alternate series in sorted
//! order), each part with its own threshold sweep; `… -- novelty-alarms ROOT [SPEC]` lists
//! every alarm row of every series (a diagnostic).

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
        "novelty-exp" => {
            novelty_exp(Path::new(arg(1)?), &args[2..])?;
            return Ok(());
        }
        "novelty-alarms" => {
            novelty_alarms(
                Path::new(arg(1)?),
                args.get(2).map_or("default", String::as_str),
            )?;
            return Ok(());
        }
        other => {
            return Err(format!(
                "unknown evaluation {other:?}: nab, cmapss, azure, novelty-sweep, novelty-exp or novelty-alarms"
            )
            .into())
        }
    };
    println!("{report}");
    Ok(())
}

/// One line per configuration: the knob changed, then standard / low FP / low FN.
fn novelty_sweep(root: &Path) -> Result<(), Box<dyn std::error::Error>> {
    use augur_predict::novelty::NoveltyConfig;
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
    for (early_range_rows, early_mark_rows) in [(0, 38), (50, 25), (100, 50), (275, 138)] {
        configs.push((
            format!("early {early_range_rows}+{early_mark_rows}"),
            NoveltyConfig {
                early_range_rows,
                early_mark_rows,
                ..d
            },
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
        let (_, p) = score_novelty(&corpus, cfg)?;
        println!(
            "| {label} | {:.1} | {:.1} | {:.1} | {} / {} / {} |",
            p[0].normalized, p[1].normalized, p[2].normalized, p[0].tp, p[0].fp, p[0].fn_
        );
    }
    Ok(())
}

/// Per series: every alarm-scored row (score >= 0.5) after probation, with its score, whether
/// it lies in a window, and its index among the series' alarms (a diagnostic).
fn novelty_alarms(root: &Path, spec: &str) -> Result<(), Box<dyn std::error::Error>> {
    let corpus = augur_predict::nab::read_corpus(root)?;
    let cfg = novelty_spec(spec)?;
    let (scores, p) = score_novelty(&corpus, cfg)?;
    let th = p[0].threshold;
    for (s, sc) in corpus.iter().zip(&scores) {
        let prob = augur_predict::nab::probationary_period(s.values.len());
        println!(
            "## {} rows {} prob {} windows {:?}",
            s.name,
            s.values.len(),
            prob,
            s.windows
        );
        let mut k = 0;
        for (i, &x) in sc.iter().enumerate() {
            if x >= 0.5 {
                let w = s.windows.iter().position(|&(a, b)| a <= i && i <= b);
                println!(
                    "  row {i:6} alarm#{k:3} v {:10.3} score {x:.4} {} {}",
                    s.values[i],
                    if x >= th { "DET" } else { "   " },
                    match w {
                        Some(w) => format!("win{w}"),
                        None =>
                            if i < prob {
                                "prob".into()
                            } else {
                                "FP".into()
                            },
                    }
                );
                k += 1;
            }
        }
    }
    Ok(())
}

/// A configuration from `key=value,…` over the defaults (`default` for none): `levels`,
/// `range`, `mark`, `rest`, `lik`, `er` (early range rows), `em` (early marking rows).
fn novelty_spec(spec: &str) -> Result<augur_predict::novelty::NoveltyConfig, String> {
    let mut c = augur_predict::novelty::NoveltyConfig::default();
    for kv in spec.split(',').filter(|s| !s.is_empty() && *s != "default") {
        let (k, v) = kv.split_once('=').ok_or(format!("bad {kv:?}"))?;
        let f: f64 = v.parse().map_err(|_| format!("bad value {v:?}"))?;
        match k {
            "levels" => c.levels = f as usize,
            "range" => c.range_rows = f as usize,
            "mark" => c.mark_rows = f as usize,
            "rest" => c.rest_rows = f as usize,
            "lik" => c.likelihood = f,
            "er" => c.early_range_rows = f as usize,
            "em" => c.early_mark_rows = f as usize,
            _ => return Err(format!("unknown knob {k:?}")),
        }
    }
    Ok(c)
}

/// For each spec: the whole corpus, half A (even series in sorted order) and half B (odd),
/// each half scored with its own threshold sweep.
fn novelty_exp(root: &Path, specs: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    use augur_predict::nab::{score_corpus, PROFILES};
    let corpus = augur_predict::nab::read_corpus(root)?;
    let half = |h: usize| -> Vec<usize> { (0..corpus.len()).filter(|i| i % 2 == h).collect() };
    println!("| spec | part | standard | low FP | low FN | TP / FP / FN (standard) |");
    println!("|---|---|---:|---:|---:|---|");
    for spec in specs {
        let cfg = novelty_spec(spec)?;
        let (scores, _) = score_novelty(&corpus, cfg)?;
        for (part, idx) in [
            ("all", (0..corpus.len()).collect()),
            ("A", half(0)),
            ("B", half(1)),
        ] {
            let ser: Vec<_> = idx.iter().map(|&i| corpus[i].clone()).collect();
            let sc: Vec<_> = idx.iter().map(|&i| scores[i].clone()).collect();
            let p: Vec<_> = PROFILES
                .iter()
                .map(|pr| score_corpus(&ser, &sc, pr))
                .collect::<Result<_, _>>()?;
            println!(
                "| {spec} | {part} | {:.1} | {:.1} | {:.1} | {} / {} / {} |",
                p[0].normalized, p[1].normalized, p[2].normalized, p[0].tp, p[0].fp, p[0].fn_
            );
        }
    }
    Ok(())
}

/// The `novelty` detector with `cfg` over the corpus: each series' scores, then each
/// profile's score.
fn score_novelty(
    corpus: &[augur_predict::nab::LabeledSeries],
    cfg: augur_predict::novelty::NoveltyConfig,
) -> Result<(Vec<Vec<f64>>, Vec<augur_predict::nab::ProfileScore>), augur_predict::PredictError> {
    augur_predict::eval::score_nab(corpus, |_| {
        Ok(Box::new(augur_predict::ensemble::StepLearning::new(
            move |step| {
                let period = augur_predict::baseline::daily_period(step);
                Box::new(augur_predict::novelty::Novelty::new(period, cfg))
            },
        )))
    })
}

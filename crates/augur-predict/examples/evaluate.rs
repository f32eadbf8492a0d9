//! The evaluations of `docs/evaluation.md` without building the node (no RocksDB):
//! `cargo run --release -p augur-predict --example evaluate -- nab ROOT DETECTOR [OUT]`,
//! `… -- cmapss PM_train.txt OUT_MODEL`, `… -- azure DIR OUT_JSON`. The CLI's
//! `augur backtest` and `augur train` call the same functions.

use std::path::Path;
use std::sync::Arc;

/// The defaults, or `EPOCHS`, `HIDDEN`, `LR`, `SEED` from the environment (for sweeps).
fn cmapss_options() -> augur_predict::eval::CmapssOptions {
    let mut o = augur_predict::eval::CmapssOptions::default();
    let env = |k: &str| std::env::var(k).ok();
    if let Some(v) = env("EPOCHS").and_then(|v| v.parse().ok()) {
        o.train.epochs = v;
    }
    if let Some(v) = env("HIDDEN").and_then(|v| v.parse().ok()) {
        o.hidden = v;
    }
    if let Some(v) = env("LR").and_then(|v| v.parse().ok()) {
        o.train.learning_rate = v;
    }
    if let Some(v) = env("SEED").and_then(|v| v.parse().ok()) {
        o.train.seed = v;
    }
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
        other => return Err(format!("unknown evaluation {other:?}: nab, cmapss or azure").into()),
    };
    println!("{report}");
    Ok(())
}

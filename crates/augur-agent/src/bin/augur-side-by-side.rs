//! `augur-side-by-side`: the predictive-against-reactive experiment on real processes.
//!
//! Plays the bench fault schedule ([`Schedule::bench`], scaled to `--seconds`) against a
//! real HAProxy in front of six `augur-sample` processes under `--rate` req/s, writes the
//! JSON report to `--out` and prints a short table. Only `--mode reactive` (HAProxy's own
//! health checks) exists so far.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use augur_agent::scenario::{self, Mode, ScenarioConfig, ScenarioReport, Schedule};
use clap::Parser;

/// The modes this binary can run.
const SUPPORTED_MODES: &[&str] = &["reactive"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ModeArg {
    Reactive,
}

fn parse_mode(s: &str) -> Result<ModeArg, String> {
    match s {
        "reactive" => Ok(ModeArg::Reactive),
        other => Err(format!(
            "unsupported mode {other:?}; supported: {}",
            SUPPORTED_MODES.join(", ")
        )),
    }
}

/// One fault schedule against real HAProxy and sample-service processes, counting failed
/// requests and latency.
#[derive(Debug, Parser)]
#[command(name = "augur-side-by-side", version)]
struct Args {
    /// Who acts on failing instances: `reactive` (HAProxy health checks alone).
    #[arg(long, value_parser = parse_mode)]
    mode: ModeArg,
    /// Length of the run; the bench schedule is scaled to it.
    #[arg(long, default_value_t = 150.0)]
    seconds: f64,
    /// Load, in requests per second.
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// Seed passed to every sample instance.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where the JSON report goes.
    #[arg(long)]
    out: PathBuf,
    /// The `augur-sample` binary (default: next to this one).
    #[arg(long)]
    sample_bin: Option<PathBuf>,
    /// Scratch directory for HAProxy's config, socket and log (default: next to `--out`).
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

fn sample_binary(args: &Args) -> anyhow::Result<PathBuf> {
    if let Some(path) = &args.sample_bin {
        return Ok(path.clone());
    }
    let me = std::env::current_exe().context("locating this binary")?;
    let path = me.with_file_name("augur-sample");
    anyhow::ensure!(
        path.is_file(),
        "no augur-sample next to {} (build it: cargo build --release -p augur-agent --bins, \
         or pass --sample-bin)",
        me.display()
    );
    Ok(path)
}

fn print_table(report: &ScenarioReport) {
    let load = &report.load;
    println!(
        "mode {}: {} requests at {} req/s over {} s, {} failed ({:.3}%), p50 {:.1} ms, \
         p99 {:.1} ms (ok) / {:.1} ms (all), max {:.1} ms",
        report.mode,
        load.sent,
        report.rate,
        report.duration_s,
        load.failed,
        100.0 * load.failed as f64 / load.sent.max(1) as f64,
        load.latency_ok.p50_ms,
        report.p99_ok_ms,
        report.p99_all_ms,
        load.latency_all.max_ms,
    );
    println!(
        "{:<8} {:<20} {:>7} {:>10} {:>12} {:>16} {:>6}",
        "instance", "fault", "at_s", "window_s", "failed", "in_window", "exit"
    );
    for f in &report.faults {
        println!(
            "{:<8} {:<20} {:>7.1} {:>10} {:>12} {:>16} {:>6}",
            f.fault.instance,
            f.fault.kind.label(),
            f.fault.at_s,
            format!("{:.0}..{:.0}", f.window_s.0, f.window_s.1),
            f.failed_attributed,
            format!("{}/{}", f.failed_in_window, f.sent_in_window),
            f.exit_code.map_or("-".to_owned(), |c| c.to_string()),
        );
        if let Some(error) = &f.error {
            println!("         injection failed: {error}");
        }
    }
    println!(
        "failed charged to no fault: {}; failures by kind: {}",
        report.failed_unattributed,
        load.failed_by_kind
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
}

fn write_report(path: &Path, report: &ScenarioReport) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let json = serde_json::to_vec_pretty(report).context("encoding the report")?;
    std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))
}

async fn run(args: Args) -> anyhow::Result<bool> {
    anyhow::ensure!(
        args.seconds.is_finite() && args.seconds >= 5.0,
        "--seconds must be at least 5, got {}",
        args.seconds
    );
    let mode = match args.mode {
        ModeArg::Reactive => Mode::reactive(),
    };
    let work_dir = match &args.work_dir {
        Some(dir) => dir.clone(),
        None => {
            let stem = args
                .out
                .file_stem()
                .map_or("run".into(), |s| s.to_string_lossy().into_owned());
            args.out.with_file_name(format!("{stem}.work"))
        }
    };
    let mut config = ScenarioConfig::new(
        Schedule::bench(args.seconds),
        sample_binary(&args)?,
        work_dir,
    );
    config.rate = args.rate;
    config.seed = args.seed;
    let report = scenario::run(config, mode).await?;
    write_report(&args.out, &report)?;
    print_table(&report);
    println!("report: {}", args.out.display());
    Ok(report.faults.iter().all(|f| f.error.is_none()))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("error: some faults could not be injected (see the report)");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

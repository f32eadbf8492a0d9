//! `augur-side-by-side`: the predictive-against-reactive experiment on real processes.
//!
//! Plays the bench fault schedule ([`Schedule::bench`], scaled to `--seconds`) against a
//! real HAProxy in front of six `augur-sample` processes under `--rate` req/s, writes the
//! JSON report to `--out` and prints a short table. `--mode reactive`: HAProxy's own health
//! checks alone. `--mode augur`: the same, plus a single-node Augur cluster (`augur serve`,
//! planner acting) and the reference agent, which adopts the instances, pushes their metrics
//! as telemetry and carries out the failovers the planner decides.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use augur_agent::scenario::{self, Mode, ScenarioConfig, Schedule};
use augur_agent::side_by_side;
use clap::Parser;

/// The modes this binary can run.
const SUPPORTED_MODES: &[&str] = &["reactive", "augur"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ModeArg {
    Reactive,
    Augur,
}

fn parse_mode(s: &str) -> Result<ModeArg, String> {
    match s {
        "reactive" => Ok(ModeArg::Reactive),
        "augur" => Ok(ModeArg::Augur),
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
    /// Seconds of steady load before the schedule's first second (the run is that much
    /// longer): Augur's predictors start with some history, as they would in production.
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
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
    /// The `augur` binary for `--mode augur` (default: next to this one).
    #[arg(long)]
    augur_bin: Option<PathBuf>,
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

async fn run(args: Args) -> anyhow::Result<bool> {
    anyhow::ensure!(
        args.seconds.is_finite() && args.seconds >= 5.0,
        "--seconds must be at least 5, got {}",
        args.seconds
    );
    let mode = match args.mode {
        ModeArg::Reactive => Mode::reactive(),
        ModeArg::Augur => {
            let augur = match &args.augur_bin {
                Some(p) => p.clone(),
                None => std::env::current_exe()?.with_file_name("augur"),
            };
            anyhow::ensure!(
                augur.exists(),
                "{} is missing: build augur-cli, or pass --augur-bin",
                augur.display()
            );
            side_by_side::augur_mode(augur)
        }
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
        Schedule::bench(args.seconds).delayed(args.warmup),
        sample_binary(&args)?,
        work_dir,
    );
    config.rate = args.rate;
    config.seed = args.seed;
    let report = scenario::run(config, mode).await?;
    side_by_side::write_report(&args.out, &report)?;
    print!("{}", side_by_side::table(&report));
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

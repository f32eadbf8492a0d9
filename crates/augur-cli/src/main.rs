//! `augur`: run a controller node (`serve`), talk to a cluster (`ctl`), rank the root causes
//! of an incident offline (`rca`), train and backtest predictors, run the demo (`demo`).

mod ctl;
mod demo_cmd;
mod forecast_ctl;
mod graph_ctl;
mod output;
mod plan_ctl;
mod predict_cmd;
mod rca_cmd;

use std::path::PathBuf;

use anyhow::Context;
use augur_server::NodeConfig;
use clap::{Parser, Subcommand, ValueEnum};

/// mimalloc rather than glibc's malloc: ingest allocates a few small strings per sample and
/// frees them on another thread, where glibc's arenas spent a quarter of the node's time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "augur", version, about = "Predictive-failover control plane")]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run a controller node. Without --config, runs the embedded single-node default.
    Serve {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Overrides the config's node.data_dir.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Talk to a running cluster.
    Ctl(ctl::CtlArgs),
    /// Rank the components most likely to have caused an incident, from two metric
    /// recordings (offline).
    Rca(rca_cmd::RcaArgs),
    /// Train a predictor on a data set (C-MAPSS, Azure PdM, or the synthetic fleet) and
    /// report its held-out accuracy.
    Train(predict_cmd::TrainArgs),
    /// Replay series through a detector online and write its scores (NAB's result layout)
    /// and plots; a NAB corpus is scored by NAB's rules.
    Backtest(predict_cmd::BacktestArgs),
    /// A simulated fleet run twice on one fault schedule, reactive failover against Augur:
    /// a live view, then the failed requests, predictions, lead times and shifts of each.
    Demo(demo_cmd::DemoArgs),
    /// Run the reference orchestrator: carry out the cluster's actions on this machine
    /// (instances as processes, HAProxy through its runtime API, an exec hook).
    Agent {
        #[arg(long)]
        config: PathBuf,
    },
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Serve { config, data_dir } => {
            init_tracing(cli.log_format);
            let mut cfg = match &config {
                Some(path) => NodeConfig::load(path)?,
                None => NodeConfig::single_node(),
            };
            if let Some(dir) = data_dir {
                cfg.node.data_dir = dir;
                cfg = cfg
                    .validate()
                    .map_err(|errors| augur_server::ConfigLoadError::Invalid {
                        path: "--data-dir".into(),
                        errors,
                    })?;
            }
            rt.block_on(augur_server::run(cfg, shutdown_signal()))
                .context("node failed")
        }
        Command::Agent { config } => {
            init_tracing(cli.log_format);
            let cfg = augur_agent::AgentConfig::load(&config)?;
            rt.block_on(augur_agent::Agent::new(cfg).run(shutdown_signal()))
                .context("agent failed")
        }
        Command::Rca(args) => rca_cmd::run(args),
        Command::Train(args) => predict_cmd::train(args),
        Command::Backtest(args) => predict_cmd::backtest(args),
        Command::Demo(args) => demo_cmd::run_demo(args),
        Command::Ctl(args) => {
            if std::env::var_os("RUST_LOG").is_some() {
                init_tracing(cli.log_format);
            }
            let code = rt.block_on(ctl::run(args));
            std::process::exit(code);
        }
    }
}

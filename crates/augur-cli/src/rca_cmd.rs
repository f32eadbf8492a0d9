//! `augur rca`: offline root-cause ranking of an incident from two metric recordings, for
//! evaluation and post-mortems.

use std::path::{Path, PathBuf};

use anyhow::Context;
use augur_graph::{rank_recordings, rank_with_graph, MetricFrame, RankedCause, RcaOptions};
use clap::Args;

#[derive(Args)]
pub struct RcaArgs {
    /// Metrics before the incident: CSV with a `time` column (unix seconds) and one column
    /// per metric named `<component>_<metric>`.
    #[arg(long)]
    normal: PathBuf,
    /// Metrics during the incident, same columns.
    #[arg(long)]
    anomalous: PathBuf,
    /// When the fault started (unix seconds, on the anomalous recording's clock); default:
    /// its first row.
    #[arg(long)]
    fault_time: Option<i64>,
    /// A topology file: re-rank with its dependency graph (a callee anomalous with its
    /// caller is the likelier cause).
    #[arg(long)]
    topology: Option<PathBuf>,
    /// How many components to print (0: all).
    #[arg(long, default_value_t = 0)]
    top: usize,
    #[arg(long, value_enum, default_value_t = crate::ctl::Output::Text)]
    output: crate::ctl::Output,
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

pub fn run(args: RcaArgs) -> anyhow::Result<()> {
    let opts = RcaOptions::default();
    // Each file is read and parsed under its own name, so an error says which one it is in.
    let frame = |path: &Path| -> anyhow::Result<MetricFrame> {
        MetricFrame::from_csv(&read(path)?).with_context(|| format!("{}", path.display()))
    };
    let (normal, anomalous) = (frame(&args.normal)?, frame(&args.anomalous)?);
    let mut ranked =
        rank_recordings(&normal, &anomalous, args.fault_time, &opts).with_context(|| {
            format!(
                "cannot rank {} against {}",
                args.anomalous.display(),
                args.normal.display()
            )
        })?;
    if let Some(path) = &args.topology {
        let topo = crate::graph_ctl::parse_topology_file(path, &read(path)?)
            .map_err(|e| anyhow::anyhow!(e))?;
        ranked = rank_with_graph(&ranked, &topo.to_graph(0), &opts);
    }
    if args.top > 0 {
        ranked.truncate(args.top);
    }
    crate::ctl::print(args.output, &ranked, |r: &Vec<RankedCause>| ranking_text(r));
    Ok(())
}

/// A ranking as text: one line per component, most likely cause first.
pub fn ranking_text(ranked: &[RankedCause]) -> String {
    ranked
        .iter()
        .enumerate()
        .map(|(i, c)| {
            format!(
                "{:>3}. {:<20} {:>12.2}  {}",
                i + 1,
                c.component,
                c.score,
                c.metric
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

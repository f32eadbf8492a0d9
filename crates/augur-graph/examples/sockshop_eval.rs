//! Root-cause ranking on the sock-shop data set: the rank of the true service per case, and
//! AC@1..AC@5 and Avg@5, metrics only and metrics + dependency graph.
//!
//! ```text
//! cargo run --release -p augur-graph --example sockshop_eval -- [DATA_DIR] [--offset SECONDS]
//! ```
//!
//! DATA_DIR defaults to `../shared/data/sock-shop` (relative to the repository root). Each case
//! is `<service>-<fault>/<run>/{normal.csv,anomalous.csv}`; the true cause is `<service>`. The
//! two recordings are hours apart, so the normal one is moved in time to end one sampling step
//! before the anomalous one starts; the fault time given to the ranking is then the first
//! anomalous time plus the offset (positive: late, negative: early).

use std::error::Error;
use std::path::{Path, PathBuf};

use augur_graph::{
    rank_of, rank_root_causes, rank_with_graph, top_k_accuracy, DepGraph, EdgeSource, EdgeUpdate,
    MetricFrame, Observation, RankedCause, RcaOptions, TopKAccuracy,
};

fn main() -> Result<(), Box<dyn Error>> {
    let mut dir = PathBuf::from("../shared/data/sock-shop");
    let mut offset = 0_i64;
    let mut opts = RcaOptions::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--offset" => {
                let v = args.next().ok_or("--offset needs a number of seconds")?;
                offset = v
                    .parse()
                    .map_err(|_| format!("--offset {v:?} is not a whole number of seconds"))?;
            }
            "--relative-floor" => {
                let v = args.next().ok_or("--relative-floor needs a number")?;
                opts.relative_floor = v
                    .parse()
                    .map_err(|_| format!("--relative-floor {v:?} is not a number"))?;
            }
            "-h" | "--help" => {
                println!("usage: sockshop_eval [DATA_DIR] [--offset SECONDS] [--relative-floor F]");
                return Ok(());
            }
            _ => dir = PathBuf::from(arg),
        }
    }
    let cases = load_cases(&dir)?;
    let graph = sockshop_graph();
    println!(
        "sock-shop: {} cases from {}, fault time offset {offset:+} s",
        cases.len(),
        dir.display()
    );
    println!(
        "{:<22} {:>5} {:>5}  top 3 (metrics only)",
        "case", "rank", "graph"
    );
    let mut plain = Vec::new();
    let mut with_graph = Vec::new();
    for case in &cases {
        let ranked = rank_root_causes(&case.frame, case.fault_time + offset, &opts)?;
        let lifted = rank_with_graph(&ranked, &graph, &opts);
        let r = rank_of(&ranked, &case.truth);
        let g = rank_of(&lifted, &case.truth);
        plain.push(r);
        with_graph.push(g);
        println!(
            "{:<22} {:>5} {:>5}  {}",
            case.name,
            show(r),
            show(g),
            top(&ranked, 3)
        );
    }
    println!();
    println!("{:<16} AC@1  AC@2  AC@3  AC@4  AC@5  Avg@5", "variant");
    print_row("metrics only", &top_k_accuracy(&plain));
    print_row("metrics + graph", &top_k_accuracy(&with_graph));
    Ok(())
}

struct Case {
    name: String,
    truth: String,
    frame: MetricFrame,
    fault_time: i64,
}

fn load_cases(dir: &Path) -> Result<Vec<Case>, Box<dyn Error>> {
    let mut folders: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read data dir {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    folders.sort();
    let mut cases = Vec::new();
    for folder in folders {
        let fname = folder.file_name().unwrap_or_default().to_string_lossy();
        let (service, _fault) = fname
            .rsplit_once('-')
            .ok_or_else(|| format!("case folder {fname:?} is not <service>-<fault>"))?;
        let mut runs: Vec<PathBuf> = std::fs::read_dir(&folder)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        runs.sort();
        for run in runs {
            let read = |f: &str| -> Result<MetricFrame, Box<dyn Error>> {
                let path = run.join(f);
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                Ok(MetricFrame::from_csv(&text).map_err(|e| format!("{}: {e}", path.display()))?)
            };
            let mut normal = read("normal.csv")?;
            let anomalous = read("anomalous.csv")?;
            let (Some(normal_end), Some(fault_time)) = (normal.last_time(), anomalous.first_time())
            else {
                return Err(format!("{}: empty recording", run.display()).into());
            };
            // Lay the recordings end to end on one 1 s time line.
            normal.shift_time(fault_time - 1 - normal_end);
            cases.push(Case {
                name: format!(
                    "{fname}/{}",
                    run.file_name().unwrap_or_default().to_string_lossy()
                ),
                truth: service.to_owned(),
                frame: normal.concat(&anomalous)?,
                fault_time,
            });
        }
    }
    if cases.is_empty() {
        return Err(format!("no cases under {}", dir.display()).into());
    }
    Ok(cases)
}

/// Sock Shop's call graph: `a → b` means a calls b.
fn sockshop_graph() -> DepGraph {
    const EDGES: [(&str, &str); 16] = [
        ("front-end", "carts"),
        ("front-end", "catalogue"),
        ("front-end", "orders"),
        ("front-end", "user"),
        ("front-end", "shipping"),
        ("front-end", "payment"),
        ("carts", "carts-db"),
        ("catalogue", "catalogue-db"),
        ("orders", "orders-db"),
        ("orders", "carts"),
        ("orders", "user"),
        ("orders", "payment"),
        ("orders", "shipping"),
        ("user", "user-db"),
        ("shipping", "rabbitmq"),
        ("queue-master", "rabbitmq"),
    ];
    let mut graph = DepGraph::new();
    for (from, to) in EDGES {
        graph
            .apply(&EdgeUpdate {
                from: from.to_owned(),
                to: to.to_owned(),
                observation: Observation::new(EdgeSource::Declared, 1.0, 0),
            })
            .expect("sock-shop edges are valid");
    }
    graph
}

fn show(rank: Option<usize>) -> String {
    rank.map_or_else(|| "-".to_owned(), |r| r.to_string())
}

fn top(ranked: &[RankedCause], n: usize) -> String {
    ranked
        .iter()
        .take(n)
        .map(|c| format!("{} {:.1} ({})", c.component, c.score, c.metric))
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_row(label: &str, acc: &TopKAccuracy) {
    println!(
        "{label:<16} {:.2}  {:.2}  {:.2}  {:.2}  {:.2}  {:.3}",
        acc.ac[0], acc.ac[1], acc.ac[2], acc.ac[3], acc.ac[4], acc.avg5
    );
}

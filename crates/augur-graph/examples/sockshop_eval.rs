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
use std::path::PathBuf;

use augur_graph::{
    rank_of, rank_root_causes, rank_with_graph, top_k_accuracy, RankedCause, RcaOptions,
    TopKAccuracy,
};

#[path = "sockshop/cases.rs"]
mod cases;
use cases::{load_cases, sockshop_graph};

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

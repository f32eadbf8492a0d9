//! Root-cause ranking on the sock-shop data set (20 cases), when the data is present:
//! AC@1 ≥ 0.96 and Avg@5 ≥ 0.99 with the exact fault time, Avg@5 ≥ 0.95 with the fault time
//! 60 s late or early. Without the data the test says so and passes.

use std::path::{Path, PathBuf};

use augur_graph::{
    rank_of, rank_root_causes, rank_with_graph, top_k_accuracy, RcaOptions, TopKAccuracy,
};

#[path = "../examples/sockshop/cases.rs"]
mod cases;
use cases::{load_cases, sockshop_graph, Case};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/sock-shop")
}

fn evaluate(cases: &[Case], offset: i64) -> (TopKAccuracy, TopKAccuracy) {
    let opts = RcaOptions::default();
    let graph = sockshop_graph();
    let mut plain = Vec::new();
    let mut lifted = Vec::new();
    for case in cases {
        let ranked = rank_root_causes(&case.frame, case.fault_time + offset, &opts)
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let r = rank_of(&ranked, &case.truth);
        let g = rank_of(&rank_with_graph(&ranked, &graph, &opts), &case.truth);
        println!(
            "offset {offset:+}: {} rank {r:?}, with graph {g:?}",
            case.name
        );
        plain.push(r);
        lifted.push(g);
    }
    (top_k_accuracy(&plain), top_k_accuracy(&lifted))
}

#[test]
fn sockshop_root_cause_accuracy() {
    let dir = data_dir();
    if !dir.is_dir() {
        println!(
            "skipping the sock-shop evaluation: no data at {}",
            dir.display()
        );
        return;
    }
    let cases = load_cases(&dir).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cases.len(), 20, "expected 20 sock-shop cases");
    for offset in [0, 60, -60] {
        let (plain, graph) = evaluate(&cases, offset);
        println!("offset {offset:+}: metrics only {plain:?}, with graph {graph:?}");
        for (label, acc) in [("metrics only", &plain), ("metrics + graph", &graph)] {
            if offset == 0 {
                assert!(acc.ac[0] >= 0.96, "{label}, exact fault time: {acc:?}");
                assert!(acc.avg5 >= 0.99, "{label}, exact fault time: {acc:?}");
            } else {
                assert!(acc.avg5 >= 0.95, "{label}, offset {offset:+} s: {acc:?}");
            }
        }
    }
}

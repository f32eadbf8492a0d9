//! Root-cause ranking on the sock-shop data set (20 cases), when the data is present:
//! AC@1 ≥ 0.96 and Avg@5 ≥ 0.99 with the exact fault time, Avg@5 ≥ 0.95 with the fault time
//! 60 s late or early. Without the data the test says so and passes.

use std::path::{Path, PathBuf};

use augur_graph::{
    rank_of, rank_root_causes, rank_with_graph, top_k_accuracy, DepGraph, EdgeSource, EdgeUpdate,
    MetricFrame, Observation, RcaOptions, TopKAccuracy,
};

struct Case {
    name: String,
    truth: String,
    frame: MetricFrame,
    fault_time: i64,
}

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/sock-shop")
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    v
}

fn read(path: &Path) -> MetricFrame {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    MetricFrame::from_csv(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Loads every case, the normal recording moved in time to end one second before the
/// anomalous one starts (they were taken hours apart), as the example does.
fn load_cases(dir: &Path) -> Vec<Case> {
    let mut cases = Vec::new();
    for folder in subdirs(dir) {
        let fname = folder.file_name().unwrap().to_string_lossy().into_owned();
        let (service, _fault) = fname.rsplit_once('-').expect("<service>-<fault>");
        for run in subdirs(&folder) {
            let mut normal = read(&run.join("normal.csv"));
            let anomalous = read(&run.join("anomalous.csv"));
            let fault_time = anomalous.first_time().expect("anomalous rows");
            normal.shift_time(fault_time - 1 - normal.last_time().expect("normal rows"));
            cases.push(Case {
                name: format!("{fname}/{}", run.file_name().unwrap().to_string_lossy()),
                truth: service.to_owned(),
                frame: normal.concat(&anomalous).unwrap(),
                fault_time,
            });
        }
    }
    cases
}

fn sockshop_graph() -> DepGraph {
    let edges = [
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
    let mut g = DepGraph::new();
    for (from, to) in edges {
        g.apply(&EdgeUpdate {
            from: from.to_owned(),
            to: to.to_owned(),
            observation: Observation::new(EdgeSource::Declared, 1.0, 0),
        })
        .unwrap();
    }
    g
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
    let cases = load_cases(&dir);
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

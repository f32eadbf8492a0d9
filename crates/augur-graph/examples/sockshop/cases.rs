//! The sock-shop cases and call graph, shared by the `sockshop_eval` example and the
//! `sockshop` test (each includes this file with `#[path]`).

use std::error::Error;
use std::path::{Path, PathBuf};

use augur_graph::{join_recordings, parse_topology, DepGraph, MetricFrame};

pub struct Case {
    /// `<service>-<fault>/<run>`.
    pub name: String,
    /// The service the fault was injected into.
    pub truth: String,
    /// Normal then anomalous rows on one time line.
    pub frame: MetricFrame,
    /// The first anomalous time: where the fault starts.
    pub fault_time: i64,
}

fn subdirs(dir: &Path) -> Result<Vec<PathBuf>, Box<dyn Error>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    Ok(v)
}

fn read(path: &Path) -> Result<MetricFrame, Box<dyn Error>> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(MetricFrame::from_csv(&text).map_err(|e| format!("{}: {e}", path.display()))?)
}

/// Every `<service>-<fault>/<run>/{normal.csv,anomalous.csv}` under `dir`, sorted.
pub fn load_cases(dir: &Path) -> Result<Vec<Case>, Box<dyn Error>> {
    let mut cases = Vec::new();
    for folder in subdirs(dir)? {
        let fname = folder
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let (service, _fault) = fname
            .rsplit_once('-')
            .ok_or_else(|| format!("case folder {fname:?} is not <service>-<fault>"))?;
        for run in subdirs(&folder)? {
            let normal = read(&run.join("normal.csv"))?;
            let anomalous = read(&run.join("anomalous.csv"))?;
            let (frame, fault_time) = join_recordings(&normal, &anomalous)
                .map_err(|e| format!("{}: {e}", run.display()))?;
            cases.push(Case {
                name: format!(
                    "{fname}/{}",
                    run.file_name().unwrap_or_default().to_string_lossy()
                ),
                truth: service.to_owned(),
                frame,
                fault_time,
            });
        }
    }
    if cases.is_empty() {
        return Err(format!("no cases under {}", dir.display()).into());
    }
    Ok(cases)
}

/// Sock Shop's call graph, from the example topology file (`a → b`: a calls b).
pub fn sockshop_graph() -> DepGraph {
    let text = include_str!("../../../../examples/topologies/sock-shop.toml");
    parse_topology(text)
        .expect("the sock-shop example topology is valid")
        .to_graph(0)
}

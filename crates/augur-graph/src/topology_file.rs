//! The topology file: a small CMDB in TOML or YAML naming hosts, the components running on
//! them, their addresses, and what each component depends on. YAML carries the same keys
//! (`host:` and `component:` lists, `dependency:` lists inside a component).
//!
//! ```toml
//! version = 1
//!
//! [[host]]
//! name = "h1"
//! rack = "r1"
//! zone = "z1"
//! capacity = 8
//!
//! [[component]]
//! name = "front-end"
//! class = "web"            # default "service"
//! group = "sock-shop"      # optional
//! criticality = 5          # 1 ..= 5, default 3
//! host = "h1"              # optional; rack and zone come from the host
//! entry = true             # user-facing, default false
//! addresses = ["10.0.0.10", "10.0.0.10:8079"]
//! depends_on = ["carts"]   # strength 1.0
//!
//! [[component.dependency]] # the same, with a strength in [0, 1] (default 1.0)
//! to = "catalogue"
//! strength = 0.7
//! ```
//!
//! Unknown keys are refused. [`parse_topology`] reports a TOML error alone (nothing else can
//! be checked), otherwise every broken rule at once, in file order, then every dependency
//! cycle with its whole path.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use petgraph::graph::DiGraph;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::{
    AddressBook, DepGraph, EdgeSource, EdgeUpdate, Endpoint, FlowError, Node, Observation,
};

/// The topology file format version this build reads.
pub const TOPOLOGY_VERSION: i64 = 1;

/// The class of a component that names none.
pub const DEFAULT_CLASS: &str = "service";

/// The criticality of a component that names none (the middle of 1 ..= 5).
pub const DEFAULT_CRITICALITY: u8 = 3;

/// One thing wrong with a topology file. Each displays as one line naming the item.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum TopologyError {
    #[error("toml error{}: {message}", at_line(*.at))]
    Toml {
        /// Line and column (1-based) where the TOML parser stopped, when it says.
        at: Option<(usize, usize)>,
        message: String,
    },
    #[error("yaml error{}: {message}", at_line(*.at))]
    Yaml {
        /// Line and column (1-based) where the YAML parser stopped, when it says.
        at: Option<(usize, usize)>,
        message: String,
    },
    #[error("version: missing; this build reads version {TOPOLOGY_VERSION}")]
    MissingVersion,
    #[error("version: is {found}; this build reads version {TOPOLOGY_VERSION}")]
    Version { found: i64 },
    /// `item` is `host "h1"`, or `component #3` (its position) when its own name is bad.
    #[error("{item}: {field} {value:?} {reason}")]
    BadName {
        item: String,
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("{kind} {name:?}: declared {count} times; names must be unique")]
    DuplicateName {
        kind: &'static str,
        name: String,
        count: usize,
    },
    #[error("host {host:?}: capacity {value} must be within 1..={}", u32::MAX)]
    BadCapacity { host: String, value: i64 },
    #[error("component {component:?}: criticality {value} is outside 1..=5")]
    BadCriticality { component: String, value: i64 },
    #[error("host {host:?}: {placed} components placed on it, above its capacity of {capacity}")]
    OverCapacity {
        host: String,
        placed: usize,
        capacity: i64,
    },
    #[error("component {component:?}: runs on unknown host {host:?}")]
    UnknownHost { component: String, host: String },
    #[error("component {component:?}: depends on unknown component {target:?}")]
    UnknownDependency { component: String, target: String },
    #[error("component {component:?}: depends on itself")]
    SelfDependency { component: String },
    #[error("component {component:?}: depends on {target:?} more than once")]
    DuplicateDependency { component: String, target: String },
    #[error(
        "component {component:?}: dependency on {target:?} has strength {strength}; \
         it must be within [0, 1]"
    )]
    BadStrength {
        component: String,
        target: String,
        strength: f64,
    },
    #[error("component {component:?}: address {address:?} is not an ip or ip:port")]
    BadAddress { component: String, address: String },
    #[error("component {component:?}: address {address} is listed twice")]
    RepeatedAddress { component: String, address: String },
    #[error("component {component:?}: address {address} already belongs to component {owner:?}")]
    DuplicateAddress {
        component: String,
        address: String,
        owner: String,
    },
    /// The path starts at its alphabetically first component and returns to it.
    #[error("dependency cycle: {}", .path.join(" -> "))]
    Cycle { path: Vec<String> },
}

fn at_line(at: Option<(usize, usize)>) -> String {
    at.map(|(l, c)| format!(" at line {l}, column {c}"))
        .unwrap_or_default()
}

/// A validated host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Host {
    pub name: String,
    pub rack: String,
    pub zone: String,
    /// How many components it can run, above 0.
    pub capacity: u32,
}

/// A validated dependency: the component depends on `to` with `strength` in [0, 1].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dependency {
    pub to: String,
    pub strength: f64,
}

/// A validated component.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Component {
    pub name: String,
    pub class: String,
    pub group: Option<String>,
    /// 1 (least) ..= 5 (most critical).
    pub criticality: u8,
    pub host: Option<String>,
    /// Its host's rack.
    pub rack: Option<String>,
    /// Its host's zone.
    pub zone: Option<String>,
    pub entry: bool,
    /// In canonical form (`10.0.0.1`, `10.0.0.1:80`, `[::1]:80`).
    pub addresses: Vec<String>,
    /// Sorted by target name.
    pub dependencies: Vec<Dependency>,
}

/// A topology that passed every check: unique names, known hosts and targets, no cycle.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Topology {
    hosts: Vec<Host>,
    components: Vec<Component>,
}

impl Topology {
    /// Hosts in file order.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// Components in file order.
    pub fn components(&self) -> &[Component] {
        &self.components
    }

    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }

    pub fn component(&self, name: &str) -> Option<&Component> {
        self.components.iter().find(|c| c.name == name)
    }

    /// Every declared dependency as an [`EdgeSource::Declared`] update stamped `now_ms`,
    /// sorted by `(from, to)`.
    pub fn edge_updates(&self, now_ms: u64) -> Vec<EdgeUpdate> {
        let mut out: Vec<EdgeUpdate> = self
            .components
            .iter()
            .flat_map(|c| {
                c.dependencies.iter().map(move |d| EdgeUpdate {
                    from: c.name.clone(),
                    to: d.to.clone(),
                    observation: Observation::new(EdgeSource::Declared, d.strength, now_ms),
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.from, &a.to).cmp(&(&b.from, &b.to)));
        out
    }

    /// A graph of the components (entry, criticality, group, zone) and declared edges.
    pub fn to_graph(&self, now_ms: u64) -> DepGraph {
        let updates = self.edge_updates(now_ms);
        let mut g = DepGraph::with_capacity(self.components.len(), updates.len());
        for c in &self.components {
            g.upsert_node(Node {
                name: c.name.clone(),
                virtual_peer: false,
                entry: c.entry,
                criticality: c.criticality,
                group: c.group.clone(),
                zone: c.zone.clone(),
            });
        }
        for u in &updates {
            // Names, strengths and self loops were validated when the file was parsed.
            let applied = g.apply(u);
            debug_assert!(applied.is_ok(), "validated edge refused: {applied:?}");
        }
        g
    }

    /// Every component's addresses, for mapping flow records to components.
    pub fn address_book(&self) -> AddressBook {
        let mut book = AddressBook::new();
        for c in &self.components {
            for a in &c.addresses {
                // Validated unique when the file was parsed.
                let inserted = book.insert(a, &c.name);
                debug_assert!(inserted.is_ok(), "validated address refused: {inserted:?}");
            }
        }
        book
    }
}

/// The syntax of a topology file. Both carry the same fields under the same names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopologyFormat {
    Toml,
    Yaml,
}

impl TopologyFormat {
    /// YAML for a path ending in `.yaml` or `.yml` (any case), TOML otherwise.
    pub fn of_path(path: &std::path::Path) -> Self {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("yaml" | "yml") => Self::Yaml,
            _ => Self::Toml,
        }
    }
}

/// Parses and validates a TOML topology file. A TOML error comes alone; otherwise every
/// broken rule is reported at once.
pub fn parse_topology(text: &str) -> Result<Topology, Vec<TopologyError>> {
    parse_topology_as(text, TopologyFormat::Toml)
}

/// Parses and validates a topology file in `format`. A syntax error comes alone; otherwise
/// every broken rule is reported at once, the same for either syntax.
pub fn parse_topology_as(
    text: &str,
    format: TopologyFormat,
) -> Result<Topology, Vec<TopologyError>> {
    let raw: RawTopology = match format {
        TopologyFormat::Toml => toml::from_str(text).map_err(|e| vec![toml_error(text, &e)])?,
        TopologyFormat::Yaml => yaml_serde::from_str(text).map_err(|e| {
            vec![TopologyError::Yaml {
                at: e.location().map(|l| (l.line(), l.column())),
                message: e
                    .to_string()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" "),
            }]
        })?,
    };
    raw.validate()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTopology {
    version: Option<i64>,
    #[serde(default)]
    host: Vec<RawHost>,
    #[serde(default)]
    component: Vec<RawComponent>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    name: String,
    rack: String,
    zone: String,
    capacity: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawComponent {
    name: String,
    #[serde(default = "default_class")]
    class: String,
    #[serde(default)]
    group: Option<String>,
    #[serde(default = "default_criticality")]
    criticality: i64,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    entry: bool,
    #[serde(default)]
    addresses: Vec<String>,
    #[serde(default)]
    depends_on: Vec<String>,
    #[serde(default)]
    dependency: Vec<RawDependency>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDependency {
    to: String,
    #[serde(default = "default_strength")]
    strength: f64,
}

fn default_class() -> String {
    DEFAULT_CLASS.to_owned()
}

fn default_criticality() -> i64 {
    DEFAULT_CRITICALITY.into()
}

fn default_strength() -> f64 {
    1.0
}

impl RawComponent {
    /// `depends_on` (strength 1.0), then `[[component.dependency]]`, as written.
    fn dependencies(&self) -> impl Iterator<Item = (&str, f64)> {
        self.depends_on
            .iter()
            .map(|t| (t.as_str(), 1.0))
            .chain(self.dependency.iter().map(|d| (d.to.as_str(), d.strength)))
    }
}

/// The longest id the cluster takes (components, hosts, racks, zones, classes, groups), in
/// bytes. The cluster's id rule lives here, beside the topology file that must follow it,
/// because `augur-types` (whose `validate_id` applies it) builds on this crate.
pub const MAX_ID_LEN: usize = 128;

/// Whether `c` may appear in an id: ASCII letters and digits, `.`, `_`, `:` and `-`.
pub fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "._:-".contains(c)
}

/// Why `name` cannot name a host, component, rack, zone, class or group, if it cannot: the
/// cluster's id rule, so that a file `check` calls valid is one `apply` can write.
fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if name.len() > MAX_ID_LEN {
        Some("is longer than 128 bytes")
    } else if name.chars().any(char::is_whitespace) {
        Some("contains whitespace")
    } else if !name.chars().all(is_id_char) {
        Some("holds a character other than ASCII letters, digits, '.', '_', ':' and '-'")
    } else {
        None
    }
}

/// `kind "name"`, or `kind #position` when the name itself is bad.
fn item(kind: &str, index: usize, name: &str) -> String {
    match name_problem(name) {
        None => format!("{kind} {name:?}"),
        Some(_) => format!("{kind} #{}", index + 1),
    }
}

fn check_name(errors: &mut Vec<TopologyError>, item: &str, field: &'static str, value: &str) {
    if let Some(reason) = name_problem(value) {
        errors.push(TopologyError::BadName {
            item: item.to_owned(),
            field,
            value: value.to_owned(),
            reason,
        });
    }
}

fn count<'a>(names: impl Iterator<Item = &'a str>) -> BTreeMap<&'a str, usize> {
    let mut counts = BTreeMap::new();
    for n in names {
        *counts.entry(n).or_insert(0) += 1;
    }
    counts
}

impl RawTopology {
    fn validate(self) -> Result<Topology, Vec<TopologyError>> {
        let mut errors = Vec::new();
        match self.version {
            None => errors.push(TopologyError::MissingVersion),
            Some(TOPOLOGY_VERSION) => {}
            Some(found) => errors.push(TopologyError::Version { found }),
        }

        let host_counts = count(self.host.iter().map(|h| h.name.as_str()));
        let mut reported = BTreeSet::new();
        for (i, h) in self.host.iter().enumerate() {
            let it = item("host", i, &h.name);
            check_name(&mut errors, &it, "name", &h.name);
            if host_counts[h.name.as_str()] > 1 && reported.insert(h.name.as_str()) {
                errors.push(TopologyError::DuplicateName {
                    kind: "host",
                    name: h.name.clone(),
                    count: host_counts[h.name.as_str()],
                });
            }
            check_name(&mut errors, &it, "rack", &h.rack);
            check_name(&mut errors, &it, "zone", &h.zone);
            if !(1..=i64::from(u32::MAX)).contains(&h.capacity) {
                errors.push(TopologyError::BadCapacity {
                    host: h.name.clone(),
                    value: h.capacity,
                });
            }
        }

        let comp_counts = count(self.component.iter().map(|c| c.name.as_str()));
        let mut reported = BTreeSet::new();
        let mut book = AddressBook::new();
        for (i, c) in self.component.iter().enumerate() {
            let it = item("component", i, &c.name);
            check_name(&mut errors, &it, "name", &c.name);
            if comp_counts[c.name.as_str()] > 1 && reported.insert(c.name.as_str()) {
                errors.push(TopologyError::DuplicateName {
                    kind: "component",
                    name: c.name.clone(),
                    count: comp_counts[c.name.as_str()],
                });
            }
            check_name(&mut errors, &it, "class", &c.class);
            if let Some(g) = &c.group {
                check_name(&mut errors, &it, "group", g);
            }
            if !(1..=5).contains(&c.criticality) {
                errors.push(TopologyError::BadCriticality {
                    component: c.name.clone(),
                    value: c.criticality,
                });
            }
            if let Some(h) = &c.host {
                if !host_counts.contains_key(h.as_str()) {
                    errors.push(TopologyError::UnknownHost {
                        component: c.name.clone(),
                        host: h.clone(),
                    });
                }
            }
            for a in &c.addresses {
                match book.insert(a, &c.name) {
                    Ok(()) => {}
                    Err(FlowError::DuplicateAddress { address, owner, .. }) if owner == c.name => {
                        errors.push(TopologyError::RepeatedAddress {
                            component: c.name.clone(),
                            address,
                        })
                    }
                    Err(FlowError::DuplicateAddress { address, owner, .. }) => {
                        errors.push(TopologyError::DuplicateAddress {
                            component: c.name.clone(),
                            address,
                            owner,
                        })
                    }
                    Err(_) => errors.push(TopologyError::BadAddress {
                        component: c.name.clone(),
                        address: a.clone(),
                    }),
                }
            }
            let mut targets = BTreeSet::new();
            for (to, strength) in c.dependencies() {
                if !targets.insert(to) {
                    errors.push(TopologyError::DuplicateDependency {
                        component: c.name.clone(),
                        target: to.to_owned(),
                    });
                    continue;
                }
                if to == c.name {
                    errors.push(TopologyError::SelfDependency {
                        component: c.name.clone(),
                    });
                } else if !comp_counts.contains_key(to) {
                    errors.push(TopologyError::UnknownDependency {
                        component: c.name.clone(),
                        target: to.to_owned(),
                    });
                }
                if !(0.0..=1.0).contains(&strength) {
                    errors.push(TopologyError::BadStrength {
                        component: c.name.clone(),
                        target: to.to_owned(),
                        strength,
                    });
                }
            }
        }

        // The state refuses a component on a full host (`HostFull`): a file that places more
        // on a host than it holds would be applied only in part, so it is refused whole.
        let placed = count(self.component.iter().filter_map(|c| c.host.as_deref()));
        for h in &self.host {
            let n = placed.get(h.name.as_str()).copied().unwrap_or(0);
            // A duplicated host name or a bad capacity is reported as such, not as this.
            if host_counts[h.name.as_str()] == 1 && h.capacity >= 1 && n as i64 > h.capacity {
                errors.push(TopologyError::OverCapacity {
                    host: h.name.clone(),
                    placed: n,
                    capacity: h.capacity,
                });
            }
        }

        errors.extend(
            find_cycles(&self.component)
                .into_iter()
                .map(|path| TopologyError::Cycle { path }),
        );
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(self.build())
    }

    /// The validated topology; only called when validation found nothing wrong.
    fn build(self) -> Topology {
        let homes: BTreeMap<&str, &RawHost> =
            self.host.iter().map(|h| (h.name.as_str(), h)).collect();
        let components = self
            .component
            .iter()
            .map(|c| {
                let home = c.host.as_deref().and_then(|h| homes.get(h));
                let mut dependencies: Vec<Dependency> = c
                    .dependencies()
                    .map(|(to, strength)| Dependency {
                        to: to.to_owned(),
                        strength,
                    })
                    .collect();
                dependencies.sort_by(|a, b| a.to.cmp(&b.to));
                Component {
                    name: c.name.clone(),
                    class: c.class.clone(),
                    group: c.group.clone(),
                    criticality: u8::try_from(c.criticality).unwrap_or(DEFAULT_CRITICALITY),
                    host: c.host.clone(),
                    rack: home.map(|h| h.rack.clone()),
                    zone: home.map(|h| h.zone.clone()),
                    entry: c.entry,
                    addresses: c
                        .addresses
                        .iter()
                        .map(|a| a.parse::<Endpoint>().map_or(a.clone(), |e| e.to_string()))
                        .collect(),
                    dependencies,
                }
            })
            .collect();
        let hosts = self
            .host
            .into_iter()
            .map(|h| Host {
                capacity: u32::try_from(h.capacity).unwrap_or(1),
                name: h.name,
                rack: h.rack,
                zone: h.zone,
            })
            .collect();
        Topology { hosts, components }
    }
}

/// Every dependency cycle among known components (self dependencies are reported apart),
/// each as a closed path `a -> .. -> a` starting at its alphabetically first component.
/// Within each strongly connected component, the shortest cycle through each component not
/// yet on a reported cycle is reported, so every component on a cycle appears on one. Sorted.
fn find_cycles(components: &[RawComponent]) -> Vec<Vec<String>> {
    let names: BTreeSet<&str> = components.iter().map(|c| c.name.as_str()).collect();
    let mut adj: BTreeMap<&str, BTreeSet<&str>> =
        names.iter().map(|&n| (n, BTreeSet::new())).collect();
    for c in components {
        for (to, _) in c.dependencies() {
            if to != c.name && names.contains(to) {
                adj.entry(c.name.as_str()).or_default().insert(to);
            }
        }
    }
    let mut g: DiGraph<&str, ()> = DiGraph::with_capacity(adj.len(), 0);
    let index: BTreeMap<&str, _> = adj.keys().map(|&n| (n, g.add_node(n))).collect();
    for (from, tos) in &adj {
        for to in tos {
            g.add_edge(index[from], index[to], ());
        }
    }
    let mut cycles = BTreeSet::new();
    for scc in petgraph::algo::tarjan_scc(&g) {
        if scc.len() < 2 {
            continue;
        }
        let members: BTreeSet<&str> = scc.iter().map(|&ix| g[ix]).collect();
        let mut covered = BTreeSet::new();
        for &start in &members {
            if covered.contains(start) {
                continue;
            }
            if let Some(cycle) = shortest_cycle(start, &adj, &members) {
                covered.extend(cycle.iter().copied());
                cycles.insert(rotate_to_least(cycle));
            }
        }
    }
    cycles
        .into_iter()
        .map(|c| {
            let mut path: Vec<String> = c.iter().map(|s| (*s).to_owned()).collect();
            path.push(path[0].clone());
            path
        })
        .collect()
}

/// The shortest cycle from `start` back to itself within `members` (breadth first, visiting
/// callees in name order), without repeating `start` at the end.
fn shortest_cycle<'a>(
    start: &'a str,
    adj: &BTreeMap<&'a str, BTreeSet<&'a str>>,
    members: &BTreeSet<&'a str>,
) -> Option<Vec<&'a str>> {
    let mut parent: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(n) = queue.pop_front() {
        for &m in adj.get(n).into_iter().flatten() {
            if m == start {
                let mut path = vec![n];
                let mut cur = n;
                while cur != start {
                    cur = parent[cur];
                    path.push(cur);
                }
                path.reverse();
                return Some(path);
            }
            if members.contains(m) && !parent.contains_key(m) {
                parent.insert(m, n);
                queue.push_back(m);
            }
        }
    }
    None
}

fn rotate_to_least(mut cycle: Vec<&str>) -> Vec<&str> {
    if let Some(at) = cycle
        .iter()
        .enumerate()
        .min_by_key(|(_, n)| **n)
        .map(|(i, _)| i)
    {
        cycle.rotate_left(at);
    }
    cycle
}

/// The TOML error as one line, with where it happened.
fn toml_error(text: &str, e: &toml::de::Error) -> TopologyError {
    TopologyError::Toml {
        at: e.span().map(|s| line_col(text, s.start)),
        message: e.message().split_whitespace().collect::<Vec<_>>().join(" "),
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = r#"
        version = 1

        [[host]]
        name = "h1"
        rack = "r1"
        zone = "z1"
        capacity = 4

        [[component]]
        name = "web"
        class = "web"
        group = "shop"
        criticality = 5
        host = "h1"
        entry = true
        addresses = ["10.0.0.1", "10.0.0.1:8080"]
        depends_on = ["db"]

        [[component.dependency]]
        to = "cache"
        strength = 0.25

        [[component]]
        name = "db"
        addresses = ["10.0.0.2:5432"]

        [[component]]
        name = "cache"
    "#;

    fn errors(text: &str) -> Vec<String> {
        parse_topology(text)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_good_file_parses_with_defaults() {
        let t = parse_topology(SMALL).unwrap();
        assert_eq!(
            t.hosts(),
            [Host {
                name: "h1".into(),
                rack: "r1".into(),
                zone: "z1".into(),
                capacity: 4,
            }]
        );
        let web = t.component("web").unwrap();
        assert_eq!(
            (web.rack.as_deref(), web.zone.as_deref(), web.entry),
            (Some("r1"), Some("z1"), true)
        );
        assert_eq!(
            web.dependencies,
            vec![
                Dependency {
                    to: "cache".into(),
                    strength: 0.25
                },
                Dependency {
                    to: "db".into(),
                    strength: 1.0
                },
            ]
        );
        let db = t.component("db").unwrap();
        assert_eq!(
            (
                db.class.as_str(),
                db.criticality,
                db.host.as_deref(),
                db.zone.as_deref()
            ),
            ("service", 3, None, None)
        );
    }

    /// Names the cluster would refuse are refused by the file already (`check` says what
    /// `apply` would otherwise stop half way on).
    #[test]
    fn names_follow_the_clusters_id_rule() {
        let text = format!(
            "version = 1\n[[component]]\nname = \"orders/v2\"\n[[component]]\nname = \"{}\"\ngroup = \"eu/west\"\n",
            "c".repeat(129)
        );
        assert_eq!(
            errors(&text),
            [
                "component #1: name \"orders/v2\" holds a character other than ASCII letters, digits, '.', '_', ':' and '-'".to_owned(),
                format!("component #2: name \"{}\" is longer than 128 bytes", "c".repeat(129)),
                "component #2: group \"eu/west\" holds a character other than ASCII letters, digits, '.', '_', ':' and '-'".to_owned(),
            ]
        );
    }

    #[test]
    fn a_host_given_more_components_than_its_capacity_is_refused() {
        let text = r#"
            version = 1
            [[host]]
            name = "h1"
            rack = "r1"
            zone = "z1"
            capacity = 1
            [[component]]
            name = "a"
            host = "h1"
            [[component]]
            name = "b"
            host = "h1"
        "#;
        assert_eq!(
            errors(text),
            ["host \"h1\": 2 components placed on it, above its capacity of 1"]
        );
        parse_topology(&text.replace("capacity = 1", "capacity = 2")).unwrap();
    }

    #[test]
    fn graph_edges_and_address_book_follow_the_file() {
        let t = parse_topology(SMALL).unwrap();
        let ups = t.edge_updates(42);
        let got: Vec<(&str, &str, f64, EdgeSource, u64)> = ups
            .iter()
            .map(|u| {
                let o = &u.observation;
                (
                    u.from.as_str(),
                    u.to.as_str(),
                    o.strength,
                    o.source,
                    o.last_seen_ms,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("web", "cache", 0.25, EdgeSource::Declared, 42),
                ("web", "db", 1.0, EdgeSource::Declared, 42),
            ]
        );
        let g = t.to_graph(42);
        assert_eq!((g.node_count(), g.edge_count()), (3, 2));
        let web = g.node("web").unwrap();
        assert!(web.entry && !web.virtual_peer);
        assert_eq!(web.criticality, 5);
        assert_eq!(web.group.as_deref(), Some("shop"));
        assert_eq!(web.zone.as_deref(), Some("z1"));
        assert!(!g.node("cache").unwrap().virtual_peer);
        assert_eq!(g.callees("web"), vec!["cache", "db"]);

        let book = t.address_book();
        assert_eq!(book.len(), 3);
        assert_eq!(book.lookup("10.0.0.1:8080"), Some("web"));
        assert_eq!(book.lookup("10.0.0.1:5000"), Some("web"));
        assert_eq!(book.lookup("10.0.0.2:5432"), Some("db"));
        assert_eq!(book.lookup("10.0.0.2"), None);
    }

    #[test]
    fn toml_errors_come_alone_with_line_and_column() {
        assert_eq!(
            errors("version = 1\n[[component]]\nname = \"a\"\nbogus = 1\n"),
            [
                "toml error at line 4, column 1: unknown field `bogus`, expected one of \
              `name`, `class`, `group`, `criticality`, `host`, `entry`, `addresses`, \
              `depends_on`, `dependency`"
            ]
        );
        assert_eq!(
            errors("version = 1\n[[host]]\nname = \"h\"\nrack = \"r\"\nzone = \"z\"\n"),
            ["toml error at line 2, column 1: missing field `capacity`"]
        );
        assert_eq!(
            errors("version = \n"),
            ["toml error at line 1, column 11: invalid string expected `\"`, `'`"]
        );
    }

    #[test]
    fn version_is_required_and_checked() {
        assert_eq!(
            errors("[[component]]\nname = \"a\"\n"),
            ["version: missing; this build reads version 1"]
        );
        assert_eq!(
            errors("version = 2\n"),
            ["version: is 2; this build reads version 1"]
        );
        assert!(parse_topology("version = 1\n")
            .unwrap()
            .components()
            .is_empty());
    }

    #[test]
    fn names_and_numbers_are_checked() {
        let text = r#"
            version = 1
            [[host]]
            name = "h 1"
            rack = ""
            zone = "z"
            capacity = -2
            [[component]]
            name = ""
            criticality = 0
            [[component]]
            name = "b"
            class = "web tier"
            criticality = 6
            [[component.dependency]]
            to = "c"
            strength = nan
            [[component]]
            name = "c"
            [[component.dependency]]
            to = "b"
            strength = -0.5
        "#;
        assert_eq!(
            errors(text),
            [
                "host #1: name \"h 1\" contains whitespace",
                "host #1: rack \"\" is empty",
                "host \"h 1\": capacity -2 must be within 1..=4294967295",
                "component #1: name \"\" is empty",
                "component \"\": criticality 0 is outside 1..=5",
                "component \"b\": class \"web tier\" contains whitespace",
                "component \"b\": criticality 6 is outside 1..=5",
                "component \"b\": dependency on \"c\" has strength NaN; it must be within [0, 1]",
                "component \"c\": dependency on \"b\" has strength -0.5; it must be within [0, 1]",
                "dependency cycle: b -> c -> b",
            ]
        );
    }

    #[test]
    fn every_cycle_is_named_in_full_once() {
        // One knot a <-> b <-> c and a separate ring x -> y -> z -> x.
        let text = r#"
            version = 1
            [[component]]
            name = "z"
            depends_on = ["x"]
            [[component]]
            name = "y"
            depends_on = ["z"]
            [[component]]
            name = "x"
            depends_on = ["y"]
            [[component]]
            name = "c"
            depends_on = ["b"]
            [[component]]
            name = "b"
            depends_on = ["a", "c"]
            [[component]]
            name = "a"
            depends_on = ["b"]
            [[component]]
            name = "leaf"
            depends_on = ["a"]
        "#;
        assert_eq!(
            errors(text),
            [
                "dependency cycle: a -> b -> a",
                "dependency cycle: b -> c -> b",
                "dependency cycle: x -> y -> z -> x",
            ]
        );
    }

    #[test]
    fn cycles_are_found_through_the_shortest_path() {
        let mut cs: Vec<RawComponent> = Vec::new();
        for (name, deps) in [
            ("a", vec!["b", "d"]),
            ("b", vec!["c"]),
            ("c", vec!["a"]),
            ("d", vec!["a"]),
        ] {
            cs.push(RawComponent {
                name: name.into(),
                class: default_class(),
                group: None,
                criticality: 3,
                host: None,
                entry: false,
                addresses: vec![],
                depends_on: deps.into_iter().map(String::from).collect(),
                dependency: vec![],
            });
        }
        let cycles: Vec<String> = find_cycles(&cs).iter().map(|p| p.join(" -> ")).collect();
        // Sorted: a -> d -> a is the shortest through a, a -> b -> c -> a covers b and c.
        assert_eq!(cycles, ["a -> b -> c -> a", "a -> d -> a"]);
    }

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(line_col("ab\ncdé\nx", 0), (1, 1));
        assert_eq!(line_col("ab\ncdé\nx", 3), (2, 1));
        assert_eq!(line_col("ab\ncdé\nx", 8), (3, 1));
        assert_eq!(line_col("ab\ncdé\nx", 6), (2, 3));
        assert_eq!(line_col("ab", 99), (1, 3));
    }
}

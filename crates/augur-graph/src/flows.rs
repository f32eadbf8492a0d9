//! Edges learned from network flow records: the side that opened a connection (`src`)
//! depends on the side it connected to (`dst`).
//!
//! Records arrive as CSV text (`src,dst,bytes,connections,at_ms`), each address an IP literal
//! or an `ip:port`. An [`AddressBook`] maps addresses to components: the exact `ip:port` first,
//! then the bare IP. [`aggregate_flows`] folds a batch of records into one
//! [`EdgeSource::Flow`] update per component pair.
//!
//! An address with no component becomes a virtual peer: `addr:<ip:port>` on the `dst` side
//! (the port names the service), `addr:<ip>` on the `src` side (a client's port is ephemeral,
//! and keeping it would make one peer per connection).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::{EdgeSource, EdgeUpdate, Observation};

/// The CSV header a flow file must start with.
pub const FLOW_HEADER: [&str; 5] = ["src", "dst", "bytes", "connections", "at_ms"];

/// The prefix of the virtual peer made for an address with no component.
pub const ADDR_PEER_PREFIX: &str = "addr:";

/// Why flow records could not be read, or an address could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FlowError {
    #[error("flows header is {found:?}; expected \"src,dst,bytes,connections,at_ms\"")]
    Header { found: String },
    #[error("flows row {row} (line {line}): has {found} fields; expected 5")]
    FieldCount { row: usize, line: u64, found: usize },
    #[error("flows row {row} (line {line}), column {column}: {value:?} {reason}")]
    Field {
        row: usize,
        line: u64,
        column: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("flows row {row}: unreadable csv: {reason}")]
    Csv { row: usize, reason: String },
    #[error("flow record {index}, column {column}: {value:?} is not an ip or ip:port")]
    RecordAddress {
        index: usize,
        column: &'static str,
        value: String,
    },
    #[error("address {0:?} is not an ip or ip:port")]
    BadAddress(String),
    #[error("address {address} already belongs to component {owner:?}; refused for {component:?}")]
    DuplicateAddress {
        address: String,
        owner: String,
        component: String,
    },
}

/// An address as flows and topology files write it: a bare IP, or an IP and a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    Ip(IpAddr),
    Socket(SocketAddr),
}

impl Endpoint {
    pub fn ip(self) -> IpAddr {
        match self {
            Endpoint::Ip(ip) => ip,
            Endpoint::Socket(s) => s.ip(),
        }
    }
}

impl FromStr for Endpoint {
    type Err = FlowError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Endpoint::Ip(ip));
        }
        s.parse::<SocketAddr>()
            .map(Endpoint::Socket)
            .map_err(|_| FlowError::BadAddress(s.to_owned()))
    }
}

/// The canonical form: `10.0.0.1`, `10.0.0.1:80`, `::1`, `[::1]:80`.
impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Ip(ip) => ip.fmt(f),
            Endpoint::Socket(s) => s.fmt(f),
        }
    }
}

/// Which component owns which address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressBook {
    entries: BTreeMap<Endpoint, String>,
}

impl AddressBook {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Registers `addr` (an IP or `ip:port`) as `component`'s. An address already registered,
    /// even to the same component, is refused; addresses are compared in canonical form.
    pub fn insert(&mut self, addr: &str, component: &str) -> Result<(), FlowError> {
        let endpoint: Endpoint = addr.parse()?;
        if let Some(owner) = self.entries.get(&endpoint) {
            return Err(FlowError::DuplicateAddress {
                address: endpoint.to_string(),
                owner: owner.clone(),
                component: component.to_owned(),
            });
        }
        self.entries.insert(endpoint, component.to_owned());
        Ok(())
    }

    /// The component owning `endpoint`: the exact `ip:port` first, then the bare IP.
    pub fn resolve(&self, endpoint: Endpoint) -> Option<&str> {
        self.entries
            .get(&endpoint)
            .or_else(|| match endpoint {
                Endpoint::Socket(s) => self.entries.get(&Endpoint::Ip(s.ip())),
                Endpoint::Ip(_) => None,
            })
            .map(String::as_str)
    }

    /// [`AddressBook::resolve`] of an address written as text; `None` when it does not parse.
    pub fn lookup(&self, addr: &str) -> Option<&str> {
        addr.parse().ok().and_then(|e| self.resolve(e))
    }

    /// Every registered address and its component, in address order.
    pub fn iter(&self) -> impl Iterator<Item = (Endpoint, &str)> {
        self.entries.iter().map(|(e, c)| (*e, c.as_str()))
    }
}

/// One flow record: `src` opened `connections` connections to `dst`, carrying `bytes`,
/// reported at `at_ms` (milliseconds since the Unix epoch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowRecord {
    /// `ip` or `ip:port`.
    pub src: String,
    /// `ip` or `ip:port`.
    pub dst: String,
    pub bytes: u64,
    pub connections: u64,
    pub at_ms: u64,
}

/// Parses flow records from CSV text with the header `src,dst,bytes,connections,at_ms`.
/// Fields are trimmed; blank lines are skipped. The first bad row is reported, naming its row
/// (1 = first record after the header), its line in the text, and the column.
pub fn parse_flows_csv(text: &str) -> Result<Vec<FlowRecord>, FlowError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let header = reader.headers().map_err(|e| FlowError::Csv {
        row: 0,
        reason: e.to_string(),
    })?;
    if header.iter().ne(FLOW_HEADER) {
        return Err(FlowError::Header {
            found: header.iter().collect::<Vec<_>>().join(","),
        });
    }
    let mut out = Vec::new();
    for (i, rec) in reader.records().enumerate() {
        let row = i + 1;
        let rec = rec.map_err(|e| FlowError::Csv {
            row,
            reason: e.to_string(),
        })?;
        let line = rec.position().map_or(0, |p| p.line());
        if rec.len() != FLOW_HEADER.len() {
            return Err(FlowError::FieldCount {
                row,
                line,
                found: rec.len(),
            });
        }
        let field = |column: &'static str, value: &str, reason: &'static str| FlowError::Field {
            row,
            line,
            column,
            value: value.to_owned(),
            reason,
        };
        let addr = |col: usize| -> Result<String, FlowError> {
            let v = &rec[col];
            match v.parse::<Endpoint>() {
                Ok(_) => Ok(v.to_owned()),
                Err(_) => Err(field(FLOW_HEADER[col], v, "is not an ip or ip:port")),
            }
        };
        let number = |col: usize| -> Result<u64, FlowError> {
            let v = &rec[col];
            v.parse::<u64>()
                .map_err(|_| field(FLOW_HEADER[col], v, "is not a whole number"))
        };
        out.push(FlowRecord {
            src: addr(0)?,
            dst: addr(1)?,
            bytes: number(2)?,
            connections: number(3)?,
            at_ms: number(4)?,
        });
    }
    Ok(out)
}

/// What [`aggregate_flows`] did with a batch of records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowStats {
    /// Records read.
    pub records: usize,
    /// Edge updates made (distinct component pairs).
    pub edges: usize,
    /// Records whose `src` had no component (it became an `addr:` virtual peer).
    pub unmapped_src: usize,
    /// Records whose `dst` had no component (it became an `addr:` virtual peer).
    pub unmapped_dst: usize,
    /// Records between two addresses of the same component (or the same unmapped address).
    pub self_flows_skipped: usize,
}

/// Edge updates from a batch of flow records, and what was done with them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FlowEdges {
    /// One [`EdgeSource::Flow`] update per `(from, to)` pair, sorted by `(from, to)`:
    /// strength 1.0, `last_seen_ms` the latest `at_ms`, `bytes` summed.
    pub updates: Vec<EdgeUpdate>,
    pub stats: FlowStats,
}

/// Folds flow records into edges: `src`'s component depends on `dst`'s. Refuses the batch
/// (changing nothing) when a record's address is not an IP or `ip:port`.
pub fn aggregate_flows(records: &[FlowRecord], book: &AddressBook) -> Result<FlowEdges, FlowError> {
    let mut stats = FlowStats {
        records: records.len(),
        ..FlowStats::default()
    };
    // (from, to) -> (bytes, last_seen_ms)
    let mut pairs: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for (index, r) in records.iter().enumerate() {
        let endpoint = |column: &'static str, value: &str| {
            value
                .parse::<Endpoint>()
                .map_err(|_| FlowError::RecordAddress {
                    index,
                    column,
                    value: value.to_owned(),
                })
        };
        let src = endpoint("src", &r.src)?;
        let dst = endpoint("dst", &r.dst)?;
        let from = match book.resolve(src) {
            Some(c) => c.to_owned(),
            None => {
                stats.unmapped_src += 1;
                format!("{ADDR_PEER_PREFIX}{}", src.ip())
            }
        };
        let to = match book.resolve(dst) {
            Some(c) => c.to_owned(),
            None => {
                stats.unmapped_dst += 1;
                format!("{ADDR_PEER_PREFIX}{dst}")
            }
        };
        if from == to {
            stats.self_flows_skipped += 1;
            continue;
        }
        let entry = pairs.entry((from, to)).or_insert((0, 0));
        entry.0 = entry.0.saturating_add(r.bytes);
        entry.1 = entry.1.max(r.at_ms);
    }
    let updates: Vec<EdgeUpdate> = pairs
        .into_iter()
        .map(|((from, to), (bytes, last_seen_ms))| EdgeUpdate {
            from,
            to,
            observation: Observation {
                bytes,
                ..Observation::new(EdgeSource::Flow, 1.0, last_seen_ms)
            },
        })
        .collect();
    stats.edges = updates.len();
    Ok(FlowEdges { updates, stats })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book(entries: &[(&str, &str)]) -> AddressBook {
        let mut b = AddressBook::new();
        for (addr, c) in entries {
            b.insert(addr, c).unwrap();
        }
        b
    }

    fn rec(src: &str, dst: &str, bytes: u64, at_ms: u64) -> FlowRecord {
        FlowRecord {
            src: src.into(),
            dst: dst.into(),
            bytes,
            connections: 1,
            at_ms,
        }
    }

    #[test]
    fn parses_records_and_trims_fields() {
        let text = "src,dst,bytes,connections,at_ms\n\
                    10.0.0.1:40000, 10.0.0.2:80 ,1200,3,1000\n\
                    \n\
                    ::1,[::1]:8080,0,0,5\n";
        let recs = parse_flows_csv(text).unwrap();
        assert_eq!(
            recs,
            vec![
                FlowRecord {
                    src: "10.0.0.1:40000".into(),
                    dst: "10.0.0.2:80".into(),
                    bytes: 1200,
                    connections: 3,
                    at_ms: 1000,
                },
                FlowRecord {
                    src: "::1".into(),
                    dst: "[::1]:8080".into(),
                    bytes: 0,
                    connections: 0,
                    at_ms: 5,
                },
            ]
        );
        assert_eq!(
            parse_flows_csv("src,dst,bytes,connections,at_ms\n"),
            Ok(vec![])
        );
    }

    #[test]
    fn bad_rows_name_row_line_and_column() {
        let h = "src,dst,bytes,connections,at_ms\n";
        let err = |body: &str| {
            parse_flows_csv(&format!("{h}{body}"))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err("10.0.0.1,10.0.0.2,1,1,1\n10.0.0.1,10.0.0.999,1,1,1\n"),
            "flows row 2 (line 3), column dst: \"10.0.0.999\" is not an ip or ip:port"
        );
        assert_eq!(
            err("web,10.0.0.2,1,1,1\n"),
            "flows row 1 (line 2), column src: \"web\" is not an ip or ip:port"
        );
        assert_eq!(
            err("10.0.0.1,10.0.0.2,-5,1,1\n"),
            "flows row 1 (line 2), column bytes: \"-5\" is not a whole number"
        );
        assert_eq!(
            err("10.0.0.1,10.0.0.2,1,x,1\n"),
            "flows row 1 (line 2), column connections: \"x\" is not a whole number"
        );
        assert_eq!(
            err("10.0.0.1,10.0.0.2,1,1,\n"),
            "flows row 1 (line 2), column at_ms: \"\" is not a whole number"
        );
        assert_eq!(
            err("10.0.0.1,10.0.0.2,1,1\n"),
            "flows row 1 (line 2): has 4 fields; expected 5"
        );
        assert_eq!(
            parse_flows_csv("src,dst,bytes\n").unwrap_err().to_string(),
            "flows header is \"src,dst,bytes\"; expected \"src,dst,bytes,connections,at_ms\""
        );
        assert_eq!(
            parse_flows_csv("").unwrap_err().to_string(),
            "flows header is \"\"; expected \"src,dst,bytes,connections,at_ms\""
        );
    }

    #[test]
    fn address_book_prefers_the_exact_port_then_the_ip() {
        let b = book(&[("10.0.0.1", "host-agent"), ("10.0.0.1:80", "web")]);
        assert_eq!(b.lookup("10.0.0.1:80"), Some("web"));
        assert_eq!(b.lookup("10.0.0.1:9100"), Some("host-agent"));
        assert_eq!(b.lookup("10.0.0.1"), Some("host-agent"));
        assert_eq!(b.lookup("10.0.0.2:80"), None);
        assert_eq!(b.lookup("not an address"), None);
        // A port-only registration does not claim the bare IP.
        let b = book(&[("10.0.0.3:80", "api")]);
        assert_eq!(b.lookup("10.0.0.3"), None);
    }

    #[test]
    fn address_book_refuses_duplicates_in_canonical_form() {
        let mut b = book(&[("::1", "a"), ("10.0.0.1:80", "web")]);
        assert_eq!(
            b.insert("0:0::1", "b").unwrap_err().to_string(),
            "address ::1 already belongs to component \"a\"; refused for \"b\""
        );
        assert_eq!(
            b.insert("10.0.0.1:80", "web").unwrap_err().to_string(),
            "address 10.0.0.1:80 already belongs to component \"web\"; refused for \"web\""
        );
        assert_eq!(
            b.insert("10.0.0.1:http", "web").unwrap_err().to_string(),
            "address \"10.0.0.1:http\" is not an ip or ip:port"
        );
        assert_eq!(b.len(), 2);
    }

    #[test]
    fn src_depends_on_dst_one_update_per_pair_sorted() {
        let b = book(&[
            ("10.0.0.1", "web"),
            ("10.0.0.2:80", "api"),
            ("10.0.0.3:5432", "db"),
        ]);
        let recs = vec![
            rec("10.0.0.2:51000", "10.0.0.3:5432", 10, 300),
            rec("10.0.0.1:40000", "10.0.0.2:80", 100, 200),
            rec("10.0.0.1:40001", "10.0.0.2:80", 50, 100),
        ];
        let out = aggregate_flows(&recs, &b).unwrap();
        let got: Vec<(&str, &str, u64, u64)> = out
            .updates
            .iter()
            .map(|u| {
                let o = &u.observation;
                assert_eq!(
                    (o.source, o.strength, o.stats.clone()),
                    (EdgeSource::Flow, 1.0, None)
                );
                (u.from.as_str(), u.to.as_str(), o.bytes, o.last_seen_ms)
            })
            .collect();
        // 10.0.0.2:51000 has no exact entry and its bare IP none either: a virtual peer.
        assert_eq!(
            got,
            vec![("addr:10.0.0.2", "db", 10, 300), ("web", "api", 150, 200),]
        );
        assert_eq!(
            out.stats,
            FlowStats {
                records: 3,
                edges: 2,
                unmapped_src: 1,
                unmapped_dst: 0,
                self_flows_skipped: 0,
            }
        );
    }

    #[test]
    fn unmapped_addresses_become_virtual_peers() {
        let b = book(&[("10.0.0.1", "web")]);
        let recs = vec![
            rec("10.0.0.1:40000", "192.168.1.9:443", 1, 1),
            rec("10.0.0.1:40001", "192.168.1.9", 1, 2),
            rec("[fd00::7]:333", "10.0.0.1:80", 1, 3),
        ];
        let out = aggregate_flows(&recs, &b).unwrap();
        let pairs: Vec<(&str, &str)> = out
            .updates
            .iter()
            .map(|u| (u.from.as_str(), u.to.as_str()))
            .collect();
        assert_eq!(
            pairs,
            vec![
                ("addr:fd00::7", "web"),
                ("web", "addr:192.168.1.9"),
                ("web", "addr:192.168.1.9:443"),
            ]
        );
        assert_eq!((out.stats.unmapped_src, out.stats.unmapped_dst), (1, 2));
        // Applied to a graph, the peers are virtual.
        let mut g = crate::DepGraph::new();
        for u in &out.updates {
            g.apply(u).unwrap();
        }
        assert!(g.node("addr:192.168.1.9:443").unwrap().virtual_peer);
    }

    #[test]
    fn flows_within_one_component_are_skipped_and_counted() {
        let b = book(&[("10.0.0.1", "web"), ("10.0.0.2", "web")]);
        let recs = vec![
            rec("10.0.0.1:1", "10.0.0.2:80", 1, 1),
            rec("10.0.0.1:2", "10.0.0.1:80", 1, 1),
            // Two unmapped ends that make the same peer are a self flow too.
            rec("10.9.9.9:1", "10.9.9.9", 1, 1),
        ];
        let out = aggregate_flows(&recs, &b).unwrap();
        assert!(out.updates.is_empty());
        assert_eq!(
            out.stats,
            FlowStats {
                records: 3,
                edges: 0,
                unmapped_src: 1,
                unmapped_dst: 1,
                self_flows_skipped: 3,
            }
        );
    }

    #[test]
    fn bytes_saturate_and_bad_records_refuse_the_batch() {
        let b = book(&[("10.0.0.1", "a"), ("10.0.0.2", "b")]);
        let recs = vec![
            rec("10.0.0.1", "10.0.0.2", u64::MAX, 1),
            rec("10.0.0.1", "10.0.0.2", 5, 1),
        ];
        let out = aggregate_flows(&recs, &b).unwrap();
        assert_eq!(out.updates[0].observation.bytes, u64::MAX);
        let bad = vec![
            rec("10.0.0.1", "10.0.0.2", 1, 1),
            rec("10.0.0.1", "b", 1, 1),
        ];
        assert_eq!(
            aggregate_flows(&bad, &b).unwrap_err().to_string(),
            "flow record 1, column dst: \"b\" is not an ip or ip:port"
        );
    }

    #[test]
    fn parsed_records_feed_the_aggregator() {
        let text = "src,dst,bytes,connections,at_ms\n\
                    10.0.0.1:40000,10.0.0.2:80,100,1,10\n\
                    10.0.0.1:40002,10.0.0.2:80,100,1,30\n\
                    10.0.0.1:40001,10.0.0.2:80,100,1,20\n";
        let b = book(&[("10.0.0.1", "web"), ("10.0.0.2:80", "api")]);
        let out = aggregate_flows(&parse_flows_csv(text).unwrap(), &b).unwrap();
        assert_eq!(out.updates.len(), 1);
        assert_eq!(out.updates[0].observation.bytes, 300);
        assert_eq!(out.updates[0].observation.last_seen_ms, 30);
        assert!(out.updates.iter().all(|u| u.validate().is_ok()));
    }
}

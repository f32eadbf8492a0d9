//! The topology files shipped with Augur load, and a bad one reports every error at once.

use std::path::Path;

use augur_graph::{parse_topology, parse_topology_as, EdgeSource, TopologyError, TopologyFormat};

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn messages(errors: &[TopologyError]) -> Vec<String> {
    errors.iter().map(ToString::to_string).collect()
}

#[test]
fn the_sock_shop_example_parses_cleanly() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/topologies/sock-shop.toml");
    let topo = parse_topology(&read(&path)).unwrap_or_else(|e| panic!("{:#?}", messages(&e)));
    assert_eq!(topo.hosts().len(), 6);
    assert_eq!(topo.components().len(), 13);
    let zones: std::collections::BTreeSet<&str> =
        topo.hosts().iter().map(|h| h.zone.as_str()).collect();
    assert_eq!(zones.len(), 3);

    let graph = topo.to_graph(1_000);
    let entries: Vec<&str> = graph
        .nodes()
        .filter(|n| n.entry)
        .map(|n| n.name.as_str())
        .collect();
    assert_eq!(entries, ["front-end"]);
    assert!(graph.nodes().all(|n| !n.virtual_peer && n.zone.is_some()));
    assert_eq!(
        graph.callees("front-end"),
        [
            "carts",
            "catalogue",
            "orders",
            "payment",
            "shipping",
            "user"
        ]
    );
    assert_eq!(
        graph.callees("orders"),
        ["carts", "orders-db", "payment", "shipping", "user"]
    );
    assert_eq!(graph.callers("rabbitmq"), ["queue-master", "shipping"]);
    assert_eq!(graph.edge_count(), 16);
    assert!(graph
        .edges()
        .all(|e| e.edge.observations.keys().eq([&EdgeSource::Declared])));

    let book = topo.address_book();
    assert_eq!(book.lookup("10.1.1.10:8079"), Some("front-end"));
    assert_eq!(book.lookup("10.1.3.24:5672"), Some("rabbitmq"));
}

#[test]
fn the_yaml_example_is_the_same_topology() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/topologies");
    let (toml, yaml) = (dir.join("sock-shop.toml"), dir.join("sock-shop.yaml"));
    assert_eq!(TopologyFormat::of_path(&yaml), TopologyFormat::Yaml);
    assert_eq!(
        TopologyFormat::of_path(Path::new("a/b.YML")),
        TopologyFormat::Yaml
    );
    assert_eq!(TopologyFormat::of_path(&toml), TopologyFormat::Toml);
    let from_toml = parse_topology(&read(&toml)).unwrap();
    let from_yaml = parse_topology_as(&read(&yaml), TopologyFormat::Yaml)
        .unwrap_or_else(|e| panic!("{:#?}", messages(&e)));
    assert_eq!(from_yaml, from_toml);
}

#[test]
fn a_yaml_syntax_error_comes_alone_with_its_line() {
    let text = "version: 1\ncomponent:\n  - name: api\n    colour: blue\n";
    let errors = parse_topology_as(text, TopologyFormat::Yaml).unwrap_err();
    assert_eq!(errors.len(), 1, "{:?}", messages(&errors));
    let m = errors[0].to_string();
    assert!(m.starts_with("yaml error at line 4"), "{m}");
    assert!(m.contains("colour"), "{m}");
    let errors = parse_topology_as("version: [1", TopologyFormat::Yaml).unwrap_err();
    assert!(
        errors[0].to_string().starts_with("yaml error"),
        "{errors:?}"
    );
}

#[test]
fn a_bad_topology_lists_every_error() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let errors = parse_topology(&read(&dir.join("bad-topology.toml"))).unwrap_err();
    // The YAML form of the same file breaks the same rules, reported the same way.
    let yaml =
        parse_topology_as(&read(&dir.join("bad-topology.yaml")), TopologyFormat::Yaml).unwrap_err();
    assert_eq!(messages(&yaml), messages(&errors));
    assert_eq!(
        messages(&errors),
        [
            "version: is 2; this build reads version 1",
            "host \"h1\": declared 2 times; names must be unique",
            "host \"h2\": zone \"z 2\" contains whitespace",
            "host \"h2\": capacity 0 must be within 1..=4294967295",
            "component #1: name \"front end\" contains whitespace",
            "component \"orders\": criticality 9 is outside 1..=5",
            "component \"orders\": runs on unknown host \"h9\"",
            "component \"orders\": address 10.0.0.1:80 is listed twice",
            "component \"orders\": depends on unknown component \"paymnt\"",
            "component \"orders\": depends on itself",
            "component \"orders\": depends on \"carts\" more than once",
            "component \"orders\": dependency on \"user\" has strength 1.5; it must be within [0, 1]",
            "component \"carts\": declared 2 times; names must be unique",
            "component \"carts\": address 10.0.0.1 already belongs to component \"orders\"",
            "component \"carts\": address \"10.0.0.300\" is not an ip or ip:port",
            "dependency cycle: carts -> user -> orders -> carts",
        ]
    );
}

#[test]
fn a_cycle_is_named_in_full() {
    let text = r#"
        version = 1
        [[component]]
        name = "api"
        depends_on = ["auth"]
        [[component]]
        name = "auth"
        depends_on = ["sessions"]
        [[component]]
        name = "sessions"
        depends_on = ["api", "redis"]
        [[component]]
        name = "redis"
    "#;
    let errors = parse_topology(text).unwrap_err();
    assert_eq!(
        messages(&errors),
        ["dependency cycle: api -> auth -> sessions -> api"]
    );
}

//! The dependency map end to end, through real processes: a topology file, flow records and
//! spans from the real OpenTelemetry Python SDK become edges in the replicated state, and
//! `augur ctl` answers graph, what-if and risk; unseen edges fade, visibly.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// The edge `from -> to` of a `ctl graph --output json` answer.
fn edge<'a>(graph: &'a Value, from: &str, to: &str) -> Option<&'a Value> {
    graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["from"] == from && e["to"] == to)
}

fn graph(ep: &str) -> Value {
    let (code, out, err) = ctl(ep, &["--output", "json", "graph"]);
    assert_eq!(code, 0, "{err}");
    json(&out)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topology_file_and_flows_drive_the_graph_what_if_and_risk() {
    let cluster = Cluster::start(1, RaftKnobs::default());
    cluster.wait_leader().await;
    let ep = cluster.endpoints().join(",");
    let topo = repo("examples/topologies/sock-shop.toml");

    let (code, out, err) = ctl(&ep, &["topology", "apply", topo.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("13 components"), "{out}");

    let g = graph(&ep);
    let fe = edge(&g, "front-end", "carts").expect("front-end -> carts");
    assert_eq!(fe["sources"][0]["source"], "declared");
    assert_eq!(g["nodes"].as_array().unwrap().len(), 13);

    let (_, dot, _) = ctl(&ep, &["graph", "--format", "dot"]);
    assert!(dot.starts_with("digraph augur {"), "{dot}");
    assert!(dot.contains("\"front-end\" -> \"carts\""), "{dot}");

    // carts-db fails: carts fails, so do its callers orders and front-end (all at strength 1).
    let (code, out, err) = ctl(&ep, &["--output", "json", "what-if", "carts-db"]);
    assert_eq!(code, 0, "{err}");
    let w = json(&out);
    let mut hit: Vec<(String, f64)> = w["impacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["component"].as_str().unwrap().to_owned(),
                i["probability"].as_f64().unwrap(),
            )
        })
        .collect();
    hit.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        hit,
        vec![
            ("carts".into(), 1.0),
            ("carts-db".into(), 1.0),
            ("front-end".into(), 1.0),
            ("orders".into(), 1.0)
        ]
    );
    assert_eq!(w["blast_radius"], 1.0);

    let (code, out, err) = ctl(&ep, &["--output", "json", "risk"]);
    assert_eq!(code, 0, "{err}");
    let rows = json(&out);
    let radius = |c: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["component"] == c)
            .unwrap_or_else(|| panic!("no risk row for {c}"))["blast_radius"]
            .as_f64()
            .unwrap()
    };
    assert_eq!(radius("front-end"), 1.0);
    assert_eq!(radius("carts-db"), 1.0);
    // Nothing depends on queue-master and it is no entry point.
    assert_eq!(radius("queue-master"), 0.0);

    // Flow records: shipping talks to orders-db (new), and an unknown client to front-end.
    let dir = tempfile::TempDir::new().unwrap();
    let flows = dir.path().join("flows.csv");
    let at = now_ms();
    std::fs::write(
        &flows,
        format!(
            "src,dst,bytes,connections,at_ms\n\
             10.1.1.16:40001,10.1.3.22:27017,5000,3,{at}\n\
             10.1.1.16:40002,10.1.3.22:27017,7000,2,{at}\n\
             192.168.0.9:5555,10.1.1.10:8079,100,1,{at}\n"
        ),
    )
    .unwrap();
    let (code, out, err) = ctl(
        &ep,
        &["--output", "json", "flows", "push", flows.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    let stats = json(&out);
    assert_eq!(stats["records"], 3);
    assert_eq!(stats["edges"], 2);
    assert_eq!(stats["unmapped_src"], 1);
    let g = graph(&ep);
    let e = edge(&g, "shipping", "orders-db").expect("shipping -> orders-db from flows");
    assert_eq!(e["sources"][0]["source"], "flow");
    assert_eq!(e["sources"][0]["bytes"], 12000);
    assert!(edge(&g, "addr:192.168.0.9", "front-end").is_some(), "{g}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_graph_input_is_refused_whole_with_every_error() {
    let cluster = Cluster::start(1, RaftKnobs::default());
    cluster.wait_leader().await;
    let ep = cluster.endpoints().join(",");
    let bad = repo("crates/augur-graph/tests/fixtures/bad-topology.toml");
    let (code, _, err) = ctl(&ep, &["topology", "apply", bad.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("errors:"), "{err}");
    assert!(err.contains("dependency cycle: "), "{err}");
    // Nothing was registered.
    let g = graph(&ep);
    assert!(g["nodes"].as_array().unwrap().is_empty(), "{g}");

    let dir = tempfile::TempDir::new().unwrap();
    let flows = dir.path().join("flows.csv");
    std::fs::write(
        &flows,
        "src,dst,bytes,connections,at_ms\n10.0.0.1,10.0.0.999,1,1,1\n",
    )
    .unwrap();
    let (code, _, err) = ctl(&ep, &["flows", "push", flows.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("10.0.0.999"), "{err}");
    assert!(graph(&ep)["edges"].as_array().unwrap().is_empty());

    // A file with more dependencies than one entry takes: said before anything is sent.
    let big = dir.path().join("big.yaml");
    let mut yaml = String::from("version: 1\ncomponent:\n");
    for i in 0..92 {
        let deps: Vec<String> = (i + 1..92).map(|j| format!("\"c{j}\"")).collect();
        yaml.push_str(&format!(
            "  - name: \"c{i}\"\n    depends_on: [{}]\n",
            deps.join(", ")
        ));
    }
    std::fs::write(&big, yaml).unwrap();
    for verb in ["check", "apply"] {
        let (code, _, err) = ctl(&ep, &["topology", verb, big.to_str().unwrap()]);
        assert_eq!(code, 2, "{err}");
        assert!(
            err.contains("4186 dependencies; a topology file holds at most 4096"),
            "{err}"
        );
    }
    assert!(graph(&ep)["nodes"].as_array().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unseen_edges_fade_and_the_fade_is_visible() {
    let (_cluster, ep) = single_node("[graph]\nedge_ttl_ms = 1000\nfade_every_ms = 100\n").await;
    apply_sock_shop(&ep);
    let dir = tempfile::TempDir::new().unwrap();
    let flows = dir.path().join("flows.csv");
    // Seen a minute ago: older than the TTL, so the leader fades it at its next check.
    let at = now_ms() - 60_000;
    std::fs::write(
        &flows,
        format!("src,dst,bytes,connections,at_ms\n10.1.1.16:1,10.1.3.22:27017,1,1,{at}\n"),
    )
    .unwrap();
    let (code, _, err) = ctl(&ep, &["flows", "push", flows.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    // A time in µs where ms are meant: far in the future, it would never fade. Refused.
    let future = dir.path().join("future.csv");
    std::fs::write(
        &future,
        format!(
            "src,dst,bytes,connections,at_ms\n10.1.1.16:1,10.1.3.22:27017,1,1,{}\n",
            now_ms() * 1000
        ),
    )
    .unwrap();
    let (code, _, err) = ctl(&ep, &["flows", "push", future.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("s ahead of this clock; nothing was recorded"),
        "{err}"
    );
    let g = eventually("the flow edge fades", Duration::from_secs(20), || {
        let ep = ep.clone();
        async move {
            let g = graph(&ep);
            (!g["recently_faded"].as_array().unwrap().is_empty()).then_some(g)
        }
    })
    .await;
    let f = &g["recently_faded"][0];
    assert_eq!(
        (&f["from"], &f["to"]),
        (&"shipping".into(), &"orders-db".into())
    );
    assert_eq!(f["source"], "flow");
    assert_eq!(f["edge_removed"], true);
    assert!(edge(&g, "shipping", "orders-db").is_none());
    // Declared edges never fade.
    assert!(edge(&g, "front-end", "carts").is_some());
}

/// Installs the OpenTelemetry Python SDK (pinned in tests/otlp/requirements.txt) once per
/// machine, into a cache directory; answers its path for PYTHONPATH.
fn otel_python() -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
    let target = home.join(".cache/augur-otel-py-1.45.2");
    let marker = target.join(".installed");
    if !marker.exists() {
        let out = Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--target"])
            .arg(&target)
            .arg("-r")
            .arg(repo("tests/otlp/requirements.txt"))
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "pip could not install the OpenTelemetry SDK: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(&marker, b"").unwrap();
    }
    target
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_from_the_opentelemetry_sdk_become_edges() {
    let pythonpath = otel_python();
    let (_cluster, ep) = single_node("[graph]\nflush_every_ms = 100\ntrace_wait_ms = 300\n").await;
    let out = Command::new("python3")
        .arg(repo("tests/otlp/emit_traces.py"))
        .args(["--endpoint", &ep, "--traces", "20"])
        .env("PYTHONPATH", &pythonpath)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "emit_traces.py failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let calls = |g: &Value, from: &str, to: &str| {
        edge(g, from, to).map(|e| {
            let s = &e["sources"][0];
            assert_eq!(s["source"], "trace");
            (
                s["calls"].as_u64().unwrap(),
                s["error_rate"].as_f64().unwrap(),
            )
        })
    };
    let g = eventually("the trace edges", Duration::from_secs(30), || {
        let ep = ep.clone();
        async move {
            let g = graph(&ep);
            let done = calls(&g, "front-end", "orders").is_some_and(|c| c.0 == 20)
                && calls(&g, "orders", "payment").is_some_and(|c| c.0 == 20)
                && calls(&g, "orders", "shipping").is_some();
            done.then_some(g)
        }
    })
    .await;
    assert_eq!(calls(&g, "front-end", "orders"), Some((20, 0.0)));
    assert_eq!(calls(&g, "orders", "payment"), Some((20, 0.2)));
    assert_eq!(calls(&g, "orders", "shipping").unwrap().0, 1);
    let node = |name: &str| {
        g["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name)
            .unwrap_or_else(|| panic!("no node {name}"))
            .clone()
    };
    // Nothing registered these services: they are peers known from traces only.
    assert_eq!(node("shipping")["virtual_peer"], true);
    assert_eq!(node("payment")["virtual_peer"], true);
}

#[test]
fn offline_rca_ranks_the_faulty_service_first() {
    let case = repo("../shared/data/sock-shop/carts-cpu/1");
    if !case.is_dir() {
        println!("skipping: no sock-shop data at {}", case.display());
        return;
    }
    let out = Command::new(AUGUR)
        .arg("rca")
        .arg("--normal")
        .arg(case.join("normal.csv"))
        .arg("--anomalous")
        .arg(case.join("anomalous.csv"))
        .arg("--topology")
        .arg(repo("examples/topologies/sock-shop.toml"))
        .args(["--top", "3", "--output", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ranked = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(ranked.as_array().unwrap().len(), 3);
    assert_eq!(ranked[0]["component"], "carts", "{ranked}");
}

#[test]
fn offline_rca_names_what_is_wrong_with_its_input() {
    let dir = tempfile::TempDir::new().unwrap();
    let normal = dir.path().join("normal.csv");
    let anomalous = dir.path().join("anomalous.csv");
    std::fs::write(&normal, "when,a_cpu\n1,2\n").unwrap();
    std::fs::write(&anomalous, "time,a_cpu\n5,x\n").unwrap();
    // Fails, and answers what it printed on stderr.
    let rca = || {
        let out = Command::new(AUGUR)
            .arg("rca")
            .arg("--normal")
            .arg(&normal)
            .arg("--anomalous")
            .arg(&anomalous)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = rca();
    assert!(err.contains("time"), "{err}");
    // The error names the file it is in: here the normal one (its header has no `time`).
    assert!(err.contains(&normal.display().to_string()), "{err}");
    // A bad cell in the anomalous file only: that file is named.
    std::fs::write(&normal, "time,a_cpu\n1,2\n").unwrap();
    let err = rca();
    assert!(
        err.contains(&anomalous.display().to_string()) && err.contains("\"x\""),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_series_give_causal_edges_with_direction() {
    let cluster = Cluster::start(1, RaftKnobs::default());
    cluster.wait_leader().await;
    let ep = cluster.endpoints().join(",");
    // db's latency drives api's latency two samples later; cache is independent noise.
    let mut seed: u64 = 0x5eed;
    let mut noise = move || {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((seed >> 11) as f64 / (1u64 << 53) as f64) - 0.5
    };
    let n = 400;
    let mut db = vec![0.0f64; n];
    let mut api = vec![0.0f64; n];
    let mut cache = vec![0.0f64; n];
    for t in 1..n {
        db[t] = 0.5 * db[t - 1] + noise();
        cache[t] = 0.5 * cache[t - 1] + noise();
        api[t] = if t >= 2 { 0.8 * db[t - 2] } else { 0.0 } + 0.3 * noise();
    }
    let mut csv = String::from("time,db_latency,api_latency,cache_latency\n");
    for t in 0..n {
        csv.push_str(&format!("{},{},{},{}\n", 1000 + t, db[t], api[t], cache[t]));
    }
    let dir = tempfile::TempDir::new().unwrap();
    let path = dir.path().join("metrics.csv");
    std::fs::write(&path, csv).unwrap();
    let (code, out, err) = ctl(
        &ep,
        &[
            "--output",
            "json",
            "causal",
            "--metrics",
            path.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let v = json(&out);
    assert_eq!(v["series"], 3);
    let links = v["links"].as_array().unwrap();
    // The strongest link is the planted one; cache is linked to nothing.
    assert_eq!(
        (&links[0]["cause"], &links[0]["effect"]),
        (&"db".into(), &"api".into())
    );
    assert!(
        links
            .iter()
            .all(|l| l["cause"] != "cache" && l["effect"] != "cache"),
        "{v}"
    );
    // api depends on db: the edge runs effect -> cause, and outweighs any echo back.
    let g = graph(&ep);
    let strength =
        |from: &str, to: &str| edge(&g, from, to).map_or(0.0, |e| e["strength"].as_f64().unwrap());
    let e = edge(&g, "api", "db").expect("api -> db");
    assert_eq!(e["sources"][0]["source"], "causal");
    assert!(strength("api", "db") > 0.5, "{g}");
    assert!(strength("db", "api") < 0.2 * strength("api", "db"), "{g}");
}

/// One client span (front-end calling orders) and its server span, as OTLP.
fn otlp_call(trace: u8) -> augur_proto::ExportTraceServiceRequest {
    use augur_proto::otlp_pb::common::v1::{any_value, AnyValue, KeyValue};
    use augur_proto::otlp_pb::resource::v1::Resource;
    use augur_proto::otlp_pb::trace::v1::{span::SpanKind, ResourceSpans, ScopeSpans, Span};
    let resource = |service: &str, span: Span| ResourceSpans {
        resource: Some(Resource {
            attributes: vec![KeyValue {
                key: "service.name".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(service.into())),
                }),
            }],
            dropped_attributes_count: 0,
        }),
        scope_spans: vec![ScopeSpans {
            spans: vec![span],
            ..Default::default()
        }],
        schema_url: String::new(),
    };
    let span = |id: u8, parent: Option<u8>, kind: SpanKind| Span {
        trace_id: vec![trace; 16],
        span_id: vec![id; 8],
        parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
        name: "GET /orders".into(),
        kind: kind as i32,
        start_time_unix_nano: 1_000_000,
        end_time_unix_nano: 9_000_000,
        ..Default::default()
    };
    augur_proto::ExportTraceServiceRequest {
        resource_spans: vec![
            resource("front-end", span(1, None, SpanKind::Client)),
            resource("orders", span(2, Some(1), SpanKind::Server)),
        ],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_sent_to_a_follower_reach_the_graph_through_the_leader() {
    let cluster = Cluster::start(
        3,
        RaftKnobs {
            extra_toml: "[graph]\nflush_every_ms = 100\n",
            ..RaftKnobs::default()
        },
    );
    let leader = cluster.wait_leader().await;
    let follower = *cluster.nodes.keys().find(|&&id| id != leader).unwrap();
    let mut client =
        augur_proto::TraceServiceClient::connect(format!("http://{}", cluster.addr(follower)))
            .await
            .unwrap();
    for trace in 1..=5 {
        let r = client.export(otlp_call(trace)).await.unwrap().into_inner();
        assert!(r.partial_success.is_none(), "{r:?}");
    }
    let ep = cluster.endpoints().join(",");
    eventually(
        "the follower's edge on the leader",
        Duration::from_secs(30),
        || {
            let ep = ep.clone();
            async move {
                let g = graph(&ep);
                let calls =
                    edge(&g, "front-end", "orders").and_then(|e| e["sources"][0]["calls"].as_u64());
                (calls == Some(5)).then_some(())
            }
        },
    )
    .await;
}

/// Applying a topology again makes the graph what the file now says: a dependency dropped
/// from one of its components is withdrawn. A file the cluster refuses (one that would
/// overfill a host) changes nothing at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topology_applied_again_withdraws_what_it_dropped_and_a_refused_one_changes_nothing() {
    let (_cluster, ep) = single_node("").await;
    let dir = tempfile::TempDir::new().unwrap();
    let file = |name: &str, web_deps: &str, extra: &str| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "version = 1\n\
                 {extra}\
                 [[host]]\nname = \"h1\"\nrack = \"r1\"\nzone = \"z1\"\ncapacity = 3\n\
                 [[component]]\nname = \"web\"\nclass = \"web\"\nhost = \"h1\"\nentry = true\n\
                 depends_on = [{web_deps}]\n\
                 [[component]]\nname = \"api\"\nclass = \"service\"\nhost = \"h1\"\n\
                 depends_on = [\"db\"]\n\
                 [[component]]\nname = \"db\"\nclass = \"db\"\nhost = \"h1\"\n"
            ),
        )
        .unwrap();
        path
    };
    let apply = |path: &PathBuf| {
        ctl(
            &ep,
            &[
                "--output",
                "json",
                "topology",
                "apply",
                path.to_str().unwrap(),
            ],
        )
    };
    let edges = |ep: &str| {
        let g = graph(ep);
        let mut e: Vec<String> = g["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                format!(
                    "{} -> {}",
                    e["from"].as_str().unwrap(),
                    e["to"].as_str().unwrap()
                )
            })
            .collect();
        e.sort();
        (e, g["nodes"].as_array().unwrap().len())
    };

    let (code, out, err) = apply(&file("v1.toml", "\"api\", \"db\"", ""));
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["withdrawn"], 0, "{out}");
    assert_eq!(
        edges(&ep),
        (
            vec!["api -> db".into(), "web -> api".into(), "web -> db".into()],
            3
        )
    );

    // web no longer calls db.
    let (code, out, err) = apply(&file("v2.toml", "\"api\"", ""));
    assert_eq!(code, 0, "{err}");
    let v = json(&out);
    assert_eq!(
        (v["withdrawn"].as_u64(), v["edges_removed"].as_u64()),
        (Some(1), Some(1)),
        "{out}"
    );
    let before = edges(&ep);
    assert_eq!(
        before,
        (vec!["api -> db".into(), "web -> api".into()], 2 + 1)
    );

    // A fourth component on h1 (capacity 3): the file is refused whole; neither cache nor
    // web's new dependency on it is recorded.
    let extra = "[[component]]\nname = \"cache\"\nclass = \"cache\"\nhost = \"h1\"\n";
    let (code, _, err) = apply(&file("v3.toml", "\"cache\"", extra));
    assert_ne!(code, 0);
    assert!(err.contains("h1"), "{err}");
    assert_eq!(edges(&ep), before);
    let (code, out, err) = ctl(&ep, &["--output", "json", "component", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("cache"), "{out}");
}

/// A flows file larger than one write (4,096 edges) with one bad row at its end records
/// nothing: every edge is checked before the first write, not write by write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flows_file_with_a_bad_row_past_the_first_write_records_nothing() {
    let (_cluster, ep) = single_node("").await;
    let dir = tempfile::TempDir::new().unwrap();
    let topo = dir.path().join("many.yaml");
    let mut yaml = String::from("version: 1\ncomponent:\n");
    for i in 0..70 {
        yaml.push_str(&format!(
            "  - name: \"f{i}\"\n    addresses: [\"10.9.0.{i}\"]\n"
        ));
    }
    std::fs::write(&topo, yaml).unwrap();
    let (code, _, err) = ctl(&ep, &["topology", "apply", topo.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let now = now_ms();
    let mut csv = String::from("src,dst,bytes,connections,at_ms\n");
    for i in 0..70 {
        for j in (0..70).filter(|&j| j != i) {
            csv.push_str(&format!("10.9.0.{i},10.9.0.{j},1,1,{}\n", now - 1000));
        }
    }
    // 4,830 pairs; the last seen a day ahead.
    csv.push_str(&format!("10.9.0.69,10.9.0.68,1,1,{}\n", now + 86_400_000));
    let flows = dir.path().join("flows.csv");
    std::fs::write(&flows, csv).unwrap();
    let (code, _, err) = ctl(&ep, &["flows", "push", flows.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("edge f69 -> f68"), "{err}");
    assert!(err.contains("nothing was recorded"), "{err}");
    assert!(graph(&ep)["edges"].as_array().unwrap().is_empty());
}

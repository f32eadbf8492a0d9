#!/usr/bin/env python3
"""Root-cause accuracy of the ONLINE path on the sock-shop cases: for each case a fresh
single-node Augur starts, the Sock Shop topology is applied, the normal recording (moved to
end one second before the anomalous one starts, as `augur rca` does) and the anomalous one
are pushed as telemetry, and `augur ctl root-cause` ranks the incident window from the
node's metric history. Prints AC@1..5 and Avg@5, metrics alone and with the graph.

    python3 scripts/rca-online.py [AUGUR_BINARY] [DATA_DIR] [OFFSET_S]

OFFSET_S moves the fault time given to `root-cause --from` (e.g. 60 or -60: a fault time
that is a minute late or early).
"""
import csv, json, os, socket, subprocess, sys, tempfile, time

augur = sys.argv[1] if len(sys.argv) > 1 else "target/release/augur"
data = sys.argv[2] if len(sys.argv) > 2 else "../shared/data/sock-shop"
offset = int(sys.argv[3]) if len(sys.argv) > 3 else 0
topology = os.path.join(os.path.dirname(__file__), "..", "examples/topologies/sock-shop.toml")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rows(path):
    with open(path) as f:
        r = csv.reader(f)
        header = next(r)
        return header, [row for row in r]


def ctl(ep, *args):
    out = subprocess.run([augur, "ctl", "--endpoint", ep, "--output", "json", *args],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"ctl {' '.join(args)} failed: {out.stdout} {out.stderr}")
    return json.loads(out.stdout)


def case(case_dir, run, service, tmp):
    d = os.path.join(data, case_dir, run)
    header, normal = rows(os.path.join(d, "normal.csv"))
    _, anomalous = rows(os.path.join(d, "anomalous.csv"))
    start = int(float(anomalous[0][0]))
    shift = start - 1 - int(float(normal[-1][0]))
    samples = os.path.join(tmp, "samples.csv")
    with open(samples, "w") as f:
        f.write("component,metric,timestamp_ms,value\n")
        for shifted, table in ((shift, normal), (0, anomalous)):
            for row in table:
                t = (int(float(row[0])) + shifted) * 1000
                for name, cell in zip(header[1:], row[1:]):
                    if cell in ("", "nan", "NaN"):
                        continue
                    comp, metric = name.split("_", 1)
                    f.write(f"{comp},{metric},{t},{cell}\n")
    end = int(float(anomalous[-1][0]))
    port, mport = free_port(), free_port()
    cfg = os.path.join(tmp, "node.toml")
    with open(cfg, "w") as f:
        f.write(f"""version = 1\n[node]\nid = 1\nlisten = "127.0.0.1:{port}"\nmetrics_listen = "127.0.0.1:{mport}"
data_dir = "{tmp}/data"\n[cluster]\nbootstrap = true\nmembers = [{{ id = 1, addr = "127.0.0.1:{port}" }}]
[telemetry]\ncausal_every_s = 0\n""")
    node = subprocess.Popen([augur, "serve", "--config", cfg], stderr=subprocess.DEVNULL)
    ep = f"127.0.0.1:{port}"
    try:
        for _ in range(200):
            if node.poll() is not None:
                raise SystemExit(f"the node exited with {node.returncode}")
            try:
                if subprocess.run([augur, "ctl", "--endpoint", ep, "status"],
                                  capture_output=True, timeout=2).returncode == 0:
                    break
            except subprocess.TimeoutExpired:
                pass
            time.sleep(0.05)
        subprocess.run([augur, "ctl", "--endpoint", ep, "topology", "apply", topology],
                       check=True, capture_output=True)
        pushed = ctl(ep, "push", samples)
        ranks = {}
        for mode, extra in (("metrics", ["--metrics-only"]), ("graph", [])):
            r = ctl(ep, "root-cause", "--from", str(start + offset), "--to", str(end), *extra)
            names = [c["component"] for c in r["causes"]]
            ranks[mode] = names.index(service) + 1 if service in names else None
        return pushed["accepted"], ranks
    finally:
        node.kill()
        node.wait()


results = {"metrics": [], "graph": []}
for case_dir in sorted(os.listdir(data)):
    service = case_dir.rsplit("-", 1)[0]  # <service>-<cpu|mem>
    for run in sorted(os.listdir(os.path.join(data, case_dir))):
        with tempfile.TemporaryDirectory() as tmp:
            accepted, ranks = case(case_dir, run, service, tmp)
        print(f"{case_dir}/{run}: {accepted} samples; rank of {service}: "
              f"metrics {ranks['metrics']}, graph {ranks['graph']}", flush=True)
        for mode in results:
            results[mode].append(ranks[mode])

for mode, ranks in results.items():
    ac = [sum(1 for r in ranks if r is not None and r <= k) / len(ranks) for k in range(1, 6)]
    print(f"{mode:8} cases {len(ranks)}  " + "  ".join(f"AC@{k} {a:.2f}" for k, a in enumerate(ac, 1))
          + f"  Avg@5 {sum(ac) / 5:.3f}")

#!/usr/bin/env bash
# `make demo`: a single-node Augur cluster shown step by step (components, the dependency map,
# forecasts, root causes, the planner), then `augur demo`, predictive against reactive failover.
set -euo pipefail
AUGUR=${1:-augur}
DIR=$(mktemp -d)
trap 'kill $PID 2>/dev/null || true; wait $PID 2>/dev/null || true; rm -rf "$DIR"' EXIT
echo "== starting a single-node Augur cluster (data in $DIR)"
"$AUGUR" serve --data-dir "$DIR/node1" 2>"$DIR/node.log" &
PID=$!
# The demo's own node must be the one answering: one that cannot start (its ports taken by
# another `augur serve`, say) stops the demo with its log, not after minutes of retries.
node_up() {
  kill -0 "$PID" 2>/dev/null && return 0
  echo "the demo's node exited; its log:" >&2
  cat "$DIR/node.log" >&2
  exit 1
}
# Its own log says when it serves (a status answer could come from another node).
for _ in $(seq 1 300); do
  node_up
  grep -q "node serving" "$DIR/node.log" && break
  sleep 0.1
done
node_up
grep -q "node serving" "$DIR/node.log" || { echo "the demo's node did not start serving" >&2; exit 1; }
"$AUGUR" ctl status
echo "== registering components"
"$AUGUR" ctl component register web-1 --zone eu-1a --rack r1 --host h1 --group web --class nginx --criticality 4
"$AUGUR" ctl component register web-2 --zone eu-1b --rack r7 --host h9 --group web --class nginx --criticality 4
"$AUGUR" ctl component register db-1  --zone eu-1a --rack r2 --host h3 --group db --class postgres --criticality 5
"$AUGUR" ctl weights set web web-1=50 web-2=50
echo "== components"
"$AUGUR" ctl component list
echo "== a bad write is refused and changes nothing"
"$AUGUR" ctl weights set web web-1=70 web-2=20 || true
"$AUGUR" ctl weights get web
echo "== an action for orchestrators, and its outcome"
ID=$("$AUGUR" ctl --output json action append --kind drain --target web-1 | sed -n 's/.*"id": "\(a-[0-9-]*\)".*/\1/p')
"$AUGUR" ctl action report "$ID" --orchestrator demo
"$AUGUR" ctl actions
echo "== as JSON"
"$AUGUR" ctl component get db-1 --output json
echo "== the dependency map: the Sock Shop topology file"
"$AUGUR" ctl topology apply examples/topologies/sock-shop.toml
"$AUGUR" ctl graph
echo "== if carts-db fails, what else fails?"
"$AUGUR" ctl what-if carts-db
echo "== blast radius and the failure probability at which Augur would act"
"$AUGUR" ctl risk --limit 6
echo "== telemetry: 10 minutes of latency for every Sock Shop component, carts-db degrading at the end"
python3 - "$DIR/samples.csv" <<'PY'
import math, random, sys
random.seed(7)
comps = ["front-end", "carts", "carts-db", "orders", "orders-db", "catalogue", "catalogue-db",
         "user", "user-db", "payment", "shipping", "queue-master", "rabbitmq"]
with open(sys.argv[1], "w") as f:
    f.write("component,metric,timestamp_ms,value\n")
    for c in comps:
        base = random.uniform(5, 50)
        for i in range(600):
            v = base * (1 + 0.1 * math.sin(i / 60) + random.gauss(0, 0.02))
            if c == "carts-db" and i >= 590:
                v *= 1 + (i - 589) * 0.5
            f.write(f"{c},latency_ms,{i * 1000},{v:.4f}\n")
PY
"$AUGUR" ctl push "$DIR/samples.csv"
for _ in $(seq 1 50); do
  "$AUGUR" ctl at-risk --limit 1 2>/dev/null | grep -q carts-db && break
  sleep 0.1
done
echo "== riskiest components by Health Projection Score (lower is riskier)"
"$AUGUR" ctl at-risk --limit 5
echo "== risk = P(fail within 1 h) x blast radius"
"$AUGUR" ctl risk --limit 6
echo "== what the planner would do: a shadow for carts-db in a safer failure domain"
"$AUGUR" ctl plan
echo "== which component most likely caused it: ranked from the node's own metric history"
"$AUGUR" ctl root-cause --from 590 --to 599 --limit 3
echo "== the predictive-failover experiment: a simulated fleet of 50 components, 12 h, one fault"
echo "   schedule run twice (health checks alone, then Augur), with the node's own predictor and"
echo "   the planner (augur demo; --headless --output json for the report alone)"
"$AUGUR" demo --seed 7

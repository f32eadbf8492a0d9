#!/usr/bin/env bash
# Augur's ingest (Telemetry.Push over gRPC) against Prometheus 2.42's remote-write receiver:
# one load generator process, the same samples to each server process in turn, one machine.
# Usage: [SENDERS="4 8 16"] benches/side-by-side/ingest-vs-prometheus.sh [--components N]
#        [--metrics N] [--seconds S] [--batch N]
# Runs both targets once per count of concurrent senders in SENDERS (each server's
# throughput is measured up to where it saturates).
# Needs a release build (it builds one) and Debian's prometheus (it installs it).
set -euo pipefail
cd "$(dirname "$0")/../.."
TARGET=${CARGO_TARGET_DIR:-target}
if ! command -v prometheus >/dev/null; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  echo "installing prometheus"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq prometheus
fi
cargo build --release -p augur-cli --bin augur --bench ingest_load
BENCH=$(ls -t "$TARGET"/release/deps/ingest_load-* | grep -v '\.d$' | head -1)
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -r)"
echo "prometheus: $(prometheus --version 2>&1 | head -1)"
for senders in ${SENDERS:-4 8 16}; do
  "$BENCH" --augur "$TARGET/release/augur" --prometheus "$(command -v prometheus)" \
    --senders "$senders" "$@"
done

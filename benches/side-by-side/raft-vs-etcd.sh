#!/usr/bin/env bash
# Augur vs etcd 3.4, three members each on 127.0.0.1, one run, one machine.
# Needs: a release build of `augur` and the bench (make bench does both), and etcd-server.
set -euo pipefail
cd "$(dirname "$0")/../.."
TARGET=${CARGO_TARGET_DIR:-target}
BENCH=$(ls -t "$TARGET"/release/deps/raft_load-* | grep -v '\.d$' | head -1)
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -r)"
echo "etcd: $(etcd --version | head -1)"
"$BENCH" --augur "$TARGET/release/augur" --etcd "$(command -v etcd)" "$@"

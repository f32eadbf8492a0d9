# Augur's two entry points: `make demo` and `make test`. Both install what they need first.
SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/augur-target
CARGO ?= cargo
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Debian packages the build and tests need: RocksDB's bindings (clang), protoc for the gRPC
# code, python3 for the demo's telemetry and the OpenTelemetry test, haproxy for the agent's
# tests and the end-to-end failover test, prometheus for the remote-write test (a real sender;
# also the ingest side-by-side). etcd, for the side-by-side Raft benchmark, is installed by
# `make bench`).
DEB_PACKAGES := clang libclang-dev protobuf-compiler python3 haproxy prometheus

.PHONY: deps test demo bench build fmt lint nextest

# Whether Debian package $(1) is installed, not merely known (`dpkg -s` also answers 0 for a
# package removed but not purged).
installed = dpkg-query -W -f='$${Status}' $(1) 2>/dev/null | grep -q 'install ok installed'

deps:
	@missing=""; for p in $(DEB_PACKAGES); do $(call installed,$$p) || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi
	@command -v cargo-nextest >/dev/null || $(CARGO) install --locked cargo-nextest

fmt:
	$(CARGO) fmt --all -- --check

lint: deps
	$(CARGO) clippy --workspace --all-targets -- -D warnings

nextest: deps
	$(CARGO) nextest run --workspace --no-fail-fast

# The gate: what CI runs and what developers run.
test: deps fmt lint nextest

# --all-targets resolves features as the test build does, so after `make test` (or before
# it) RocksDB's C++ is compiled once for both, not once per feature set.
build: deps
	$(CARGO) build --workspace --all-targets

# A single-node cluster (components, the dependency map, forecasts, the plan, root causes),
# then `augur demo`: the predictive-against-reactive experiment on a simulated fleet.
demo: build
	@scripts/demo.sh "$(CARGO_TARGET_DIR)/debug/augur"

# Side-by-side Raft benchmark against etcd (needs etcd-server; see docs/benchmarks.md).
bench: deps
	@$(call installed,etcd-server) || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq etcd-server etcd-client; }
	$(CARGO) build --release -p augur-cli --bins --benches
	benches/side-by-side/raft-vs-etcd.sh
	benches/side-by-side/ingest-vs-prometheus.sh

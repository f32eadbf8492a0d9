#!/usr/bin/env python3
"""Self-check of emit_traces.py without Augur: a tiny in-process OTLP/gRPC trace receiver
records what the script exports, then pairs client and server spans the way augur-graph
does and checks the edges that the docstring of emit_traces.py promises.

    PYTHONPATH=/tmp/otel-py python3 tests/otlp/check_emit.py

Also checks that, with nothing listening, the script fails cleanly (exit 1, no traceback).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections import Counter
from concurrent import futures
from pathlib import Path

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

HERE = Path(__file__).resolve().parent
TRACES = 20


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.spans: list[tuple[str, trace_pb2.Span]] = []

    def Export(self, request, context):  # noqa: N802 (gRPC's name)
        with self.lock:
            for rs in request.resource_spans:
                service = next(
                    (a.value.string_value for a in rs.resource.attributes if a.key == "service.name"),
                    "",
                )
                for ss in rs.scope_spans:
                    self.spans.extend((service, s) for s in ss.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


def edges(spans: list[tuple[str, trace_pb2.Span]]) -> dict[tuple[str, str], tuple[int, int]]:
    client_kinds = (trace_pb2.Span.SPAN_KIND_CLIENT, trace_pb2.Span.SPAN_KIND_PRODUCER)
    server_kinds = (trace_pb2.Span.SPAN_KIND_SERVER, trace_pb2.Span.SPAN_KIND_CONSUMER)
    error = trace_pb2.Status.STATUS_CODE_ERROR
    clients = {(s.trace_id, s.span_id): (svc, s) for svc, s in spans if s.kind in client_kinds}
    calls: Counter = Counter()
    errors: Counter = Counter()
    paired = set()
    for svc, s in spans:
        if s.kind not in server_kinds:
            continue
        key = (s.trace_id, s.parent_span_id)
        assert key in clients, f"server span {s.name} of {svc} has no client span"
        csvc, c = clients[key]
        paired.add(key)
        calls[(csvc, svc)] += 1
        errors[(csvc, svc)] += int(c.status.code == error or s.status.code == error)
    for key, (svc, c) in clients.items():
        if key in paired:
            continue
        peer = next((a.value.string_value for a in c.attributes if a.key == "peer.service"), None)
        assert peer, f"unpaired client span {c.name} of {svc} names no peer"
        calls[(svc, peer)] += 1
        errors[(svc, peer)] += int(c.status.code == error)
    return {k: (calls[k], errors[k]) for k in calls}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_emitter(port: int, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            str(HERE / "emit_traces.py"),
            "--endpoint",
            f"127.0.0.1:{port}",
            "--traces",
            str(TRACES),
            "--timeout",
            str(timeout),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def main() -> int:
    receiver = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        done = run_emitter(port, 10)
    finally:
        server.stop(None)
    assert done.returncode == 0, f"emitter failed: {done.returncode}\n{done.stdout}{done.stderr}"
    assert len(receiver.spans) == 4 * TRACES + 1, len(receiver.spans)
    got = edges(receiver.spans)
    want = {
        ("front-end", "orders"): (TRACES, 0),
        ("orders", "payment"): (TRACES, TRACES // 5),
        ("orders", "shipping"): (1, 0),
    }
    assert got == want, f"edges {got}, want {want}"
    print(f"ok: receiver got {len(receiver.spans)} spans; edges {got}")

    down = run_emitter(free_port(), 2)
    assert down.returncode == 1, f"with no receiver: exit {down.returncode}\n{down.stderr}"
    assert "Traceback" not in down.stderr, down.stderr
    assert "export of" in down.stderr, down.stderr
    print("ok: with no receiver the emitter exits 1:", down.stderr.strip().splitlines()[-1])
    return 0


if __name__ == "__main__":
    sys.exit(main())

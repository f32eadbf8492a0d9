#!/usr/bin/env python3
"""Emit real OpenTelemetry spans over OTLP/gRPC, as three instrumented services would.

Uses the OpenTelemetry Python SDK and its OTLP gRPC exporter (versions pinned in
requirements.txt beside this file):

    python3 -m pip install --target /tmp/otel-py -r tests/otlp/requirements.txt
    PYTHONPATH=/tmp/otel-py python3 tests/otlp/emit_traces.py --endpoint 127.0.0.1:4317

Three tracer providers, with resources service.name = front-end, orders and payment, each
with its own BatchSpanProcessor and OTLP exporter. Each of the N traces (--traces, default
20) is

    front-end CLIENT "GET /orders"
      └─ orders SERVER "GET /orders"          (context carried in a traceparent header)
           └─ orders CLIENT "POST /charge"
                └─ payment SERVER "POST /charge"   (status ERROR on every 5th trace)

plus one trace with a single orders CLIENT span "GET /quote", attribute
peer.service = "shipping", and no server side.

What a receiver pairing these spans (augur-graph's ServiceGraph) should learn, and what
the lead's end-to-end test should expect:

    front-end -> orders     N calls, 0 errors
    orders    -> payment    N calls, N // 5 errors
    orders    -> shipping   1 call to a virtual peer, only once the unpaired client span
                            has waited ServiceGraphOptions::wait_ms (10 s by default)
                            and ServiceGraph::expire has run

and no other edge (no front-end root SERVER span, so no edge from "user").

Exits 0 only if every export succeeded and the flush finished in time; otherwise prints
why on stderr and exits 1 (2 for bad arguments).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Sequence

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import SpanKind, Status, StatusCode

SERVICES = ("front-end", "orders", "payment")


class CheckedExporter(SpanExporter):
    """Passes spans to the OTLP exporter and remembers whether every export succeeded."""

    def __init__(self, inner: SpanExporter, service: str) -> None:
        self._inner = inner
        self._service = service
        self._lock = threading.Lock()
        self.exported = 0
        self.failures: list[str] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self._inner.export(spans)
        with self._lock:
            if result == SpanExportResult.SUCCESS:
                self.exported += len(spans)
            else:
                self.failures.append(f"{self._service}: export of {len(spans)} spans failed")
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._inner.force_flush(timeout_millis)


def endpoint_url(endpoint: str) -> str:
    return endpoint if "://" in endpoint else f"http://{endpoint}"


def make_provider(service: str, endpoint: str, timeout_s: float) -> tuple[TracerProvider, CheckedExporter]:
    otlp = OTLPSpanExporter(endpoint=endpoint_url(endpoint), insecure=True, timeout=timeout_s)
    checked = CheckedExporter(otlp, service)
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service}))
    provider.add_span_processor(BatchSpanProcessor(checked))
    return provider, checked


def emit(providers: dict[str, TracerProvider], traces: int) -> None:
    front = providers["front-end"].get_tracer("augur.emit_traces")
    orders = providers["orders"].get_tracer("augur.emit_traces")
    payment = providers["payment"].get_tracer("augur.emit_traces")

    for i in range(traces):
        # A fresh, empty context for each trace: front-end's client span is the root.
        with front.start_as_current_span("GET /orders", context={}, kind=SpanKind.CLIENT):
            to_orders: dict[str, str] = {}
            inject(to_orders)
            # "Over the wire": orders sees only the headers.
            with orders.start_as_current_span(
                "GET /orders", context=extract(to_orders), kind=SpanKind.SERVER
            ):
                with orders.start_as_current_span("POST /charge", kind=SpanKind.CLIENT):
                    to_payment: dict[str, str] = {}
                    inject(to_payment)
                    with payment.start_as_current_span(
                        "POST /charge", context=extract(to_payment), kind=SpanKind.SERVER
                    ) as charge:
                        time.sleep(0.002)
                        if (i + 1) % 5 == 0:
                            charge.set_status(Status(StatusCode.ERROR, "card declined"))

    # A call to a service that is not instrumented: only the client side exists.
    with orders.start_as_current_span(
        "GET /quote",
        context={},
        kind=SpanKind.CLIENT,
        attributes={"peer.service": "shipping"},
    ):
        time.sleep(0.001)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True, help="OTLP/gRPC receiver, HOST:PORT")
    parser.add_argument("--traces", type=int, default=20, help="number of traces (default 20)")
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds an export may take, retries included"
    )
    args = parser.parse_args(argv)
    if args.traces < 0:
        parser.error("--traces must be at least 0")

    built = {s: make_provider(s, args.endpoint, args.timeout) for s in SERVICES}
    providers = {s: p for s, (p, _) in built.items()}
    emit(providers, args.traces)

    ok = True
    flush_ms = int(args.timeout * 1000) + 5_000
    for service, (provider, checked) in built.items():
        if not provider.force_flush(flush_ms):
            print(f"{service}: flush did not finish within {flush_ms} ms", file=sys.stderr)
            ok = False
        provider.shutdown()
        for failure in checked.failures:
            print(failure, file=sys.stderr)
            ok = False

    total = sum(c.exported for _, c in built.values())
    expected = 4 * args.traces + 1
    if ok and total != expected:
        print(f"exported {total} spans, expected {expected}", file=sys.stderr)
        ok = False
    if ok:
        print(f"exported {total} spans in {args.traces} traces to {args.endpoint}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

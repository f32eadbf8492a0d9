//! The OTLP trace receiver (`opentelemetry.proto.collector.trace.v1.TraceService/Export`):
//! spans are paired into service-graph edges, which reach Raft in batches.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use augur_graph::{ServiceGraph, ServiceGraphOptions};
use augur_proto::{
    export_trace_response, spans_from_otlp, ExportTraceServiceRequest, ExportTraceServiceResponse,
    TraceService,
};
use tonic::{Request, Response, Status};

use crate::config::GraphSection;
use crate::graph::EdgeSink;
use crate::service::now_ms;

pub struct OtlpTraceService {
    engine: Arc<Mutex<ServiceGraph>>,
}

impl OtlpTraceService {
    /// The receiver, and a task that every `flush_every_ms` expires unpaired spans and sends
    /// the edges seen since the last flush to `sink`.
    pub fn spawn(cfg: &GraphSection, sink: EdgeSink) -> Self {
        let engine = Arc::new(Mutex::new(ServiceGraph::new(ServiceGraphOptions {
            wait_ms: cfg.trace_wait_ms,
            max_pending: cfg.max_pending_spans,
            // An edge the graph itself would fade keeps no totals here either.
            edge_idle_ms: cfg.edge_ttl_ms,
            ..ServiceGraphOptions::default()
        })));
        let every = Duration::from_millis(cfg.flush_every_ms);
        let flusher = engine.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let edges = {
                    let mut g = flusher.lock().expect("service graph lock");
                    let now = now_ms();
                    let expired = g.expire(now);
                    count("expired", expired.expired);
                    count("to_virtual_peer", expired.to_virtual_peer);
                    count("missing_parent", expired.missing_parent);
                    metrics::gauge!("augur_traces_pending_spans").set(g.pending() as f64);
                    g.drain_edges(now)
                };
                sink.send(edges);
            }
        });
        Self { engine }
    }
}

fn count(kind: &'static str, n: u64) {
    if n > 0 {
        metrics::counter!("augur_trace_spans_total", "kind" => kind).increment(n);
    }
}

#[tonic::async_trait]
impl TraceService for OtlpTraceService {
    async fn export(
        &self,
        req: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let (spans, decode) = spans_from_otlp(req.get_ref());
        let summary = {
            let mut g = self.engine.lock().expect("service graph lock");
            g.ingest(spans, now_ms())
        };
        count("received", decode.received);
        let malformed_ids = decode.malformed();
        count("malformed_id", malformed_ids);
        count("zero_id", summary.zero_id);
        count("paired", summary.paired);
        count("unknown_service", summary.unknown_service);
        count("end_before_start", summary.end_before_start);
        count("duplicate", summary.duplicate);
        count("clock_skew", summary.clock_skew);
        count("ignored_kind", summary.ignored_kind);
        count("evicted", summary.evicted);
        // Every span dropped, each under one kind that the message names.
        let rejected = malformed_ids + summary.malformed() + summary.duplicate;
        let message = if rejected > 0 {
            format!(
                "{rejected} spans rejected: {malformed_ids} with malformed ids, {} with an \
                 all-zero trace or span id, {} without service.name, {} ending before they \
                 start, {} duplicates",
                summary.zero_id,
                summary.unknown_service,
                summary.end_before_start,
                summary.duplicate
            )
        } else {
            String::new()
        };
        Ok(Response::new(export_trace_response(rejected, &message)))
    }
}

//! OTLP traces (the OpenTelemetry collector's `TraceService/Export`) → the spans
//! `augur-graph` pairs into dependency edges.
//!
//! Only what pairing needs is kept: ids, kind, times, error status, the resource's
//! `service.name` and the client's peer. A span whose ids have the wrong length is counted
//! and skipped; everything else is passed on for the engine to judge (an empty service
//! name, for one, is counted there as an unknown service).

use augur_graph::{Span, SpanKind};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{span, status};

/// Resource attribute naming the service that emitted a span.
const SERVICE_NAME: &str = "service.name";

/// Span attributes naming the peer of a client span, most specific first.
const PEER_ATTRIBUTES: [&str; 3] = ["peer.service", "server.address", "net.peer.name"];

/// What [`spans_from_otlp`] did with a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OtlpDecodeStats {
    /// Spans in the request.
    pub received: u64,
    /// Spans converted and returned.
    pub converted: u64,
    /// Skipped: trace id not 16 bytes.
    pub bad_trace_id: u64,
    /// Skipped: span id not 8 bytes.
    pub bad_span_id: u64,
    /// Skipped: parent span id neither empty nor 8 bytes.
    pub bad_parent_span_id: u64,
    /// Converted with an empty service name: the resource has no string `service.name`.
    pub missing_service_name: u64,
}

impl OtlpDecodeStats {
    /// Spans skipped as malformed.
    pub fn malformed(&self) -> u64 {
        self.bad_trace_id + self.bad_span_id + self.bad_parent_span_id
    }
}

/// Converts every span of an OTLP export request, in request order.
pub fn spans_from_otlp(req: &ExportTraceServiceRequest) -> (Vec<Span>, OtlpDecodeStats) {
    let mut stats = OtlpDecodeStats::default();
    let mut out = Vec::new();
    for rs in &req.resource_spans {
        let service = rs
            .resource
            .as_ref()
            .and_then(|r| string_attribute(&r.attributes, SERVICE_NAME))
            .unwrap_or_default();
        for ss in &rs.scope_spans {
            for s in &ss.spans {
                stats.received += 1;
                let Ok(trace_id) = <[u8; 16]>::try_from(s.trace_id.as_slice()) else {
                    stats.bad_trace_id += 1;
                    continue;
                };
                let Ok(span_id) = <[u8; 8]>::try_from(s.span_id.as_slice()) else {
                    stats.bad_span_id += 1;
                    continue;
                };
                let parent_span_id = if s.parent_span_id.is_empty() {
                    None
                } else if let Ok(p) = <[u8; 8]>::try_from(s.parent_span_id.as_slice()) {
                    Some(p)
                } else {
                    stats.bad_parent_span_id += 1;
                    continue;
                };
                if service.is_empty() {
                    stats.missing_service_name += 1;
                }
                let error = s
                    .status
                    .as_ref()
                    .is_some_and(|st| st.code == status::StatusCode::Error as i32);
                let peer_service = PEER_ATTRIBUTES
                    .iter()
                    .find_map(|key| string_attribute(&s.attributes, key))
                    .map(str::to_owned);
                out.push(Span {
                    trace_id,
                    span_id,
                    parent_span_id,
                    service: service.to_owned(),
                    kind: kind_from_wire(s.kind),
                    start_ns: s.start_time_unix_nano,
                    end_ns: s.end_time_unix_nano,
                    error,
                    peer_service,
                });
                stats.converted += 1;
            }
        }
    }
    (out, stats)
}

/// The answer to an export: plain success, or a partial success naming how many spans were
/// rejected and why.
pub fn export_trace_response(
    rejected_spans: u64,
    error_message: &str,
) -> ExportTraceServiceResponse {
    let partial_success =
        (rejected_spans > 0 || !error_message.is_empty()).then(|| ExportTracePartialSuccess {
            rejected_spans: i64::try_from(rejected_spans).unwrap_or(i64::MAX),
            error_message: error_message.to_owned(),
        });
    ExportTraceServiceResponse { partial_success }
}

fn kind_from_wire(kind: i32) -> SpanKind {
    match span::SpanKind::try_from(kind) {
        Ok(span::SpanKind::Client) => SpanKind::Client,
        Ok(span::SpanKind::Server) => SpanKind::Server,
        Ok(span::SpanKind::Producer) => SpanKind::Producer,
        Ok(span::SpanKind::Consumer) => SpanKind::Consumer,
        Ok(span::SpanKind::Internal) => SpanKind::Internal,
        Ok(span::SpanKind::Unspecified) | Err(_) => SpanKind::Unspecified,
    }
}

/// The value of the first attribute `key` holding a non-empty string.
fn string_attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attributes.iter().filter(|kv| kv.key == key).find_map(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(v) if !v.is_empty() => Some(v.as_str()),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::AnyValue;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Status};

    use super::*;

    fn kv(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
        }
    }

    fn text(key: &str, value: &str) -> KeyValue {
        kv(key, any_value::Value::StringValue(value.into()))
    }

    fn wire_span(
        id: u8,
        parent: Option<u8>,
        kind: span::SpanKind,
    ) -> opentelemetry_proto::tonic::trace::v1::Span {
        opentelemetry_proto::tonic::trace::v1::Span {
            trace_id: vec![7; 16],
            span_id: vec![id; 8],
            parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
            name: format!("span {id}"),
            kind: kind as i32,
            start_time_unix_nano: 1_000,
            end_time_unix_nano: 5_000,
            ..Default::default()
        }
    }

    fn resource_spans(
        service: Option<&str>,
        spans: Vec<opentelemetry_proto::tonic::trace::v1::Span>,
    ) -> ResourceSpans {
        ResourceSpans {
            resource: Some(Resource {
                attributes: service.map(|s| text(SERVICE_NAME, s)).into_iter().collect(),
                dropped_attributes_count: 0,
            }),
            // Two scopes, to check that both are walked.
            scope_spans: spans
                .chunks(1)
                .map(|c| ScopeSpans {
                    spans: c.to_vec(),
                    ..Default::default()
                })
                .collect(),
            schema_url: String::new(),
        }
    }

    #[test]
    fn converts_ids_kinds_status_service_and_peer() {
        let mut client = wire_span(1, None, span::SpanKind::Client);
        client.attributes = vec![
            text("server.address", "shipping.internal"),
            text("peer.service", "shipping"),
            text("net.peer.name", "10.0.0.9"),
        ];
        let mut server = wire_span(2, Some(1), span::SpanKind::Server);
        server.status = Some(Status {
            message: "boom".into(),
            code: status::StatusCode::Error as i32,
        });
        let mut ok = wire_span(3, Some(2), span::SpanKind::Producer);
        ok.status = Some(Status {
            message: String::new(),
            code: status::StatusCode::Ok as i32,
        });
        ok.attributes = vec![
            kv("peer.service", any_value::Value::IntValue(3)),
            text("server.address", ""),
            text("net.peer.name", "queue"),
        ];
        let req = ExportTraceServiceRequest {
            resource_spans: vec![
                resource_spans(Some("orders"), vec![client, server]),
                resource_spans(Some("billing"), vec![ok]),
            ],
        };

        let (spans, stats) = spans_from_otlp(&req);
        assert_eq!(stats.received, 3);
        assert_eq!(stats.converted, 3);
        assert_eq!(stats.malformed(), 0);
        assert_eq!(stats.missing_service_name, 0);

        assert_eq!(
            spans[0],
            Span {
                trace_id: [7; 16],
                span_id: [1; 8],
                parent_span_id: None,
                service: "orders".into(),
                kind: SpanKind::Client,
                start_ns: 1_000,
                end_ns: 5_000,
                error: false,
                peer_service: Some("shipping".into()),
            }
        );
        assert_eq!(spans[1].parent_span_id, Some([1; 8]));
        assert_eq!(spans[1].kind, SpanKind::Server);
        assert!(spans[1].error);
        assert_eq!(spans[1].peer_service, None);
        assert_eq!(spans[2].service, "billing");
        assert_eq!(spans[2].kind, SpanKind::Producer);
        assert!(!spans[2].error);
        // A non-string and an empty peer attribute fall through to the next one.
        assert_eq!(spans[2].peer_service.as_deref(), Some("queue"));
    }

    #[test]
    fn kind_mapping_covers_every_wire_value() {
        for (wire, want) in [
            (0, SpanKind::Unspecified),
            (1, SpanKind::Internal),
            (2, SpanKind::Server),
            (3, SpanKind::Client),
            (4, SpanKind::Producer),
            (5, SpanKind::Consumer),
            (99, SpanKind::Unspecified),
            (-1, SpanKind::Unspecified),
        ] {
            assert_eq!(kind_from_wire(wire), want, "wire kind {wire}");
        }
    }

    #[test]
    fn wrong_length_ids_are_counted_and_skipped() {
        let mut short_trace = wire_span(1, None, span::SpanKind::Client);
        short_trace.trace_id = vec![1; 8];
        let mut long_span = wire_span(2, None, span::SpanKind::Client);
        long_span.span_id = vec![2; 16];
        let mut empty_span = wire_span(3, None, span::SpanKind::Client);
        empty_span.span_id = Vec::new();
        let mut odd_parent = wire_span(4, None, span::SpanKind::Server);
        odd_parent.parent_span_id = vec![4; 3];
        let good = wire_span(5, Some(1), span::SpanKind::Server);
        let req = ExportTraceServiceRequest {
            resource_spans: vec![resource_spans(
                Some("orders"),
                vec![short_trace, long_span, empty_span, odd_parent, good],
            )],
        };
        let (spans, stats) = spans_from_otlp(&req);
        assert_eq!(
            stats,
            OtlpDecodeStats {
                received: 5,
                converted: 1,
                bad_trace_id: 1,
                bad_span_id: 2,
                bad_parent_span_id: 1,
                missing_service_name: 0,
            }
        );
        assert_eq!(stats.malformed(), 4);
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].span_id, [5; 8]);
    }

    #[test]
    fn missing_service_name_gives_an_empty_service() {
        let mut no_resource =
            resource_spans(None, vec![wire_span(1, None, span::SpanKind::Client)]);
        no_resource.resource = None;
        let mut int_name = resource_spans(None, vec![wire_span(2, None, span::SpanKind::Client)]);
        int_name.resource = Some(Resource {
            attributes: vec![kv(SERVICE_NAME, any_value::Value::IntValue(1))],
            dropped_attributes_count: 0,
        });
        let req = ExportTraceServiceRequest {
            resource_spans: vec![
                no_resource,
                int_name,
                resource_spans(None, vec![wire_span(3, None, span::SpanKind::Client)]),
            ],
        };
        let (spans, stats) = spans_from_otlp(&req);
        assert_eq!((stats.converted, stats.missing_service_name), (3, 3));
        assert!(spans.iter().all(|s| s.service.is_empty()));
    }

    #[test]
    fn converted_spans_pair_in_the_engine() {
        let req = ExportTraceServiceRequest {
            resource_spans: vec![
                resource_spans(
                    Some("payment"),
                    vec![wire_span(2, Some(1), span::SpanKind::Server)],
                ),
                resource_spans(
                    Some("orders"),
                    vec![wire_span(1, None, span::SpanKind::Client)],
                ),
            ],
        };
        let (spans, _) = spans_from_otlp(&req);
        let mut g = augur_graph::ServiceGraph::default();
        assert_eq!(g.ingest(spans, 0).paired, 1);
        let edges = g.drain_edges(0);
        assert_eq!(
            (edges[0].from.as_str(), edges[0].to.as_str()),
            ("orders", "payment")
        );
    }

    #[test]
    fn export_response_reports_partial_success_only_when_needed() {
        assert_eq!(export_trace_response(0, "").partial_success, None);
        let r = export_trace_response(3, "3 spans with malformed ids");
        let p = r.partial_success.unwrap();
        assert_eq!(p.rejected_spans, 3);
        assert_eq!(p.error_message, "3 spans with malformed ids");
    }
}

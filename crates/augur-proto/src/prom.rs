//! Prometheus `remote_write` (protocol 1.0): a snappy-compressed (block format) protobuf
//! `prometheus.WriteRequest`. Only the fields Augur reads are declared; prost skips the rest
//! (metadata, exemplars, histograms).

use prost::Message;

/// `prometheus.WriteRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// `prometheus.TimeSeries`.
#[derive(Clone, PartialEq, Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<PromSample>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`.
#[derive(Clone, PartialEq, Message)]
pub struct PromSample {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// Why a remote-write body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RemoteWriteError {
    #[error("body is not snappy (block format): {0}")]
    Snappy(#[from] snap::Error),
    #[error("body is not a prometheus.WriteRequest: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("body decompresses to {len} bytes, above the limit of {max}")]
    TooLarge { len: usize, max: usize },
}

/// Decodes a request body, refusing one that would decompress to more than `max_decoded`
/// bytes before allocating anything for it (snappy's header says the length).
pub fn decode_remote_write(
    body: &[u8],
    max_decoded: usize,
) -> Result<WriteRequest, RemoteWriteError> {
    let len = snap::raw::decompress_len(body)?;
    if len > max_decoded {
        return Err(RemoteWriteError::TooLarge {
            len,
            max: max_decoded,
        });
    }
    let raw = snap::raw::Decoder::new().decompress_vec(body)?;
    Ok(WriteRequest::decode(raw.as_slice())?)
}

/// Encodes a request body (for tests and the load generator).
pub fn encode_remote_write(req: &WriteRequest) -> Vec<u8> {
    let raw = req.encode_to_vec();
    // Compressing a buffer we just built cannot fail but for its size (> 4 GiB).
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .unwrap_or_default()
}

/// One sample of a remote-write request as Augur sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct LabeledSample<'a> {
    pub component: &'a str,
    pub metric: &'a str,
    pub ts_ms: i64,
    pub value: f64,
}

/// Walks every sample, naming its component by the label `component_label` and its metric by
/// `__name__`. Returns the samples and how many had no such label (those are dropped).
pub fn remote_write_samples<'a>(
    req: &'a WriteRequest,
    component_label: &str,
) -> (Vec<LabeledSample<'a>>, u64) {
    let mut out = Vec::new();
    let mut unlabeled = 0u64;
    for ts in &req.timeseries {
        let find = |name: &str| {
            ts.labels
                .iter()
                .find(|l| l.name == name)
                .map(|l| l.value.as_str())
        };
        match (find(component_label), find("__name__")) {
            (Some(component), Some(metric)) if !component.is_empty() => {
                out.extend(ts.samples.iter().map(|s| LabeledSample {
                    component,
                    metric,
                    ts_ms: s.timestamp,
                    value: s.value,
                }));
            }
            _ => unlabeled += ts.samples.len() as u64,
        }
    }
    (out, unlabeled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_labels() {
        let label = |n: &str, v: &str| Label {
            name: n.into(),
            value: v.into(),
        };
        let req = WriteRequest {
            timeseries: vec![
                TimeSeries {
                    labels: vec![label("__name__", "latency_ms"), label("component", "carts")],
                    samples: vec![PromSample {
                        value: 1.5,
                        timestamp: 1000,
                    }],
                },
                TimeSeries {
                    labels: vec![label("__name__", "up")],
                    samples: vec![PromSample {
                        value: 1.0,
                        timestamp: 1000,
                    }],
                },
            ],
        };
        let body = encode_remote_write(&req);
        let back = decode_remote_write(&body, 1 << 20).unwrap();
        assert_eq!(back, req);
        let (samples, unlabeled) = remote_write_samples(&back, "component");
        assert_eq!(samples.len(), 1);
        assert_eq!(samples[0].component, "carts");
        assert_eq!(unlabeled, 1);
        let err = decode_remote_write(b"definitely not snappy", 1 << 20).unwrap_err();
        assert!(err.to_string().contains("snappy"), "{err}");
        // A header that claims 4 GiB is refused before anything that size is allocated.
        let bomb = [0xff, 0xff, 0xff, 0xff, 0x0f, 0x00];
        let err = decode_remote_write(&bomb, 1 << 20).unwrap_err();
        assert!(
            err.to_string()
                .contains("decompresses to 4294967295 bytes, above the limit of 1048576"),
            "{err}"
        );
        let err = decode_remote_write(&body, 10).unwrap_err();
        assert!(matches!(err, RemoteWriteError::TooLarge { max: 10, .. }));
    }
}

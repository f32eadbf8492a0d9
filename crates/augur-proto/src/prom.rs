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
    #[error("body holds {count} samples, above the limit of {max} a request")]
    TooManySamples { count: usize, max: usize },
    #[error(
        "body holds {series} series, {labels} labels and {samples} samples, which would take \
         {bytes} bytes decoded, above the limit of {max}"
    )]
    TooManyElements {
        series: usize,
        labels: usize,
        samples: usize,
        bytes: usize,
        max: usize,
    },
}

/// The most memory the decoded structures of one request may take (series, labels and
/// samples, not counting the label strings, which the decompressed size already bounds):
/// two bytes on the wire (an empty series or label) decode to 48, so the decompression limit
/// alone would let a 1 MiB body take gigabytes.
pub const MAX_DECODED_ELEMENT_BYTES: usize = 64 << 20;

/// How many of each element a decompressed `WriteRequest` holds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct WireCounts {
    series: usize,
    labels: usize,
    samples: usize,
}

impl WireCounts {
    /// The bytes their decoded structures take.
    fn decoded_bytes(&self) -> usize {
        self.series * std::mem::size_of::<TimeSeries>()
            + self.labels * std::mem::size_of::<Label>()
            + self.samples * std::mem::size_of::<PromSample>()
    }
}

/// The bit pattern of Prometheus' staleness marker: a NaN that says "this series ended", not
/// a measurement.
pub const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// How many series (field 1), labels (their field 1) and samples (their field 2) a
/// decompressed `WriteRequest` holds, read off the wire without building anything. Ten
/// million empty samples or series fit a 1 MiB body; counted first, such a body costs
/// nothing but the scan.
fn count_elements(mut raw: &[u8]) -> Result<WireCounts, prost::DecodeError> {
    use prost::encoding::{decode_key, decode_varint, WireType};
    /// The next `len` bytes, moving `buf` past them.
    fn advance<'a>(buf: &mut &'a [u8], len: usize) -> Result<&'a [u8], prost::DecodeError> {
        if len > buf.len() {
            return Err(prost::DecodeError::new("buffer underflow"));
        }
        let (field, rest) = buf.split_at(len);
        *buf = rest;
        Ok(field)
    }
    /// A length-delimited field's bytes.
    fn delimited<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], prost::DecodeError> {
        let len = usize::try_from(decode_varint(buf)?).unwrap_or(usize::MAX);
        advance(buf, len)
    }
    fn skip(buf: &mut &[u8], wire: WireType) -> Result<(), prost::DecodeError> {
        match wire {
            WireType::Varint => decode_varint(buf).map(drop),
            WireType::SixtyFourBit => advance(buf, 8).map(drop),
            WireType::ThirtyTwoBit => advance(buf, 4).map(drop),
            WireType::LengthDelimited => delimited(buf).map(drop),
            // Deprecated groups: `WriteRequest` has none (prost would skip them; a body that
            // holds one is refused here, as no sender writes them).
            WireType::StartGroup | WireType::EndGroup => {
                Err(prost::DecodeError::new("unexpected group"))
            }
        }
    }
    let mut count = WireCounts::default();
    while !raw.is_empty() {
        let (tag, wire) = decode_key(&mut raw)?;
        if tag != 1 || wire != WireType::LengthDelimited {
            skip(&mut raw, wire)?;
            continue;
        }
        let mut series = delimited(&mut raw)?;
        count.series += 1;
        while !series.is_empty() {
            let (tag, wire) = decode_key(&mut series)?;
            match tag {
                1 => count.labels += 1,
                2 => count.samples += 1,
                _ => {}
            }
            skip(&mut series, wire)?;
        }
    }
    Ok(count)
}

/// Decodes a request body, refusing one that would decompress to more than `max_decoded`
/// bytes before allocating anything for it (snappy's header says the length), and one that
/// holds more than `max_samples` samples, or whose series, labels and samples would take more
/// than [`MAX_DECODED_ELEMENT_BYTES`] decoded, before decoding them.
pub fn decode_remote_write(
    body: &[u8],
    max_decoded: usize,
    max_samples: usize,
) -> Result<WriteRequest, RemoteWriteError> {
    let len = snap::raw::decompress_len(body)?;
    if len > max_decoded {
        return Err(RemoteWriteError::TooLarge {
            len,
            max: max_decoded,
        });
    }
    let raw = snap::raw::Decoder::new().decompress_vec(body)?;
    let count = count_elements(&raw)?;
    if count.samples > max_samples {
        return Err(RemoteWriteError::TooManySamples {
            count: count.samples,
            max: max_samples,
        });
    }
    if count.decoded_bytes() > MAX_DECODED_ELEMENT_BYTES {
        return Err(RemoteWriteError::TooManyElements {
            series: count.series,
            labels: count.labels,
            samples: count.samples,
            bytes: count.decoded_bytes(),
            max: MAX_DECODED_ELEMENT_BYTES,
        });
    }
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

/// What a request held besides the samples Augur takes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Unlabeled {
    /// Samples of series without the component label (or with an empty one).
    pub no_component: u64,
    /// Samples of series with the component label but no `__name__` (no metric name).
    pub no_metric: u64,
    /// Staleness markers ([`STALE_NAN`]): a series' end, not a sample.
    pub stale_markers: u64,
}

/// Where one series' samples go ([`remote_write_samples`]).
#[derive(Clone, Copy)]
enum Goes<'a> {
    /// Taken, as `(component, metric)`.
    Taken(&'a str, &'a str),
    NoMetric,
    NoComponent,
}

/// Walks every sample, naming its component by the label `component_label` and its metric by
/// `__name__`. Returns the samples and what was left out and why.
pub fn remote_write_samples<'a>(
    req: &'a WriteRequest,
    component_label: &str,
) -> (Vec<LabeledSample<'a>>, Unlabeled) {
    let mut out = Vec::new();
    let mut left = Unlabeled::default();
    for ts in &req.timeseries {
        let find = |name: &str| {
            ts.labels
                .iter()
                .find(|l| l.name == name)
                .map(|l| l.value.as_str())
        };
        // Where a series' live samples go: taken, or counted under what its labels lack.
        let goes = match (find(component_label), find("__name__")) {
            (Some(component), Some(metric)) if !component.is_empty() => {
                Goes::Taken(component, metric)
            }
            (Some(component), None) if !component.is_empty() => Goes::NoMetric,
            _ => Goes::NoComponent,
        };
        for s in &ts.samples {
            match goes {
                _ if s.value.to_bits() == STALE_NAN => left.stale_markers += 1,
                Goes::Taken(component, metric) => out.push(LabeledSample {
                    component,
                    metric,
                    ts_ms: s.timestamp,
                    value: s.value,
                }),
                Goes::NoMetric => left.no_metric += 1,
                Goes::NoComponent => left.no_component += 1,
            }
        }
    }
    (out, left)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(name: &str, value: &str) -> Label {
        Label {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn round_trip_and_labels() {
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
        let back = decode_remote_write(&body, 1 << 20, 2).unwrap();
        assert_eq!(back, req);
        let (samples, left) = remote_write_samples(&back, "component");
        assert_eq!(samples.len(), 1);
        assert_eq!(samples[0].component, "carts");
        assert_eq!(
            left,
            Unlabeled {
                no_component: 1,
                ..Unlabeled::default()
            }
        );
        let err = decode_remote_write(&body, 1 << 20, 1).unwrap_err();
        assert!(
            err.to_string()
                .contains("body holds 2 samples, above the limit of 1 a request"),
            "{err}"
        );
        let err = decode_remote_write(b"definitely not snappy", 1 << 20, 2).unwrap_err();
        assert!(err.to_string().contains("snappy"), "{err}");
        // A header that claims 4 GiB is refused before anything that size is allocated.
        let bomb = [0xff, 0xff, 0xff, 0xff, 0x0f, 0x00];
        let err = decode_remote_write(&bomb, 1 << 20, 2).unwrap_err();
        assert!(
            err.to_string()
                .contains("decompresses to 4294967295 bytes, above the limit of 1048576"),
            "{err}"
        );
        let err = decode_remote_write(&body, 10, 2).unwrap_err();
        assert!(matches!(err, RemoteWriteError::TooLarge { max: 10, .. }));
    }

    #[test]
    fn samples_are_counted_off_the_wire_before_anything_is_built() {
        let sample = |t| PromSample {
            value: 2.0,
            timestamp: t,
        };
        let req = WriteRequest {
            timeseries: vec![
                TimeSeries {
                    labels: vec![label("__name__", "a"), label("component", "c")],
                    samples: (0..5).map(sample).collect(),
                },
                TimeSeries {
                    labels: vec![],
                    samples: vec![],
                },
                TimeSeries {
                    labels: vec![label("component", "c")],
                    samples: (0..3).map(sample).collect(),
                },
            ],
        };
        let mut raw = req.encode_to_vec();
        // Fields Augur does not declare (metadata, 3; a series' exemplars, 3) are skipped.
        raw.extend_from_slice(&[0x1a, 0x02, 0x08, 0x01]);
        assert_eq!(
            count_elements(&raw).unwrap(),
            WireCounts {
                series: 3,
                labels: 3,
                samples: 8
            }
        );
        assert!(count_elements(&raw[..raw.len() - 1]).is_err(), "a cut body");

        // Two million empty samples (two bytes each) in one series: a 4 MB body that would
        // decode to tens of megabytes, refused by the count.
        let mut series = [0x12u8, 0x00].repeat(2_000_000);
        let mut bomb = vec![0x0a];
        prost::encoding::encode_varint(series.len() as u64, &mut bomb);
        bomb.append(&mut series);
        let body = snap::raw::Encoder::new().compress_vec(&bomb).unwrap();
        assert!(body.len() < 1 << 20, "{} bytes", body.len());
        let err = decode_remote_write(&body, 32 << 20, 1_000_000).unwrap_err();
        assert!(
            matches!(
                err,
                RemoteWriteError::TooManySamples {
                    count: 2_000_000,
                    max: 1_000_000
                }
            ),
            "{err}"
        );
        // Two million empty series (no sample at all): 96 MB of structures from 4 MB.
        let bomb = [0x0au8, 0x00].repeat(2_000_000);
        let body = snap::raw::Encoder::new().compress_vec(&bomb).unwrap();
        let err = decode_remote_write(&body, 32 << 20, 1_000_000).unwrap_err();
        assert!(
            matches!(
                err,
                RemoteWriteError::TooManyElements {
                    series: 2_000_000,
                    samples: 0,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_series_without_a_metric_name_and_staleness_markers_are_told_apart() {
        let stale = PromSample {
            value: f64::from_bits(STALE_NAN),
            timestamp: 2,
        };
        let nan = PromSample {
            value: f64::NAN,
            timestamp: 3,
        };
        let ok = PromSample {
            value: 1.0,
            timestamp: 1,
        };
        let req = WriteRequest {
            timeseries: vec![
                TimeSeries {
                    labels: vec![label("__name__", "m"), label("component", "c")],
                    samples: vec![ok.clone(), stale.clone(), nan],
                },
                TimeSeries {
                    labels: vec![label("component", "c")],
                    samples: vec![ok.clone(), ok.clone(), stale.clone()],
                },
                TimeSeries {
                    labels: vec![label("__name__", "m"), label("component", "")],
                    samples: vec![ok, stale],
                },
            ],
        };
        let (samples, left) = remote_write_samples(&req, "component");
        // The plain NaN stays a sample: the actors count it `not_finite`.
        assert_eq!(samples.len(), 2);
        assert!(samples[1].value.is_nan());
        assert_eq!(
            left,
            Unlabeled {
                no_component: 1,
                no_metric: 2,
                stale_markers: 3,
            }
        );
    }
}

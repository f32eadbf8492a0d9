//! `augur ctl forecast | at-risk | push`: telemetry in, forecasts out.

use std::path::Path;

use augur_proto::pb;
use augur_proto::pb::telemetry_client::TelemetryClient;
use serde::Serialize;
use tonic::Status;

use crate::ctl::{print, Output};
use augur_cli::Client;

/// A forecast as `--output json` prints it (fields documented in docs/api.md).
#[derive(Serialize)]
pub struct ForecastView {
    component: String,
    at_ms: i64,
    hps: f64,
    anomaly: f64,
    p_fail_5m: f64,
    p_fail_1h: f64,
    p_fail_24h: f64,
    lead_time_s: Option<f64>,
    /// Requests per second now and their change per second.
    load: Option<(f64, f64)>,
    why: Vec<(String, f64)>,
    model_version: String,
    /// The controller node whose predictors made it (0 in `at-risk`, gathered from all).
    node: u64,
}

impl From<pb::Forecast> for ForecastView {
    fn from(f: pb::Forecast) -> Self {
        Self {
            component: f.component,
            at_ms: f.at_ms,
            hps: f.hps,
            anomaly: f.anomaly,
            p_fail_5m: f.p_fail_5m,
            p_fail_1h: f.p_fail_1h,
            p_fail_24h: f.p_fail_24h,
            lead_time_s: f.lead_time_s,
            load: f.load.map(|l| (l.level, l.per_s)),
            why: f.why.into_iter().map(|i| (i.name, i.weight)).collect(),
            model_version: f.model_version,
            node: f.node,
        }
    }
}

fn table(rows: &[ForecastView]) -> String {
    let mut lines = vec![format!(
        "{:<24} {:>6} {:>8} {:>8} {:>8} {:>8} {:>10} {:>10}  WHY",
        "COMPONENT", "HPS", "ANOMALY", "P(5M)", "P(1H)", "P(24H)", "LEAD (S)", "LOAD"
    )];
    for f in rows {
        let why: Vec<String> = f.why.iter().map(|(n, w)| format!("{n} {w:.2}")).collect();
        lines.push(format!(
            "{:<24} {:>6.1} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>10} {:>10}  {}",
            f.component,
            f.hps,
            f.anomaly,
            f.p_fail_5m,
            f.p_fail_1h,
            f.p_fail_24h,
            f.lead_time_s.map_or("-".into(), |l| format!("{l:.0}")),
            f.load
                .map_or("-".into(), |(l, d)| format!("{l:.0}{d:+.1}/s")),
            why.join(", ")
        ));
    }
    lines.join("\n")
}

pub async fn forecast(client: &mut Client, output: Output, id: String) -> Result<(), Status> {
    let req = pb::GetForecastRequest {
        component: id,
        this_node_only: false,
    };
    let f = client
        .call(|c| {
            let req = req.clone();
            async move { TelemetryClient::new(c).get_forecast(req).await }
        })
        .await?
        .into_inner();
    let view = ForecastView::from(f);
    print(output, &view, |v| table(std::slice::from_ref(v)));
    Ok(())
}

pub async fn at_risk(
    client: &mut Client,
    output: Output,
    limit: u32,
    min_risk: f64,
) -> Result<(), Status> {
    let req = pb::ListAtRiskRequest {
        limit,
        min_risk,
        this_node_only: false,
        shards: vec![],
    };
    let r = client
        .call(|c| {
            let req = req.clone();
            async move { TelemetryClient::new(c).list_at_risk(req).await }
        })
        .await?
        .into_inner();
    let rows: Vec<ForecastView> = r.forecasts.into_iter().map(ForecastView::from).collect();
    print(output, &rows, |rows| table(rows));
    Ok(())
}

/// Pushes a CSV of samples (`component,metric,timestamp_ms,value`, with that header) in
/// batches of 10,000 over one stream.
pub async fn push(client: &mut Client, output: Output, file: &Path) -> Result<(), Status> {
    let mut reader = csv::Reader::from_path(file)
        .map_err(|e| Status::invalid_argument(format!("{}: {e}", file.display())))?;
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| Status::invalid_argument(format!("{}: {e}", file.display())))?
        .iter()
        .map(str::to_owned)
        .collect();
    if header != ["component", "metric", "timestamp_ms", "value"] {
        return Err(Status::invalid_argument(format!(
            "{}: header is {header:?}, want component,metric,timestamp_ms,value",
            file.display()
        )));
    }
    let mut samples = Vec::new();
    for (n, rec) in reader.records().enumerate() {
        let line = n + 2;
        let rec = rec.map_err(|e| Status::invalid_argument(format!("{}: {e}", file.display())))?;
        let bad = |what: &str| {
            Status::invalid_argument(format!("{} line {line}: bad {what}", file.display()))
        };
        samples.push(pb::Sample {
            component: rec[0].to_string(),
            metric: rec[1].to_string(),
            timestamp_ms: rec[2].parse().map_err(|_| bad("timestamp_ms"))?,
            // NaN and Inf are sent as they are: the node counts them.
            value: rec[3].parse().map_err(|_| bad("value"))?,
        });
    }
    let batches = batches_of(samples);
    let summary = client
        .call_within(crate::ctl::LONG_CALL, |c| {
            let batches = batches.clone();
            async move {
                TelemetryClient::new(c)
                    .push(futures::stream::iter(batches))
                    .await
            }
        })
        .await?
        .into_inner();
    #[derive(Serialize)]
    struct View {
        batches: u64,
        accepted: u64,
        not_finite: u64,
        unknown_component: u64,
        out_of_order: u64,
        duplicate: u64,
        too_many_metrics: u64,
        lost: u64,
        bad_timestamp: u64,
        bad_metric: u64,
    }
    let v = View {
        batches: summary.batches,
        accepted: summary.accepted,
        not_finite: summary.not_finite,
        unknown_component: summary.unknown_component,
        out_of_order: summary.out_of_order,
        duplicate: summary.duplicate,
        too_many_metrics: summary.too_many_metrics,
        lost: summary.lost,
        bad_timestamp: summary.bad_timestamp,
        bad_metric: summary.bad_metric,
    };
    print(output, &v, |v| {
        format!(
            "{} batches: {} accepted, {} not finite, {} unknown component, {} out of order, {} duplicate, {} over the metric limit, {} lost, {} bad timestamp, {} bad metric name",
            v.batches, v.accepted, v.not_finite, v.unknown_component, v.out_of_order, v.duplicate, v.too_many_metrics, v.lost, v.bad_timestamp, v.bad_metric
        )
    });
    Ok(())
}

#[derive(clap::Subcommand)]
pub enum ModelCommand {
    /// The recorded model and the one the answering node runs.
    Get,
    /// Records a model file (safetensors, as `augur train --out` writes it).
    Set { file: std::path::PathBuf },
}

/// `ctl model get|set`.
pub async fn model(client: &mut Client, output: Output, cmd: ModelCommand) -> Result<(), Status> {
    match cmd {
        ModelCommand::Get => {
            let r = client
                .call(|c| async move {
                    TelemetryClient::new(c)
                        .get_model(pb::GetModelRequest {})
                        .await
                })
                .await?
                .into_inner();
            #[derive(Serialize)]
            struct View {
                recorded_version: String,
                recorded_bytes: u64,
                in_use_version: String,
            }
            let v = View {
                recorded_version: r.recorded_version,
                recorded_bytes: r.recorded_bytes,
                in_use_version: r.in_use_version,
            };
            print(output, &v, |v| {
                let recorded = if v.recorded_version.is_empty() {
                    "none yet".to_string()
                } else {
                    format!("{} ({} bytes)", v.recorded_version, v.recorded_bytes)
                };
                format!(
                    "recorded: {recorded}\nin use on this node: {}",
                    v.in_use_version
                )
            });
        }
        ModelCommand::Set { file } => {
            let bytes = std::fs::read(&file).map_err(|e| {
                Status::invalid_argument(format!("cannot read {}: {e}", file.display()))
            })?;
            // Said here: a larger upload would be cut off by the transport's own limit.
            if bytes.len() > augur_types::MAX_MODEL_BYTES {
                return Err(Status::invalid_argument(format!(
                    "{} is {} bytes; a model is at most {} (4 MiB); nothing was sent",
                    file.display(),
                    bytes.len(),
                    augur_types::MAX_MODEL_BYTES
                )));
            }
            // Up to 4 MiB uploaded, then committed through Raft: an upload's time.
            let r = client
                .call_within(crate::ctl::LONG_CALL, |c| {
                    let req = pb::SetModelRequest {
                        model: bytes.clone(),
                    };
                    async move {
                        TelemetryClient::new(c)
                            .max_encoding_message_size(augur_types::MAX_MODEL_BYTES + 64 * 1024)
                            .set_model(req)
                            .await
                    }
                })
                .await
                .map_err(|s| Status::new(s.code(), format!("{}: {}", file.display(), s.message())))?
                .into_inner();
            #[derive(Serialize)]
            struct View {
                version: String,
                log_index: u64,
            }
            print(
                output,
                &View {
                    version: r.version,
                    log_index: r.log_index,
                },
                |v| {
                    format!(
                        "recorded {} (log index {}); every node switches to it",
                        v.version, v.log_index
                    )
                },
            );
        }
    }
    Ok(())
}

/// Encoded bytes a pushed batch stays under: half the node's default message limit
/// (`limits.max_message_bytes`, 1 MiB), whatever the names' lengths.
const BATCH_BYTES: usize = 512 * 1024;
/// Samples a pushed batch holds at most.
const BATCH_SAMPLES: usize = 10_000;

/// Cuts `samples` into batches of at most [`BATCH_SAMPLES`] samples and [`BATCH_BYTES`]
/// encoded bytes (a node refuses a batch over its message limit).
fn batches_of(samples: Vec<pb::Sample>) -> Vec<pb::SampleBatch> {
    let mut out = Vec::new();
    let (mut batch, mut bytes) = (Vec::new(), 0);
    for s in samples {
        // The sample and its field tag and length prefix.
        let len = prost::Message::encoded_len(&s) + 4;
        if !batch.is_empty() && (batch.len() == BATCH_SAMPLES || bytes + len > BATCH_BYTES) {
            out.push(pb::SampleBatch {
                samples: std::mem::take(&mut batch),
                applied_index: 0,
            });
            bytes = 0;
        }
        bytes += len;
        batch.push(s);
    }
    if !batch.is_empty() {
        out.push(pb::SampleBatch {
            samples: batch,
            applied_index: 0,
        });
    }
    out
}

#[cfg(test)]
mod batch_tests {
    use super::*;

    #[test]
    fn batches_close_at_the_sample_count_or_the_byte_budget() {
        let sample = |name: &str| pb::Sample {
            component: name.into(),
            metric: "m".into(),
            timestamp_ms: 1_700_000_000_000,
            value: 1.0,
        };
        let short: Vec<_> = (0..25_000).map(|_| sample("a")).collect();
        let sizes: Vec<usize> = batches_of(short).iter().map(|b| b.samples.len()).collect();
        assert_eq!(sizes, [10_000, 10_000, 5_000]);
        let long: Vec<_> = (0..10_000).map(|_| sample(&"c".repeat(120))).collect();
        let batches = batches_of(long);
        assert!(batches.len() > 1);
        for b in &batches {
            assert!(
                prost::Message::encoded_len(b) <= BATCH_BYTES,
                "{}",
                b.samples.len()
            );
        }
        assert_eq!(
            batches.iter().map(|b| b.samples.len()).sum::<usize>(),
            10_000
        );
        assert!(batches_of(Vec::new()).is_empty());
    }
}

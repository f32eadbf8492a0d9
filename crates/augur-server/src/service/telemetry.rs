//! `Telemetry`: samples in (a client stream of batches), forecasts out.

use std::sync::Arc;

use augur_predict::predictor::Forecast;
use augur_proto::pb;
use augur_types::{ComponentId, SHARD_COUNT};
use futures::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::predict::{actors_status, record, saturated, summary_to_wire, Predictors};

pub struct TelemetryService {
    node: crate::node::Node,
    predictors: Predictors,
    /// Pushes (gRPC and remote write) being taken at once.
    inflight: Arc<tokio::sync::Semaphore>,
    /// Batches forwarded by peers being taken at once: a budget of their own, so that two
    /// saturated nodes, each holding push permits while it forwards to the other, do not
    /// refuse each other's forwards.
    forwards: Arc<tokio::sync::Semaphore>,
    retry_after_ms: u64,
    /// `limits.max_message_bytes`, for a pushed or forwarded batch (the service's decoding
    /// limit is higher, to leave room for `SetModel`).
    max_batch_bytes: usize,
}

/// Most components one `GetWindows` asks for.
pub const MAX_WINDOWS_PER_REQUEST: usize = 64;

impl TelemetryService {
    /// `OUT_OF_RANGE` for a batch over `limits.max_message_bytes`, saying `what_else`.
    fn within_limit(&self, batch: &pb::SampleBatch, what_else: &str) -> Result<(), Status> {
        let size = prost::Message::encoded_len(batch);
        if size > self.max_batch_bytes {
            return Err(Status::out_of_range(format!(
                "a batch of {size} bytes is over limits.max_message_bytes ({}); {what_else}",
                self.max_batch_bytes
            )));
        }
        Ok(())
    }

    /// `max_forwards`: forwarded batches taken at once (`telemetry.max_inflight_batches`).
    pub fn new(
        node: crate::node::Node,
        predictors: Predictors,
        inflight: Arc<tokio::sync::Semaphore>,
        max_forwards: usize,
        retry_after_ms: u64,
        max_batch_bytes: usize,
    ) -> Self {
        Self {
            node,
            predictors,
            inflight,
            forwards: Arc::new(tokio::sync::Semaphore::new(max_forwards)),
            retry_after_ms,
            max_batch_bytes,
        }
    }
}

/// The wire form of a forecast made by `node`'s predictors (0: gathered from the fleet).
pub fn forecast_to_wire(component: &str, f: &Forecast, node: u64) -> pb::Forecast {
    pb::Forecast {
        node,
        component: component.to_string(),
        at_ms: f.at_ms,
        anomaly: f.anomaly,
        p_fail_5m: f.p_fail[0],
        p_fail_1h: f.p_fail[1],
        p_fail_24h: f.p_fail[2],
        lead_time_s: f.lead_time_s,
        hps: f.hps,
        why: f
            .why
            .iter()
            .map(|(name, weight)| pb::Indicator {
                name: name.clone(),
                weight: *weight,
            })
            .collect(),
        model_version: f.model_version.to_string(),
        samples: f.samples,
        load: f.load.map(|l| pb::Load {
            level: l.level,
            per_s: l.per_s,
        }),
    }
}

#[tonic::async_trait]
impl pb::telemetry_server::Telemetry for TelemetryService {
    async fn push(
        &self,
        req: Request<Streaming<pb::SampleBatch>>,
    ) -> Result<Response<pb::PushSummary>, Status> {
        let mut stream = req.into_inner();
        let mut total = augur_actors::IngestSummary::default();
        let mut batches = 0u64;
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            self.within_limit(&batch, &format!("{batches} batches taken before this one"))?;
            let Ok(permit) = self.inflight.clone().try_acquire_owned() else {
                return Err(saturated(
                    format!("node saturated; {batches} batches taken before this one; retry later"),
                    self.retry_after_ms,
                ));
            };
            let (samples, refused) = self.predictors.door().batch(batch.samples);
            let summary = self
                .predictors
                .take_recorded(samples, refused, permit, "grpc")
                .await?;
            total.merge(&summary);
            batches += 1;
        }
        Ok(Response::new(pb::PushSummary {
            batches,
            ..summary_to_wire(&total)
        }))
    }

    async fn forward(
        &self,
        req: Request<pb::SampleBatch>,
    ) -> Result<Response<pb::PushSummary>, Status> {
        let Ok(permit) = self.forwards.clone().try_acquire_owned() else {
            return Err(saturated(
                "node saturated; retry the forward later",
                self.retry_after_ms,
            ));
        };
        let batch = req.into_inner();
        self.within_limit(&batch, "the sender cuts its forwards to its own limit")?;
        let predictors = self.predictors.clone();
        let summary = Predictors::holding(permit, async move {
            predictors
                .catch_up_to(batch.applied_index, &batch.samples)
                .await;
            let (samples, refused) = predictors.door().batch(batch.samples);
            let mut summary = predictors.ingest(samples).await.map_err(actors_status)?;
            summary.merge(&refused);
            record(&summary, "forward");
            Ok(summary)
        })
        .await?;
        Ok(Response::new(pb::PushSummary {
            batches: 1,
            ..summary_to_wire(&summary)
        }))
    }

    async fn get_windows(
        &self,
        req: Request<pb::GetWindowsRequest>,
    ) -> Result<Response<pb::SampleBatch>, Status> {
        let ids = req.into_inner().components;
        if ids.len() > MAX_WINDOWS_PER_REQUEST {
            return Err(Status::invalid_argument(format!(
                "{} components; at most {MAX_WINDOWS_PER_REQUEST} a request",
                ids.len()
            )));
        }
        let ids = ids
            .into_iter()
            .map(|id| {
                ComponentId::new(id)
                    .map_err(|e| Status::invalid_argument(format!("component: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let samples = self
            .predictors
            .system()
            .windows(ids)
            .await
            .map_err(actors_status)?
            .into_iter()
            .map(crate::predict::sample_to_wire)
            .collect();
        Ok(Response::new(pb::SampleBatch {
            samples,
            applied_index: 0,
        }))
    }

    async fn get_forecast(
        &self,
        req: Request<pb::GetForecastRequest>,
    ) -> Result<Response<pb::Forecast>, Status> {
        let req = req.into_inner();
        let id = req.component;
        let cid = ComponentId::new(id.clone())
            .map_err(|e| Status::invalid_argument(format!("component: {e}")))?;
        let found = if req.this_node_only {
            self.predictors
                .system()
                .forecast(&cid)
                .await
                .map_err(actors_status)?
                .map(|f| (self.predictors.me(), f))
        } else {
            self.predictors.forecast(&cid).await?
        };
        match found {
            Some((node, f)) => Ok(Response::new(forecast_to_wire(&id, &f, node))),
            None => Err(Status::not_found(format!(
                "no forecast for {id} (unknown, or no samples scored yet)"
            ))),
        }
    }

    async fn list_at_risk(
        &self,
        req: Request<pb::ListAtRiskRequest>,
    ) -> Result<Response<pb::ListAtRiskResponse>, Status> {
        let req = req.into_inner();
        if !(0.0..=1.0).contains(&req.min_risk) {
            return Err(Status::invalid_argument(format!(
                "min_risk {} is not in [0, 1]",
                req.min_risk
            )));
        }
        let limit = if req.limit == 0 {
            20
        } else {
            req.limit as usize
        };
        let node = if req.this_node_only {
            self.predictors.me()
        } else {
            0
        };
        if let Some(bad) = req.shards.iter().find(|&&s| s as usize >= SHARD_COUNT) {
            return Err(Status::invalid_argument(format!(
                "shard {bad} does not exist; shards are 0..{SHARD_COUNT}"
            )));
        }
        if !req.shards.is_empty() && !req.this_node_only {
            return Err(Status::invalid_argument(
                "shards narrows this node's own forecasts: it needs this_node_only",
            ));
        }
        let rows = if req.this_node_only {
            let shards: Vec<usize> = req.shards.iter().map(|&s| s as usize).collect();
            self.predictors
                .own_forecasts(&shards, limit, req.min_risk)
                .await?
        } else {
            self.predictors.fleet_forecasts(limit, req.min_risk).await?
        };
        Ok(Response::new(pb::ListAtRiskResponse {
            forecasts: rows
                .iter()
                .map(|(id, f)| forecast_to_wire(id.as_str(), f, node))
                .collect(),
        }))
    }

    async fn set_model(
        &self,
        req: Request<pb::SetModelRequest>,
    ) -> Result<Response<pb::SetModelResponse>, Status> {
        let bytes = req.into_inner().model;
        if bytes.len() > augur_types::MAX_MODEL_BYTES {
            return Err(Status::invalid_argument(format!(
                "the model is {} bytes; at most {} (4 MiB)",
                bytes.len(),
                augur_types::MAX_MODEL_BYTES
            )));
        }
        let check = bytes.clone();
        let model = tokio::task::spawn_blocking(move || crate::predict::node_model(&check))
            .await
            .map_err(|e| Status::internal(format!("model check failed: {e}")))?
            .map_err(|e| {
                Status::invalid_argument(format!("not a model the node can serve: {e}"))
            })?;
        let version = model.meta.version.clone();
        let record = augur_types::ModelRecord {
            version: version.clone(),
            bytes,
        };
        let (log_index, _) = self
            .node
            .write(augur_types::Command::SetModel(record))
            .await?;
        Ok(Response::new(pb::SetModelResponse { version, log_index }))
    }

    async fn get_model(
        &self,
        _: Request<pb::GetModelRequest>,
    ) -> Result<Response<pb::ModelInfo>, Status> {
        let (recorded_version, recorded_bytes) = self.node.state.read(|s| {
            s.model.as_ref().map_or((String::new(), 0), |m| {
                (m.version.clone(), m.bytes.len() as u64)
            })
        });
        Ok(Response::new(pb::ModelInfo {
            recorded_version,
            recorded_bytes,
            in_use_version: self.predictors.system().model_version().to_owned(),
        }))
    }
}

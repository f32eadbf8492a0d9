//! `/metrics` (Prometheus text, via the `metrics` crate) and what feeds it: Raft's state and
//! the latency of every RPC, measured by a tower layer rather than in handlers.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use openraft::{RaftMetrics, ServerState};
use tokio::sync::watch;
use tonic::codegen::http;
use tower::{Layer, Service};

/// Serves `/metrics` on `addr` for this process.
pub fn install(addr: SocketAddr) -> anyhow::Result<()> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets(&[
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
        ])?
        .install()
        .map_err(|e| anyhow::anyhow!("cannot serve metrics on {addr}: {e}"))
}

/// Mirrors Raft's metrics into gauges until Raft stops.
pub async fn watch_raft(mut rx: watch::Receiver<RaftMetrics<u64, openraft::BasicNode>>) {
    let mut leader = None;
    loop {
        {
            let m = rx.borrow_and_update();
            metrics::gauge!("augur_raft_term").set(m.current_term as f64);
            let last_log = m.last_log_index.unwrap_or(0);
            let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
            metrics::gauge!("augur_raft_last_log_index").set(last_log as f64);
            metrics::gauge!("augur_raft_last_applied").set(applied as f64);
            metrics::gauge!("augur_raft_apply_lag").set(last_log.saturating_sub(applied) as f64);
            metrics::gauge!("augur_raft_is_leader").set(if m.state == ServerState::Leader {
                1.0
            } else {
                0.0
            });
            // A change to a known leader other than the last one; the leaderless moment of
            // an election in between is not a change of its own.
            if m.current_leader.is_some() && m.current_leader != leader {
                leader = m.current_leader;
                metrics::counter!("augur_raft_leader_changes_total").increment(1);
            }
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Records `augur_rpc_duration_seconds{method}` for every request.
#[derive(Clone, Copy, Debug, Default)]
pub struct RpcMetricsLayer;

impl<S> Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics { inner }
    }
}

#[derive(Clone, Debug)]
pub struct RpcMetrics<S> {
    inner: S,
}

impl<S, B> Service<http::Request<B>> for RpcMetrics<S>
where
    S: Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = req.uri().path().to_string();
        let start = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await;
            metrics::histogram!("augur_rpc_duration_seconds", "method" => method)
                .record(start.elapsed().as_secs_f64());
            res
        })
    }
}

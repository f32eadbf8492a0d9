//! Shared helpers of the integration tests: specs for `augur-sample` processes, traffic
//! through a frontend counted by the `x-instance` header, and bounded polling.

#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use augur_agent::InstanceSpec;
use tokio::time::Instant;

/// A spec running the `augur-sample` binary built with these tests. Each test passes its own
/// `slot` so tests running in parallel pick ports from disjoint ranges.
pub fn sample_spec(slot: u16) -> InstanceSpec {
    let base = 21000 + slot * 50;
    InstanceSpec {
        port_range: (base, base + 49),
        start_timeout: Duration::from_secs(10),
        stop_grace: Duration::from_secs(5),
        ..InstanceSpec::new(
            [
                env!("CARGO_BIN_EXE_augur-sample"),
                "--port",
                "{port}",
                "--name",
                "{name}",
                "--seed",
                "7",
            ]
            .map(String::from)
            .to_vec(),
        )
    }
}

/// Sends `n` sequential `GET /` to `addr` and counts the answers by `x-instance`. Every
/// answer must be a 200.
pub async fn count_by_instance(addr: SocketAddr, n: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for i in 0..n {
        let response = augur_agent::get(addr, "/")
            .await
            .unwrap_or_else(|e| panic!("request {i} through {addr}: {e}"));
        assert_eq!(response.status, 200, "request {i}: {}", response.text());
        let instance = response.header("x-instance").unwrap_or("?").to_owned();
        *counts.entry(instance).or_insert(0) += 1;
    }
    counts
}

/// Polls `probe` every 20 ms until it yields `Some`, failing the test after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

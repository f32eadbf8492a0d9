//! A cluster client that follows not-leader redirects and fails over between endpoints.

use std::future::Future;
use std::time::Duration;

use crate::leader_from_status;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

/// How long one call keeps following redirects and trying endpoints (an election takes
/// a few hundred milliseconds).
const CALL_DEADLINE: Duration = Duration::from_secs(15);

pub struct Client {
    endpoints: Vec<String>,
    current: usize,
    channel: Option<Channel>,
}

impl Client {
    /// `endpoints` are HOST:PORT strings; the first is tried first.
    pub fn new(endpoints: Vec<String>) -> Self {
        Self {
            endpoints,
            current: 0,
            channel: None,
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoints[self.current]
    }

    async fn channel(&mut self) -> Result<Channel, Status> {
        if let Some(c) = &self.channel {
            return Ok(c.clone());
        }
        let uri = format!("http://{}", self.endpoint());
        let channel = Endpoint::from_shared(uri)
            .map_err(|e| {
                Status::invalid_argument(format!("bad endpoint {}: {e}", self.endpoint()))
            })?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| Status::unavailable(format!("cannot reach {}: {e}", self.endpoint())))?;
        self.channel = Some(channel.clone());
        Ok(channel)
    }

    fn go_to(&mut self, addr: String) {
        match self.endpoints.iter().position(|e| *e == addr) {
            Some(i) => self.current = i,
            None => {
                self.endpoints.push(addr);
                self.current = self.endpoints.len() - 1;
            }
        }
        self.channel = None;
    }

    /// Moves on to the next known endpoint.
    pub fn next_endpoint(&mut self) {
        self.current = (self.current + 1) % self.endpoints.len();
        self.channel = None;
    }

    /// Runs `call`, following a not-leader answer to the leader it names, and moving to the
    /// next endpoint when one cannot be reached.
    pub async fn call<T, F, Fut>(&mut self, mut call: F) -> Result<T, Status>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let mut last = None;
        let deadline = tokio::time::Instant::now() + CALL_DEADLINE;
        while tokio::time::Instant::now() < deadline {
            let channel = match self.channel().await {
                Ok(c) => c,
                Err(e) => {
                    last = Some(e);
                    self.next_endpoint();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            match call(channel).await {
                Ok(v) => return Ok(v),
                Err(s) => {
                    if let Some(leader) = leader_from_status(&s) {
                        self.go_to(leader);
                    } else if s.code() == Code::Unavailable {
                        // Unreachable, or no leader known yet (an election is running).
                        self.next_endpoint();
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    } else {
                        return Err(s);
                    }
                    last = Some(s);
                }
            }
        }
        Err(last.unwrap_or_else(|| Status::unavailable("no endpoint answered")))
    }
}

/// A suffix that differs between calls in one process (for generated request ids).
pub fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{nanos}-{}", N.fetch_add(1, Ordering::Relaxed))
}

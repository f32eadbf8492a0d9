//! A cluster client that follows not-leader redirects and fails over between endpoints.

use std::future::Future;
use std::time::Duration;

use crate::leader_from_status;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

/// How long one call keeps following redirects and trying endpoints (an election takes
/// a few hundred milliseconds).
const CALL_DEADLINE: Duration = Duration::from_secs(15);
/// How long one try on one endpoint may take before the next endpoint is tried: a node that
/// accepts connections but does not answer (stopped, wedged) must not hold a call for ever.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

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
            // A peer gone silent under a long stream (`WatchActions`) is noticed.
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
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
    /// next endpoint when one cannot be reached or does not answer within [`ATTEMPT_TIMEOUT`].
    pub async fn call<T, F, Fut>(&mut self, call: F) -> Result<T, Status>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        self.call_within(ATTEMPT_TIMEOUT, call).await
    }

    /// [`Client::call`] for a call that may take up to `attempt` on one endpoint (an upload, a
    /// learner catching up), and at least until the whole call's deadline.
    pub async fn call_within<T, F, Fut>(
        &mut self,
        attempt: Duration,
        mut call: F,
    ) -> Result<T, Status>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let mut last = None;
        let deadline = tokio::time::Instant::now() + CALL_DEADLINE.max(attempt);
        while tokio::time::Instant::now() < deadline {
            let channel = match self.channel().await {
                Ok(c) => c,
                // Not an address at all: no later try can do better.
                Err(e) if e.code() == Code::InvalidArgument => return Err(e),
                Err(e) => {
                    last = Some(e);
                    self.next_endpoint();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Ok(answer) = tokio::time::timeout(attempt.min(left), call(channel)).await else {
                last = Some(Status::unavailable(format!(
                    "{} did not answer within {} ms",
                    self.endpoint(),
                    attempt.min(left).as_millis()
                )));
                self.next_endpoint();
                continue;
            };
            match answer {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A listener that accepts connections and never answers on them: a wedged node.
    async fn silent_endpoint() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        addr
    }

    /// A try that gets no answer moves on to the next endpoint within the try's limit,
    /// where it used to wait for ever.
    #[tokio::test]
    async fn a_silent_endpoint_is_left_after_the_attempt_timeout() {
        let (wedged, good) = (silent_endpoint().await, silent_endpoint().await);
        let mut client = Client::new(vec![wedged.clone(), good.clone()]);
        let mut tries = Vec::new();
        // Bounded, so a regression fails instead of hanging.
        let call = client.call_within(Duration::from_millis(200), |_| {
            tries.push(tries.len());
            let first = tries.len() == 1;
            async move {
                if first {
                    std::future::pending::<()>().await;
                }
                Ok::<_, Status>(42)
            }
        });
        let answer = tokio::time::timeout(Duration::from_secs(30), call)
            .await
            .expect("the call moved on")
            .unwrap();
        assert_eq!(answer, 42);
        assert_eq!(tries.len(), 2, "one try each");
        assert_eq!(client.endpoint(), good);
    }
}

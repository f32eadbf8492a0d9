//! A minimal HTTP/1 client for talking to service instances (and to HAProxy's frontend).
//!
//! One TCP connection per request, `connection: close`, whole body collected, with a
//! deadline over the entire exchange. That is deliberately simple: the agent probes health,
//! copies state snapshots and measures latency; it never needs pooling, and a fresh
//! connection per request makes every request a separate load-balancing decision in
//! HAProxy, which is what the traffic-shift tests count.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{HeaderMap, CONNECTION, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Deadline used by [`get`], [`post`] and [`put`].
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// A complete HTTP response and how long it took, connect included.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code, e.g. 200.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
    /// Wall time from connect to the last body byte.
    pub latency: Duration,
}

impl HttpResponse {
    /// The value of header `name`, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as text (invalid UTF-8 is replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The TCP connection could not be opened (refused, unreachable).
    #[error("connect to {addr} failed: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The exchange did not finish before the deadline.
    #[error("{method} http://{addr}{path} timed out after {timeout:?}")]
    Timeout {
        method: Method,
        addr: SocketAddr,
        path: String,
        timeout: Duration,
    },
    /// The connection broke or the peer spoke bad HTTP (e.g. it crashed mid-request).
    #[error("{method} http://{addr}{path} failed: {source}")]
    Protocol {
        method: Method,
        addr: SocketAddr,
        path: String,
        #[source]
        source: hyper::Error,
    },
    /// The request itself could not be built (e.g. a path with spaces).
    #[error("invalid request {method} {path}: {source}")]
    InvalidRequest {
        method: Method,
        path: String,
        #[source]
        source: hyper::http::Error,
    },
}

/// `GET path` on `addr` with [`DEFAULT_HTTP_TIMEOUT`].
pub async fn get(addr: SocketAddr, path: &str) -> Result<HttpResponse, HttpError> {
    request(addr, Method::GET, path, Bytes::new(), DEFAULT_HTTP_TIMEOUT).await
}

/// `POST path` on `addr` with `body` and [`DEFAULT_HTTP_TIMEOUT`].
pub async fn post(
    addr: SocketAddr,
    path: &str,
    body: impl Into<Bytes>,
) -> Result<HttpResponse, HttpError> {
    request(addr, Method::POST, path, body.into(), DEFAULT_HTTP_TIMEOUT).await
}

/// `PUT path` on `addr` with `body` and [`DEFAULT_HTTP_TIMEOUT`].
pub async fn put(
    addr: SocketAddr,
    path: &str,
    body: impl Into<Bytes>,
) -> Result<HttpResponse, HttpError> {
    request(addr, Method::PUT, path, body.into(), DEFAULT_HTTP_TIMEOUT).await
}

/// Sends one request on a fresh connection and collects the whole response within `timeout`.
pub async fn request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Bytes,
    timeout: Duration,
) -> Result<HttpResponse, HttpError> {
    let req = Request::builder()
        .method(method.clone())
        .uri(path)
        .header(HOST, addr.to_string())
        .header(CONNECTION, "close")
        .body(Full::new(body))
        .map_err(|source| HttpError::InvalidRequest {
            method: method.clone(),
            path: path.to_owned(),
            source,
        })?;
    let started = Instant::now();
    let exchange = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|source| HttpError::Connect { addr, source })?;
        let protocol = |source| HttpError::Protocol {
            method: method.clone(),
            addr,
            path: path.to_owned(),
            source,
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(protocol)?;
        // The connection task ends when the response is read and the sender dropped.
        let conn = tokio::spawn(conn);
        let response = sender.send_request(req).await.map_err(protocol)?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(protocol)?.to_bytes();
        drop(sender);
        conn.abort();
        Ok(HttpResponse {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
            latency: started.elapsed(),
        })
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(HttpError::Timeout {
            method,
            addr,
            path: path.to_owned(),
            timeout,
        }),
    }
}

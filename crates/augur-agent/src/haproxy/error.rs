//! Errors of the HAProxy client and process wrapper.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong between the agent and HAProxy.
///
/// [`HaproxyError::is_retriable`] separates transient transport trouble (the socket is
/// missing during a reload, a timeout) from answers that will not change on retry.
#[derive(Debug, thiserror::Error)]
pub enum HaproxyError {
    /// A backend or server name HAProxy would misparse; nothing was sent.
    #[error("invalid {what} name {name:?}: {reason}")]
    InvalidName {
        what: &'static str,
        name: String,
        reason: &'static str,
    },
    /// A weight outside HAProxy's 0..=256; nothing was sent.
    #[error("invalid weight {weight} for {backend}/{server}: must be within 0..=256")]
    InvalidWeight {
        backend: String,
        server: String,
        weight: u16,
    },
    /// The admin socket could not be reached or the exchange broke.
    #[error("haproxy socket {path}: `{command}` failed: {source}")]
    Io {
        path: PathBuf,
        command: String,
        #[source]
        source: std::io::Error,
    },
    /// HAProxy did not answer (to EOF) within the deadline.
    #[error("haproxy socket {path}: no answer to `{command}` within {timeout:?}")]
    Timeout {
        path: PathBuf,
        command: String,
        timeout: Duration,
    },
    /// HAProxy answered with something other than success, e.g. "No such server.".
    #[error("haproxy rejected `{command}`: {message}")]
    Rejected { command: String, message: String },
    /// HAProxy answered, but not in the shape this client understands.
    #[error("cannot parse haproxy answer to `{command}`: {reason}")]
    Parse { command: String, reason: String },
    /// No haproxy binary on this host.
    #[error(
        "haproxy binary not found (looked at $HAPROXY_BIN, $PATH and /usr/sbin/haproxy): \
         install it, e.g. `apt-get install haproxy`"
    )]
    BinaryNotFound,
    /// A [`super::HaproxyConfig`] with bad names or weights; every problem is listed.
    #[error("invalid haproxy config: {}", join(.0))]
    InvalidConfig(Vec<HaproxyError>),
    /// The config or log file of a [`super::HaproxyProcess`] could not be written.
    #[error("haproxy files in {dir}: {source}")]
    Files {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A [`super::HaproxyProcess`] exited or never answered on its socket.
    #[error("haproxy did not start: {reason}; log {log}:\n{log_tail}")]
    Start {
        reason: String,
        log: PathBuf,
        log_tail: String,
    },
}

impl HaproxyError {
    /// Whether retrying the same command later may succeed (transport trouble, e.g. during a
    /// reload), as opposed to a rejection or a bad argument.
    pub fn is_retriable(&self) -> bool {
        matches!(self, Self::Io { .. } | Self::Timeout { .. })
    }
}

fn join(errors: &[HaproxyError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

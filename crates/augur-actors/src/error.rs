//! The crate's error type.

use crate::config::ConfigError;

/// What can go wrong when talking to the actors.
///
/// A caller maps each variant to one outcome (for gRPC: `Config` and `BatchTooLarge` are
/// `INVALID_ARGUMENT`, `Stopped` is `UNAVAILABLE`, `Model` is `INTERNAL`).
/// [`ActorsError::is_retriable`] tells a transient failure from a permanent one.
#[derive(Debug, thiserror::Error)]
pub enum ActorsError {
    /// The settings were refused; every problem is listed.
    #[error("invalid actors config: {}", join(.0))]
    Config(Vec<ConfigError>),
    /// The batch is larger than `max_batch`; nothing of it was taken.
    #[error("batch of {len} samples is over the limit of {max}")]
    BatchTooLarge {
        /// Samples in the refused batch.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// The actor system has stopped (shut down, or its thread died); fatal for this handle.
    #[error("actor system stopped")]
    Stopped,
    /// The batched model step failed; the components stay due and the next tick retries.
    #[error("model step failed: {message}")]
    Model {
        /// The model's error, as text.
        message: String,
    },
    /// The actors' thread could not be started.
    #[error("could not start the actor thread: {0}")]
    Spawn(#[source] std::io::Error),
}

impl ActorsError {
    /// Whether trying again later can succeed.
    pub fn is_retriable(&self) -> bool {
        matches!(self, Self::Model { .. })
    }
}

impl From<actix::MailboxError> for ActorsError {
    fn from(_: actix::MailboxError) -> Self {
        Self::Stopped
    }
}

fn join(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

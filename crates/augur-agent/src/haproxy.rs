//! HAProxy, driven through its runtime API (the admin unix socket).
//!
//! - [`HaproxyClient`]: one connection per command (`cmd\n`, read to EOF), typed methods for
//!   the commands the agent needs, and every answer that is not the documented success
//!   answer turned into [`HaproxyError::Rejected`] carrying the command and HAProxy's words.
//! - [`Desired`]: what the agent wants a backend to look like. HAProxy 2.6 drops servers
//!   added at runtime (and runtime weights and states) on reload; `reconcile` re-applies them.
//! - [`HaproxyProcess`]: a real HAProxy started from a small [`HaproxyConfig`], for tests,
//!   the demo and benches.
//!
//! Verified against HAProxy 2.6 (Debian): `add server` needs a dynamic balance algorithm
//! (`roundrobin`), new servers start in maintenance, `del server` needs maintenance first,
//! and dynamic servers ignore `default-server`, so health-check settings are spelled out on
//! every `add server`.

mod client;
mod config;
mod desired;
mod error;
mod parse;
mod process;

pub use client::{HaproxyClient, ServerOptions};
pub use config::{HaproxyConfig, HealthCheck, StaticServer};
pub use desired::{Action, Desired, DesiredServer};
pub use error::HaproxyError;
pub use parse::{Info, OpState, ServerStat, ServerState, StatKind, State, Weight};
pub use process::{find_haproxy, HaproxyProcess};

//! The node agent's hands on a real host: it steers traffic through HAProxy's runtime API,
//! starts and stops service instances as child processes, and ships the sample service
//! (`augur-sample`) whose faults (degrade-then-crash, sudden crash, fixed slowness) and
//! state snapshots let tests and the demo exercise predictive failover end to end.
//!
//! Hard rule: every change made to HAProxy at runtime is also recorded in a [`Desired`]
//! state, because HAProxy forgets runtime changes on reload; [`Desired::reconcile`] puts
//! them back. Nothing here blocks an executor thread, and nothing is sent to HAProxy before
//! the names in it are validated.

#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod agent;
mod haproxy;
mod http;
pub mod loadgen;
mod ports;
mod process;
mod sample;
pub mod scenario;
pub mod side_by_side;

pub use agent::{Agent, AgentConfig};
pub use haproxy::{
    find_haproxy, Action, Desired, DesiredServer, HaproxyClient, HaproxyConfig, HaproxyError,
    HaproxyProcess, HealthCheck, Info, OpState, ServerOptions, ServerStat, ServerState, StatKind,
    State, StaticServer, Weight,
};
pub use http::{get, post, put, request, HttpError, HttpResponse, DEFAULT_HTTP_TIMEOUT};
pub use ports::reserve_local_ports;
pub use process::{free_local_port, Instance, InstanceSpec, Instances, ProcessError};
pub use sample::{
    parse_metrics, serve, SampleConfig, SampleServer, Snapshot, DEGRADE_MAX_ERROR_RATE,
    DEGRADE_MAX_EXTRA_LATENCY,
};

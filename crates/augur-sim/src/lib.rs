//! A simulated fleet and the experiment `augur demo` runs on it: the same seeded fault
//! schedule played twice, once with reactive failover only (health checks, as HAProxy's
//! `check inter 1s fall 3` does) and once with Augur in front (the node's own predictor code
//! on every instance's telemetry, the planner, shadows, gated traffic shifts and rollbacks),
//! counting failed requests, lead times and false shifts.
//!
//! Time is simulated (a tick is `tick_s` seconds), randomness is seeded: the same seed gives
//! the same report, byte for byte.

mod fleet;
mod report;
mod run;

pub use fleet::{Fault, FaultKind, Fleet, FleetConfig};
pub use report::{Event, Report, RequestCounts};
pub use run::{run, Mode, SimConfig, SimError};

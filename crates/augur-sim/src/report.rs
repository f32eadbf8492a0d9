//! What a run tells: requests, failures by cause, predictions, lead times, shifts.

use serde::Serialize;

/// Requests that failed, by what caused them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RequestCounts {
    pub total: u64,
    pub failed: u64,
    /// The fleet's background error rate (0.1 %), in both runs alike.
    pub failed_background: u64,
    pub failed_degrade_then_crash: u64,
    pub failed_sudden: u64,
    pub failed_false_alarm: u64,
}

/// One run (reactive or predictive) over the fault schedule.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunReport {
    pub mode: String,
    pub requests: RequestCounts,
    /// Degrade-then-crash faults whose traffic was off the instance before it crashed.
    pub predicted: u32,
    pub missed: u32,
    /// Crash time minus decision time, s, of each predicted fault.
    pub lead_times_s: Vec<f64>,
    /// Failovers started (shadows requested).
    pub shifts_started: u32,
    pub promotions: u32,
    pub rollbacks: u32,
    /// Failovers cancelled before any traffic moved: the risk subsided.
    pub cancelled: u32,
    /// Shifts (traffic moved) off an instance that was not going to fail (healthy, or a
    /// false alarm).
    pub false_shifts: u32,
    pub healthy_component_hours: f64,
    pub false_shifts_per_100_healthy_hours: f64,
    /// Decisions the policy only recommended.
    pub recommendations: u32,
    /// Decisions with no host to put a shadow on.
    pub no_room: u32,
}

/// The closing report of `augur demo`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub seed: u64,
    pub hours: f64,
    pub components: usize,
    pub hosts: usize,
    pub faults_degrade_then_crash: usize,
    pub faults_sudden: usize,
    pub false_alarms: usize,
    pub reactive: RunReport,
    pub predictive: RunReport,
    /// 1 − predictive/reactive failed requests caused by degrade-then-crash faults.
    pub reduction_degrade_then_crash: f64,
    /// The same for sudden faults (nothing to predict: about 0 expected).
    pub reduction_sudden: f64,
    /// The same for every fault-caused failure.
    pub reduction_all_faults: f64,
}

/// Something that happened, for the live view.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub t_s: f64,
    pub mode: String,
    pub what: String,
}

//! The side-by-side runner, short: a reactive run against real HAProxy and sample
//! processes, with a mode hook that adds a server at runtime as Augur's agent would.

mod common;

use std::path::Path;

use augur_agent::scenario::{
    self, BoxError, BoxFuture, Fault, FaultKind, Mode, ModeHook, RunEnv, ScenarioConfig,
    ScenarioError, Schedule,
};
use augur_agent::{InstanceSpec, Instances, ServerOptions};
use common::sample_spec;

const RATE: u32 = 50;
const SECONDS: f64 = 12.0;
const SUDDEN_AT: f64 = 2.0;

/// Three instances, 12 s: `s1` crashes at 2 s, `s2` degrades from 4 s (ramp 3 s) and
/// crashes at 9 s, `s3` is left alone.
fn short_schedule() -> Schedule {
    Schedule {
        instances: vec!["s1".into(), "s2".into(), "s3".into()],
        duration_s: SECONDS,
        faults: vec![
            Fault {
                at_s: SUDDEN_AT,
                instance: "s1".into(),
                kind: FaultKind::Sudden,
            },
            Fault {
                at_s: 4.0,
                instance: "s2".into(),
                kind: FaultKind::DegradeThenCrash {
                    ramp_s: 3.0,
                    crash_after_s: 5.0,
                },
            },
        ],
    }
}

fn config(slot: u16, dir: &Path) -> ScenarioConfig {
    let mut config = ScenarioConfig::new(
        short_schedule(),
        env!("CARGO_BIN_EXE_augur-sample").into(),
        dir.to_owned(),
    );
    config.rate = RATE;
    config.port_range = sample_spec(slot).port_range;
    config
}

fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Stands in for Augur's agent: once started, it checks what the runner tells it, starts one
/// more instance and adds it to the backend at runtime; at the end it reports what it saw.
struct AddOneServer {
    spec: InstanceSpec,
    instances: Option<Instances>,
    seen: Vec<String>,
    extra_pid: Option<u32>,
}

impl ModeHook for AddOneServer {
    fn on_started<'a>(&'a mut self, env: &'a RunEnv) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(async move {
            assert!(env.haproxy_socket.exists(), "{:?}", env.haproxy_socket);
            let stats = env.haproxy.show_stat().await?;
            self.seen = env
                .instances
                .iter()
                .filter(|i| stats.iter().any(|r| r.is_server() && r.svname == i.name))
                .map(|i| format!("{}:{}", i.name, i.port))
                .collect();
            let mut instances = Instances::new(self.spec.clone());
            let extra = instances.start("extra").await?;
            env.haproxy
                .add_ready_server(
                    &env.backend,
                    "extra",
                    extra.addr(),
                    &ServerOptions::weight(10),
                )
                .await?;
            self.extra_pid = Some(extra.pid);
            self.instances = Some(instances);
            Ok(())
        })
    }

    fn on_finished(&mut self) -> BoxFuture<'_, serde_json::Value> {
        Box::pin(async move {
            if let Some(mut instances) = self.instances.take() {
                instances.stop_all().await.unwrap();
            }
            serde_json::json!({ "seen": self.seen, "extra_pid": self.extra_pid })
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t40_reactive_run_counts_failures_and_tolerates_runtime_servers() {
    let dir = tempfile::tempdir().unwrap();
    let hook = AddOneServer {
        spec: sample_spec(41),
        instances: None,
        seen: Vec::new(),
        extra_pid: None,
    };
    let report = scenario::run(
        config(40, dir.path()),
        Mode::with_hook("test-hook", Box::new(hook)),
    )
    .await
    .unwrap();
    let load = &report.load;
    let summary = serde_json::to_string_pretty(&report).unwrap();

    // The open-loop schedule sends exactly rate × duration requests, and each one ended.
    let expected = u64::from(RATE) * SECONDS as u64;
    assert_eq!(load.sent, expected, "{summary}");
    assert_eq!(load.ok + load.failed, load.sent, "{summary}");
    assert_eq!(load.per_second.len(), SECONDS as usize);

    // Nothing fails before the first fault; the sudden crash costs requests, because HAProxy
    // needs `fall 3` checks `inter 1s` apart to take the server out.
    let before: u64 = load.per_second[..SUDDEN_AT as usize]
        .iter()
        .map(|s| s.failed)
        .sum();
    assert_eq!(before, 0, "{summary}");
    assert!(report.failed > 0, "{summary}");
    let sudden = &report.faults[0];
    assert!(sudden.failed_in_window > 0, "{summary}");
    assert!(sudden.failed_attributed > 0, "{summary}");
    let attributed: u64 = report.faults.iter().map(|f| f.failed_attributed).sum();
    assert_eq!(
        attributed + report.failed_unattributed,
        report.failed,
        "{summary}"
    );
    assert_eq!(sudden.window_s, (2.0, 12.0));
    assert_eq!(report.failed, load.failed);
    assert!(
        report.p99_all_ms > 0.0 && report.p99_ok_ms > 0.0,
        "{summary}"
    );

    // Both faults were injected, not before they were due (how late shows in the report:
    // a loaded machine may run them late), in order, and both instances crashed with code 1.
    let mut last = 0.0;
    for f in &report.faults {
        assert_eq!(f.error, None, "{summary}");
        let at = f.applied_at_s.unwrap();
        assert!(at >= f.fault.at_s && at >= last, "{summary}");
        last = at;
        assert_eq!(f.exit_code, Some(1), "{summary}");
    }

    // Every instance served, including the one the hook added at runtime.
    for name in ["s1", "s2", "s3", "extra"] {
        let served = load.by_instance.get(name).map_or(0, |c| c.ok);
        assert!(served > 0, "{name} served nothing: {summary}");
    }
    assert!(report.haproxy_servers.iter().any(|s| s.name == "extra"));
    let seen = report.mode_notes["seen"].as_array().unwrap();
    assert_eq!(seen.len(), 3, "{summary}");
    assert_eq!(report.mode, "test-hook");
    assert_eq!(report.health_check, "check inter 1000ms fall 3 rise 2");
    assert!(!report.redispatch);

    // Nothing left running: scheduled instances, the hook's instance, HAProxy.
    let mut pids: Vec<u32> = report.instances.iter().map(|i| i.pid).collect();
    pids.push(report.mode_notes["extra_pid"].as_u64().unwrap() as u32);
    pids.push(report.haproxy_pid.unwrap());
    for pid in pids {
        assert!(!process_exists(pid), "pid {pid} still running: {summary}");
    }

    // The report is what the bench writes.
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["load"]["sent"], expected);
    assert_eq!(json["faults"][0]["kind"], "sudden");
}

#[tokio::test]
async fn t40_invalid_scenario_lists_every_problem_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(42, dir.path());
    config.rate = 0;
    config.schedule.faults[1].instance = "nope".into();
    let err = scenario::run(config, Mode::reactive()).await.unwrap_err();
    assert!(matches!(err, ScenarioError::InvalidConfig { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "invalid scenario: fault 1 (degrade_then_crash on nope): no instance named nope; \
         rate must be at least 1 request per second"
    );
    assert!(!dir.path().join("haproxy.cfg").exists());
}

#[tokio::test]
async fn t40_a_failing_hook_aborts_the_run_and_stops_everything() {
    struct Fails;
    impl ModeHook for Fails {
        fn on_started<'a>(&'a mut self, _: &'a RunEnv) -> BoxFuture<'a, Result<(), BoxError>> {
            Box::pin(async { Err("no node to talk to".into()) })
        }
        fn on_finished(&mut self) -> BoxFuture<'_, serde_json::Value> {
            Box::pin(async { serde_json::Value::Null })
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(43, dir.path());
    config.schedule.duration_s = 1.0;
    config.schedule.faults.clear();
    let err = scenario::run(config, Mode::with_hook("augur", Box::new(Fails)))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "mode augur failed to start: no node to talk to"
    );
}

//! `augur demo`: the predictive-versus-reactive experiment on a simulated fleet, with a live
//! view while it runs and a closing report (text, or JSON with `--output json`). With
//! `--real`, the same comparison on this machine: HAProxy, `augur-sample` processes, real HTTP
//! load, and for the Augur run a node of this binary and the reference agent.

use anyhow::Context;
use augur_sim::{run, Report, SimConfig};
use clap::Args;

#[derive(Args)]
pub struct DemoArgs {
    /// No live view: run to the end and print the report.
    #[arg(long)]
    headless: bool,
    /// The seed of the fleet, its telemetry noise and its fault schedule.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Simulated hours.
    #[arg(long, default_value_t = 12.0)]
    hours: f64,
    #[arg(long, value_enum, default_value_t = crate::ctl::Output::Text)]
    output: crate::ctl::Output,
    /// Real processes instead of the simulation: HAProxy 2.6 in front of six `augur-sample`
    /// instances (next to this binary) under steady HTTP load, the bench fault schedule
    /// (three degrade-then-crash faults, two sudden crashes) played twice: health checks
    /// alone, then with Augur.
    #[arg(long)]
    real: bool,
    /// With --real: seconds of the fault schedule, after the warm-up.
    #[arg(long, default_value_t = 150.0)]
    seconds: f64,
    /// With --real: seconds of steady load before the first fault.
    #[arg(long, default_value_t = 30.0)]
    warmup: f64,
    /// With --real: requests per second.
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// With --real: where HAProxy's config, the reports and the node's data go (default: a
    /// new temporary directory).
    #[arg(long)]
    work_dir: Option<std::path::PathBuf>,
}

/// `augur demo --real`: the bench schedule against real processes, reactive then Augur.
fn run_real(args: &DemoArgs) -> anyhow::Result<()> {
    use augur_agent::scenario::{self, Mode, ScenarioConfig, Schedule};
    use augur_agent::side_by_side::{self, Comparison};
    anyhow::ensure!(
        args.seconds.is_finite() && args.seconds >= 30.0 && args.seconds <= 3600.0,
        "--seconds {} must be within 30..=3600",
        args.seconds
    );
    anyhow::ensure!(
        args.warmup.is_finite() && (0.0..=600.0).contains(&args.warmup),
        "--warmup {} must be within 0..=600",
        args.warmup
    );
    anyhow::ensure!(
        (1..=5000).contains(&args.rate),
        "--rate {} must be within 1..=5000",
        args.rate
    );
    let me = std::env::current_exe().context("locating this binary")?;
    let sample = me.with_file_name("augur-sample");
    anyhow::ensure!(
        sample.is_file(),
        "no augur-sample next to {} (build it: cargo build -p augur-agent --bins)",
        me.display()
    );
    let (_tmp, dir) = match &args.work_dir {
        Some(d) => (None, d.clone()),
        None => {
            let t = tempfile::tempdir().context("a work directory")?;
            let d = t.path().to_path_buf();
            (Some(t), d)
        }
    };
    let schedule = Schedule::bench(args.seconds).delayed(args.warmup);
    let rt = tokio::runtime::Runtime::new().context("a tokio runtime")?;
    let mut reports = Vec::new();
    for (name, mode) in [
        ("reactive", Mode::reactive()),
        ("augur", side_by_side::augur_mode(me.clone())),
    ] {
        if !args.headless {
            eprintln!(
                "{name}: {:.0} s of load at {} req/s ({:.0} s warm-up)…",
                schedule.duration_s, args.rate, args.warmup
            );
        }
        let mut cfg = ScenarioConfig::new(schedule.clone(), sample.clone(), dir.join(name));
        cfg.rate = args.rate;
        cfg.seed = args.seed;
        let report = rt
            .block_on(scenario::run(cfg, mode))
            .map_err(|e| anyhow::anyhow!("the {name} run failed: {e}"))?;
        side_by_side::write_report(&dir.join(format!("{name}.json")), &report)?;
        if !args.headless {
            eprint!("{}", side_by_side::table(&report));
        }
        reports.push(report);
    }
    let cmp = Comparison::of(&reports[0], &reports[1]);
    crate::ctl::print(args.output, &cmp, Comparison::text);
    Ok(())
}

pub fn run_demo(args: DemoArgs) -> anyhow::Result<()> {
    if args.real {
        return run_real(&args);
    }
    if !(args.hours.is_finite() && args.hours > 1.0 && args.hours <= 24.0 * 14.0) {
        anyhow::bail!("--hours {} must be above 1 and at most 336", args.hours);
    }
    let model = augur_predict::default_model().context("the shipped model")?;
    let mut cfg = SimConfig {
        seed: args.seed,
        ..SimConfig::default()
    };
    cfg.fleet.hours = args.hours;
    let bar = (!args.headless).then(|| {
        let bar = indicatif::ProgressBar::new(1000);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{prefix:>10} [{bar:40}] {msg}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar
    });
    let report = run(&cfg, &model, &mut |event, progress| {
        if let Some(bar) = &bar {
            bar.set_prefix(event.mode.clone());
            bar.set_position((progress * 1000.0) as u64);
            let h = event.t_s / 3600.0;
            let line = format!("{:>10} {h:>6.2} h  {}", event.mode, event.what);
            if event.what.ends_with("simulated") {
                bar.set_message(format!("{h:.0} h"));
            } else if bar.is_hidden() {
                // Not a terminal (a log, CI): the events still show, as plain lines.
                eprintln!("{line}");
            } else {
                bar.println(line);
            }
        }
    })
    .context("the simulation failed")?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    crate::ctl::print(args.output, &report, text);
    Ok(())
}

fn text(r: &Report) -> String {
    let (a, p) = (&r.reactive, &r.predictive);
    let lead = |v: &[f64]| {
        if v.is_empty() {
            "-".to_string()
        } else {
            format!(
                "{:.0} / {:.0} / {:.0} s (min / median / max)",
                v[0],
                v[v.len() / 2],
                v[v.len() - 1]
            )
        }
    };
    let row = |name: &str, x: u64, y: u64| format!("  {name:<34} {x:>10} {y:>12}");
    [
        format!(
            "{} components on {} hosts, {:.0} h simulated (seed {}): {} degrade-then-crash faults, {} sudden crashes, {} false alarms",
            r.components, r.hosts, r.hours, r.seed, r.faults_degrade_then_crash, r.faults_sudden, r.false_alarms
        ),
        format!("  {:<34} {:>10} {:>12}", "", "reactive", "with Augur"),
        row("requests", a.requests.total, p.requests.total),
        row("failed: degrade-then-crash faults", a.requests.failed_degrade_then_crash, p.requests.failed_degrade_then_crash),
        row("failed: sudden crashes", a.requests.failed_sudden, p.requests.failed_sudden),
        row("failed: false alarms", a.requests.failed_false_alarm, p.requests.failed_false_alarm),
        row("failed: background (0.1 %)", a.requests.failed_background, p.requests.failed_background),
        format!(
            "  failures predicted (traffic off before the crash): {} of {}; missed {}",
            p.predicted,
            p.predicted + p.missed,
            p.missed
        ),
        format!("  lead time: {}", lead(&p.lead_times_s)),
        format!(
            "  failovers {}, promoted {}, rolled back {}, cancelled {}; false shifts {} ({:.2} per 100 healthy component-hours)",
            p.shifts_started, p.promotions, p.rollbacks, p.cancelled, p.false_shifts, p.false_shifts_per_100_healthy_hours
        ),
        format!(
            "  failed requests from degrade-then-crash faults: {:.1} % fewer; all faults: {:.1} % fewer",
            100.0 * r.reduction_degrade_then_crash,
            100.0 * r.reduction_all_faults
        ),
    ]
    .join("\n")
}

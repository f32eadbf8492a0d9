//! `augur demo`: the predictive-versus-reactive experiment on a simulated fleet, with a live
//! view while it runs and a closing report (text, or JSON with `--output json`).

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
}

pub fn run_demo(args: DemoArgs) -> anyhow::Result<()> {
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

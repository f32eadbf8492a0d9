//! Regenerates the shipped HTTP service model (`models/http-service.safetensors`) and says
//! how it does on a held-out fleet (seed + 1000):
//! `cargo run --release -p augur-predict --example train_http -- OUT [SEED] [EPOCHS]`.

use augur_predict::synthetic::{http_fleet, http_spec, live_scaled_sequences};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = args.next().ok_or("usage: train_http OUT [SEED] [EPOCHS]")?;
    let seed = args.next().map_or(Ok(7), |s| s.parse())?;
    let epochs = args.next().map_or(Ok(25), |s| s.parse())?;
    let (mut model, n) = augur_predict::synthetic::train_http_service(seed, epochs, 16, |r| {
        eprintln!(
            "epoch {}/{}: next {:.4} fail {:.4}",
            r.epoch, r.epochs, r.next_loss, r.fail_loss
        )
    })?;
    let version = model.save(std::path::Path::new(&out))?;
    println!("wrote {out} ({version}) from {n} synthetic HTTP service instances");

    // Held out: an alarm is P(fail) ≥ 0.9 on two steps running (the planner's 2 s).
    let spec = http_spec(seed + 1000);
    let fleet = http_fleet(&spec);
    let seqs = live_scaled_sequences(&fleet, spec.horizon);
    let outs = model.run(&seqs.iter().collect::<Vec<_>>())?;
    let alarm_at = |p: &[f32], until: usize| (1..until).find(|&t| p[t] >= 0.9 && p[t - 1] >= 0.9);
    let (mut healthy, mut false_alarms, mut failing, mut early) = (0, 0, 0, 0);
    let mut leads = Vec::new();
    for (c, o) in fleet.iter().zip(&outs) {
        match c.fails_at {
            None => {
                healthy += 1;
                false_alarms += usize::from(alarm_at(&o.p_fail, o.p_fail.len()).is_some());
            }
            Some(f) => {
                failing += 1;
                // Before the horizon an alarm is early (a false one for the label).
                let before = f.saturating_sub(spec.horizon);
                early += usize::from(alarm_at(&o.p_fail, before).is_some());
                if let Some(t) = alarm_at(&o.p_fail, f + 1) {
                    leads.push(f - t);
                }
            }
        }
    }
    leads.sort_unstable();
    println!(
        "held out (seed {}): {false_alarms} of {healthy} healthy instances alarmed; \
         {} of {failing} failing ones alarmed before failing ({early} earlier than the \
         {}-step horizon); median lead {} steps",
        spec.seed,
        leads.len(),
        spec.horizon,
        leads.get(leads.len() / 2).copied().unwrap_or(0)
    );
    // The sample service's degrade as the agent reports it (1 step = 1 s): 300 healthy
    // steps, then latency, errors and memory rise together, and a busy-host bump alone.
    let mut rng = augur_predict::lstm::SeededRng::new(seed + 2000);
    let mut sample = |degrade: bool| {
        let mut values = Vec::new();
        for t in 0..360 {
            let mut lat = 3.0 + rng.normal().abs() * 0.5;
            let (mut err, mut mem) = (0.0, 64.0);
            if degrade && t >= 300 {
                let level = 0.1 + 0.9 * ((t - 300) as f64 / 40.0).min(1.0);
                lat += 200.0 * level;
                let n = 33.0;
                let p = 0.2 * level;
                err = ((n * p + rng.normal() * (n * p * (1.0 - p)).sqrt()).round() / n).max(0.0);
                mem += 448.0 * level;
            }
            if !degrade && (300..315).contains(&t) {
                lat *= 6.0;
            }
            values.push(vec![lat, err, mem]);
        }
        augur_predict::synthetic::SyntheticComponent {
            values,
            fails_at: degrade.then_some(359),
        }
    };
    let cases = [sample(true), sample(false)];
    let seqs = live_scaled_sequences(&cases, spec.horizon);
    let outs = model.run(&seqs.iter().collect::<Vec<_>>())?;
    for (name, o) in ["sample degrade", "busy host"].iter().zip(&outs) {
        let ps: Vec<String> = o.p_fail[295..325]
            .iter()
            .map(|p| format!("{p:.2}"))
            .collect();
        println!("{name}: P(fail) from 5 s before: {}", ps.join(" "));
    }
    Ok(())
}

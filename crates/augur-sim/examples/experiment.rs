//! Runs the predictive-versus-reactive experiment and prints the report as JSON:
//! `cargo run --release -p augur-sim --example experiment -- [SEED] [HOURS] [CONFIRM_TICKS]`.

fn main() {
    let mut args = std::env::args().skip(1);
    let seed = args
        .next()
        .map_or(7, |s| s.parse().expect("SEED is a number"));
    let hours = args
        .next()
        .map_or(12.0, |s| s.parse().expect("HOURS is a number"));
    let model = augur_predict::default_model().expect("the shipped model loads");
    let mut cfg = augur_sim::SimConfig {
        seed,
        ..Default::default()
    };
    cfg.fleet.hours = hours;
    if let Some(c) = args.next() {
        cfg.confirm_ticks = c.parse().expect("CONFIRM_TICKS is a number");
    }
    if let Some(c) = args.next() {
        cfg.cancel_on_recovery = c == "cancel";
    }
    let report = augur_sim::run(&cfg, &model, &mut |e, _| {
        eprintln!("[{:>8.0} s {}] {}", e.t_s, e.mode, e.what)
    })
    .expect("the experiment runs");
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}

//! Regenerates the shipped default model without building the whole CLI:
//! `cargo run --release -p augur-predict --example train_default -- OUT [SEED] [EPOCHS]`
//! (the same as `augur train --synthetic --out OUT --seed SEED --epochs EPOCHS`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = args
        .next()
        .ok_or("usage: train_default OUT [SEED] [EPOCHS]")?;
    let seed = args.next().map_or(Ok(7), |s| s.parse())?;
    let epochs = args.next().map_or(Ok(25), |s| s.parse())?;
    let (mut model, n) = augur_predict::synthetic::train_default(seed, epochs, 32, |r| {
        eprintln!(
            "epoch {}/{}: next {:.4} fail {:.4}",
            r.epoch, r.epochs, r.next_loss, r.fail_loss
        )
    })?;
    let version = model.save(std::path::Path::new(&out))?;
    println!("wrote {out} ({version}) from {n} synthetic components");
    Ok(())
}

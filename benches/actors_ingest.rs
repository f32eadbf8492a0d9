//! The actors' ingest path end to end: samples per second through `PredictorSystem::ingest`
//! for 10k components × 8 metrics (windows already full, so every sample runs the full
//! detector update), one scoring tick over 10k due components, and the memory one component
//! costs at 100k components with every window full.
//!
//! `cargo bench -p augur-actors --bench actors_ingest` (about a minute; set
//! `AUGUR_BENCH_SHARDS` to change the shard count, default 2, `AUGUR_BENCH_MEMORY=0` to
//! skip the memory figure, and `AUGUR_BENCH_MEMORY_COMPONENTS=1000000` to take it at 1 M
//! components, about 5 minutes and 13 GB).
//!
//! The allocator is the `augur` binary's (mimalloc), so the memory is what a node pays.

#[path = "rss.rs"]
mod rss;

use std::sync::Arc;
use std::time::{Duration, Instant};

use augur_actors::{ActorsConfig, ComponentActor, PredictorSystem, Sample};
use augur_predict::lstm::{LstmModel, ModelMeta};
use augur_types::ComponentId;
use criterion::{Criterion, Throughput};
use futures::future::join_all;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const COMPONENTS: usize = 10_000;
const METRICS: [&str; 8] = [
    "cpu", "mem", "disk", "net_in", "net_out", "latency", "errors", "gc",
];
const MEMORY_COMPONENTS: usize = 100_000;
/// What STACK-NOTES measured for one idle actix actor (context, mailbox, task).
const ACTIX_ACTOR_BYTES: usize = 847;

fn shards() -> usize {
    std::env::var("AUGUR_BENCH_SHARDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2)
}

fn model() -> Arc<LstmModel> {
    let features = METRICS.map(String::from).to_vec();
    let mut m = LstmModel::new(ModelMeta::new(features, 32, 10, 1)).expect("model");
    m.meta.version = "bench".into();
    Arc::new(m)
}

fn start() -> PredictorSystem {
    let cfg = ActorsConfig {
        shards: shards(),
        tick_ms: 0,
        ..ActorsConfig::default()
    };
    PredictorSystem::start(cfg, model()).expect("start")
}

fn ids(n: usize) -> Vec<ComponentId> {
    (0..n)
        .map(|i| ComponentId::new(format!("svc-{i:06}")).expect("id"))
        .collect()
}

/// One sample per component and metric at `step`, values noisy but steady.
fn batch(ids: &[ComponentId], step: i64) -> Vec<Sample> {
    let mut out = Vec::with_capacity(ids.len() * METRICS.len());
    for (i, id) in ids.iter().enumerate() {
        for (m, metric) in METRICS.iter().enumerate() {
            let wobble = ((step as usize * 31 + i * 7 + m * 13) % 17) as f64 / 17.0;
            out.push(Sample {
                component: id.clone(),
                metric: (*metric).to_string(),
                ts_ms: step * 1000,
                value: 100.0 + 10.0 * m as f64 + wobble,
            });
        }
    }
    out
}

/// CPU time (ns) each group of this process's threads has used so far: the caller (main
/// thread), the shards (arbiter threads), the scorer with its model thread.
fn cpu_ns() -> [u64; 3] {
    let mut out = [0u64; 3];
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        let ticks: u64 =
            fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
        let group = if comm.starts_with("actix-rt") {
            1
        } else if comm.starts_with("augur-actors") {
            2
        } else {
            0
        };
        out[group] += ticks * 10_000_000; // USER_HZ = 100
    }
    out
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split(' ').take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// CPU time per sample and per scored component, by thread group: robust to other work on
/// the machine, unlike wall-clock throughput.
fn cpu_report(
    rt: &tokio::runtime::Runtime,
    sys: &PredictorSystem,
    ids: &[ComponentId],
    step: &mut i64,
) {
    let rounds = 30;
    let per_round = ids.len() * METRICS.len();
    let (mut wall, mut before) = (Duration::ZERO, cpu_ns());
    let mut untimed = [0u64; 3];
    for _ in 0..rounds {
        *step += 1;
        let t = cpu_ns();
        let samples = batch(ids, *step);
        let b = cpu_ns();
        (0..3).for_each(|g| untimed[g] += b[g] - t[g]);
        let start = Instant::now();
        rt.block_on(sys.ingest(samples)).expect("ingest");
        wall += start.elapsed();
    }
    let after = cpu_ns();
    let n = (rounds * per_round) as f64;
    let per: Vec<f64> = (0..3)
        .map(|g| (after[g] - before[g] - untimed[g]) as f64 / n)
        .collect();
    let total: f64 = per.iter().sum();
    eprintln!(
        "cpu per sample ({rounds} batches of {per_round}, {} shards, load {}): caller {:.0} ns, \
         shards {:.0} ns, total {total:.0} ns; wall {:.2} M samples/s; CPU-bound ceiling on 2 \
         free cores {:.2} M samples/s",
        sys.shards(),
        load_average(),
        per[0],
        per[1],
        n / wall.as_secs_f64() / 1e6,
        2e3 / total,
    );
    let ticks = 10;
    let (mut wall, mut spent) = (Duration::ZERO, [0u64; 3]);
    for _ in 0..ticks {
        *step += 1;
        rt.block_on(sys.ingest(batch(ids, *step))).expect("ingest");
        before = cpu_ns();
        let start = Instant::now();
        rt.block_on(sys.tick()).expect("tick");
        wall += start.elapsed();
        let after = cpu_ns();
        (0..3).for_each(|g| spent[g] += after[g] - before[g]);
    }
    let n = (ticks * ids.len()) as f64;
    eprintln!(
        "cpu per scored component ({ticks} ticks of {}): shards {:.0} ns, scorer + model {:.0} ns; \
         wall {:.1} ms a tick",
        ids.len(),
        spent[1] as f64 / n,
        spent[2] as f64 / n,
        wall.as_secs_f64() * 1e3 / ticks as f64,
    );
}

fn rss_bytes() -> usize {
    rss::resident_bytes("self").map_or(0, |b| b as usize)
}

/// 100k components, each with its 8 metrics and one forecast: predictor heap (what the
/// actors report), an estimate of the rest, and the process's resident growth.
fn memory(rt: &tokio::runtime::Runtime) {
    let before = rss_bytes();
    let sys = start();
    let n = std::env::var("AUGUR_BENCH_MEMORY_COMPONENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(MEMORY_COMPONENTS);
    let ids = ids(n);
    let started = Instant::now();
    rt.block_on(sys.register(ids.clone())).expect("register");
    let registered = rss_bytes();
    rt.block_on(async {
        // Every window full (the default window, 64 samples a metric), then one score.
        for step in 1..=64 {
            for chunk in ids.chunks(10_000) {
                sys.ingest(batch(chunk, step)).await.expect("ingest");
            }
        }
        sys.tick().await.expect("tick");
    });
    let loaded = started.elapsed();
    let heap: usize = rt.block_on(async {
        let mut sum = 0;
        for chunk in ids.chunks(10_000) {
            let snaps = join_all(chunk.iter().map(|id| sys.observe(id))).await;
            sum += snaps
                .into_iter()
                .map(|s| s.expect("observe").expect("known").heap_bytes)
                .sum::<usize>();
        }
        sum
    });
    let after = rss_bytes();
    let slot = std::mem::size_of::<ComponentId>() + 48; // shard map entry: key + slot
    let estimate = heap / n + std::mem::size_of::<ComponentActor>() + ACTIX_ACTOR_BYTES + slot + 12;
    eprintln!(
        "memory at {n} components × {} metrics ({} shards, loaded + scored in {loaded:.2?}):\n  \
         predictor heap {} B/component (sum of heap_bytes {} MB)\n  \
         estimate with actor ({} B) + actix context (~{ACTIX_ACTOR_BYTES} B) + shard entry: \
         {estimate} B/component\n  \
         resident growth {} B/component ({} MB in all; {} B/component with the actors \
         registered and no sample yet)",
        METRICS.len(),
        sys.shards(),
        heap / n,
        heap >> 20,
        std::mem::size_of::<ComponentActor>(),
        after.saturating_sub(before) / n,
        after.saturating_sub(before) >> 20,
        registered.saturating_sub(before) / n,
    );
    sys.shutdown();
}

fn bench(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let sys = start();
    let ids = ids(COMPONENTS);
    let per_round = (COMPONENTS * METRICS.len()) as u64;
    rt.block_on(sys.register(ids.clone())).expect("register");
    // Fill every window (64) first: the steady state, where each sample pays for a full one.
    let mut step = 0i64;
    let fill = Instant::now();
    for _ in 0..64 {
        step += 1;
        let s = rt.block_on(sys.ingest(batch(&ids, step))).expect("ingest");
        assert_eq!(s.accepted, per_round);
    }
    let fill = fill.elapsed();
    eprintln!(
        "fill: 64 rounds of {per_round} samples in {fill:.2?} = {:.2} M samples/s ({} shards)",
        64.0 * per_round as f64 / fill.as_secs_f64() / 1e6,
        sys.shards()
    );

    let mut g = c.benchmark_group("actors_ingest");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Elements(per_round));
    g.bench_function("10k_components_x8_one_batch", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                step += 1;
                let samples = batch(&ids, step);
                let t = Instant::now();
                let s = rt.block_on(sys.ingest(samples)).expect("ingest");
                spent += t.elapsed();
                assert_eq!(s.accepted, per_round);
            }
            spent
        })
    });
    g.bench_function("10k_components_x8_batches_of_8k_4_callers", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                step += 1;
                let batches: Vec<Vec<Sample>> =
                    ids.chunks(1_000).map(|chunk| batch(chunk, step)).collect();
                let t = Instant::now();
                let accepted: u64 = rt.block_on(async {
                    // Four concurrent callers, like four gRPC streams.
                    let mut batches = batches.into_iter();
                    let mut accepted = 0;
                    loop {
                        let wave: Vec<_> = batches.by_ref().take(4).collect();
                        if wave.is_empty() {
                            break accepted;
                        }
                        for s in join_all(wave.into_iter().map(|b| sys.ingest(b))).await {
                            accepted += s.expect("ingest").accepted;
                        }
                    }
                });
                spent += t.elapsed();
                assert_eq!(accepted, per_round);
            }
            spent
        })
    });
    g.throughput(Throughput::Elements(COMPONENTS as u64));
    g.bench_function("tick_10k_due_components", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                step += 1;
                rt.block_on(sys.ingest(batch(&ids, step))).expect("ingest");
                let t = Instant::now();
                let r = rt.block_on(sys.tick()).expect("tick");
                spent += t.elapsed();
                assert_eq!((r.batch_size, r.steps), (COMPONENTS, 1));
            }
            spent
        })
    });
    g.finish();
    cpu_report(rt, &sys, &ids, &mut step);
    sys.shutdown();
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let mut c = Criterion::default().configure_from_args();
    if std::env::var("AUGUR_BENCH_MEMORY").map_or(true, |v| v != "0") {
        memory(&rt);
    }
    bench(&mut c, &rt);
    c.final_summary();
}

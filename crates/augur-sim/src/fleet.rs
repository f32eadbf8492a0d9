//! The fleet: hosts over racks and zones, services of several instances spread over them,
//! the telemetry each instance emits, and the fault schedule.

use augur_predict::lstm::SeededRng;
use serde::Serialize;

/// Shape of the simulated fleet.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FleetConfig {
    pub zones: usize,
    pub racks_per_zone: usize,
    pub hosts_per_rack: usize,
    /// Instances a host can run.
    pub host_capacity: u32,
    pub services: usize,
    pub instances_per_service: usize,
    /// Requests per second each service receives, split over its instances by weight.
    pub service_rps: f64,
    /// Simulated hours.
    pub hours: f64,
    /// Faults that degrade before failing (rising latency, errors, memory, then a crash).
    pub degrading_faults: usize,
    /// Crashes with no warning.
    pub sudden_faults: usize,
    /// Transient anomalies that recover by themselves (no failure).
    pub false_alarms: usize,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            zones: 3,
            racks_per_zone: 2,
            hosts_per_rack: 3,
            host_capacity: 6,
            services: 10,
            instances_per_service: 5,
            service_rps: 200.0,
            hours: 12.0,
            degrading_faults: 10,
            sudden_faults: 4,
            false_alarms: 6,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    DegradeThenCrash,
    Sudden,
    FalseAlarm,
}

/// One scheduled fault on one instance (by index).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Fault {
    pub kind: FaultKind,
    pub instance: usize,
    /// When the symptoms start, s.
    pub start_s: f64,
    /// How long they last before the crash (degrading), or before they vanish (false alarm);
    /// 0 for a sudden crash.
    pub duration_s: f64,
}

impl Fault {
    /// When the instance crashes, if it does.
    pub fn crash_s(&self) -> Option<f64> {
        match self.kind {
            FaultKind::DegradeThenCrash | FaultKind::Sudden => Some(self.start_s + self.duration_s),
            FaultKind::FalseAlarm => None,
        }
    }
}

/// One instance: its service, where it runs, and its healthy behaviour.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Instance {
    pub name: String,
    pub service: usize,
    pub host: usize,
    pub base_latency_ms: f64,
    pub base_mem_pct: f64,
    /// Phase of its daily load cycle, radians.
    pub phase: f64,
}

/// The fleet and its fault schedule, all drawn from one seed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fleet {
    pub cfg: FleetConfig,
    pub instances: Vec<Instance>,
    pub faults: Vec<Fault>,
}

/// How long a crashed instance stays down before it is restarted, s.
pub const RESTART_S: f64 = 1800.0;

impl Fleet {
    pub fn hosts(&self) -> usize {
        self.cfg.zones * self.cfg.racks_per_zone * self.cfg.hosts_per_rack
    }

    /// (host, rack, zone) names of host `h`.
    pub fn host_names(&self, h: usize) -> (String, String, String) {
        let per_zone = self.cfg.racks_per_zone * self.cfg.hosts_per_rack;
        let rack = h / self.cfg.hosts_per_rack;
        (
            format!("host-{h:02}"),
            format!("rack-{rack:02}"),
            format!("zone-{}", (b'a' + (h / per_zone) as u8) as char),
        )
    }

    /// Draws the fleet from `seed`. Instances of a service are spread over zones first.
    pub fn generate(cfg: FleetConfig, seed: u64) -> Self {
        let mut rng = SeededRng::new(seed);
        let hosts = cfg.zones * cfg.racks_per_zone * cfg.hosts_per_rack;
        let per_zone = cfg.racks_per_zone * cfg.hosts_per_rack;
        let mut load = vec![0u32; hosts];
        let mut instances = Vec::new();
        for s in 0..cfg.services {
            for i in 0..cfg.instances_per_service {
                // Zone by instance, then the least loaded host of that zone (leaving room).
                let zone = (s + i) % cfg.zones;
                let host = (zone * per_zone..(zone + 1) * per_zone)
                    .min_by_key(|&h| (load[h], h))
                    .expect("a zone has hosts");
                load[host] += 1;
                instances.push(Instance {
                    name: format!("svc{s:02}-{i}"),
                    service: s,
                    host,
                    base_latency_ms: 20.0 + 60.0 * rng.unit(),
                    base_mem_pct: 35.0 + 20.0 * rng.unit(),
                    phase: rng.unit() * std::f64::consts::TAU,
                });
            }
        }
        let horizon = cfg.hours * 3600.0;
        let mut faults = Vec::new();
        let mut taken = vec![false; instances.len()];
        let mut pick = |rng: &mut SeededRng| loop {
            let i = (rng.next_u64() % instances.len() as u64) as usize;
            if !taken[i] {
                taken[i] = true;
                return i;
            }
        };
        let total = cfg.degrading_faults + cfg.sudden_faults + cfg.false_alarms;
        assert!(total <= instances.len(), "more faults than instances");
        for (kind, n) in [
            (FaultKind::DegradeThenCrash, cfg.degrading_faults),
            (FaultKind::Sudden, cfg.sudden_faults),
            (FaultKind::FalseAlarm, cfg.false_alarms),
        ] {
            for _ in 0..n {
                let instance = pick(&mut rng);
                // Leave the first hour for the detectors to learn, and room to finish.
                let start_s = 3600.0 + rng.unit() * (horizon - 3600.0 - 3600.0).max(0.0);
                let duration_s = match kind {
                    FaultKind::DegradeThenCrash => 600.0 + rng.unit() * 1800.0,
                    FaultKind::Sudden => 0.0,
                    FaultKind::FalseAlarm => 60.0 + rng.unit() * 240.0,
                };
                faults.push(Fault {
                    kind,
                    instance,
                    start_s,
                    duration_s,
                });
            }
        }
        faults.sort_by(|a, b| a.start_s.total_cmp(&b.start_s));
        Self {
            cfg,
            instances,
            faults,
        }
    }

    /// The latency a healthy copy of instance `i` has at `t`, noise aside: its base, on its
    /// daily cycle (±15 %).
    pub fn healthy_latency_ms(&self, i: usize, t: f64) -> f64 {
        let inst = &self.instances[i];
        let season = 1.0 + 0.15 * (std::f64::consts::TAU * t / 86_400.0 + inst.phase).sin();
        inst.base_latency_ms * season
    }

    /// What instance `i` reports at `t` (latency ms, error rate, memory %), and whether it is
    /// up, given its fault (if any) and the noise drawn from `rng`. A restarted instance is
    /// healthy again.
    pub fn observe(&self, i: usize, t: f64, rng: &mut SeededRng) -> Observation {
        let inst = &self.instances[i];
        let mut latency = self.healthy_latency_ms(i, t) * (1.0 + 0.04 * rng.normal());
        let mut errors = (0.001 * (1.0 + 0.3 * rng.normal())).max(0.0);
        let mut mem = inst.base_mem_pct + 1.5 * rng.normal();
        let mut up = true;
        for f in self.faults.iter().filter(|f| f.instance == i) {
            let since = t - f.start_s;
            if since < 0.0 {
                continue;
            }
            match f.kind {
                FaultKind::DegradeThenCrash => {
                    if since < f.duration_s {
                        let x = since / f.duration_s; // 0 → 1
                        latency *= 1.0 + 3.0 * x * x;
                        errors += 0.08 * x * x * x;
                        mem += (100.0 - inst.base_mem_pct) * x;
                    } else if since < f.duration_s + RESTART_S {
                        up = false;
                    }
                }
                FaultKind::Sudden => {
                    if since < RESTART_S {
                        up = false;
                    }
                }
                FaultKind::FalseAlarm => {
                    if since < f.duration_s {
                        latency *= 1.8;
                    }
                }
            }
        }
        Observation {
            up,
            latency_ms: latency.max(0.1),
            error_rate: errors.min(1.0),
            mem_pct: mem.clamp(0.0, 100.0),
        }
    }
}

/// One instance's telemetry at one tick.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    pub up: bool,
    pub latency_ms: f64,
    pub error_rate: f64,
    pub mem_pct: f64,
}

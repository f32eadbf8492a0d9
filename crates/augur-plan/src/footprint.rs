//! Desired footprints: where each service's instances should run so that one zone's loss
//! takes as few of them as possible. The desired footprint spreads a service's instances over
//! the zones with room as evenly as capacity allows (the least risky hosts first); when the
//! current footprint differs from it by more than the group's tolerance allows, a migration
//! plan moves instances out of the over-full zones, lowest HPS and largest blast radius
//! first. Within a zone the same holds for racks and hosts: when more of a service's
//! instances share one rack or one host than the desired footprint puts on any, the extra
//! ones move to another rack or host of the same zone with room. Migrations are never
//! urgent: the node proposes them for an operator's approval.

use std::collections::BTreeMap;

use augur_types::{Component, ComponentId, ControlState, Host, Placement};
use serde::Serialize;

use crate::failover::ComponentRisk;
use crate::placement::{host_risk, on_standby, Occupancy};

/// One instance to move.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Move {
    pub component: ComponentId,
    pub from: Placement,
    pub to: Placement,
    pub hps: f64,
    pub blast_radius: f64,
    pub reason: String,
}

/// A service's footprint now and as desired, and the moves between them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FootprintPlan {
    pub service: String,
    pub instances: usize,
    /// Instances per zone, now and as desired.
    pub zones_now: BTreeMap<String, u32>,
    pub zones_desired: BTreeMap<String, u32>,
    /// The most instances on one rack and on one host, now and as desired.
    pub max_per_rack_now: u32,
    pub max_per_rack_desired: u32,
    pub max_per_host_now: u32,
    pub max_per_host_desired: u32,
    /// Share of the instances out of place (0..=1): above the desired count in their zone,
    /// or above the desired most per rack or per host, whichever is more.
    pub divergence: f64,
    /// The share above which a migration is planned: half the group's risk tolerance, so a
    /// tolerant group moves less.
    pub threshold: f64,
    /// Most urgent first; empty when within tolerance or nothing can move.
    pub moves: Vec<Move>,
}

/// The footprint of every service (components grouped by `group`, originals on standby
/// after a promotion left out) with two or more instances. A service with a shadow in flight
/// is left alone until it settles.
pub fn plan_footprints(
    state: &ControlState,
    risks: &BTreeMap<ComponentId, ComponentRisk>,
) -> Vec<FootprintPlan> {
    // Serving instances only: an original whose shadow was promoted is on standby.
    let mut services: BTreeMap<&str, Vec<&Component>> = BTreeMap::new();
    for c in state
        .components
        .values()
        .filter(|c| !on_standby(state, &c.id))
    {
        services.entry(c.group.as_str()).or_default().push(c);
    }
    // Components in a failover under way, as the original or as the shadow.
    let moving: std::collections::BTreeSet<&ComponentId> = state
        .shadows
        .iter()
        .filter(|(_, s)| s.state.in_flight())
        .flat_map(|(original, s)| [original, &s.shadow])
        .collect();
    // A host is as risky as the riskiest thing running on it.
    let host_risk = host_risk(state, risks);
    let risk_of = |h: &Host| {
        host_risk
            .get(h.placement.host.as_str())
            .copied()
            .unwrap_or(0.0)
    };
    let mut occupancy = Occupancy::of(state);
    let mut out = Vec::new();
    for (service, instances) in services {
        if instances.len() < 2 || instances.iter().any(|c| moving.contains(&c.id)) {
            continue;
        }
        let n = instances.len();
        let tolerance = f64::from(state.policy_for(service).risk_tolerance) / 100.0;
        let threshold = tolerance / 2.0;
        let zones_now = count_by(instances.iter().map(|c| c.placement.zone.clone()));
        let Desired {
            zones: desired,
            max_per_rack,
            max_per_host,
        } = desired_footprint(state, &occupancy, &instances, &risk_of);
        let zone_out: u32 = zones_now
            .iter()
            .map(|(z, &k)| k.saturating_sub(desired.get(z).copied().unwrap_or(0)))
            .sum();
        let racks_now = count_by(instances.iter().map(|c| rack_of(&c.placement)));
        let hosts_now = count_by(instances.iter().map(|c| c.placement.host.as_str()));
        let out_of_place = zone_out
            .max(over(&racks_now, max_per_rack))
            .max(over(&hosts_now, max_per_host));
        let divergence = f64::from(out_of_place) / n as f64;
        let max_per_rack_now = racks_now.values().copied().max().unwrap_or(0);
        let max_per_host_now = hosts_now.values().copied().max().unwrap_or(0);
        let moves = if divergence <= threshold {
            Vec::new()
        } else if zone_out > 0 {
            let now = zones_now.clone();
            migrate(
                state,
                &mut occupancy,
                &instances,
                now,
                &desired,
                risks,
                &risk_of,
            )
        } else {
            // The zones are as desired: spread within them.
            let (now, limits) = ((racks_now, hosts_now), (max_per_rack, max_per_host));
            spread_in_zones(
                state,
                &mut occupancy,
                &instances,
                now,
                limits,
                risks,
                &risk_of,
            )
        };
        out.push(FootprintPlan {
            service: service.to_owned(),
            instances: n,
            zones_now,
            zones_desired: desired,
            max_per_rack_now,
            max_per_rack_desired: max_per_rack,
            max_per_host_now,
            max_per_host_desired: max_per_host,
            divergence,
            threshold,
            moves,
        });
    }
    out
}

/// How many of each key (zone, rack or host).
pub(crate) fn count_by<K: Ord>(keys: impl Iterator<Item = K>) -> BTreeMap<K, u32> {
    let mut out = BTreeMap::new();
    for k in keys {
        *out.entry(k).or_default() += 1;
    }
    out
}

/// Instances above `max` in each place, summed.
fn over<K>(counts: &BTreeMap<K, u32>, max: u32) -> u32 {
    counts.values().map(|&k| k.saturating_sub(max)).sum()
}

/// Of `hosts`, the one with the smallest `key`, then the least risky, then by name.
pub(crate) fn best_host<'a, K: Ord>(
    hosts: impl Iterator<Item = &'a Host>,
    key: impl Fn(&Host) -> K,
    risk_of: &impl Fn(&Host) -> f64,
) -> Option<&'a Host> {
    hosts.min_by(|a, b| {
        key(a)
            .cmp(&key(b))
            .then_with(|| risk_of(a).total_cmp(&risk_of(b)))
            .then_with(|| a.placement.host.cmp(&b.placement.host))
    })
}

/// `c` moved to `to`, with its risk figures.
fn move_of(
    c: &Component,
    to: Placement,
    reason: String,
    risks: &BTreeMap<ComponentId, ComponentRisk>,
) -> Move {
    let r = risks.get(&c.id);
    Move {
        component: c.id.clone(),
        from: c.placement.clone(),
        to,
        hps: r.map_or(100.0, |r| r.hps),
        blast_radius: r.map_or(0.0, |r| r.blast_radius),
        reason,
    }
}

/// Instances per rack, the rack named by [`rack_of`].
type PerRack<'a> = BTreeMap<(&'a str, &'a str), u32>;

/// A rack named within its zone (two zones may both have a `rack-1`).
pub(crate) fn rack_of(p: &Placement) -> (&str, &str) {
    (p.zone.as_str(), p.rack.as_str())
}

/// The desired footprint of a service: instances per zone, and the most on one rack and on
/// one host.
struct Desired {
    zones: BTreeMap<String, u32>,
    max_per_rack: u32,
    max_per_host: u32,
}

/// The service's instances placed one by one, as if none ran yet: each on the host with room
/// in the zone holding fewest of them so far (then the rack, then the host), the least risky
/// host first.
fn desired_footprint(
    state: &ControlState,
    occupancy: &Occupancy,
    instances: &[&Component],
    risk_of: &impl Fn(&Host) -> f64,
) -> Desired {
    // Room per host once this service's own instances are taken off.
    let mut own: BTreeMap<&str, u32> = BTreeMap::new();
    for c in instances {
        *own.entry(c.placement.host.as_str()).or_default() += 1;
    }
    let mut room: BTreeMap<&str, u32> = state
        .hosts
        .values()
        .map(|h| {
            let host = h.placement.host.as_str();
            (
                host,
                occupancy.room(h) + own.get(host).copied().unwrap_or(0),
            )
        })
        .collect();
    let mut zones: BTreeMap<String, u32> = BTreeMap::new();
    let mut racks: PerRack = BTreeMap::new();
    let mut hosts: BTreeMap<&str, u32> = BTreeMap::new();
    for c in instances {
        let best = best_host(
            state
                .hosts
                .values()
                .filter(|h| room[h.placement.host.as_str()] > 0),
            |h| {
                let p = &h.placement;
                (
                    zones.get(&p.zone).copied().unwrap_or(0),
                    racks.get(&rack_of(p)).copied().unwrap_or(0),
                    hosts.get(p.host.as_str()).copied().unwrap_or(0),
                )
            },
            risk_of,
        );
        // No room anywhere (hosts not registered): it stays where it is.
        let p = best.map_or(&c.placement, |h| &h.placement);
        if let Some(r) = room.get_mut(p.host.as_str()) {
            *r = r.saturating_sub(1);
        }
        *zones.entry(p.zone.clone()).or_default() += 1;
        *racks.entry(rack_of(p)).or_default() += 1;
        *hosts.entry(p.host.as_str()).or_default() += 1;
    }
    Desired {
        zones,
        max_per_rack: racks.values().copied().max().unwrap_or(0),
        max_per_host: hosts.values().copied().max().unwrap_or(0),
    }
}

/// Moves instances out of the zones holding more than desired, most urgent first (lowest
/// HPS, then largest blast radius), each to the host with room in the zone furthest below
/// its desired count (the least risky host there). A move takes a slot on its target at once
/// (the shadow runs beside the original until the original retires).
fn migrate(
    state: &ControlState,
    occupancy: &mut Occupancy,
    instances: &[&Component],
    mut now: BTreeMap<String, u32>,
    desired: &BTreeMap<String, u32>,
    risks: &BTreeMap<ComponentId, ComponentRisk>,
    risk_of: &impl Fn(&Host) -> f64,
) -> Vec<Move> {
    let want = |z: &str| desired.get(z).copied().unwrap_or(0);
    let mut moves = Vec::new();
    for c in by_urgency(instances, risks) {
        let zone = c.placement.zone.as_str();
        if now.get(zone).copied().unwrap_or(0) <= want(zone) {
            continue;
        }
        let deficit = |h: &Host| {
            let z = &h.placement.zone;
            i64::from(now.get(z).copied().unwrap_or(0)) - i64::from(want(z))
        };
        let target = best_host(
            state
                .hosts
                .values()
                .filter(|h| occupancy.room(h) > 0)
                .filter(|h| {
                    now.get(&h.placement.zone).copied().unwrap_or(0) < want(&h.placement.zone)
                }),
            deficit,
            risk_of,
        );
        let Some(target) = target else { continue };
        let to = target.placement.clone();
        occupancy.take(&to.host);
        *now.get_mut(zone).expect("counted") -= 1;
        *now.entry(to.zone.clone()).or_default() += 1;
        let reason = format!(
            "footprint: {} holds {} of {}'s instances, {} desired; {} to {} ({})",
            zone,
            now[zone] + 1,
            c.group,
            want(zone),
            c.id,
            to.zone,
            to.host
        );
        moves.push(move_of(c, to, reason, risks));
    }
    moves
}

/// Lowest HPS first, then largest blast radius, then by id.
fn by_urgency<'a>(
    instances: &[&'a Component],
    risks: &BTreeMap<ComponentId, ComponentRisk>,
) -> Vec<&'a Component> {
    let risk = |c: &Component| risks.get(&c.id).copied();
    let hps = |r: Option<ComponentRisk>| r.map_or(100.0, |r| r.hps);
    let blast = |r: Option<ComponentRisk>| r.map_or(0.0, |r| r.blast_radius);
    let mut order: Vec<&Component> = instances.to_vec();
    order.sort_by(|a, b| {
        let (ra, rb) = (risk(a), risk(b));
        hps(ra)
            .total_cmp(&hps(rb))
            .then(blast(rb).total_cmp(&blast(ra)))
            .then_with(|| a.id.cmp(&b.id))
    });
    order
}

/// Moves instances off racks and hosts holding more of the service than the desired
/// footprint puts on any (`now`: instances per rack and per host; `limits`: most per rack,
/// most per host), most urgent first, each to
/// the host with room in its own zone whose rack and host hold fewest of the service (the
/// least risky such host): zone counts stay as they are. A move takes a slot on its target
/// at once.
fn spread_in_zones<'a>(
    state: &'a ControlState,
    occupancy: &mut Occupancy,
    instances: &[&'a Component],
    (mut racks, mut hosts): (PerRack<'a>, BTreeMap<&'a str, u32>),
    (max_rack, max_host): (u32, u32),
    risks: &BTreeMap<ComponentId, ComponentRisk>,
    risk_of: &impl Fn(&Host) -> f64,
) -> Vec<Move> {
    let mut moves = Vec::new();
    for c in by_urgency(instances, risks) {
        let (rack, host) = (rack_of(&c.placement), c.placement.host.as_str());
        let (in_rack, on_host) = (racks[&rack], hosts[host]);
        let rack_over = in_rack > max_rack;
        if !rack_over && on_host <= max_host {
            continue;
        }
        let count = |h: &Host| {
            (
                racks.get(&rack_of(&h.placement)).copied().unwrap_or(0),
                hosts.get(h.placement.host.as_str()).copied().unwrap_or(0),
            )
        };
        let target = best_host(
            state
                .hosts
                .values()
                .filter(|h| h.placement.zone == c.placement.zone && h.placement.host != host)
                .filter(|h| occupancy.room(h) > 0)
                .filter(|h| {
                    let (r, k) = count(h);
                    // Better off there: below the most per host, and on a rack below its most
                    // (or the same rack, when only the host was too full).
                    k < max_host
                        && if rack_of(&h.placement) == rack {
                            !rack_over
                        } else {
                            r < max_rack
                        }
                }),
            count,
            risk_of,
        );
        let Some(target) = target else { continue };
        let to = target.placement.clone();
        occupancy.take(&to.host);
        *racks.get_mut(&rack).expect("counted") -= 1;
        *racks.entry(rack_of(&target.placement)).or_default() += 1;
        *hosts.get_mut(host).expect("counted") -= 1;
        *hosts.entry(target.placement.host.as_str()).or_default() += 1;
        let crowded = if rack_over {
            format!(
                "rack {} in {} holds {in_rack} of {}'s instances, at most {max_rack} desired",
                rack.1, rack.0, c.group
            )
        } else {
            format!(
                "host {host} holds {on_host} of {}'s instances, at most {max_host} desired",
                c.group
            )
        };
        let reason = format!(
            "footprint: {crowded}; {} to {} (rack {})",
            c.id, to.host, to.rack
        );
        moves.push(move_of(c, to, reason, risks));
    }
    moves
}

#[cfg(test)]
mod tests {
    use augur_types::{Policy, ShadowState};

    use super::*;

    fn fleet(tolerance: u8) -> (ControlState, BTreeMap<ComponentId, ComponentRisk>) {
        let mut s = ControlState::default();
        for (h, zone) in [("h1", "a"), ("h2", "b")] {
            s.hosts.insert(
                h.into(),
                Host {
                    placement: Placement {
                        host: h.into(),
                        rack: format!("r-{zone}"),
                        zone: zone.into(),
                    },
                    capacity: 8,
                },
            );
        }
        let mut risks = BTreeMap::new();
        for i in 1..=6 {
            let id = ComponentId::new(format!("web-{i}")).unwrap();
            s.components.insert(
                id.clone(),
                Component {
                    id: id.clone(),
                    class: "web".into(),
                    group: "web".into(),
                    criticality: 3,
                    placement: s.hosts["h1"].placement.clone(),
                    labels: BTreeMap::new(),
                },
            );
            let r = ComponentRisk {
                p_fail: 0.01,
                hps: 90.0 + f64::from(i),
                blast_radius: 0.1,
            };
            risks.insert(id, r);
        }
        s.policies.insert(
            "web".into(),
            Policy {
                risk_tolerance: tolerance,
                ..Policy::default()
            },
        );
        (s, risks)
    }

    #[test]
    fn a_service_in_one_zone_is_spread_over_two_lowest_hps_first() {
        let (s, risks) = fleet(50);
        let plans = plan_footprints(&s, &risks);
        assert_eq!(plans.len(), 1);
        let p = &plans[0];
        assert_eq!(p.zones_now, BTreeMap::from([("a".into(), 6)]));
        assert_eq!(
            p.zones_desired,
            BTreeMap::from([("a".into(), 3), ("b".into(), 3)])
        );
        assert_eq!(p.divergence, 0.5);
        let moved: Vec<&str> = p.moves.iter().map(|m| m.component.as_str()).collect();
        assert_eq!(moved, ["web-1", "web-2", "web-3"]);
        assert!(p.moves.iter().all(|m| m.to.host == "h2"));
        assert!(p.moves[0]
            .reason
            .starts_with("footprint: a holds 6 of web's instances, 3 desired"));
    }

    /// One zone, hosts h1 and h2 on rack r1 and h3 on rack r2; web-1..3 all on h1.
    fn one_zone(capacity: u32) -> (ControlState, BTreeMap<ComponentId, ComponentRisk>) {
        let (mut s, mut risks) = fleet(50);
        s.hosts.clear();
        for (h, rack) in [("h1", "r1"), ("h2", "r1"), ("h3", "r2")] {
            let placement = Placement {
                host: h.into(),
                rack: rack.into(),
                zone: "a".into(),
            };
            let capacity = if h == "h1" { 8 } else { capacity };
            s.hosts.insert(
                h.into(),
                Host {
                    placement,
                    capacity,
                },
            );
        }
        for i in 4..=6 {
            let id = ComponentId::new(format!("web-{i}")).unwrap();
            s.components.remove(&id);
            risks.remove(&id);
        }
        let h1 = s.hosts["h1"].placement.clone();
        s.components.update_all(|c| c.placement = h1.clone());
        (s, risks)
    }

    #[test]
    fn instances_crowded_on_one_host_and_rack_spread_within_their_zone() {
        let (s, risks) = one_zone(8);
        let p = &plan_footprints(&s, &risks)[0];
        assert_eq!(p.zones_now, p.zones_desired);
        assert_eq!((p.max_per_rack_now, p.max_per_rack_desired), (3, 2));
        assert_eq!((p.max_per_host_now, p.max_per_host_desired), (3, 1));
        assert!((p.divergence - 2.0 / 3.0).abs() < 1e-9);
        let moved: Vec<(&str, &str)> = p
            .moves
            .iter()
            .map(|m| (m.component.as_str(), m.to.host.as_str()))
            .collect();
        // Lowest HPS first: web-1 leaves the crowded rack, web-2 the crowded host.
        assert_eq!(moved, [("web-1", "h3"), ("web-2", "h2")]);
        assert!(p.moves.iter().all(|m| m.to.zone == "a"));
        assert!(p.moves[0].reason.starts_with(
            "footprint: rack r1 in a holds 3 of web's instances, at most 2 desired; web-1 to h3"
        ));
        assert!(p.moves[1]
            .reason
            .starts_with("footprint: host h1 holds 2 of web's instances, at most 1 desired"));
    }

    #[test]
    fn no_room_elsewhere_in_the_zone_means_no_move() {
        let (s, risks) = one_zone(0);
        let p = &plan_footprints(&s, &risks)[0];
        assert_eq!((p.max_per_host_now, p.max_per_host_desired), (3, 3));
        assert_eq!(p.divergence, 0.0);
        assert!(p.moves.is_empty());
    }

    #[test]
    fn originals_on_standby_are_not_counted() {
        let (mut s, risks) = fleet(50);
        for i in 1..=3 {
            s.shadows.insert(
                ComponentId::new(format!("web-{i}")).unwrap(),
                augur_types::ShadowRecord {
                    shadow: ComponentId::new(format!("web-{i}.shadow-{i}")).unwrap(),
                    placement: s.hosts["h2"].placement.clone(),
                    state: ShadowState::Promoted,
                    history: Vec::new(),
                    shift: None,
                },
            );
        }
        let p = &plan_footprints(&s, &risks)[0];
        assert_eq!(p.instances, 3);
        assert_eq!(p.zones_now, BTreeMap::from([("a".into(), 3)]));
    }

    #[test]
    fn a_tolerant_group_or_a_service_mid_failover_is_left_alone() {
        let (s, risks) = fleet(100);
        assert!(plan_footprints(&s, &risks)[0].moves.is_empty());
        let (mut s, risks) = fleet(0);
        s.shadows.insert(
            ComponentId::new("web-4").unwrap(),
            augur_types::ShadowRecord {
                shadow: ComponentId::new("web-4.shadow-1").unwrap(),
                placement: s.hosts["h2"].placement.clone(),
                state: augur_types::ShadowState::Syncing,
                history: Vec::new(),
                shift: None,
            },
        );
        assert!(plan_footprints(&s, &risks).is_empty());
    }
}

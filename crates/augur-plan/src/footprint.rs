//! Desired footprints: where each service's instances should run so that one zone's loss
//! takes as few of them as possible. The desired footprint spreads a service's instances over
//! the zones with room as evenly as capacity allows (the least risky hosts first); when the
//! current footprint differs from it by more than the group's tolerance allows, a migration
//! plan moves instances out of the over-full zones, lowest HPS and largest blast radius
//! first. Migrations are never urgent: the node proposes them for an operator's approval.

use std::collections::BTreeMap;

use augur_types::{Component, ComponentId, ControlState, Host, Placement, ShadowState};
use serde::Serialize;

use crate::failover::ComponentRisk;
use crate::placement::Occupancy;

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
    /// Share of the instances out of place (0..=1).
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
    let standby = |c: &Component| {
        state
            .shadows
            .get(&c.id)
            .is_some_and(|s| s.state == ShadowState::Promoted)
    };
    let mut services: BTreeMap<&str, Vec<&Component>> = BTreeMap::new();
    for c in state.components.values().filter(|c| !standby(c)) {
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
    let mut host_risk: BTreeMap<&str, f64> = BTreeMap::new();
    for (id, r) in risks {
        if let Some(c) = state.components.get(id) {
            let e = host_risk.entry(c.placement.host.as_str()).or_default();
            *e = e.max(r.p_fail);
        }
    }
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
        let zones_now = count_zones(instances.iter().map(|c| &c.placement));
        let desired = desired_zones(state, &occupancy, &instances, &risk_of);
        let out_of_place: u32 = zones_now
            .iter()
            .map(|(z, &k)| k.saturating_sub(desired.get(z).copied().unwrap_or(0)))
            .sum();
        let divergence = f64::from(out_of_place) / n as f64;
        let mut moves = Vec::new();
        if divergence > threshold {
            moves = migrate(state, &mut occupancy, &instances, &desired, risks, &risk_of);
        }
        out.push(FootprintPlan {
            service: service.to_owned(),
            instances: n,
            zones_now,
            zones_desired: desired,
            divergence,
            threshold,
            moves,
        });
    }
    out
}

fn count_zones<'a>(placements: impl Iterator<Item = &'a Placement>) -> BTreeMap<String, u32> {
    let mut zones = BTreeMap::new();
    for p in placements {
        *zones.entry(p.zone.clone()).or_default() += 1;
    }
    zones
}

/// The service's instances placed one by one, as if none ran yet: each on the host with room
/// in the zone holding fewest of them so far (then the rack, then the host), the least risky
/// host first. Returns instances per zone.
fn desired_zones(
    state: &ControlState,
    occupancy: &Occupancy,
    instances: &[&Component],
    risk_of: &impl Fn(&Host) -> f64,
) -> BTreeMap<String, u32> {
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
    let mut racks: BTreeMap<(&str, &str), u32> = BTreeMap::new();
    let mut hosts: BTreeMap<&str, u32> = BTreeMap::new();
    for c in instances {
        let best = state
            .hosts
            .values()
            .filter(|h| room[h.placement.host.as_str()] > 0)
            .min_by(|a, b| {
                let key = |h: &Host| {
                    let p = &h.placement;
                    (
                        zones.get(&p.zone).copied().unwrap_or(0),
                        racks
                            .get(&(p.zone.as_str(), p.rack.as_str()))
                            .copied()
                            .unwrap_or(0),
                        hosts.get(p.host.as_str()).copied().unwrap_or(0),
                    )
                };
                key(a)
                    .cmp(&key(b))
                    .then_with(|| risk_of(a).total_cmp(&risk_of(b)))
                    .then_with(|| a.placement.host.cmp(&b.placement.host))
            });
        // No room anywhere (hosts not registered): it stays where it is.
        let p = best.map_or(&c.placement, |h| &h.placement);
        if let Some(r) = room.get_mut(p.host.as_str()) {
            *r = r.saturating_sub(1);
        }
        *zones.entry(p.zone.clone()).or_default() += 1;
        *racks.entry((p.zone.as_str(), p.rack.as_str())).or_default() += 1;
        *hosts.entry(p.host.as_str()).or_default() += 1;
    }
    zones
}

/// Moves instances out of the zones holding more than desired, most urgent first (lowest
/// HPS, then largest blast radius), each to the host with room in the zone furthest below
/// its desired count (the least risky host there). A move takes a slot on its target at once
/// (the shadow runs beside the original until the original retires).
fn migrate(
    state: &ControlState,
    occupancy: &mut Occupancy,
    instances: &[&Component],
    desired: &BTreeMap<String, u32>,
    risks: &BTreeMap<ComponentId, ComponentRisk>,
    risk_of: &impl Fn(&Host) -> f64,
) -> Vec<Move> {
    let mut now = count_zones(instances.iter().map(|c| &c.placement));
    let want = |z: &str| desired.get(z).copied().unwrap_or(0);
    let risk = |c: &Component| risks.get(&c.id).copied();
    let mut order: Vec<&Component> = instances.to_vec();
    order.sort_by(|a, b| {
        let (ra, rb) = (risk(a), risk(b));
        let hps = |r: Option<ComponentRisk>| r.map_or(100.0, |r| r.hps);
        let blast = |r: Option<ComponentRisk>| r.map_or(0.0, |r| r.blast_radius);
        hps(ra)
            .total_cmp(&hps(rb))
            .then(blast(rb).total_cmp(&blast(ra)))
            .then_with(|| a.id.cmp(&b.id))
    });
    let mut moves = Vec::new();
    for c in order {
        let zone = c.placement.zone.as_str();
        if now.get(zone).copied().unwrap_or(0) <= want(zone) {
            continue;
        }
        let target = state
            .hosts
            .values()
            .filter(|h| occupancy.room(h) > 0)
            .filter(|h| now.get(&h.placement.zone).copied().unwrap_or(0) < want(&h.placement.zone))
            .min_by(|a, b| {
                let deficit = |h: &Host| {
                    let z = &h.placement.zone;
                    i64::from(now.get(z).copied().unwrap_or(0)) - i64::from(want(z))
                };
                deficit(a)
                    .cmp(&deficit(b))
                    .then_with(|| risk_of(a).total_cmp(&risk_of(b)))
                    .then_with(|| a.placement.host.cmp(&b.placement.host))
            });
        let Some(target) = target else { continue };
        let to = target.placement.clone();
        occupancy.take(&to.host);
        *now.get_mut(zone).expect("counted") -= 1;
        *now.entry(to.zone.clone()).or_default() += 1;
        let r = risk(c);
        moves.push(Move {
            component: c.id.clone(),
            reason: format!(
                "footprint: {} holds {} of {}'s instances, {} desired; {} to {} ({})",
                zone,
                now[zone] + 1,
                c.group,
                want(zone),
                c.id,
                to.zone,
                to.host
            ),
            from: c.placement.clone(),
            to,
            hps: r.map_or(100.0, |r| r.hps),
            blast_radius: r.map_or(0.0, |r| r.blast_radius),
        });
    }
    moves
}

#[cfg(test)]
mod tests {
    use augur_types::Policy;

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

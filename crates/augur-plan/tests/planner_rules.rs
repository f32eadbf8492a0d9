//! The planner's rules, as properties over random fleets: never over capacity; never a shadow
//! in the original's failure domain while another domain has room; most urgent first; a
//! shift's weights always sum to 100 and a rollback restores the last verified weights; a
//! scale-out never over capacity or the group's most instances.

use std::collections::BTreeMap;

use augur_plan::placement::{domain_tier, Occupancy, Tier};
use augur_plan::shift::{GateOutcome, Shift, ShiftStep, DEFAULT_STEPS};
use augur_plan::{plan_failovers, ComponentRisk, PlannerConfig};
use augur_types::{Component, ComponentId, ControlState, Host, Placement, TrafficWeights};
use proptest::prelude::*;

fn placement(h: usize) -> Placement {
    // 2 hosts a rack, 2 racks a zone.
    Placement {
        host: format!("h{h}"),
        rack: format!("r{}", h / 2),
        zone: format!("z{}", h / 4),
    }
}

type Fleet = (Vec<u32>, Vec<usize>, Vec<(f64, f64, f64)>);

fn arb_fleet() -> impl Strategy<Value = Fleet> {
    (1usize..9).prop_flat_map(|hosts| {
        (
            prop::collection::vec(0u32..5, hosts),
            prop::collection::vec(0..hosts, 1..16),
        )
            .prop_flat_map(|(caps, comps)| {
                let n = comps.len();
                (
                    Just(caps),
                    Just(comps),
                    prop::collection::vec((0.0f64..=1.0, 0.0f64..=100.0, 0.0f64..=1.0), n),
                )
            })
    })
}

fn build(caps: &[u32], comps: &[usize]) -> ControlState {
    let mut s = ControlState::default();
    for (h, &capacity) in caps.iter().enumerate() {
        s.hosts.insert(
            format!("h{h}"),
            Host {
                placement: placement(h),
                capacity,
            },
        );
    }
    for (i, &h) in comps.iter().enumerate() {
        let id = ComponentId::new(format!("c{i}")).unwrap();
        s.components.insert(
            id.clone(),
            Component {
                id,
                class: "svc".into(),
                group: "g".into(),
                criticality: 3,
                placement: placement(h),
                labels: BTreeMap::new(),
            },
        );
    }
    s
}

/// The risks drawn for components `c0`, `c1`, … keyed by their ids.
fn risk_map(risks: &[(f64, f64, f64)]) -> BTreeMap<ComponentId, ComponentRisk> {
    risks
        .iter()
        .enumerate()
        .map(|(i, &(p_fail, hps, blast_radius))| {
            let id = ComponentId::new(format!("c{i}")).unwrap();
            (
                id,
                ComponentRisk {
                    p_fail,
                    hps,
                    blast_radius,
                },
            )
        })
        .collect()
}

proptest! {
    /// Scaling: every new instance lands on a host with room (counting the others placed in
    /// the round), is a new name, and the group never goes above its most instances; a higher
    /// load never wants fewer instances.
    #[test]
    fn scale_outs_stay_within_capacity_and_the_groups_cap(
        (caps, comps, risks) in arb_fleet(),
        level in 0.0f64..2_000.0,
        per_s in -5.0f64..5.0,
        max_instances in 1u32..24,
    ) {
        let risks = risk_map(&risks);
        let mut state = build(&caps, &comps);
        let scaling = augur_types::ScalingPolicy {
            per_instance_rps: 100,
            headroom_percent: 20,
            max_instances,
            horizon_s: 60,
        };
        state.policies.insert(
            "g".into(),
            augur_types::Policy { scaling: Some(scaling), ..Default::default() },
        );
        let cfg = PlannerConfig::default();
        let mut wanted = Vec::new();
        for scale in [1.0, 2.0] {
            let loads: BTreeMap<ComponentId, augur_plan::Load> = state
                .components
                .keys()
                .map(|c| (c.clone(), augur_plan::Load { level: level * scale, per_s }))
                .collect();
            let decisions = augur_plan::plan_scaling(&state, &loads, &risks, &cfg);
            prop_assert!(decisions.len() <= 1);
            let Some(d) = decisions.first() else {
                wanted.push(0);
                continue;
            };
            wanted.push(d.add.len());
            prop_assert!(d.running + d.add.len() as u32 <= max_instances.max(d.running));
            let mut occ = Occupancy::of(&state);
            let mut names = std::collections::BTreeSet::new();
            for (id, to) in &d.add {
                prop_assert!(occ.room(&state.hosts[&to.host]) > 0, "{} over capacity", to.host);
                occ.take(&to.host);
                prop_assert!(!state.components.contains_key(id) && names.insert(id.clone()));
            }
        }
        // (Fewer hosts with room can cut both to the same number, never the higher below.)
        prop_assert!(wanted[1] >= wanted[0], "{wanted:?}");
    }

    /// Footprints: every migration move lands on a host with room, the most urgent first, and
    /// either goes from a zone holding more of the service than desired to one holding fewer,
    /// or stays in its zone and leaves a rack or host holding more than the desired most for
    /// a host holding fewer; the moves never leave the service less spread over zones; a more
    /// tolerant group never moves more.
    #[test]
    fn migrations_spread_within_capacity_and_tolerance_only_holds_them_back(
        (caps, comps, risks) in arb_fleet(),
        tolerances in (0u8..=100, 0u8..=100),
    ) {
        let risks = risk_map(&risks);
        let (lo, hi) = (tolerances.0.min(tolerances.1), tolerances.0.max(tolerances.1));
        let mut counts = Vec::new();
        for tolerance in [lo, hi] {
            let mut state = build(&caps, &comps);
            state.policies.insert("g".into(), augur_types::Policy { risk_tolerance: tolerance, ..Default::default() });
            let plans = augur_plan::plan_footprints(&state, &risks);
            let moves: Vec<&augur_plan::footprint::Move> = plans.iter().flat_map(|p| &p.moves).collect();
            counts.push(moves.len());
            let Some(plan) = plans.first() else { continue };
            prop_assert!(moves.is_empty() || plan.divergence > plan.threshold);
            let mut occ = Occupancy::of(&state);
            let mut now = plan.zones_now.clone();
            let want = |z: &str| plan.zones_desired.get(z).copied().unwrap_or(0);
            let excess = |now: &BTreeMap<String, u32>| -> u32 {
                now.iter().map(|(z, &k)| k.saturating_sub(want(z))).sum()
            };
            let before = excess(&now);
            let mut racks: BTreeMap<(String, String), u32> = BTreeMap::new();
            let mut hosts: BTreeMap<String, u32> = BTreeMap::new();
            for c in state.components.values().filter(|c| c.group == plan.service) {
                *racks.entry((c.placement.zone.clone(), c.placement.rack.clone())).or_default() += 1;
                *hosts.entry(c.placement.host.clone()).or_default() += 1;
            }
            let mut last = f64::NEG_INFINITY;
            for m in &moves {
                prop_assert!(m.hps >= last, "most urgent first");
                last = m.hps;
                prop_assert!(occ.room(&state.hosts[&m.to.host]) > 0, "{} over capacity", m.to.host);
                occ.take(&m.to.host);
                let rack = |p: &augur_types::Placement| (p.zone.clone(), p.rack.clone());
                if m.from.zone == m.to.zone {
                    // Within a zone: off a rack or host holding more than desired, onto a
                    // host holding fewer than the most desired on one.
                    prop_assert!(
                        racks[&rack(&m.from)] > plan.max_per_rack_desired
                            || hosts[&m.from.host] > plan.max_per_host_desired,
                        "moved within a zone off a rack and a host not over"
                    );
                    prop_assert!(hosts.get(&m.to.host).copied().unwrap_or(0) < plan.max_per_host_desired);
                } else {
                    prop_assert!(now[&m.from.zone] > want(&m.from.zone), "moved out of a zone not over");
                    prop_assert!(now.get(&m.to.zone).copied().unwrap_or(0) < want(&m.to.zone), "moved into a zone not under");
                    *now.get_mut(&m.from.zone).unwrap() -= 1;
                    *now.entry(m.to.zone.clone()).or_default() += 1;
                }
                *racks.get_mut(&rack(&m.from)).unwrap() -= 1;
                *racks.entry(rack(&m.to)).or_default() += 1;
                *hosts.get_mut(&m.from.host).unwrap() -= 1;
                *hosts.entry(m.to.host.clone()).or_default() += 1;
            }
            prop_assert!(excess(&now) <= before);
            // The desired footprint places every instance.
            prop_assert_eq!(plan.zones_desired.values().sum::<u32>() as usize, plan.instances);
        }
        prop_assert!(counts.len() < 2 || counts[1] <= counts[0], "more tolerance, more moves: {counts:?}");
    }

    /// With dependencies: a follower is co-located with and strongly dependent on a component
    /// being moved, of another group (replicas never follow each other), lands near that
    /// component's new host (never another zone, never its own host), and nothing goes over
    /// capacity.
    #[test]
    fn followers_stay_near_what_they_follow_and_within_capacity(
        (caps, comps, risks) in arb_fleet(),
        edges in prop::collection::vec((0usize..16, 0usize..16, 0.0f64..=1.0), 0..24),
    ) {
        let mut state = build(&caps, &comps);
        // Three groups, so that some dependents are siblings and some are not.
        let mut i = 0;
        state.components.update_all(|c| {
            c.group = format!("g{}", i % 3);
            i += 1;
        });
        for &(from, to, strength) in &edges {
            if from == to || from >= comps.len() || to >= comps.len() {
                continue;
            }
            let mut e = augur_graph::Edge::default();
            e.observe(&augur_graph::Observation::new(augur_graph::EdgeSource::Declared, strength, 1));
            state.edges.insert((format!("c{from}"), format!("c{to}")), e);
        }
        let risks = risk_map(&risks);
        let decisions = plan_failovers(&state, &risks, &PlannerConfig::default());
        let mut occ = Occupancy::of(&state);
        let mut seen = std::collections::BTreeSet::new();
        for d in &decisions {
            prop_assert!(seen.insert(d.component.clone()), "{} planned twice", d.component);
            if let Some(to) = &d.to {
                prop_assert!(occ.room(&state.hosts[&to.host]) > 0, "{} over capacity", to.host);
                occ.take(&to.host);
            }
            let Some(leader) = d.reason.strip_prefix("follows ").and_then(|r| r.split(' ').next()) else {
                continue;
            };
            let lead = decisions.iter().find(|x| x.component.as_str() == leader).expect("its leader is planned");
            let (me, them) = (&state.components[&d.component], &state.components[&lead.component]);
            prop_assert_eq!(&me.placement.host, &them.placement.host, "co-located");
            prop_assert_ne!(&me.group, &them.group, "a sibling followed");
            let strength = state.edges[&(d.component.to_string(), leader.to_owned())].strength();
            prop_assert!(strength >= augur_plan::FOLLOW_STRENGTH);
            let (to, target) = (d.to.as_ref().unwrap(), lead.to.as_ref().unwrap());
            prop_assert_eq!(&to.zone, &target.zone, "same zone as its leader's new host");
            prop_assert!(to.host != me.placement.host);
        }
    }

    #[test]
    fn never_over_capacity_and_never_a_nearer_domain_than_needed((caps, comps, risks) in arb_fleet()) {
        let state = build(&caps, &comps);
        let risks = risk_map(&risks);
        let decisions = plan_failovers(&state, &risks, &PlannerConfig::default());
        let mut occ = Occupancy::of(&state);
        let mut last_hps = f64::NEG_INFINITY;
        for d in &decisions {
            prop_assert!(d.hps >= last_hps, "most urgent first");
            last_hps = d.hps;
            prop_assert!(d.p_fail >= d.threshold);
            let original = &state.components[&d.component].placement;
            // The best tier any host with room offered at this point of the plan.
            let best = state
                .hosts
                .values()
                .filter(|h| occ.room(h) > 0)
                .map(|h| domain_tier(original, &h.placement))
                .filter(|t| *t > Tier::SameHost)
                .max();
            match &d.to {
                Some(to) => {
                    let host = &state.hosts[&to.host];
                    prop_assert!(occ.room(host) > 0, "{} over capacity", to.host);
                    prop_assert_eq!(Some(domain_tier(original, to)), best);
                    prop_assert!(to.host != original.host);
                    occ.take(&to.host);
                }
                None => prop_assert_eq!(best, None),
            }
        }
        // Nothing planned pushed a host that had room over its capacity.
        let before = Occupancy::of(&state);
        for h in state.hosts.values() {
            prop_assert!(occ.used(&h.placement.host) <= h.capacity.max(before.used(&h.placement.host)));
        }
    }

    #[test]
    fn shift_weights_sum_to_100_and_rollback_restores_the_last_verified(
        shares in prop::collection::vec(1u32..60, 1..5),
        outcomes in prop::collection::vec(0u8..10, 1..8),
    ) {
        // Weights summing to 100: the shares scaled, the rest on the first member.
        let total: u32 = shares.iter().sum();
        let mut weights: TrafficWeights = BTreeMap::new();
        let mut given = 0;
        for (i, s) in shares.iter().enumerate() {
            let w = s * 100 / total;
            given += w;
            weights.insert(ComponentId::new(format!("m{i}")).unwrap(), w);
        }
        *weights.get_mut(&ComponentId::new("m0").unwrap()).unwrap() += 100 - given;
        let original = ComponentId::new("m0").unwrap();
        let shadow = ComponentId::new("m0-shadow").unwrap();
        let mut shift = Shift::new(weights.clone(), original, shadow, &DEFAULT_STEPS).unwrap();
        let mut step = shift.start();
        let mut verified = weights.clone();
        for o in outcomes {
            let applied = match &step {
                ShiftStep::Apply { weights, .. } => weights.clone(),
                _ => break,
            };
            prop_assert_eq!(applied.values().sum::<u32>(), 100);
            let outcome = match o {
                0 => GateOutcome::Fail("slow".into()),
                1 => GateOutcome::ShadowDead,
                _ => GateOutcome::Pass,
            };
            let passed = outcome == GateOutcome::Pass;
            step = shift.on_gate(outcome);
            if passed {
                verified = applied;
            }
            prop_assert_eq!(shift.verified(), &verified);
            if let ShiftStep::RollBack { weights, .. } = &step {
                prop_assert_eq!(weights, &verified);
                prop_assert_eq!(shift.current(), &verified);
            }
            if let ShiftStep::Promote { weights } = &step {
                prop_assert_eq!(weights.values().sum::<u32>(), 100);
                prop_assert_eq!(weights[&ComponentId::new("m0").unwrap()], 0);
            }
        }
        // Once over, a further gate changes nothing.
        if shift.is_done() {
            let again = shift.on_gate(GateOutcome::Pass);
            prop_assert_eq!(again, step);
        }
    }
}

#[test]
fn shift_refuses_bad_input() {
    let mut w: TrafficWeights = BTreeMap::new();
    w.insert(ComponentId::new("a").unwrap(), 60);
    w.insert(ComponentId::new("b").unwrap(), 30);
    let id = |s: &str| ComponentId::new(s).unwrap();
    assert!(Shift::new(w.clone(), id("a"), id("s"), &DEFAULT_STEPS).is_err()); // sums to 90
    w.insert(id("b"), 40);
    assert!(Shift::new(w.clone(), id("x"), id("s"), &DEFAULT_STEPS).is_err());
    assert!(Shift::new(w.clone(), id("a"), id("b"), &DEFAULT_STEPS).is_err());
    assert!(Shift::new(w.clone(), id("a"), id("s"), &[5, 1, 100]).is_err());
    assert!(Shift::new(w.clone(), id("a"), id("s"), &[1, 50]).is_err());
    let mut s = Shift::new(w, id("a"), id("s"), &[50, 100]).unwrap();
    assert_eq!(
        s.start(),
        ShiftStep::Apply {
            percent: 50,
            weights: [(id("a"), 30), (id("b"), 40), (id("s"), 30)]
                .into_iter()
                .collect()
        }
    );
}

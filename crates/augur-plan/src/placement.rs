//! Where a shadow goes. A failure domain is a host inside a rack inside a zone; a shadow in
//! another zone survives what takes the original's zone down, one in another rack survives
//! the rack, one on another host only the host. The safest tier with room always wins: a
//! shadow never lands in the original's failure domain while another domain has room.

use std::collections::BTreeMap;

use augur_types::{ComponentId, ControlState, Host, Placement, ShadowState};

use crate::failover::ComponentRisk;

/// How far a candidate host is from the original, as failure domains go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// The original's own host: never chosen.
    SameHost,
    SameRack,
    SameZone,
    OtherZone,
}

impl Tier {
    /// The name on the wire and in JSON (`other_zone`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::SameHost => "same_host",
            Tier::SameRack => "same_rack",
            Tier::SameZone => "same_zone",
            Tier::OtherZone => "other_zone",
        }
    }
}

/// The tier of `candidate` relative to `original`.
pub fn domain_tier(original: &Placement, candidate: &Placement) -> Tier {
    if candidate.zone != original.zone {
        Tier::OtherZone
    } else if candidate.rack != original.rack {
        Tier::SameZone
    } else if candidate.host != original.host {
        Tier::SameRack
    } else {
        Tier::SameHost
    }
}

/// Instances per host: the components placed there and the shadows in flight placed there,
/// plus what a planning round has placed so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Occupancy {
    used: BTreeMap<String, u32>,
}

impl Occupancy {
    /// The occupancy the state implies.
    pub fn of(state: &ControlState) -> Self {
        let mut used: BTreeMap<String, u32> = BTreeMap::new();
        for c in state.components.values() {
            *used.entry(c.placement.host.clone()).or_default() += 1;
        }
        for s in state.shadows.values().filter(|s| s.state.in_flight()) {
            *used.entry(s.placement.host.clone()).or_default() += 1;
        }
        Self { used }
    }

    pub fn used(&self, host: &str) -> u32 {
        self.used.get(host).copied().unwrap_or(0)
    }

    /// Free slots on `host`.
    pub fn room(&self, host: &Host) -> u32 {
        host.capacity
            .saturating_sub(self.used(&host.placement.host))
    }

    pub fn take(&mut self, host: &str) {
        *self.used.entry(host.to_owned()).or_default() += 1;
    }
}

/// How risky each host is: the largest P(fail) of what runs there.
pub fn host_risk<'s>(
    state: &'s ControlState,
    risks: &BTreeMap<ComponentId, ComponentRisk>,
) -> BTreeMap<&'s str, f64> {
    let mut out: BTreeMap<&str, f64> = BTreeMap::new();
    for (id, r) in risks {
        if let Some(c) = state.components.get(id) {
            let e = out.entry(c.placement.host.as_str()).or_default();
            *e = e.max(r.p_fail);
        }
    }
    out
}

/// An original whose shadow was promoted: on standby, no longer serving.
pub fn on_standby(state: &ControlState, id: &ComponentId) -> bool {
    state
        .shadows
        .get(id)
        .is_some_and(|s| s.state == ShadowState::Promoted)
}

/// The host for a shadow of a component placed at `original`: among hosts with room, the
/// farthest tier; within it the least risky host (`host_risk`: say, the largest P(fail) of
/// what runs there), then the one with most room, then by name. `None` when no other host
/// has room.
pub fn choose_host<'s>(
    hosts: &'s BTreeMap<String, Host>,
    original: &Placement,
    occupancy: &Occupancy,
    host_risk: impl Fn(&str) -> f64,
) -> Option<&'s Host> {
    hosts
        .values()
        .filter(|h| occupancy.room(h) > 0)
        .map(|h| (domain_tier(original, &h.placement), h))
        .filter(|(tier, _)| *tier > Tier::SameHost)
        .max_by(|(ta, a), (tb, b)| {
            ta.cmp(tb)
                .then_with(|| host_risk(&b.placement.host).total_cmp(&host_risk(&a.placement.host)))
                .then_with(|| occupancy.room(a).cmp(&occupancy.room(b)))
                .then_with(|| b.placement.host.cmp(&a.placement.host))
        })
        .map(|(_, h)| h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, rack: &str, zone: &str, capacity: u32) -> Host {
        Host {
            placement: Placement {
                host: name.into(),
                rack: rack.into(),
                zone: zone.into(),
            },
            capacity,
        }
    }

    #[test]
    fn the_farthest_domain_with_room_wins_then_the_safest_host() {
        let hosts: BTreeMap<String, Host> = [
            host("a1", "ra", "za", 4),
            host("a2", "ra", "za", 4),
            host("a3", "rb", "za", 4),
            host("b1", "rc", "zb", 1),
            host("b2", "rc", "zb", 2),
        ]
        .into_iter()
        .map(|h| (h.placement.host.clone(), h))
        .collect();
        let original = hosts["a1"].placement.clone();
        let mut occ = Occupancy::default();
        let risk = |h: &str| if h == "b2" { 0.5 } else { 0.0 };
        // Another zone first, the safer host in it even with less room.
        assert_eq!(
            choose_host(&hosts, &original, &occ, risk)
                .unwrap()
                .placement
                .host,
            "b1"
        );
        occ.take("b1");
        assert_eq!(
            choose_host(&hosts, &original, &occ, risk)
                .unwrap()
                .placement
                .host,
            "b2"
        );
        occ.take("b2");
        occ.take("b2");
        // Zone b full: another rack of the same zone, then the same rack.
        assert_eq!(
            choose_host(&hosts, &original, &occ, risk)
                .unwrap()
                .placement
                .host,
            "a3"
        );
        for _ in 0..4 {
            occ.take("a3");
        }
        assert_eq!(
            choose_host(&hosts, &original, &occ, risk)
                .unwrap()
                .placement
                .host,
            "a2"
        );
        for _ in 0..4 {
            occ.take("a2");
        }
        // Only the original's own host is left: no shadow.
        assert!(choose_host(&hosts, &original, &occ, risk).is_none());
    }
}

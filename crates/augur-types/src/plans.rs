//! Failover plans by number, with each component's open plans and the finished plans also
//! indexed.
//!
//! Every plan proposal looked for the component's open plan, and every proposal and decision
//! counted the finished plans to trim them, by scanning every plan, on every replica; open
//! plans are not bounded (one an at-risk component in a zone outage). The indexes follow
//! every change here and are rebuilt when the map is deserialized; snapshots keep the plain
//! map's encoding.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Deref;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{ComponentId, PlanRecord};

/// Plans by number; reads go through `Deref` to the map, every change through a method here
/// (no `DerefMut`: a plan's status or component could change behind the indexes).
#[derive(Debug, Clone, Default)]
pub struct Plans {
    map: BTreeMap<u64, PlanRecord>,
    /// Component → the numbers of its open plans (one, by the rules).
    open: BTreeMap<ComponentId, BTreeSet<u64>>,
    /// The numbers of the finished plans.
    finished: BTreeSet<u64>,
}

impl Plans {
    /// Adds or replaces plan `n`; answers the plan it replaced.
    pub fn insert(&mut self, n: u64, plan: PlanRecord) -> Option<PlanRecord> {
        if let Some(key) = self.map.get(&n).map(PlanKey::of) {
            self.unkey(n, key);
        }
        self.key(n, PlanKey::of(&plan));
        self.map.insert(n, plan)
    }

    /// Changes plan `n` in place; the indexes follow.
    pub fn update<T>(&mut self, n: u64, f: impl FnOnce(&mut PlanRecord) -> T) -> Option<T> {
        let plan = self.map.get_mut(&n)?;
        let before = PlanKey::of(plan);
        let out = f(plan);
        let after = PlanKey::of(plan);
        if before != after {
            self.unkey(n, before);
            self.key(n, after);
        }
        Some(out)
    }

    /// The first open plan of `component` (by number), if any.
    pub fn open_of(&self, component: &ComponentId) -> Option<&PlanRecord> {
        let n = self.open.get(component)?.first()?;
        self.map.get(n)
    }

    /// Drops the oldest finished plans until at most `keep` are left.
    pub fn trim_finished(&mut self, keep: usize) {
        while self.finished.len() > keep {
            let n = self.finished.pop_first().expect("more than keep");
            self.map.remove(&n);
        }
    }

    fn key(&mut self, n: u64, PlanKey(component, open): PlanKey) {
        if open {
            self.open.entry(component).or_default().insert(n);
        } else {
            self.finished.insert(n);
        }
    }

    fn unkey(&mut self, n: u64, PlanKey(component, open): PlanKey) {
        if !open {
            self.finished.remove(&n);
            return;
        }
        if let Some(ns) = self.open.get_mut(&component) {
            ns.remove(&n);
            if ns.is_empty() {
                self.open.remove(&component);
            }
        }
    }
}

/// What the indexes know of a plan: its component and whether it is open.
#[derive(PartialEq)]
struct PlanKey(ComponentId, bool);

impl PlanKey {
    fn of(plan: &PlanRecord) -> Self {
        Self(plan.component.clone(), plan.status.open())
    }
}

impl Deref for Plans {
    type Target = BTreeMap<u64, PlanRecord>;

    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl PartialEq for Plans {
    fn eq(&self, other: &Self) -> bool {
        self.map == other.map
    }
}

impl<'a> IntoIterator for &'a Plans {
    type Item = (&'a u64, &'a PlanRecord);
    type IntoIter = std::collections::btree_map::Iter<'a, u64, PlanRecord>;

    fn into_iter(self) -> Self::IntoIter {
        self.map.iter()
    }
}

impl Serialize for Plans {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.map.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Plans {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<u64, PlanRecord>::deserialize(d)?;
        let mut plans = Plans::default();
        for (n, plan) in &map {
            plans.key(*n, PlanKey::of(plan));
        }
        plans.map = map;
        Ok(plans)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::{Placement, PlanKind, PlanStatus, Severity};

    fn plan(n: u64, component: u8, status: u8) -> PlanRecord {
        let statuses = [
            PlanStatus::Proposed,
            PlanStatus::Approved,
            PlanStatus::Started,
            PlanStatus::Rejected,
        ];
        PlanRecord {
            id: format!("plan-{n}"),
            component: ComponentId::new(format!("c{component}")).unwrap(),
            kind: PlanKind::Failover,
            template: None,
            to: Placement {
                host: "h2".into(),
                rack: "r2".into(),
                zone: "z2".into(),
            },
            severity: Severity::High,
            reason: String::new(),
            created_ms: 0,
            status: statuses[usize::from(status) % statuses.len()],
            shadow: None,
            history: vec![],
        }
    }

    proptest! {
        /// Inserts, in-place changes and trims: each component's open plan is the first a scan
        /// finds, a trim drops what the old `retain` dropped (the oldest finished ones), and
        /// a postcard round trip rebuilds the same indexes.
        #[test]
        fn the_indexes_answer_as_a_scan_of_every_plan(
            ops in prop::collection::vec((0u8..3, 1u64..12, 0u8..4, 0u8..4), 1..80),
            keep in 0usize..4,
        ) {
            let mut plans = Plans::default();
            for (kind, n, component, status) in ops {
                match kind {
                    0 => {
                        plans.insert(n, plan(n, component, status));
                    }
                    1 => {
                        plans.update(n, |p| *p = plan(n, component, status));
                    }
                    _ => {
                        let mut old = plans.map.clone();
                        let finished = old.values().filter(|p| !p.status.open()).count();
                        let mut excess = finished.saturating_sub(keep);
                        old.retain(|_, p| {
                            if excess > 0 && !p.status.open() {
                                excess -= 1;
                                return false;
                            }
                            true
                        });
                        plans.trim_finished(keep);
                        prop_assert_eq!(&plans.map, &old);
                    }
                }
                for c in 0..4 {
                    let id = ComponentId::new(format!("c{c}")).unwrap();
                    let scan = plans.values().find(|p| p.status.open() && p.component == id);
                    prop_assert_eq!(plans.open_of(&id), scan);
                }
            }
            let bytes = postcard::to_allocvec(&plans).unwrap();
            let plain: BTreeMap<u64, PlanRecord> = postcard::from_bytes(&bytes).unwrap();
            prop_assert_eq!(&plain, &*plans);
            let back: Plans = postcard::from_bytes(&bytes).unwrap();
            prop_assert_eq!(&back.open, &plans.open);
            prop_assert_eq!(&back.finished, &plans.finished);
        }
    }
}

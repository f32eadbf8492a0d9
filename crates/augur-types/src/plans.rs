//! Failover plans by number, with each component's open plans and the finished plans also
//! indexed.
//!
//! Every plan proposal looked for the component's open plan, and every proposal and decision
//! counted the finished plans to trim them, by scanning every plan, on every replica; open
//! plans are not bounded (one an at-risk component in a zone outage). The indexes are an
//! [`IndexedMap`]'s, kept by every change and rebuilt when the map is deserialized.

use std::collections::{BTreeMap, BTreeSet};

use crate::indexed::{IndexedMap, MapIndex};
use crate::{ComponentId, PlanRecord};

/// Plans by number, with each component's open plans and the finished ones.
pub type Plans = IndexedMap<u64, PlanRecord, PlanIndex>;

#[derive(Debug, Clone, Default)]
pub struct PlanIndex {
    /// Component → the numbers of its open plans (one, by the rules).
    open: BTreeMap<ComponentId, BTreeSet<u64>>,
    /// The numbers of the finished plans.
    finished: BTreeSet<u64>,
}

impl MapIndex<u64, PlanRecord> for PlanIndex {
    fn add(&mut self, &n: &u64, plan: &PlanRecord) {
        if plan.status.open() {
            self.open
                .entry(plan.component.clone())
                .or_default()
                .insert(n);
        } else {
            self.finished.insert(n);
        }
    }

    fn remove(&mut self, n: &u64, plan: &PlanRecord) {
        if !plan.status.open() {
            self.finished.remove(n);
            return;
        }
        if let Some(ns) = self.open.get_mut(&plan.component) {
            ns.remove(n);
            if ns.is_empty() {
                self.open.remove(&plan.component);
            }
        }
    }
}

impl Plans {
    /// The first open plan of `component` (by number), if any.
    pub fn open_of(&self, component: &ComponentId) -> Option<&PlanRecord> {
        let n = self.index.open.get(component)?.first()?;
        self.map.get(n)
    }

    /// Drops the oldest finished plans until at most `keep` are left.
    pub fn trim_finished(&mut self, keep: usize) {
        while self.index.finished.len() > keep {
            let n = self.index.finished.pop_first().expect("more than keep");
            self.map.remove(&n);
        }
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
                        plans.update(&n, |p| *p = plan(n, component, status));
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
            prop_assert_eq!(&back.index.open, &plans.index.open);
            prop_assert_eq!(&back.index.finished, &plans.index.finished);
        }
    }
}

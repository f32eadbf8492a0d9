//! The shadow records by original component, with the in-flight ones also found by their
//! shadow's id.
//!
//! A shadow request or a plan proposal must refuse a component that is itself a shadow in
//! flight; finding that by scanning every record cost 1.2 ms a command at 100k records, on
//! every replica (records stay until their component goes). The index follows every change
//! here and is rebuilt when the map is deserialized; snapshots keep the plain map's encoding.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Deref;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{ComponentId, ShadowRecord};

/// Shadow records by original component; reads go through `Deref` to the map, every change
/// through a method here (no `DerefMut`: a record's state or shadow could change behind the
/// index).
#[derive(Debug, Clone, Default)]
pub struct Shadows {
    map: BTreeMap<ComponentId, ShadowRecord>,
    /// In-flight shadows' ids → the components they shadow.
    in_flight: BTreeMap<ComponentId, BTreeSet<ComponentId>>,
}

impl Shadows {
    /// Adds or replaces `owner`'s record; answers the record it replaced.
    pub fn insert(&mut self, owner: ComponentId, rec: ShadowRecord) -> Option<ShadowRecord> {
        if let Some(o) = self.map.get(&owner) {
            let (shadow, flying) = (o.shadow.clone(), o.state.in_flight());
            if flying {
                self.unlink(&shadow, &owner);
            }
        }
        if rec.state.in_flight() {
            self.link(rec.shadow.clone(), &owner);
        }
        self.map.insert(owner, rec)
    }

    pub fn remove(&mut self, owner: &ComponentId) -> Option<ShadowRecord> {
        let old = self.map.remove(owner);
        if let Some(o) = old.as_ref().filter(|o| o.state.in_flight()) {
            self.unlink(&o.shadow, owner);
        }
        old
    }

    /// Changes `owner`'s record in place; the index follows.
    pub fn update<T>(
        &mut self,
        owner: &ComponentId,
        f: impl FnOnce(&mut ShadowRecord) -> T,
    ) -> Option<T> {
        let rec = self.map.get_mut(owner)?;
        let before = (rec.shadow.clone(), rec.state.in_flight());
        let out = f(rec);
        let after = (rec.shadow.clone(), rec.state.in_flight());
        if before != after {
            if before.1 {
                self.unlink(&before.0, owner);
            }
            if after.1 {
                self.link(after.0, owner);
            }
        }
        Some(out)
    }

    /// The component whose in-flight shadow is `shadow` (the first by id when, against the
    /// rules, several are), with its record.
    pub fn in_flight_owner_of(
        &self,
        shadow: &ComponentId,
    ) -> Option<(&ComponentId, &ShadowRecord)> {
        let owner = self.in_flight.get(shadow)?.first()?;
        self.map.get_key_value(owner)
    }

    fn link(&mut self, shadow: ComponentId, owner: &ComponentId) {
        self.in_flight
            .entry(shadow)
            .or_default()
            .insert(owner.clone());
    }

    fn unlink(&mut self, shadow: &ComponentId, owner: &ComponentId) {
        if let Some(owners) = self.in_flight.get_mut(shadow) {
            owners.remove(owner);
            if owners.is_empty() {
                self.in_flight.remove(shadow);
            }
        }
    }
}

fn in_flight_of(
    map: &BTreeMap<ComponentId, ShadowRecord>,
) -> BTreeMap<ComponentId, BTreeSet<ComponentId>> {
    let mut in_flight: BTreeMap<ComponentId, BTreeSet<ComponentId>> = BTreeMap::new();
    for (owner, rec) in map.iter().filter(|(_, r)| r.state.in_flight()) {
        in_flight
            .entry(rec.shadow.clone())
            .or_default()
            .insert(owner.clone());
    }
    in_flight
}

impl Deref for Shadows {
    type Target = BTreeMap<ComponentId, ShadowRecord>;

    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl PartialEq for Shadows {
    fn eq(&self, other: &Self) -> bool {
        self.map == other.map
    }
}

impl<'a> IntoIterator for &'a Shadows {
    type Item = (&'a ComponentId, &'a ShadowRecord);
    type IntoIter = std::collections::btree_map::Iter<'a, ComponentId, ShadowRecord>;

    fn into_iter(self) -> Self::IntoIter {
        self.map.iter()
    }
}

impl Serialize for Shadows {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.map.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Shadows {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<ComponentId, ShadowRecord>::deserialize(d)?;
        let in_flight = in_flight_of(&map);
        Ok(Self { map, in_flight })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::{Placement, ShadowState};

    fn id(i: u8) -> ComponentId {
        ComponentId::new(format!("c{i}")).unwrap()
    }

    fn record(shadow: u8, state: u8) -> ShadowRecord {
        let states = [
            ShadowState::Requested,
            ShadowState::Shifting { weight: 10 },
            ShadowState::Promoted,
            ShadowState::RolledBack,
            ShadowState::Retired,
        ];
        ShadowRecord {
            shadow: id(shadow),
            placement: Placement {
                host: "h2".into(),
                rack: "r2".into(),
                zone: "z2".into(),
            },
            state: states[usize::from(state) % states.len()],
            history: vec![],
            shift: None,
        }
    }

    /// What the index replaced: the first record, by owner, whose in-flight shadow is `s`.
    fn scan(map: &BTreeMap<ComponentId, ShadowRecord>, s: &ComponentId) -> Option<ComponentId> {
        map.iter()
            .find(|(_, r)| r.shadow == *s && r.state.in_flight())
            .map(|(o, _)| o.clone())
    }

    proptest! {
        /// Inserts, removals and in-place changes of owners, shadows and states: the index
        /// answers what a scan of every record does, also after a round trip through postcard.
        #[test]
        fn the_in_flight_index_answers_as_a_scan_of_every_record(
            ops in prop::collection::vec((0u8..3, 0u8..6, 0u8..6, 0u8..5), 1..80),
        ) {
            let mut shadows = Shadows::default();
            for (kind, owner, shadow, state) in ops {
                match kind {
                    0 => {
                        shadows.insert(id(owner), record(shadow, state));
                    }
                    1 => {
                        shadows.remove(&id(owner));
                    }
                    _ => {
                        shadows.update(&id(owner), |r| *r = record(shadow, state));
                    }
                }
                for s in 0..6 {
                    let got = shadows.in_flight_owner_of(&id(s)).map(|(o, _)| o.clone());
                    prop_assert_eq!(got, scan(&shadows, &id(s)));
                }
            }
            let bytes = postcard::to_allocvec(&shadows).unwrap();
            let plain: BTreeMap<ComponentId, ShadowRecord> = postcard::from_bytes(&bytes).unwrap();
            prop_assert_eq!(&plain, &*shadows);
            let back: Shadows = postcard::from_bytes(&bytes).unwrap();
            prop_assert_eq!(&back.in_flight, &shadows.in_flight);
        }
    }
}

//! The registered components, with a count of them per host kept alongside.
//!
//! A host's room is checked on every upsert; counting the components on a host by scanning
//! all of them made registering N components on registered hosts O(N²) on every replica
//! (29 ms a command at a million components, `benches/state_apply.rs`). The count is kept by every change here, so no
//! caller can leave it stale, and it is rebuilt when the map is deserialized: it is never
//! serialized, so snapshots keep the plain map's encoding.

use std::collections::BTreeMap;
use std::ops::Deref;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Component, ComponentId};

/// Components by id; reads go through `Deref` to the map, every change through a method
/// here (no `DerefMut`: a `&mut` to the map could move a component between hosts behind the
/// count's back).
#[derive(Debug, Clone, Default)]
pub struct Components {
    map: BTreeMap<ComponentId, Component>,
    per_host: BTreeMap<String, u64>,
}

impl Components {
    /// Adds or replaces `c`; answers the component it replaced.
    pub fn insert(&mut self, id: ComponentId, c: Component) -> Option<Component> {
        let host = c.placement.host.clone();
        let old = self.map.insert(id, c);
        match &old {
            Some(o) if o.placement.host == host => {}
            Some(o) => {
                self.bump(&o.placement.host, false);
                self.bump(&host, true);
            }
            None => self.bump(&host, true),
        }
        old
    }

    pub fn remove(&mut self, id: &ComponentId) -> Option<Component> {
        let old = self.map.remove(id);
        if let Some(o) = &old {
            self.bump(&o.placement.host, false);
        }
        old
    }

    /// Changes one component in place; the host count follows a move.
    pub fn update<T>(
        &mut self,
        id: &ComponentId,
        f: impl FnOnce(&mut Component) -> T,
    ) -> Option<T> {
        let c = self.map.get_mut(id)?;
        let host = c.placement.host.clone();
        let out = f(c);
        if c.placement.host != host {
            let moved_to = c.placement.host.clone();
            self.bump(&host, false);
            self.bump(&moved_to, true);
        }
        Some(out)
    }

    /// Changes every component in place (tests and the simulator); the counts are rebuilt.
    pub fn update_all(&mut self, mut f: impl FnMut(&mut Component)) {
        self.map.values_mut().for_each(&mut f);
        self.per_host = count_per_host(&self.map);
    }

    /// How many registered components are placed on `host`.
    pub fn on_host(&self, host: &str) -> u64 {
        self.per_host.get(host).copied().unwrap_or(0)
    }

    fn bump(&mut self, host: &str, add: bool) {
        if add {
            match self.per_host.get_mut(host) {
                Some(n) => *n += 1,
                None => {
                    self.per_host.insert(host.to_owned(), 1);
                }
            }
            return;
        }
        if let Some(n) = self.per_host.get_mut(host) {
            *n -= 1;
            if *n == 0 {
                self.per_host.remove(host);
            }
        }
    }
}

fn count_per_host(map: &BTreeMap<ComponentId, Component>) -> BTreeMap<String, u64> {
    let mut per_host = BTreeMap::new();
    for c in map.values() {
        *per_host.entry(c.placement.host.clone()).or_default() += 1;
    }
    per_host
}

impl Deref for Components {
    type Target = BTreeMap<ComponentId, Component>;

    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl PartialEq for Components {
    fn eq(&self, other: &Self) -> bool {
        self.map == other.map
    }
}

impl<'a> IntoIterator for &'a Components {
    type Item = (&'a ComponentId, &'a Component);
    type IntoIter = std::collections::btree_map::Iter<'a, ComponentId, Component>;

    fn into_iter(self) -> Self::IntoIter {
        self.map.iter()
    }
}

impl FromIterator<(ComponentId, Component)> for Components {
    fn from_iter<I: IntoIterator<Item = (ComponentId, Component)>>(iter: I) -> Self {
        let map: BTreeMap<_, _> = iter.into_iter().collect();
        let per_host = count_per_host(&map);
        Self { map, per_host }
    }
}

impl Serialize for Components {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.map.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Components {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<ComponentId, Component>::deserialize(d)?;
        let per_host = count_per_host(&map);
        Ok(Self { map, per_host })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    fn on(id: &str, host: &str) -> Component {
        fixtures::component(id, "g", host, "z1")
    }

    fn id(s: &str) -> ComponentId {
        ComponentId::new(s.to_owned()).unwrap()
    }

    #[test]
    fn the_count_per_host_follows_every_change_and_survives_a_round_trip() {
        let mut cs = Components::default();
        cs.insert(id("a"), on("a", "h1"));
        cs.insert(id("b"), on("b", "h1"));
        cs.insert(id("c"), on("c", "h2"));
        assert_eq!(
            (cs.on_host("h1"), cs.on_host("h2"), cs.on_host("h3")),
            (2, 1, 0)
        );
        // Replaced on another host, moved in place, removed.
        cs.insert(id("a"), on("a", "h2"));
        assert_eq!((cs.on_host("h1"), cs.on_host("h2")), (1, 2));
        cs.update(&id("b"), |c| c.placement.host = "h3".into());
        assert_eq!((cs.on_host("h1"), cs.on_host("h3")), (0, 1));
        cs.remove(&id("c"));
        assert_eq!(cs.on_host("h2"), 1);
        assert_eq!(cs.update(&id("gone"), |_| ()), None);
        cs.update_all(|c| c.placement.host = "h9".into());
        assert_eq!((cs.on_host("h9"), cs.on_host("h2")), (2, 0));

        let bytes = postcard::to_allocvec(&cs).unwrap();
        let plain: BTreeMap<ComponentId, Component> = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(plain, *cs, "encoded as the plain map");
        let back: Components = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, cs);
        assert_eq!(back.per_host, cs.per_host);
    }
}

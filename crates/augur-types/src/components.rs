//! The registered components, with a count of them per host kept alongside.
//!
//! A host's room is checked on every upsert; counting the components on a host by scanning
//! all of them made registering N components on registered hosts O(N²) on every replica
//! (29 ms a command at a million components, `benches/state_apply.rs`). The count is an
//! [`IndexedMap`]'s index, kept by every change and rebuilt when the map is deserialized.

use std::collections::BTreeMap;

use crate::indexed::{IndexedMap, MapIndex};
use crate::{Component, ComponentId};

/// Components by id, with how many are placed on each host.
pub type Components = IndexedMap<ComponentId, Component, PerHost>;

/// Components a host holds, by host name.
#[derive(Debug, Clone, Default)]
pub struct PerHost(BTreeMap<String, u64>);

impl MapIndex<ComponentId, Component> for PerHost {
    fn add(&mut self, _: &ComponentId, c: &Component) {
        match self.0.get_mut(&c.placement.host) {
            Some(n) => *n += 1,
            None => {
                self.0.insert(c.placement.host.clone(), 1);
            }
        }
    }

    fn remove(&mut self, _: &ComponentId, c: &Component) {
        if let Some(n) = self.0.get_mut(&c.placement.host) {
            *n -= 1;
            if *n == 0 {
                self.0.remove(&c.placement.host);
            }
        }
    }
}

impl Components {
    /// How many registered components are placed on `host`.
    pub fn on_host(&self, host: &str) -> u64 {
        self.index.0.get(host).copied().unwrap_or(0)
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
        assert_eq!(back.index.0, cs.index.0);
    }
}

//! A map with a derived index kept beside it: the replicated state's maps that commands
//! must search by something other than their key ([`crate::Components`] by host,
//! [`crate::Shadows`] by in-flight shadow, [`crate::Plans`] by component and status).
//!
//! Every change goes through a method here, so no caller can leave the index stale (there is
//! no `DerefMut`); the index is never serialized and is rebuilt when the map is
//! deserialized, so snapshots keep the plain map's encoding, and equality is the map's.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::Deref;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What an [`IndexedMap`] keeps beside its map: told of every entry that comes and goes.
pub trait MapIndex<K, V>: Default {
    fn add(&mut self, key: &K, value: &V);
    fn remove(&mut self, key: &K, value: &V);
}

/// A `BTreeMap` and an index derived from it; reads go through `Deref` to the map.
#[derive(Debug, Clone)]
pub struct IndexedMap<K, V, X> {
    pub(crate) map: BTreeMap<K, V>,
    pub(crate) index: X,
}

impl<K: Ord + Clone, V, X: MapIndex<K, V>> IndexedMap<K, V, X> {
    /// Adds or replaces `key`'s value; answers the value it replaced.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        if let Some(old) = self.map.get(&key) {
            self.index.remove(&key, old);
        }
        self.index.add(&key, &value);
        self.map.insert(key, value)
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        let old = self.map.remove(key)?;
        self.index.remove(key, &old);
        Some(old)
    }

    /// Changes one value in place; the index follows.
    pub fn update<T>(&mut self, key: &K, f: impl FnOnce(&mut V) -> T) -> Option<T> {
        let value = self.map.get_mut(key)?;
        self.index.remove(key, value);
        let out = f(value);
        self.index.add(key, value);
        Some(out)
    }

    /// Changes every value in place (tests and the simulator); the index is rebuilt.
    pub fn update_all(&mut self, f: impl FnMut(&mut V)) {
        self.map.values_mut().for_each(f);
        self.index = index_of(&self.map);
    }
}

impl<K, V, X: Default> Default for IndexedMap<K, V, X> {
    fn default() -> Self {
        Self {
            map: BTreeMap::new(),
            index: X::default(),
        }
    }
}

fn index_of<K, V, X: MapIndex<K, V>>(map: &BTreeMap<K, V>) -> X {
    let mut index = X::default();
    for (k, v) in map {
        index.add(k, v);
    }
    index
}

impl<K, V, X> Deref for IndexedMap<K, V, X> {
    type Target = BTreeMap<K, V>;

    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl<K: PartialEq, V: PartialEq, X> PartialEq for IndexedMap<K, V, X> {
    fn eq(&self, other: &Self) -> bool {
        self.map == other.map
    }
}

impl<'a, K, V, X> IntoIterator for &'a IndexedMap<K, V, X> {
    type Item = (&'a K, &'a V);
    type IntoIter = std::collections::btree_map::Iter<'a, K, V>;

    fn into_iter(self) -> Self::IntoIter {
        self.map.iter()
    }
}

impl<K: Ord + Clone, V, X: MapIndex<K, V>> FromIterator<(K, V)> for IndexedMap<K, V, X> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let map: BTreeMap<K, V> = iter.into_iter().collect();
        let index = index_of(&map);
        Self { map, index }
    }
}

impl<K: Serialize, V: Serialize, X> Serialize for IndexedMap<K, V, X> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.map.serialize(s)
    }
}

impl<'de, K, V, X> Deserialize<'de> for IndexedMap<K, V, X>
where
    K: Ord + DeserializeOwned,
    V: DeserializeOwned,
    X: MapIndex<K, V>,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<K, V>::deserialize(d)?;
        let index = index_of(&map);
        Ok(Self { map, index })
    }
}

//! The shard map: which controller node owns each component's telemetry and forecasts, and
//! which one keeps a standby copy of its windows.
//!
//! A component belongs to shard `fnv1a(id) % SHARD_COUNT`, a hash that is the same on every
//! node and every build. Each shard has an owner and, when the cluster has two nodes or more,
//! a standby on another node. Both take the shard's samples (the node that receives a sample
//! forwards it), so the standby's windows are as warm as the owner's: when the owner dies, the
//! leader makes the standby the owner and picks a new standby, and forecasts go on from warm
//! windows.

use serde::{Deserialize, Serialize};

use crate::command::Rejection;
use crate::NodeId;

/// How many shards the components are spread over.
pub const SHARD_COUNT: usize = 64;

/// The shard of a component id: FNV-1a (64-bit) of its bytes, modulo [`SHARD_COUNT`].
pub fn shard_of(id: &str) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % SHARD_COUNT as u64) as usize
}

/// Who serves one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardAssignment {
    pub owner: NodeId,
    pub standby: Option<NodeId>,
}

/// Every shard's owner and standby, with the number of the change that made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMap {
    /// Bumped by every accepted change; a change names the epoch it was computed from.
    pub epoch: u64,
    /// One entry per shard, [`SHARD_COUNT`] of them.
    pub shards: Vec<ShardAssignment>,
}

impl ShardMap {
    /// Who serves `component`.
    pub fn assignment(&self, component: &str) -> ShardAssignment {
        self.shards[shard_of(component)]
    }

    /// Whether `node` owns or stands by for `component`.
    pub fn serves(&self, node: NodeId, component: &str) -> bool {
        let a = self.assignment(component);
        a.owner == node || a.standby == Some(node)
    }

    /// How many shards `node` owns and stands by for.
    pub fn load_of(&self, node: NodeId) -> (usize, usize) {
        let owned = self.shards.iter().filter(|a| a.owner == node).count();
        let standby = self
            .shards
            .iter()
            .filter(|a| a.standby == Some(node))
            .count();
        (owned, standby)
    }

    /// Checks the shape of a proposed map: one entry per shard, no node standing by for a
    /// shard it owns, no node 0.
    pub fn validate(&self) -> Result<(), Rejection> {
        let bad = |reason: String| Err(Rejection::InvalidInput { reason });
        if self.shards.len() != SHARD_COUNT {
            return bad(format!(
                "shard map has {} shards, not {SHARD_COUNT}",
                self.shards.len()
            ));
        }
        for (i, a) in self.shards.iter().enumerate() {
            if a.owner == 0 || a.standby == Some(0) {
                return bad(format!("shard {i} names node 0; node ids start at 1"));
            }
            if a.standby == Some(a.owner) {
                return bad(format!(
                    "shard {i}: node {} cannot be owner and standby",
                    a.owner
                ));
            }
        }
        Ok(())
    }

    /// The map `live` nodes should serve, from `current` (none yet: a fresh spread), or `None`
    /// when nothing needs to change. `live` must not be empty.
    ///
    /// Moves as little as it can: a dead owner's shard goes to its standby (its windows are
    /// warm), or to the least loaded live node when the standby is dead too (cold); every
    /// shard whose standby is missing or dead gets the live node other than its owner that
    /// stands by for the fewest shards. Then, unless this map hands shards of a dead owner
    /// over, owners even out (to within one shard) by trading roles with standbys that
    /// `current` already named, and standby roles even out the same way.
    ///
    /// Every standby `current` names counts as warm here; see [`ShardMap::rebalanced_when`].
    pub fn rebalanced(current: Option<&ShardMap>, live: &[NodeId]) -> Option<ShardMap> {
        Self::rebalanced_when(current, live, |_| true)
    }

    /// As [`ShardMap::rebalanced`], but owners even out only by trading roles with standbys
    /// for which `warm` holds: a node that has finished warming the components `current`
    /// gave it (its windows were filled from the owner's), so a trade never hands a shard to
    /// a copy still being warmed.
    pub fn rebalanced_when(
        current: Option<&ShardMap>,
        live: &[NodeId],
        warm: impl Fn(NodeId) -> bool,
    ) -> Option<ShardMap> {
        let mut live: Vec<NodeId> = live.to_vec();
        live.sort_unstable();
        live.dedup();
        if live.is_empty() {
            return None;
        }
        let Some(current) = current else {
            let n = live.len();
            let shards = (0..SHARD_COUNT)
                .map(|i| ShardAssignment {
                    owner: live[i % n],
                    standby: (n > 1).then(|| live[(i + 1) % n]),
                })
                .collect();
            return Some(ShardMap { epoch: 0, shards });
        };
        let alive = |n: NodeId| live.binary_search(&n).is_ok();
        let mut shards = current.shards.clone();
        // A map that hands a dead node's shards over changes nothing else of ownership.
        let handover = shards.iter().any(|a| !alive(a.owner));
        let count = |shards: &[ShardAssignment], n: NodeId, standby: bool| {
            shards
                .iter()
                .filter(|a| {
                    if standby {
                        a.standby == Some(n)
                    } else {
                        a.owner == n
                    }
                })
                .count()
        };
        for i in 0..shards.len() {
            let a = shards[i];
            if !alive(a.owner) {
                shards[i] = match a.standby.filter(|&s| alive(s)) {
                    Some(s) => ShardAssignment {
                        owner: s,
                        standby: None,
                    },
                    None => {
                        let owner = *live
                            .iter()
                            .min_by_key(|&&n| (count(&shards, n, false), n))
                            .expect("live is not empty");
                        ShardAssignment {
                            owner,
                            standby: None,
                        }
                    }
                };
            }
        }
        for i in 0..shards.len() {
            let a = shards[i];
            if a.standby.is_some_and(|s| alive(s) && s != a.owner) {
                continue;
            }
            shards[i].standby = live
                .iter()
                .copied()
                .filter(|&n| n != a.owner)
                .min_by_key(|&n| (count(&shards, n, true), n));
        }
        // Owners even out too, one shard at a time, but only by trading roles with a standby
        // that already was one in the current map and has finished warming: it has taken the
        // shard's samples and its windows were filled from the owner's, so forecasts go on
        // from a warm copy, and the old owner stays on as its standby. A node that came back
        // therefore gets standby roles in one map and owns some once it is warm.
        loop {
            if handover {
                break;
            }
            let idlest = *live
                .iter()
                .min_by_key(|&&n| (count(&shards, n, false), n))
                .expect("live");
            if !warm(idlest) {
                break;
            }
            let floor = count(&shards, idlest, false) + 1;
            // Of the shards it stood by for already, one of the busiest owner's.
            let Some(i) = (0..shards.len())
                .filter(|&i| {
                    shards[i].standby == Some(idlest)
                        && current.shards[i].standby == Some(idlest)
                        && count(&shards, shards[i].owner, false) > floor
                })
                .max_by_key(|&i| (count(&shards, shards[i].owner, false), shards[i].owner))
            else {
                break;
            };
            let owner = shards[i].owner;
            shards[i] = ShardAssignment {
                owner: idlest,
                standby: Some(owner),
            };
        }
        // A node that came back (or joined) takes standby roles from the busiest ones, one
        // at a time, until no two live nodes differ by more than one. A moved standby starts
        // cold and is warmed from the owner.
        loop {
            let by_load = |n: &NodeId| (count(&shards, *n, true), *n);
            let busiest = *live.iter().max_by_key(|n| by_load(n)).expect("live");
            let idlest = *live.iter().min_by_key(|n| by_load(n)).expect("live");
            if count(&shards, busiest, true) <= count(&shards, idlest, true) + 1 {
                break;
            }
            let Some(i) = (0..shards.len())
                .find(|&i| shards[i].standby == Some(busiest) && shards[i].owner != idlest)
            else {
                break;
            };
            shards[i].standby = Some(idlest);
        }
        (shards != current.shards).then_some(ShardMap {
            epoch: current.epoch,
            shards,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_shard_of_an_id_is_fixed() {
        // The hash is part of the wire contract between nodes: it must never change.
        assert_eq!(shard_of(""), (0xcbf2_9ce4_8422_2325u64 % 64) as usize);
        assert_eq!(shard_of("db-1"), shard_of("db-1"));
        let spread: std::collections::BTreeSet<usize> =
            (0..1000).map(|i| shard_of(&format!("c{i}"))).collect();
        assert_eq!(spread.len(), SHARD_COUNT);
    }

    #[test]
    fn a_fresh_map_spreads_owners_and_standbys() {
        let m = ShardMap::rebalanced(None, &[3, 1, 2]).unwrap();
        m.validate().unwrap();
        for n in 1..=3 {
            let (owned, standby) = m.load_of(n);
            assert!((21..=22).contains(&owned), "node {n} owns {owned}");
            assert!((21..=22).contains(&standby), "node {n} stands by {standby}");
        }
        let single = ShardMap::rebalanced(None, &[7]).unwrap();
        assert!(single
            .shards
            .iter()
            .all(|a| a.owner == 7 && a.standby.is_none()));
    }

    #[test]
    fn a_dead_owner_hands_its_shards_to_their_standbys() {
        let m = ShardMap::rebalanced(None, &[1, 2, 3]).unwrap();
        let after = ShardMap::rebalanced(Some(&m), &[1, 3]).unwrap();
        after.validate().unwrap();
        for (before, now) in m.shards.iter().zip(&after.shards) {
            if before.owner == 2 {
                assert_eq!(
                    Some(now.owner),
                    before.standby,
                    "the warm standby takes over"
                );
            } else {
                assert_eq!(now.owner, before.owner, "live owners keep their shards");
            }
            assert!(now.standby.is_some() && now.standby != Some(2));
        }
        // The next map evens the owners out between the two (node 3 stood by for all of node
        // 2's shards), by trades with warm standbys; then it is settled.
        let after = ShardMap::rebalanced(Some(&after), &[1, 3]).unwrap();
        let owned: Vec<usize> = [1, 3].iter().map(|&n| after.load_of(n).0).collect();
        assert_eq!(owned, vec![32, 32]);
        assert_eq!(ShardMap::rebalanced(Some(&after), &[1, 3]), None);
        // Node 2 comes back: it takes standby roles first, not shards from warm owners.
        let back = ShardMap::rebalanced(Some(&after), &[1, 2, 3]).unwrap();
        back.validate().unwrap();
        assert_eq!(back.load_of(2).0, 0);
        let standbys: Vec<usize> = (1..=3).map(|n| back.load_of(n).1).collect();
        assert!(
            standbys.iter().all(|&s| (21..=22).contains(&s)),
            "{standbys:?}"
        );
        for (a, b) in after.shards.iter().zip(&back.shards) {
            assert_eq!(a.owner, b.owner);
        }
        // While it is still warming those standby copies, it takes no ownership.
        let warming = ShardMap::rebalanced_when(Some(&back), &[1, 2, 3], |n| n != 2);
        assert!(
            warming.as_ref().is_none_or(|m| m.load_of(2).0 == 0),
            "{warming:?}"
        );
        // Once warm, in the next map it owns its share again, each shard taken from the owner
        // it stood by for, which stays on as the standby; then the map is settled.
        let even = ShardMap::rebalanced(Some(&back), &[1, 2, 3]).unwrap();
        even.validate().unwrap();
        let owned: Vec<usize> = (1..=3).map(|n| even.load_of(n).0).collect();
        assert!(owned.iter().all(|&o| (21..=22).contains(&o)), "{owned:?}");
        for (b, e) in back.shards.iter().zip(&even.shards) {
            if e.owner != b.owner {
                assert_eq!((Some(e.owner), e.standby), (b.standby, Some(b.owner)));
            }
        }
        let standbys: Vec<usize> = (1..=3).map(|n| even.load_of(n).1).collect();
        assert!(
            standbys.iter().all(|&s| (20..=23).contains(&s)),
            "{standbys:?}"
        );
        let settled = ShardMap::rebalanced(Some(&even), &[1, 2, 3]).unwrap_or(even.clone());
        assert_eq!(ShardMap::rebalanced(Some(&settled), &[1, 2, 3]), None);
    }

    #[test]
    fn a_map_with_a_bad_shape_is_refused() {
        let mut m = ShardMap::rebalanced(None, &[1, 2]).unwrap();
        m.shards[5].standby = Some(m.shards[5].owner);
        assert!(m.validate().unwrap_err().to_string().contains("shard 5"));
        m.shards.pop();
        assert!(m.validate().unwrap_err().to_string().contains("63 shards"));
    }

    #[test]
    fn a_map_computed_from_an_old_epoch_is_refused() {
        use crate::{Applied, Command, ControlState};
        let mut state = ControlState::default();
        let first = ShardMap::rebalanced(None, &[1, 2]).unwrap();
        assert_eq!(
            state.apply(1, &Command::SetShards(first)),
            Ok(Applied::Done)
        );
        assert_eq!(state.shards.as_ref().unwrap().epoch, 1);
        // A deposed leader's map, computed before the first one: refused, nothing changes.
        let stale = ShardMap::rebalanced(None, &[3]).unwrap();
        let before = state.clone();
        assert_eq!(
            state.apply(2, &Command::SetShards(stale)),
            Err(Rejection::StaleShardMap {
                from: 0,
                current: 1
            })
        );
        assert_eq!(state, before);
        let next = ShardMap::rebalanced(state.shards.as_ref(), &[1]).unwrap();
        assert_eq!(state.apply(2, &Command::SetShards(next)), Ok(Applied::Done));
        let now = state.shards.as_ref().unwrap();
        assert_eq!(now.epoch, 2);
        assert_eq!(now.load_of(1), (SHARD_COUNT, 0));
    }

    proptest! {
        #[test]
        fn every_shard_is_served_by_live_nodes(
            first in proptest::collection::btree_set(1u64..6, 1..5),
            then in proptest::collection::btree_set(1u64..6, 1..5),
        ) {
            let first: Vec<u64> = first.into_iter().collect();
            let then: Vec<u64> = then.into_iter().collect();
            let m = ShardMap::rebalanced(None, &first).unwrap();
            let after = ShardMap::rebalanced(Some(&m), &then).unwrap_or(m.clone());
            after.validate().unwrap();
            for (before, a) in m.shards.iter().zip(&after.shards) {
                prop_assert!(then.contains(&a.owner));
                prop_assert_eq!(a.standby.is_some(), then.len() > 1);
                if let Some(s) = a.standby {
                    prop_assert!(then.contains(&s) && s != a.owner);
                }
                // A live owner keeps its shard, or trades roles with its standby of the map
                // before (a warm copy).
                if then.contains(&before.owner) {
                    prop_assert!(a.owner == before.owner || Some(a.owner) == before.standby);
                }
            }
        }
    }
}

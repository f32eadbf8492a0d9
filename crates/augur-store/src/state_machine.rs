use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use augur_types::{Applied, ControlState};
use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder,
    StorageError, StorageIOError, StoredMembership,
};
use rocksdb::{WriteOptions, DB};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::error::StoreError;
use crate::gate::position;
use crate::types::{CommandResult, TypeConfig};
use crate::SnapshotGate;
use crate::CF_SM;

type NodeId = u64;
type StorageResult<T> = Result<T, StorageError<NodeId>>;

const KEY_SNAPSHOT: &[u8] = b"snapshot";

/// What the state machine holds in memory.
#[derive(Debug, Default)]
struct SmData {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    state: ControlState,
}

/// A snapshot as persisted in RocksDB: its meta and the serialized state.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, BasicNode>,
    data: Vec<u8>,
}

struct Shared {
    db: Arc<DB>,
    data: RwLock<SmData>,
    /// Distinguishes snapshots built at the same log position.
    snapshot_seq: AtomicU64,
    /// Last applied log index, for readers that wait for new state (action watchers).
    applied_tx: watch::Sender<u64>,
    /// One snapshot persisted at a time: openraft builds snapshots in a task of their own, so
    /// a build at an older position can finish after a newer snapshot was installed, and must
    /// not replace it.
    persisting: tokio::sync::Mutex<()>,
    /// The position (log index + 1; 0: none) of the snapshot on disk, which the log store
    /// reads too.
    gate: SnapshotGate,
}

/// The state machine: the [`ControlState`] in memory, made durable by the Raft log and by
/// snapshots persisted in RocksDB. On restart it is restored from the last snapshot and
/// openraft re-applies the committed entries after it.
#[derive(Clone)]
pub struct StateMachineStore {
    shared: Arc<Shared>,
}

/// A read-only handle on the applied state, for queries that do not go through Raft.
#[derive(Clone)]
pub struct StateReader {
    shared: Arc<Shared>,
}

impl StateReader {
    /// Runs `f` on the current applied state.
    pub fn read<T>(&self, f: impl FnOnce(&ControlState) -> T) -> T {
        f(&self.shared.data.read().expect("state lock poisoned").state)
    }

    /// The last applied log index.
    pub fn last_applied_index(&self) -> u64 {
        self.guard().last_applied.map(|l| l.index).unwrap_or(0)
    }

    /// A receiver that changes whenever entries are applied.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.applied_tx.subscribe()
    }

    /// Waits until entries up to `index` are applied, for at most `within`: whether they are.
    pub async fn wait_applied(&self, index: u64, within: std::time::Duration) -> bool {
        let mut applied = self.subscribe();
        let reached = tokio::time::timeout(within, applied.wait_for(|&a| a >= index)).await;
        matches!(reached, Ok(Ok(_)))
    }

    fn guard(&self) -> RwLockReadGuard<'_, SmData> {
        self.shared.data.read().expect("state lock poisoned")
    }
}

fn any(e: impl std::error::Error + 'static) -> AnyError {
    AnyError::new(&e)
}

impl StateMachineStore {
    pub(crate) fn restore(db: Arc<DB>) -> Result<Self, StoreError> {
        let cf = db.cf_handle(CF_SM).expect("column family created at open");
        let mut data = SmData::default();
        let stored = db
            .get_cf(cf, KEY_SNAPSHOT)
            .map_err(|e| StoreError::CorruptSnapshot {
                reason: e.to_string(),
            })?;
        if let Some(bytes) = stored {
            let snap: StoredSnapshot =
                postcard::from_bytes(&bytes).map_err(|e| StoreError::CorruptSnapshot {
                    reason: e.to_string(),
                })?;
            data.state = decode_state(&snap.data).map_err(|e| StoreError::CorruptSnapshot {
                reason: e.to_string(),
            })?;
            data.last_applied = snap.meta.last_log_id;
            data.membership = snap.meta.last_membership;
        }
        let (applied_tx, _) = watch::channel(data.last_applied.map(|l| l.index).unwrap_or(0));
        let persisted = position(data.last_applied.as_ref());
        Ok(Self {
            shared: Arc::new(Shared {
                db,
                data: RwLock::new(data),
                snapshot_seq: AtomicU64::new(0),
                applied_tx,
                persisting: tokio::sync::Mutex::new(()),
                gate: SnapshotGate::new(persisted),
            }),
        })
    }

    /// The gate that keeps the log's purge behind a snapshot being installed: the node's
    /// Raft service announces each snapshot it hands to openraft on it.
    pub fn snapshot_gate(&self) -> SnapshotGate {
        self.shared.gate.clone()
    }

    /// A read handle on the applied state.
    pub fn reader(&self) -> StateReader {
        StateReader {
            shared: self.shared.clone(),
        }
    }

    fn notify(&self, index: u64) {
        self.shared.applied_tx.send_replace(index);
    }

    /// Persists a snapshot (fsync'd) before openraft may purge the log behind it.
    async fn persist_snapshot(
        &self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        data: Vec<u8>,
    ) -> StorageResult<StoredSnapshot> {
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        self.persist(&stored)
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), e))?;
        Ok(stored)
    }

    /// Writes `snap` (fsync'd) unless a snapshot at a later position is already on disk.
    async fn persist(&self, snap: &StoredSnapshot) -> Result<(), AnyError> {
        let at = position(snap.meta.last_log_id.as_ref());
        let _one = self.shared.persisting.lock().await;
        let persisted = self.shared.gate.persisted_at();
        if at < persisted {
            tracing::debug!(
                at,
                persisted,
                "an older snapshot is not persisted over a newer one"
            );
            return Ok(());
        }
        let bytes = postcard::to_allocvec(snap).map_err(any)?;
        let db = self.shared.db.clone();
        tokio::task::spawn_blocking(move || {
            let cf = db.cf_handle(CF_SM).expect("column family created at open");
            let mut opts = WriteOptions::default();
            opts.set_sync(true);
            db.put_cf_opt(cf, KEY_SNAPSHOT, bytes, &opts)
        })
        .await
        .map_err(any)?
        .map_err(any)?;
        self.shared.gate.persisted(at);
        Ok(())
    }

    fn load_stored(&self) -> Result<Option<StoredSnapshot>, AnyError> {
        let cf = self
            .shared
            .db
            .cf_handle(CF_SM)
            .expect("column family created at open");
        match self.shared.db.get_cf(cf, KEY_SNAPSHOT).map_err(any)? {
            None => Ok(None),
            Some(bytes) => postcard::from_bytes(&bytes).map(Some).map_err(any),
        }
    }
}

fn decode_state(bytes: &[u8]) -> Result<ControlState, postcard::Error> {
    let mut state: ControlState = postcard::from_bytes(bytes)?;
    state.reindex();
    Ok(state)
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        // Serialized on a blocking thread, not on one of the runtime's workers (the Raft
        // core's heartbeats run there). Applies wait for it; readers go on until one does
        // (std's RwLock then queues new readers behind the waiting writer).
        let shared = self.shared.clone();
        let built = tokio::task::spawn_blocking(move || {
            let d = shared.data.read().expect("state lock poisoned");
            let seq = shared.snapshot_seq.fetch_add(1, Ordering::Relaxed) + 1;
            let snapshot_id = match d.last_applied {
                Some(l) => format!("{}-{}-{seq}", l.leader_id.term, l.index),
                None => format!("none-{seq}"),
            };
            let meta = SnapshotMeta {
                last_log_id: d.last_applied,
                last_membership: d.membership.clone(),
                snapshot_id,
            };
            let data = postcard::to_allocvec(&d.state)
                .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), any(e)))?;
            Ok::<_, StorageError<NodeId>>((meta, data))
        })
        .await;
        let (meta, data) = built.map_err(|e| StorageIOError::write_snapshot(None, any(e)))??;
        let stored = self.persist_snapshot(&meta, data).await?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>)> {
        let d = self.shared.data.read().expect("state lock poisoned");
        Ok((d.last_applied, d.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<CommandResult>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut out = Vec::new();
        let last = {
            let mut d = self.shared.data.write().expect("state lock poisoned");
            for entry in entries {
                d.last_applied = Some(entry.log_id);
                let res = match entry.payload {
                    EntryPayload::Blank => Ok(Applied::Done),
                    EntryPayload::Normal(cmd) => d.state.apply(entry.log_id.leader_id.term, &cmd),
                    EntryPayload::Membership(m) => {
                        d.membership = StoredMembership::new(Some(entry.log_id), m);
                        Ok(Applied::Done)
                    }
                };
                out.push(res);
            }
            d.last_applied.map(|l| l.index).unwrap_or(0)
        };
        self.notify(last);
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let data = snapshot.into_inner();
        let state = decode_state(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), any(e)))?;
        self.persist_snapshot(meta, data).await?;
        {
            let mut d = self.shared.data.write().expect("state lock poisoned");
            d.state = state;
            d.last_applied = meta.last_log_id;
            d.membership = meta.last_membership.clone();
        }
        self.notify(meta.last_log_id.map(|l| l.index).unwrap_or(0));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let stored = self
            .load_stored()
            .map_err(|e| StorageIOError::read_snapshot(None, e))?;
        Ok(stored.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;

    use super::*;

    fn meta_at(index: u64) -> SnapshotMeta<NodeId, BasicNode> {
        SnapshotMeta {
            last_log_id: Some(LogId::new(CommittedLeaderId::new(1, 1), index)),
            last_membership: StoredMembership::default(),
            snapshot_id: format!("1-{index}"),
        }
    }

    fn state_bytes() -> Vec<u8> {
        postcard::to_allocvec(&ControlState::default()).unwrap()
    }

    /// openraft builds snapshots in a task of their own: a build at an older position that
    /// finishes after a newer snapshot was installed must not replace it on disk (a restart
    /// would then find entries purged that no snapshot covers).
    #[tokio::test]
    async fn an_older_snapshot_never_replaces_a_newer_one_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (_log, mut sm) = crate::open(dir.path()).unwrap();
        sm.install_snapshot(&meta_at(200), Box::new(Cursor::new(state_bytes())))
            .await
            .unwrap();
        // The late build, at 100.
        sm.persist_snapshot(&meta_at(100), state_bytes())
            .await
            .unwrap();
        let current = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta.last_log_id.unwrap().index, 200);
        // A newer one still replaces it, and a restart finds the newest.
        sm.persist_snapshot(&meta_at(300), state_bytes())
            .await
            .unwrap();
        drop((_log, sm));
        let (_log, mut sm) = crate::open(dir.path()).unwrap();
        let current = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta.last_log_id.unwrap().index, 300);
    }

    /// A follower's purge up to a snapshot it is installing is put off until the install is
    /// on disk: openraft's call returns at once, a crash before the install leaves the whole
    /// log, and the entries go once the snapshot is persisted.
    #[tokio::test]
    async fn a_purge_is_put_off_until_the_snapshot_announced_to_cover_it_is_on_disk() {
        use openraft::storage::RaftLogStorage;
        let dir = tempfile::tempdir().unwrap();
        let (mut log, sm) = crate::open(dir.path()).unwrap();
        let upto = meta_at(200).last_log_id.unwrap();
        sm.snapshot_gate().expect(Some(&upto));
        log.purge(upto).await.unwrap();
        assert_eq!(log.get_log_state().await.unwrap().last_purged_log_id, None);
        // Killed here: the restart finds the log as it was.
        drop((log, sm));
        let (mut log, mut sm) = crate::open(dir.path()).unwrap();
        assert_eq!(log.get_log_state().await.unwrap().last_purged_log_id, None);
        // Announced again (openraft resends it), installed: the purge follows.
        sm.snapshot_gate().expect(Some(&upto));
        log.purge(upto).await.unwrap();
        sm.install_snapshot(&meta_at(200), Box::new(Cursor::new(state_bytes())))
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while log.get_log_state().await.unwrap().last_purged_log_id != Some(upto) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the purge never ran"
            );
            tokio::task::yield_now().await;
        }
        // Past anything announced (the suite's purges, with no snapshot at all): at once.
        let later = meta_at(400).last_log_id.unwrap();
        log.purge(later).await.unwrap();
        assert_eq!(
            log.get_log_state().await.unwrap().last_purged_log_id,
            Some(later)
        );
    }

    /// Entries a follower takes right after a snapshot it is installing (openraft counts them
    /// present once it has decided to install) wait until the snapshot is on disk: written
    /// at once they would leave a hole in the log that a crash before the install turns
    /// into a node that cannot restart.
    #[tokio::test]
    async fn entries_past_a_snapshot_being_installed_wait_until_it_is_on_disk() {
        use std::time::Duration;
        let dir = tempfile::tempdir().unwrap();
        let (log, mut sm) = crate::open(dir.path()).unwrap();
        // Nothing announced: at once.
        log.no_hole_before(201).await.unwrap();
        let upto = meta_at(200).last_log_id.unwrap();
        sm.snapshot_gate().expect(Some(&upto));
        let wait = log.no_hole_before(201);
        tokio::pin!(wait);
        // One poll: still waiting for the install.
        assert!(tokio::time::timeout(Duration::ZERO, &mut wait)
            .await
            .is_err());
        sm.install_snapshot(&meta_at(200), Box::new(Cursor::new(state_bytes())))
            .await
            .unwrap();
        wait.await.unwrap();
        // Covered on disk now: at once.
        log.no_hole_before(201).await.unwrap();
    }
}

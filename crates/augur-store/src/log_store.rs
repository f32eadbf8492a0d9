use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    AnyError, Entry, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote,
};
use rocksdb::{WriteBatch, WriteOptions, DB};

use crate::types::TypeConfig;
use crate::SnapshotGate;
use crate::{CF_LOGS, CF_META};

type NodeId = u64;
type StorageResult<T> = Result<T, StorageError<NodeId>>;

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_PURGED: &[u8] = b"last_purged";

/// The Raft log in RocksDB: entries keyed by big-endian index in one column family, vote,
/// commit and purge marks in another.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    gate: SnapshotGate,
    /// Purges one at a time, so one put off ([`SnapshotGate`]) never moves the mark back.
    purging: Arc<tokio::sync::Mutex<()>>,
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn any(e: impl std::error::Error + 'static) -> AnyError {
    AnyError::new(&e)
}

/// How long an append that would leave a hole waits for the snapshot to cover it.
const HOLE_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

impl LogStore {
    pub(crate) fn new(db: Arc<DB>, gate: SnapshotGate) -> Self {
        Self {
            db,
            gate,
            purging: Arc::default(),
        }
    }

    /// The purge mark and the last log id on disk (the last entry's, else the purge mark).
    fn log_state(&self) -> StorageResult<LogState<TypeConfig>> {
        let last_purged: Option<LogId<NodeId>> =
            get_meta(&self.db, KEY_PURGED).map_err(StorageIOError::read_logs)?;
        let mut iter = self
            .db
            .iterator_cf(cf(&self.db, CF_LOGS), rocksdb::IteratorMode::End);
        let last = match iter.next() {
            Some(item) => {
                let (_, value) = item.map_err(|e| StorageIOError::read_logs(any(e)))?;
                let entry: Entry<TypeConfig> =
                    postcard::from_bytes(&value).map_err(|e| StorageIOError::read_logs(any(e)))?;
                Some(entry.log_id)
            }
            None => last_purged,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    /// Before entries from `first` are written: if they would not follow the last entry on
    /// disk and a snapshot being installed is to cover the gap, waits until it is on disk
    /// (see [`SnapshotGate::append_after`]), so the log on disk never has a hole that no
    /// snapshot on disk covers.
    pub(crate) async fn no_hole_before(&self, first: u64) -> Result<(), StorageError<NodeId>> {
        let Some(covered) = self.gate.append_after(first) else {
            return Ok(());
        };
        let last = self.log_state()?.last_log_id.map(|l| l.index);
        if last.is_some_and(|l| l + 1 >= first) {
            return Ok(());
        }
        if let Ok(true) = tokio::time::timeout(HOLE_WAIT, covered).await {
            return Ok(());
        }
        Err(StorageIOError::write_logs(AnyError::error(format!(
            "entries from {first} would leave a hole after {} in the log, and the snapshot \
             being installed to cover it was not on disk within {} s",
            last.map_or("nothing".to_owned(), |l| l.to_string()),
            HOLE_WAIT.as_secs()
        )))
        .into())
    }
}

/// The log index a key names.
fn log_index(key: &[u8]) -> Result<u64, StorageError<NodeId>> {
    let bytes: [u8; 8] = key.try_into().map_err(|_| {
        StorageIOError::read_logs(AnyError::error(format!(
            "a log key of {} bytes, not 8",
            key.len()
        )))
    })?;
    Ok(u64::from_be_bytes(bytes))
}

fn cf<'a>(db: &'a DB, name: &str) -> &'a rocksdb::ColumnFamily {
    db.cf_handle(name).expect("column family created at open")
}

fn get_meta<T: serde::de::DeserializeOwned>(db: &DB, key: &[u8]) -> Result<Option<T>, AnyError> {
    let Some(bytes) = db.get_cf(cf(db, CF_META), key).map_err(any)? else {
        return Ok(None);
    };
    postcard::from_bytes(&bytes).map(Some).map_err(any)
}

/// Writes `batch` and waits until it is on disk, on a blocking thread.
async fn write_synced(db: Arc<DB>, batch: WriteBatch) -> Result<(), AnyError> {
    tokio::task::spawn_blocking(move || {
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        db.write_opt(batch, &opts)
    })
    .await
    .map_err(any)?
    .map_err(any)
}

/// Deletes the entries up to `log_id` and records it as purged, unless a purge at or past it
/// is recorded already; `purging` keeps purges one at a time, so one put off
/// ([`SnapshotGate`]) never moves the mark back.
async fn write_purge(
    db: Arc<DB>,
    purging: &tokio::sync::Mutex<()>,
    log_id: LogId<NodeId>,
) -> Result<(), AnyError> {
    let _one = purging.lock().await;
    let done: Option<LogId<NodeId>> = get_meta(&db, KEY_PURGED)?;
    if done.is_some_and(|d| d.index >= log_id.index) {
        return Ok(());
    }
    let mut batch = WriteBatch::default();
    let bytes = postcard::to_allocvec(&log_id).map_err(any)?;
    batch.put_cf(cf(&db, CF_META), KEY_PURGED, bytes);
    batch.delete_range_cf(cf(&db, CF_LOGS), index_key(0), index_key(log_id.index + 1));
    write_synced(db, batch).await
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i + 1,
            Bound::Unbounded => 0,
        };
        let mut out = Vec::new();
        let iter = self.db.iterator_cf(
            cf(&self.db, CF_LOGS),
            rocksdb::IteratorMode::From(&index_key(start), rocksdb::Direction::Forward),
        );
        for item in iter {
            let (key, value) = item.map_err(|e| StorageIOError::read_logs(any(e)))?;
            let index = log_index(&key)?;
            if !range.contains(&index) {
                break;
            }
            let entry: Entry<TypeConfig> =
                postcard::from_bytes(&value).map_err(|e| StorageIOError::read_logs(any(e)))?;
            out.push(entry);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        self.log_state()
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        let mut batch = WriteBatch::default();
        let bytes = postcard::to_allocvec(vote).map_err(|e| StorageIOError::write_vote(any(e)))?;
        batch.put_cf(cf(&self.db, CF_META), KEY_VOTE, bytes);
        write_synced(self.db.clone(), batch)
            .await
            .map_err(StorageIOError::write_vote)?;
        Ok(())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        Ok(get_meta(&self.db, KEY_VOTE).map_err(StorageIOError::read_vote)?)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        metrics::gauge!("augur_raft_commit_index")
            .set(committed.map(|l| l.index).unwrap_or(0) as f64);
        // Advisory: losing it only means re-learning the commit index from the leader, so it
        // rides on the next synced write instead of paying an fsync of its own.
        let bytes = postcard::to_allocvec(&committed).map_err(|e| StorageIOError::write(any(e)))?;
        self.db
            .put_cf(cf(&self.db, CF_META), KEY_COMMITTED, bytes)
            .map_err(|e| StorageIOError::write(any(e)))?;
        Ok(())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        Ok(get_meta::<Option<LogId<NodeId>>>(&self.db, KEY_COMMITTED)
            .map_err(StorageIOError::read)?
            .flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        if let Some(first) = entries.first().map(|e| e.log_id.index) {
            self.no_hole_before(first).await?;
        }
        let mut batch = WriteBatch::default();
        let cf = cf(&self.db, CF_LOGS);
        for entry in entries {
            let bytes =
                postcard::to_allocvec(&entry).map_err(|e| StorageIOError::write_logs(any(e)))?;
            batch.put_cf(cf, index_key(entry.log_id.index), bytes);
        }
        // The callback means "on disk": only after the synced write returns.
        let res = write_synced(self.db.clone(), batch).await;
        let io_res = res
            .as_ref()
            .map(|_| ())
            .map_err(|e| std::io::Error::other(e.to_string()));
        callback.log_io_completed(io_res);
        res.map_err(StorageIOError::write_logs)?;
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            cf(&self.db, CF_LOGS),
            index_key(log_id.index).to_vec(),
            vec![0xffu8; 9],
        );
        write_synced(self.db.clone(), batch)
            .await
            .map_err(StorageIOError::write_logs)?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        if let Some(covered) = self.gate.purge_after(&log_id) {
            // Put off: the task holds neither the gate nor the database, so a store closed
            // first (the node stopping) ends it without a purge.
            let db = Arc::downgrade(&self.db);
            let purging = self.purging.clone();
            tokio::spawn(async move {
                if !covered.await {
                    return;
                }
                let Some(db) = db.upgrade() else { return };
                if let Err(e) = write_purge(db, &purging, log_id).await {
                    tracing::warn!(error = %e, upto = log_id.index, "put-off log purge failed");
                }
            });
            return Ok(());
        }
        write_purge(self.db.clone(), &self.purging, log_id)
            .await
            .map_err(StorageIOError::write_logs)?;
        Ok(())
    }
}

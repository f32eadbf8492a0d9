//! Augur's Raft storage: the openraft type configuration, a RocksDB log store, and the state
//! machine that holds the [`ControlState`](augur_types::ControlState).
//!
//! Hard rule: an append is acknowledged to openraft only after RocksDB's WAL is fsync'd, and
//! RocksDB types never leave this crate. The store implements openraft's two storage traits
//! and passes openraft's own storage test suite (`tests/suite.rs`).

mod error;
mod gate;
mod log_store;
mod state_machine;
mod types;

use std::path::Path;
use std::sync::Arc;

pub use error::StoreError;
pub use gate::SnapshotGate;
pub use log_store::LogStore;
pub use state_machine::{StateMachineStore, StateReader};
pub use types::{CommandResult, Raft, TypeConfig};

const CF_LOGS: &str = "logs";
const CF_META: &str = "meta";
const CF_SM: &str = "sm";

/// Opens (or creates) the store under `dir`: one RocksDB database shared by the log and the
/// state machine, which is restored from its last persisted snapshot.
pub fn open(dir: &Path) -> Result<(LogStore, StateMachineStore), StoreError> {
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    // Raft's log is small and written once; keep RocksDB's footprint modest.
    opts.set_max_background_jobs(2);
    opts.set_manual_wal_flush(false);
    let cfs = [CF_LOGS, CF_META, CF_SM]
        .into_iter()
        .map(|name| rocksdb::ColumnFamilyDescriptor::new(name, rocksdb::Options::default()));
    let db = rocksdb::DB::open_cf_descriptors(&opts, dir, cfs).map_err(|e| StoreError::Open {
        dir: dir.display().to_string(),
        reason: e.to_string(),
    })?;
    let db = Arc::new(db);
    let sm = StateMachineStore::restore(db.clone())?;
    Ok((LogStore::new(db, sm.snapshot_gate()), sm))
}

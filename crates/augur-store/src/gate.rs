//! Keeps a follower's log purge behind the snapshot it is installing.
//!
//! When a follower installs a snapshot from the leader, openraft 0.9 hands the install to the
//! state machine's worker and runs the purge of the log up to the snapshot right after,
//! without waiting for the install. Were the process killed after the purge reached the disk
//! but before the snapshot did, it would restart with entries purged that its older snapshot
//! does not cover, and could not start. So the node announces a snapshot it is about to hand
//! to openraft ([`SnapshotGate::expect`]), and a purge past the snapshot on disk that such a
//! snapshot is to cover is put off until that snapshot is persisted: the log store answers
//! openraft at once (its core never waits on the install) and deletes the entries later. A
//! crash in between leaves the older snapshot and the whole log, which restart fine. Purges
//! behind a snapshot the node built itself are never put off: a built snapshot is on disk
//! before openraft learns of it.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::LogId;
use tokio::sync::watch;

/// Shared by the log store, the state machine and the node's Raft service. Positions are a
/// log index + 1 (0: none).
#[derive(Clone)]
pub struct SnapshotGate(Arc<Inner>);

struct Inner {
    /// The position of the snapshot on disk.
    persisted: watch::Sender<u64>,
    /// The furthest position of a snapshot announced for install.
    expected: AtomicU64,
}

impl std::fmt::Debug for SnapshotGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotGate")
            .field("persisted", &*self.0.persisted.borrow())
            .field("expected", &self.0.expected.load(Ordering::Relaxed))
            .finish()
    }
}

/// A log id's position: its index + 1, 0 for none.
pub(crate) fn position(last: Option<&LogId<u64>>) -> u64 {
    last.map_or(0, |l| l.index + 1)
}

impl SnapshotGate {
    pub(crate) fn new(persisted: u64) -> Self {
        Self(Arc::new(Inner {
            persisted: watch::Sender::new(persisted),
            expected: AtomicU64::new(0),
        }))
    }

    /// A snapshot up to `last` is about to be handed to openraft for install: purges up to it
    /// wait until it is on disk.
    pub fn expect(&self, last: Option<&LogId<u64>>) {
        self.0.expected.fetch_max(position(last), Ordering::SeqCst);
    }

    /// The position of the snapshot on disk.
    pub(crate) fn persisted_at(&self) -> u64 {
        *self.0.persisted.borrow()
    }

    /// A snapshot at `position` is on disk.
    pub(crate) fn persisted(&self, position: u64) {
        self.0.persisted.send_if_modified(|p| {
            let newer = position > *p;
            *p = (*p).max(position);
            newer
        });
    }

    /// For an append whose first entry is at index `first`, while an announced snapshot
    /// reaching `first - 1` is not yet on disk: a future that resolves `true` once it is
    /// (`false` if the store closes first). `None`: nothing announced covers the entries
    /// before `first`, or it is already on disk. A guard: entries that do not follow the
    /// log on disk, written before the snapshot that covers the gap, would leave a hole that
    /// a crash before the install turns into a node that cannot restart. openraft 0.9.25
    /// runs the install before any later append (its engine waits for the install's reply),
    /// so this is not expected to wait; it keeps the log whole should that order change.
    pub(crate) fn append_after(
        &self,
        first: u64,
    ) -> Option<impl Future<Output = bool> + Send + 'static> {
        // The snapshot must reach index first - 1: position `first`.
        self.covered_at(first)
    }

    /// For a purge up to `upto` that would pass the snapshot on disk while an announced
    /// snapshot is to cover it: a future that resolves `true` once that snapshot is persisted
    /// (`false` if the store closes first: then the purge must not run). `None`: purge now.
    pub(crate) fn purge_after(
        &self,
        upto: &LogId<u64>,
    ) -> Option<impl Future<Output = bool> + Send + 'static> {
        self.covered_at(position(Some(upto)))
    }

    /// A future that resolves `true` once a snapshot at `want` or later is on disk, if one
    /// announced reaches `want` and none on disk does yet (`false` if the store closes first).
    fn covered_at(&self, want: u64) -> Option<impl Future<Output = bool> + Send + 'static> {
        if self.0.expected.load(Ordering::SeqCst) < want {
            return None;
        }
        let mut rx = self.0.persisted.subscribe();
        if *rx.borrow() >= want {
            return None;
        }
        Some(async move { rx.wait_for(|p| *p >= want).await.is_ok() })
    }
}

//! Fan-in without a reply channel per message: a shard sends one message to each of many
//! actors on its own thread, each adds its part to a shared accumulator, and the last part to
//! be dropped completes the whole. Cheaper than one request/reply each (a oneshot channel, a
//! waker and a future per message), which dominated the ingest and scoring paths.
//!
//! A part is counted out when it is dropped: after its handler ran, or undelivered (the
//! actor's mailbox closed), so the whole always completes.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

struct State<T> {
    /// Taken when the last part is dropped.
    acc: Option<T>,
    pending: usize,
    done: Option<oneshot::Sender<T>>,
}

/// One contributor's handle on the accumulator. Cloning adds a contributor.
pub(crate) struct Part<T> {
    shared: Arc<Mutex<State<T>>>,
}

impl<T> std::fmt::Debug for Part<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Part")
    }
}

/// An accumulator starting at `acc`: the dispatcher's own part, and the receiver of the
/// result once every part has been dropped.
pub(crate) fn gather<T>(acc: T) -> (Part<T>, oneshot::Receiver<T>) {
    let (tx, rx) = oneshot::channel();
    let state = State {
        acc: Some(acc),
        pending: 1,
        done: Some(tx),
    };
    (
        Part {
            shared: Arc::new(Mutex::new(state)),
        },
        rx,
    )
}

impl<T> Part<T> {
    /// Adds to the accumulator.
    pub(crate) fn add(&self, f: impl FnOnce(&mut T)) {
        if let Some(acc) = self
            .shared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .acc
            .as_mut()
        {
            f(acc);
        }
    }
}

impl<T> Clone for Part<T> {
    fn clone(&self) -> Self {
        self.shared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pending += 1;
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T> Drop for Part<T> {
    fn drop(&mut self) {
        let mut state = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        state.pending -= 1;
        if state.pending == 0 {
            if let (Some(done), Some(acc)) = (state.done.take(), state.acc.take()) {
                let _ = done.send(acc);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completes_when_the_last_part_is_dropped() {
        let (own, mut rx) = gather(0u32);
        let parts: Vec<_> = (0..3).map(|_| own.clone()).collect();
        drop(own);
        for (i, p) in parts.into_iter().enumerate() {
            assert!(rx.try_recv().is_err(), "not before part {i}");
            p.add(|n| *n += 1);
        }
        assert_eq!(rx.try_recv().unwrap(), 3);
    }
}

//! What each running conversation actor is at, readable without asking it.
//!
//! The admin view (`GET /api/admin/cluster`) lists the conversations a
//! node homes with their epoch, last sequence number and backlog. Asking
//! every actor would queue behind their work; instead each actor publishes
//! those numbers in atomics it alone writes (one store per commit batch, no
//! lock), and the node keeps the handles in a map touched only when actors
//! start and stop.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use storage::chat::ConvId;

/// One conversation actor's published numbers.
#[derive(Debug, Default)]
pub struct ConvStatus {
    epoch: AtomicU64,
    last_seq: AtomicU64,
    pending: AtomicU64,
}

impl ConvStatus {
    /// After activation: the epoch it holds and the last committed seq.
    pub fn activated(&self, epoch: u64, last_seq: u64) {
        self.epoch.store(epoch, Ordering::Relaxed);
        self.last_seq.store(last_seq, Ordering::Relaxed);
    }

    /// After a commit or a new send: the last committed seq and the sends
    /// waiting to be committed.
    pub fn progress(&self, last_seq: u64, pending: usize) {
        self.last_seq.store(last_seq, Ordering::Relaxed);
        self.pending.store(pending as u64, Ordering::Relaxed);
    }
}

/// A conversation as the admin view shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConvView {
    /// The conversation.
    pub conv_id: ConvId,
    /// The epoch its actor holds.
    pub epoch: u64,
    /// Its last committed sequence number.
    pub last_seq: u64,
    /// Sends received and not yet committed (the actor's backlog).
    pub pending: u64,
}

/// The published numbers of this node's running conversation actors.
#[derive(Debug, Default)]
pub struct ConvStatuses {
    running: Mutex<HashMap<ConvId, Arc<ConvStatus>>>,
}

impl ConvStatuses {
    /// Registers a starting actor's numbers (replacing a previous actor's).
    pub fn start(&self, conv_id: ConvId) -> Arc<ConvStatus> {
        let status = Arc::new(ConvStatus::default());
        self.lock().insert(conv_id, status.clone());
        status
    }

    /// Forgets an actor's numbers, unless a newer actor registered since.
    pub fn stop(&self, conv_id: ConvId, status: &Arc<ConvStatus>) {
        let mut running = self.lock();
        if running
            .get(&conv_id)
            .is_some_and(|s| Arc::ptr_eq(s, status))
        {
            running.remove(&conv_id);
        }
    }

    /// Forgets whatever is registered for the conversation (its actor
    /// died without stopping cleanly).
    pub fn forget(&self, conv_id: ConvId) {
        self.lock().remove(&conv_id);
    }

    /// Every running conversation, by id.
    pub fn views(&self) -> Vec<ConvView> {
        let mut views: Vec<ConvView> = self
            .lock()
            .iter()
            .map(|(&conv_id, s)| ConvView {
                conv_id,
                epoch: s.epoch.load(Ordering::Relaxed),
                last_seq: s.last_seq.load(Ordering::Relaxed),
                pending: s.pending.load(Ordering::Relaxed),
            })
            .collect();
        views.sort_by_key(|v| v.conv_id);
        views
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ConvId, Arc<ConvStatus>>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_actor_does_not_remove_its_successor() {
        let statuses = ConvStatuses::default();
        let old = statuses.start(5);
        let new = statuses.start(5);
        new.activated(2, 10);
        new.progress(11, 3);
        statuses.stop(5, &old);
        assert_eq!(
            statuses.views(),
            vec![ConvView {
                conv_id: 5,
                epoch: 2,
                last_seq: 11,
                pending: 3
            }]
        );
        statuses.stop(5, &new);
        assert!(statuses.views().is_empty());
    }
}

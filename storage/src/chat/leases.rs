//! Cluster membership leases: a node is live while its lease is unexpired.
//!
//! A lease that does not decode (written by a version of Parley whose
//! [`NodeLease`] had other fields) is treated as absent rather than as
//! corruption: leases are rewritten every heartbeat, so it only stands for
//! a node that has not renewed since the upgrade, and must not stop this
//! node from starting or from reading the others.

use super::{put, ChatStore, NodeLease};
use crate::keys;
use crate::{RangeOptions, Result};

impl ChatStore {
    /// Writes (or renews) a node's lease. Returns the lease it replaced, so
    /// a node can tell it was presumed dead (its old lease had expired).
    pub fn renew_lease(&self, lease: &NodeLease) -> Result<Option<NodeLease>> {
        self.db().run(|tx| {
            let previous = tx
                .get(&keys::NODE_LEASE.key(&(&lease.name,)))?
                .and_then(|bytes| decode_lease(&bytes));
            // A renewal that arrives after a later one of the same process
            // (it waited out a store outage in a storage thread) must not
            // move the lease back in time: that would make the node look
            // dead to itself and to its peers.
            let stale = previous.as_ref().is_some_and(|p| {
                p.incarnation == lease.incarnation && p.expires_at > lease.expires_at
            });
            if !stale {
                put(tx, keys::NODE_LEASE, &(&lease.name,), lease)?;
            }
            Ok(previous)
        })
    }

    /// Removes a node's lease: a clean departure, seen at once by the others.
    pub fn drop_lease(&self, name: &str) -> Result<()> {
        self.db()
            .run(|tx| tx.clear(&keys::NODE_LEASE.key(&(name,))))
    }

    /// Every lease, expired or not, in node name order: a node is live
    /// while `expires_at` is ahead of the reader's clock.
    pub fn leases(&self) -> Result<Vec<NodeLease>> {
        let (begin, end) = keys::NODE_LEASE.all();
        self.db().read(|tx| {
            Ok(tx
                .get_range(&begin, &end, RangeOptions::default())?
                .into_iter()
                .filter_map(|(_, v)| decode_lease(&v))
                .collect())
        })
    }
}

/// A lease, or `None` (with a warning) for one in another version's format.
fn decode_lease(bytes: &[u8]) -> Option<NodeLease> {
    match crate::codec::decode(keys::NODE_LEASE.name, bytes) {
        Ok(lease) => Some(lease),
        Err(e) => {
            tracing::warn!(error = %e, "ignoring a node lease in another format");
            None
        }
    }
}

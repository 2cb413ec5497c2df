//! Cluster membership leases: a node is live while its lease is unexpired.

use super::{put, ChatStore, NodeLease};
use crate::keys;
use crate::{RangeOptions, Result};

impl ChatStore {
    /// Writes (or renews) a node's lease. Returns the lease it replaced, so
    /// a node can tell it was presumed dead (its old lease had expired).
    pub fn renew_lease(&self, lease: &NodeLease) -> Result<Option<NodeLease>> {
        self.db().run(|tx| {
            let previous = super::get(tx, keys::NODE_LEASE, &(&lease.name,))?;
            put(tx, keys::NODE_LEASE, &(&lease.name,), lease)?;
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
            tx.get_range(&begin, &end, RangeOptions::default())?
                .into_iter()
                .map(|(_, v)| crate::codec::decode(keys::NODE_LEASE.name, &v))
                .collect()
        })
    }
}

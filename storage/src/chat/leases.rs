//! Cluster membership leases: a node is live while its lease is unexpired.

use super::{put, ChatStore, Millis, NodeLease};
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

    /// Every lease unexpired at `now`, in node name order.
    pub fn live_nodes(&self, now: Millis) -> Result<Vec<NodeLease>> {
        let (begin, end) = keys::NODE_LEASE.all();
        self.db().read(|tx| {
            let mut live = Vec::new();
            for (_, v) in tx.get_range(&begin, &end, RangeOptions::default())? {
                let lease: NodeLease = crate::codec::decode(keys::NODE_LEASE.name, &v)?;
                if lease.expires_at > now {
                    live.push(lease);
                }
            }
            Ok(live)
        })
    }
}

//! Standing by: when a node must not serve conversations.
//!
//! Two faults make a node's own view unsafe to act on:
//! - **it lost the store** (its lease could not be renewed for a lease
//!   lifetime): the others have presumed it dead and taken its
//!   conversations over; it can commit nothing anyway. It closes its
//!   clients with 1012 so they move to a node that can serve them, and its
//!   health check fails so load balancers send no new ones.
//! - **it is rejoining** after having been presumed dead (its lease had
//!   expired: a lost store, a pause, a starved process): its peers dropped
//!   their connections to it, so for a moment it sees no other node and
//!   would believe itself alone, home of every conversation, and fence out
//!   their real owners. It waits until it is connected to every live peer
//!   again (or a bounded number of heartbeats) before serving.
//!
//! While standing by, the node routes commands to the nodes that serve,
//! and refuses (`unavailable`) those no other node can take.

use std::sync::atomic::{AtomicU8, Ordering};

/// Why a node stands by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standby {
    /// Its lease could not be renewed for a lease lifetime.
    StoreLost,
    /// Presumed dead until just now, and not yet connected to every live
    /// peer.
    Rejoining,
}

impl Standby {
    /// For logs, health checks and error messages.
    pub fn describe(self) -> &'static str {
        match self {
            Standby::StoreLost => "this node cannot reach the store",
            Standby::Rejoining => "this node is rejoining the cluster",
        }
    }
}

/// A node's standby state, read on every route (an atomic, no lock).
#[derive(Debug, Default)]
pub struct StandbyFlag(AtomicU8);

impl StandbyFlag {
    /// The current state: `None` when the node serves.
    pub fn get(&self) -> Option<Standby> {
        match self.0.load(Ordering::Acquire) {
            1 => Some(Standby::StoreLost),
            2 => Some(Standby::Rejoining),
            _ => None,
        }
    }

    /// Sets the state; returns the previous one.
    pub fn set(&self, state: Option<Standby>) -> Option<Standby> {
        let code = match state {
            None => 0,
            Some(Standby::StoreLost) => 1,
            Some(Standby::Rejoining) => 2,
        };
        let previous = self.0.swap(code, Ordering::AcqRel);
        match previous {
            1 => Some(Standby::StoreLost),
            2 => Some(Standby::Rejoining),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_holds_one_state_at_a_time() {
        let flag = StandbyFlag::default();
        assert_eq!(flag.get(), None);
        assert_eq!(flag.set(Some(Standby::StoreLost)), None);
        assert_eq!(flag.set(Some(Standby::Rejoining)), Some(Standby::StoreLost));
        assert_eq!(flag.get(), Some(Standby::Rejoining));
        assert_eq!(flag.set(None), Some(Standby::Rejoining));
        assert_eq!(flag.get(), None);
    }
}

//! An in-process link filter: this node drops its own cluster messages to
//! chosen peers, as a cut network link would.
//!
//! The lab uses it to show a partition on a laptop, where network
//! namespaces and routes need root: a two-way cut is this filter on both
//! nodes, a one-way cut on one. It drops what this node sends to the peer
//! (commands for conversations, fan-out, replies) and the probes, silently:
//! the sender believes it sent, exactly as with a blackholed route. The
//! transport connection itself stays up until the probes notice the
//! silence and drop it (a lease lifetime), then every dial is dropped
//! again the same way until the link is healed. What ractor itself sends
//! over the connection (its process-group updates) still flows until then;
//! the fault tests cut real links (`tests::netns`) instead.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;

/// The peers this node's messages to are dropped.
#[derive(Debug, Default)]
pub struct LinkFilter {
    /// Whether any link is cut: the check on every send is one load while
    /// none is.
    any: AtomicBool,
    cut: RwLock<BTreeSet<String>>,
}

impl LinkFilter {
    /// Drops everything this node sends to `peer` from now on.
    pub fn cut(&self, peer: &str) {
        let mut cut = self.cut.write().unwrap_or_else(|p| p.into_inner());
        cut.insert(peer.to_owned());
        self.any.store(true, Ordering::Release);
    }

    /// Sends to `peer` go through again.
    pub fn heal(&self, peer: &str) {
        let mut cut = self.cut.write().unwrap_or_else(|p| p.into_inner());
        cut.remove(peer);
        self.any.store(!cut.is_empty(), Ordering::Release);
    }

    /// Whether what this node sends to `peer` is dropped.
    pub fn is_cut(&self, peer: &str) -> bool {
        self.any.load(Ordering::Acquire)
            && self
                .cut
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .contains(peer)
    }

    /// The peers cut off, by name.
    pub fn list(&self) -> Vec<String> {
        self.cut
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_holds_until_healed() {
        let f = LinkFilter::default();
        assert!(!f.is_cut("n2"));
        f.cut("n2");
        f.cut("n3");
        assert!(f.is_cut("n2") && f.is_cut("n3") && !f.is_cut("n1"));
        f.heal("n2");
        assert!(!f.is_cut("n2") && f.is_cut("n3"));
        assert_eq!(f.list(), vec!["n3".to_owned()]);
        f.heal("n3");
        assert!(f.list().is_empty() && !f.is_cut("n3"));
    }
}

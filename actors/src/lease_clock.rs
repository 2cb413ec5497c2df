//! Lease liveness timed on this node's own monotonic clock.
//!
//! A lease record holds the writer's wall-clock `expires_at`, but clocks of
//! different machines differ (and jump). So, as in foundationdb-rs's
//! leader-election recipe, an observer never compares another machine's
//! time with its own: it notes, on its monotonic clock, when it last saw
//! each lease record change, and holds the node live while that was less
//! than the lease lifetime ago. A renewing node rewrites its record every
//! heartbeat (a new `expires_at`), which is the change observers see.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use storage::chat::NodeLease;

/// What an observer last saw of one node's lease.
#[derive(Debug, Clone, Copy)]
struct Sighting {
    incarnation: u64,
    expires_at: u64,
    /// When (on this node's monotonic clock) the record last changed.
    changed: Instant,
}

/// Which nodes are live, by lease records seen changing within `ttl`.
#[derive(Debug)]
pub struct LeaseClock {
    ttl: Duration,
    seen: HashMap<String, Sighting>,
}

/// The outcome of one observation: node names.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Liveness {
    /// Records seen changing less than the lease lifetime ago.
    pub live: BTreeSet<String>,
    /// Records unchanged for the lease lifetime or longer.
    pub expired: BTreeSet<String>,
}

impl LeaseClock {
    /// An observer holding a node live for `ttl` after its record changed.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            seen: HashMap::new(),
        }
    }

    /// Records every lease read at `now` (this node's monotonic clock, taken
    /// after the read) and says which nodes are live. A record seen for the
    /// first time counts as just changed; records gone from the store are
    /// forgotten.
    pub fn observe(&mut self, leases: &[NodeLease], now: Instant) -> Liveness {
        self.seen
            .retain(|name, _| leases.iter().any(|l| &l.name == name));
        let mut liveness = Liveness::default();
        for lease in leases {
            let sighting = self.seen.entry(lease.name.clone()).or_insert(Sighting {
                incarnation: lease.incarnation,
                expires_at: lease.expires_at,
                changed: now,
            });
            if sighting.incarnation != lease.incarnation || sighting.expires_at != lease.expires_at
            {
                *sighting = Sighting {
                    incarnation: lease.incarnation,
                    expires_at: lease.expires_at,
                    changed: now,
                };
            }
            if now.saturating_duration_since(sighting.changed) < self.ttl {
                liveness.live.insert(lease.name.clone());
            } else {
                liveness.expired.insert(lease.name.clone());
            }
        }
        liveness
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(name: &str, expires_at: u64) -> NodeLease {
        NodeLease {
            name: name.into(),
            cluster_addr: "127.0.0.1:1".into(),
            http_addr: "127.0.0.1:2".into(),
            public_url: "http://127.0.0.1:2".into(),
            incarnation: 7,
            expires_at,
        }
    }

    fn names(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_renewing_node_is_live_whatever_its_wall_clock_says() {
        let ttl = Duration::from_millis(1500);
        let mut clock = LeaseClock::new(ttl);
        let t0 = Instant::now();
        // "a" writes expiries from a clock years behind ours, "b" from one
        // years ahead; both keep renewing, "c" stops.
        let behind = 1_000;
        let ahead = u64::MAX / 2;
        let first = clock.observe(&[lease("a", behind), lease("b", ahead), lease("c", 5)], t0);
        assert_eq!(
            first.live,
            names(&["a", "b", "c"]),
            "new records count as fresh"
        );
        let mut now = t0;
        for i in 1..=10u64 {
            now += Duration::from_millis(500);
            let seen = clock.observe(
                &[lease("a", behind + i), lease("b", ahead + i), lease("c", 5)],
                now,
            );
            assert!(
                seen.live.contains("a") && seen.live.contains("b"),
                "tick {i}"
            );
            if i >= 3 {
                assert_eq!(seen.expired, names(&["c"]), "tick {i}");
            } else {
                assert!(seen.live.contains("c"), "tick {i}: within its lifetime");
            }
        }
    }

    #[test]
    fn a_restarted_node_is_live_again_and_dropped_leases_are_forgotten() {
        let ttl = Duration::from_millis(1000);
        let mut clock = LeaseClock::new(ttl);
        let t0 = Instant::now();
        clock.observe(&[lease("a", 10)], t0);
        let later = t0 + Duration::from_secs(5);
        assert_eq!(
            clock.observe(&[lease("a", 10)], later).expired,
            names(&["a"])
        );
        // The same expiry from a new incarnation is a change.
        let mut restarted = lease("a", 10);
        restarted.incarnation = 8;
        assert_eq!(clock.observe(&[restarted], later).live, names(&["a"]));
        // Dropped, then back with the old record: fresh again.
        assert_eq!(clock.observe(&[], later), Liveness::default());
        let again = later + Duration::from_secs(5);
        assert_eq!(clock.observe(&[lease("a", 10)], again).live, names(&["a"]));
    }
}

//! Injected panics, to test that internal tasks and actors are supervised
//! (issue #29): a panicking writer, membership loop, index follower, host
//! actor or presence actor must be restarted, never silently gone.
//!
//! Only debug builds (what the tests run) can arm a fault; in a release
//! build [`Faults::arm`] refuses and [`Faults::check`] does nothing, and
//! the gateway has no route to arm one.

/// A place a panic can be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// The node's writer (group commits), on its next batch.
    Committer,
    /// The membership loop, on its next heartbeat.
    Membership,
    /// The search index follower, on its next step.
    Indexer,
    /// The host actor, on its next message from a peer.
    Host,
    /// The presence actor, on its next process-group change.
    Presence,
}

impl Fault {
    /// By the name the admin route uses: `committer`, `membership`,
    /// `indexer`, `host`, `presence`.
    pub fn parse(name: &str) -> Option<Fault> {
        Some(match name {
            "committer" => Fault::Committer,
            "membership" => Fault::Membership,
            "indexer" => Fault::Indexer,
            "host" => Fault::Host,
            "presence" => Fault::Presence,
            _ => return None,
        })
    }
}

/// The faults armed on this node: each fires once, at its place's next
/// turn.
#[derive(Debug, Default)]
pub struct Faults {
    #[cfg(debug_assertions)]
    armed: std::sync::Mutex<std::collections::HashSet<Fault>>,
}

impl Faults {
    /// Arms `fault`; false in a release build, where nothing can be armed.
    pub fn arm(&self, fault: Fault) -> bool {
        #[cfg(debug_assertions)]
        {
            self.armed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(fault);
            true
        }
        #[cfg(not(debug_assertions))]
        {
            let _ = fault;
            false
        }
    }

    /// Panics if `fault` is armed (disarming it first).
    pub fn check(&self, fault: Fault) {
        #[cfg(debug_assertions)]
        {
            let fired = self
                .armed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&fault);
            if fired {
                panic!("injected fault: {fault:?}");
            }
        }
        #[cfg(not(debug_assertions))]
        let _ = fault;
    }
}

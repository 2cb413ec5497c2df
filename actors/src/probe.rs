//! Probes: is each connected peer still answering?
//!
//! ractor_cluster notices a peer only when its TCP connection closes. A
//! link that silently drops packets (a partition, a one-way cut, a
//! blackholed route) never closes: the peer's lease, renewed in the store,
//! keeps it live, its host actor stays in the process groups, and every
//! command routed to it waits for ever. So every heartbeat the membership
//! loop pings each connected peer's probe actor, which answers with a pong;
//! anything heard from a peer (a ping or a pong) counts. A peer heard from
//! for a lease lifetime by neither is cut off: the membership loop drops
//! its connection, which takes its host and sessions out of the process
//! groups, so routing stops waiting on it (see `membership.rs`).
//!
//! The probe actor has a mailbox of its own: a backlog of peer traffic in
//! the host actor's mailbox does not delay it.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::RactorClusterMessage;

/// A probe between nodes; the bytes are the sending node's name.
#[derive(RactorClusterMessage)]
pub enum ProbeMsg {
    /// "Are you there?": answered with a [`ProbeMsg::Pong`].
    Ping(Vec<u8>),
    /// The answer to a ping.
    Pong(Vec<u8>),
}

/// When this node last heard from each connected peer, on its own
/// monotonic clock.
#[derive(Debug, Default)]
pub struct PeerHeard {
    at: Mutex<HashMap<String, Instant>>,
}

impl PeerHeard {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.at.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes a ping or a pong from `peer`.
    pub fn heard(&self, peer: &str, now: Instant) {
        if let Some(at) = self.lock().get_mut(peer) {
            *at = now;
        }
    }

    /// Keeps track of exactly the `connected` peers: one newly connected
    /// counts as heard `now` (a fresh connection gets a whole lifetime to
    /// answer); one no longer connected is forgotten. Returns each
    /// connected peer's silence.
    pub fn track(&self, connected: &BTreeSet<String>, now: Instant) -> Vec<(String, Duration)> {
        let mut at = self.lock();
        at.retain(|peer, _| connected.contains(peer));
        connected
            .iter()
            .map(|peer| {
                let heard = *at.entry(peer.clone()).or_insert(now);
                (peer.clone(), now.saturating_duration_since(heard))
            })
            .collect()
    }
}

/// What the probe actor needs: who it is, where its peers' probes are, and
/// where to note what it hears.
pub struct ProbeArgs {
    /// This node's name.
    pub me: String,
    /// The process-group scope probes join (the hosts' scope).
    pub scope: String,
    /// Shared with the membership loop.
    pub heard: Arc<PeerHeard>,
    /// Peers whose pings go unanswered (the lab's partitions).
    pub links: Arc<crate::link_filter::LinkFilter>,
}

/// Answers peers' pings and notes their pongs.
pub struct ProbeActor;

/// The process group of a node's probe actor.
fn group(node: &str) -> String {
    format!("probe:{node}")
}

/// Pings `peer`'s probe actor on behalf of `me`; false when it is not in
/// the process groups (not connected).
pub fn ping(scope: &str, me: &str, peer: &str) -> bool {
    send(scope, peer, ProbeMsg::Ping(me.as_bytes().to_vec()))
}

fn send(scope: &str, peer: &str, msg: ProbeMsg) -> bool {
    let Some(probe) = ractor::pg::get_scoped_members(&scope.to_owned(), &group(peer))
        .into_iter()
        .next()
    else {
        return false;
    };
    ActorRef::<ProbeMsg>::from(probe).cast(msg).is_ok()
}

impl Actor for ProbeActor {
    type Msg = ProbeMsg;
    type State = ProbeArgs;
    type Arguments = ProbeArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: ProbeArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        ractor::pg::join_scoped(args.scope.clone(), group(&args.me), vec![myself.get_cell()]);
        Ok(args)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let now = Instant::now();
        match message {
            ProbeMsg::Ping(from) => {
                let from = String::from_utf8_lossy(&from);
                state.heard.heard(&from, now);
                if !state.links.is_cut(&from) {
                    let pong = ProbeMsg::Pong(state.me.as_bytes().to_vec());
                    send(&state.scope, &from, pong);
                }
            }
            ProbeMsg::Pong(from) => state.heard.heard(&String::from_utf8_lossy(&from), now),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn silence_counts_from_the_last_word_or_the_connection() {
        let heard = PeerHeard::default();
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        // Heard before being tracked: ignored (not connected yet).
        heard.heard("a", t0);
        assert_eq!(heard.track(&set(&["a", "b"]), at(100))[0].1, Duration::ZERO);
        heard.heard("b", at(500));
        let silences = heard.track(&set(&["a", "b"]), at(1100));
        assert_eq!(
            silences,
            vec![
                ("a".to_owned(), Duration::from_millis(1000)),
                ("b".to_owned(), Duration::from_millis(600)),
            ]
        );
        // Disconnected, then connected again: a fresh start.
        heard.track(&set(&["b"]), at(1200));
        assert_eq!(
            heard.track(&set(&["a", "b"]), at(5000))[0].1,
            Duration::ZERO
        );
    }
}

//! Cluster events: what this node saw happen to the cluster's placement,
//! for operators and the lab (`GET /api/admin/events`).
//!
//! Events are a view, never a source of truth: they go out on a bounded
//! broadcast channel, nobody waits for a subscriber, and a subscriber that
//! reads too slowly skips ahead (it is told how many it missed). Emitting
//! one costs an allocation and a channel send, so the hot paths emit only
//! on changes (activations, handoffs, fencing, sessions, membership), never
//! per message.

use serde::Serialize;
use storage::chat::{ConvId, UserId};
use tokio::sync::broadcast;

/// Events kept for subscribers that fall behind, per node.
pub const EVENT_BACKLOG: usize = 1024;

/// Something that happened, as this node saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ClusterEvent {
    /// A node became able to serve (live lease and reachable).
    NodeJoined {
        /// Its name.
        peer: String,
    },
    /// A node stopped serving: killed, paused past its lease, leaving.
    NodeLost {
        /// Its name.
        peer: String,
    },
    /// A conversation actor claimed its conversation on this node.
    ConversationActivated {
        /// The conversation.
        conv_id: ConvId,
        /// The epoch it now holds (fences out older actors).
        epoch: u64,
        /// The last sequence number committed so far.
        last_seq: u64,
    },
    /// A conversation actor committed what it had and stopped, because the
    /// conversation's home moved (or this node is leaving).
    ConversationHandedOff {
        /// The conversation.
        conv_id: ConvId,
        /// Its home now, as this node sees it.
        to: String,
    },
    /// A conversation actor stopped for being idle.
    ConversationStopped {
        /// The conversation.
        conv_id: ConvId,
    },
    /// An append was refused because a newer actor holds the conversation:
    /// the stale actor stops and its sends go to the new owner.
    FencedAppend {
        /// The conversation.
        conv_id: ConvId,
        /// The epoch the stale actor presented.
        epoch: u64,
    },
    /// A WebSocket session started on this node.
    SessionOpened {
        /// Whose.
        user_id: UserId,
        /// The session's id on this node.
        session_id: u64,
    },
    /// A session on this node ended.
    SessionClosed {
        /// The session's id on this node.
        session_id: u64,
    },
}

/// An event with when and where it happened.
#[derive(Debug, Clone, Serialize)]
pub struct Stamped {
    /// Milliseconds since the Unix epoch, on this node's clock.
    pub at: u64,
    /// The node that saw it.
    pub node: String,
    /// What happened.
    #[serde(flatten)]
    pub event: ClusterEvent,
}

/// The node's event channel: emitters send, subscribers receive.
#[derive(Debug, Clone)]
pub struct Events {
    node: String,
    tx: broadcast::Sender<Stamped>,
    /// Set when the node shuts down: subscribers (the admin event
    /// streams) end then, instead of holding the node's exit up.
    closed: tokio::sync::watch::Sender<bool>,
}

impl Events {
    /// A channel for `node`'s events.
    pub fn new(node: &str) -> Self {
        let (tx, _) = broadcast::channel(EVENT_BACKLOG);
        let (closed, _) = tokio::sync::watch::channel(false);
        Self {
            node: node.to_owned(),
            tx,
            closed,
        }
    }

    /// The node is shutting down: every subscriber's stream should end.
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    /// Changes to `true` once [`Events::close`] was called.
    pub fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.closed.subscribe()
    }

    /// Publishes an event; dropped when nobody listens.
    pub fn emit(&self, event: ClusterEvent) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let _ = self.tx.send(Stamped {
            at,
            node: self.node.clone(),
            event,
        });
    }

    /// Every event from now on (a slow reader gets `Lagged` and skips).
    pub fn subscribe(&self) -> broadcast::Receiver<Stamped> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialize_flat_with_their_kind() {
        let events = Events::new("node-1");
        let mut rx = events.subscribe();
        events.emit(ClusterEvent::FencedAppend {
            conv_id: 7,
            epoch: 3,
        });
        let got = rx.try_recv().expect("an event");
        let json = serde_json::to_value(&got).expect("json");
        assert_eq!(json["kind"], "fenced_append");
        assert_eq!(json["node"], "node-1");
        assert_eq!(json["conv_id"], 7);
        assert_eq!(json["epoch"], 3);
        assert!(json["at"].as_u64().is_some_and(|t| t > 0));
    }

    #[test]
    fn nobody_listening_costs_nothing_and_a_slow_reader_skips() {
        let events = Events::new("n");
        events.emit(ClusterEvent::ConversationStopped { conv_id: 1 });
        let mut rx = events.subscribe();
        for i in 0..(EVENT_BACKLOG as u64 + 10) {
            events.emit(ClusterEvent::ConversationStopped { conv_id: i });
        }
        assert!(matches!(
            rx.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(10))
        ));
    }
}

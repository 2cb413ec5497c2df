//! Which nodes serve, where a conversation lives, and getting a command
//! there.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use ractor::ActorRef;
use storage::chat::{ConvId, UserId};

use super::Cluster;
use crate::conversation::ConvMsg;
use crate::events::ClusterEvent;
use crate::host::HostMsg;
use crate::placement;
use crate::wire::{ClusterMsg, ConvCommand};

/// Forwards allowed between nodes whose membership views disagree, before
/// a node serves a conversation itself (fencing keeps that safe).
const MAX_HOPS: u8 = 2;

impl Cluster {
    /// The nodes that can serve: a live lease and a reachable host actor
    /// (this node counts until it starts leaving, and not while it stands
    /// by). A killed peer drops out as soon as its connection closes,
    /// before its lease runs out.
    pub fn serving_nodes(&self) -> Vec<String> {
        let live = self
            .inner
            .live
            .read()
            .map(|l| l.clone())
            .unwrap_or_default();
        let me = self.node_name();
        let leaving = self.inner.leaving.load(Ordering::Relaxed);
        let standby = self.standby();
        let mut nodes: Vec<String> = live
            .into_iter()
            .filter(|n| {
                if n == me {
                    !leaving && standby.is_none()
                } else {
                    self.host_of(n).is_some()
                }
            })
            .collect();
        // Alone, a node serves everything, even while it leaves; but not
        // while it stands by (it would believe itself alone when it is
        // not, or it cannot commit anyway).
        if nodes.is_empty() && standby.is_none() {
            nodes.push(me.to_owned());
        }
        nodes.sort();
        nodes
    }

    /// The node that should run the conversation's actor.
    pub fn home_of(&self, conv_id: ConvId) -> String {
        let nodes = self.serving_nodes();
        placement::conversation_home(conv_id, nodes.iter().map(String::as_str))
            .unwrap_or(self.node_name())
            .to_owned()
    }

    /// Whether this node records the user's last-seen (one node per user).
    pub fn is_user_home(&self, user_id: UserId) -> bool {
        let nodes = self.serving_nodes();
        placement::owner(
            crate::user_group(user_id).as_bytes(),
            nodes.iter().map(String::as_str),
        ) == Some(self.node_name())
    }

    pub(super) fn host_of(&self, node: &str) -> Option<ActorRef<HostMsg>> {
        ractor::pg::get_scoped_members(&self.inner.hosts_scope, &crate::host_group(node))
            .into_iter()
            .next()
            .map(ActorRef::from)
    }

    /// Sends a message to another node's host actor. False when the node
    /// is unreachable.
    pub(super) fn send_remote(&self, node: &str, msg: &ClusterMsg) -> bool {
        let Some(host) = self.host_of(node) else {
            return false;
        };
        if self.inner.links.is_cut(node) {
            // Lost on the way, as on a cut link: the sender cannot tell.
            return true;
        }
        match msg.encode() {
            Ok(bytes) => {
                let len = bytes.len() as u64;
                let sent = host.cast(HostMsg::Envelope(bytes)).is_ok();
                if sent {
                    self.inner.metrics.peer_bytes_sent.inc_by(len);
                }
                sent
            }
            Err(e) => {
                tracing::error!(error = %e, "encoding a cluster message");
                false
            }
        }
    }

    /// Routes a command to the conversation's actor, wherever it lives.
    /// Returns the peer it went to, if it left this node (the answer then
    /// depends on that peer: see [`Cluster::peers_lost`]).
    pub async fn route(&self, conv_id: ConvId, cmd: ConvCommand) -> Option<String> {
        self.route_hops(conv_id, 0, cmd).await
    }

    pub(crate) async fn route_hops(
        &self,
        conv_id: ConvId,
        hops: u8,
        cmd: ConvCommand,
    ) -> Option<String> {
        let home = self.home_of(conv_id);
        // Past the hop limit a node serves the conversation itself, unless
        // it is leaving: then it must not start actors it would abandon.
        let leaving = self.inner.leaving.load(Ordering::Relaxed);
        if home == self.node_name() || (hops >= MAX_HOPS && !leaving) {
            self.deliver_to_conversation(conv_id, cmd).await;
            return None;
        }
        let msg = ClusterMsg::Conversation {
            conv_id,
            hops: hops + 1,
            cmd,
        };
        if self.send_remote(&home, &msg) {
            return Some(home);
        }
        // The home just became unreachable: serve it here; fencing keeps
        // it safe if the other one is still alive somewhere.
        if let ClusterMsg::Conversation { cmd, .. } = msg {
            self.deliver_to_conversation(conv_id, cmd).await;
        }
        None
    }

    /// Records the live members and moves away the conversations whose
    /// home is no longer this node.
    pub(crate) async fn set_live(&self, live: BTreeSet<String>) {
        if let Ok(mut l) = self.inner.live.write() {
            *l = live;
        }
        let serving = self.serving_nodes();
        self.inner.metrics.live_nodes.set(serving.len() as i64);
        let previous = match self.inner.placed_on.write() {
            Ok(mut placed) if *placed != serving => {
                std::mem::replace(&mut *placed, serving.clone())
            }
            _ => return,
        };
        for peer in serving.iter().filter(|n| !previous.contains(n)) {
            self.inner
                .events
                .emit(ClusterEvent::NodeJoined { peer: peer.clone() });
        }
        for peer in previous.iter().filter(|n| !serving.contains(n)) {
            self.inner
                .events
                .emit(ClusterEvent::NodeLost { peer: peer.clone() });
            // No receiver (no connection) is fine.
            let _ = self.inner.peers_lost.send(peer.clone());
        }
        tracing::info!(nodes = ?serving, "membership changed");
        let convs: Vec<(ConvId, ActorRef<ConvMsg>)> = {
            let convs = self.convs();
            convs.iter().map(|(k, v)| (*k, v.clone())).collect()
        };
        for (conv_id, actor) in convs {
            if self.home_of(conv_id) != self.node_name() {
                tracing::debug!(conv_id, "re-homing conversation");
                let _ = actor.cast(ConvMsg::Handoff);
            }
        }
    }

    /// Ends every session opened with a login, on every node: its token
    /// was revoked.
    pub async fn revoke_login(&self, login: storage::chat::DeviceKey) {
        let me = self.node_name().to_owned();
        let msg = ClusterMsg::Revoked { login };
        for node in self.serving_nodes() {
            if node != me {
                self.send_remote(&node, &msg);
            }
        }
        self.dispatch_local(msg).await;
    }
}

//! Frames to sessions, on this node and on the peers that hold them;
//! replies to one session or HTTP request; what peers send this node.

use std::collections::BTreeSet;

use ractor::{ActorId, ActorRef};
use storage::chat::{ConvId, Seq, UserId};

use super::{Cluster, Inner};
use crate::frames::{ErrorCode, ServerFrame};
use crate::host::HostMsg;
use crate::outbound::SharedText;
use crate::session::{FrameBatch, OrderedFrame, SessionMsg};
use crate::wire::{ClusterMsg, ConvCommand, Outgoing, SessionAddr};

impl Cluster {
    /// Sends the refusal of a command to the session that sent it.
    pub(crate) async fn refuse(&self, cmd: &ConvCommand, code: ErrorCode, message: &str) {
        let (from, reference) = match cmd {
            ConvCommand::Send {
                from,
                reference,
                message,
            } => (
                from,
                reference
                    .clone()
                    .unwrap_or_else(|| message.client_msg_id.clone()),
            ),
            ConvCommand::Typing {
                from, reference, ..
            } => (from, reference.clone().unwrap_or_else(|| "typing".into())),
            ConvCommand::Ack {
                from, reference, ..
            } => (from, reference.clone().unwrap_or_else(|| "ack".into())),
            ConvCommand::Changed(_) => return,
        };
        let frame = ServerFrame::error(code, message, Some(reference));
        self.reply(from, frame.to_json()).await;
    }

    /// Sends frames to every session of `users`: on this node, and on each
    /// serving peer that holds one of them (encoded once for all peers).
    pub async fn fanout(&self, users: Vec<UserId>, frames: Vec<Outgoing>) {
        if users.is_empty() || frames.is_empty() {
            return;
        }
        let hosting = self.peers_hosting(&users);
        if !hosting.is_empty() {
            let msg = ClusterMsg::Fanout {
                user_ids: users,
                frames,
            };
            match msg.encode() {
                Ok(bytes) => {
                    for host in &hosting {
                        if host.cast(HostMsg::Envelope(bytes.clone())).is_ok() {
                            self.inner
                                .metrics
                                .peer_bytes_sent
                                .inc_by(bytes.len() as u64);
                            self.metrics().peer_fanouts_sent.inc();
                        }
                    }
                }
                Err(e) => tracing::error!(error = %e, "encoding a fan-out"),
            }
            if let ClusterMsg::Fanout { user_ids, frames } = msg {
                self.deliver_local(&user_ids, frames);
            }
        } else {
            self.deliver_local(&users, frames);
        }
    }

    /// The host actors of the serving peers that hold a session of one of
    /// `users`, as this node's view of the process groups has them. A
    /// session that just opened on a peer may be missing from this view for
    /// a moment; it reads the store again once that moment has passed
    /// ([`crate::session`]'s settle resync), so it misses nothing.
    fn peers_hosting(&self, users: &[UserId]) -> Vec<ActorRef<HostMsg>> {
        let mut nodes = BTreeSet::new();
        for &user_id in users {
            for cell in
                ractor::pg::get_scoped_members(&self.inner.users_scope, &crate::user_group(user_id))
            {
                if let ActorId::Remote { node_id, .. } = cell.get_id() {
                    nodes.insert(node_id);
                }
            }
        }
        if nodes.is_empty() {
            return Vec::new();
        }
        let me = self.node_name();
        self.serving_nodes()
            .iter()
            .filter(|n| n.as_str() != me)
            .filter_map(|n| self.host_of(n))
            .filter(|host| {
                matches!(host.get_id(), ActorId::Remote { node_id, .. } if nodes.contains(&node_id))
            })
            .collect()
    }

    /// Sends a frame to one session, local or remote.
    pub async fn reply(&self, to: &SessionAddr, frame: String) {
        if to.node == self.node_name() {
            self.reply_local(to.session_id, frame);
        } else {
            let msg = ClusterMsg::ToSession {
                session_id: to.session_id,
                frame,
            };
            if self.send_remote(&to.node, &msg) {
                return;
            }
            let ClusterMsg::ToSession { session_id, frame } = msg else {
                return;
            };
            self.relay_reply(&to.node, session_id, frame);
        }
    }

    /// Hands a reply for a session on `node`, which this node cannot
    /// reach, to another serving peer that may (the sender connected
    /// through it): a cut between two nodes only must not keep the answer
    /// to a send from its client until the link heals.
    fn relay_reply(&self, node: &str, session_id: u64, frame: String) {
        let me = self.node_name();
        let via = self
            .serving_nodes()
            .into_iter()
            .find(|n| n != me && n != node && self.host_of(n).is_some());
        let Some(via) = via else {
            tracing::debug!(%node, "reply to an unreachable node dropped");
            return;
        };
        let msg = ClusterMsg::RelayToSession {
            node: node.to_owned(),
            session_id,
            frame,
        };
        if self.send_remote(&via, &msg) {
            self.metrics().replies_relayed.inc();
        } else {
            tracing::debug!(%node, %via, "reply to an unreachable node dropped");
        }
    }

    /// Hands an answer to the local session, or the HTTP request, it is
    /// addressed to (neither may still be there).
    fn reply_local(&self, session_id: u64, frame: String) {
        if let Some(session) = self.inner.sessions.get(session_id) {
            let _ = session.cast(SessionMsg::Frame(frame.into()));
            return;
        }
        let waiter = self
            .inner
            .waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&session_id);
        if let Some(waiter) = waiter {
            let _ = waiter.send(frame);
        }
    }

    /// Sends `message` to its conversation's actor on behalf of an HTTP
    /// request and waits for the answer the actor would give a WebSocket
    /// session: the JSON of a `sent` or an `error` frame. `None` when no
    /// answer came within `timeout` (the home node died mid-way; the
    /// client resends with the same `client_msg_id`).
    pub async fn send_and_wait(
        &self,
        conv_id: ConvId,
        message: storage::chat::NewMessage,
        timeout: std::time::Duration,
    ) -> Option<String> {
        let id = self.next_session_id();
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.inner
            .waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        // Removes the entry however this ends, a dropped request included.
        struct Waiting<'a>(&'a Inner, u64);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0
                    .waiters
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&self.1);
            }
        }
        let _waiting = Waiting(&self.inner, id);
        let from = self.session_addr(id);
        let cmd = ConvCommand::Send {
            from,
            reference: None,
            message,
        };
        self.route(conv_id, cmd).await;
        let answer = tokio::time::timeout(timeout, rx).await;
        answer.ok().and_then(Result::ok)
    }

    /// Writes frames to this node's sessions of `users`. Each frame's text
    /// is shared by all of them (a reference count each, no copy).
    pub fn deliver_local(&self, users: &[UserId], frames: Vec<Outgoing>) {
        let frames: Vec<(Option<(ConvId, Seq)>, SharedText)> = frames
            .into_iter()
            .map(|f| (f.order, SharedText::from(f.json)))
            .collect();
        for &user_id in users {
            for session in self.inner.sessions.of_user(user_id) {
                let msg = match frames.as_slice() {
                    [(Some((conv_id, seq)), json)] => SessionMsg::Message(OrderedFrame {
                        conv_id: *conv_id,
                        seq: *seq,
                        json: json.clone(),
                    }),
                    [(None, json)] => SessionMsg::Frame(json.clone()),
                    // One mailbox message for all of them: at 5k msgs/s to
                    // groups of 100 a conversation's commit carries 12-20.
                    _ => SessionMsg::Batch(FrameBatch(frames.clone())),
                };
                let _ = session.cast(msg);
            }
        }
    }

    /// Has every local session send what the store holds past what it sent:
    /// after this node was presumed dead (its lease expired while it hung),
    /// the others fanned out without it.
    pub fn resync_sessions(&self) {
        for session in self.inner.sessions.all() {
            let _ = session.cast(SessionMsg::Resync);
        }
    }

    /// Handles a message from a peer (or from this node to itself).
    pub(crate) async fn dispatch_local(&self, msg: ClusterMsg) {
        match msg {
            ClusterMsg::Conversation { conv_id, hops, cmd } => {
                self.route_hops(conv_id, hops, cmd).await;
            }
            ClusterMsg::Fanout { user_ids, frames } => {
                self.metrics().peer_fanouts_received.inc();
                self.deliver_local(&user_ids, frames)
            }
            ClusterMsg::Revoked { login } => {
                for session in self.inner.sessions.of_login(&login) {
                    let _ = session.cast(SessionMsg::Revoked(Vec::new()));
                }
            }
            ClusterMsg::ToSession { session_id, frame } => self.reply_local(session_id, frame),
            ClusterMsg::RelayToSession {
                node,
                session_id,
                frame,
            } => {
                if node == self.node_name() {
                    self.reply_local(session_id, frame);
                } else {
                    // Once: a relay that cannot reach the node either drops
                    // it (the client resends; its session catches up).
                    let msg = ClusterMsg::ToSession { session_id, frame };
                    if !self.send_remote(&node, &msg) {
                        tracing::debug!(%node, "relayed reply to an unreachable node dropped");
                    }
                }
            }
        }
    }

    /// `newcomer` just became a contact of `others` (a new direct chat, a
    /// new group member): tell each side whether the other is online, since
    /// presence transitions only reach existing contacts.
    pub async fn introduce(&self, newcomer: UserId, others: &[UserId]) {
        let presence = |user_id| {
            ServerFrame::Presence {
                user_id,
                online: self.is_online(user_id),
                last_seen: None,
            }
            .to_json()
        };
        let about_others: Vec<Outgoing> = others.iter().map(|&u| presence(u).into()).collect();
        self.fanout(vec![newcomer], about_others).await;
        self.fanout(others.to_vec(), vec![presence(newcomer).into()])
            .await;
    }
}

//! SessionActor: one per connected WebSocket client (one device).
//!
//! It is the only writer to its socket (through the byte-bounded
//! [`Outbound`] queue the gateway drains), and its membership of the
//! `user:{id}` process group is what makes its user online across the
//! cluster.
//!
//! It also owns the device's delivery contract (docs/PROTOCOL.md): it
//! remembers, per conversation, the last seq it put on the socket, so the
//! device gets every message of each conversation once and in order.
//! Stored messages the device is owed (at connect, after an explicit
//! `sync`, or when a live message arrives past a gap) are read from the
//! store right here, between live messages, so nothing live can overtake
//! or be lost behind a sync.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};
use storage::chat::{ConvId, DeviceKey, Message, Seq, UserId};
use tracing::Instrument;

use crate::close::{CloseReason, CloseSignal};
use crate::frames::{ConvError, ErrorCode, ServerFrame};
use crate::outbound::{Outbound, QueueError, SharedText};
use crate::{Cluster, Error};

/// WebSocket close code for "try again later / elsewhere" (RFC 6455 1012,
/// service restart): the client should reconnect, to another node if this
/// one is going away.
pub const CLOSE_RESTART: u16 = 1012;
/// Close code for a client that read too slowly (1008, policy violation).
pub const CLOSE_SLOW_CONSUMER: u16 = 1008;
/// Close code for a session whose login was revoked (1008).
pub const CLOSE_REVOKED: u16 = 1008;
/// Close code (private range) for the oldest session of a user who opened
/// more than the node allows: not an error of this connection, and a
/// client that reconnects at once only closes another of its own, so it
/// gets a code of its own that clients can tell apart from 1008.
pub const CLOSE_SUPERSEDED: u16 = 4001;

/// Messages read from the store per query while catching a device up.
const PAGE: usize = 200;

/// How long after connecting, in a cluster of several nodes, the session
/// reads the store once more. Peers fan out only to nodes they see holding
/// a session of a member, and they learn of this one through the process
/// groups a moment after it joined: a message committed after the
/// catch-up read and fanned out by a peer within that moment would
/// otherwise wait for the conversation's next message.
const SETTLE_RESYNC: Duration = Duration::from_secs(2);

/// Messages a session accepts. Only byte payloads, so it can be a member of
/// a cluster-wide process group (remote nodes hold proxies of it) without
/// any decoding that could panic. Frames are [`SharedText`]: one encoding
/// of a frame serves every local session it goes to.
#[derive(RactorClusterMessage)]
pub enum SessionMsg {
    /// A JSON text frame to write to the client.
    Frame(SharedText),
    /// A `message` frame with the (conversation, seq) that orders it.
    Message(OrderedFrame),
    /// Several frames of one fan-out, in order: one mailbox message for a
    /// commit's worth of a conversation's frames instead of one each.
    Batch(FrameBatch),
    /// The client asked to sync: a JSON [`SyncRequest`].
    Sync(Vec<u8>),
    /// Close the socket: the node is shutting down. Payload: the reason.
    Close(Vec<u8>),
    /// Close the socket: its login was revoked.
    Revoked(Vec<u8>),
    /// Close the socket: it is the oldest of a user who opened more
    /// sessions on this node than `max_sessions_per_user`.
    Superseded(Vec<u8>),
    /// Send whatever the store holds past what this session sent, in every
    /// conversation it has sent from: this node was presumed dead for a
    /// while, and the others did not fan out to it meanwhile.
    Resync,
}

/// A `message` frame with the (conversation, seq) that orders it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderedFrame {
    /// The conversation.
    pub conv_id: ConvId,
    /// The message's seq.
    pub seq: Seq,
    /// The frame's JSON, shared.
    pub json: SharedText,
}

/// Encodable for the cluster (see [`SharedText`]): the two numbers, then
/// the JSON; bytes too short decode as conversation 0, which no session
/// has, so they are dropped.
impl ractor::BytesConvertable for OrderedFrame {
    fn into_bytes(self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(16 + self.json.len());
        bytes.extend_from_slice(&self.conv_id.to_be_bytes());
        bytes.extend_from_slice(&self.seq.to_be_bytes());
        bytes.extend_from_slice(self.json.bytes());
        bytes
    }

    fn from_bytes(bytes: Vec<u8>) -> Self {
        let number = |range: std::ops::Range<usize>| {
            bytes
                .get(range)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
        };
        match (number(0..8), number(8..16)) {
            (Some(conv_id), Some(seq)) => Self {
                conv_id,
                seq,
                json: SharedText::from_bytes(bytes[16..].to_vec()),
            },
            _ => Self {
                conv_id: 0,
                seq: 0,
                json: SharedText::default(),
            },
        }
    }
}

/// Frames for one session, in order; each with the (conversation, seq)
/// that orders it when it is a `message` frame.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FrameBatch(pub Vec<(Option<(ConvId, Seq)>, SharedText)>);

/// Encodable for the cluster like [`OrderedFrame`] (it never crosses nodes
/// in practice: peers get fan-outs through the host actor). Per frame: a
/// tag (0 plain, 1 ordered), for an ordered one the conversation and seq,
/// then the JSON's length (u32) and the JSON. Decoding stops at the first
/// frame that does not fit, keeping the ones before it.
impl ractor::BytesConvertable for FrameBatch {
    fn into_bytes(self) -> Vec<u8> {
        let mut bytes = Vec::new();
        for (order, json) in self.0 {
            match order {
                Some((conv_id, seq)) => {
                    bytes.push(1);
                    bytes.extend_from_slice(&conv_id.to_be_bytes());
                    bytes.extend_from_slice(&seq.to_be_bytes());
                }
                None => bytes.push(0),
            }
            let len = u32::try_from(json.len()).unwrap_or(u32::MAX);
            bytes.extend_from_slice(&len.to_be_bytes());
            bytes.extend_from_slice(&json.bytes()[..len as usize]);
        }
        bytes
    }

    fn from_bytes(bytes: Vec<u8>) -> Self {
        let mut frames = Vec::new();
        let mut rest = bytes.as_slice();
        fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            let (head, tail) = rest.split_at_checked(n)?;
            *rest = tail;
            Some(head)
        }
        let number = |b: &[u8]| b.try_into().ok().map(u64::from_be_bytes);
        while let Some(&[tag]) = take(&mut rest, 1) {
            let order = match tag {
                0 => None,
                1 => match take(&mut rest, 16) {
                    Some(ids) => number(&ids[..8]).zip(number(&ids[8..])),
                    None => break,
                },
                _ => break,
            };
            let len = take(&mut rest, 4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_be_bytes);
            let Some(json) = len.and_then(|len| take(&mut rest, len as usize)) else {
                break;
            };
            match std::str::from_utf8(json) {
                Ok(text) => frames.push((order, SharedText::from(text))),
                Err(_) => break,
            }
        }
        Self(frames)
    }
}

/// A client's `sync`: it holds every message up to these seqs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SyncRequest {
    /// The request's `ref`, echoed in `synced`.
    pub reference: Option<String>,
    /// Per conversation, the last seq the client holds.
    pub watermarks: BTreeMap<ConvId, Seq>,
}

/// What the gateway hands the session when it spawns it.
pub struct SessionArgs {
    /// The authenticated user.
    pub user_id: UserId,
    /// The session's id on this node.
    pub session_id: u64,
    /// The device: whose delivery cursors this session starts from.
    pub device: DeviceKey,
    /// The device of the login token used: revoking the token ends the
    /// session.
    pub login: DeviceKey,
    /// Frames for the socket writer; bounded in frames and bytes.
    pub outbound: Outbound,
    /// How long a catch-up waits for the client to make room before the
    /// client is cut off as too slow.
    pub patience: Duration,
    /// Syncs requested and not finished; the gateway refuses more.
    pub pending_syncs: Arc<AtomicUsize>,
    /// Set once when the server decides to close the socket.
    pub close: CloseSignal,
    /// The node's cluster handle.
    pub cluster: Cluster,
    /// The connection's span: what the session logs is in it.
    pub span: tracing::Span,
}

/// The session's state: its identity, its way to the socket and how far
/// each conversation has been sent.
pub struct SessionState {
    user_id: UserId,
    session_id: u64,
    device: DeviceKey,
    outbound: Outbound,
    patience: Duration,
    pending_syncs: Arc<AtomicUsize>,
    /// The socket's close decision; `None` once this session closed it.
    close: Option<CloseSignal>,
    cluster: Cluster,
    /// Per conversation, the last seq put on the socket.
    sent: HashMap<ConvId, Seq>,
    /// Conversations with messages the device has not been sent yet, to
    /// catch up on right after start.
    behind: Vec<ConvId>,
    /// The connection's span.
    span: tracing::Span,
}

/// The socket could not take more: the session is closing.
struct Gone;

/// The session actor.
pub struct SessionActor;

impl Actor for SessionActor {
    type Msg = SessionMsg;
    type State = SessionState;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SessionArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let cluster = args.cluster;
        // Registered before the device's positions are read: a message
        // committed after the read reaches this session live, one
        // committed before it is in the store when the catch-up reads.
        cluster.sessions().insert(
            args.session_id,
            args.user_id,
            args.login.clone(),
            myself.clone(),
        );
        let store = cluster.storage().clone();
        let (user_id, device) = (args.user_id, args.device.clone());
        let starts = store
            .run(move |store| store.open_device(user_id, &device))
            .await
            .map_err(Error::from)
            .and_then(|r| r.map_err(Error::from));
        let starts = match starts {
            Ok(starts) => starts,
            Err(e) => {
                cluster.sessions().remove(args.session_id);
                return Err(e.into());
            }
        };
        ractor::pg::join_scoped(
            cluster.users_scope().to_owned(),
            crate::user_group(args.user_id),
            vec![myself.get_cell()],
        );
        cluster.metrics().sessions.inc();
        cluster
            .events()
            .emit(crate::events::ClusterEvent::SessionOpened {
                user_id: args.user_id,
                session_id: args.session_id,
            });
        let behind = starts
            .iter()
            .filter(|s| s.last_seq > s.after)
            .map(|s| s.conv_id)
            .collect();
        Ok(SessionState {
            user_id: args.user_id,
            session_id: args.session_id,
            device: args.device,
            outbound: args.outbound,
            patience: args.patience,
            pending_syncs: args.pending_syncs,
            close: Some(args.close),
            cluster,
            sent: starts.iter().map(|s| (s.conv_id, s.after)).collect(),
            behind,
            span: args.span,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // The automatic sync: everything after the device's cursors, before
        // any live message (those wait in the mailbox meanwhile).
        let behind = std::mem::take(&mut state.behind);
        let mut messages = 0;
        for conv_id in behind {
            match state.catch_up(conv_id).await {
                Ok(n) => messages += n,
                Err(CatchUpError::Gone) => return Ok(()),
                Err(CatchUpError::Store(e)) => {
                    tracing::warn!(conv_id, error = %e, "sync at connect failed")
                }
            }
        }
        let synced = ServerFrame::Synced {
            messages,
            reference: None,
            errors: Vec::new(),
        };
        if state.push_waiting(synced.to_json()).await.is_err() {
            state.slow(&myself);
        }
        if state.cluster.serving_nodes().len() > 1 {
            myself.send_after(SETTLE_RESYNC, || SessionMsg::Resync);
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let span = state.span.clone();
        handle(myself, message, state).instrument(span).await
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.cluster.session_gone(state.session_id);
        Ok(())
    }
}

/// One message, inside the connection's span.
async fn handle(
    myself: ActorRef<SessionMsg>,
    message: SessionMsg,
    state: &mut SessionState,
) -> Result<(), ActorProcessingErr> {
    if state.close.is_none() {
        return Ok(()); // closing: the socket takes nothing more
    }
    let outcome = match message {
        SessionMsg::Frame(text) if text.is_empty() => Ok(()),
        SessionMsg::Frame(text) if text.as_str().starts_with(MEMBER_JOINED) => {
            Box::pin(state.joined(text)).await
        }
        SessionMsg::Frame(text) => state.push_live(text),
        SessionMsg::Message(OrderedFrame { conv_id: 0, .. }) => {
            tracing::warn!(session = state.session_id, "dropping a malformed message");
            Ok(())
        }
        // What needs the store is boxed: ractor keeps this handler's
        // future in every session's loop, sized for its largest path,
        // and most sessions only ever take the first one.
        SessionMsg::Message(OrderedFrame { conv_id, seq, json }) => {
            state.deliver(conv_id, seq, json).await
        }
        SessionMsg::Batch(batch) => Box::pin(state.deliver_batch(batch)).await,
        SessionMsg::Resync => Box::pin(state.resync()).await,
        SessionMsg::Sync(bytes) => {
            let request = serde_json::from_slice::<SyncRequest>(&bytes).unwrap_or_default();
            let outcome = Box::pin(state.sync(request)).await;
            state.pending_syncs.fetch_sub(1, Ordering::AcqRel);
            outcome
        }
        SessionMsg::Close(reason) => {
            state.close(CloseReason {
                code: CLOSE_RESTART,
                reason: String::from_utf8_lossy(&reason).into_owned(),
            });
            myself.stop(Some("closed by the server".into()));
            return Ok(());
        }
        SessionMsg::Revoked(_) => {
            state.close(CloseReason {
                code: CLOSE_REVOKED,
                reason: "logged out".into(),
            });
            myself.stop(Some("login revoked".into()));
            return Ok(());
        }
        SessionMsg::Superseded(_) => {
            // Counted here, once: two newer sessions may both name it.
            state.cluster.metrics().sessions_superseded.inc();
            state.close(CloseReason {
                code: CLOSE_SUPERSEDED,
                reason: "replaced: this user opened too many connections on this node".into(),
            });
            myself.stop(Some("superseded by a newer session".into()));
            return Ok(());
        }
    };
    match outcome {
        Ok(()) => {}
        Err(QueueError::Full) => state.slow(&myself),
        Err(QueueError::Closed) => {
            state.close = None;
            myself.stop(Some("socket closed".into()));
        }
    }
    Ok(())
}

/// How a `member_joined` frame starts (frames are serialized tag first).
const MEMBER_JOINED: &str = r#"{"type":"member_joined""#;

/// Why a catch-up stopped.
enum CatchUpError {
    /// The socket is closing.
    Gone,
    /// The store refused or failed (not a member any more, unavailable).
    Store(Error),
}

impl From<Gone> for CatchUpError {
    fn from(_: Gone) -> Self {
        CatchUpError::Gone
    }
}

impl SessionState {
    fn close(&mut self, reason: CloseReason) {
        if let Some(signal) = self.close.take() {
            signal.close(reason);
        }
    }

    /// Cuts off a client that does not read what it is sent.
    fn slow(&mut self, myself: &ActorRef<SessionMsg>) {
        if self.close.is_none() {
            return;
        }
        self.cluster.metrics().slow_consumers.inc();
        tracing::info!(
            session = self.session_id,
            user = self.user_id,
            queued_bytes = self.outbound.queued_bytes(),
            "disconnecting a client that reads too slowly"
        );
        self.close(CloseReason {
            code: CLOSE_SLOW_CONSUMER,
            reason: "too slow: outbound queue full".into(),
        });
        myself.stop(Some("slow consumer".into()));
    }

    /// Queues a live frame; a full queue means the client is too slow.
    fn push_live(&self, text: SharedText) -> Result<(), QueueError> {
        self.outbound.try_push(text)?;
        self.cluster.metrics().frames_delivered.inc();
        Ok(())
    }

    /// Queues a frame of a catch-up, paced by the client's reading.
    async fn push_waiting(&self, text: String) -> Result<(), Gone> {
        match self.outbound.push(text, self.patience).await {
            Ok(()) => {
                self.cluster.metrics().frames_delivered.inc();
                Ok(())
            }
            Err(_) => Err(Gone),
        }
    }

    /// The frames of one fan-out, in order, until the socket refuses one.
    async fn deliver_batch(&mut self, FrameBatch(frames): FrameBatch) -> Result<(), QueueError> {
        for (order, json) in frames {
            match order {
                None if json.is_empty() => {}
                None => self.push_live(json)?,
                Some((0, _)) => {} // malformed, as for a single message
                Some((conv_id, seq)) => self.deliver(conv_id, seq, json).await?,
            }
        }
        Ok(())
    }

    /// A live `message` frame: placed from memory when it can be, else
    /// from the store, boxed (see `handle`).
    async fn deliver(
        &mut self,
        conv_id: ConvId,
        seq: Seq,
        json: SharedText,
    ) -> Result<(), QueueError> {
        match self.deliver_in_order(conv_id, seq, &json) {
            Some(outcome) => outcome,
            None => Box::pin(self.deliver_from_store(conv_id, seq, json)).await,
        }
    }

    /// A live `message` frame, placed from memory when it can be: sent if
    /// it is the next of its conversation, dropped if the device already
    /// has it. `None` when the store must be read first (a conversation
    /// joined since connecting, or a gap before this seq).
    fn deliver_in_order(
        &mut self,
        conv_id: ConvId,
        seq: Seq,
        json: &SharedText,
    ) -> Option<Result<(), QueueError>> {
        let sent = *self.sent.get(&conv_id)?;
        if seq <= sent {
            return Some(Ok(()));
        }
        if seq != sent + 1 {
            return None;
        }
        Some(self.push_live(json.clone()).map(|()| {
            self.sent.insert(conv_id, seq);
        }))
    }

    /// A live `message` frame [`Self::deliver_in_order`] could not place:
    /// the device's start in a conversation it joined since connecting is
    /// read first, and whatever it missed before a gap is sent before it.
    async fn deliver_from_store(
        &mut self,
        conv_id: ConvId,
        seq: Seq,
        json: SharedText,
    ) -> Result<(), QueueError> {
        if !self.sent.contains_key(&conv_id) {
            let store = self.cluster.storage().clone();
            let (user_id, device) = (self.user_id, self.device.clone());
            let start = store
                .run(move |store| store.device_start(user_id, &device, conv_id))
                .await;
            match start {
                Ok(Ok(start)) => {
                    self.sent.insert(conv_id, start);
                }
                _ => return Ok(()), // not (or no longer) a member
            }
            if let Some(outcome) = self.deliver_in_order(conv_id, seq, &json) {
                return outcome;
            }
        }
        match self.catch_up(conv_id).await {
            Ok(_) => Ok(()),
            Err(CatchUpError::Gone) => Err(QueueError::Full),
            Err(CatchUpError::Store(e)) => {
                tracing::debug!(conv_id, error = %e, "could not fill a gap");
                Ok(())
            }
        }
    }

    /// A `member_joined` frame: passed on; when it is this user who
    /// joined (added back after leaving or being removed) and this session
    /// had sent from the conversation before, it then catches up on what
    /// was said meanwhile, deletions of what it showed included: no live
    /// message may come to reveal the gap.
    async fn joined(&mut self, text: SharedText) -> Result<(), QueueError> {
        #[derive(Deserialize)]
        struct Joined {
            conv_id: ConvId,
            user_id: UserId,
        }
        self.push_live(text.clone())?;
        let Ok(joined) = serde_json::from_str::<Joined>(text.as_str()) else {
            return Ok(());
        };
        if joined.user_id != self.user_id || !self.sent.contains_key(&joined.conv_id) {
            return Ok(());
        }
        match self.catch_up(joined.conv_id).await {
            Ok(_) | Err(CatchUpError::Store(_)) => Ok(()),
            Err(CatchUpError::Gone) => Err(QueueError::Full),
        }
    }

    /// Sends every stored message of `conv_id` after the last one sent.
    /// Returns how many it sent.
    async fn catch_up(&mut self, conv_id: ConvId) -> Result<u64, CatchUpError> {
        let mut count = 0;
        loop {
            let after = self.sent.get(&conv_id).copied().unwrap_or(0);
            let store = self.cluster.storage().clone();
            let user_id = self.user_id;
            let page: Vec<Message> = store
                .run(move |store| store.messages_after(user_id, conv_id, after, PAGE))
                .await
                .map_err(|e| CatchUpError::Store(e.into()))?
                .map_err(|e| CatchUpError::Store(e.into()))?;
            let full = page.len() >= PAGE;
            for m in &page {
                self.push_waiting(ServerFrame::message(m).to_json()).await?;
                self.sent.insert(conv_id, m.seq);
                count += 1;
            }
            if !full {
                return Ok(count);
            }
        }
    }

    /// An explicit `sync`: the client's watermarks replace what this
    /// session sent for those conversations; every conversation then
    /// catches up, and `synced` always ends it, naming the conversations
    /// that could not be synced.
    /// Catches up every conversation this session has sent from (no
    /// `synced` frame: the client asked for nothing). A conversation it can
    /// no longer read is left to the next sync to report.
    async fn resync(&mut self) -> Result<(), QueueError> {
        let convs: Vec<ConvId> = self.sent.keys().copied().collect();
        for conv_id in convs {
            match self.catch_up(conv_id).await {
                Ok(_) | Err(CatchUpError::Store(_)) => {}
                Err(CatchUpError::Gone) => return Err(QueueError::Full),
            }
        }
        Ok(())
    }

    async fn sync(&mut self, request: SyncRequest) -> Result<(), QueueError> {
        let mut errors = Vec::new();
        let mut messages = 0;
        let mut refused = Vec::new();
        for (&conv_id, &held) in &request.watermarks {
            self.sent.insert(conv_id, held);
        }
        let convs: Vec<ConvId> = self.sent.keys().copied().collect();
        for conv_id in convs {
            match self.catch_up(conv_id).await {
                Ok(n) => messages += n,
                Err(CatchUpError::Gone) => return Err(QueueError::Full),
                Err(CatchUpError::Store(e)) => {
                    refused.push(conv_id);
                    if request.watermarks.contains_key(&conv_id) {
                        let code = e.code();
                        errors.push(ConvError {
                            conv_id,
                            code,
                            message: match code {
                                ErrorCode::Forbidden => "not a member of this conversation".into(),
                                ErrorCode::NotFound => "no such conversation".into(),
                                ErrorCode::Internal | ErrorCode::Unavailable => {
                                    "temporarily unavailable, sync it again".into()
                                }
                                _ => e.to_string(),
                            },
                        });
                    }
                }
            }
        }
        for conv_id in refused {
            self.sent.remove(&conv_id);
        }
        let synced = ServerFrame::Synced {
            messages,
            reference: request.reference,
            errors,
        };
        self.push_waiting(synced.to_json())
            .await
            .map_err(|Gone| QueueError::Full)
    }
}

#[cfg(test)]
mod tests {
    use ractor::BytesConvertable;

    use super::*;

    #[test]
    fn a_batch_survives_the_cluster_encoding_and_bad_bytes_decode_to_what_fits() {
        let batch = FrameBatch(vec![
            (Some((7, 42)), SharedText::from(r#"{"type":"message"}"#)),
            (None, SharedText::from(r#"{"type":"typing"}"#)),
            (Some((7, 43)), SharedText::from("é")),
        ]);
        let bytes = batch.clone().into_bytes();
        assert_eq!(FrameBatch::from_bytes(bytes.clone()), batch);
        // Cut inside the last frame: the first two are kept.
        let cut = FrameBatch::from_bytes(bytes[..bytes.len() - 1].to_vec());
        assert_eq!(cut.0, batch.0[..2].to_vec());
        // An unknown tag, a length past the end, text that is not UTF-8.
        assert_eq!(FrameBatch::from_bytes(vec![9, 0, 0]).0, vec![]);
        assert_eq!(
            FrameBatch::from_bytes(vec![0, 0, 0, 0, 200, b'x']).0,
            vec![]
        );
        assert_eq!(FrameBatch::from_bytes(vec![0, 0, 0, 0, 1, 0xff]).0, vec![]);
        assert_eq!(FrameBatch::from_bytes(Vec::new()).0, vec![]);
    }
}

//! One WebSocket connection: authentication by frame, the session actor,
//! the reader (client frames to commands) and the writer (the session's
//! queue, heartbeats, idle timeout, close codes).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actors::close::{CloseReason, CloseSignal};
use actors::frames::ServerFrame;
use actors::outbound::{self, Frames, Outbound, SharedText};
use actors::session::{SessionArgs, SessionMsg, SyncRequest, CLOSE_SLOW_CONSUMER};
use actors::wire::{ConvCommand, SessionAddr};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use ractor::ActorRef;
use storage::chat::{ConvId, DeviceKey, MessageKind, NewMessage, UserId};
use tracing::Instrument;

use super::answers::Unanswered;
use super::{error_text, presence, Identity};
use crate::{AppState, Error};
use actors::frames::{parse_watermarks, reference_of, ClientFrame};

/// Close code for "going away" (idle timeout).
const CLOSE_GOING_AWAY: u16 = 1001;
/// How long a closing socket may take to flush its queue.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Close code for a policy violation (authentication failed or too slow).
const CLOSE_POLICY: u16 = 1008;
/// Close code for a server that could not set the session up (1011).
const CLOSE_INTERNAL: u16 = 1011;
/// Close code for "try again later" (1013): the user's connection budget
/// is spent for now.
const CLOSE_TRY_LATER: u16 = 1013;
/// Syncs a connection may have requested and not yet received `synced`
/// for: one running and one waiting. More are refused.
const MAX_PENDING_SYNCS: usize = 2;
/// Conversations a connection remembers having checked the user's
/// membership of (a few KiB at most); past it, it starts over.
const MAX_KNOWN_CONVERSATIONS: usize = 1024;

type Sink = SplitSink<WebSocket, Message>;
type Stream = SplitStream<WebSocket>;

/// Serves one upgraded socket until either side closes it.
pub(crate) async fn serve(state: AppState, socket: WebSocket, user: Option<Identity>) {
    // This future lives as long as the connection, in a task allocated at
    // its largest state: the phases that are over once the session runs
    // (authentication here, starting the session and handling one frame in
    // `run`) are boxed, so an idle connection holds only what it waits with.
    let (mut sink, mut stream) = socket.split();
    let identity = match user {
        Some(identity) => identity,
        None => match Box::pin(auth_by_frame(&state, &mut sink, &mut stream)).await {
            Some(identity) => identity,
            None => return,
        },
    };
    let session_id = state.cluster.next_session_id();
    let span = tracing::info_span!("ws", user_id = identity.user_id, session_id);
    Box::pin(run(state, sink, stream, identity, session_id).instrument(span)).await
}

/// Waits for `{"type":"auth","token":...}`; answers anything else with an
/// error and closes.
async fn auth_by_frame(state: &AppState, sink: &mut Sink, stream: &mut Stream) -> Option<Identity> {
    let timeout = Duration::from_secs(state.config.auth_timeout_secs);
    let first = tokio::time::timeout(timeout, stream.next()).await;
    let outcome = match first {
        Ok(Some(Ok(Message::Text(text)))) => match serde_json::from_str::<ClientFrame>(&text) {
            Ok(ClientFrame::Auth { token, device_id }) => {
                super::identify(state, &token, device_id.as_deref()).await
            }
            _ => Err(Error::Unauthorized),
        },
        Ok(_) => return None,
        Err(_) => Err(Error::Unauthorized),
    };
    match outcome {
        Ok(identity) => Some(identity),
        Err(e) => {
            let _ = sink.send(error_text(&e, Some("auth".into()))).await;
            let (code, reason) = match e {
                Error::RateLimited { .. } => (CLOSE_TRY_LATER, "too many connections, retry later"),
                _ => (CLOSE_POLICY, "authentication failed"),
            };
            let _ = sink
                .send(Message::Close(Some(CloseFrame {
                    code,
                    reason: reason.into(),
                })))
                .await;
            None
        }
    }
}

async fn run(state: AppState, sink: Sink, mut stream: Stream, who: Identity, session_id: u64) {
    let config = &state.config;
    let (out, out_rx) = outbound::channel(config.outbound_queue, config.outbound_queue_bytes);
    // The session and the reader may both decide to close the socket.
    let close = CloseSignal::new();
    let pending_syncs = Arc::new(AtomicUsize::new(0));
    let user_id = who.user_id;
    let last_heard = Arc::new(LastHeard::new());
    let unanswered = Arc::new(Unanswered::default());
    let writer = tokio::spawn(
        write(
            sink,
            out_rx,
            close.clone(),
            Duration::from_secs(config.heartbeat_secs.max(1)),
            Duration::from_secs(config.idle_timeout_secs.max(1)),
            last_heard.clone(),
            unanswered.clone(),
        )
        .in_current_span(),
    );
    // `hello` goes first; the session's automatic sync follows it.
    let hello = ServerFrame::Hello {
        user_id,
        session_id,
        node: state.cluster.node_name().to_owned(),
    }
    .to_json();
    let _ = out.try_push(hello);
    let args = SessionArgs {
        user_id,
        session_id,
        device: who.device.clone(),
        login: who.login.clone(),
        outbound: out.clone(),
        patience: Duration::from_secs(config.sync_patience_secs.max(1)),
        pending_syncs: pending_syncs.clone(),
        close: close.clone(),
        cluster: state.cluster.clone(),
        span: tracing::Span::current(),
    };
    // The session reads the device's positions before the first client
    // frame is read below: nothing the client does first can move them.
    let (session, mut session_ended) = match Box::pin(state.cluster.spawn_session(args)).await {
        Ok(spawned) => spawned,
        Err(e) => {
            tracing::error!(error = %e, "spawning the session actor");
            close.close(CloseReason {
                code: CLOSE_INTERNAL,
                reason: "session could not start, retry".into(),
            });
            let _ = writer.await;
            return;
        }
    };
    tracing::debug!(device = who.device.as_str(), "connected");
    // Registered now: past the user's limit on this node, the oldest go.
    let superseded = state
        .cluster
        .supersede_oldest(user_id, config.abuse.max_sessions_per_user.max(1));
    if superseded > 0 {
        tracing::info!(superseded, "closed the user's oldest sessions on this node");
    }
    spawn_presence(&state, user_id, &out);

    let mut reader = Reader {
        state: &state,
        user_id,
        device: who.device,
        session_id,
        session: session.clone(),
        out: &out,
        close,
        pending_syncs,
        last_typing: HashMap::new(),
        member_of: HashSet::new(),
        unanswered,
    };
    let mut writer = writer;
    let mut session_running = true;
    let mut peers_lost = reader.state.cluster.peers_lost();
    loop {
        let due = reader.unanswered.next_deadline();
        let incoming = tokio::select! {
            incoming = stream.next() => incoming,
            // A send's answer is overdue: never leave it hanging.
            _ = overdue(due) => {
                reader.answer_overdue();
                continue;
            }
            // A peer stopped serving: what we routed to it is lost.
            lost = peers_lost.recv() => {
                match lost {
                    Ok(peer) => reader.answer_lost(Some(&peer)),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        reader.answer_lost(None)
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {}
                }
                continue;
            }
            // The session died without closing (a panic): nothing can reach
            // this socket any more, so end it; the client reconnects.
            _ = &mut session_ended, if session_running => {
                session_running = false;
                reader.close.close(CloseReason {
                    code: CLOSE_INTERNAL,
                    reason: "session failed, reconnect".into(),
                });
                continue;
            }
            // The writer ended (closed by the server, idle, broken): give
            // the client a moment to answer a close frame, so it is not
            // lost to a reset, then release the socket.
            _ = &mut writer => {
                let _ = tokio::time::timeout(CLOSE_GRACE, async {
                    while let Some(Ok(msg)) = stream.next().await {
                        if matches!(msg, Message::Close(_)) {
                            break;
                        }
                    }
                })
                .await;
                break;
            }
        };
        let Some(incoming) = incoming else { break };
        last_heard.touch();
        match incoming {
            Ok(Message::Text(text)) => Box::pin(reader.frame(&text)).await,
            Ok(Message::Binary(_)) => {
                let e = Error::BadRequest("binary frames are not supported: send JSON text".into());
                reader.reply(e.frame(None));
            }
            Ok(Message::Close(_)) => break,
            Ok(_) => {} // ping / pong: liveness only
            Err(e) => {
                tracing::debug!(error = %e, "read failed");
                break;
            }
        }
    }
    session.stop(Some("socket closed".into()));
    drop(reader);
    drop(out);
    if !writer.is_finished() {
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut writer).await;
        writer.abort();
    }
    tracing::debug!("disconnected");
}

/// Sends the presence of the user's contacts in the background, so the
/// reader keeps reading meanwhile.
fn spawn_presence(state: &AppState, user_id: UserId, out: &Outbound) {
    let state = state.clone();
    let out = out.clone();
    tokio::spawn(
        async move {
            if let Err(e) = presence::presence(&state, user_id, &out).await {
                tracing::warn!(error = %e, "presence snapshot failed");
            }
        }
        .in_current_span(),
    );
}

/// Turns client frames into commands.
struct Reader<'a> {
    state: &'a AppState,
    user_id: UserId,
    device: DeviceKey,
    session_id: u64,
    session: ActorRef<SessionMsg>,
    out: &'a Outbound,
    close: CloseSignal,
    pending_syncs: Arc<AtomicUsize>,
    last_typing: HashMap<ConvId, Instant>,
    /// Conversations the store said the user is an active member of, the
    /// first time this connection named each: a frame naming any other is
    /// refused here, and never activates (claims, spawns, keeps alive) a
    /// conversation actor. Forgotten past [`MAX_KNOWN_CONVERSATIONS`]; a
    /// member removed since is refused by the conversation itself.
    member_of: HashSet<ConvId>,
    /// Sends routed and not yet answered (struck off by the writer).
    unanswered: Arc<Unanswered>,
}

/// Resolves at `due`, or never when nothing waits.
async fn overdue(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due.into()).await,
        None => std::future::pending().await,
    }
}

impl Reader<'_> {
    /// Queues an answer. A client that keeps asking without reading the
    /// answers fills its queue and is cut off.
    fn reply(&self, frame: ServerFrame) {
        if self.out.try_push(frame.to_json()).is_err() {
            self.state.cluster.metrics().slow_consumers.inc();
            self.close.close(CloseReason {
                code: CLOSE_SLOW_CONSUMER,
                reason: "too slow: asks more than it reads".into(),
            });
        }
    }

    async fn fail(&self, e: Error, reference: Option<String>) {
        self.reply(e.frame(reference));
    }

    /// Routes a send (a message or an event) to its conversation, due an
    /// answer within the answer timeout.
    async fn submit(
        &self,
        conv_id: ConvId,
        from: SessionAddr,
        reference: String,
        message: NewMessage,
    ) {
        let timeout = Duration::from_secs(self.state.config.answer_timeout_secs.max(1));
        self.unanswered
            .expect(&message.client_msg_id, &reference, Instant::now() + timeout);
        let cmd = ConvCommand::Send {
            from,
            reference: Some(reference.clone()),
            message,
        };
        if let Some(peer) = self.state.cluster.route(conv_id, cmd).await {
            self.unanswered.routed_via(&reference, peer);
        }
    }

    /// Answers at once the sends routed to a peer that stopped serving
    /// (`None`: to any peer, when this connection missed which): that
    /// peer will not answer, and the conversation is served elsewhere now,
    /// so the client's resend goes through without waiting out the answer
    /// timeout.
    fn answer_lost(&self, peer: Option<&str>) {
        for reference in self.unanswered.lost(peer) {
            self.state.cluster.metrics().answers_lost_with_peer.inc();
            tracing::debug!(reference, ?peer, "its home node stopped serving");
            let e = Error::Refused {
                code: actors::frames::ErrorCode::Unavailable,
                message: "its home node became unreachable: resend with the same client_msg_id"
                    .into(),
            };
            self.reply(e.frame(Some(reference)));
        }
    }

    /// Answers the sends whose answer is overdue: the home node may be
    /// hung or cut off, and the outcome is unknown, so the client resends
    /// (with the same `client_msg_id`, which is idempotent).
    fn answer_overdue(&self) {
        for reference in self.unanswered.expired(Instant::now()) {
            self.state.cluster.metrics().answer_timeouts.inc();
            tracing::debug!(reference, "no answer in time");
            let e = Error::Refused {
                code: actors::frames::ErrorCode::Unavailable,
                message: "no answer in time: resend with the same client_msg_id".into(),
            };
            self.reply(e.frame(Some(reference)));
        }
    }

    async fn frame(&mut self, text: &str) {
        let max = self.state.config.max_frame_bytes;
        if text.len() > max {
            return self
                .fail(Error::TooLarge { limit_bytes: max }, reference_of(text))
                .await;
        }
        let frame = match serde_json::from_str::<ClientFrame>(text) {
            Ok(frame) => frame,
            Err(e) => {
                let e = Error::BadRequest(format!("malformed or unknown frame: {e}"));
                return self.fail(e, reference_of(text)).await;
            }
        };
        let from = self.state.cluster.session_addr(self.session_id);
        let user_id = self.user_id;
        match frame {
            ClientFrame::Send {
                reference,
                conv_id,
                to_user,
                client_msg_id,
                body,
                reply_to,
            } => {
                let reference = reference.unwrap_or_else(|| client_msg_id.clone());
                let message = NewMessage {
                    reply_to,
                    ..NewMessage::text(user_id, client_msg_id, body)
                };
                if let Err(e) = self.sendable(&message) {
                    return self.fail(e, Some(reference)).await;
                }
                let conv_id = match (conv_id, to_user) {
                    (Some(conv_id), None) => match self.gate(conv_id).await {
                        Ok(()) => conv_id,
                        Err(e) => return self.fail(e, Some(reference)).await,
                    },
                    (None, Some(other)) => match self.direct_with(other).await {
                        Ok(conv_id) => conv_id,
                        Err(e) => return self.fail(e, Some(reference)).await,
                    },
                    _ => {
                        let e = Error::BadRequest("give exactly one of conv_id and to_user".into());
                        return self.fail(e, Some(reference)).await;
                    }
                };
                self.submit(conv_id, from, reference, message).await;
            }
            ClientFrame::Edit {
                reference,
                conv_id,
                seq,
                client_msg_id,
                body,
            } => {
                let kind = MessageKind::Edit { target: seq };
                self.event(from, reference, conv_id, client_msg_id, body, kind)
                    .await
            }
            ClientFrame::Delete {
                reference,
                conv_id,
                seq,
                client_msg_id,
            } => {
                let kind = MessageKind::Delete { target: seq };
                self.event(from, reference, conv_id, client_msg_id, String::new(), kind)
                    .await
            }
            ClientFrame::React {
                reference,
                conv_id,
                seq,
                emoji,
                remove,
                client_msg_id,
            } => {
                let kind = MessageKind::Reaction {
                    target: seq,
                    emoji,
                    added: !remove,
                };
                self.event(from, reference, conv_id, client_msg_id, String::new(), kind)
                    .await
            }
            ClientFrame::Typing { conv_id, reference } => {
                let per_second = self.state.config.typing_per_second.max(1);
                let gap = Duration::from_millis(1000 / u64::from(per_second));
                let now = Instant::now();
                if self
                    .last_typing
                    .get(&conv_id)
                    .is_some_and(|t| now.duration_since(*t) < gap)
                {
                    return; // advisory: extra indicators are dropped
                }
                if self.last_typing.len() > 1024 {
                    self.last_typing.clear();
                }
                self.last_typing.insert(conv_id, now);
                if let Err(e) = self.gate(conv_id).await {
                    return self.fail(e, reference.or(Some("typing".into()))).await;
                }
                let cmd = ConvCommand::Typing {
                    from,
                    reference,
                    user_id,
                };
                self.state.cluster.route(conv_id, cmd).await;
            }
            ClientFrame::Ack {
                conv_id,
                seq,
                kind,
                reference,
            } => {
                if let Err(e) = self.gate(conv_id).await {
                    return self.fail(e, reference.or(Some("ack".into()))).await;
                }
                let cmd = ConvCommand::Ack {
                    from,
                    reference,
                    user_id,
                    device: Some(self.device.clone()),
                    kind,
                    seq,
                };
                self.state.cluster.route(conv_id, cmd).await;
            }
            ClientFrame::Sync {
                reference,
                watermarks,
            } => match parse_watermarks(watermarks) {
                Ok(watermarks) => self.sync(SyncRequest {
                    reference,
                    watermarks,
                }),
                Err(e) => self.fail(Error::BadRequest(e), reference).await,
            },
            ClientFrame::Ping {} => self.reply(ServerFrame::Pong),
            ClientFrame::Auth { .. } => {
                let e = Error::BadRequest("already authenticated".into());
                self.fail(e, Some("auth".into())).await
            }
        }
    }
}

impl Reader<'_> {
    /// Checks a send or event against the user's send budget and the
    /// message size limit, before it goes to the conversation.
    fn sendable(&self, message: &NewMessage) -> Result<(), Error> {
        crate::http::send::sendable(self.state, message)
    }

    /// Sends an edit, deletion or reaction: appended like a message.
    async fn event(
        &mut self,
        from: SessionAddr,
        reference: Option<String>,
        conv_id: ConvId,
        client_msg_id: String,
        body: String,
        kind: MessageKind,
    ) {
        let reference = reference.unwrap_or_else(|| client_msg_id.clone());
        let message = NewMessage {
            kind,
            ..NewMessage::text(self.user_id, client_msg_id, body)
        };
        if let Err(e) = self.sendable(&message) {
            return self.fail(e, Some(reference)).await;
        }
        if let Err(e) = self.gate(conv_id).await {
            return self.fail(e, Some(reference)).await;
        }
        self.submit(conv_id, from, reference, message).await;
    }

    /// Lets a frame through to conversation `conv_id` only if the user is
    /// an active member: the first time per conversation a store read,
    /// then remembered. Otherwise the store's refusal (`forbidden`,
    /// `not_found`), and nothing reaches the conversation.
    async fn gate(&mut self, conv_id: ConvId) -> Result<(), Error> {
        if self.member_of.contains(&conv_id) {
            return Ok(());
        }
        crate::http::send::require_member(self.state, self.user_id, conv_id).await?;
        if self.member_of.len() >= MAX_KNOWN_CONVERSATIONS {
            self.member_of.clear();
        }
        self.member_of.insert(conv_id);
        Ok(())
    }

    /// The direct chat with `other` for a `send` with `to_user`: found by
    /// a read; opened (a write transaction, charged to the user's write
    /// budget like `POST /api/direct/{user_id}`) only the first time, so
    /// sends to user after user cannot open chats faster than HTTP can.
    async fn direct_with(&mut self, other: UserId) -> Result<ConvId, Error> {
        let user_id = self.user_id;
        let found = self
            .state
            .blocking(move |s| s.direct_chat(user_id, other))
            .await?;
        let conv_id = match found {
            Some(conv_id) => conv_id,
            None => {
                self.state.throttles.write(user_id)?;
                let (conv, created) = self
                    .state
                    .blocking(move |s| s.open_direct_created(user_id, other))
                    .await?;
                if created {
                    self.state.cluster.introduce(user_id, &[other]).await;
                }
                conv.id
            }
        };
        Ok(conv_id)
    }

    /// Hands a `sync` to the session, which runs it between live messages.
    fn sync(&self, request: SyncRequest) {
        let reference = request.reference.clone().or(Some("sync".into()));
        if self.pending_syncs.fetch_add(1, Ordering::AcqRel) >= MAX_PENDING_SYNCS {
            self.pending_syncs.fetch_sub(1, Ordering::AcqRel);
            let e = Error::RateLimited {
                retry_after_ms: 1000,
            };
            return self.reply(e.frame(reference));
        }
        let bytes = serde_json::to_vec(&request).unwrap_or_default();
        if self.session.cast(SessionMsg::Sync(bytes)).is_err() {
            self.pending_syncs.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// When the client last sent anything: the reader stamps it on every
/// frame, the writer's heartbeat reads it to close an idle socket. An
/// atomic, not a lock: it is touched once per client frame.
struct LastHeard {
    /// The connection's start; the stamp counts milliseconds from it.
    start: Instant,
    millis: AtomicU64,
}

impl LastHeard {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            millis: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.millis.store(now, Ordering::Relaxed);
    }

    /// Time since the last frame (or since the connection started).
    fn elapsed(&self) -> Duration {
        let since_start = Duration::from_millis(self.millis.load(Ordering::Relaxed));
        self.start
            .checked_add(since_start)
            .map_or(Duration::ZERO, |at| at.elapsed())
    }
}

/// Writes the session's frames, pings an idle client, and closes the
/// socket on the server's word or after the idle timeout.
async fn write(
    mut sink: Sink,
    frames: Frames,
    close: CloseSignal,
    heartbeat: Duration,
    idle_timeout: Duration,
    last_heard: Arc<LastHeard>,
    unanswered: Arc<Unanswered>,
) {
    let mut ticker = tokio::time::interval(heartbeat);
    ticker.tick().await;
    loop {
        tokio::select! {
            frame = frames.recv() => match frame {
                Some(queued) => {
                    // Everything queued goes out with one flush.
                    let burst = async {
                        unanswered.answered(queued.text.as_str());
                        sink.feed(text_message(&queued.text)).await?;
                        drop(queued);
                        while let Some(more) = frames.try_recv() {
                            unanswered.answered(more.text.as_str());
                            sink.feed(text_message(&more.text)).await?;
                        }
                        sink.flush().await
                    };
                    tokio::select! {
                        sent = burst => {
                            if sent.is_err() {
                                return;
                            }
                        }
                        // Blocked on a client that does not read, and the
                        // session gave up on it: drop the socket.
                        _ = close.closed() => return,
                    }
                }
                None => break,
            },
            reason = close.closed() => {
                // Flush what is already queued, then close; a client too
                // slow to take it within the grace period just loses it (it
                // syncs on reconnect).
                let goodbye = async {
                    while let Some(queued) = frames.try_recv() {
                        sink.send(text_message(&queued.text)).await?;
                    }
                    sink.send(Message::Close(Some(CloseFrame {
                        code: reason.code,
                        reason: truncate(&reason.reason).into(),
                    }))).await
                };
                let _ = tokio::time::timeout(CLOSE_GRACE, goodbye).await;
                return;
            }
            _ = ticker.tick() => {
                if last_heard.elapsed() > idle_timeout {
                    let _ = sink.send(Message::Close(Some(CloseFrame {
                        code: CLOSE_GOING_AWAY,
                        reason: "idle timeout".into(),
                    }))).await;
                    return;
                }
                if sink.send(Message::Ping(Vec::new().into())).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = sink.close().await;
}

/// Close reasons are limited to 123 bytes on the wire.
fn truncate(reason: &str) -> String {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}

/// The WebSocket text message of a queued frame: the frame's shared bytes
/// themselves, no copy (the check that they are UTF-8 cannot fail: a
/// [`SharedText`] is built from strings).
fn text_message(text: &SharedText) -> Message {
    match Utf8Bytes::try_from(text.bytes().clone()) {
        Ok(text) => Message::Text(text),
        Err(_) => Message::Text(text.as_str().into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_heard_counts_from_the_start_until_touched() {
        let heard = LastHeard::new();
        std::thread::sleep(Duration::from_millis(300));
        let silent = heard.elapsed();
        assert!(silent >= Duration::from_millis(299), "{silent:?}");
        heard.touch();
        // Counted from the touch now, not from the start.
        assert!(heard.elapsed() < silent, "{:?}", heard.elapsed());
    }
}

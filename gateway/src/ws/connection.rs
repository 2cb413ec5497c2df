//! One WebSocket connection: authentication by frame, the session actor,
//! the reader (client frames to commands) and the writer (the session's
//! queue, heartbeats, idle timeout, close codes).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actors::frames::ServerFrame;
use actors::session::{CloseReason, SessionActor, SessionArgs};
use actors::wire::ConvCommand;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use ractor::Actor;
use storage::chat::{ConvId, UserId};
use tokio::sync::{mpsc, oneshot, Mutex};
use tracing::Instrument;

use super::frames::{parse_watermarks, reference_of, ClientFrame};
use super::{error_text, sync};
use crate::{AppState, Error};

/// Close code for "going away" (idle timeout).
const CLOSE_GOING_AWAY: u16 = 1001;
/// How long a closing socket may take to flush its queue.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Close code for a policy violation (authentication failed or too slow).
const CLOSE_POLICY: u16 = 1008;

type Sink = SplitSink<WebSocket, Message>;
type Stream = SplitStream<WebSocket>;

/// Serves one upgraded socket until either side closes it.
pub(crate) async fn serve(state: AppState, socket: WebSocket, user: Option<UserId>) {
    let (mut sink, mut stream) = socket.split();
    let user_id = match user {
        Some(user_id) => user_id,
        None => match auth_by_frame(&state, &mut sink, &mut stream).await {
            Some(user_id) => user_id,
            None => return,
        },
    };
    let session_id = state.cluster.next_session_id();
    let span = tracing::info_span!("ws", user_id, session_id);
    run(state, sink, stream, user_id, session_id)
        .instrument(span)
        .await
}

/// Waits for `{"type":"auth","token":...}`; answers anything else with an
/// error and closes.
async fn auth_by_frame(state: &AppState, sink: &mut Sink, stream: &mut Stream) -> Option<UserId> {
    let timeout = Duration::from_secs(state.config.auth_timeout_secs);
    let first = tokio::time::timeout(timeout, stream.next()).await;
    let outcome = match first {
        Ok(Some(Ok(Message::Text(text)))) => match serde_json::from_str::<ClientFrame>(&text) {
            Ok(ClientFrame::Auth { token }) => crate::auth::authenticate(state, &token).await,
            _ => Err(Error::Unauthorized),
        },
        Ok(_) => return None,
        Err(_) => Err(Error::Unauthorized),
    };
    match outcome {
        Ok(user_id) => Some(user_id),
        Err(e) => {
            let _ = sink.send(error_text(&e, Some("auth".into()))).await;
            let _ = sink
                .send(Message::Close(Some(CloseFrame {
                    code: CLOSE_POLICY,
                    reason: "authentication failed".into(),
                })))
                .await;
            None
        }
    }
}

async fn run(state: AppState, sink: Sink, mut stream: Stream, user_id: UserId, session_id: u64) {
    let (out_tx, out_rx) = mpsc::channel::<String>(state.config.outbound_queue.max(1));
    let (close_tx, close_rx) = oneshot::channel();
    let args = SessionArgs {
        user_id,
        session_id,
        outbound: out_tx.clone(),
        close: close_tx,
        cluster: state.cluster.clone(),
    };
    let session = match Actor::spawn(None, SessionActor, args).await {
        Ok((session, _)) => session,
        Err(e) => {
            tracing::error!(error = %e, "spawning the session actor");
            return;
        }
    };
    tracing::debug!("connected");
    let last_heard = Arc::new(Mutex::new(Instant::now()));
    let writer = tokio::spawn(
        write(
            sink,
            out_rx,
            close_rx,
            Duration::from_secs(state.config.heartbeat_secs.max(1)),
            Duration::from_secs(state.config.idle_timeout_secs.max(1)),
            last_heard.clone(),
        )
        .in_current_span(),
    );
    let hello = ServerFrame::Hello {
        user_id,
        session_id,
        node: state.cluster.node_name().to_owned(),
    };
    let _ = out_tx.send(hello.to_json()).await;
    spawn_sync(&state, user_id, BTreeMap::new(), None, &out_tx, true);

    let mut reader = Reader {
        state: &state,
        user_id,
        session_id,
        out: &out_tx,
        last_typing: HashMap::new(),
    };
    let mut writer = writer;
    loop {
        let incoming = tokio::select! {
            incoming = stream.next() => incoming,
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
        *last_heard.lock().await = Instant::now();
        match incoming {
            Ok(Message::Text(text)) => reader.frame(&text).await,
            Ok(Message::Binary(_)) => {
                let e = Error::BadRequest("binary frames are not supported: send JSON text".into());
                reader.reply(e.frame(None)).await;
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
    drop(out_tx);
    if !writer.is_finished() {
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut writer).await;
        writer.abort();
    }
    tracing::debug!("disconnected");
}

/// Runs a sync in the background so the reader keeps reading meanwhile.
fn spawn_sync(
    state: &AppState,
    user_id: UserId,
    watermarks: BTreeMap<ConvId, u64>,
    reference: Option<String>,
    out: &mpsc::Sender<String>,
    with_presence: bool,
) {
    let state = state.clone();
    let out = out.clone();
    tokio::spawn(
        async move {
            if with_presence {
                if let Err(e) = sync::presence(&state, user_id, &out).await {
                    tracing::warn!(error = %e, "presence snapshot failed");
                }
            }
            let frame = match sync::messages(&state, user_id, &watermarks, &out).await {
                Ok(messages) => ServerFrame::Synced { messages },
                Err(e) => e.frame(reference.or(Some("sync".into()))),
            };
            let _ = out.send(frame.to_json()).await;
        }
        .in_current_span(),
    );
}

/// Turns client frames into commands.
struct Reader<'a> {
    state: &'a AppState,
    user_id: UserId,
    session_id: u64,
    out: &'a mpsc::Sender<String>,
    last_typing: HashMap<ConvId, Instant>,
}

impl Reader<'_> {
    async fn reply(&self, frame: ServerFrame) {
        let _ = self.out.send(frame.to_json()).await;
    }

    async fn fail(&self, e: Error, reference: Option<String>) {
        self.reply(e.frame(reference)).await;
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
            } => {
                let reference = reference.or_else(|| Some(client_msg_id.clone()));
                if let Err(e) = self.state.send_limiter.check(user_id) {
                    return self.fail(e, reference).await;
                }
                let limit = self.state.store.limits().max_message_bytes;
                if body.len() > limit {
                    let e = Error::TooLarge { limit_bytes: limit };
                    return self.fail(e, reference).await;
                }
                let conv_id = match (conv_id, to_user) {
                    (Some(conv_id), None) => conv_id,
                    (None, Some(other)) => {
                        match self
                            .state
                            .blocking(move |s| s.open_direct_created(user_id, other))
                            .await
                        {
                            Ok((conv, created)) => {
                                if created {
                                    self.state.cluster.introduce(user_id, &[other]).await;
                                }
                                conv.id
                            }
                            Err(e) => return self.fail(e, reference).await,
                        }
                    }
                    _ => {
                        let e = Error::BadRequest("give exactly one of conv_id and to_user".into());
                        return self.fail(e, reference).await;
                    }
                };
                let cmd = ConvCommand::Send {
                    from,
                    user_id,
                    client_msg_id,
                    body,
                };
                self.state.cluster.route(conv_id, cmd).await;
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
                let cmd = ConvCommand::Ack {
                    from,
                    reference,
                    user_id,
                    kind,
                    seq,
                };
                self.state.cluster.route(conv_id, cmd).await;
            }
            ClientFrame::Sync {
                reference,
                watermarks,
            } => match parse_watermarks(watermarks) {
                Ok(watermarks) => {
                    spawn_sync(self.state, user_id, watermarks, reference, self.out, false)
                }
                Err(e) => self.fail(Error::BadRequest(e), reference).await,
            },
            ClientFrame::Ping {} => self.reply(ServerFrame::Pong).await,
            ClientFrame::Auth { .. } => {
                let e = Error::BadRequest("already authenticated".into());
                self.fail(e, Some("auth".into())).await
            }
        }
    }
}

/// Writes the session's frames, pings an idle client, and closes the
/// socket on the server's word or after the idle timeout.
async fn write(
    mut sink: Sink,
    mut frames: mpsc::Receiver<String>,
    mut close: oneshot::Receiver<CloseReason>,
    heartbeat: Duration,
    idle_timeout: Duration,
    last_heard: Arc<Mutex<Instant>>,
) {
    let mut ticker = tokio::time::interval(heartbeat);
    ticker.tick().await;
    let mut close_open = true;
    loop {
        tokio::select! {
            frame = frames.recv() => match frame {
                Some(text) => {
                    tokio::select! {
                        sent = sink.send(Message::Text(text.into())) => {
                            if sent.is_err() {
                                return;
                            }
                        }
                        // Blocked on a client that does not read, and the
                        // session gave up on it: drop the socket.
                        _ = &mut close, if close_open => return,
                    }
                }
                None => break,
            },
            reason = &mut close, if close_open => {
                close_open = false;
                if let Ok(reason) = reason {
                    // Flush what is already queued, then close; a client too
                    // slow to take it within the grace period just loses it
                    // (it syncs on reconnect).
                    let goodbye = async {
                        while let Ok(text) = frames.try_recv() {
                            sink.send(Message::Text(text.into())).await?;
                        }
                        sink.send(Message::Close(Some(CloseFrame {
                            code: reason.code,
                            reason: truncate(&reason.reason).into(),
                        }))).await
                    };
                    let _ = tokio::time::timeout(CLOSE_GRACE, goodbye).await;
                    return;
                }
            }
            _ = ticker.tick() => {
                if last_heard.lock().await.elapsed() > idle_timeout {
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

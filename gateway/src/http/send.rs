//! Sending over HTTP: messages, edits, deletions and reactions.
//!
//! These go to the conversation's actor exactly like a WebSocket `send`,
//! `edit`, `delete` or `react` frame (sequenced, committed, fanned out to
//! every member's devices, idempotent by `client_msg_id`); the request waits
//! for the actor's answer and returns it. A client that got no answer
//! (timeout, a node dying) resends with the same `client_msg_id` and gets
//! the original seq.

use std::time::Duration;

use actors::frames::{ErrorCode, ServerFrame};
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use storage::chat::{ConvId, MessageKind, Millis, NewMessage, Seq, UserId};
use utoipa::{IntoParams, ToSchema};

use super::extract::{Json, Path, Query};
use crate::error::ErrorBody;
use crate::{AppState, AuthUser, Error};

/// Checks a send or an event against the user's send budget (shared with
/// the WebSocket) and the message size limit, before it is routed.
pub(crate) fn sendable(state: &AppState, message: &NewMessage) -> Result<(), Error> {
    state.send_limiter.check(message.sender)?;
    let limit = state.store.limits().max_message_bytes;
    if message.body.len() > limit {
        return Err(Error::TooLarge { limit_bytes: limit });
    }
    Ok(())
}

/// Fails unless `user_id` is an active member of `conv_id` (one store
/// read): checked before a command is routed, so that naming someone
/// else's conversation neither activates nor keeps alive its actor.
pub(crate) async fn require_member(
    state: &AppState,
    user_id: UserId,
    conv_id: ConvId,
) -> Result<(), Error> {
    state
        .blocking(move |s| s.conversation(user_id, conv_id))
        .await
        .map(|_| ())
}

/// A committed send or event.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SentView {
    /// The conversation.
    pub conv_id: ConvId,
    /// The seq it took (a resend gets the original one).
    pub seq: Seq,
    /// When it was committed.
    pub sent_at: Millis,
    /// Its idempotency key (generated when the request gave none).
    pub client_msg_id: String,
}

/// Routes `message` to the conversation and turns the actor's answer into
/// a response.
async fn submit(
    state: &AppState,
    conv_id: ConvId,
    message: NewMessage,
) -> Result<Json<SentView>, Error> {
    sendable(state, &message)?;
    require_member(state, message.sender, conv_id).await?;
    // A failover takes well under it; then 503.
    let answer_timeout = Duration::from_secs(state.config.answer_timeout_secs.max(1));
    let answer = state
        .cluster
        .send_and_wait(conv_id, message, answer_timeout)
        .await
        .ok_or_else(|| Error::Refused {
            code: ErrorCode::Unavailable,
            message: "no answer in time: resend with the same client_msg_id".into(),
        })?;
    match serde_json::from_str::<ServerFrame>(&answer) {
        Ok(ServerFrame::Sent {
            client_msg_id,
            conv_id,
            seq,
            sent_at,
        }) => Ok(Json(SentView {
            conv_id,
            seq,
            sent_at,
            client_msg_id,
        })),
        Ok(ServerFrame::Error { code, message, .. }) => Err(Error::Refused { code, message }),
        _ => Err(Error::Internal(format!("unexpected answer: {answer}"))),
    }
}

/// The idempotency key a request gave, or a fresh one.
fn key_or_fresh(client_msg_id: Option<String>) -> String {
    client_msg_id.unwrap_or_else(|| format!("http-{:016x}", rand::random::<u64>()))
}

/// A message to send.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SendMessage {
    /// The text, 1 byte to the message limit (4096 by default).
    #[schema(example = "see you at 8 @bob")]
    pub body: String,
    /// Idempotency key, 1 to 64 bytes: a resend gets the original seq.
    /// Generated when left out (then a retry sends twice).
    pub client_msg_id: Option<String>,
    /// An earlier message of the conversation to quote.
    pub reply_to: Option<Seq>,
}

/// Sends a message to a conversation. Members only.
#[utoipa::path(post, path = "/api/conversations/{id}/messages", tag = "messages",
    security(("bearer" = [])),
    params(("id" = u64, Path, description = "The conversation")),
    request_body = SendMessage,
    responses(
        (status = 201, description = "Committed (or committed earlier: the original seq)", body = SentView),
        (status = 400, description = "Empty text, bad `reply_to`", body = ErrorBody),
        (status = 403, description = "Not a member, or blocked", body = ErrorBody),
        (status = 413, description = "Text over the message limit", body = ErrorBody),
        (status = 429, description = "Over the send rate", body = ErrorBody),
        (status = 503, description = "No answer in time; resend with the same client_msg_id", body = ErrorBody),
    ))]
pub(crate) async fn send(
    State(state): State<AppState>,
    me: AuthUser,
    Path(id): Path<ConvId>,
    Json(req): Json<SendMessage>,
) -> Result<(StatusCode, Json<SentView>), Error> {
    let message = NewMessage {
        reply_to: req.reply_to,
        ..NewMessage::text(me.user_id, key_or_fresh(req.client_msg_id), req.body)
    };
    Ok((StatusCode::CREATED, submit(&state, id, message).await?))
}

/// An edit.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EditMessage {
    /// The new text.
    pub body: String,
    /// Idempotency key of the edit.
    pub client_msg_id: Option<String>,
}

/// Replaces the text of one of the caller's messages. The edit is an
/// event with its own seq (`kind: "edit"`); the message keeps its seq and
/// shows `edited_at`; earlier texts stay readable under `/edits`.
#[utoipa::path(patch, path = "/api/conversations/{id}/messages/{seq}", tag = "messages",
    security(("bearer" = [])),
    params(("id" = u64, Path, description = "The conversation"), ("seq" = u64, Path, description = "The message")),
    request_body = EditMessage,
    responses(
        (status = 200, description = "The edit's own seq", body = SentView),
        (status = 400, description = "Empty text, too many edits", body = ErrorBody),
        (status = 403, description = "Not the author, or not a member", body = ErrorBody),
        (status = 404, description = "No such message, or deleted", body = ErrorBody),
        (status = 413, description = "Text over the message limit", body = ErrorBody),
    ))]
pub(crate) async fn edit(
    State(state): State<AppState>,
    me: AuthUser,
    Path((id, seq)): Path<(ConvId, Seq)>,
    Json(req): Json<EditMessage>,
) -> Result<Json<SentView>, Error> {
    let message = NewMessage {
        kind: MessageKind::Edit { target: seq },
        ..NewMessage::text(me.user_id, key_or_fresh(req.client_msg_id), req.body)
    };
    submit(&state, id, message).await
}

/// The idempotency key of a request without a body.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventKey {
    /// Idempotency key: a resend gets the original seq.
    pub client_msg_id: Option<String>,
}

/// Deletes a message for everyone: its author, or an admin of the group.
/// Its text, earlier texts, reactions and index entries are erased; a
/// tombstone keeps the seq.
#[utoipa::path(delete, path = "/api/conversations/{id}/messages/{seq}", tag = "messages",
    security(("bearer" = [])),
    params(("id" = u64, Path, description = "The conversation"), ("seq" = u64, Path, description = "The message"), EventKey),
    responses(
        (status = 200, description = "The deletion's own seq", body = SentView),
        (status = 403, description = "Neither the author nor a group admin", body = ErrorBody),
        (status = 404, description = "No such message, or already deleted", body = ErrorBody),
    ))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    me: AuthUser,
    Path((id, seq)): Path<(ConvId, Seq)>,
    Query(key): Query<EventKey>,
) -> Result<Json<SentView>, Error> {
    let message = NewMessage {
        kind: MessageKind::Delete { target: seq },
        ..NewMessage::text(me.user_id, key_or_fresh(key.client_msg_id), "")
    };
    submit(&state, id, message).await
}

/// Adds the caller's reaction (one of each emoji per member).
#[utoipa::path(put, path = "/api/conversations/{id}/messages/{seq}/reactions/{emoji}", tag = "messages",
    security(("bearer" = [])),
    params(("id" = u64, Path, description = "The conversation"), ("seq" = u64, Path, description = "The message"),
        ("emoji" = String, Path, description = "The emoji, percent-encoded"), EventKey),
    responses(
        (status = 200, description = "The reaction event's seq", body = SentView),
        (status = 400, description = "Not an emoji, or too many reactions", body = ErrorBody),
        (status = 403, description = "Not a member", body = ErrorBody),
        (status = 404, description = "No such message, or deleted", body = ErrorBody),
    ))]
pub(crate) async fn react(
    State(state): State<AppState>,
    me: AuthUser,
    Path((id, seq, emoji)): Path<(ConvId, Seq, String)>,
    Query(key): Query<EventKey>,
) -> Result<Json<SentView>, Error> {
    reaction(&state, me, id, seq, emoji, key, true).await
}

/// A reaction named in the body (no percent-encoding needed).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AddReaction {
    /// The emoji.
    #[schema(example = "👍")]
    pub emoji: String,
    /// Idempotency key of the reaction change.
    pub client_msg_id: Option<String>,
}

/// Adds the caller's reaction, the emoji in the body: the same as `PUT
/// …/reactions/{emoji}`.
#[utoipa::path(post, path = "/api/conversations/{id}/messages/{seq}/reactions", tag = "messages",
    security(("bearer" = [])),
    params(("id" = u64, Path, description = "The conversation"), ("seq" = u64, Path, description = "The message")),
    request_body = AddReaction,
    responses(
        (status = 200, description = "The reaction event's seq", body = SentView),
        (status = 400, description = "Not an emoji, or too many reactions", body = ErrorBody),
        (status = 403, description = "Not a member", body = ErrorBody),
        (status = 404, description = "No such message, or deleted", body = ErrorBody),
    ))]
pub(crate) async fn react_with_body(
    State(state): State<AppState>,
    me: AuthUser,
    Path((id, seq)): Path<(ConvId, Seq)>,
    Json(req): Json<AddReaction>,
) -> Result<Json<SentView>, Error> {
    let key = EventKey {
        client_msg_id: req.client_msg_id,
    };
    reaction(&state, me, id, seq, req.emoji, key, true).await
}

/// Removes the caller's reaction.
#[utoipa::path(delete, path = "/api/conversations/{id}/messages/{seq}/reactions/{emoji}", tag = "messages",
    security(("bearer" = [])),
    params(("id" = u64, Path, description = "The conversation"), ("seq" = u64, Path, description = "The message"),
        ("emoji" = String, Path, description = "The emoji, percent-encoded"), EventKey),
    responses(
        (status = 200, description = "The reaction event's seq", body = SentView),
        (status = 400, description = "Not an emoji", body = ErrorBody),
        (status = 403, description = "Not a member", body = ErrorBody),
        (status = 404, description = "No such message, or deleted", body = ErrorBody),
    ))]
pub(crate) async fn unreact(
    State(state): State<AppState>,
    me: AuthUser,
    Path((id, seq, emoji)): Path<(ConvId, Seq, String)>,
    Query(key): Query<EventKey>,
) -> Result<Json<SentView>, Error> {
    reaction(&state, me, id, seq, emoji, key, false).await
}

async fn reaction(
    state: &AppState,
    me: AuthUser,
    id: ConvId,
    seq: Seq,
    emoji: String,
    key: EventKey,
    added: bool,
) -> Result<Json<SentView>, Error> {
    let message = NewMessage {
        kind: MessageKind::Reaction {
            target: seq,
            emoji,
            added,
        },
        ..NewMessage::text(me.user_id, key_or_fresh(key.client_msg_id), "")
    };
    submit(state, id, message).await
}

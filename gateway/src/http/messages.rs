//! Reading a conversation: history pages, one message's status, receipts,
//! edit histories and reactions.
//!
//! Sending is in [`super::send`]: it goes to the conversation's actor,
//! which sequences it.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use storage::chat::{ConvId, Millis, Seq};
use utoipa::{IntoParams, ToSchema};

use super::extract::{Json, Path, Query};
use super::views::{MemberStatusView, MessageView, ReactionView, ReceiptView};
use super::DEFAULT_PAGE;
use crate::error::ErrorBody;
use crate::{AppState, AuthUser, Error};

/// History paging.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct HistoryParams {
    /// Only messages before this seq (the oldest of the previous page);
    /// the newest messages when left out.
    pub before_seq: Option<Seq>,
    /// Page size (default 50, capped by the server's page limit).
    pub limit: Option<usize>,
}

/// A page of history.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MessagePage {
    /// Newest first.
    pub messages: Vec<MessageView>,
}

/// A page of a conversation's messages, newest first, for direct chats and
/// groups alike. Members only.
#[utoipa::path(get, path = "/api/conversations/{id}/messages", tag = "messages",
    security(("bearer" = [])),
    params(("id" = u64, Path, description = "The conversation"), HistoryParams),
    responses(
        (status = 200, description = "The page", body = MessagePage),
        (status = 400, description = "Bad paging parameters", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "Not a member", body = ErrorBody),
        (status = 404, description = "No such conversation", body = ErrorBody),
    ))]
pub(crate) async fn history(
    State(state): State<AppState>,
    me: AuthUser,
    Path(id): Path<ConvId>,
    Query(params): Query<HistoryParams>,
) -> Result<Json<MessagePage>, Error> {
    let limit = params.limit.unwrap_or(DEFAULT_PAGE);
    let messages = state
        .blocking(move |store| store.history(me.user_id, id, params.before_seq, limit))
        .await?;
    Ok(Json(MessagePage {
        messages: messages.into_iter().map(MessageView::from).collect(),
    }))
}

/// Where one message stands with each other member.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MessageStatusView {
    /// The message.
    pub seq: Seq,
    /// Every other current member, in user id order.
    pub members: Vec<MemberStatusView>,
}

/// Which members have message `seq` delivered or seen. Members only.
#[utoipa::path(get, path = "/api/conversations/{id}/messages/{seq}/status", tag = "messages",
    security(("bearer" = [])),
    params(
        ("id" = u64, Path, description = "The conversation"),
        ("seq" = u64, Path, description = "The message"),
    ),
    responses(
        (status = 200, description = "Each other member's status", body = MessageStatusView),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "Not a member", body = ErrorBody),
        (status = 404, description = "No such conversation or message", body = ErrorBody),
    ))]
pub(crate) async fn status(
    State(state): State<AppState>,
    me: AuthUser,
    Path((id, seq)): Path<(ConvId, Seq)>,
) -> Result<Json<MessageStatusView>, Error> {
    let statuses = state
        .blocking(move |store| store.message_status(me.user_id, id, seq))
        .await?;
    let members = statuses
        .into_iter()
        .map(|(user_id, status)| MemberStatusView { user_id, status })
        .collect();
    Ok(Json(MessageStatusView { seq, members }))
}

/// Every member's watermarks.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ReceiptList {
    /// One per current member, in user id order.
    pub receipts: Vec<ReceiptView>,
}

/// Each member's delivered and seen watermarks: message `seq` is delivered
/// to a member when their `delivered_seq >= seq`, seen likewise. Members
/// only.
#[utoipa::path(get, path = "/api/conversations/{id}/receipts", tag = "messages",
    security(("bearer" = [])),
    params(("id" = u64, Path, description = "The conversation")),
    responses(
        (status = 200, description = "The watermarks", body = ReceiptList),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "Not a member", body = ErrorBody),
        (status = 404, description = "No such conversation", body = ErrorBody),
    ))]
pub(crate) async fn receipts(
    State(state): State<AppState>,
    me: AuthUser,
    Path(id): Path<ConvId>,
) -> Result<Json<ReceiptList>, Error> {
    let receipts = state
        .blocking(move |store| store.receipts(me.user_id, id))
        .await?;
    Ok(Json(ReceiptList {
        receipts: receipts.into_iter().map(ReceiptView::from).collect(),
    }))
}

/// One text of an edited message.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RevisionView {
    /// The text.
    pub body: String,
    /// Since when it was the text.
    pub at: Millis,
    /// The edit event that wrote it; null for the original.
    pub edit_seq: Option<Seq>,
}

/// A message's edit history.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct EditHistory {
    /// The message.
    pub seq: Seq,
    /// Oldest first; the last is the current text. Empty once deleted.
    pub versions: Vec<RevisionView>,
}

/// Every text a message has had. Members only.
#[utoipa::path(get, path = "/api/conversations/{id}/messages/{seq}/edits", tag = "messages",
    security(("bearer" = [])),
    params(("id" = u64, Path, description = "The conversation"), ("seq" = u64, Path, description = "The message")),
    responses(
        (status = 200, description = "The versions", body = EditHistory),
        (status = 403, description = "Not a member", body = ErrorBody),
        (status = 404, description = "No such message", body = ErrorBody),
    ))]
pub(crate) async fn edits(
    State(state): State<AppState>,
    me: AuthUser,
    Path((id, seq)): Path<(ConvId, Seq)>,
) -> Result<Json<EditHistory>, Error> {
    let revisions = state
        .blocking(move |store| store.edit_history(me.user_id, id, seq))
        .await?;
    Ok(Json(EditHistory {
        seq,
        versions: revisions
            .into_iter()
            .map(|r| RevisionView {
                body: r.body,
                at: r.at,
                edit_seq: r.edit_seq,
            })
            .collect(),
    }))
}

/// A message's reactions.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ReactionList {
    /// The message.
    pub seq: Seq,
    /// One entry per emoji, in emoji order.
    pub reactions: Vec<ReactionView>,
}

/// Who reacted to a message with what. Members only.
#[utoipa::path(get, path = "/api/conversations/{id}/messages/{seq}/reactions", tag = "messages",
    security(("bearer" = [])),
    params(("id" = u64, Path, description = "The conversation"), ("seq" = u64, Path, description = "The message")),
    responses(
        (status = 200, description = "The reactions", body = ReactionList),
        (status = 403, description = "Not a member", body = ErrorBody),
        (status = 404, description = "No such message", body = ErrorBody),
    ))]
pub(crate) async fn reactions(
    State(state): State<AppState>,
    me: AuthUser,
    Path((id, seq)): Path<(ConvId, Seq)>,
) -> Result<Json<ReactionList>, Error> {
    let reactions = state
        .blocking(move |store| store.reactions(me.user_id, id, seq))
        .await?;
    Ok(Json(ReactionList {
        seq,
        reactions: reactions.into_iter().map(ReactionView::from).collect(),
    }))
}

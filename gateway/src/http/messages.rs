//! Reading a conversation: history pages, one message's status, receipts.
//!
//! Sending is not here: it goes over the WebSocket to the conversation's
//! actor, which sequences it.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use storage::chat::{ConvId, Seq};
use utoipa::{IntoParams, ToSchema};

use super::extract::{Json, Path, Query};
use super::views::{MemberStatusView, MessageView, ReceiptView};
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

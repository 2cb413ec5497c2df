//! The caller's chat list, and opening a direct chat.

use axum::extract::State;
use serde::Serialize;
use storage::chat::{ChatSummary, ConvId, ConvKind, MessageStatus, Millis, Seq, UserId};
use utoipa::ToSchema;

use super::extract::{Json, Path};
use super::views::{ConversationView, UserView};
use crate::error::ErrorBody;
use crate::{AppState, AuthUser, Error};

/// The newest message of a conversation, as a list row shows it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LastMessageView {
    /// Its sequence number.
    pub seq: Seq,
    /// Who sent it.
    pub sender: UserId,
    /// Its first 100 characters.
    pub preview: String,
    /// When it was committed.
    pub sent_at: Millis,
}

/// One row of the chat list.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ChatSummaryView {
    /// The conversation.
    pub conv_id: ConvId,
    /// `direct` or `group`.
    #[schema(value_type = String, example = "direct")]
    pub kind: ConvKind,
    /// The group's name, or the other user's name for a direct chat.
    pub name: String,
    /// The other user of a direct chat.
    pub peer: Option<UserView>,
    /// The newest message, if any.
    pub last_message: Option<LastMessageView>,
    /// The newest message's time, or when the caller joined.
    pub last_activity_at: Millis,
    /// Messages after the caller's seen watermark.
    pub unread: u64,
    /// When the newest message is the caller's own: `sent`, `delivered` or
    /// `seen`, as far as the least advanced other member got.
    #[schema(value_type = Option<String>, example = "delivered")]
    pub last_message_status: Option<MessageStatus>,
    /// Unread messages that mention the caller: the mention badge.
    pub mentions: u64,
    /// Whether the caller muted it (no push, mentions excepted).
    pub muted: bool,
    /// Until when (unix millis); null for ever or when not muted.
    pub muted_until: Option<Millis>,
}

impl From<ChatSummary> for ChatSummaryView {
    fn from(c: ChatSummary) -> Self {
        Self {
            conv_id: c.conv_id,
            kind: c.kind,
            name: c.name,
            peer: c.peer.map(UserView::from),
            last_message: c.last_message.map(|m| LastMessageView {
                seq: m.seq,
                sender: m.sender,
                preview: m.preview,
                sent_at: m.sent_at,
            }),
            last_activity_at: c.last_activity_at,
            unread: c.unread,
            last_message_status: c.last_message_status,
            mentions: c.mentions,
            muted: c.muted,
            muted_until: c.muted_until,
        }
    }
}

/// The chat list.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ChatList {
    /// Most recently active first.
    pub chats: Vec<ChatSummaryView>,
}

/// Every conversation of the caller, direct and group, most recent first.
#[utoipa::path(get, path = "/api/chats", tag = "chats",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's chats", body = ChatList),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
    ))]
pub(crate) async fn list(
    State(state): State<AppState>,
    me: AuthUser,
) -> Result<Json<ChatList>, Error> {
    let chats = state
        .blocking(move |store| store.chat_list(me.user_id))
        .await?;
    Ok(Json(ChatList {
        chats: chats.into_iter().map(ChatSummaryView::from).collect(),
    }))
}

/// The direct chat between the caller and `user_id`, created on first use.
/// Idempotent: either user gets the same conversation every time.
#[utoipa::path(post, path = "/api/direct/{user_id}", tag = "chats",
    security(("bearer" = [])),
    params(("user_id" = u64, Path, description = "The other user")),
    responses(
        (status = 200, description = "The direct chat", body = ConversationView),
        (status = 400, description = "A chat with yourself", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 403, description = "One of you has blocked the other", body = ErrorBody),
        (status = 429, description = "Too many writes by this user; retry after `Retry-After`", body = ErrorBody),
    ))]
pub(crate) async fn open_direct(
    State(state): State<AppState>,
    me: AuthUser,
    Path(user_id): Path<UserId>,
) -> Result<Json<ConversationView>, Error> {
    state.throttles.write(me.user_id)?;
    let (conv, created) = state
        .blocking(move |store| store.open_direct_created(me.user_id, user_id))
        .await?;
    if created {
        state.cluster.introduce(me.user_id, &[user_id]).await;
    }
    Ok(Json(conv.into()))
}

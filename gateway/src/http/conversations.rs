//! One conversation with its members: what a chat's header shows.

use axum::extract::State;
use serde::Serialize;
use storage::chat::ConvId;
use utoipa::ToSchema;

use super::extract::{Json, Path};
use super::views::{ConversationView, MemberView};
use crate::error::ErrorBody;
use crate::{AppState, AuthUser, Error};

/// A conversation and its current members.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ConversationDetail {
    /// The conversation.
    pub conversation: ConversationView,
    /// Its active members, in user id order.
    pub members: Vec<MemberView>,
}

/// A direct chat or group the caller belongs to, with its members.
#[utoipa::path(get, path = "/api/conversations/{id}", tag = "conversations",
    security(("bearer" = [])),
    params(("id" = u64, Path, description = "The conversation")),
    responses(
        (status = 200, description = "The conversation", body = ConversationDetail),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "Not a member", body = ErrorBody),
        (status = 404, description = "No such conversation", body = ErrorBody),
    ))]
pub(crate) async fn show(
    State(state): State<AppState>,
    me: AuthUser,
    Path(id): Path<ConvId>,
) -> Result<Json<ConversationDetail>, Error> {
    let (conv, members) = state
        .blocking(move |store| {
            let conv = store.conversation(me.user_id, id)?;
            Ok((conv, store.members(me.user_id, id)?))
        })
        .await?;
    Ok(Json(ConversationDetail {
        conversation: conv.into(),
        members: members.into_iter().map(MemberView::from).collect(),
    }))
}

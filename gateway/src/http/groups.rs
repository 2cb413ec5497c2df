//! Groups: create, edit, delete, and their membership history.
//!
//! Changes are told to the group's conversation actor only after the store
//! committed them, so members' sessions never hear of a change that a
//! failure undid.

use actors::ConvChange;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use storage::chat::{ConvId, UserId};
use utoipa::ToSchema;

use super::extract::{Json, Path};
use super::views::{ConversationView, MemberEventView};
use crate::error::ErrorBody;
use crate::{AppState, AuthUser, Error};

/// A new group.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct CreateGroup {
    /// 1 to 100 characters.
    #[schema(example = "climbing")]
    pub name: String,
    /// Up to 1000 characters; empty when left out.
    #[serde(default)]
    #[schema(example = "Saturday sessions")]
    pub description: String,
    /// Users added as plain members; the creator is the admin.
    #[serde(default)]
    #[schema(example = json!([8, 9]))]
    pub members: Vec<UserId>,
}

/// Creates a group with the caller as its admin. Unknown member ids fail
/// the whole request.
#[utoipa::path(post, path = "/api/groups", tag = "groups",
    security(("bearer" = [])),
    request_body = CreateGroup,
    responses(
        (status = 201, description = "Created", body = ConversationView),
        (status = 400, description = "Invalid name, description or too many members", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 404, description = "A member does not exist", body = ErrorBody),
        (status = 403, description = "A member has blocked the creator", body = ErrorBody),
        (status = 429, description = "Too many writes by this user; retry after `Retry-After`", body = ErrorBody),
    ))]
pub(crate) async fn create(
    State(state): State<AppState>,
    me: AuthUser,
    Json(req): Json<CreateGroup>,
) -> Result<(StatusCode, Json<ConversationView>), Error> {
    state.throttles.write(me.user_id)?;
    let members = req.members.clone();
    let conv = state
        .blocking(move |store| {
            store.create_group(me.user_id, &req.name, &req.description, &req.members)
        })
        .await?;
    // The initial members learn about the group (and each other's
    // presence) at once, as if added one by one.
    for user_id in members.into_iter().filter(|&u| u != me.user_id) {
        let change = ConvChange::MemberJoined {
            user_id,
            by: me.user_id,
        };
        state.cluster.conversation_changed(conv.id, change).await;
    }
    Ok((StatusCode::CREATED, Json(conv.into())))
}

/// A change of a group's settings; at least one field.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct EditGroup {
    /// New name, 1 to 100 characters.
    pub name: Option<String>,
    /// New description, up to 1000 characters.
    #[schema(example = "Sunday sessions now")]
    pub description: Option<String>,
}

/// Renames a group or edits its description. Any member may.
#[utoipa::path(patch, path = "/api/groups/{id}", tag = "groups",
    security(("bearer" = [])),
    params(("id" = u64, Path, description = "The group")),
    request_body = EditGroup,
    responses(
        (status = 200, description = "The updated group", body = ConversationView),
        (status = 400, description = "Nothing to change, invalid value, or a direct chat", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "Not a member", body = ErrorBody),
        (status = 404, description = "No such group", body = ErrorBody),
        (status = 429, description = "Too many writes by this user; retry after `Retry-After`", body = ErrorBody),
    ))]
pub(crate) async fn edit(
    State(state): State<AppState>,
    me: AuthUser,
    Path(id): Path<ConvId>,
    Json(req): Json<EditGroup>,
) -> Result<Json<ConversationView>, Error> {
    state.throttles.write(me.user_id)?;
    if req.name.is_none() && req.description.is_none() {
        return Err(Error::BadRequest(
            "nothing to change: give `name` and/or `description`".into(),
        ));
    }
    let conv = state
        .blocking(move |store| {
            store.edit_group(
                me.user_id,
                id,
                req.name.as_deref(),
                req.description.as_deref(),
            )
        })
        .await?;
    state
        .cluster
        .conversation_changed(id, ConvChange::Updated(conv.clone()))
        .await;
    Ok(Json(conv.into()))
}

/// Deletes a group: admins only. Its history is kept but nobody can read
/// or post in it any more.
#[utoipa::path(delete, path = "/api/groups/{id}", tag = "groups",
    security(("bearer" = [])),
    params(("id" = u64, Path, description = "The group")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "A direct chat", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "Not a member, or not an admin", body = ErrorBody),
        (status = 404, description = "No such group", body = ErrorBody),
        (status = 429, description = "Too many writes by this user; retry after `Retry-After`", body = ErrorBody),
    ))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    me: AuthUser,
    Path(id): Path<ConvId>,
) -> Result<StatusCode, Error> {
    state.throttles.write(me.user_id)?;
    let members = state
        .blocking(move |store| store.delete_group(me.user_id, id))
        .await?;
    state
        .cluster
        .conversation_changed(id, ConvChange::Deleted { members })
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// A group's membership history.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MemberHistory {
    /// Oldest first.
    pub events: Vec<MemberEventView>,
}

/// Who joined, left, was removed or promoted, when and by whom. Members only.
#[utoipa::path(get, path = "/api/groups/{id}/history", tag = "groups",
    security(("bearer" = [])),
    params(("id" = u64, Path, description = "The group")),
    responses(
        (status = 200, description = "The history", body = MemberHistory),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "Not a member", body = ErrorBody),
        (status = 404, description = "No such group", body = ErrorBody),
    ))]
pub(crate) async fn history(
    State(state): State<AppState>,
    me: AuthUser,
    Path(id): Path<ConvId>,
) -> Result<Json<MemberHistory>, Error> {
    let events = state
        .blocking(move |store| store.member_history(me.user_id, id))
        .await?;
    Ok(Json(MemberHistory {
        events: events.into_iter().map(MemberEventView::from).collect(),
    }))
}

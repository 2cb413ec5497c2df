//! Group membership: add a member, remove one (admins), leave.
//!
//! As with every group change, the conversation actor hears about it only
//! after the store committed it.

use actors::ConvChange;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use storage::chat::{ConvId, UserId};
use utoipa::ToSchema;

use super::extract::{Json, Path};
use super::views::MemberView;
use crate::error::ErrorBody;
use crate::{AppState, AuthUser, Error};

/// Whom to add.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct AddMember {
    /// The user to add.
    #[schema(example = 9)]
    pub user_id: UserId,
}

/// Adds a user to a group. Any member may.
#[utoipa::path(post, path = "/api/groups/{id}/members", tag = "members",
    security(("bearer" = [])),
    params(("id" = u64, Path, description = "The group")),
    request_body = AddMember,
    responses(
        (status = 201, description = "Added", body = MemberView),
        (status = 400, description = "A direct chat, or the group is full", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "The caller is not a member, or the user has blocked them", body = ErrorBody),
        (status = 404, description = "No such group or user", body = ErrorBody),
        (status = 409, description = "Already a member", body = ErrorBody),
        (status = 429, description = "Too many writes by this user; retry after `Retry-After`", body = ErrorBody),
    ))]
pub(crate) async fn add(
    State(state): State<AppState>,
    me: AuthUser,
    Path(id): Path<ConvId>,
    Json(req): Json<AddMember>,
) -> Result<(StatusCode, Json<MemberView>), Error> {
    state.throttles.write(me.user_id)?;
    let by = me.user_id;
    let member = state
        .blocking(move |store| store.add_member(by, id, req.user_id))
        .await?;
    let change = ConvChange::MemberJoined {
        user_id: member.user_id,
        by,
    };
    state.cluster.conversation_changed(id, change).await;
    Ok((StatusCode::CREATED, Json(member.into())))
}

/// Removes another member from a group: admins only.
#[utoipa::path(delete, path = "/api/groups/{id}/members/{user_id}", tag = "members",
    security(("bearer" = [])),
    params(
        ("id" = u64, Path, description = "The group"),
        ("user_id" = u64, Path, description = "The member to remove"),
    ),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, description = "Removing yourself (use leave), or a direct chat", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "Not an admin, or the target is not a member", body = ErrorBody),
        (status = 404, description = "No such group", body = ErrorBody),
        (status = 429, description = "Too many writes by this user; retry after `Retry-After`", body = ErrorBody),
    ))]
pub(crate) async fn remove(
    State(state): State<AppState>,
    me: AuthUser,
    Path((id, user_id)): Path<(ConvId, UserId)>,
) -> Result<StatusCode, Error> {
    state.throttles.write(me.user_id)?;
    let by = me.user_id;
    state
        .blocking(move |store| store.remove_member(by, id, user_id))
        .await?;
    let change = ConvChange::MemberLeft { user_id, by };
    state.cluster.conversation_changed(id, change).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Leaves a group. Anyone may; when the last admin leaves, the
/// longest-standing member becomes admin.
#[utoipa::path(post, path = "/api/groups/{id}/leave", tag = "members",
    security(("bearer" = [])),
    params(("id" = u64, Path, description = "The group")),
    responses(
        (status = 204, description = "Left"),
        (status = 400, description = "A direct chat", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "Not a member", body = ErrorBody),
        (status = 404, description = "No such group", body = ErrorBody),
    ))]
pub(crate) async fn leave(
    State(state): State<AppState>,
    me: AuthUser,
    Path(id): Path<ConvId>,
) -> Result<StatusCode, Error> {
    let user_id = me.user_id;
    state
        .blocking(move |store| store.leave(user_id, id))
        .await?;
    let change = ConvChange::MemberLeft {
        user_id,
        by: user_id,
    };
    state.cluster.conversation_changed(id, change).await;
    Ok(StatusCode::NO_CONTENT)
}

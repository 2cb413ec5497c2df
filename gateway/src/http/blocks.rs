//! The caller's block list: block, unblock, list. A blocked user can
//! neither open a direct chat with the blocker, nor add them to a group,
//! nor send to a direct chat they share (403 `forbidden`); storage checks
//! it in the same transactions, so WebSocket sends are covered too.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use storage::chat::{Block, Millis, UserId};
use utoipa::ToSchema;

use super::extract::{Json, Path};
use crate::error::ErrorBody;
use crate::{AppState, AuthUser, Error};

/// Whom to block.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct BlockRequest {
    /// The user to block.
    pub user_id: UserId,
}

/// One blocked user.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BlockView {
    /// The blocked user.
    pub user_id: UserId,
    /// Since when, ms since the Unix epoch.
    pub since: Millis,
}

impl From<Block> for BlockView {
    fn from(b: Block) -> Self {
        Self {
            user_id: b.user_id,
            since: b.since,
        }
    }
}

/// The caller's block list.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BlockList {
    /// By user id.
    pub blocks: Vec<BlockView>,
}

/// Blocks a user. Blocking someone already blocked keeps the first date.
#[utoipa::path(post, path = "/api/blocks", tag = "blocks",
    security(("bearer" = [])),
    request_body = BlockRequest,
    responses(
        (status = 201, description = "Blocked", body = BlockView),
        (status = 400, description = "Blocking yourself, or a malformed body", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 429, description = "Too many writes by this user; retry after `Retry-After`", body = ErrorBody),
    ))]
pub(crate) async fn add(
    State(state): State<AppState>,
    me: AuthUser,
    Json(req): Json<BlockRequest>,
) -> Result<(StatusCode, Json<BlockView>), Error> {
    state.throttles.write(me.user_id)?;
    let block = state
        .blocking(move |store| store.block(me.user_id, req.user_id))
        .await?;
    Ok((StatusCode::CREATED, Json(block.into())))
}

/// Everyone the caller has blocked.
#[utoipa::path(get, path = "/api/blocks", tag = "blocks",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The block list", body = BlockList),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
    ))]
pub(crate) async fn list(
    State(state): State<AppState>,
    me: AuthUser,
) -> Result<Json<BlockList>, Error> {
    let blocks = state
        .blocking(move |store| store.blocked_users(me.user_id))
        .await?;
    Ok(Json(BlockList {
        blocks: blocks.into_iter().map(BlockView::from).collect(),
    }))
}

/// Unblocks a user.
#[utoipa::path(delete, path = "/api/blocks/{user_id}", tag = "blocks",
    security(("bearer" = [])),
    params(("user_id" = u64, Path, description = "The blocked user")),
    responses(
        (status = 204, description = "Unblocked"),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 404, description = "That user is not blocked", body = ErrorBody),
        (status = 429, description = "Too many writes by this user; retry after `Retry-After`", body = ErrorBody),
    ))]
pub(crate) async fn remove(
    State(state): State<AppState>,
    me: AuthUser,
    Path(user_id): Path<UserId>,
) -> Result<StatusCode, Error> {
    state.throttles.write(me.user_id)?;
    state
        .blocking(move |store| store.unblock(me.user_id, user_id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

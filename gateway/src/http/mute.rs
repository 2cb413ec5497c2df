//! Muting a conversation: no push for it but mentions, until a time or for
//! ever.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use storage::chat::{ConvId, Millis};
use utoipa::ToSchema;

use super::extract::{Json, Path};
use crate::error::ErrorBody;
use crate::{AppState, AuthUser, Error};

/// How long to mute.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MuteRequest {
    /// Unix millis in the future; null or left out: for ever.
    #[serde(default)]
    pub until: Option<Millis>,
}

/// A mute in force.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MuteView {
    /// The conversation.
    pub conv_id: ConvId,
    /// Always true.
    pub muted: bool,
    /// Until when; null for ever.
    pub muted_until: Option<Millis>,
}

/// Mutes a conversation for the caller (replacing an earlier mute). Muted
/// conversations push nothing but messages mentioning the caller, and are
/// marked in the chat list. Members only.
#[utoipa::path(put, path = "/api/conversations/{id}/mute", tag = "chats",
    security(("bearer" = [])),
    params(("id" = u64, Path, description = "The conversation")),
    request_body = MuteRequest,
    responses(
        (status = 200, description = "Muted", body = MuteView),
        (status = 400, description = "`until` is not in the future", body = ErrorBody),
        (status = 403, description = "Not a member", body = ErrorBody),
        (status = 404, description = "No such conversation", body = ErrorBody),
    ))]
pub(crate) async fn mute(
    State(state): State<AppState>,
    me: AuthUser,
    Path(id): Path<ConvId>,
    Json(req): Json<MuteRequest>,
) -> Result<Json<MuteView>, Error> {
    state.throttles.write(me.user_id)?;
    let mute = state
        .blocking(move |store| store.mute(me.user_id, id, req.until))
        .await?;
    Ok(Json(MuteView {
        conv_id: id,
        muted: true,
        muted_until: mute.until,
    }))
}

/// Ends the caller's mute of a conversation (a no-op when not muted).
#[utoipa::path(delete, path = "/api/conversations/{id}/mute", tag = "chats",
    security(("bearer" = [])),
    params(("id" = u64, Path, description = "The conversation")),
    responses(
        (status = 204, description = "Not muted any more"),
        (status = 403, description = "Not a member", body = ErrorBody),
        (status = 404, description = "No such conversation", body = ErrorBody),
    ))]
pub(crate) async fn unmute(
    State(state): State<AppState>,
    me: AuthUser,
    Path(id): Path<ConvId>,
) -> Result<StatusCode, Error> {
    state.throttles.write(me.user_id)?;
    state
        .blocking(move |store| store.unmute(me.user_id, id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

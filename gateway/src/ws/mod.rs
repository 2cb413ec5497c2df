//! The WebSocket endpoint: `GET /ws`.
//!
//! A client authenticates with `?token=` (browsers cannot set headers on a
//! WebSocket) or with an `auth` frame first. Then a [`SessionActor`] is
//! spawned for the connection: it joins the user's process group (the user
//! is online) and is the only writer to the socket, through a bounded queue
//! that [`connection`] drains. Protocol: docs/PROTOCOL.md.
//!
//! [`SessionActor`]: actors::session::SessionActor

mod answers;
mod connection;
mod presence;

use actors::frames::ErrorCode;
use actors::standby::Standby;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use storage::chat::{DeviceKey, UserId};

use crate::{AppState, Error};

/// Frames larger than this many times `max_frame_bytes` close the
/// connection (1009); smaller oversized frames get an `error` frame and the
/// connection stays usable.
const HARD_FRAME_FACTOR: usize = 4;

/// Initial read buffer of a connection (it grows for larger frames).
const READ_BUFFER_BYTES: usize = 1024;

/// `?token=` and `?device_id=` on the upgrade request.
#[derive(Debug, Deserialize)]
pub(crate) struct WsQuery {
    token: Option<String>,
    device_id: Option<String>,
}

/// Who is connecting: the user, the login they used and the device they
/// are on.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    user_id: UserId,
    login: DeviceKey,
    device: DeviceKey,
}

/// Authenticates a token and names the device (the client's `device_id`,
/// else the login itself), then charges the user's connection budget
/// (`connects_per_user_per_minute`): a bad token costs no budget, a good
/// one past it is `rate_limited`.
pub(crate) async fn identify(
    state: &AppState,
    token: &str,
    device_id: Option<&str>,
) -> Result<Identity, Error> {
    let device = device_id
        .map(DeviceKey::named)
        .transpose()
        .map_err(Error::from)?;
    let user_id = crate::auth::authenticate(state, token).await?;
    state.throttles.connect(user_id)?;
    let login = DeviceKey::of_token(token);
    Ok(Identity {
        user_id,
        device: device.unwrap_or_else(|| login.clone()),
        login,
    })
}

/// `GET /ws`: authenticates (when a token is in the URL, before upgrading,
/// so a bad one is a plain 401) and upgrades.
pub(crate) async fn handler(
    State(state): State<AppState>,
    Query(query): Query<WsQuery>,
    upgrade: WebSocketUpgrade,
) -> Response {
    // A node cut from the store closed its clients so that they move; it
    // takes no new ones until the store is back.
    if let Some(standby @ Standby::StoreLost) = state.cluster.standby() {
        let e = Error::Refused {
            code: ErrorCode::Unavailable,
            message: standby.describe().into(),
        };
        return e.into_response();
    }
    let user = match &query.token {
        Some(token) => match identify(&state, token, query.device_id.as_deref()).await {
            Ok(identity) => Some(identity),
            Err(e) => return e.into_response(),
        },
        None => None,
    };
    let hard_limit = state
        .config
        .max_frame_bytes
        .saturating_mul(HARD_FRAME_FACTOR);
    upgrade
        // axum's default read buffer is 128 KiB per connection, which
        // dominated an idle session's memory; frames are small.
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(hard_limit)
        .max_frame_size(hard_limit)
        .on_upgrade(move |socket| connection::serve(state, socket, user))
        .into_response()
}

/// Turns an error into the text of an `error` frame.
pub(crate) fn error_text(e: &Error, reference: Option<String>) -> Message {
    Message::Text(e.frame(reference).to_json().into())
}

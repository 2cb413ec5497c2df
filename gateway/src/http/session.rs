//! Accounts and login sessions: register, login, logout.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use storage::chat::{Millis, NewUser};
use utoipa::ToSchema;

use super::extract::Json;
use super::views::UserView;
use crate::error::ErrorBody;
use crate::listener::ClientAddr;
use crate::{AppState, AuthUser, Error};

/// Registration. No `Debug`: it holds a password.
#[derive(Deserialize, ToSchema)]
pub(crate) struct RegisterRequest {
    /// 3 to 32 letters, digits, `_`, `.` or `-`; unique in any case.
    #[schema(example = "alice")]
    pub name: String,
    /// Optional, unique: 4 to 20 digits, optionally after a `+`.
    #[serde(default)]
    #[schema(example = "+15551234567")]
    pub phone: Option<String>,
    /// At least 8 characters.
    #[schema(example = "correct horse")]
    pub password: String,
}

/// Creates an account. It does not log in: call `/api/login` next.
#[utoipa::path(post, path = "/api/register", tag = "session",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "Registered", body = UserView),
        (status = 400, description = "Invalid name, phone or password", body = ErrorBody),
        (status = 409, description = "Name or phone taken, or the name looks like a taken one", body = ErrorBody),
        (status = 429, description = "Too many registrations from this address", body = ErrorBody),
        (status = 503, description = "Too many password hashes queued; retry after `Retry-After`", body = ErrorBody),
    ))]
pub(crate) async fn register(
    State(state): State<AppState>,
    ClientAddr(address): ClientAddr,
    Json(req): Json<RegisterRequest>,
) -> Result<(StatusCode, Json<UserView>), Error> {
    state.throttles.registration(address)?;
    let new = NewUser {
        name: req.name,
        phone: req.phone,
        password: req.password,
    };
    let store = state.store.clone();
    let user = state
        .hash_gate
        .run(move || store.register(&new).map_err(Error::from))
        .await?;
    Ok((StatusCode::CREATED, Json(UserView::from(&user))))
}

/// Login. No `Debug`: it holds a password.
#[derive(Deserialize, ToSchema)]
pub(crate) struct LoginRequest {
    /// The user's name, in any case.
    #[schema(example = "alice")]
    pub name: String,
    /// The user's password.
    #[schema(example = "correct horse")]
    pub password: String,
}

/// A new login session.
#[derive(Serialize, ToSchema)]
pub(crate) struct LoginResponse {
    /// Bearer token for `Authorization: Bearer <token>` (or `?token=`).
    pub token: String,
    /// Who logged in.
    pub user: UserView,
    /// When the token stops working, ms since the Unix epoch.
    pub expires_at: Millis,
}

/// Checks the password and issues a token valid for the configured TTL.
/// A wrong password and an unknown name get the same 401 in the same time
/// (an unknown name is checked against a dummy hash). Failures are
/// throttled per account name, attempts per client address.
#[utoipa::path(post, path = "/api/login", tag = "session",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = LoginResponse),
        (status = 401, description = "Wrong name or password", body = ErrorBody),
        (status = 429, description = "Too many failed logins for this name, or attempts from this address", body = ErrorBody),
        (status = 503, description = "Too many password hashes queued; retry after `Retry-After`", body = ErrorBody),
    ))]
pub(crate) async fn login(
    State(state): State<AppState>,
    ClientAddr(address): ClientAddr,
    Json(req): Json<LoginRequest>,
) -> Result<Json<LoginResponse>, Error> {
    state.throttles.login_attempt(address, &req.name)?;
    let ttl_ms = state.config.token_ttl_secs.saturating_mul(1000);
    let store = state.store.clone();
    let name = req.name.clone();
    let result = state
        .hash_gate
        .run(move || {
            // Read before the token is issued, so the reported expiry is
            // never later than the stored one.
            let issued_at = store.now();
            let (user, token) = store.login(&req.name, &req.password, ttl_ms)?;
            Ok((user, token, issued_at))
        })
        .await;
    if let Err(Error::Storage(storage::Error::BadCredentials)) = &result {
        state.throttles.login_failed(&name);
    }
    let (user, token, issued_at) = result?;
    Ok(Json(LoginResponse {
        token,
        user: UserView::from(&user),
        expires_at: issued_at.saturating_add(ttl_ms),
    }))
}

/// Revokes the token this request presents (other sessions stay logged in).
#[utoipa::path(post, path = "/api/logout", tag = "session",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "The token is revoked"),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
    ))]
pub(crate) async fn logout(
    State(state): State<AppState>,
    me: AuthUser,
) -> Result<StatusCode, Error> {
    let login = storage::chat::DeviceKey::of_token(&me.token);
    state
        .blocking(move |store| store.revoke_token(&me.token))
        .await?;
    // Every WebSocket opened with the token ends too, on every node.
    state.cluster.revoke_login(login).await;
    Ok(StatusCode::NO_CONTENT)
}

//! Push subscriptions: the devices to notify while the user is offline.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use storage::chat::{Millis, PushSubscription};
use utoipa::ToSchema;

use super::extract::{Json, Path};
use crate::error::ErrorBody;
use crate::{AppState, AuthUser, Error};

/// A Web Push subscription, as the browser's `PushSubscription.toJSON()`
/// gives it.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct NewSubscription {
    /// The push service URL of the device (http or https).
    #[schema(example = "https://push.example.com/send/abc123")]
    pub endpoint: String,
    /// The device's keys.
    pub keys: SubscriptionKeys,
}

/// The device's Web Push keys.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct SubscriptionKeys {
    /// The device's public key.
    #[schema(
        example = "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM"
    )]
    pub p256dh: String,
    /// The device's auth secret.
    #[schema(example = "tBHItJI5svbpez7KI4CCXg")]
    pub auth: String,
}

/// A registered subscription. Its keys are not echoed back.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SubscriptionView {
    /// Derived from the endpoint: registering the same device again
    /// updates it in place.
    #[schema(example = "9f86d081884c7d65")]
    pub id: String,
    /// The push service URL.
    pub endpoint: String,
    /// When it was (last) registered.
    pub created_at: Millis,
}

impl From<PushSubscription> for SubscriptionView {
    fn from(s: PushSubscription) -> Self {
        Self {
            id: s.id,
            endpoint: s.endpoint,
            created_at: s.created_at,
        }
    }
}

/// Registers (or refreshes) a device for offline notifications.
#[utoipa::path(post, path = "/api/push-subscriptions", tag = "push",
    security(("bearer" = [])),
    request_body = NewSubscription,
    responses(
        (status = 201, description = "Registered", body = SubscriptionView),
        (status = 400, description = "Bad endpoint or keys, or too many devices", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 429, description = "Too many writes by this user; retry after `Retry-After`", body = ErrorBody),
    ))]
pub(crate) async fn add(
    State(state): State<AppState>,
    me: AuthUser,
    Json(req): Json<NewSubscription>,
) -> Result<(StatusCode, Json<SubscriptionView>), Error> {
    state.throttles.write(me.user_id)?;
    let sub = state
        .blocking(move |store| {
            store.add_push_subscription(me.user_id, &req.endpoint, &req.keys.p256dh, &req.keys.auth)
        })
        .await?;
    Ok((StatusCode::CREATED, Json(sub.into())))
}

/// The caller's subscriptions.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SubscriptionList {
    /// Every registered device.
    pub subscriptions: Vec<SubscriptionView>,
}

/// The caller's registered devices.
#[utoipa::path(get, path = "/api/push-subscriptions", tag = "push",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The subscriptions", body = SubscriptionList),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
    ))]
pub(crate) async fn list(
    State(state): State<AppState>,
    me: AuthUser,
) -> Result<Json<SubscriptionList>, Error> {
    let subs = state
        .blocking(move |store| store.push_subscriptions(me.user_id))
        .await?;
    Ok(Json(SubscriptionList {
        subscriptions: subs.into_iter().map(SubscriptionView::from).collect(),
    }))
}

/// Stops notifying one of the caller's devices.
#[utoipa::path(delete, path = "/api/push-subscriptions/{id}", tag = "push",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The subscription")),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 404, description = "No such subscription of the caller", body = ErrorBody),
        (status = 429, description = "Too many writes by this user; retry after `Retry-After`", body = ErrorBody),
    ))]
pub(crate) async fn remove(
    State(state): State<AppState>,
    me: AuthUser,
    Path(id): Path<String>,
) -> Result<StatusCode, Error> {
    state.throttles.write(me.user_id)?;
    state
        .blocking(move |store| store.remove_push_subscription(me.user_id, &id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

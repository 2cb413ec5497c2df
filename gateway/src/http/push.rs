//! Push subscriptions: the devices to notify while the user is offline,
//! and the cluster's VAPID public key browsers subscribe with.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use storage::chat::{Millis, PushSubscription, PushTarget};
use utoipa::ToSchema;

use super::extract::{Json, Path};
use crate::error::ErrorBody;
use crate::{AppState, AuthUser, Error};

/// A device registration: a Web Push subscription as the browser's
/// `PushSubscription.toJSON()` gives it (`kind` omitted or `webpush`), or
/// an FCM registration token / APNs device token (`kind` `fcm` / `apns`
/// with `token`).
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct NewSubscription {
    /// `webpush` (default), `fcm` or `apns`.
    #[schema(example = "webpush")]
    pub kind: Option<String>,
    /// Web Push: the push service URL of the device; `https` and a public
    /// address.
    #[schema(example = "https://push.example.com/send/abc123")]
    pub endpoint: Option<String>,
    /// Web Push: the device's keys.
    pub keys: Option<SubscriptionKeys>,
    /// FCM: the registration token; APNs: the device token (hex).
    pub token: Option<String>,
}

/// The device's Web Push keys.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct SubscriptionKeys {
    /// The device's public key: an uncompressed P-256 point, base64url.
    #[schema(
        example = "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM"
    )]
    pub p256dh: String,
    /// The device's 16-byte auth secret, base64url.
    #[schema(example = "tBHItJI5svbpez7KI4CCXg")]
    pub auth: String,
}

impl NewSubscription {
    fn into_target(self) -> Result<PushTarget, Error> {
        let missing = |what: &str| Error::BadRequest(format!("{what} is required"));
        match self.kind.as_deref().unwrap_or("webpush") {
            "webpush" => {
                let keys = self.keys.ok_or_else(|| missing("keys"))?;
                Ok(PushTarget::WebPush {
                    endpoint: self.endpoint.ok_or_else(|| missing("endpoint"))?,
                    p256dh: keys.p256dh,
                    auth: keys.auth,
                })
            }
            "fcm" => Ok(PushTarget::Fcm {
                token: self.token.ok_or_else(|| missing("token"))?,
            }),
            "apns" => Ok(PushTarget::Apns {
                token: self.token.ok_or_else(|| missing("token"))?,
            }),
            other => Err(Error::BadRequest(format!(
                "kind {other:?} is not one of webpush, fcm, apns"
            ))),
        }
    }
}

/// A registered subscription. Its keys and tokens are not echoed back.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SubscriptionView {
    /// Derived from the kind and endpoint (or token): registering the same
    /// device again updates it in place.
    #[schema(example = "9f86d081884c7d65")]
    pub id: String,
    /// `webpush`, `fcm` or `apns`.
    pub kind: String,
    /// Web Push: the push service URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// When it was (last) registered.
    pub created_at: Millis,
}

impl From<PushSubscription> for SubscriptionView {
    fn from(s: PushSubscription) -> Self {
        let endpoint = match &s.target {
            PushTarget::WebPush { endpoint, .. } => Some(endpoint.clone()),
            _ => None,
        };
        Self {
            id: s.id,
            kind: s.target.kind().to_owned(),
            endpoint,
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
        (status = 400, description = "Bad kind, endpoint (not https, not public), keys or token, or too many devices", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 429, description = "Too many writes by this user; retry after `Retry-After`", body = ErrorBody),
    ))]
pub(crate) async fn add(
    State(state): State<AppState>,
    me: AuthUser,
    Json(req): Json<NewSubscription>,
) -> Result<(StatusCode, Json<SubscriptionView>), Error> {
    state.throttles.write(me.user_id)?;
    let target = req.into_target()?;
    state.cluster.push().check_target(&target)?;
    let sub = state
        .blocking(move |store| store.add_push_subscription(me.user_id, target))
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

/// The cluster's VAPID public key.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct VapidPublicKey {
    /// The uncompressed P-256 public key, base64url: pass it (decoded) as
    /// `applicationServerKey` to `pushManager.subscribe`.
    #[schema(
        example = "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM"
    )]
    pub public_key: String,
}

/// The key every node signs Web Push requests with (RFC 8292). Public: a
/// page needs it before the user logs in to subscribe.
#[utoipa::path(get, path = "/api/push/vapid-public-key", tag = "push",
    responses(
        (status = 200, description = "The key", body = VapidPublicKey),
    ))]
pub(crate) async fn vapid_public_key(State(state): State<AppState>) -> Json<VapidPublicKey> {
    Json(VapidPublicKey {
        public_key: state.cluster.push().vapid_public_key().to_owned(),
    })
}

//! The REST API: one file per resource, all under `/api`.
//!
//! Each handler authenticates (every route but register and login takes an
//! [`AuthUser`](crate::AuthUser)), makes exactly one store call on a
//! blocking thread, and only after it committed tells the cluster what
//! changed. Storage validates input and the caller's rights inside that one
//! transaction, so a refused request has changed nothing.

pub(crate) mod admin;
pub(crate) mod blocks;
pub(crate) mod chats;
pub(crate) mod cluster;
pub(crate) mod conversations;
pub(crate) mod extract;
pub(crate) mod groups;
pub(crate) mod health;
pub(crate) mod members;
pub(crate) mod messages;
pub(crate) mod mute;
pub(crate) mod push;
pub(crate) mod search;
pub(crate) mod send;
pub(crate) mod session;
pub(crate) mod users;
pub(crate) mod views;

#[cfg(test)]
mod tests;

use std::time::Instant;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{delete, get, patch, post, put};
use axum::Router;
use tracing::Instrument;

use crate::{AppState, Error};

/// Page size when a listing's `limit` is not given (storage caps any
/// requested size at its `max_page_size`).
pub(crate) const DEFAULT_PAGE: usize = 50;

/// Every REST route (and `/healthz`).
pub(crate) fn routes() -> Router<AppState> {
    let router = Router::new()
        .route("/healthz", get(health::health))
        .route("/metrics", get(health::metrics))
        .route("/api/register", post(session::register))
        .route("/api/login", post(session::login))
        .route("/api/logout", post(session::logout))
        .route("/api/cluster/gateways", get(cluster::gateways))
        .route("/api/users", get(users::search))
        .route("/api/users/{id}", get(users::profile))
        .route("/api/chats", get(chats::list))
        .route("/api/direct/{user_id}", post(chats::open_direct))
        .route("/api/groups", post(groups::create))
        .route(
            "/api/groups/{id}",
            patch(groups::edit).delete(groups::delete),
        )
        .route("/api/groups/{id}/history", get(groups::history))
        .route("/api/groups/{id}/members", post(members::add))
        .route(
            "/api/groups/{id}/members/{user_id}",
            delete(members::remove),
        )
        .route("/api/groups/{id}/leave", post(members::leave))
        .route("/api/conversations/{id}", get(conversations::show))
        .route(
            "/api/conversations/{id}/messages",
            get(messages::history).post(send::send),
        )
        .route(
            "/api/conversations/{id}/messages/{seq}",
            patch(send::edit).delete(send::delete),
        )
        .route(
            "/api/conversations/{id}/messages/{seq}/edits",
            get(messages::edits),
        )
        .route(
            "/api/conversations/{id}/messages/{seq}/reactions",
            get(messages::reactions).post(send::react_with_body),
        )
        .route(
            "/api/conversations/{id}/messages/{seq}/reactions/{emoji}",
            put(send::react).delete(send::unreact),
        )
        .route(
            "/api/conversations/{id}/mute",
            put(mute::mute).delete(mute::unmute),
        )
        .route("/api/search", get(search::search))
        .route(
            "/api/conversations/{id}/messages/{seq}/status",
            get(messages::status),
        )
        .route("/api/conversations/{id}/receipts", get(messages::receipts))
        .route("/api/push-subscriptions", post(push::add).get(push::list))
        .route("/api/push-subscriptions/{id}", delete(push::remove))
        .route("/api/push/vapid-public-key", get(push::vapid_public_key))
        .route("/api/blocks", post(blocks::add).get(blocks::list))
        .route("/api/blocks/{user_id}", delete(blocks::remove))
        .route("/api/admin/cluster", get(admin::cluster))
        .route("/api/admin/events", get(admin::events))
        .route(
            "/api/admin/links/{peer}",
            axum::routing::put(admin::cut_link).delete(admin::heal_link),
        );
    // Injected panics, for the supervision tests: never in a release build.
    #[cfg(debug_assertions)]
    let router = router.route("/api/admin/faults/{name}", post(admin::arm_fault));
    router
}

/// Unknown paths get the JSON error shape too.
pub(crate) async fn not_found() -> Error {
    storage::Error::NotFound { what: "route" }.into()
}

/// One span per request (method, path, and the user once authenticated),
/// and a debug line with the status and latency. The query string is left
/// out: it may carry a token.
pub(crate) async fn trace(req: Request, next: Next) -> Response {
    let span = tracing::debug_span!(
        "http",
        method = %req.method(),
        path = %req.uri().path(),
        user = tracing::field::Empty,
    );
    async move {
        let started = Instant::now();
        let response = next.run(req).await;
        tracing::debug!(
            status = response.status().as_u16(),
            ms = started.elapsed().as_millis() as u64,
            "handled"
        );
        response
    }
    .instrument(span)
    .await
}

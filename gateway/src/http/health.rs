//! Health: whether the node serves, and its metrics.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::extract::Json;

/// The health check's answer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Health {
    /// `ok`, or `standby` while the node serves no conversation.
    #[schema(example = "ok")]
    pub status: &'static str,
    /// Why it stands by: it cannot reach the store, or it is rejoining the
    /// cluster after being presumed dead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

/// Whether the node serves: 200 while its gateway is up and it can serve
/// conversations. It does not touch storage itself (a load balancer should
/// not drop every node when the store is briefly busy), but a node that
/// could not renew its lease for a lease lifetime (it lost the store), or
/// that is rejoining after being presumed dead, answers 503 until it
/// serves again.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses(
        (status = 200, description = "The node serves", body = Health),
        (status = 503, description = "The node stands by: no store, or rejoining", body = Health),
    ))]
pub(crate) async fn health(State(state): State<crate::AppState>) -> Response {
    match state.cluster.standby() {
        None => Json(Health {
            status: "ok",
            reason: None,
        })
        .into_response(),
        Some(standby) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            Json(Health {
                status: "standby",
                reason: Some(standby.describe()),
            }),
        )
            .into_response(),
    }
}

/// `GET /metrics`: the node's metrics in Prometheus text format (sessions,
/// conversations, commits, fan-out, live nodes, push, fencing).
pub(crate) async fn metrics(
    axum::extract::State(state): axum::extract::State<crate::AppState>,
) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.cluster.metrics().render(),
    )
}

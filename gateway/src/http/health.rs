//! Liveness: answers as long as the process serves HTTP.

use serde::Serialize;
use utoipa::ToSchema;

use super::extract::Json;

/// The health check's answer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Health {
    /// Always `ok`.
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// Whether the node's gateway is up (it does not touch storage: a load
/// balancer should not drop every node when the store is briefly busy).
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "The gateway is up", body = Health)))]
pub(crate) async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
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

//! The cluster's gateways: where a client may reconnect when its node dies.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::extract::Json;
use crate::error::ErrorBody;
use crate::{AppState, Error};

/// One live node's gateway.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct GatewayView {
    /// The node's name.
    #[schema(example = "node-1")]
    pub node: String,
    /// Its public HTTP URL (`public_url`), the origin of its web app and API.
    #[schema(example = "http://127.0.0.1:8080")]
    pub url: String,
    /// Its WebSocket endpoint.
    #[schema(example = "ws://127.0.0.1:8080/ws")]
    pub ws_url: String,
}

/// The live gateways.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct GatewayList {
    /// Every node with an unexpired lease, in node name order.
    pub gateways: Vec<GatewayView>,
}

/// The gateways of the cluster's live nodes (unexpired leases), so a
/// client whose node dies reconnects to another. Public: these URLs are
/// what every client is already told to connect to.
#[utoipa::path(get, path = "/api/cluster/gateways", tag = "cluster",
    responses(
        (status = 200, description = "Live gateways", body = GatewayList),
        (status = 503, description = "Storage unavailable", body = ErrorBody),
    ))]
pub(crate) async fn gateways(State(state): State<AppState>) -> Result<Json<GatewayList>, Error> {
    Ok(Json(GatewayList {
        gateways: live_gateways(&state).await?,
    }))
}

/// How long a read of the leases answers gateway lists and page loads:
/// whatever the request rate (the endpoint and `/` are public), a node
/// reads the leases at most this often for them.
const CACHE_FOR: Duration = Duration::from_secs(1);

/// The last lease read, shared by the node's requests.
#[derive(Debug, Default)]
pub(crate) struct GatewayCache {
    last: Mutex<Option<(Instant, Vec<GatewayView>)>>,
}

/// The live nodes' gateways, from their leases (read at most once per
/// [`CACHE_FOR`]).
pub(crate) async fn live_gateways(state: &AppState) -> Result<Vec<GatewayView>, Error> {
    if let Ok(last) = state.gateways.last.lock() {
        if let Some((at, list)) = last.as_ref() {
            if at.elapsed() < CACHE_FOR {
                return Ok(list.clone());
            }
        }
    }
    let leases = state.blocking(|store| store.leases()).await?;
    let now = state.store.now();
    let list: Vec<GatewayView> = leases
        .into_iter()
        .filter(|l| l.expires_at > now)
        .map(|l| GatewayView {
            node: l.name,
            ws_url: ws_url(&l.public_url),
            url: l.public_url,
        })
        .collect();
    if let Ok(mut last) = state.gateways.last.lock() {
        *last = Some((Instant::now(), list.clone()));
    }
    Ok(list)
}

/// `http://h:p` → `ws://h:p/ws`, `https://` → `wss://`.
fn ws_url(public_url: &str) -> String {
    let base = if let Some(rest) = public_url.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = public_url.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        public_url.to_owned()
    };
    format!("{}/ws", base.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::ws_url;

    #[test]
    fn ws_urls_follow_the_scheme() {
        assert_eq!(ws_url("http://a:1"), "ws://a:1/ws");
        assert_eq!(ws_url("https://chat.example"), "wss://chat.example/ws");
    }
}

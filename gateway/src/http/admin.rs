//! The admin API: the cluster as this node sees it, and what it sees
//! happen, for operators and the lab (`parley lab`).
//!
//! Only the admin role gets in: a user named in `[gateway] admin_users`,
//! or the bearer of `admin_token` (the lab gives its nodes one). Anyone
//! else authenticated gets 403, anyone else 401. The routes only read:
//! nothing here changes the cluster, and nothing here signals processes
//! (the lab's controls live in the lab process, never on a node).

use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use utoipa::ToSchema;

use super::extract::Json;
use crate::auth::{authenticate, presented_token};
use crate::error::ErrorBody;
use crate::{AppState, Error};

/// How often an events subscriber is pinged (and found gone).
const EVENTS_PING: Duration = Duration::from_secs(15);

/// The caller has the admin role.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Admin;

/// Whether `token` is the configured admin token, compared in time that
/// does not depend on where they differ.
fn is_admin_token(config: &crate::GatewayConfig, token: &str) -> bool {
    let Some(expected) = config.admin_token.as_deref() else {
        return false;
    };
    let (a, b) = (expected.as_bytes(), token.as_bytes());
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

/// Checks `token` for the admin role: 401 if it is nobody's, 403 if it
/// is a user's who is not an admin.
async fn admit(state: &AppState, token: &str) -> Result<Admin, Error> {
    if is_admin_token(&state.config, token) {
        return Ok(Admin);
    }
    let user_id = authenticate(state, token).await?;
    if state.config.admin_users.is_empty() {
        return Err(Error::Forbidden("the admin API is for admins only"));
    }
    let user = state.blocking(move |store| store.user(user_id)).await?;
    let admin = state
        .config
        .admin_users
        .iter()
        .any(|name| name.eq_ignore_ascii_case(&user.name));
    if admin {
        Ok(Admin)
    } else {
        Err(Error::Forbidden("the admin API is for admins only"))
    }
}

impl axum::extract::FromRequestParts<AppState> for Admin {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let token = presented_token(&parts.headers)?;
        admit(state, &token).await
    }
}

/// One node as this node sees it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct AdminNode {
    /// Its name.
    #[schema(example = "node-2")]
    pub name: String,
    /// Its gateway's public URL.
    #[schema(example = "http://127.0.0.1:8082")]
    pub public_url: String,
    /// Its cluster transport address.
    pub cluster_addr: String,
    /// `live`: lease renewed and reachable, it serves conversations;
    /// `suspect`: lease renewed but its transport is not connected (or it
    /// is leaving); `dead`: lease not renewed within its lifetime.
    #[schema(example = "live")]
    pub state: &'static str,
    /// Milliseconds since it last renewed its lease, by the store's clock
    /// (for display: the lease's own timing is each node's monotonic clock).
    pub lease_age_ms: u64,
    /// Whether this is the node answering.
    pub is_self: bool,
}

/// A running conversation actor on this node.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct AdminConversation {
    /// The conversation.
    pub conv_id: u64,
    /// The epoch its actor holds (each activation bumps it; older actors
    /// are fenced out).
    pub epoch: u64,
    /// The last sequence number committed.
    pub last_seq: u64,
    /// Sends received and not yet committed.
    pub pending: u64,
    /// Where rendezvous placement puts it now (this node, unless it is
    /// being handed off).
    pub home: String,
}

/// Counters operators watch, from this node's metrics.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct AdminMetrics {
    /// Messages committed by this node's conversation actors.
    pub messages_committed: u64,
    /// Append transactions.
    pub commit_batches: u64,
    /// Microseconds spent in them, summed: the mean commit latency is this
    /// over `commit_batches`, the mean batch `messages_committed` over it.
    pub commit_micros: u64,
    /// Frames queued to this node's sessions.
    pub frames_delivered: u64,
    /// Appends refused because a newer actor owns the conversation.
    pub fenced_appends: u64,
    /// Push notifications delivered and failed.
    pub push_sent: u64,
    /// Push notifications that failed.
    pub push_failed: u64,
    /// Sessions disconnected for reading too slowly.
    pub slow_consumers: u64,
    /// Push deliveries queued or in flight on this node.
    pub push_queue: u64,
}

/// The cluster as this node sees it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct AdminCluster {
    /// The node answering.
    #[schema(example = "node-1")]
    pub node: String,
    /// Every node with a lease record, by name.
    pub nodes: Vec<AdminNode>,
    /// The nodes conversations are placed on now (rendezvous hashing).
    pub serving_nodes: Vec<String>,
    /// WebSocket sessions connected to this node.
    pub sessions: usize,
    /// The conversation actors running on this node.
    pub conversations: Vec<AdminConversation>,
    /// Peers this node's cluster messages to are dropped by its in-process
    /// link filter (`PUT /api/admin/links/{peer}`).
    pub links_cut: Vec<String>,
    /// Counters since this node started.
    pub metrics: AdminMetrics,
}

/// Builds this node's view of the cluster.
pub(crate) async fn cluster_view(state: &AppState) -> Result<AdminCluster, Error> {
    let cluster = &state.cluster;
    let leases = state.blocking(|store| store.leases()).await?;
    let now = state.store.now();
    let ttl = cluster.config().lease_ttl.as_millis() as u64;
    let live = cluster.live_nodes();
    let serving = cluster.serving_nodes();
    let me = cluster.node_name().to_owned();
    let mut nodes: Vec<AdminNode> = leases
        .into_iter()
        .map(|l| {
            let state = if serving.contains(&l.name) {
                "live"
            } else if live.contains(&l.name) {
                "suspect"
            } else {
                "dead"
            };
            AdminNode {
                is_self: l.name == me,
                lease_age_ms: now.saturating_sub(l.expires_at.saturating_sub(ttl)),
                name: l.name,
                public_url: l.public_url,
                cluster_addr: l.cluster_addr,
                state,
            }
        })
        .collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let conversations = cluster
        .conv_statuses()
        .views()
        .into_iter()
        .map(|c| AdminConversation {
            home: cluster.home_of(c.conv_id),
            conv_id: c.conv_id,
            epoch: c.epoch,
            last_seq: c.last_seq,
            pending: c.pending,
        })
        .collect();
    let m = cluster.metrics();
    Ok(AdminCluster {
        node: me,
        nodes,
        serving_nodes: serving,
        sessions: cluster.sessions().len(),
        conversations,
        links_cut: cluster.links().list(),
        metrics: AdminMetrics {
            messages_committed: m.messages_committed.get(),
            commit_batches: m.commit_batches.get(),
            commit_micros: m.commit_micros.get(),
            frames_delivered: m.frames_delivered.get(),
            fenced_appends: m.fenced_appends.get(),
            push_sent: m.push_sent.get(),
            push_failed: m.push_failed.get(),
            slow_consumers: m.slow_consumers.get(),
            push_queue: cluster.push().queued() as u64,
        },
    })
}

/// The cluster as this node sees it: nodes and their liveness, where
/// conversations are placed, the conversation actors running here with
/// their epoch and last seq, sessions, counters.
#[utoipa::path(get, path = "/api/admin/cluster", tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "This node's view", body = AdminCluster),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
    ))]
pub(crate) async fn cluster(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<AdminCluster>, Error> {
    Ok(Json(cluster_view(&state).await?))
}

/// `?token=` of the events WebSocket (browsers cannot set its headers).
#[derive(Debug, Deserialize)]
pub(crate) struct EventsQuery {
    token: Option<String>,
}

/// What this node sees happen, as a WebSocket of JSON text frames: first
/// `{"type":"snapshot","cluster":{...}}` (as `GET /api/admin/cluster`),
/// then one `{"type":"event","at":ms,"node":...,"kind":...}` per event
/// (`node_joined`, `node_lost`, `conversation_activated`,
/// `conversation_handed_off`, `conversation_stopped`, `fenced_append`,
/// `session_opened`, `session_closed`), and `{"type":"lagged","missed":n}`
/// when the reader fell behind. The token may come as `?token=`.
#[utoipa::path(get, path = "/api/admin/events", tag = "admin",
    params(("token" = Option<String>, Query, description = "Admin token (or the Authorization header)")),
    responses(
        (status = 101, description = "WebSocket of cluster events"),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
    ))]
pub(crate) async fn events(
    State(state): State<AppState>,
    Query(query): Query<EventsQuery>,
    headers: axum::http::HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let token = match query.token {
        Some(token) => token,
        None => match presented_token(&headers) {
            Ok(token) => token,
            Err(e) => return e.into_response(),
        },
    };
    if let Err(e) = admit(&state, &token).await {
        return e.into_response();
    }
    upgrade.on_upgrade(move |socket| stream_events(state, socket))
}

/// Sends the snapshot, then every event until the client goes away.
async fn stream_events(state: AppState, mut socket: WebSocket) {
    // Subscribed before the snapshot: nothing between the two is missed.
    let mut events = state.cluster.events().subscribe();
    let snapshot = match cluster_view(&state).await {
        Ok(view) => serde_json::json!({"type": "snapshot", "cluster": view}),
        Err(e) => {
            tracing::warn!(error = %e, "admin events: no snapshot");
            serde_json::json!({"type": "snapshot", "cluster": null})
        }
    };
    if socket
        .send(Message::Text(snapshot.to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    let mut ping = tokio::time::interval(EVENTS_PING);
    ping.tick().await;
    let mut closing = state.cluster.events().closing();
    loop {
        let frame = tokio::select! {
            // The node is leaving: say so (1012, "reconnect elsewhere") and
            // end, so the stream does not hold the node's exit up.
            Ok(()) = closing.changed() => {
                let bye = Message::Close(Some(axum::extract::ws::CloseFrame {
                    code: 1012,
                    reason: "node shutting down".into(),
                }));
                let _ = socket.send(bye).await;
                return;
            }
            event = events.recv() => match event {
                Ok(event) => {
                    let mut json = serde_json::to_value(&event).unwrap_or_default();
                    if let Some(object) = json.as_object_mut() {
                        object.insert("type".into(), "event".into());
                    }
                    Message::Text(json.to_string().into())
                }
                Err(RecvError::Lagged(missed)) => Message::Text(
                    serde_json::json!({"type": "lagged", "missed": missed}).to_string().into(),
                ),
                Err(RecvError::Closed) => return,
            },
            incoming = socket.recv() => match incoming {
                // Anything the client says is ignored; a close ends it.
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => continue,
            },
            _ = ping.tick() => Message::Ping(Vec::new().into()),
        };
        if socket.send(frame).await.is_err() {
            return;
        }
    }
}

/// `PUT /api/admin/links/{peer}` (admins only): this node drops every
/// cluster message it sends to `peer` from now on, as a cut link would
/// (the lab's partitions; see `actors::link_filter`). Both nodes: a
/// two-way cut. 204.
#[utoipa::path(put, path = "/api/admin/links/{peer}", tag = "admin",
    params(("peer" = String, Path, description = "A peer's node name")),
    responses(
        (status = 204, description = "Cut"),
        (status = 400, description = "This node's own name, or not a name", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
    ))]
pub(crate) async fn cut_link(
    State(state): State<AppState>,
    _admin: Admin,
    axum::extract::Path(peer): axum::extract::Path<String>,
) -> Result<axum::http::StatusCode, Error> {
    if peer == state.cluster.node_name() || peer.is_empty() || peer.len() > 64 {
        return Err(Error::BadRequest(format!("cannot cut a link to {peer:?}")));
    }
    tracing::warn!(%peer, "link filter: dropping every cluster message to this peer");
    state.cluster.links().cut(&peer);
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// `DELETE /api/admin/links/{peer}` (admins only): heals what
/// `PUT /api/admin/links/{peer}` cut. 204.
#[utoipa::path(delete, path = "/api/admin/links/{peer}", tag = "admin",
    params(("peer" = String, Path, description = "A peer's node name")),
    responses(
        (status = 204, description = "Healed (or was not cut)"),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
    ))]
pub(crate) async fn heal_link(
    State(state): State<AppState>,
    _admin: Admin,
    axum::extract::Path(peer): axum::extract::Path<String>,
) -> Result<axum::http::StatusCode, Error> {
    tracing::warn!(%peer, "link filter: messages to this peer go through again");
    state.cluster.links().heal(&peer);
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// `POST /api/admin/faults/{name}` (debug builds only, admins only): arms
/// a panic at the named place's next turn (`committer`, `membership`,
/// `indexer`, `host`, `presence`), for the tests that check every internal
/// task and service actor is restarted after a panic. 202 once armed.
#[cfg(debug_assertions)]
pub(crate) async fn arm_fault(
    State(state): State<AppState>,
    _admin: Admin,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Result<axum::http::StatusCode, Error> {
    let fault =
        actors::faults::Fault::parse(&name).ok_or(storage::Error::NotFound { what: "fault" })?;
    tracing::warn!(fault = %name, "arming an injected panic");
    if state.cluster.faults().arm(fault) {
        Ok(axum::http::StatusCode::ACCEPTED)
    } else {
        Err(storage::Error::NotFound { what: "fault" }.into())
    }
}

#[cfg(test)]
mod tests {
    use super::is_admin_token;
    use crate::GatewayConfig;

    #[test]
    fn only_the_exact_admin_token_matches() {
        let mut config = GatewayConfig::default();
        assert!(!is_admin_token(&config, ""));
        config.admin_token = Some("0123456789abcdef".into());
        assert!(is_admin_token(&config, "0123456789abcdef"));
        assert!(!is_admin_token(&config, "0123456789abcdeF"));
        assert!(!is_admin_token(&config, "0123456789abcde"));
        assert!(!is_admin_token(&config, "0123456789abcdef0"));
    }
}

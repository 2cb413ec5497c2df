//! Parley's gateway: the HTTP API and the WebSocket protocol every node
//! serves to clients.
//!
//! - [`config`]: limits and timeouts, each with its default;
//! - [`error`]: the one error type, and the only place errors become HTTP
//!   statuses and `error` frames;
//! - [`auth`]: bearer tokens from a header or a query parameter;
//! - [`rate_limit`]: token buckets per user, account or address;
//! - [`throttle`]: the HTTP throttles (logins, registrations, writes);
//! - [`hash_gate`]: bounded password hashing (503 beyond its queue);
//! - [`listener`]: the accept loop (connection limit, header and body
//!   timeouts, `TCP_NODELAY`);
//! - [`client_addr`]: the client's address behind trusted reverse proxies;
//! - `http`: the REST handlers, one file per resource;
//! - `ws`: the WebSocket handler that brings a session actor to life;
//! - [`openapi`]: the OpenAPI document at `/openapi.json`;
//! - `web`: the browser app (Parley Web) at `/`, embedded in the binary.
//!
//! [`router`] assembles them into the node's one axum application.

pub mod auth;
pub mod client_addr;
pub mod config;
pub mod error;
pub mod hash_gate;
mod http;
pub mod listener;
pub mod openapi;
pub mod rate_limit;
pub mod throttle;
mod web;
mod ws;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use storage::chat::ChatStore;

pub use auth::AuthUser;
pub use config::GatewayConfig;
pub use error::Error;
pub use hash_gate::HashGate;
pub use rate_limit::RateLimiter;
pub use throttle::Throttles;

/// What every handler gets: the store, the cluster handle, the limits.
///
/// One allocation shared by every request and connection: cloning it is a
/// reference count, and each idle WebSocket connection, which keeps a copy
/// in each of its futures, holds a pointer instead of the whole state.
#[derive(Clone)]
pub struct AppState(Arc<AppStateFields>);

impl std::ops::Deref for AppState {
    type Target = AppStateFields;

    fn deref(&self) -> &AppStateFields {
        &self.0
    }
}

/// The fields of an [`AppState`].
pub struct AppStateFields {
    /// The chat schema over the node's database.
    pub store: ChatStore,
    /// The node's handle on the cluster (routing, presence).
    pub cluster: actors::Cluster,
    /// Limits and timeouts.
    pub config: Arc<GatewayConfig>,
    /// Per-user budget of message sends (`sends_per_second`, `send_burst`),
    /// shared by every connection of this node.
    pub send_limiter: Arc<RateLimiter>,
    /// The live gateways, read from the leases at most once a second
    /// (`GET /api/cluster/gateways` and the web page's CSP).
    pub(crate) gateways: Arc<http::cluster::GatewayCache>,
    /// Login, registration and write throttles.
    pub throttles: Arc<Throttles>,
    /// Bounded password hashing for logins and registrations.
    pub hash_gate: Arc<HashGate>,
}

impl AppState {
    /// Builds the state, deriving the rate limiters from `config`.
    pub fn new(store: ChatStore, cluster: actors::Cluster, config: GatewayConfig) -> Self {
        let send_limiter = Arc::new(RateLimiter::new(config.sends_per_second, config.send_burst));
        let metrics = cluster.metrics().clone();
        let throttles = Arc::new(Throttles::new(&config.abuse, metrics.clone()));
        let hash_gate = Arc::new(HashGate::new(&config.abuse, metrics));
        Self(Arc::new(AppStateFields {
            store,
            cluster,
            config: Arc::new(config),
            send_limiter,
            gateways: Arc::default(),
            throttles,
            hash_gate,
        }))
    }

    /// Runs a store operation on the node's storage threads: every
    /// [`ChatStore`] method blocks on storage I/O, which must not stall the
    /// async workers that serve every other connection. (Password hashing
    /// goes through the [`HashGate`] instead.)
    pub(crate) async fn blocking<T, F>(&self, op: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&ChatStore) -> storage::Result<T> + Send + 'static,
    {
        self.cluster
            .storage()
            .run(op)
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
            .map_err(Error::from)
    }
}

/// The node's whole HTTP application: the REST API under `/api`, the
/// WebSocket at `/ws`, `/healthz` and `/openapi.json`.
///
/// Request bodies are capped at `config.max_body_bytes` (413 beyond), and
/// every unknown path answers a JSON 404 like any other error.
pub fn router(state: AppState) -> axum::Router {
    let max_body = state.config.max_body_bytes;
    http::routes()
        .merge(web::routes())
        .route("/ws", get(ws::handler))
        .route("/openapi.json", get(openapi::serve))
        .fallback(http::not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            web::cors,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            listener::read_body_in_time,
        ))
        .layer(axum::middleware::from_fn(http::trace))
        .with_state(state)
}

//! Parley Web: the browser client, embedded in the binary and served at `/`
//! by every node.
//!
//! - `assets`: the files (from `gateway/web/`), their types and ETags;
//! - `csp`: the Content-Security-Policy, which lets the page connect only
//!   to its own origin and to the cluster's other gateways;
//! - `cors`: lets those gateways' pages call this node's API.
//!
//! Every response carries `Cache-Control: no-cache` and an ETag: browsers
//! keep the files but revalidate them, so a node upgrade is picked up at
//! the next load (304 otherwise).

mod assets;
mod cors;
mod csp;

pub(crate) use cors::cors;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::AppState;
use assets::Asset;

/// The web app's routes: `/`, `/sw.js` (a service worker's scope is its
/// directory, so it lives at the root) and `/web/{file}`.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/sw.js", get(service_worker))
        .route("/web/{file}", get(file))
}

async fn index(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let policy = csp::policy(&state).await;
    match assets::find("index.html") {
        Some(asset) => serve(asset, &headers, Some(policy)),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn service_worker(headers: HeaderMap) -> Response {
    match assets::find("sw.js") {
        Some(asset) => serve(asset, &headers, None),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn file(Path(name): Path<String>, headers: HeaderMap) -> Response {
    match assets::find(&name) {
        Some(asset) if asset.name != "sw.js" => serve(asset, &headers, None),
        _ => crate::http::not_found().await.into_response(),
    }
}

/// The asset, or 304 when the browser's copy is current. Only the page
/// carries the CSP (scripts and styles inherit the page's).
fn serve(asset: &Asset, request: &HeaderMap, policy: Option<String>) -> Response {
    let etag = asset.etag();
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, asset.content_type)], asset.bytes).into_response()
    };
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if let Some(policy) = policy.and_then(|p| HeaderValue::from_str(&p).ok()) {
        h.insert(header::CONTENT_SECURITY_POLICY, policy);
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    response
}

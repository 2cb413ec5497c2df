//! Cross-origin API calls from the cluster's own web app.
//!
//! A page served by one node keeps using the API through another node when
//! its own dies, which makes its requests cross-origin. Only the origins of
//! the cluster's live gateways (their `public_url`) are allowed; any other
//! origin gets no CORS headers, so browsers refuse it as before.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;

/// How long a browser may cache a preflight answer, in seconds.
const PREFLIGHT_MAX_AGE: &str = "600";

/// Adds CORS headers for `/api` requests from a live gateway's origin, and
/// answers their preflight requests.
pub(crate) async fn cors(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let Some(origin) = origin.filter(|_| req.uri().path().starts_with("/api/")) else {
        return next.run(req).await;
    };
    let allowed = crate::http::cluster::live_gateways(&state)
        .await
        .is_ok_and(|gateways| gateways.iter().any(|g| g.url == origin));
    let Ok(value) = HeaderValue::from_str(&origin) else {
        return next.run(req).await;
    };
    if !allowed {
        return next.run(req).await;
    }
    let mut response = if req.method() == Method::OPTIONS {
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, PUT, PATCH, DELETE"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static(PREFLIGHT_MAX_AGE),
        );
        r
    } else {
        next.run(req).await
    };
    let h = response.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    response
}

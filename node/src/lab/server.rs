//! The lab's page and API on 127.0.0.1, every API route behind the lab
//! token: node controls, the traffic generator, the invariants, a proxy to
//! the nodes' admin view, and one WebSocket relaying the nodes' admin
//! events with the lab's own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;

use super::invariants::Invariants;
use super::supervisor::{ActionError, Supervisor};
use super::traffic::{Traffic, TrafficSettings};

const PAGE: &str = include_str!("web/lab.html");
const SCRIPT: &str = include_str!("web/lab.js");
const STYLE: &str = include_str!("web/lab.css");
/// The page loads nothing but itself, its script and style, and talks to
/// its own origin only.
const CSP: &str = "default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The lab: its token, nodes, traffic and invariants, and the event bus
/// the page's WebSockets listen to.
#[derive(Clone)]
pub struct Lab {
    inner: Arc<Inner>,
}

struct Inner {
    token: String,
    supervisor: Arc<Supervisor>,
    invariants: Arc<Invariants>,
    unacked: Arc<AtomicU64>,
    traffic: tokio::sync::Mutex<Option<Traffic>>,
    events: broadcast::Sender<String>,
    http: reqwest::Client,
}

impl Lab {
    /// A lab over `supervisor`'s nodes, its API guarded by `token`.
    pub fn new(token: String, supervisor: Arc<Supervisor>) -> Self {
        let (events, _) = broadcast::channel(1024);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .build()
            .unwrap_or_default();
        Self {
            inner: Arc::new(Inner {
                token,
                supervisor,
                invariants: Arc::new(Invariants::default()),
                unacked: Arc::new(AtomicU64::new(0)),
                traffic: tokio::sync::Mutex::new(None),
                events,
                http,
            }),
        }
    }

    fn emit(&self, frame: Value) {
        let _ = self.inner.events.send(frame.to_string());
    }

    fn lab_event(&self, kind: &str, node: Option<&str>) {
        self.emit(json!({"type": "lab", "at": super::now_ms(), "kind": kind, "node": node}));
    }

    fn invariants(&self) -> Value {
        let c = self
            .inner
            .invariants
            .snapshot(self.inner.unacked.load(Ordering::Relaxed));
        serde_json::to_value(c).unwrap_or(Value::Null)
    }

    async fn state(&self) -> Value {
        let traffic = match &*self.inner.traffic.lock().await {
            Some(t) => {
                let s = t.settings();
                json!({"users": s.users, "rate": s.rate, "group_size": s.group_size, "phase": t.phase()})
            }
            None => Value::Null,
        };
        json!({
            "nodes": self.inner.supervisor.snapshot(),
            "traffic": traffic,
            "invariants": self.invariants(),
        })
    }

    /// Starts the once-a-second state and invariants frames (noticing
    /// nodes that exited by themselves) and the relays of the nodes'
    /// admin events.
    pub fn spawn_background(&self) {
        let lab = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                for name in lab.inner.supervisor.reap() {
                    lab.lab_event("node_exited", Some(&name));
                }
                if lab.inner.events.receiver_count() == 0 {
                    continue;
                }
                let mut inv = lab.invariants();
                if let Some(o) = inv.as_object_mut() {
                    o.insert("type".into(), "invariants".into());
                }
                lab.emit(inv);
                let mut state = lab.state().await;
                if let Some(o) = state.as_object_mut() {
                    o.insert("type".into(), "state".into());
                }
                lab.emit(state);
            }
        });
        for node in self.inner.supervisor.snapshot() {
            let lab = self.clone();
            tokio::spawn(async move { lab.relay(node.name).await });
        }
    }

    /// Follows node `name`'s admin events while it runs, reconnecting
    /// when it comes back, and relays each frame with `"via": name`.
    async fn relay(&self, name: String) {
        loop {
            let url = self
                .inner
                .supervisor
                .running()
                .into_iter()
                .find(|(n, _)| *n == name)
                .map(|(_, url)| url);
            let Some(url) = url else {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            };
            let ws = format!(
                "{}/api/admin/events?token={}",
                url.replacen("http://", "ws://", 1),
                self.inner.token
            );
            let connected =
                tokio::time::timeout(Duration::from_secs(3), tokio_tungstenite::connect_async(ws))
                    .await;
            let Ok(Ok((mut socket, _))) = connected else {
                // Not up yet, or no admin API on this build: try later.
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            };
            tracing::debug!(node = %name, "relaying admin events");
            while let Some(Ok(frame)) = socket.next().await {
                if let Message::Text(text) = frame {
                    if let Ok(mut v) = serde_json::from_str::<Value>(&text) {
                        if let Some(o) = v.as_object_mut() {
                            o.insert("via".into(), name.clone().into());
                        }
                        self.emit(v);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Stops the traffic and waits (bounded) for its clients to close.
    pub async fn stop_traffic_now(&self) {
        if let Some(t) = self.inner.traffic.lock().await.take() {
            let _ = tokio::time::timeout(Duration::from_secs(20), t.stop()).await;
        }
    }
}

/// The lab's routes.
pub fn router(lab: Lab) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/lab.js", get(script))
        .route("/lab.css", get(style))
        .route("/api/lab/state", get(state))
        .route("/api/lab/invariants", get(invariants))
        .route("/api/lab/traffic", post(start_traffic).delete(stop_traffic))
        .route("/api/lab/nodes/{name}/admin/cluster", get(admin_cluster))
        .route("/api/lab/nodes/{name}/{action}", post(node_action))
        .route("/api/lab/links/{a}/{b}/{action}", post(link_action))
        .route("/api/lab/events", get(events))
        .with_state(lab)
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

async fn page() -> Response {
    asset(PAGE, "text/html; charset=utf-8")
}

async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

async fn style() -> Response {
    asset(STYLE, "text/css; charset=utf-8")
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = json!({"error": {"code": code, "message": message.into()}});
    (status, Json(body)).into_response()
}

/// Compares in time independent of where the strings differ.
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A 401 answer unless the request carries the lab token (bearer, or
/// `?token=`).
fn reject(lab: &Lab, headers: &HeaderMap, query: Option<&str>) -> Option<Response> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match bearer.or(query) {
        Some(t) if same(t.trim(), &lab.inner.token) => None,
        _ => Some(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the lab token is missing or wrong (it is in the address the lab printed)",
        )),
    }
}

async fn state(State(lab): State<Lab>, headers: HeaderMap) -> Response {
    if let Some(r) = reject(&lab, &headers, None) {
        return r;
    }
    Json(lab.state().await).into_response()
}

async fn invariants(State(lab): State<Lab>, headers: HeaderMap) -> Response {
    if let Some(r) = reject(&lab, &headers, None) {
        return r;
    }
    Json(lab.invariants()).into_response()
}

async fn node_action(
    State(lab): State<Lab>,
    headers: HeaderMap,
    Path((name, action)): Path<(String, String)>,
) -> Response {
    if let Some(r) = reject(&lab, &headers, None) {
        return r;
    }
    match lab.inner.supervisor.act(&name, &action).await {
        Ok(info) => {
            let kind = match action.as_str() {
                "kill" => "node_killed",
                "pause" => "node_paused",
                "resume" => "node_resumed",
                "stop" => "node_stopped",
                _ => "node_started",
            };
            lab.lab_event(kind, Some(&name));
            Json(info).into_response()
        }
        Err(e @ ActionError::UnknownNode(_)) => {
            error(StatusCode::NOT_FOUND, "not_found", e.to_string())
        }
        Err(e @ ActionError::UnknownAction(_)) => {
            error(StatusCode::BAD_REQUEST, "bad_request", e.to_string())
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

async fn start_traffic(State(lab): State<Lab>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = reject(&lab, &headers, None) {
        return r;
    }
    let settings: TrafficSettings = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("expected {{\"users\":N,\"rate\":N,\"group_size\":N}}: {e}"),
            )
        }
    };
    if let Err(e) = settings.validate() {
        return error(StatusCode::BAD_REQUEST, "bad_request", e);
    }
    {
        let mut traffic = lab.inner.traffic.lock().await;
        let reconfigured = traffic.as_mut().is_some_and(|t| t.reconfigure(settings));
        if !reconfigured {
            if let Some(old) = traffic.take() {
                // Its drain runs in the background while the new one starts.
                drop(old.stop());
            }
            *traffic = Some(Traffic::start(
                settings,
                lab.inner.supervisor.clone(),
                lab.inner.invariants.clone(),
                lab.inner.unacked.clone(),
            ));
        }
    }
    lab.lab_event("traffic_started", None);
    Json(lab.state().await).into_response()
}

async fn stop_traffic(State(lab): State<Lab>, headers: HeaderMap) -> Response {
    if let Some(r) = reject(&lab, &headers, None) {
        return r;
    }
    let stopped = lab.inner.traffic.lock().await.take();
    if let Some(t) = stopped {
        // Draining takes up to 15 s; the answer does not wait for it.
        drop(t.stop());
        lab.lab_event("traffic_stopped", None);
    }
    Json(lab.state().await).into_response()
}

/// `POST /api/lab/links/{a}/{b}/{cut|cut_one_way|heal}`: a partition
/// between two nodes with their in-process link filters (the lab runs
/// without root, so no real routes are cut): `cut` drops what each sends
/// the other, `cut_one_way` only what `a` sends `b`, `heal` undoes both.
async fn link_action(
    State(lab): State<Lab>,
    headers: HeaderMap,
    Path((a, b, action)): Path<(String, String, String)>,
) -> Response {
    if let Some(r) = reject(&lab, &headers, None) {
        return r;
    }
    let nodes = lab.inner.supervisor.snapshot();
    let url_of = |name: &str| {
        nodes
            .iter()
            .find(|n| n.name == name)
            .map(|n| n.http.clone())
    };
    let (Some(url_a), Some(url_b)) = (url_of(&a), url_of(&b)) else {
        return error(StatusCode::NOT_FOUND, "not_found", "no such node");
    };
    if a == b {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "a link joins two nodes",
        );
    }
    // (the node whose filter changes, its peer, cut or heal)
    let steps: Vec<(&str, &str, bool)> = match action.as_str() {
        "cut" => vec![
            (url_a.as_str(), b.as_str(), true),
            (url_b.as_str(), a.as_str(), true),
        ],
        "cut_one_way" => vec![(url_a.as_str(), b.as_str(), true)],
        "heal" => vec![
            (url_a.as_str(), b.as_str(), false),
            (url_b.as_str(), a.as_str(), false),
        ],
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("unknown link action {other:?} (cut, cut_one_way, heal)"),
            )
        }
    };
    for (url, peer, cut) in steps {
        let target = format!("{url}/api/admin/links/{peer}");
        let req = if cut {
            lab.inner.http.put(&target)
        } else {
            lab.inner.http.delete(&target)
        };
        match req.bearer_auth(&lab.inner.token).send().await {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => {
                return error(
                    StatusCode::BAD_GATEWAY,
                    "unavailable",
                    format!("{target}: {}", r.status()),
                )
            }
            Err(e) => {
                return error(
                    StatusCode::BAD_GATEWAY,
                    "unavailable",
                    format!("{target} did not answer: {e}"),
                )
            }
        }
    }
    let kind = match action.as_str() {
        "heal" => "link_healed",
        "cut_one_way" => "link_cut_one_way",
        _ => "link_cut",
    };
    lab.lab_event(kind, Some(&format!("{a}-{b}")));
    Json(json!({"a": a, "b": b, "action": action})).into_response()
}

async fn admin_cluster(
    State(lab): State<Lab>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    if let Some(r) = reject(&lab, &headers, None) {
        return r;
    }
    let Some(node) = lab
        .inner
        .supervisor
        .snapshot()
        .into_iter()
        .find(|n| n.name == name)
    else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no node named {name}"),
        );
    };
    let resp = lab
        .inner
        .http
        .get(format!("{}/api/admin/cluster", node.http))
        .bearer_auth(&lab.inner.token)
        .send()
        .await;
    match resp {
        Ok(r) => {
            let status =
                StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let body: Value = r.json().await.unwrap_or(Value::Null);
            (status, Json(body)).into_response()
        }
        Err(e) => error(
            StatusCode::BAD_GATEWAY,
            "unavailable",
            format!("{name} did not answer: {e}"),
        ),
    }
}

async fn events(
    State(lab): State<Lab>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    if let Some(r) = reject(&lab, &headers, query.get("token").map(String::as_str)) {
        return r;
    }
    upgrade.on_upgrade(move |socket| follow(lab, socket))
}

/// One page's event stream: the state at once, then every event.
async fn follow(lab: Lab, socket: WebSocket) {
    let mut rx = lab.inner.events.subscribe();
    let (mut tx, mut incoming) = socket.split();
    let mut first = lab.state().await;
    if let Some(o) = first.as_object_mut() {
        o.insert("type".into(), "state".into());
    }
    if tx
        .send(WsMessage::Text(first.to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    loop {
        tokio::select! {
            frame = rx.recv() => match frame {
                Ok(text) => {
                    if tx.send(WsMessage::Text(text.into())).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    let lagged = json!({"type": "lagged", "missed": n}).to_string();
                    if tx.send(WsMessage::Text(lagged.into())).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            msg = incoming.next() => match msg {
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

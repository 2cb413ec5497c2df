//! The REST API in process, through the real router over a temporary
//! embedded store: the JSON error shape for every kind of bad request, and
//! one pass over the success paths. The cluster-wide behaviour (fan-out,
//! presence) is tested end to end by the `tests` crate.

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use serde_json::{json, Value};
use storage::chat::{ChatStore, Limits, PasswordCost};
use storage::{keys, Database, KeyValue, RangeOptions};
use tower::ServiceExt;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actors::{Cluster, ClusterConfig, Metrics};

use crate::{router, AppState, GatewayConfig};

struct Fixture {
    app: axum::Router,
    store: ChatStore,
    runtime: actors::ClusterRuntime,
    _dir: tempfile::TempDir,
}

/// A one-node cluster on a fresh store, behind the real router.
async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Database::open_sqlite(dir.path().join("gw.sqlite")).expect("open");
    let store = ChatStore::open(db, Limits::default())
        .expect("store")
        .with_password_cost(PasswordCost {
            memory_kib: 64,
            iterations: 1,
        });
    // Process groups are process-global: a cluster name per fixture keeps
    // tests running in parallel apart.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let cluster_config = ClusterConfig {
        node_name: format!("gw-test-{n}"),
        cluster_name: format!("gw-test-{}-{n}", std::process::id()),
        cookie: "test".into(),
        listen: "127.0.0.1:0".parse().expect("addr"),
        advertise: "127.0.0.1:0".into(),
        http_addr: "127.0.0.1:0".into(),
        public_url: "http://127.0.0.1:0".into(),
        seeds: Vec::new(),
        heartbeat: Duration::from_secs(1),
        lease_ttl: Duration::from_secs(5),
        conversation_idle: Duration::from_secs(5),
        max_batch: 64,
        commit_pipeline: 1,
        index_delay: Duration::from_millis(1000),
        storage_threads: 4,
        push_timeout: Duration::from_secs(1),
        push: actors::PushConfig::default(),
        tls: None,
    };
    let runtime = Cluster::start(cluster_config, store.clone(), Arc::new(Metrics::new()))
        .await
        .expect("cluster");
    let config = GatewayConfig {
        max_body_bytes: 1024,
        ..GatewayConfig::default()
    };
    let state = AppState::new(store.clone(), runtime.cluster().clone(), config);
    Fixture {
        app: router(state),
        store,
        runtime,
        _dir: dir,
    }
}

impl Fixture {
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<String>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = match body {
            Some(body) => req
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body)),
            None => req.body(Body::empty()),
        }
        .expect("request");
        let response = self.app.clone().oneshot(req).await.expect("response");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("a JSON body")
        };
        (status, value)
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, token, Some(body.to_string()))
            .await
    }

    async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(token), None).await
    }

    /// Registers and logs in; returns (user id, token).
    async fn user(&self, name: &str) -> (u64, String) {
        let (status, body) = self
            .post(
                "/api/register",
                None,
                json!({"name": name, "password": "correct horse"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, body) = self
            .post(
                "/api/login",
                None,
                json!({"name": name, "password": "correct horse"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let id = body["user"]["id"].as_u64().expect("id");
        (id, body["token"].as_str().expect("token").to_owned())
    }

    async fn shutdown(self) {
        self.runtime.shutdown().await;
    }

    /// Waits until a conversation's actor has claimed it (bumped its epoch):
    /// a new group's actor is started to announce its members, and its
    /// claim is a write of its own, not the next request's.
    async fn until_claimed(&self, conv_id: u64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.store.conv_meta(conv_id).map_or(0, |m| m.epoch) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "conversation {conv_id} never activated"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Every key and value of the chat schema (not the node leases, which
    /// the membership loop renews on its own).
    fn dump(&self) -> Vec<KeyValue> {
        let (lease_begin, lease_end) = keys::NODE_LEASE.all();
        self.store
            .db()
            .read(|tx| tx.get_range(&[], &[0xff], RangeOptions::default()))
            .expect("dump")
            .into_iter()
            .filter(|(k, _)| !(lease_begin <= *k && *k < lease_end))
            .collect()
    }
}

fn assert_error(status: StatusCode, body: &Value, expected: StatusCode, code: &str) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_json_errors_and_change_nothing() {
    let f = fixture().await;
    let (_, token) = f.user("alice").await;
    let before = f.dump();

    let (s, b) = f
        .call(
            Method::POST,
            "/api/groups",
            Some(&token),
            Some("{not json".into()),
        )
        .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");

    let (s, b) = f
        .post("/api/groups", Some(&token), json!({"nom": "x"}))
        .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");

    let big = json!({"name": "x".repeat(2000)});
    let (s, b) = f.post("/api/groups", Some(&token), big).await;
    assert_error(s, &b, StatusCode::PAYLOAD_TOO_LARGE, "too_large");

    let (s, b) = f.get("/api/conversations/abc", &token).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");

    let (s, b) = f.get("/api/users?limit=ten&q=a", &token).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");

    let (s, b) = f.get("/api/nowhere", &token).await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "not_found");

    let (s, b) = f
        .call(
            Method::PATCH,
            "/api/groups/1",
            Some(&token),
            Some("{}".into()),
        )
        .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");

    assert!(f.dump() == before, "a refused request wrote to the store");
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_required_and_revocable() {
    let f = fixture().await;
    let (_, token) = f.user("alice").await;

    let (s, b) = f.call(Method::GET, "/api/chats", None, None).await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, "unauthorized");
    let (s, b) = f.get("/api/chats", "not-a-token").await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, "unauthorized");
    let (s, _) = f
        .call(
            Method::GET,
            &format!("/api/chats?token={token}"),
            None,
            None,
        )
        .await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "a token in the query is only for /ws"
    );

    let (s, b) = f
        .post(
            "/api/login",
            None,
            json!({"name": "alice", "password": "wrong password"}),
        )
        .await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, "unauthorized");

    let (s, _) = f
        .call(Method::POST, "/api/logout", Some(&token), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, b) = f.get("/api/chats", &token).await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, "unauthorized");
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_conflicts() {
    let f = fixture().await;
    f.user("alice").await;
    let (s, b) = f
        .post(
            "/api/register",
            None,
            json!({"name": "ALICE", "password": "correct horse"}),
        )
        .await;
    assert_error(s, &b, StatusCode::CONFLICT, "conflict");
    let (s, b) = f
        .post(
            "/api/register",
            None,
            json!({"name": "bob", "password": "short"}),
        )
        .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_lifecycle() {
    let f = fixture().await;
    let (alice, at) = f.user("alice").await;
    let (bob, bt) = f.user("bob").await;
    let (_, ct) = f.user("carol").await;

    let (s, b) = f.get("/api/users?q=B", &at).await;
    assert_eq!(s, StatusCode::OK);
    // Not contacts yet: no presence.
    assert_eq!(b, json!({"users": [{"id": bob, "name": "bob"}]}));
    let (s, b) = f.get(&format!("/api/users/{bob}"), &at).await;
    assert_eq!(s, StatusCode::OK);
    assert!(b.get("last_seen").is_none() && b.get("online").is_none());

    let (s, dm) = f
        .post(&format!("/api/direct/{bob}"), Some(&at), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{dm}");
    let (_, again) = f
        .post(&format!("/api/direct/{alice}"), Some(&bt), json!({}))
        .await;
    assert_eq!(dm["id"], again["id"], "one direct chat per pair");

    let (s, g) = f
        .post(
            "/api/groups",
            Some(&at),
            json!({"name": "climbing", "members": [bob]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{g}");
    let id = g["id"].as_u64().expect("id");

    // Carol is not a member: she can read nothing and change nothing.
    f.until_claimed(id).await;
    let before = f.dump();
    let (s, b) = f
        .get(&format!("/api/conversations/{id}/messages"), &ct)
        .await;
    assert_error(s, &b, StatusCode::FORBIDDEN, "forbidden");
    let (s, b) = f
        .call(
            Method::DELETE,
            &format!("/api/groups/{id}"),
            Some(&ct),
            None,
        )
        .await;
    assert_error(s, &b, StatusCode::FORBIDDEN, "forbidden");
    // Bob is a member but not an admin.
    let (s, b) = f
        .call(
            Method::DELETE,
            &format!("/api/groups/{id}"),
            Some(&bt),
            None,
        )
        .await;
    assert_error(s, &b, StatusCode::FORBIDDEN, "forbidden");
    assert!(f.dump() == before, "a refused request wrote to the store");

    let (s, b) = f
        .call(
            Method::PATCH,
            &format!("/api/groups/{id}"),
            Some(&bt),
            Some(json!({"description": "Sundays"}).to_string()),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["description"], "Sundays");

    let (s, b) = f.get(&format!("/api/conversations/{id}"), &bt).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["members"].as_array().map(Vec::len), Some(2));

    let (s, b) = f.get("/api/chats", &bt).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["chats"].as_array().map(Vec::len), Some(2), "{b}");

    let (s, b) = f
        .get(&format!("/api/conversations/{id}/messages?limit=10"), &bt)
        .await;
    assert_eq!((s, b), (StatusCode::OK, json!({"messages": []})));
    let (s, b) = f
        .get(&format!("/api/conversations/{id}/receipts"), &bt)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["receipts"].as_array().map(Vec::len), Some(2));
    let (s, b) = f
        .get(&format!("/api/conversations/{id}/messages/1/status"), &bt)
        .await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "not_found");

    let carol = f.get("/api/users?q=carol", &at).await.1["users"][0]["id"].clone();
    let (s, b) = f
        .post(
            &format!("/api/groups/{id}/members"),
            Some(&bt),
            json!({"user_id": carol}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, b) = f
        .post(
            &format!("/api/groups/{id}/members"),
            Some(&bt),
            json!({"user_id": carol}),
        )
        .await;
    assert_error(s, &b, StatusCode::CONFLICT, "conflict");
    let (s, _) = f
        .call(
            Method::DELETE,
            &format!("/api/groups/{id}/members/{carol}"),
            Some(&at),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = f
        .call(
            Method::POST,
            &format!("/api/groups/{id}/leave"),
            Some(&bt),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);

    let (s, b) = f.get(&format!("/api/groups/{id}/history"), &at).await;
    assert_eq!(s, StatusCode::OK);
    let actions: Vec<&str> = b["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(actions, ["added", "added", "added", "removed", "left"]);

    let (s, _) = f
        .call(
            Method::DELETE,
            &format!("/api/groups/{id}"),
            Some(&at),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, b) = f.get(&format!("/api/conversations/{id}"), &at).await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "not_found");
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_subscriptions() {
    let f = fixture().await;
    let (_, t) = f.user("alice").await;
    let sub = json!({"endpoint": "https://push.example/abc", "keys": {
        "p256dh": "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM",
        "auth": "tBHItJI5svbpez7KI4CCXg"}});
    let (s, b) = f.post("/api/push-subscriptions", Some(&t), sub).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let id = b["id"].as_str().expect("id").to_owned();
    let (s, b) = f.get("/api/push-subscriptions", &t).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["subscriptions"][0]["id"], id.as_str());
    let path = format!("/api/push-subscriptions/{id}");
    let (s, _) = f.call(Method::DELETE, &path, Some(&t), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, b) = f.call(Method::DELETE, &path, Some(&t), None).await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "not_found");
    let bad = json!({"endpoint": "ftp://x", "keys": {"p256dh": "k", "auth": "a"}});
    let (s, b) = f.post("/api/push-subscriptions", Some(&t), bad).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_openapi() {
    let f = fixture().await;
    let (s, b) = f.call(Method::GET, "/healthz", None, None).await;
    assert_eq!((s, b), (StatusCode::OK, json!({"status": "ok"})));
    let (s, b) = f.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(b["paths"]["/api/login"].is_object());
    f.shutdown().await;
}

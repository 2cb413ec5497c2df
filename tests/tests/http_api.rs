//! The HTTP API end to end, through a real `parley` process on loopback:
//! the success path of every endpoint of docs/HTTP.md, and for each the bad
//! inputs a user can send, asserting the status, the JSON error shape
//! `{"error": {"code", "message"}}`, and that the refused request changed
//! nothing (the resource or list is read again afterwards).
//!
//! Each test starts its own one-node cluster (its own store), so the tests
//! are independent and run in parallel. Messages are sent over the
//! WebSocket, as clients do; everything else is HTTP.

use std::time::Duration;

use serde_json::{json, Value};
use tests::client::{Api, User, Ws};
use tests::node::{Node, TestCluster};
use tests::wait;

/// How long any awaited condition may take.
const WAIT: Duration = Duration::from_secs(10);

/// The default `max_body_bytes`.
const MAX_BODY: usize = 64 * 1024;

/// An id no user, conversation or message has in a fresh store.
const UNKNOWN: u64 = 987_654_321;

/// A one-node cluster and a client of it.
struct Fixture {
    cluster: TestCluster,
    api: Api,
}

impl Fixture {
    async fn start() -> Self {
        Self::with(TestCluster::start(1).await)
    }

    fn with(cluster: TestCluster) -> Self {
        let api = Api::new(cluster.nodes[0].http);
        Self { cluster, api }
    }

    fn node(&self) -> &Node {
        &self.cluster.nodes[0]
    }

    /// Any call with an optional token and JSON body.
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.api.call(method, path, token, body).await
    }

    async fn get(&self, path: &str, user: &User) -> (u16, Value) {
        self.call("GET", path, Some(&user.token), None).await
    }

    /// A GET that must succeed; returns the body.
    async fn get_ok(&self, path: &str, user: &User) -> Value {
        let (status, body) = self.get(path, user).await;
        assert_eq!(status, 200, "GET {path} as {}: {body}", user.name);
        body
    }

    async fn post(&self, path: &str, user: &User, body: Option<Value>) -> (u16, Value) {
        self.call("POST", path, Some(&user.token), body).await
    }

    async fn patch(&self, path: &str, user: &User, body: Value) -> (u16, Value) {
        self.call("PATCH", path, Some(&user.token), Some(body))
            .await
    }

    async fn delete(&self, path: &str, user: &User) -> (u16, Value) {
        self.call("DELETE", path, Some(&user.token), None).await
    }

    /// A request built by hand: any headers, any bytes (or none).
    async fn raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = reqwest::Client::new().request(method, self.node().url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(body) = body {
            req = req.body(body);
        }
        let resp = req.send().await.expect("HTTP request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, headers, value)
    }

    /// Sends the bodies a careless client sends to a JSON endpoint and
    /// checks each is refused: malformed JSON, the wrong JSON type, no
    /// content type (400), a body one byte over `max_body_bytes` (413).
    async fn bad_bodies(&self, method: &str, path: &str, user: &User) {
        let auth = format!("Bearer {}", user.token);
        // (what, with a JSON content type, body, status, code)
        let cases = [
            ("malformed JSON", true, r#"{"name": "x", "#.to_owned(), 400),
            ("not an object", true, "[1, 2, 3]".to_owned(), 400),
            ("an empty body", true, String::new(), 400),
            ("no content type", false, r#"{"name": "x"}"#.to_owned(), 400),
            (
                "a body one byte over max_body_bytes",
                true,
                padded_body(MAX_BODY + 1),
                413,
            ),
        ];
        for (what, json_ct, body, status) in cases {
            let mut headers = vec![("authorization", auth.as_str())];
            if json_ct {
                headers.push(("content-type", "application/json"));
            }
            let (got, _, value) = self.raw(method, path, &headers, Some(body)).await;
            let code = if status == 413 {
                "too_large"
            } else {
                "bad_request"
            };
            assert_error(
                &format!("{method} {path} with {what}"),
                &(got, value),
                status,
                code,
            );
        }
    }

    /// Connects `user`'s WebSocket and waits for its `hello`.
    async fn ws(&self, user: &User) -> Ws {
        let ws = Ws::connect(&self.node().ws_url(&user.token))
            .await
            .expect("WebSocket connect");
        ws.wait_for("hello", WAIT, |f| f["type"] == "hello").await;
        ws
    }

    /// The ids of `user`'s chat list, in order.
    async fn chat_ids(&self, user: &User) -> Vec<u64> {
        let body = self.get_ok("/api/chats", user).await;
        body["chats"]
            .as_array()
            .expect("chats")
            .iter()
            .map(|c| c["conv_id"].as_u64().expect("conv_id"))
            .collect()
    }

    /// `user`'s row of the chat list for `conv`.
    async fn chat_row(&self, user: &User, conv: u64) -> Value {
        let body = self.get_ok("/api/chats", user).await;
        body["chats"]
            .as_array()
            .expect("chats")
            .iter()
            .find(|c| c["conv_id"] == conv)
            .cloned()
            .unwrap_or_else(|| panic!("conversation {conv} not in {}'s chats: {body}", user.name))
    }

    /// The (user id, role) of a conversation's members, as `user` sees them.
    async fn members(&self, conv: u64, user: &User) -> Vec<(u64, String)> {
        let body = self
            .get_ok(&format!("/api/conversations/{conv}"), user)
            .await;
        body["members"]
            .as_array()
            .expect("members")
            .iter()
            .map(|m| {
                assert_eq!(m["status"], "active", "{m}");
                (
                    m["user_id"].as_u64().expect("user_id"),
                    m["role"].as_str().expect("role").to_owned(),
                )
            })
            .collect()
    }

    /// The seqs of a history page.
    async fn seqs(&self, path: &str, user: &User) -> Vec<u64> {
        let body = self.get_ok(path, user).await;
        body["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(|m| m["seq"].as_u64().expect("seq"))
            .collect()
    }

    /// The ids of `user`'s push subscriptions.
    async fn push_ids(&self, user: &User) -> Vec<String> {
        let body = self.get_ok("/api/push-subscriptions", user).await;
        body["subscriptions"]
            .as_array()
            .expect("subscriptions")
            .iter()
            .map(|s| s["id"].as_str().expect("id").to_owned())
            .collect()
    }
}

/// A JSON object of exactly `len` bytes (a long password).
fn padded_body(len: usize) -> String {
    let head = r#"{"name":"padding","password":""#;
    let tail = r#""}"#;
    let body = format!("{head}{}{tail}", "p".repeat(len - head.len() - tail.len()));
    assert_eq!(body.len(), len);
    body
}

/// Asserts the status and the documented error body: an object with only
/// `error`, which has the expected `code` and a non-empty `message`.
#[track_caller]
fn assert_error(what: &str, got: &(u16, Value), status: u16, code: &str) {
    let (got_status, body) = got;
    assert_eq!(*got_status, status, "{what}: status (body {body})");
    let outer = body
        .as_object()
        .unwrap_or_else(|| panic!("{what}: the error body is not an object: {body}"));
    assert_eq!(outer.len(), 1, "{what}: only `error` at the top: {body}");
    let error = outer
        .get("error")
        .and_then(Value::as_object)
        .unwrap_or_else(|| panic!("{what}: no `error` object: {body}"));
    assert_eq!(
        error.get("code"),
        Some(&json!(code)),
        "{what}: code: {body}"
    );
    let message = error.get("message").and_then(Value::as_str);
    assert!(
        message.is_some_and(|m| !m.is_empty()),
        "{what}: message: {body}"
    );
    for key in error.keys() {
        assert!(
            ["code", "message", "retry_after_ms"].contains(&key.as_str()),
            "{what}: unexpected field {key}: {body}"
        );
    }
}

/// Sends a message over the WebSocket and waits for its `sent` frame;
/// returns its seq. Fails on an `error` frame about it.
async fn send(ws: &mut Ws, conv: u64, client_msg_id: &str, body: &str) -> u64 {
    ws.send(json!({
        "type": "send",
        "conv_id": conv,
        "client_msg_id": client_msg_id,
        "body": body,
    }))
    .await;
    let frame = ws
        .wait_for(&format!("sent {client_msg_id}"), WAIT, |f| {
            (f["type"] == "sent" || f["type"] == "error") && f_ref(f) == client_msg_id
        })
        .await;
    assert_eq!(frame["type"], "sent", "send {client_msg_id}: {frame}");
    assert_eq!(frame["conv_id"], conv, "{frame}");
    assert!(frame["sent_at"].as_u64().is_some(), "{frame}");
    frame["seq"].as_u64().expect("seq")
}

/// The request a `sent` or `error` frame answers.
fn f_ref(frame: &Value) -> &str {
    frame["client_msg_id"]
        .as_str()
        .or_else(|| frame["ref"].as_str())
        .unwrap_or_default()
}

/// Milliseconds since the Unix epoch, by this machine's clock.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

// ---------------------------------------------------------------------------

#[tokio::test]
async fn health_openapi_metrics_and_unknown_routes() {
    let fx = Fixture::start().await;
    let alice = fx.api.user("alice").await;

    let (status, body) = fx.call("GET", "/healthz", None, None).await;
    assert_eq!((status, body), (200, json!({"status": "ok"})));

    // The OpenAPI document: valid JSON, 3.x, every documented path with
    // its methods, and the bearer scheme.
    let (status, _, doc) = fx.raw("GET", "/openapi.json", &[], None).await;
    assert_eq!(status, 200, "{doc}");
    assert!(doc.is_object(), "not JSON: {doc}");
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().expect("paths");
    let expected: [(&str, &[&str]); 19] = [
        ("/healthz", &["get"]),
        ("/api/register", &["post"]),
        ("/api/login", &["post"]),
        ("/api/logout", &["post"]),
        ("/api/users", &["get"]),
        ("/api/users/{id}", &["get"]),
        ("/api/chats", &["get"]),
        ("/api/direct/{user_id}", &["post"]),
        ("/api/groups", &["post"]),
        ("/api/groups/{id}", &["patch", "delete"]),
        ("/api/groups/{id}/history", &["get"]),
        ("/api/groups/{id}/members", &["post"]),
        ("/api/groups/{id}/members/{user_id}", &["delete"]),
        ("/api/groups/{id}/leave", &["post"]),
        ("/api/conversations/{id}", &["get"]),
        ("/api/conversations/{id}/messages", &["get"]),
        ("/api/conversations/{id}/messages/{seq}/status", &["get"]),
        ("/api/conversations/{id}/receipts", &["get"]),
        ("/api/push-subscriptions", &["post", "get"]),
    ];
    for (path, methods) in expected {
        let item = paths
            .get(path)
            .unwrap_or_else(|| panic!("{path} missing from /openapi.json"));
        for m in methods {
            assert!(item.get(*m).is_some(), "{m} {path} missing: {item}");
        }
    }
    assert!(
        paths
            .get("/api/push-subscriptions/{id}")
            .and_then(|p| p.get("delete"))
            .is_some(),
        "DELETE /api/push-subscriptions/{{id}} missing"
    );
    assert!(
        doc["components"]["securitySchemes"]["bearer"].is_object(),
        "no bearer scheme: {}",
        doc["components"]
    );

    // Metrics: Prometheus text with the session gauge, which follows a
    // WebSocket session.
    let (status, headers, text) = fx.raw("GET", "/metrics", &[], None).await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .is_ok_and(|c| c.starts_with("text/plain")),
        "{headers:?}"
    );
    let text = text.as_str().expect("metrics text").to_owned();
    assert!(text.contains("# TYPE parley_sessions gauge"), "{text}");
    let sessions = |text: &str| -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with("parley_sessions "))?
            .rsplit(' ')
            .next()?
            .parse()
            .ok()
    };
    assert_eq!(sessions(&text), Some(0.0), "{text}");
    let ws = fx.ws(&alice).await;
    let read_sessions = || async {
        let (_, _, text) = fx.raw("GET", "/metrics", &[], None).await;
        sessions(text.as_str().unwrap_or_default())
    };
    wait::until("parley_sessions 1", WAIT, || async {
        (read_sessions().await == Some(1.0)).then_some(())
    })
    .await;
    ws.close().await;
    wait::until("parley_sessions 0", WAIT, || async {
        (read_sessions().await == Some(0.0)).then_some(())
    })
    .await;

    // Unknown routes are JSON 404s; a known path with the wrong method is
    // axum's 405.
    for path in ["/nope", "/api/nope", "/api/users/1/nope"] {
        let got = fx.call("GET", path, Some(&alice.token), None).await;
        assert_error(&format!("GET {path}"), &got, 404, "not_found");
    }
    let (status, _) = fx
        .call("DELETE", "/api/chats", Some(&alice.token), None)
        .await;
    assert_eq!(status, 405);
}

#[tokio::test]
async fn register_and_login() {
    let fx = Fixture::start().await;

    // Register: 201 with the id and name, nothing secret echoed.
    let (status, body) = fx
        .call(
            "POST",
            "/api/register",
            None,
            Some(json!({"name": "Alice", "phone": "+15551234567", "password": "correct horse"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let alice_id = body["id"].as_u64().expect("id");
    assert_eq!(body, json!({"id": alice_id, "name": "Alice"}));
    let (status, body) = fx
        .call(
            "POST",
            "/api/register",
            None,
            Some(json!({"name": "bob", "password": "12345678"})),
        )
        .await;
    assert_eq!(status, 201, "phone is optional: {body}");
    let bob_id = body["id"].as_u64().expect("id");
    assert_ne!(alice_id, bob_id);

    // Refused registrations.
    let register = |name: &str, phone: Option<&str>, password: &str| {
        let mut body = json!({"name": name, "password": password});
        if let Some(phone) = phone {
            body["phone"] = json!(phone);
        }
        fx.call("POST", "/api/register", None, Some(body))
    };
    for (what, name, phone, password, status, code) in [
        (
            "a taken name",
            "alice",
            None,
            "correct horse",
            409,
            "conflict",
        ),
        (
            "a taken name, other case",
            "ALICE",
            None,
            "correct horse",
            409,
            "conflict",
        ),
        (
            "a taken phone",
            "alicia",
            Some("+15551234567"),
            "correct horse",
            409,
            "conflict",
        ),
        (
            "a short name",
            "al",
            None,
            "correct horse",
            400,
            "bad_request",
        ),
        (
            "a 33-character name",
            &"a".repeat(33),
            None,
            "correct horse",
            400,
            "bad_request",
        ),
        (
            "a name with a space",
            "ali ce",
            None,
            "correct horse",
            400,
            "bad_request",
        ),
        (
            "a name with a slash",
            "ali/ce",
            None,
            "correct horse",
            400,
            "bad_request",
        ),
        (
            "an empty name",
            "",
            None,
            "correct horse",
            400,
            "bad_request",
        ),
        (
            "a short password",
            "carol",
            None,
            "short",
            400,
            "bad_request",
        ),
        (
            "a 1025-byte password",
            "carol",
            None,
            &"p".repeat(1025),
            400,
            "bad_request",
        ),
        (
            "a bad phone",
            "carol",
            Some("12"),
            "correct horse",
            400,
            "bad_request",
        ),
        (
            "a phone with letters",
            "carol",
            Some("+1555abc"),
            "correct horse",
            400,
            "bad_request",
        ),
    ] {
        let got = register(name, phone, password).await;
        assert_error(&format!("register with {what}"), &got, status, code);
    }
    // Missing and mistyped fields, bad bodies.
    for body in [
        json!({"name": "carol"}),
        json!({"password": "correct horse"}),
        json!({"name": 7, "password": "correct horse"}),
        json!({"name": "carol", "password": "correct horse", "phone": 15551234}),
    ] {
        let got = fx
            .call("POST", "/api/register", None, Some(body.clone()))
            .await;
        assert_error(&format!("register {body}"), &got, 400, "bad_request");
    }
    let anyone = User {
        id: 0,
        name: "anonymous".into(),
        token: "none".into(),
    };
    fx.bad_bodies("POST", "/api/register", &anyone).await;
    // A body exactly at the limit is read (and then refused as input).
    let (status, _, body) = fx
        .raw(
            "POST",
            "/api/register",
            &[("content-type", "application/json")],
            Some(padded_body(MAX_BODY)),
        )
        .await;
    assert_error(
        "a body of max_body_bytes",
        &(status, body),
        400,
        "bad_request",
    );

    // Nothing of that was registered: only alice and bob exist, the
    // refused names cannot log in, and the taken phone is still alice's.
    let alice = fx.api.login("alice").await;
    for prefix in ["a", "b", "c", "p"] {
        let body = fx.get_ok(&format!("/api/users?q={prefix}"), &alice).await;
        let names: Vec<&str> = body["users"]
            .as_array()
            .expect("users")
            .iter()
            .map(|u| u["name"].as_str().expect("name"))
            .collect();
        let want: &[&str] = match prefix {
            "a" => &["Alice"],
            "b" => &["bob"],
            _ => &[],
        };
        assert_eq!(names, want, "search {prefix}: {body}");
    }
    for name in ["alicia", "carol", "padding"] {
        let got = fx
            .call(
                "POST",
                "/api/login",
                None,
                Some(json!({"name": name, "password": "correct horse"})),
            )
            .await;
        assert_error(
            &format!("login as unregistered {name}"),
            &got,
            401,
            "unauthorized",
        );
    }

    // Login: any case of the name; a token, the user and an expiry about
    // 30 days out.
    let before = now_ms();
    let (status, body) = fx
        .call(
            "POST",
            "/api/login",
            None,
            Some(json!({"name": "ALICE", "password": "correct horse"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"], json!({"id": alice_id, "name": "Alice"}));
    let token = body["token"].as_str().expect("token");
    assert!(token.len() >= 32, "a long random token: {token}");
    let expires_at = body["expires_at"].as_u64().expect("expires_at");
    let month = 30 * 24 * 3600 * 1000;
    assert!(
        expires_at >= before + month - 60_000 && expires_at <= now_ms() + month + 60_000,
        "expires_at {expires_at} is not 30 days after {before}"
    );
    // Each login is a new token.
    assert_ne!(token, alice.token);

    // Wrong password and unknown name: the same 401, with
    // WWW-Authenticate.
    let mut answers = Vec::new();
    for (name, password) in [
        ("alice", "wrong horse"),
        ("alice", ""),
        ("nobody", "correct horse"),
    ] {
        let (status, headers, body) = fx
            .raw(
                "POST",
                "/api/login",
                &[("content-type", "application/json")],
                Some(json!({"name": name, "password": password}).to_string()),
            )
            .await;
        assert_eq!(
            headers
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok()),
            Some("Bearer"),
            "login {name}/{password}"
        );
        assert_error(
            &format!("login {name}/{password}"),
            &(status, body.clone()),
            401,
            "unauthorized",
        );
        answers.push(body);
    }
    assert_eq!(
        answers[0], answers[2],
        "wrong password and unknown name must look alike"
    );
    for body in [
        json!({"name": "alice"}),
        json!({"password": "correct horse"}),
    ] {
        let got = fx
            .call("POST", "/api/login", None, Some(body.clone()))
            .await;
        assert_error(&format!("login {body}"), &got, 400, "bad_request");
    }
    fx.bad_bodies("POST", "/api/login", &anyone).await;

    // The refused logins did not lock anyone out.
    fx.api.login("alice").await;
    let (status, body) = fx
        .call(
            "POST",
            "/api/login",
            None,
            Some(json!({"name": "bob", "password": "12345678"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn tokens_logout_and_unauthenticated_calls() {
    let fx = Fixture::start().await;
    let alice = fx.api.user("alice").await;
    let bob = fx.api.user("bob").await;
    let carol = fx.api.user("carol").await;
    let group = fx.api.group(&alice, "climbing", &[&bob]).await;

    // Logout revokes exactly the token presented.
    let phone = fx.api.login("alice").await;
    let (status, body) = fx.post("/api/logout", &phone, None).await;
    assert_eq!((status, body), (204, Value::Null));
    let got = fx.get("/api/chats", &phone).await;
    assert_error("a revoked token", &got, 401, "unauthorized");
    let got = fx.post("/api/logout", &phone, None).await;
    assert_error("logging out twice", &got, 401, "unauthorized");
    fx.get_ok("/api/chats", &alice).await;

    // A token as a query parameter is only for /ws: REST routes refuse it
    // (with or without a header next to it, the header alone counts).
    let (status, _, body) = fx
        .raw(
            "GET",
            &format!("/api/chats?token={}", alice.token),
            &[],
            None,
        )
        .await;
    assert_error(
        "a good ?token= on a REST route",
        &(status, body),
        401,
        "unauthorized",
    );
    let (status, _, body) = fx
        .raw(
            "GET",
            &format!("/api/chats?token={}", alice.token),
            &[("authorization", "Bearer not-a-token")],
            None,
        )
        .await;
    assert_error(
        "a bad header with a good ?token=",
        &(status, body),
        401,
        "unauthorized",
    );

    // Every authenticated route refuses a missing, malformed, unknown or
    // revoked token with the JSON 401 and WWW-Authenticate, before looking
    // at anything else, and changes nothing.
    let sub =
        json!({"endpoint": "https://push.example.com/x", "keys": {"p256dh": "k", "auth": "a"}});
    let routes: Vec<(&str, String, Option<Value>)> = vec![
        ("POST", "/api/logout".into(), None),
        ("GET", "/api/users?q=a".into(), None),
        ("GET", format!("/api/users/{}", bob.id), None),
        ("GET", "/api/chats".into(), None),
        ("POST", format!("/api/direct/{}", bob.id), None),
        (
            "POST",
            "/api/groups".into(),
            Some(json!({"name": "sneaky"})),
        ),
        (
            "PATCH",
            format!("/api/groups/{group}"),
            Some(json!({"name": "hacked"})),
        ),
        ("DELETE", format!("/api/groups/{group}"), None),
        ("GET", format!("/api/groups/{group}/history"), None),
        (
            "POST",
            format!("/api/groups/{group}/members"),
            Some(json!({"user_id": carol.id})),
        ),
        (
            "DELETE",
            format!("/api/groups/{group}/members/{}", bob.id),
            None,
        ),
        ("POST", format!("/api/groups/{group}/leave"), None),
        ("GET", format!("/api/conversations/{group}"), None),
        ("GET", format!("/api/conversations/{group}/messages"), None),
        (
            "GET",
            format!("/api/conversations/{group}/messages/1/status"),
            None,
        ),
        ("GET", format!("/api/conversations/{group}/receipts"), None),
        ("POST", "/api/push-subscriptions".into(), Some(sub)),
        ("GET", "/api/push-subscriptions".into(), None),
        (
            "DELETE",
            "/api/push-subscriptions/0123456789abcdef".into(),
            None,
        ),
    ];
    let bearer_revoked = format!("Bearer {}", phone.token);
    let basic = format!("Basic {}", alice.token);
    let credentials: [(&str, Option<&str>); 6] = [
        ("no token", None),
        ("an empty bearer token", Some("Bearer ")),
        ("another scheme", Some(&basic)),
        (
            "an unknown token",
            Some("Bearer 3f5c0e9a1d7b4c2e8f6a0b1c2d3e4f5a"),
        ),
        ("a revoked token", Some(&bearer_revoked)),
        ("a token with spaces", Some("Bearer a b c")),
    ];
    for (method, path, body) in &routes {
        for (what, auth) in &credentials {
            let mut headers = vec![("content-type", "application/json")];
            if let Some(auth) = auth {
                headers.push(("authorization", auth));
            }
            let body = body.as_ref().map(Value::to_string);
            let (status, resp_headers, value) = fx.raw(method, path, &headers, body).await;
            let label = format!("{method} {path} with {what}");
            assert_error(&label, &(status, value), 401, "unauthorized");
            assert_eq!(
                resp_headers
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok()),
                Some("Bearer"),
                "{label}"
            );
        }
        let (status, _, value) = fx
            .raw(
                method,
                &format!(
                    "{path}{}token=nope",
                    if path.contains('?') { "&" } else { "?" }
                ),
                &[],
                None,
            )
            .await;
        assert_error(
            &format!("{method} {path}?token=nope"),
            &(status, value),
            401,
            "unauthorized",
        );
    }

    // Nothing changed: the group is as created, with both members; no
    // direct chat, no new group, no subscription; alice is still logged in.
    let detail = fx
        .get_ok(&format!("/api/conversations/{group}"), &alice)
        .await;
    assert_eq!(detail["conversation"]["name"], "climbing");
    assert_eq!(
        fx.members(group, &alice).await,
        vec![
            (alice.id, "admin".to_owned()),
            (bob.id, "member".to_owned())
        ]
    );
    assert_eq!(fx.chat_ids(&alice).await, vec![group]);
    assert_eq!(fx.chat_ids(&bob).await, vec![group]);
    assert_eq!(fx.chat_ids(&carol).await, Vec::<u64>::new());
    assert!(fx.push_ids(&alice).await.is_empty());
    let history = fx
        .get_ok(&format!("/api/groups/{group}/history"), &alice)
        .await;
    assert_eq!(
        history["events"].as_array().map(Vec::len),
        Some(2),
        "{history}"
    );

    // Logging out one session leaves the others logged in.
    let (status, _) = fx.post("/api/logout", &alice, None).await;
    assert_eq!(status, 204);
    assert_error(
        "after logout",
        &fx.get("/api/chats", &alice).await,
        401,
        "unauthorized",
    );
    fx.get_ok("/api/chats", &bob).await;
    let again = fx.api.login("alice").await;
    assert_eq!(fx.chat_ids(&again).await, vec![group]);
}

#[tokio::test]
async fn expired_tokens_are_refused() {
    let config_dir = tempfile::tempdir().expect("tempdir");
    let config = config_dir.path().join("parley.toml");
    std::fs::write(&config, "[gateway]\ntoken_ttl_secs = 1\n").expect("config");
    let cluster = TestCluster::start_with(
        1,
        Default::default(),
        &[("PARLEY_CONFIG", config.to_str().expect("path"))],
    )
    .await;
    let fx = Fixture::with(cluster);

    let (status, body) = fx
        .call(
            "POST",
            "/api/register",
            None,
            Some(json!({"name": "alice", "password": "correct horse"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let before = now_ms();
    let (status, body) = fx
        .call(
            "POST",
            "/api/login",
            None,
            Some(json!({"name": "alice", "password": "correct horse"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let expires_at = body["expires_at"].as_u64().expect("expires_at");
    assert!(
        expires_at >= before + 1000 - 100 && expires_at <= now_ms() + 1000 + 100,
        "a 1 s token expires at {expires_at}, logged in at {before}"
    );
    let alice = User {
        id: body["user"]["id"].as_u64().expect("id"),
        name: "alice".into(),
        token: body["token"].as_str().expect("token").to_owned(),
    };
    fx.get_ok("/api/chats", &alice).await;

    // It works until it expires, then gets the same 401 as any bad token.
    let got = wait::until("the token to expire", WAIT, || async {
        let got = fx.get("/api/chats", &alice).await;
        (got.0 != 200).then_some(got)
    })
    .await;
    assert!(now_ms() + 50 >= expires_at, "refused before its expiry");
    assert_error("an expired token", &got, 401, "unauthorized");
    let got = fx
        .post("/api/groups", &alice, Some(json!({"name": "late"})))
        .await;
    assert_error(
        "creating a group with an expired token",
        &got,
        401,
        "unauthorized",
    );
    let refused = Ws::connect(&fx.node().ws_url(&alice.token)).await;
    match refused {
        Ok(_) => panic!("a WebSocket upgrade with an expired token was accepted"),
        Err(e) => assert!(e.contains("401"), "the upgrade is refused with 401: {e}"),
    }

    // Nothing was created with it.
    let fresh = fx.api.login("alice").await;
    assert_eq!(fx.chat_ids(&fresh).await, Vec::<u64>::new());
}

#[tokio::test]
async fn users_search_and_profiles() {
    let fx = Fixture::start().await;
    let alice = fx.api.user("alice").await;
    let mut ids = std::collections::HashMap::new();
    for name in ["bob", "Bianca", "bea", "ben", "bert", "carl"] {
        let user = fx.api.user(name).await;
        ids.insert(name, user.id);
    }
    // A refused registration is not a user to find.
    let got = fx
        .call(
            "POST",
            "/api/register",
            None,
            Some(json!({"name": "bx", "password": "correct horse"})),
        )
        .await;
    assert_error("register bx", &got, 400, "bad_request");

    let names = |body: &Value| -> Vec<String> {
        body["users"]
            .as_array()
            .expect("users")
            .iter()
            .map(|u| {
                // Strangers: no presence.
                assert!(
                    u["id"].as_u64().is_some() && u.get("online").is_none(),
                    "{u}"
                );
                u["name"].as_str().expect("name").to_owned()
            })
            .collect()
    };

    // All of them, in name order, case-insensitively.
    let body = fx.get_ok("/api/users?q=b", &alice).await;
    assert_eq!(names(&body), ["bea", "ben", "bert", "Bianca", "bob"]);
    let body = fx.get_ok("/api/users?q=B", &alice).await;
    assert_eq!(names(&body), ["bea", "ben", "bert", "Bianca", "bob"]);
    let body = fx.get_ok("/api/users?q=bi", &alice).await;
    assert_eq!(names(&body), ["Bianca"]);
    assert_eq!(body["users"][0]["id"], ids["Bianca"]);
    for q in ["z", "bx", "bobby", "%C3%A9"] {
        let body = fx.get_ok(&format!("/api/users?q={q}"), &alice).await;
        assert_eq!(names(&body), Vec::<String>::new(), "q={q}");
    }

    // Paging with `after` and `limit`.
    let mut pages = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/api/users?q=b&limit=2&after={a}"),
            None => "/api/users?q=b&limit=2".to_owned(),
        };
        let page = names(&fx.get_ok(&path, &alice).await);
        assert!(page.len() <= 2, "{page:?}");
        if page.is_empty() {
            break;
        }
        after = page.last().cloned();
        pages.push(page);
        assert!(pages.len() < 10, "paging does not end: {pages:?}");
    }
    assert_eq!(
        pages,
        vec![
            vec!["bea".to_owned(), "ben".to_owned()],
            vec!["bert".to_owned(), "Bianca".to_owned()],
            vec!["bob".to_owned()],
        ]
    );
    // `after` in another case pages the same.
    let body = fx.get_ok("/api/users?q=b&limit=2&after=BERT", &alice).await;
    assert_eq!(names(&body), ["Bianca", "bob"]);

    // Bad searches.
    for query in ["", "?q=", "?limit=2", "?q=b&limit=abc", "?q=b&limit=-1"] {
        let got = fx.get(&format!("/api/users{query}"), &alice).await;
        assert_error(&format!("search {query:?}"), &got, 400, "bad_request");
    }

    // A stranger's profile has no presence; a contact's has.
    let carl_id = ids["carl"];
    let body = fx.get_ok(&format!("/api/users/{carl_id}"), &alice).await;
    assert_eq!(body, json!({"id": carl_id, "name": "carl"}));
    let bob_id = ids["bob"];
    let bob = fx.api.login("bob").await;
    fx.api.direct(&alice, &bob).await;
    let body = fx.get_ok(&format!("/api/users/{bob_id}"), &alice).await;
    assert_eq!(
        body,
        json!({"id": bob_id, "name": "bob", "online": false, "last_seen": null})
    );
    let got = fx.get(&format!("/api/users/{UNKNOWN}"), &alice).await;
    assert_error("an unknown user", &got, 404, "not_found");
    for id in ["abc", "-1", "1.5"] {
        let got = fx.get(&format!("/api/users/{id}"), &alice).await;
        assert_error(&format!("user id {id}"), &got, 400, "bad_request");
    }

    // Presence: online while bob has a session; last_seen once it ends.
    let bob = fx.api.login("bob").await;
    let ws = fx.ws(&bob).await;
    wait::until("bob online", WAIT, || async {
        let body = fx.get_ok(&format!("/api/users/{bob_id}"), &alice).await;
        (body["online"] == true).then_some(())
    })
    .await;
    let body = fx.get_ok("/api/users?q=bo", &alice).await;
    assert_eq!(
        body["users"],
        json!([{"id": bob_id, "name": "bob", "online": true}])
    );
    let closed_after = now_ms();
    ws.close().await;
    let body = wait::until("bob offline", WAIT, || async {
        let body = fx.get_ok(&format!("/api/users/{bob_id}"), &alice).await;
        (body["online"] == false && body["last_seen"].is_u64()).then_some(body)
    })
    .await;
    let last_seen = body["last_seen"].as_u64().expect("last_seen");
    assert!(
        last_seen + 1000 >= closed_after && last_seen <= now_ms() + 1000,
        "last_seen {last_seen}, closed at {closed_after}"
    );
    let body = fx.get_ok("/api/users?q=bo", &alice).await;
    assert_eq!(body["users"][0]["online"], false);
}

#[tokio::test]
async fn chat_list_and_direct_chats() {
    let fx = Fixture::start().await;
    let alice = fx.api.user("alice").await;
    let bob = fx.api.user("bob").await;
    let carol = fx.api.user("carol").await;

    assert_eq!(fx.chat_ids(&alice).await, Vec::<u64>::new());

    // Opening a direct chat: the conversation; idempotent from either side.
    let (status, conv) = fx
        .post(&format!("/api/direct/{}", bob.id), &alice, None)
        .await;
    assert_eq!(status, 200, "{conv}");
    let direct = conv["id"].as_u64().expect("id");
    assert_eq!(conv["kind"], "direct");
    assert_eq!(conv["name"], "");
    assert_eq!(conv["description"], "");
    assert_eq!(conv["created_by"], alice.id);
    assert!(
        conv["created_at"].is_u64() && conv["updated_at"].is_u64(),
        "{conv}"
    );
    let (status, again) = fx
        .post(&format!("/api/direct/{}", bob.id), &alice, None)
        .await;
    assert_eq!((status, &again), (200, &conv), "opening again");
    let (status, other_side) = fx
        .post(&format!("/api/direct/{}", alice.id), &bob, None)
        .await;
    assert_eq!((status, &other_side), (200, &conv), "the other side");

    // Refused: yourself, unknown and malformed users.
    let got = fx
        .post(&format!("/api/direct/{}", alice.id), &alice, None)
        .await;
    assert_error("a chat with yourself", &got, 400, "bad_request");
    let got = fx
        .post(&format!("/api/direct/{UNKNOWN}"), &alice, None)
        .await;
    assert_error("a chat with an unknown user", &got, 404, "not_found");
    let got = fx.post("/api/direct/bob", &alice, None).await;
    assert_error("a chat with a name", &got, 400, "bad_request");
    assert_eq!(fx.chat_ids(&alice).await, vec![direct], "nothing new");

    // The row before any message: named after the peer.
    let row = fx.chat_row(&alice, direct).await;
    assert_eq!(row["kind"], "direct");
    assert_eq!(row["name"], "bob");
    assert_eq!(row["peer"], json!({"id": bob.id, "name": "bob"}));
    assert_eq!(row["last_message"], Value::Null);
    assert_eq!(row["unread"], 0);
    assert_eq!(row["last_message_status"], Value::Null);
    assert!(row["last_activity_at"].is_u64(), "{row}");
    let row = fx.chat_row(&bob, direct).await;
    assert_eq!(row["name"], "alice");
    assert_eq!(row["peer"], json!({"id": alice.id, "name": "alice"}));
    assert_eq!(fx.chat_ids(&carol).await, Vec::<u64>::new());

    // A message: the last message, unread for bob, `sent` for alice.
    let mut alice_ws = fx.ws(&alice).await;
    let long = format!("hi bob {}", "x".repeat(200));
    let seq = send(&mut alice_ws, direct, "a-1", &long).await;
    assert_eq!(seq, 1);
    let row = fx.chat_row(&alice, direct).await;
    let last = &row["last_message"];
    assert_eq!(last["seq"], 1);
    assert_eq!(last["sender"], alice.id);
    let preview = last["preview"].as_str().expect("preview");
    assert!(
        long.starts_with(preview) && preview.chars().count() == 100,
        "a 100-character preview: {preview:?}"
    );
    assert_eq!(row["last_activity_at"], last["sent_at"]);
    assert_eq!(row["unread"], 0, "your own message is not unread: {row}");
    assert_eq!(row["last_message_status"], "sent");
    let row = fx.chat_row(&bob, direct).await;
    assert_eq!(row["unread"], 1, "{row}");
    assert_eq!(row["last_message_status"], Value::Null, "not bob's message");
    assert_eq!(row["last_message"]["sender"], alice.id);

    // bob's device gets it, then he reads it.
    let mut bob_ws = fx.ws(&bob).await;
    bob_ws
        .send(json!({"type": "ack", "conv_id": direct, "seq": 1, "kind": "delivered"}))
        .await;
    wait::until("status delivered", WAIT, || async {
        let row = fx.chat_row(&alice, direct).await;
        (row["last_message_status"] == "delivered").then_some(())
    })
    .await;
    assert_eq!(fx.chat_row(&bob, direct).await["unread"], 1);
    bob_ws
        .send(json!({"type": "ack", "conv_id": direct, "seq": 1, "kind": "seen"}))
        .await;
    wait::until("status seen", WAIT, || async {
        let row = fx.chat_row(&alice, direct).await;
        (row["last_message_status"] == "seen").then_some(())
    })
    .await;
    assert_eq!(fx.chat_row(&bob, direct).await["unread"], 0);

    // A group joins the list; most recently active first.
    let group = fx.api.group(&bob, "climbing", &[&alice]).await;
    let row = fx.chat_row(&alice, group).await;
    assert_eq!(row["kind"], "group");
    assert_eq!(row["name"], "climbing");
    assert_eq!(row["peer"], Value::Null);
    assert_eq!(row["last_message"], Value::Null);
    send(&mut bob_ws, group, "b-1", "see you at 10").await;
    send(&mut bob_ws, group, "b-2", "bring rope").await;
    let row = fx.chat_row(&alice, group).await;
    assert_eq!(row["unread"], 2);
    assert_eq!(row["last_message"]["preview"], "bring rope");
    assert_eq!(row["last_message"]["seq"], 2);
    assert_eq!(row["last_message_status"], Value::Null);
    let row = fx.chat_row(&bob, group).await;
    assert_eq!(row["last_message_status"], "sent", "{row}");

    let assert_order = |body: Value, first: u64| {
        let chats = body["chats"].as_array().expect("chats").clone();
        let times: Vec<u64> = chats
            .iter()
            .map(|c| c["last_activity_at"].as_u64().expect("time"))
            .collect();
        assert!(
            times.windows(2).all(|w| w[0] >= w[1]),
            "not newest first: {body}"
        );
        if times[0] > times[1] {
            assert_eq!(chats[0]["conv_id"], first, "{body}");
        }
    };
    assert_order(fx.get_ok("/api/chats", &alice).await, group);
    send(&mut alice_ws, direct, "a-2", "ok!").await;
    assert_order(fx.get_ok("/api/chats", &alice).await, direct);
    assert_order(fx.get_ok("/api/chats", &bob).await, direct);
    let mut both = fx.chat_ids(&alice).await;
    both.sort_unstable();
    let mut want = vec![direct, group];
    want.sort_unstable();
    assert_eq!(both, want);
    // carol sees none of it.
    assert_eq!(fx.chat_ids(&carol).await, Vec::<u64>::new());
}

#[tokio::test]
async fn groups_create_show_edit_delete() {
    let fx = Fixture::start().await;
    let alice = fx.api.user("alice").await;
    let bob = fx.api.user("bob").await;
    let carol = fx.api.user("carol").await;
    let direct = fx.api.direct(&alice, &bob).await;

    // Create: 201, the caller is admin, `members` are plain members.
    let before = now_ms();
    let (status, conv) = fx
        .post(
            "/api/groups",
            &alice,
            Some(json!({"name": "climbing", "description": "Saturday sessions", "members": [bob.id]})),
        )
        .await;
    assert_eq!(status, 201, "{conv}");
    let group = conv["id"].as_u64().expect("id");
    assert_eq!(conv["kind"], "group");
    assert_eq!(conv["name"], "climbing");
    assert_eq!(conv["description"], "Saturday sessions");
    assert_eq!(conv["created_by"], alice.id);
    assert_eq!(conv["updated_by"], alice.id);
    let created_at = conv["created_at"].as_u64().expect("created_at");
    assert!(created_at + 1000 >= before && created_at <= now_ms() + 1000);
    let (status, solo) = fx
        .post("/api/groups", &carol, Some(json!({"name": "solo"})))
        .await;
    assert_eq!(status, 201, "description and members are optional: {solo}");
    assert_eq!(solo["description"], "");
    let solo = solo["id"].as_u64().expect("id");
    assert_eq!(
        fx.members(solo, &carol).await,
        vec![(carol.id, "admin".to_owned())]
    );

    // Show: the conversation and its members.
    let detail = fx
        .get_ok(&format!("/api/conversations/{group}"), &bob)
        .await;
    assert_eq!(detail["conversation"], conv);
    let members = detail["members"].as_array().expect("members");
    assert_eq!(members.len(), 2, "{detail}");
    assert_eq!(members[0]["user_id"], alice.id);
    assert_eq!(members[0]["role"], "admin");
    assert_eq!(members[0]["added_by"], alice.id);
    assert_eq!(members[1]["user_id"], bob.id);
    assert_eq!(members[1]["role"], "member");
    assert_eq!(members[1]["added_by"], alice.id);
    assert!(members[1]["added_at"].is_u64());
    let detail = fx
        .get_ok(&format!("/api/conversations/{direct}"), &bob)
        .await;
    assert_eq!(detail["conversation"]["kind"], "direct");
    assert_eq!(detail["members"].as_array().map(Vec::len), Some(2));

    // Refused creations change nothing.
    for (what, body, status, code) in [
        ("an empty name", json!({"name": ""}), 400, "bad_request"),
        ("a blank name", json!({"name": "   "}), 400, "bad_request"),
        (
            "a control character in the name",
            json!({"name": "a\u{0}b"}),
            400,
            "bad_request",
        ),
        (
            "a 101-character name",
            json!({"name": "n".repeat(101)}),
            400,
            "bad_request",
        ),
        (
            "a 1001-character description",
            json!({"name": "x", "description": "d".repeat(1001)}),
            400,
            "bad_request",
        ),
        (
            "an unknown member",
            json!({"name": "x", "members": [bob.id, UNKNOWN]}),
            404,
            "not_found",
        ),
        ("no name", json!({"description": "x"}), 400, "bad_request"),
        (
            "a mistyped member",
            json!({"name": "x", "members": ["bob"]}),
            400,
            "bad_request",
        ),
        ("a mistyped name", json!({"name": 5}), 400, "bad_request"),
    ] {
        let got = fx.post("/api/groups", &alice, Some(body)).await;
        assert_error(&format!("create a group with {what}"), &got, status, code);
    }
    fx.bad_bodies("POST", "/api/groups", &alice).await;
    let mut ids = fx.chat_ids(&alice).await;
    ids.sort_unstable();
    assert_eq!(ids, {
        let mut want = vec![direct, group];
        want.sort_unstable();
        want
    });
    assert_eq!(fx.chat_ids(&bob).await.len(), 2);

    // Show, refused.
    let got = fx.get(&format!("/api/conversations/{group}"), &carol).await;
    assert_error("a non-member reading a group", &got, 403, "forbidden");
    let got = fx
        .get(&format!("/api/conversations/{direct}"), &carol)
        .await;
    assert_error("a non-member reading a direct chat", &got, 403, "forbidden");
    let got = fx
        .get(&format!("/api/conversations/{UNKNOWN}"), &alice)
        .await;
    assert_error("an unknown conversation", &got, 404, "not_found");
    let got = fx.get("/api/conversations/abc", &alice).await;
    assert_error("a malformed conversation id", &got, 400, "bad_request");

    // Edit: any member; members' sessions hear of it.
    let alice_ws = fx.ws(&alice).await;
    let (status, edited) = fx
        .patch(
            &format!("/api/groups/{group}"),
            &bob,
            json!({"description": "Sunday sessions now"}),
        )
        .await;
    assert_eq!(status, 200, "{edited}");
    assert_eq!(edited["name"], "climbing");
    assert_eq!(edited["description"], "Sunday sessions now");
    assert_eq!(edited["updated_by"], bob.id);
    assert_eq!(edited["created_by"], alice.id);
    assert_eq!(edited["created_at"], conv["created_at"]);
    assert!(edited["updated_at"].as_u64() >= conv["updated_at"].as_u64());
    let frame = alice_ws
        .wait_for("group_updated", WAIT, |f| f["type"] == "group_updated")
        .await;
    assert_eq!(frame["conv_id"], group);
    assert_eq!(frame["description"], "Sunday sessions now");
    assert_eq!(frame["deleted"], false);
    let (status, renamed) = fx
        .patch(
            &format!("/api/groups/{group}"),
            &alice,
            json!({"name": "bouldering"}),
        )
        .await;
    assert_eq!(status, 200, "{renamed}");
    assert_eq!(renamed["name"], "bouldering");
    assert_eq!(renamed["description"], "Sunday sessions now");
    assert_eq!(fx.chat_row(&bob, group).await["name"], "bouldering");

    // Refused edits change nothing.
    let path = format!("/api/groups/{group}");
    for (what, user, path, body, status, code) in [
        (
            "nothing to change",
            &alice,
            path.clone(),
            json!({}),
            400,
            "bad_request",
        ),
        (
            "only nulls",
            &alice,
            path.clone(),
            json!({"name": null, "description": null}),
            400,
            "bad_request",
        ),
        (
            "an empty name",
            &alice,
            path.clone(),
            json!({"name": ""}),
            400,
            "bad_request",
        ),
        (
            "a long name",
            &alice,
            path.clone(),
            json!({"name": "n".repeat(101)}),
            400,
            "bad_request",
        ),
        (
            "a long description",
            &bob,
            path.clone(),
            json!({"description": "d".repeat(1001)}),
            400,
            "bad_request",
        ),
        (
            "a mistyped name",
            &alice,
            path.clone(),
            json!({"name": 1}),
            400,
            "bad_request",
        ),
        (
            "a non-member",
            &carol,
            path.clone(),
            json!({"name": "mine"}),
            403,
            "forbidden",
        ),
        (
            "a direct chat",
            &alice,
            format!("/api/groups/{direct}"),
            json!({"name": "dm"}),
            400,
            "bad_request",
        ),
        (
            "an unknown group",
            &alice,
            format!("/api/groups/{UNKNOWN}"),
            json!({"name": "x"}),
            404,
            "not_found",
        ),
        (
            "a malformed id",
            &alice,
            "/api/groups/x".to_owned(),
            json!({"name": "x"}),
            400,
            "bad_request",
        ),
    ] {
        let got = fx.patch(&path, user, body).await;
        assert_error(&format!("edit with {what}"), &got, status, code);
    }
    fx.bad_bodies("PATCH", &path, &alice).await;
    let detail = fx
        .get_ok(&format!("/api/conversations/{group}"), &alice)
        .await;
    assert_eq!(
        detail["conversation"], renamed,
        "a refused edit changed the group"
    );
    let detail = fx
        .get_ok(&format!("/api/conversations/{direct}"), &alice)
        .await;
    assert_eq!(detail["conversation"]["name"], "");

    // Delete: admins only.
    let bob_ws = fx.ws(&bob).await;
    for (what, user, path, status, code) in [
        (
            "a plain member",
            &bob,
            format!("/api/groups/{group}"),
            403,
            "forbidden",
        ),
        (
            "a non-member",
            &carol,
            format!("/api/groups/{group}"),
            403,
            "forbidden",
        ),
        (
            "a direct chat",
            &alice,
            format!("/api/groups/{direct}"),
            400,
            "bad_request",
        ),
        (
            "an unknown group",
            &alice,
            format!("/api/groups/{UNKNOWN}"),
            404,
            "not_found",
        ),
        (
            "a malformed id",
            &alice,
            "/api/groups/-3".to_owned(),
            400,
            "bad_request",
        ),
    ] {
        let got = fx.delete(&path, user).await;
        assert_error(&format!("delete by {what}"), &got, status, code);
    }
    let detail = fx
        .get_ok(&format!("/api/conversations/{group}"), &bob)
        .await;
    assert_eq!(detail["conversation"], renamed, "survives refused deletes");
    fx.get_ok(&format!("/api/conversations/{direct}"), &bob)
        .await;

    let (status, body) = fx.delete(&format!("/api/groups/{group}"), &alice).await;
    assert_eq!((status, body), (204, Value::Null));
    let frame = bob_ws
        .wait_for("group deleted", WAIT, |f| {
            f["type"] == "group_updated" && f["deleted"] == true
        })
        .await;
    assert_eq!(frame["conv_id"], group);

    // Gone for everyone, every operation 404; the rest untouched.
    assert_eq!(fx.chat_ids(&alice).await, vec![direct]);
    assert_eq!(fx.chat_ids(&bob).await, vec![direct]);
    for user in [&alice, &bob] {
        for path in [
            format!("/api/conversations/{group}"),
            format!("/api/conversations/{group}/messages"),
            format!("/api/conversations/{group}/receipts"),
            format!("/api/groups/{group}/history"),
        ] {
            let got = fx.get(&path, user).await;
            assert_error(&format!("GET {path} after delete"), &got, 404, "not_found");
        }
    }
    let got = fx
        .patch(
            &format!("/api/groups/{group}"),
            &alice,
            json!({"name": "back"}),
        )
        .await;
    assert_error("edit a deleted group", &got, 404, "not_found");
    let got = fx.delete(&format!("/api/groups/{group}"), &alice).await;
    assert_error("delete twice", &got, 404, "not_found");
    let got = fx
        .get(
            &format!("/api/conversations/{group}/messages/1/status"),
            &alice,
        )
        .await;
    assert_error("message status in a deleted group", &got, 404, "not_found");
    let mut bob_ws = bob_ws;
    bob_ws
        .send(json!({"type": "send", "conv_id": group, "client_msg_id": "late", "body": "hello?"}))
        .await;
    let frame = bob_ws
        .wait_for("refusal of a send to a deleted group", WAIT, |f| {
            (f["type"] == "error" || f["type"] == "sent") && f_ref(f) == "late"
        })
        .await;
    assert_eq!(frame["type"], "error", "{frame}");
    assert_eq!(frame["code"], "not_found", "{frame}");
    let got = fx
        .post(
            &format!("/api/groups/{group}/members"),
            &alice,
            Some(json!({"user_id": carol.id})),
        )
        .await;
    assert_error("add to a deleted group", &got, 404, "not_found");
    let got = fx
        .post(&format!("/api/groups/{group}/leave"), &bob, None)
        .await;
    assert_error("leave a deleted group", &got, 404, "not_found");
    assert_eq!(fx.chat_ids(&carol).await, vec![solo]);
}

#[tokio::test]
async fn group_membership_and_history() {
    let fx = Fixture::start().await;
    let alice = fx.api.user("alice").await;
    let bob = fx.api.user("bob").await;
    let carol = fx.api.user("carol").await;
    let dave = fx.api.user("dave").await;
    let eve = fx.api.user("eve").await;
    let group = fx.api.group(&alice, "climbing", &[&bob]).await;
    let direct = fx.api.direct(&alice, &bob).await;
    let bob_ws = fx.ws(&bob).await;

    // Add: any member may; members' sessions hear of it.
    let members_path = format!("/api/groups/{group}/members");
    let (status, member) = fx
        .post(&members_path, &alice, Some(json!({"user_id": carol.id})))
        .await;
    assert_eq!(status, 201, "{member}");
    assert_eq!(member["user_id"], carol.id);
    assert_eq!(member["role"], "member");
    assert_eq!(member["status"], "active");
    assert_eq!(member["added_by"], alice.id);
    assert!(member["added_at"].is_u64());
    let frame = bob_ws
        .wait_for("member_joined carol", WAIT, |f| {
            f["type"] == "member_joined" && f["user_id"] == carol.id
        })
        .await;
    assert_eq!(
        frame,
        json!({"type": "member_joined", "conv_id": group, "user_id": carol.id, "by": alice.id})
    );
    let (status, member) = fx
        .post(&members_path, &bob, Some(json!({"user_id": dave.id})))
        .await;
    assert_eq!(status, 201, "a plain member adds: {member}");
    assert_eq!(member["added_by"], bob.id);
    fx.get_ok(&format!("/api/conversations/{group}"), &dave)
        .await;
    assert!(fx.chat_ids(&dave).await.contains(&group));

    let four = vec![
        (alice.id, "admin".to_owned()),
        (bob.id, "member".to_owned()),
        (carol.id, "member".to_owned()),
        (dave.id, "member".to_owned()),
    ];
    assert_eq!(fx.members(group, &alice).await, four);

    // The creator and repeats in `members` are not added twice (nor is the
    // creator demoted).
    let (status, body) = fx
        .post(
            "/api/groups",
            &eve,
            Some(json!({"name": "dupes", "members": [eve.id, dave.id, dave.id]})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let dupes = body["id"].as_u64().expect("id");
    assert_eq!(
        fx.members(dupes, &eve).await,
        vec![(dave.id, "member".to_owned()), (eve.id, "admin".to_owned())]
    );
    let history = fx
        .get_ok(&format!("/api/groups/{dupes}/history"), &dave)
        .await;
    assert_eq!(
        history["events"].as_array().map(Vec::len),
        Some(2),
        "{history}"
    );

    // Refused adds change nothing.
    for (what, user, path, body, status, code) in [
        (
            "by a non-member",
            &eve,
            members_path.clone(),
            json!({"user_id": eve.id}),
            403,
            "forbidden",
        ),
        (
            "of a member",
            &alice,
            members_path.clone(),
            json!({"user_id": carol.id}),
            409,
            "conflict",
        ),
        (
            "of the admin",
            &bob,
            members_path.clone(),
            json!({"user_id": alice.id}),
            409,
            "conflict",
        ),
        (
            "of an unknown user",
            &alice,
            members_path.clone(),
            json!({"user_id": UNKNOWN}),
            404,
            "not_found",
        ),
        (
            "to an unknown group",
            &alice,
            format!("/api/groups/{UNKNOWN}/members"),
            json!({"user_id": eve.id}),
            404,
            "not_found",
        ),
        (
            "to a direct chat",
            &alice,
            format!("/api/groups/{direct}/members"),
            json!({"user_id": eve.id}),
            400,
            "bad_request",
        ),
        (
            "without user_id",
            &alice,
            members_path.clone(),
            json!({}),
            400,
            "bad_request",
        ),
        (
            "with a name",
            &alice,
            members_path.clone(),
            json!({"user_id": "eve"}),
            400,
            "bad_request",
        ),
        (
            "with a negative id",
            &alice,
            members_path.clone(),
            json!({"user_id": -1}),
            400,
            "bad_request",
        ),
    ] {
        let got = fx.post(&path, user, Some(body)).await;
        assert_error(&format!("add {what}"), &got, status, code);
    }
    fx.bad_bodies("POST", &members_path, &alice).await;
    assert_eq!(fx.members(group, &alice).await, four);
    assert!(!fx.chat_ids(&eve).await.contains(&group));
    assert_eq!(
        fx.get_ok(&format!("/api/conversations/{direct}"), &alice)
            .await["members"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );

    // Remove: admins only, not yourself, only members.
    let remove = |user_id: u64| format!("/api/groups/{group}/members/{user_id}");
    for (what, user, path, status, code) in [
        (
            "by a plain member",
            &bob,
            remove(carol.id),
            403,
            "forbidden",
        ),
        (
            "of the admin by a member",
            &bob,
            remove(alice.id),
            403,
            "forbidden",
        ),
        ("by a non-member", &eve, remove(carol.id), 403, "forbidden"),
        ("of yourself", &alice, remove(alice.id), 400, "bad_request"),
        ("of a non-member", &alice, remove(eve.id), 403, "forbidden"),
        (
            "of an unknown user",
            &alice,
            remove(UNKNOWN),
            403,
            "forbidden",
        ),
        (
            "from an unknown group",
            &alice,
            format!("/api/groups/{UNKNOWN}/members/{}", bob.id),
            404,
            "not_found",
        ),
        (
            "from a direct chat",
            &alice,
            format!("/api/groups/{direct}/members/{}", bob.id),
            400,
            "bad_request",
        ),
        (
            "with a malformed id",
            &alice,
            format!("/api/groups/{group}/members/bob"),
            400,
            "bad_request",
        ),
    ] {
        let got = fx.delete(&path, user).await;
        assert_error(&format!("remove {what}"), &got, status, code);
    }
    assert_eq!(fx.members(group, &alice).await, four);

    let (status, body) = fx.delete(&remove(dave.id), &alice).await;
    assert_eq!((status, body), (204, Value::Null));
    bob_ws
        .wait_for("member_left dave", WAIT, |f| {
            f["type"] == "member_left" && f["user_id"] == dave.id && f["by"] == alice.id
        })
        .await;
    let got = fx.get(&format!("/api/conversations/{group}"), &dave).await;
    assert_error("a removed member reading", &got, 403, "forbidden");
    assert!(!fx.chat_ids(&dave).await.contains(&group));
    let got = fx.delete(&remove(dave.id), &alice).await;
    assert_error("removing twice", &got, 403, "forbidden");
    let got = fx
        .post(&members_path, &dave, Some(json!({"user_id": eve.id})))
        .await;
    assert_error("a removed member adding", &got, 403, "forbidden");

    // Leave: anyone; not twice, not a direct chat.
    for (what, user, path, status, code) in [
        (
            "a non-member",
            &eve,
            format!("/api/groups/{group}/leave"),
            403,
            "forbidden",
        ),
        (
            "a removed member",
            &dave,
            format!("/api/groups/{group}/leave"),
            403,
            "forbidden",
        ),
        (
            "a direct chat",
            &alice,
            format!("/api/groups/{direct}/leave"),
            400,
            "bad_request",
        ),
        (
            "an unknown group",
            &alice,
            format!("/api/groups/{UNKNOWN}/leave"),
            404,
            "not_found",
        ),
    ] {
        let got = fx.post(&path, user, None).await;
        assert_error(&format!("leave by {what}"), &got, status, code);
    }
    let three = vec![
        (alice.id, "admin".to_owned()),
        (bob.id, "member".to_owned()),
        (carol.id, "member".to_owned()),
    ];
    assert_eq!(fx.members(group, &bob).await, three);
    fx.get_ok(&format!("/api/conversations/{direct}"), &alice)
        .await;

    let (status, _) = fx
        .post(&format!("/api/groups/{group}/leave"), &carol, None)
        .await;
    assert_eq!(status, 204);
    bob_ws
        .wait_for("member_left carol", WAIT, |f| {
            f["type"] == "member_left" && f["user_id"] == carol.id && f["by"] == carol.id
        })
        .await;
    let got = fx
        .post(&format!("/api/groups/{group}/leave"), &carol, None)
        .await;
    assert_error("leaving twice", &got, 403, "forbidden");

    // The last admin leaves: the longest-standing member becomes admin.
    let (status, _) = fx
        .post(&format!("/api/groups/{group}/leave"), &alice, None)
        .await;
    assert_eq!(status, 204);
    assert_eq!(
        fx.members(group, &bob).await,
        vec![(bob.id, "admin".to_owned())]
    );
    assert!(!fx.chat_ids(&alice).await.contains(&group));
    // A former member may be added back.
    let (status, body) = fx
        .post(&members_path, &bob, Some(json!({"user_id": carol.id})))
        .await;
    assert_eq!(status, 201, "{body}");

    // History: every change, oldest first, members only.
    let history = fx
        .get_ok(&format!("/api/groups/{group}/history"), &bob)
        .await;
    let events: Vec<(u64, u64, String, u64)> = history["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            assert!(e["at"].is_u64(), "{e}");
            (
                e["version"].as_u64().expect("version"),
                e["user_id"].as_u64().expect("user_id"),
                e["action"].as_str().expect("action").to_owned(),
                e["by"].as_u64().expect("by"),
            )
        })
        .collect();
    let want: Vec<(u64, u64, String, u64)> = [
        (alice.id, "added", alice.id),
        (bob.id, "added", alice.id),
        (carol.id, "added", alice.id),
        (dave.id, "added", bob.id),
        (dave.id, "removed", alice.id),
        (carol.id, "left", carol.id),
        (alice.id, "left", alice.id),
        (bob.id, "promoted", alice.id),
        (carol.id, "added", bob.id),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (u, a, by))| (i as u64 + 1, u, a.to_owned(), by))
    .collect();
    assert_eq!(events, want, "{history}");
    let times: Vec<u64> = history["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["at"].as_u64().expect("at"))
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{history}");
    fx.get_ok(&format!("/api/groups/{group}/history"), &carol)
        .await;
    for (what, user, path, status, code) in [
        (
            "a former member",
            &alice,
            format!("/api/groups/{group}/history"),
            403,
            "forbidden",
        ),
        (
            "a removed member",
            &dave,
            format!("/api/groups/{group}/history"),
            403,
            "forbidden",
        ),
        (
            "a non-member",
            &eve,
            format!("/api/groups/{group}/history"),
            403,
            "forbidden",
        ),
        (
            "an unknown group",
            &bob,
            format!("/api/groups/{UNKNOWN}/history"),
            404,
            "not_found",
        ),
        (
            "a malformed id",
            &bob,
            "/api/groups/1e3/history".to_owned(),
            400,
            "bad_request",
        ),
    ] {
        let got = fx.get(&path, user).await;
        assert_error(&format!("history for {what}"), &got, status, code);
    }
}

#[tokio::test]
async fn message_history_status_and_receipts() {
    let fx = Fixture::start().await;
    let alice = fx.api.user("alice").await;
    let bob = fx.api.user("bob").await;
    let carol = fx.api.user("carol").await;
    let group = fx.api.group(&alice, "climbing", &[&bob]).await;
    let direct = fx.api.direct(&alice, &bob).await;

    // bob is offline while alice writes: nothing is on his devices yet.
    let mut alice_ws = fx.ws(&alice).await;
    for i in 1..=5 {
        let seq = send(
            &mut alice_ws,
            group,
            &format!("g-{i}"),
            &format!("message {i}"),
        )
        .await;
        assert_eq!(seq, i, "seqs count from 1");
    }
    let status_path = |seq: u64| format!("/api/conversations/{group}/messages/{seq}/status");
    let body = fx.get_ok(&status_path(5), &alice).await;
    assert_eq!(
        body,
        json!({"seq": 5, "members": [{"user_id": bob.id, "status": "sent"}]})
    );
    let mut bob_ws = fx.ws(&bob).await;
    assert_eq!(send(&mut bob_ws, direct, "d-1", "hello alice").await, 1);
    assert_eq!(send(&mut alice_ws, direct, "d-2", "hello bob").await, 2);

    // History: newest first, paged back with before_seq.
    let base = format!("/api/conversations/{group}/messages");
    let page = fx.get_ok(&format!("{base}?limit=2"), &bob).await;
    let messages = page["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 2, "{page}");
    let m = &messages[0];
    assert_eq!(m["conv_id"], group);
    assert_eq!(m["seq"], 5);
    assert_eq!(m["sender"], alice.id);
    assert_eq!(m["client_msg_id"], "g-5");
    assert_eq!(m["body"], "message 5");
    assert!(
        m["sent_at"].as_u64() >= messages[1]["sent_at"].as_u64(),
        "{page}"
    );
    assert_eq!(fx.seqs(&format!("{base}?limit=2"), &bob).await, [5, 4]);
    assert_eq!(
        fx.seqs(&format!("{base}?before_seq=4&limit=2"), &bob).await,
        [3, 2]
    );
    assert_eq!(
        fx.seqs(&format!("{base}?before_seq=2&limit=2"), &bob).await,
        [1]
    );
    assert_eq!(
        fx.seqs(&format!("{base}?before_seq=1&limit=2"), &bob).await,
        Vec::<u64>::new()
    );
    assert_eq!(fx.seqs(&base, &alice).await, [5, 4, 3, 2, 1]);
    assert_eq!(
        fx.seqs(&format!("{base}?before_seq=100"), &alice).await,
        [5, 4, 3, 2, 1]
    );
    assert_eq!(
        fx.seqs(&format!("{base}?limit=1000"), &alice).await,
        [5, 4, 3, 2, 1]
    );
    let direct_page = fx
        .get_ok(&format!("/api/conversations/{direct}/messages"), &alice)
        .await;
    let bodies: Vec<(u64, &str, u64)> = direct_page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| {
            (
                m["seq"].as_u64().expect("seq"),
                m["body"].as_str().expect("body"),
                m["sender"].as_u64().expect("sender"),
            )
        })
        .collect();
    assert_eq!(
        bodies,
        [(2, "hello bob", alice.id), (1, "hello alice", bob.id)]
    );

    // Reading as a non-member, unknown conversations, bad parameters.
    for (what, user, path, status, code) in [
        ("a non-member", &carol, base.clone(), 403, "forbidden"),
        (
            "a non-member, direct",
            &carol,
            format!("/api/conversations/{direct}/messages"),
            403,
            "forbidden",
        ),
        (
            "an unknown conversation",
            &alice,
            format!("/api/conversations/{UNKNOWN}/messages"),
            404,
            "not_found",
        ),
        (
            "a malformed id",
            &alice,
            "/api/conversations/x/messages".to_owned(),
            400,
            "bad_request",
        ),
        (
            "a malformed limit",
            &alice,
            format!("{base}?limit=ten"),
            400,
            "bad_request",
        ),
        (
            "a negative limit",
            &alice,
            format!("{base}?limit=-1"),
            400,
            "bad_request",
        ),
        (
            "a malformed before_seq",
            &alice,
            format!("{base}?before_seq=last"),
            400,
            "bad_request",
        ),
        (
            "a negative before_seq",
            &alice,
            format!("{base}?before_seq=-5"),
            400,
            "bad_request",
        ),
    ] {
        let got = fx.get(&path, user).await;
        assert_error(&format!("history by {what}"), &got, status, code);
    }

    // Posting as a non-member is refused and stores nothing.
    let mut carol_ws = fx.ws(&carol).await;
    carol_ws
        .send(
            json!({"type": "send", "conv_id": group, "client_msg_id": "c-1", "body": "let me in"}),
        )
        .await;
    let frame = carol_ws
        .wait_for("carol's refusal", WAIT, |f| {
            f["type"] == "error" || f["type"] == "sent"
        })
        .await;
    assert_eq!(frame["type"], "error", "{frame}");
    assert_eq!(frame["code"], "forbidden", "{frame}");
    assert_eq!(frame["ref"], "c-1", "{frame}");
    assert_eq!(fx.seqs(&base, &alice).await, [5, 4, 3, 2, 1]);

    // Message status: `sent` until bob's device acks, then delivered, seen.
    assert_eq!(
        fx.get_ok(&status_path(5), &alice).await["members"][0]["status"],
        "sent"
    );
    bob_ws
        .send(json!({"type": "ack", "conv_id": group, "seq": 5, "kind": "delivered"}))
        .await;
    wait::until("seq 5 delivered to bob", WAIT, || async {
        let body = fx.get_ok(&status_path(5), &alice).await;
        (body["members"][0]["status"] == "delivered").then_some(())
    })
    .await;
    bob_ws
        .send(json!({"type": "ack", "conv_id": group, "seq": 3, "kind": "seen"}))
        .await;
    wait::until("seq 3 seen by bob", WAIT, || async {
        let body = fx.get_ok(&status_path(3), &alice).await;
        (body["members"][0]["status"] == "seen").then_some(())
    })
    .await;
    assert_eq!(
        fx.get_ok(&status_path(5), &alice).await["members"][0]["status"],
        "delivered"
    );
    assert_eq!(
        fx.get_ok(&status_path(4), &alice).await["members"][0]["status"],
        "delivered"
    );
    // The sender hears of the receipts too.
    alice_ws
        .wait_for("bob's receipt", WAIT, |f| {
            f["type"] == "receipt" && f["user_id"] == bob.id && f["seen_seq"] == 3
        })
        .await;
    // bob sees alice's status of his message.
    let body = fx
        .get_ok(
            &format!("/api/conversations/{group}/messages/2/status"),
            &bob,
        )
        .await;
    assert_eq!(body["members"].as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(body["members"][0]["user_id"], alice.id);

    for (what, user, path, status, code) in [
        ("a non-member", &carol, status_path(5), 403, "forbidden"),
        (
            "an unknown message",
            &alice,
            status_path(6),
            404,
            "not_found",
        ),
        ("message 0", &alice, status_path(0), 404, "not_found"),
        (
            "an unknown conversation",
            &alice,
            format!("/api/conversations/{UNKNOWN}/messages/1/status"),
            404,
            "not_found",
        ),
        (
            "a malformed seq",
            &alice,
            format!("/api/conversations/{group}/messages/x/status"),
            400,
            "bad_request",
        ),
    ] {
        let got = fx.get(&path, user).await;
        assert_error(&format!("status for {what}"), &got, status, code);
    }

    // An ack past the end is refused and moves nothing.
    bob_ws
        .send(
            json!({"type": "ack", "conv_id": group, "seq": 999, "kind": "seen", "ref": "too-far"}),
        )
        .await;
    let frame = bob_ws
        .wait_for("refusal of an ack past the end", WAIT, |f| {
            f["type"] == "error" && f["ref"] == "too-far"
        })
        .await;
    assert_eq!(frame["code"], "bad_request", "{frame}");

    // Receipts: every member's watermarks, in user id order.
    let receipts_path = format!("/api/conversations/{group}/receipts");
    let body = fx.get_ok(&receipts_path, &bob).await;
    let receipts = body["receipts"].as_array().expect("receipts");
    assert_eq!(receipts.len(), 2, "{body}");
    assert_eq!(receipts[0]["user_id"], alice.id);
    assert_eq!(receipts[1]["user_id"], bob.id);
    let bob_r = &receipts[1];
    assert_eq!(bob_r["delivered_seq"], 5, "{body}");
    assert_eq!(bob_r["seen_seq"], 3, "{body}");
    assert!(
        bob_r["delivered_at"].is_u64() && bob_r["seen_at"].is_u64(),
        "{body}"
    );
    for r in receipts {
        for key in [
            "user_id",
            "delivered_seq",
            "delivered_at",
            "seen_seq",
            "seen_at",
        ] {
            assert!(r.get(key).is_some(), "{key} missing: {r}");
        }
    }
    let body = fx
        .get_ok(&format!("/api/conversations/{direct}/receipts"), &alice)
        .await;
    assert_eq!(body["receipts"].as_array().map(Vec::len), Some(2), "{body}");
    for (what, user, path, status, code) in [
        (
            "a non-member",
            &carol,
            receipts_path.clone(),
            403,
            "forbidden",
        ),
        (
            "an unknown conversation",
            &alice,
            format!("/api/conversations/{UNKNOWN}/receipts"),
            404,
            "not_found",
        ),
        (
            "a malformed id",
            &alice,
            "/api/conversations/%20/receipts".to_owned(),
            400,
            "bad_request",
        ),
    ] {
        let got = fx.get(&path, user).await;
        assert_error(&format!("receipts for {what}"), &got, status, code);
    }

    // After bob leaves, he can no longer read; alice's status no longer
    // lists him.
    let (status, _) = fx
        .post(&format!("/api/groups/{group}/leave"), &bob, None)
        .await;
    assert_eq!(status, 204);
    let got = fx.get(&base, &bob).await;
    assert_error("a former member reading", &got, 403, "forbidden");
    let body = fx.get_ok(&status_path(5), &alice).await;
    assert_eq!(body, json!({"seq": 5, "members": []}));
}

#[tokio::test]
async fn push_subscriptions() {
    let fx = Fixture::start().await;
    let alice = fx.api.user("alice").await;
    let bob = fx.api.user("bob").await;
    let sub = |endpoint: &str| {
        json!({
            "endpoint": endpoint,
            "keys": {
                "p256dh": "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM",
                "auth": "tBHItJI5svbpez7KI4CCXg",
            }
        })
    };
    assert!(fx.push_ids(&alice).await.is_empty());

    // Add: 201 without the keys; the same endpoint again is the same id.
    let endpoint = "https://push.example.com/send/abc123";
    let (status, body) = fx
        .post("/api/push-subscriptions", &alice, Some(sub(endpoint)))
        .await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().expect("id").to_owned();
    assert!(!id.is_empty());
    assert_eq!(body["endpoint"], endpoint);
    assert!(body["created_at"].is_u64());
    assert_eq!(body["kind"], "webpush");
    assert_eq!(
        body.as_object().map(|o| o.len()),
        Some(4),
        "keys are not echoed: {body}"
    );
    let (status, again) = fx
        .post("/api/push-subscriptions", &alice, Some(sub(endpoint)))
        .await;
    assert_eq!(status, 201, "{again}");
    assert_eq!(again["id"], id.as_str());
    let list = fx.get_ok("/api/push-subscriptions", &alice).await;
    let subs = list["subscriptions"].as_array().expect("subscriptions");
    assert_eq!(subs.len(), 1, "{list}");
    assert_eq!(subs[0]["id"], id.as_str());
    assert_eq!(subs[0]["endpoint"], endpoint);
    assert!(
        subs[0].get("keys").is_none() && subs[0].get("auth").is_none(),
        "{list}"
    );
    let (status, second) = fx
        .post(
            "/api/push-subscriptions",
            &alice,
            Some(sub("https://push2.example.com/2")),
        )
        .await;
    assert_eq!(status, 201, "{second}");
    let second = second["id"].as_str().expect("id").to_owned();
    assert_ne!(second, id);
    let mut all = fx.push_ids(&alice).await;
    all.sort();
    let mut want = vec![id.clone(), second.clone()];
    want.sort();
    assert_eq!(all, want);
    assert!(fx.push_ids(&bob).await.is_empty(), "only the caller's");

    // Refused adds change nothing.
    let keys = |p: &str, a: &str| json!({"p256dh": p, "auth": a});
    for (what, body) in [
        (
            "an ftp endpoint",
            json!({"endpoint": "ftp://push.example.com/x", "keys": keys("k", "a")}),
        ),
        (
            "a non-URL endpoint",
            json!({"endpoint": "push.example.com", "keys": keys("k", "a")}),
        ),
        (
            "an empty endpoint",
            json!({"endpoint": "", "keys": keys("k", "a")}),
        ),
        (
            "a 2049-byte endpoint",
            json!({"endpoint": format!("https://p.example.com/{}", "e".repeat(2049)), "keys": keys("k", "a")}),
        ),
        (
            "an empty p256dh",
            json!({"endpoint": "https://p.example.com/3", "keys": keys("", "a")}),
        ),
        (
            "an empty auth",
            json!({"endpoint": "https://p.example.com/3", "keys": keys("k", "")}),
        ),
        (
            "a long p256dh",
            json!({"endpoint": "https://p.example.com/3", "keys": keys(&"k".repeat(257), "a")}),
        ),
        ("no keys", json!({"endpoint": "https://p.example.com/3"})),
        ("an http endpoint", sub("http://push.example.com/2")),
        ("a loopback endpoint", sub("https://127.0.0.1/2")),
        ("no endpoint", json!({"keys": keys("k", "a")})),
        (
            "keys missing auth",
            json!({"endpoint": "https://p.example.com/3", "keys": {"p256dh": "k"}}),
        ),
    ] {
        let got = fx.post("/api/push-subscriptions", &alice, Some(body)).await;
        assert_error(&format!("subscribe with {what}"), &got, 400, "bad_request");
    }
    fx.bad_bodies("POST", "/api/push-subscriptions", &alice)
        .await;
    let mut all = fx.push_ids(&alice).await;
    all.sort();
    assert_eq!(all, want, "refused adds changed the list");

    // At most 10 devices; refreshing one of them still works at the limit.
    for i in 3..=10 {
        let (status, body) = fx
            .post(
                "/api/push-subscriptions",
                &alice,
                Some(sub(&format!("https://push.example.com/device/{i}"))),
            )
            .await;
        assert_eq!(status, 201, "device {i}: {body}");
    }
    let ten = fx.push_ids(&alice).await;
    assert_eq!(ten.len(), 10);
    let got = fx
        .post(
            "/api/push-subscriptions",
            &alice,
            Some(sub("https://push.example.com/device/11")),
        )
        .await;
    assert_error("an 11th device", &got, 400, "bad_request");
    assert_eq!(fx.push_ids(&alice).await, ten);
    let (status, body) = fx
        .post("/api/push-subscriptions", &alice, Some(sub(endpoint)))
        .await;
    assert_eq!(status, 201, "refresh at the limit: {body}");
    assert_eq!(fx.push_ids(&alice).await.len(), 10);

    // Delete: only your own; 404 for unknown ids and twice.
    let path = format!("/api/push-subscriptions/{id}");
    let got = fx.delete(&path, &bob).await;
    assert_error(
        "deleting another user's subscription",
        &got,
        404,
        "not_found",
    );
    let got = fx
        .delete("/api/push-subscriptions/0000000000000000", &alice)
        .await;
    assert_error("deleting an unknown subscription", &got, 404, "not_found");
    assert_eq!(fx.push_ids(&alice).await, ten);
    let (status, body) = fx.delete(&path, &alice).await;
    assert_eq!((status, body), (204, Value::Null));
    let left = fx.push_ids(&alice).await;
    assert_eq!(left.len(), 9);
    assert!(!left.contains(&id));
    let got = fx.delete(&path, &alice).await;
    assert_error("deleting twice", &got, 404, "not_found");
    assert_eq!(fx.push_ids(&alice).await, left);
}

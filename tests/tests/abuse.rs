//! Abuse resistance (issue #10), end to end against a real `parley`
//! process: throttles answer the JSON 429 with `Retry-After` and change
//! nothing, the hashing queue sheds load with a 503, slow and excess
//! connections are cut without starving `/healthz` or live sessions,
//! look-alike names are refused, presence is for contacts only, and the
//! block list holds on every path.
//!
//! Each test starts its own one-node cluster with small limits in its
//! configuration file, so the limits are reached in a few requests.

use std::time::Duration;

use serde_json::{json, Value};
use tests::client::{Api, User, Ws};
use tests::node::TestCluster;
use tests::wait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long any awaited condition may take.
const WAIT: Duration = Duration::from_secs(15);

/// A one-node cluster with `[gateway]` settings `gateway`.
async fn node(gateway: &str) -> (TestCluster, Api) {
    let cluster = TestCluster::start_with_config(1, &format!("[gateway]\n{gateway}\n")).await;
    let api = Api::new(cluster.nodes[0].http);
    (cluster, api)
}

/// A request's status, `Retry-After` header and JSON body.
async fn request(
    cluster: &TestCluster,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Option<String>, Value) {
    let http = reqwest::Client::new();
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = http.request(method, cluster.nodes[0].url(path));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("HTTP request");
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = resp.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, retry_after, body)
}

/// Asserts the documented error shape with `code`.
fn assert_error(what: &str, got: &(u16, Option<String>, Value), status: u16, code: &str) {
    let (got_status, _, body) = got;
    assert_eq!(*got_status, status, "{what}: status (body {body})");
    assert_eq!(body["error"]["code"], code, "{what}: code in {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{what}: a message in {body}"
    );
}

/// Asserts a 429 `rate_limited` with a `Retry-After` of at least a second
/// and the same wait in milliseconds in the body.
fn assert_rate_limited(what: &str, got: &(u16, Option<String>, Value)) {
    assert_error(what, got, 429, "rate_limited");
    let secs: u64 = got
        .1
        .as_deref()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{what}: Retry-After missing"));
    assert!(secs >= 1, "{what}: Retry-After {secs}");
    assert!(
        got.2["error"]["retry_after_ms"].as_u64().is_some(),
        "{what}: retry_after_ms in {}",
        got.2
    );
}

fn login_body(name: &str, password: &str) -> Option<Value> {
    Some(json!({"name": name, "password": password}))
}

#[tokio::test]
async fn failed_logins_are_throttled_per_account_name() {
    let (cluster, api) = node(
        "login_failures_per_minute = 1\nlogin_failure_burst = 3\nlogins_per_address_per_minute = 0",
    )
    .await;
    api.user("alice").await;
    api.user("bob").await;
    for i in 0..3 {
        let got = request(
            &cluster,
            "POST",
            "/api/login",
            None,
            login_body("alice", "wrong password"),
        )
        .await;
        assert_error(&format!("wrong password {i}"), &got, 401, "unauthorized");
    }
    // The account is locked out for a while: even the right password (in
    // another case) gets the 429, and no token is issued.
    let got = request(
        &cluster,
        "POST",
        "/api/login",
        None,
        login_body("ALICE", "correct horse"),
    )
    .await;
    assert_rate_limited("alice after 3 failures", &got);
    assert!(got.2.get("token").is_none());
    // An unknown name is throttled exactly the same way.
    for i in 0..3 {
        let got = request(
            &cluster,
            "POST",
            "/api/login",
            None,
            login_body("nobody", "wrong password"),
        )
        .await;
        assert_error(&format!("unknown name {i}"), &got, 401, "unauthorized");
    }
    let got = request(
        &cluster,
        "POST",
        "/api/login",
        None,
        login_body("nobody", "wrong password"),
    )
    .await;
    assert_rate_limited("unknown name after 3 failures", &got);
    // Other accounts are unaffected.
    api.login("bob").await;
    let metrics = reqwest::get(cluster.nodes[0].url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("parley_throttled_requests_total ") && !l.ends_with(" 0")),
        "throttled requests counted:\n{metrics}"
    );
}

#[tokio::test]
async fn login_attempts_are_throttled_per_address() {
    let (cluster, api) = node("logins_per_address_per_minute = 1\nlogin_address_burst = 3").await;
    let alice = api.user("alice").await; // 1 attempt
    api.login("alice").await; // 2
    api.login("alice").await; // 3
    let got = request(
        &cluster,
        "POST",
        "/api/login",
        None,
        login_body("alice", "correct horse"),
    )
    .await;
    assert_rate_limited("fourth login from one address", &got);
    // Existing sessions keep working.
    let (status, _) = api
        .call("GET", "/api/chats", Some(&alice.token), None)
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn registrations_are_throttled_per_address() {
    let (cluster, api) = node(
        "registrations_per_address_per_minute = 1\nregistration_burst = 2\nlogins_per_address_per_minute = 0",
    )
    .await;
    let alice = api.user("alice").await;
    api.user("bob").await;
    let got = request(
        &cluster,
        "POST",
        "/api/register",
        None,
        login_body("carol", "correct horse"),
    )
    .await;
    assert_rate_limited("third registration", &got);
    // Nothing was created.
    let (status, body) = api
        .call("GET", "/api/users?q=carol", Some(&alice.token), None)
        .await;
    assert_eq!((status, body), (200, json!({"users": []})));
}

#[tokio::test]
async fn http_writes_are_throttled_per_user() {
    let (cluster, api) = node("writes_per_minute = 1\nwrite_burst = 2").await;
    let alice = api.user("alice").await;
    let bob = api.user("bob").await;
    api.group(&alice, "one", &[&bob]).await;
    api.group(&alice, "two", &[&bob]).await;
    let got = request(
        &cluster,
        "POST",
        "/api/groups",
        Some(&alice.token),
        Some(json!({"name": "three", "members": [bob.id]})),
    )
    .await;
    assert_rate_limited("third group", &got);
    let got = request(
        &cluster,
        "DELETE",
        "/api/push-subscriptions/1",
        Some(&alice.token),
        None,
    )
    .await;
    assert_rate_limited("a push subscription change after that", &got);
    // Nothing was created; bob has his own budget.
    let (_, chats) = api
        .call("GET", "/api/chats", Some(&alice.token), None)
        .await;
    assert_eq!(
        chats["chats"].as_array().map(Vec::len),
        Some(2),
        "chats: {chats}"
    );
    api.group(&bob, "bob's", &[&alice]).await;
}

#[tokio::test]
async fn a_full_hashing_queue_answers_503_and_registers_nothing() {
    let (cluster, api) = node(
        "hash_concurrency = 1\nhash_queue = 0\nregistrations_per_address_per_minute = 0\nlogins_per_address_per_minute = 0",
    )
    .await;
    let names: Vec<String> = (0..40).map(|i| format!("burst{i}")).collect();
    let results = futures_util::future::join_all(names.iter().map(|name| {
        request(
            &cluster,
            "POST",
            "/api/register",
            None,
            login_body(name, "correct horse"),
        )
    }))
    .await;
    let shed: Vec<_> = results.iter().filter(|r| r.0 == 503).collect();
    assert!(
        !shed.is_empty(),
        "40 concurrent hashes with one slot shed some"
    );
    for got in &shed {
        assert_error("shed registration", got, 503, "unavailable");
        assert_eq!(got.1.as_deref(), Some("1"), "Retry-After");
    }
    let viewer = api.user("viewer").await;
    for (name, got) in names.iter().zip(&results) {
        assert!(matches!(got.0, 201 | 503), "{name}: {got:?}");
        let (_, found) = api
            .call(
                "GET",
                &format!("/api/users?q={name}"),
                Some(&viewer.token),
                None,
            )
            .await;
        let exists = found["users"]
            .as_array()
            .is_some_and(|u| u.iter().any(|u| u["name"] == name.as_str()));
        assert_eq!(exists, got.0 == 201, "{name} registered iff 201");
    }
}

/// Reads until the server closes the connection; returns what it sent.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut out))
        .await
        .expect("the server closes the connection");
    out
}

#[tokio::test]
async fn slow_headers_and_bodies_are_cut_off() {
    let (cluster, _) = node("header_timeout_secs = 1\nbody_timeout_secs = 1").await;
    let addr = cluster.nodes[0].http;
    // Slowloris: headers that never end.
    let mut slow = TcpStream::connect(addr).await.expect("connect");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let got = read_to_close(&mut slow).await;
    assert!(
        !String::from_utf8_lossy(&got).contains("200 OK"),
        "no answer to an unfinished request"
    );
    // A body that never arrives: a JSON 400, then the request is dropped.
    let mut slow = TcpStream::connect(addr).await.expect("connect");
    slow.write_all(
        b"POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"na",
    )
    .await
    .expect("write");
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(WAIT, slow.read(&mut buf))
        .await
        .expect("an answer")
        .expect("read");
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("\"code\":\"bad_request\""), "{text}");
    // The node is fine.
    let ok = reqwest::get(cluster.nodes[0].url("/healthz"))
        .await
        .expect("healthz");
    assert_eq!(ok.status().as_u16(), 200);
}

#[tokio::test]
async fn at_the_connection_limit_healthz_and_sessions_keep_working() {
    // 4 connections served normally, 1 overflow (answered /healthz only;
    // fd_headroom / 4), which a newer connection evicts.
    let (cluster, api) =
        node("max_connections = 4\nfd_headroom = 6\nheader_timeout_secs = 60").await;
    let alice = api.user("alice").await;
    let bob = api.user("bob").await;
    let conv = api.direct(&alice, &bob).await;
    // Two live sessions take two slots (the HTTP client's pooled
    // connections are dropped first).
    drop(api);
    let mut a = Ws::connect(&cluster.nodes[0].ws_url(&alice.token))
        .await
        .expect("alice connects");
    let b = Ws::connect(&cluster.nodes[0].ws_url(&bob.token))
        .await
        .expect("bob connects");
    // Half-sent requests take the rest, and more.
    let addr = cluster.nodes[0].http;
    let mut idle = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET /healthz HTTP/1.1\r\n")
            .await
            .expect("write");
        idle.push(s);
    }
    // At the limit: a new connection gets /healthz, and a 503 for the API.
    let fresh = || {
        reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .expect("client")
    };
    let health = wait::until("/healthz at the limit", WAIT, || {
        let http = fresh();
        let url = cluster.nodes[0].url("/healthz");
        async move {
            let r = http.get(&url).send().await.ok()?;
            Some(r.status().as_u16())
        }
    })
    .await;
    assert_eq!(health, 200);
    let r = fresh()
        .get(cluster.nodes[0].url("/api/chats"))
        .bearer_auth(&alice.token)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 503);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    // Live sessions still work.
    a.send(json!({"type":"send","conv_id": conv,"client_msg_id":"at-limit","body":"still here"}))
        .await;
    b.wait_for("bob gets the message", WAIT, |f| {
        f["type"] == "message" && f["body"] == "still here"
    })
    .await;
    // Fill the overflow with a half-sent request too: a newer connection
    // closes it (the oldest waiting) and takes its place, so a flood of
    // half-sent requests cannot keep /healthz from answering.
    let mut waiting = TcpStream::connect(addr).await.expect("connect");
    waiting
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .expect("write");
    let mut probe = TcpStream::connect(addr).await.expect("connect");
    probe
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let answer = String::from_utf8_lossy(&read_to_close(&mut probe).await).into_owned();
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "the newest connection is served: {answer:?}"
    );
    let got = read_to_close(&mut waiting).await;
    assert!(
        got.is_empty(),
        "the oldest waiting one was closed unanswered"
    );
    // Once the idle connections go, everything is served again, and the
    // refusals were counted.
    drop(idle);
    let metrics = wait::until("metrics after the flood", WAIT, || {
        let http = fresh();
        let url = cluster.nodes[0].url("/metrics");
        async move {
            let r = http.get(&url).send().await.ok()?;
            (r.status().as_u16() == 200).then_some(())?;
            r.text().await.ok()
        }
    })
    .await;
    for name in [
        "parley_connections_refused_total",
        "parley_connections_overflow_total",
    ] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with(&format!("{name} ")) && !l.ends_with(" 0")),
            "{name} counted:\n{metrics}"
        );
    }
    assert!(
        cluster.nodes[0].log_text().contains("connection limit"),
        "the refusal is logged"
    );
}

#[tokio::test]
async fn look_alike_and_deceptive_names_are_refused() {
    let (cluster, api) = node("").await;
    let alice = api.user("alice").await;
    for (name, what) in [
        ("\u{0430}lice", "Cyrillic a"),
        ("ａｌｉｃｅ", "fullwidth"),
        ("ALICE", "another case"),
        ("a1ice", "digit one for l"),
    ] {
        let got = request(
            &cluster,
            "POST",
            "/api/register",
            None,
            login_body(name, "correct horse"),
        )
        .await;
        assert_error(what, &got, 409, "conflict");
    }
    // Fullwidth is stored in its NFKC form.
    let got = request(
        &cluster,
        "POST",
        "/api/register",
        None,
        login_body("ｂｏｂ", "correct horse"),
    )
    .await;
    assert_eq!(got.0, 201, "{:?}", got.2);
    assert_eq!(got.2["name"], "bob");
    for name in ["al\u{200B}ice2", "bob\u{202E}2", "ca\u{2066}rol"] {
        let got = request(
            &cluster,
            "POST",
            "/api/register",
            None,
            login_body(name, "correct horse"),
        )
        .await;
        assert_error(&format!("{name:?}"), &got, 400, "bad_request");
    }
    let (_, found) = api
        .call("GET", "/api/users?q=a", Some(&alice.token), None)
        .await;
    assert_eq!(found["users"].as_array().map(Vec::len), Some(1), "{found}");
    // Group names: no line breaks, bidi overrides or zero-width characters.
    for name in ["two\nlines", "evil\u{202E}txt.exe", "zero\u{200B}width"] {
        let got = request(
            &cluster,
            "POST",
            "/api/groups",
            Some(&alice.token),
            Some(json!({"name": name, "members": []})),
        )
        .await;
        assert_error(&format!("group {name:?}"), &got, 400, "bad_request");
    }
    let (_, chats) = api
        .call("GET", "/api/chats", Some(&alice.token), None)
        .await;
    assert_eq!(chats["chats"], json!([]), "no group was created");
}

#[tokio::test]
async fn presence_is_shown_only_to_contacts() {
    let (_cluster, api) = node("").await;
    let alice = api.user("alice").await;
    let bob = api.user("bob").await;
    let carol = api.user("carol").await;
    api.direct(&alice, &bob).await;
    let (_, profile) = api
        .call(
            "GET",
            &format!("/api/users/{}", bob.id),
            Some(&alice.token),
            None,
        )
        .await;
    assert!(profile["online"].is_boolean(), "contact: {profile}");
    assert!(profile.get("last_seen").is_some(), "contact: {profile}");
    let (status, profile) = api
        .call(
            "GET",
            &format!("/api/users/{}", carol.id),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        profile,
        json!({"id": carol.id, "name": "carol"}),
        "stranger"
    );
    let (_, found) = api
        .call("GET", "/api/users?q=carol", Some(&alice.token), None)
        .await;
    assert_eq!(found, json!({"users": [{"id": carol.id, "name": "carol"}]}));
    let (_, found) = api
        .call("GET", "/api/users?q=bob", Some(&alice.token), None)
        .await;
    assert!(found["users"][0]["online"].is_boolean(), "{found}");
}

async fn block(api: &Api, by: &User, whom: u64) -> (u16, Value) {
    api.call(
        "POST",
        "/api/blocks",
        Some(&by.token),
        Some(json!({"user_id": whom})),
    )
    .await
}

#[tokio::test]
async fn a_blocked_user_cannot_reach_the_blocker() {
    let (cluster, api) = node("").await;
    let alice = api.user("alice").await;
    let bob = api.user("bob").await;
    let carol = api.user("carol").await;
    let direct = api.direct(&alice, &bob).await;
    let group = api.group(&carol, "carol's", &[&bob]).await;

    let (status, body) = block(&api, &alice, bob.id).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["user_id"], bob.id);
    let (_, list) = api
        .call("GET", "/api/blocks", Some(&alice.token), None)
        .await;
    assert_eq!(list["blocks"][0]["user_id"], bob.id, "{list}");

    // No new direct chat either way, no group with alice, no adding her.
    let got = request(
        &cluster,
        "POST",
        &format!("/api/direct/{}", alice.id),
        Some(&bob.token),
        None,
    )
    .await;
    assert_error("bob opens a chat with alice", &got, 403, "forbidden");
    let got = request(
        &cluster,
        "POST",
        "/api/groups",
        Some(&bob.token),
        Some(json!({"name": "trap", "members": [alice.id]})),
    )
    .await;
    assert_error("bob creates a group with alice", &got, 403, "forbidden");
    let got = request(
        &cluster,
        "POST",
        &format!("/api/groups/{group}/members"),
        Some(&bob.token),
        Some(json!({"user_id": alice.id})),
    )
    .await;
    assert_error("bob adds alice to a group", &got, 403, "forbidden");
    let (_, members) = api
        .call(
            "GET",
            &format!("/api/conversations/{group}"),
            Some(&carol.token),
            None,
        )
        .await;
    assert!(
        !members
            .to_string()
            .contains(&format!("\"user_id\":{}", alice.id)),
        "alice was not added: {members}"
    );
    // Nor send to the direct chat they already had.
    let mut b = Ws::connect(&cluster.nodes[0].ws_url(&bob.token))
        .await
        .expect("bob connects");
    b.send(json!({"type":"send","conv_id": direct,"client_msg_id":"blocked-1","body":"hi"}))
        .await;
    let error = b
        .wait_for("the refusal", WAIT, |f| {
            f["type"] == "error" && f["ref"] == "blocked-1"
        })
        .await;
    assert_eq!(error["code"], "forbidden", "{error}");
    let (_, history) = api
        .call(
            "GET",
            &format!("/api/conversations/{direct}/messages"),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(history["messages"], json!([]), "nothing stored: {history}");

    // Bad block requests.
    assert_eq!(block(&api, &alice, alice.id).await.0, 400);
    assert_eq!(block(&api, &alice, 987_654_321).await.0, 404);
    let (status, _) = api
        .call(
            "DELETE",
            &format!("/api/blocks/{}", carol.id),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(status, 404, "carol was not blocked");

    // Unblocked: bob can write again.
    let (status, _) = api
        .call(
            "DELETE",
            &format!("/api/blocks/{}", bob.id),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(status, 204);
    b.send(json!({"type":"send","conv_id": direct,"client_msg_id":"after","body":"hi again"}))
        .await;
    b.wait_for("sent after unblocking", WAIT, |f| {
        f["type"] == "sent" && f["client_msg_id"] == "after"
    })
    .await;
    api.direct(&bob, &alice).await;
}

/// Connects `user` with the token in the URL and waits for `hello`.
async fn session(cluster: &TestCluster, user: &User) -> Ws {
    let ws = Ws::connect(&cluster.nodes[0].ws_url(&user.token))
        .await
        .expect("connect");
    ws.wait_for("hello", WAIT, |f| f["type"] == "hello").await;
    ws
}

#[tokio::test]
async fn one_user_holds_at_most_max_sessions_per_user_and_the_oldest_goes() {
    let (cluster, api) = node("max_sessions_per_user = 3").await;
    let node = &cluster.nodes[0];
    let (alice, bob) = (api.user("alice").await, api.user("bob").await);
    api.direct(&alice, &bob).await;
    let mut b = session(&cluster, &bob).await;

    let mut alice_sessions = Vec::new();
    for _ in 0..3 {
        alice_sessions.push(session(&cluster, &alice).await);
    }
    assert!(alice_sessions.iter().all(|s| s.closed().is_none()));

    // A fourth: the first one (the oldest) is closed with 4001, the rest stay.
    alice_sessions.push(session(&cluster, &alice).await);
    let oldest = &alice_sessions[0];
    let (code, reason) = wait::until("the oldest session closed", WAIT, || {
        let closed = oldest.closed();
        async move { closed }
    })
    .await;
    assert_eq!(code, 4001, "{reason}");
    assert!(reason.contains("too many connections"), "{reason}");

    // The three newest still get what bob sends; the closed one does not.
    b.send_direct(&alice, "after", "still here?").await;
    for (i, s) in alice_sessions.iter().enumerate().skip(1) {
        s.wait_for(&format!("session {i} gets the message"), WAIT, |f| {
            f["type"] == "message" && f["client_msg_id"] == "after"
        })
        .await;
        assert!(s.closed().is_none(), "session {i} closed: {:?}", s.closed());
    }
    assert!(!oldest
        .frames()
        .iter()
        .any(|f| f["client_msg_id"] == "after"));

    // The node holds 3 of alice's sessions and bob's, and says why one went.
    wait::until("the gauge at 4 sessions", WAIT, || async {
        (node.metric("parley_sessions").await == Some(4.0)).then_some(())
    })
    .await;
    assert_eq!(
        node.metric("parley_sessions_superseded_total").await,
        Some(1.0)
    );
    // Bob was never touched by alice's connections.
    assert!(b.closed().is_none());
    b.close().await;
}

#[tokio::test]
async fn a_connect_loop_is_throttled_per_user() {
    let (cluster, api) = node("connects_per_user_per_minute = 1\nconnect_burst = 3").await;
    let node = &cluster.nodes[0];
    let (alice, bob) = (api.user("alice").await, api.user("bob").await);

    // The burst goes through (closing each one: the budget is about
    // connecting, not holding).
    for _ in 0..3 {
        session(&cluster, &alice).await.close().await;
    }
    // The next, token in the URL: refused before the upgrade, 429 + JSON.
    let refused = Ws::connect(&node.ws_url(&alice.token))
        .await
        .err()
        .expect("a fourth connection in the same minute is refused");
    assert!(refused.contains("429"), "{refused}");

    // Token in an `auth` frame: an error frame naming it, then 1013.
    let mut ws = Ws::connect(&format!("ws://{}/ws", node.http))
        .await
        .expect("connect");
    ws.send(json!({"type": "auth", "token": alice.token})).await;
    ws.wait_for("rate_limited for auth", WAIT, |f| {
        f["type"] == "error" && f["code"] == "rate_limited" && f["ref"] == "auth"
    })
    .await;
    let (code, _) = wait::until("closed with 1013", WAIT, || {
        let closed = ws.closed();
        async move { closed }
    })
    .await;
    assert_eq!(code, 1013);

    // Another user is not affected, and a bad token costs no budget.
    assert!(Ws::connect(&node.ws_url("not-a-token"))
        .await
        .err()
        .is_some_and(|e| e.contains("401")));
    session(&cluster, &bob).await.close().await;
}

#[tokio::test]
async fn frames_naming_someone_elses_conversation_never_reach_it() {
    // Conversations idle out after a second, so the gauge shows whether
    // anything activated one.
    let cluster = TestCluster::start_with_config(
        1,
        "conversation_idle_secs = 1\n[gateway]\nwrites_per_minute = 1\nwrite_burst = 2\n",
    )
    .await;
    let node = &cluster.nodes[0];
    let api = Api::new(node.http);
    let (alice, bob, mallory) = (
        api.user("alice").await,
        api.user("bob").await,
        api.user("mallory").await,
    );
    let group = api.group(&alice, "private", &[&bob]).await;
    let mut a = session(&cluster, &alice).await;
    a.send(json!({"type": "send", "conv_id": group, "client_msg_id": "hello", "body": "hi bob"}))
        .await;
    a.wait_for("sent", WAIT, |f| f["type"] == "sent").await;
    let conversations = || async { node.metric("parley_conversations").await };
    wait::until("the group's actor idles out", WAIT, || async {
        (conversations().await == Some(0.0)).then_some(())
    })
    .await;

    // Mallory names the group in every kind of frame, and a conversation
    // that does not exist.
    let mut m = session(&cluster, &mallory).await;
    let frames = [
        json!({"type": "typing", "conv_id": group, "ref": "t"}),
        json!({"type": "ack", "conv_id": group, "seq": 1, "kind": "seen", "ref": "a"}),
        json!({"type": "send", "conv_id": group, "client_msg_id": "s", "body": "let me in"}),
        json!({"type": "react", "conv_id": group, "seq": 1, "emoji": "👍", "client_msg_id": "r"}),
        json!({"type": "typing", "conv_id": 999_999, "ref": "nowhere"}),
    ];
    for frame in frames {
        m.send(frame).await;
    }
    m.send(json!({"type": "ping"})).await;
    m.wait_for("pong", WAIT, |f| f["type"] == "pong").await;
    for (reference, code) in [
        ("t", "forbidden"),
        ("a", "forbidden"),
        ("s", "forbidden"),
        ("r", "forbidden"),
        ("nowhere", "not_found"),
    ] {
        let errors = m.frames();
        assert!(
            errors
                .iter()
                .any(|f| f["type"] == "error" && f["ref"] == reference && f["code"] == code),
            "{reference}: no {code} error in {errors:?}"
        );
    }
    // Every refusal came from the gateway: no conversation woke up.
    assert_eq!(conversations().await, Some(0.0));
    assert!(a.of_type("typing").is_empty());

    // Opening direct chats by sending to user after user is charged to the
    // write budget (2 here): the third new chat is refused, a chat that
    // exists is not.
    let others: Vec<User> = vec![
        api.user("carol").await,
        api.user("dave").await,
        api.user("erin").await,
    ];
    let mut answers = Vec::new();
    for (i, other) in others.iter().enumerate() {
        let id = format!("dm{i}");
        m.send(json!({"type": "send", "to_user": other.id, "client_msg_id": id, "body": "hi"}))
            .await;
        answers.push(
            m.wait_for(&id, WAIT, |f| {
                (f["type"] == "sent" || f["type"] == "error")
                    && (f["client_msg_id"] == id.as_str() || f["ref"] == id.as_str())
            })
            .await,
        );
    }
    assert_eq!(answers[0]["type"], "sent", "{answers:?}");
    assert_eq!(answers[1]["type"], "sent", "{answers:?}");
    assert_eq!(answers[2]["code"], "rate_limited", "{answers:?}");
    m.send(json!({"type": "send", "to_user": others[0].id, "client_msg_id": "again", "body": "still?"}))
        .await;
    m.wait_for("a send to an existing chat", WAIT, |f| {
        f["type"] == "sent" && f["client_msg_id"] == "again"
    })
    .await;
}

//! Offline push against real node processes and loopback stand-ins for the
//! push services: a Web Push service that checks the VAPID signature and
//! decrypts the payload with its own RFC 8291 code (p256 + hkdf +
//! aes-gcm, not the crate the node encrypts with), FCM HTTP v1 (OAuth2
//! token exchange included) and APNs over HTTP/2. Only loopback traffic.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aes_gcm::aead::{Aead, KeyInit};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hkdf::Hkdf;
use serde_json::{json, Value};
use sha2::Sha256;
use tests::client::{Api, User, Ws};
use tests::node::{Node, TestCluster};
use tests::wait::until;

const T: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------
// A loopback push service.

/// One request a stand-in received.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    version: axum::http::Version,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }
}

/// How a stand-in answers.
#[derive(Clone)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    /// Answer only once a permit is added.
    hold: Option<Arc<tokio::sync::Semaphore>>,
}

impl Reply {
    fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: String::new(),
            hold: None,
        }
    }

    fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }

    fn body(mut self, body: Value) -> Self {
        self.body = body.to_string();
        self
    }

    fn held(mut self, gate: &Arc<tokio::sync::Semaphore>) -> Self {
        self.hold = Some(gate.clone());
        self
    }
}

type Responder = Arc<dyn Fn(&Received) -> Reply + Send + Sync>;

/// A push service on loopback: records every request; answers with the
/// queued replies first, then with its responder.
#[derive(Clone)]
struct Stand {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    replies: Arc<Mutex<VecDeque<Reply>>>,
}

impl Stand {
    async fn start() -> Self {
        Self::with_responder(Arc::new(|_: &Received| Reply::status(201))).await
    }

    async fn with_responder(responder: Responder) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let received = Arc::new(Mutex::new(Vec::new()));
        let replies = Arc::new(Mutex::new(VecDeque::new()));
        let (r, q) = (received.clone(), replies.clone());
        let handler = move |req: axum::extract::Request| {
            let (r, q, responder) = (r.clone(), q.clone(), responder.clone());
            async move {
                let (parts, body) = req.into_parts();
                let body = axum::body::to_bytes(body, 1 << 20)
                    .await
                    .unwrap_or_default()
                    .to_vec();
                let got = Received {
                    path: parts.uri.path().to_owned(),
                    version: parts.version,
                    headers: parts.headers,
                    body,
                };
                r.lock().expect("lock").push(got.clone());
                let queued = q.lock().expect("lock").pop_front();
                let reply = queued.unwrap_or_else(|| responder(&got));
                if let Some(gate) = &reply.hold {
                    gate.acquire().await.expect("gate").forget();
                }
                let mut response = axum::response::Response::builder().status(reply.status);
                for (k, v) in &reply.headers {
                    response = response.header(*k, v);
                }
                response
                    .body(axum::body::Body::from(reply.body))
                    .expect("response")
            }
        };
        let app = axum::Router::new().fallback(handler);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            received,
            replies,
        }
    }

    fn then(&self, reply: Reply) {
        self.replies.lock().expect("lock").push_back(reply);
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }

    async fn wait_for(&self, n: usize) -> Vec<Received> {
        let this = self.clone();
        until(&format!("{n} requests at the push service"), T, || {
            let got = this.received();
            async move { (got.len() >= n).then_some(got) }
        })
        .await
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

// ---------------------------------------------------------------------
// A browser's side of Web Push, written from RFC 8291 directly.

struct Device {
    secret: p256::SecretKey,
    public: Vec<u8>,
    auth: [u8; 16],
}

impl Device {
    fn new() -> Self {
        use p256::elliptic_curve::sec1::ToEncodedPoint as _;
        let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let public = secret
            .public_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec();
        Self {
            secret,
            public,
            auth: rand::random(),
        }
    }

    fn subscription(&self, endpoint: &str) -> Value {
        json!({
            "endpoint": endpoint,
            "keys": {"p256dh": URL_SAFE_NO_PAD.encode(&self.public), "auth": URL_SAFE_NO_PAD.encode(self.auth)},
        })
    }

    /// Decrypts an `aes128gcm` body (one record) and parses its JSON.
    fn decrypt(&self, body: &[u8]) -> Value {
        assert!(body.len() > 21 + 65 + 16, "body too short: {}", body.len());
        let salt = &body[..16];
        let rs = u32::from_be_bytes([body[16], body[17], body[18], body[19]]) as usize;
        let idlen = body[20] as usize;
        assert_eq!(idlen, 65, "keyid is the sender's public key");
        let keyid = &body[21..21 + idlen];
        let ciphertext = &body[21 + idlen..];
        // RFC 8291 §4: one record, and `rs` larger than it.
        assert!(
            ciphertext.len() < rs,
            "rs {rs} must exceed the record's {}",
            ciphertext.len()
        );
        let sender = p256::PublicKey::from_sec1_bytes(keyid).expect("sender key");
        let shared =
            p256::ecdh::diffie_hellman(self.secret.to_nonzero_scalar(), sender.as_affine());
        let mut info = b"WebPush: info\0".to_vec();
        info.extend_from_slice(&self.public);
        info.extend_from_slice(keyid);
        let mut ikm = [0u8; 32];
        Hkdf::<Sha256>::new(Some(&self.auth), shared.raw_secret_bytes().as_slice())
            .expand(&info, &mut ikm)
            .expect("ikm");
        let prk = Hkdf::<Sha256>::new(Some(salt), &ikm);
        let mut cek = [0u8; 16];
        prk.expand(b"Content-Encoding: aes128gcm\0", &mut cek)
            .expect("cek");
        let mut nonce = [0u8; 12];
        prk.expand(b"Content-Encoding: nonce\0", &mut nonce)
            .expect("nonce");
        let cipher = aes_gcm::Aes128Gcm::new_from_slice(&cek).expect("key");
        let mut plain = cipher
            .decrypt(aes_gcm::Nonce::from_slice(&nonce), ciphertext)
            .expect("the payload decrypts with the device's keys");
        // Padded, so the push service cannot read a preview's length off
        // the body's: every small notification is 1 KiB of plaintext.
        assert_eq!(
            plain.len() % 1024,
            0,
            "padded plaintext, {} bytes",
            plain.len()
        );
        while plain.last() == Some(&0) {
            plain.pop();
        }
        assert_eq!(plain.pop(), Some(2), "last-record delimiter");
        serde_json::from_slice(&plain).expect("JSON payload")
    }
}

fn b64d(s: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .expect("base64url")
}

/// Verifies an ES256 JWT with `key` (SEC1 bytes); returns (header, claims).
fn verify_es256(token: &str, key: &[u8]) -> (Value, Value) {
    use p256::ecdsa::signature::Verifier as _;
    let (input, sig) = token.rsplit_once('.').expect("jwt");
    let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(key).expect("key");
    let sig = p256::ecdsa::Signature::from_slice(&b64d(sig)).expect("signature");
    vk.verify(input.as_bytes(), &sig)
        .expect("the JWT is signed by the key");
    let (header, claims) = input.split_once('.').expect("jwt");
    (
        serde_json::from_slice(&b64d(header)).expect("header"),
        serde_json::from_slice(&b64d(claims)).expect("claims"),
    )
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Checks a Web Push request's VAPID `Authorization` (RFC 8292).
fn check_vapid(req: &Received, vapid_key: &str, origin: &str) {
    let auth = req.header("authorization");
    let rest = auth.strip_prefix("vapid ").expect("vapid scheme");
    let mut t = None;
    let mut k = None;
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("t=") {
            t = Some(v.to_owned());
        }
        if let Some(v) = part.strip_prefix("k=") {
            k = Some(v.to_owned());
        }
    }
    let k = k.expect("k=");
    assert_eq!(k, vapid_key, "signed with the cluster's key");
    let (header, claims) = verify_es256(&t.expect("t="), &b64d(&k));
    assert_eq!(header["alg"], "ES256");
    assert_eq!(
        claims["aud"], origin,
        "aud is the endpoint's origin, port included"
    );
    let exp = claims["exp"].as_u64().expect("exp");
    assert!(
        exp > unix_now() && exp <= unix_now() + 24 * 3600,
        "exp {exp}"
    );
    let sub = claims["sub"].as_str().expect("sub");
    assert!(
        sub.starts_with("mailto:") || sub.starts_with("https:"),
        "{sub}"
    );
}

// ---------------------------------------------------------------------
// Cluster helpers.

const WEB_PUSH_CONFIG: &str = r#"
[push]
allow_insecure = ["127.0.0.1"]
retry_base_ms = 50
outbox_scan_ms = 200
outbox_grace_ms = 500
"#;

async fn connect(node: &Node, user: &User) -> Ws {
    let ws = Ws::connect(&node.ws_url(&user.token))
        .await
        .expect("connect");
    ws.wait_for("hello", T, |f| f["type"] == "hello").await;
    ws
}

/// A counter summed over the cluster's nodes.
async fn metric(cluster: &TestCluster, name: &str) -> f64 {
    let http = reqwest::Client::new();
    let mut sum = 0.0;
    for node in cluster.nodes.iter().filter(|n| n.is_running()) {
        let Ok(resp) = http.get(node.url("/metrics")).send().await else {
            continue;
        };
        let text = resp.text().await.unwrap_or_default();
        let key = format!("parley_{name}_total ");
        sum += text
            .lines()
            .find_map(|l| l.strip_prefix(&key))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
    }
    sum
}

async fn wait_metric(cluster: &TestCluster, name: &str, at_least: f64) {
    until(&format!("{name} >= {at_least}"), T, || async move {
        (metric(cluster, name).await >= at_least).then_some(())
    })
    .await
}

async fn subscribe(api: &Api, user: &User, body: Value) -> String {
    let (status, got) = api
        .call(
            "POST",
            "/api/push-subscriptions",
            Some(&user.token),
            Some(body),
        )
        .await;
    assert_eq!(status, 201, "{got}");
    got["id"].as_str().expect("id").to_owned()
}

async fn subscription_count(api: &Api, user: &User) -> usize {
    let (status, got) = api
        .call("GET", "/api/push-subscriptions", Some(&user.token), None)
        .await;
    assert_eq!(status, 200, "{got}");
    got["subscriptions"].as_array().map_or(0, |a| a.len())
}

/// The cluster's VAPID public key, read through `node`.
async fn vapid_key(node: &Node) -> String {
    Api::new(node.http).vapid_public_key().await
}

// ---------------------------------------------------------------------
// Web Push.

#[tokio::test]
async fn web_push_reaches_the_device_encrypted_and_signed_by_the_cluster_key() {
    let service = Stand::start().await;
    let cluster = TestCluster::start_with_config(2, WEB_PUSH_CONFIG).await;
    let key = vapid_key(&cluster.nodes[0]).await;
    assert_eq!(b64d(&key).len(), 65, "an uncompressed P-256 point");
    assert_eq!(
        vapid_key(&cluster.nodes[1]).await,
        key,
        "every node signs with the same key"
    );

    let api1 = Api::new(cluster.nodes[0].http);
    let api2 = Api::new(cluster.nodes[1].http);
    let (alice, bob) = (api1.user("alice").await, api1.user("bob").await);
    let phone = Device::new();
    subscribe(&api2, &bob, phone.subscription(&service.url("/push/bob"))).await;

    let mut a = connect(&cluster.nodes[0], &alice).await;
    let (conv_id, seq) = a.send_direct(&bob, "p1", "are you there?").await;
    let got = service.wait_for(1).await;
    let req = &got[0];
    assert_eq!(req.path, "/push/bob");
    assert_eq!(req.header("content-encoding"), "aes128gcm");
    assert_eq!(req.header("content-type"), "application/octet-stream");
    assert_eq!(req.header("ttl"), "86400");
    assert_eq!(req.header("urgency"), "high");
    assert_eq!(req.header("topic"), format!("conv-{conv_id}"));
    check_vapid(req, &key, &format!("http://{}", service.addr));
    assert!(
        !String::from_utf8_lossy(&req.body).contains("are you there"),
        "the text never travels in clear"
    );
    let payload = phone.decrypt(&req.body);
    assert_eq!(payload["type"], "message");
    assert_eq!(payload["user_id"], bob.id);
    assert_eq!(payload["conv_id"], conv_id);
    assert_eq!(payload["seq"], seq);
    assert_eq!(payload["sender"], alice.id);
    assert_eq!(payload["preview"], "are you there?");
    wait_metric(&cluster, "push_sent", 1.0).await;
}

#[tokio::test]
async fn endpoints_and_keys_are_validated_and_inner_addresses_refused() {
    // No allow-list: the defaults of a production node.
    let cluster = TestCluster::start(1).await;
    let api = Api::new(cluster.nodes[0].http);
    let bob = api.user("bob").await;
    let phone = Device::new();
    let keys = phone.subscription("https://x.example")["keys"].clone();
    let with = |endpoint: &str| json!({"endpoint": endpoint, "keys": keys.clone()});
    let mut refused = vec![
        ("plain http", with("http://push.example.com/x")),
        ("ftp", with("ftp://push.example.com/x")),
        (
            "cloud metadata",
            with("https://169.254.169.254/latest/meta-data"),
        ),
        ("metadata name", with("https://metadata.google.internal/x")),
        ("localhost", with("https://localhost:6379/")),
        ("IPv6 loopback", with("https://[::1]:2375/containers")),
        ("private", with("https://10.0.0.1/")),
        ("private 192.168", with("https://192.168.1.1/")),
        ("CGNAT", with("https://100.64.0.1/")),
        ("unique local", with("https://[fd00::1]/")),
        ("decimal loopback", with("https://2130706433/")),
        ("v4-mapped loopback", with("https://[::ffff:127.0.0.1]/")),
        ("credentials", with("https://u:p@push.example.com/")),
        ("not a URL", with("push.example.com")),
        (
            "a bad p256dh",
            json!({"endpoint": "https://push.example.com/1", "keys": {"p256dh": "AAAA", "auth": keys["auth"]}}),
        ),
        (
            "a short auth",
            json!({"endpoint": "https://push.example.com/1", "keys": {"p256dh": keys["p256dh"], "auth": "AAAA"}}),
        ),
        ("no keys", json!({"endpoint": "https://push.example.com/1"})),
        (
            "an unknown kind",
            json!({"kind": "carrier-pigeon", "token": "x"}),
        ),
        (
            "FCM, not configured",
            json!({"kind": "fcm", "token": "abc"}),
        ),
        (
            "APNs, not configured",
            json!({"kind": "apns", "token": "ab".repeat(32)}),
        ),
    ];
    refused.push((
        "the node's own API",
        with(&cluster.nodes[0].url("/api/users")),
    ));
    for (what, body) in refused {
        let (status, got) = api
            .call(
                "POST",
                "/api/push-subscriptions",
                Some(&bob.token),
                Some(body),
            )
            .await;
        assert_eq!(status, 400, "{what}: {got}");
        assert_eq!(got["error"]["code"], "bad_request", "{what}: {got}");
    }
    assert_eq!(subscription_count(&api, &bob).await, 0, "nothing stored");
    subscribe(&api, &bob, with("https://push.example.com/send/1")).await;
    assert_eq!(subscription_count(&api, &bob).await, 1);
}

#[tokio::test]
async fn failures_are_retried_and_gone_devices_unsubscribed() {
    let service = Stand::start().await;
    service.then(Reply::status(503).header("retry-after", "1"));
    let cluster = TestCluster::start_with_config(1, WEB_PUSH_CONFIG).await;
    let api = Api::new(cluster.nodes[0].http);
    let (alice, bob) = (api.user("alice").await, api.user("bob").await);
    let phone = Device::new();
    subscribe(&api, &bob, phone.subscription(&service.url("/push/bob"))).await;
    let mut a = connect(&cluster.nodes[0], &alice).await;

    // 503 with Retry-After, then accepted: two attempts, one notification.
    let (_, seq) = a.send_direct(&bob, "r1", "one").await;
    let got = service.wait_for(2).await;
    for req in &got {
        assert_eq!(phone.decrypt(&req.body)["seq"], seq);
    }
    wait_metric(&cluster, "push_retried", 1.0).await;
    wait_metric(&cluster, "push_sent", 1.0).await;

    // 410 Gone: the subscription is deleted.
    service.then(Reply::status(410));
    a.send_direct(&bob, "r2", "two").await;
    until("the gone subscription removed", T, || {
        let (api, bob) = (api.clone(), bob.clone());
        async move { (subscription_count(&api, &bob).await == 0).then_some(()) }
    })
    .await;
    wait_metric(&cluster, "push_gone", 1.0).await;
    assert_eq!(service.received().len(), 3);
}

#[tokio::test]
async fn redirects_are_never_followed() {
    let service = Stand::start().await;
    let elsewhere = Stand::start().await;
    service.then(Reply::status(307).header("location", &elsewhere.url("/steal")));
    let cluster = TestCluster::start_with_config(1, WEB_PUSH_CONFIG).await;
    let api = Api::new(cluster.nodes[0].http);
    let (alice, bob) = (api.user("alice").await, api.user("bob").await);
    subscribe(
        &api,
        &bob,
        Device::new().subscription(&service.url("/push/bob")),
    )
    .await;
    let mut a = connect(&cluster.nodes[0], &alice).await;
    a.send_direct(&bob, "x1", "hello").await;
    wait_metric(&cluster, "push_failed", 1.0).await;
    assert_eq!(service.received().len(), 1);
    assert!(elsewhere.received().is_empty(), "the redirect was followed");
}

#[tokio::test]
async fn a_burst_while_the_device_waits_collapses_to_the_newest() {
    let service = Stand::start().await;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    service.then(Reply::status(503).header("retry-after", "0").held(&gate));
    let cluster = TestCluster::start_with_config(1, WEB_PUSH_CONFIG).await;
    let api = Api::new(cluster.nodes[0].http);
    let (alice, bob) = (api.user("alice").await, api.user("bob").await);
    let phone = Device::new();
    subscribe(&api, &bob, phone.subscription(&service.url("/push/bob"))).await;
    let mut a = connect(&cluster.nodes[0], &alice).await;

    let (conv_id, first) = a.send_direct(&bob, "b1", "one").await;
    service.wait_for(1).await; // in flight, held
    a.send_direct(&bob, "b2", "two").await;
    let (_, last) = a.send_direct(&bob, "b3", "three").await;
    // "three" replaced "two" in the device's queue.
    wait_metric(&cluster, "push_coalesced", 1.0).await;
    gate.add_permits(1);
    let got = service.wait_for(2).await;
    wait_metric(&cluster, "push_sent", 1.0).await;
    let got = if got.len() > 2 {
        got
    } else {
        service.received()
    };
    let seqs: Vec<Value> = got
        .iter()
        .map(|r| phone.decrypt(&r.body)["seq"].clone())
        .collect();
    assert_eq!(
        seqs,
        vec![json!(first), json!(last)],
        "one push for the burst"
    );
    for r in &got {
        assert_eq!(r.header("topic"), format!("conv-{conv_id}"));
    }
}

#[tokio::test]
async fn a_muted_conversation_pushes_only_mentions_and_events_push_nothing() {
    let service = Stand::start().await;
    let cluster = TestCluster::start_with_config(1, WEB_PUSH_CONFIG).await;
    let node = &cluster.nodes[0];
    let api = Api::new(node.http);
    let (alice, bob) = (api.user("alice").await, api.user("bob").await);
    let phone = Device::new();
    subscribe(&api, &bob, phone.subscription(&service.url("/push/bob"))).await;
    let g = api.group(&alice, "noisy", &[&bob]).await;
    let (status, body) = api
        .call(
            "PUT",
            &format!("/api/conversations/{g}/mute"),
            Some(&bob.token),
            Some(json!({"until": null})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let mut a = connect(node, &alice).await;
    let plain = a
        .request_seq(json!({"type":"send","conv_id":g,"client_msg_id":"m1","body":"plain news"}))
        .await;
    a.request_seq(
        json!({"type":"edit","conv_id":g,"seq":plain,"client_msg_id":"m2","body":"plainer news"}),
    )
    .await;
    a.request_seq(
        json!({"type":"react","conv_id":g,"seq":plain,"client_msg_id":"m3","emoji":"👀"}),
    )
    .await;
    let mention = a
        .request_seq(json!({"type":"send","conv_id":g,"client_msg_id":"m4","body":"@bob look"}))
        .await;
    let got = service.wait_for(1).await;
    let payload = phone.decrypt(&got[0].body);
    assert_eq!(
        payload["seq"], mention,
        "the first push is the mention: {payload}"
    );
    wait_metric(&cluster, "push_sent", 1.0).await;
    assert_eq!(
        service.received().len(),
        1,
        "nothing but the mention was pushed"
    );

    // Unmuted, a plain message pushes again.
    let (status, _) = api
        .call(
            "DELETE",
            &format!("/api/conversations/{g}/mute"),
            Some(&bob.token),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let again = a
        .request_seq(
            json!({"type":"send","conv_id":g,"client_msg_id":"m5","body":"back to normal"}),
        )
        .await;
    let got = service.wait_for(2).await;
    assert_eq!(phone.decrypt(&got[1].body)["seq"], again);
}

#[tokio::test]
async fn no_push_for_a_message_seen_on_another_device_meanwhile() {
    let service = Stand::start().await;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    service.then(Reply::status(503).header("retry-after", "0").held(&gate));
    let cluster = TestCluster::start_with_config(1, WEB_PUSH_CONFIG).await;
    let node = &cluster.nodes[0];
    let api = Api::new(node.http);
    let (alice, bob) = (api.user("alice").await, api.user("bob").await);
    subscribe(
        &api,
        &bob,
        Device::new().subscription(&service.url("/push/bob")),
    )
    .await;
    let mut a = connect(node, &alice).await;
    let (conv_id, seq) = a.send_direct(&bob, "s1", "seen?").await;
    service.wait_for(1).await; // the first attempt is in flight

    // Bob reads it on his laptop and closes it.
    let bob_offline =
        |f: &Value| f["type"] == "presence" && f["user_id"] == bob.id && f["online"] == false;
    let offline_before = a.frames().iter().filter(|f| bob_offline(f)).count();
    let mut laptop = connect(node, &bob).await;
    laptop
        .send(json!({"type":"ack","conv_id": conv_id,"seq": seq,"kind":"seen"}))
        .await;
    a.wait_for("bob's seen receipt", T, |f| {
        f["type"] == "receipt" && f["user_id"] == bob.id && f["seen_seq"] == seq
    })
    .await;
    laptop.close().await;
    a.wait_for_n("bob offline again", offline_before + 1, T, bob_offline)
        .await;

    gate.add_permits(1);
    wait_metric(&cluster, "push_skipped", 1.0).await;
    assert_eq!(service.received().len(), 1, "no push after it was seen");
    assert_eq!(metric(&cluster, "push_sent").await, 0.0);
}

#[tokio::test]
async fn an_owed_push_survives_its_node_and_is_never_repeated() {
    use storage::chat::{AppendRequest, ChatStore, Limits, NewMessage};

    let service = Stand::start().await;
    let cluster = TestCluster::start_with_config(1, WEB_PUSH_CONFIG).await;
    let api = Api::new(cluster.nodes[0].http);
    let (alice, bob) = (api.user("alice").await, api.user("bob").await);
    let phone = Device::new();
    subscribe(&api, &bob, phone.subscription(&service.url("/push/bob"))).await;
    let conv_id = api.direct(&alice, &bob).await;

    // Another node commits two messages to the shared store and dies
    // before it claims their pushes: one now, one from an hour ago.
    let open = |clock: Option<storage::chat::Clock>| {
        let backend = storage::SqliteBackend::open(
            cluster.dir().join("parley.sqlite"),
            storage::SqliteOptions::default(),
        )
        .expect("open the shared store");
        let store =
            ChatStore::open(storage::Database::new(backend), Limits::default()).expect("store");
        match clock {
            Some(c) => store.with_clock(c),
            None => store,
        }
    };
    let now = open(None);
    let hour_ago = open(Some(Arc::new(|| {
        storage::chat::system_clock()().saturating_sub(3_600_000)
    })));
    let epoch = now.activate_conversation(conv_id).expect("activate").epoch;
    let request = |next_seq, id: &str, body: &str| AppendRequest {
        conv_id,
        epoch,
        next_seq,
        messages: vec![NewMessage::text(alice.id, id, body)],
        push_to: vec![alice.id, bob.id],
        pair: None,
    };
    let r = hour_ago
        .append_many(&[request(1, "old", "stale news")])
        .expect("append");
    assert!(matches!(&r[0], Ok(o) if o[0].is_ok()), "{r:?}");
    let r = now
        .append_many(&[request(2, "owed", "owed to bob")])
        .expect("append");
    assert!(matches!(&r[0], Ok(o) if o[0].is_ok()), "{r:?}");

    // The live node takes both over: sends the fresh one, drops the old.
    let got = service.wait_for(1).await;
    let payload = phone.decrypt(&got[0].body);
    assert_eq!(
        (payload["seq"].clone(), payload["preview"].clone()),
        (json!(2), json!("owed to bob"))
    );
    wait_metric(&cluster, "push_expired", 1.0).await;
    wait_metric(&cluster, "push_recovered", 2.0).await;
    assert!(now.unclaimed_pushes(u64::MAX, 10).expect("scan").is_empty());

    // A restart replays nothing: the next push is the next message's.
    let mut cluster = cluster;
    cluster.nodes[0].stop().await;
    cluster.nodes[0].start().await;
    let mut a = connect(&cluster.nodes[0], &alice).await;
    let (_, seq) = a.send_direct(&bob, "after", "after the restart").await;
    let got = service.wait_for(2).await;
    let seqs: Vec<Value> = got
        .iter()
        .map(|r| phone.decrypt(&r.body)["seq"].clone())
        .collect();
    assert_eq!(seqs, vec![json!(2), json!(seq)]);
}

// ---------------------------------------------------------------------
// FCM and APNs.

/// A throwaway RSA key for the stand-in service account (tests only).
const FCM_TEST_KEY: &str = include_str!("fixtures/fcm-test-service-account-key.pem");

#[tokio::test]
async fn fcm_and_apns_get_authenticated_requests_of_the_right_shape() {
    use p256::pkcs8::EncodePrivateKey as _;
    use rsa::pkcs8::DecodePrivateKey as _;

    let dir = tempfile::tempdir().expect("tempdir");
    let rsa_key = rsa::RsaPrivateKey::from_pkcs8_pem(FCM_TEST_KEY).expect("rsa key");
    let rsa_public = rsa_key.to_public_key();
    let apns_key = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let apns_public = {
        use p256::elliptic_curve::sec1::ToEncodedPoint as _;
        apns_key
            .public_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec()
    };
    let p8 = apns_key
        .to_pkcs8_pem(Default::default())
        .expect("pkcs8")
        .to_string();
    let p8_path = dir.path().join("AuthKey.p8");
    std::fs::write(&p8_path, p8).expect("write p8");

    // FCM: the OAuth2 token endpoint and the v1 send API.
    let fcm_addr: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
    let addr_for = fcm_addr.clone();
    let fcm = Stand::with_responder(Arc::new(move |req: &Received| {
        let token_uri = format!("http://{}/token", addr_for.lock().expect("lock").expect("addr"));
        match req.path.as_str() {
            "/token" => {
                let form: Vec<(String, String)> =
                    url_decode(&String::from_utf8_lossy(&req.body));
                let get = |k: &str| {
                    form.iter()
                        .find(|(n, _)| n == k)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default()
                };
                if get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
                    return Reply::status(400);
                }
                let Some(claims) = verify_rs256(&get("assertion"), &rsa_public) else {
                    return Reply::status(401);
                };
                if claims["iss"] != "parley@test.iam.gserviceaccount.com"
                    || claims["aud"] != token_uri.as_str()
                    || claims["scope"] != "https://www.googleapis.com/auth/firebase.messaging"
                {
                    return Reply::status(403);
                }
                Reply::status(200).body(json!({"access_token": "ya29.test", "expires_in": 3600, "token_type": "Bearer"}))
            }
            "/v1/projects/parley-test/messages:send" => {
                if req.header("authorization") != "Bearer ya29.test" {
                    return Reply::status(401);
                }
                let body: Value = serde_json::from_slice(&req.body).unwrap_or_default();
                if body["message"]["token"] == "fcm-gone" {
                    return Reply::status(404).body(json!({"error": {"code": 404, "status": "NOT_FOUND",
                        "details": [{"errorCode": "UNREGISTERED"}]}}));
                }
                Reply::status(200).body(json!({"name": "projects/parley-test/messages/1"}))
            }
            _ => Reply::status(404),
        }
    }))
    .await;
    *fcm_addr.lock().expect("lock") = Some(fcm.addr);
    let account = json!({
        "type": "service_account",
        "client_email": "parley@test.iam.gserviceaccount.com",
        "private_key": FCM_TEST_KEY,
        "token_uri": fcm.url("/token"),
    });
    let account_path = dir.path().join("service-account.json");
    std::fs::write(&account_path, account.to_string()).expect("write account");

    // APNs over HTTP/2.
    let good = "ab".repeat(32);
    let gone = "cd".repeat(32);
    let gone_path = format!("/3/device/{gone}");
    let apns = Stand::with_responder(Arc::new(move |req: &Received| {
        if req.version != axum::http::Version::HTTP_2 {
            return Reply::status(505);
        }
        let auth = req.header("authorization");
        let Some(token) = auth.strip_prefix("bearer ") else {
            return Reply::status(403).body(json!({"reason": "MissingProviderToken"}));
        };
        let (header, claims) = verify_es256(token, &apns_public);
        if header["kid"] != "KEY1234567" || claims["iss"] != "TEAM123456" {
            return Reply::status(403).body(json!({"reason": "InvalidProviderToken"}));
        }
        if req.header("apns-topic") != "chat.parley.app" {
            return Reply::status(400).body(json!({"reason": "BadTopic"}));
        }
        if req.path == gone_path {
            return Reply::status(410).body(json!({"reason": "Unregistered"}));
        }
        Reply::status(200)
    }))
    .await;

    let config = format!(
        r#"
[push]
preview = false
retry_base_ms = 50
[push.fcm]
project_id = "parley-test"
service_account_file = "{}"
base_url = "{}"
[push.apns]
team_id = "TEAM123456"
key_id = "KEY1234567"
key_file = "{}"
topic = "chat.parley.app"
base_url = "{}"
"#,
        account_path.display(),
        fcm.url(""),
        p8_path.display(),
        apns.url(""),
    );
    let cluster = TestCluster::start_with_config(1, &config).await;
    let api = Api::new(cluster.nodes[0].http);
    let (alice, bob) = (api.user("alice").await, api.user("bob").await);
    for body in [
        json!({"kind": "fcm", "token": "fcm-token-1"}),
        json!({"kind": "fcm", "token": "fcm-gone"}),
        json!({"kind": "apns", "token": good}),
        json!({"kind": "apns", "token": gone}),
    ] {
        subscribe(&api, &bob, body).await;
    }
    for bad in [
        json!({"kind": "apns", "token": "not-hex"}),
        json!({"kind": "fcm", "token": ""}),
        json!({"kind": "fcm"}),
    ] {
        let (status, got) = api
            .call(
                "POST",
                "/api/push-subscriptions",
                Some(&bob.token),
                Some(bad),
            )
            .await;
        assert_eq!(status, 400, "{got}");
    }
    let mut a = connect(&cluster.nodes[0], &alice).await;
    let (conv_id, seq) = a.send_direct(&bob, "m1", "secret text").await;

    until("the two gone devices removed", T, || {
        let (api, bob) = (api.clone(), bob.clone());
        async move { (subscription_count(&api, &bob).await == 2).then_some(()) }
    })
    .await;
    wait_metric(&cluster, "push_sent", 2.0).await;

    let fcm_sends: Vec<Value> = fcm
        .received()
        .iter()
        .filter(|r| r.path.ends_with("messages:send"))
        .map(|r| serde_json::from_slice(&r.body).expect("json"))
        .collect();
    let ok = fcm_sends
        .iter()
        .find(|b| b["message"]["token"] == "fcm-token-1")
        .expect("a send to fcm-token-1");
    let data = &ok["message"]["data"];
    assert_eq!(data["conv_id"], conv_id.to_string());
    assert_eq!(data["seq"], seq.to_string());
    assert_eq!(data["sender"], alice.id.to_string());
    assert!(data.get("preview").is_none(), "preview off: {data}");
    assert_eq!(
        ok["message"]["android"]["collapse_key"],
        format!("conv-{conv_id}")
    );
    assert!(!serde_json::to_string(ok)
        .expect("json")
        .contains("secret text"));

    let sent = apns
        .received()
        .into_iter()
        .find(|r| r.path == format!("/3/device/{}", "ab".repeat(32)))
        .expect("an APNs request for the good device");
    assert_eq!(sent.header("apns-push-type"), "alert");
    assert_eq!(sent.header("apns-collapse-id"), format!("conv-{conv_id}"));
    let body: Value = serde_json::from_slice(&sent.body).expect("json");
    assert_eq!(body["seq"], seq);
    assert!(
        body["aps"]["alert"].get("body").is_none(),
        "preview off: {body}"
    );
}

fn url_decode(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (pct(k), pct(v)))
        .collect()
}

fn pct(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("00");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(0));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn verify_rs256(token: &str, key: &rsa::RsaPublicKey) -> Option<Value> {
    use rsa::signature::Verifier as _;
    let (input, sig) = token.rsplit_once('.')?;
    let vk = rsa::pkcs1v15::VerifyingKey::<Sha256>::new(key.clone());
    let sig = rsa::pkcs1v15::Signature::try_from(b64d(sig).as_slice()).ok()?;
    vk.verify(input.as_bytes(), &sig).ok()?;
    let (header, claims) = input.split_once('.')?;
    let header: Value = serde_json::from_slice(&b64d(header)).ok()?;
    (header["alg"] == "RS256").then_some(())?;
    serde_json::from_slice(&b64d(claims)).ok()
}

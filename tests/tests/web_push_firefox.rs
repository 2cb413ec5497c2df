//! Offline push into a real browser: Debian's Firefox ESR, headless, gets a
//! Web Push notification from a real node and its service worker reads the
//! message, decrypted by Firefox itself.
//!
//! What it proves: the node's RFC 8291 encryption (`aes128gcm`) and RFC
//! 8292 VAPID signature are what a shipping browser accepts, end to end,
//! not only what this repository's own decryption in `tests/push.rs`
//! accepts: Firefox subscribes with the node's VAPID key through the
//! standard `PushManager.subscribe`, the subscription goes to the node's
//! `POST /api/push-subscriptions` as the page got it, and the payload that
//! reaches the service worker's `push` event is the node's JSON (conv id,
//! sender, seq, preview).
//!
//! How, everything in this process on loopback (random ports, temp dirs):
//!
//! - a stand-in for Mozilla's push service (autopush): the WebSocket
//!   protocol Firefox's `PushServiceWebSocket` speaks (`hello`, `register`,
//!   `unregister`, `ack`, pings, and `notification` from the server), at
//!   the address Firefox is given in `dom.push.serverURL`
//!   (`dom.push.testing.allowInsecureServerURL` allows `ws://`); and the
//!   HTTP push endpoints it hands out, which check what the node posts
//!   (`Content-Encoding: aes128gcm`, `TTL`, a VAPID `Authorization` signed
//!   by the node's key, the key the subscription was made with, `aud` this
//!   origin) and forward the still-encrypted body to Firefox;
//! - a test web server for the page (`fixtures/firefox-push/index.html`)
//!   and its service worker (`sw.js`), which report each step back to it;
//! - Firefox (no WebDriver: the page drives itself) on a throwaway profile
//!   whose `user.js` (`fixtures/firefox-push/user.js` plus the stand-in's
//!   address) points push at the stand-in, grants the push and
//!   notification permissions and turns off Firefox's own traffic
//!   (telemetry, updates, remote settings, safe browsing, captive portal
//!   and connectivity checks...); whatever it still fetches beyond
//!   loopback goes to a proxy trap on loopback that records and refuses
//!   it, so nothing leaves the machine.
//!
//! The page subscribes only once the stand-in has answered Firefox's
//! `hello`: a subscribe while the push service is still starting never
//! settles. Besides the payload, the test checks that Firefox acks the
//! message as delivered (code 100, not 101: decryption failed) and that
//! the service worker could show it as a notification.
//!
//! Chromium cannot stand in for Firefox here: its push goes through FCM.
//! Without `firefox-esr` the test prints a notice and passes; in CI (`CI`
//! set) it fails (`apt-get install firefox-esr`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde_json::{json, Value};
use tests::browser::find_in_path;
use tests::client::{Api, Ws};
use tests::node::{Node, TestCluster};
use tests::wait::until;
use tokio::sync::mpsc;

/// Firefox's start-up, its service worker and its push service on 2 cores.
const BROWSER_WAIT: Duration = Duration::from_secs(60);
/// The node's own steps.
const T: Duration = Duration::from_secs(20);

const PAGE_HTML: &str = include_str!("fixtures/firefox-push/index.html");
const SW_JS: &str = include_str!("fixtures/firefox-push/sw.js");
const USER_JS: &str = include_str!("fixtures/firefox-push/user.js");

/// Push from loopback endpoints, retried and recovered quickly.
const CONFIG: &str = r#"
[push]
allow_insecure = ["127.0.0.1"]
retry_base_ms = 50
outbox_scan_ms = 200
outbox_grace_ms = 500
"#;

// ---------------------------------------------------------------------
// Small helpers.

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn b64d(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .ok()
        .or_else(|| URL_SAFE.decode(s).ok())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// At most `n` characters of `s`, for logs.
fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        format!("{}...", s.chars().take(n).collect::<String>())
    }
}

// ---------------------------------------------------------------------
// The stand-in for Mozilla's push service (autopush).

/// One notification the node posted to a push endpoint.
#[derive(Debug, Clone)]
struct Posted {
    channel: String,
    /// `Ok(version)` when accepted and forwarded to Firefox, or why not.
    outcome: Result<String, String>,
}

/// What the stand-in knows and saw.
#[derive(Default)]
struct PushState {
    /// `http://127.0.0.1:port`: its endpoints' origin (the VAPID `aud`).
    origin: String,
    /// The node's VAPID public key, base64url.
    vapid_key: String,
    /// Every message in and out, and every endpoint request.
    log: Vec<String>,
    /// The id of Firefox's current connection and its outbound queue.
    conn: Option<(u64, mpsc::UnboundedSender<String>)>,
    conns_opened: u64,
    /// The current connection has completed its `hello`.
    hello_done: bool,
    /// Registered channels and the application server key each was
    /// registered with (decoded).
    channels: HashMap<String, Option<Vec<u8>>>,
    /// Notifications waiting for Firefox to (re)connect.
    pending: Vec<String>,
    posted: Vec<Posted>,
    /// `(channelID, version, code)` of Firefox's acks (100: delivered).
    acks: Vec<(String, String, i64)>,
    nacks: Vec<Value>,
    versions: u64,
}

impl PushState {
    fn note(&mut self, line: String) {
        self.log.push(line);
    }
}

type Shared = Arc<Mutex<PushState>>;

struct PushService {
    state: Shared,
}

impl PushService {
    async fn start(vapid_key: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the push stand-in");
        let addr = listener.local_addr().expect("its address");
        let state = Arc::new(Mutex::new(PushState {
            origin: format!("http://{addr}"),
            vapid_key: vapid_key.to_owned(),
            ..PushState::default()
        }));
        let app = Router::new()
            .route("/", get(push_socket))
            .route("/wpush/{channel}", post(push_endpoint))
            .with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { state }
    }

    fn ws_url(&self) -> String {
        lock(&self.state).origin.replacen("http://", "ws://", 1) + "/"
    }

    fn log(&self) -> String {
        lock(&self.state).log.join("\n")
    }
}

async fn push_socket(State(state): State<Shared>, ws: WebSocketUpgrade) -> Response {
    ws.protocols(["push-notification"])
        .on_upgrade(move |socket| serve_push_socket(state, socket))
}

async fn serve_push_socket(state: Shared, mut socket: WebSocket) {
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let id = {
        let mut st = lock(&state);
        st.conns_opened += 1;
        let id = st.conns_opened;
        st.conn = Some((id, tx.clone()));
        st.hello_done = false;
        st.note(format!("[ws {id}] connected"));
        id
    };
    loop {
        tokio::select! {
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    for reply in on_client_message(&state, id, text.as_str()) {
                        let _ = tx.send(reply);
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    lock(&state).note(format!("[ws {id}] close frame {frame:?}"));
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    lock(&state).note(format!("[ws {id}] error: {e}"));
                    break;
                }
                None => break,
            },
            outgoing = rx.recv() => {
                let Some(text) = outgoing else { break };
                lock(&state).note(format!("[ws {id}] > {}", clip(&text, 300)));
                if socket.send(Message::Text(text.into())).await.is_err() {
                    break;
                }
            }
        }
    }
    let mut st = lock(&state);
    if matches!(st.conn, Some((current, _)) if current == id) {
        st.conn = None;
        st.hello_done = false;
    }
    st.note(format!("[ws {id}] closed"));
}

/// Answers one message from Firefox; returns the replies to send.
fn on_client_message(state: &Shared, id: u64, text: &str) -> Vec<String> {
    let mut st = lock(state);
    st.note(format!("[ws {id}] < {}", clip(text, 300)));
    let Ok(msg) = serde_json::from_str::<Value>(text) else {
        st.note(format!("[ws {id}] not JSON"));
        return Vec::new();
    };
    let channel = msg["channelID"].as_str().unwrap_or_default().to_owned();
    match msg["messageType"].as_str() {
        // `{}` is Firefox's ping; the pong is `{}` too.
        None => vec!["{}".to_owned()],
        Some("hello") => {
            // An existing uaid is kept (a new one would make Firefox drop
            // its subscriptions); a fresh one is issued otherwise.
            let uaid = match msg["uaid"].as_str() {
                Some(u) if !u.is_empty() => u.to_owned(),
                _ => "5f1e0c8a9b2d4e6f8a1b3c5d7e9f0a2b".to_owned(),
            };
            st.hello_done = true;
            let mut replies = vec![json!({
                "messageType": "hello",
                "uaid": uaid,
                "status": 200,
                "use_webpush": true,
                "broadcasts": {},
            })
            .to_string()];
            replies.append(&mut st.pending);
            replies
        }
        Some("register") => {
            let key = msg["key"].as_str().and_then(b64d);
            st.channels.insert(channel.clone(), key);
            let endpoint = format!("{}/wpush/{channel}", st.origin);
            vec![json!({
                "messageType": "register",
                "channelID": channel,
                "status": 200,
                "pushEndpoint": endpoint,
            })
            .to_string()]
        }
        Some("unregister") => {
            st.channels.remove(&channel);
            vec![
                json!({"messageType": "unregister", "channelID": channel, "status": 200})
                    .to_string(),
            ]
        }
        Some("ack") => {
            for update in msg["updates"].as_array().into_iter().flatten() {
                let ch = update["channelID"].as_str().unwrap_or_default().to_owned();
                let version = update["version"].as_str().unwrap_or_default().to_owned();
                let code = update["code"].as_i64().unwrap_or(-1);
                st.acks.push((ch, version, code));
            }
            Vec::new()
        }
        Some("nack") => {
            st.nacks.push(msg.clone());
            Vec::new()
        }
        Some("ping") => vec!["{}".to_owned()],
        Some(other) => {
            st.note(format!("[ws {id}] (ignored {other})"));
            Vec::new()
        }
    }
}

/// A push endpoint: what the node posts for a subscription.
async fn push_endpoint(
    State(state): State<Shared>,
    UrlPath(channel): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut st = lock(&state);
    st.note(format!(
        "[http] POST /wpush/{channel}: {} bytes, content-encoding {:?}, ttl {:?}, urgency {:?}, topic {:?}, authorization {:?}",
        body.len(),
        header_str(&headers, "content-encoding"),
        header_str(&headers, "ttl"),
        header_str(&headers, "urgency"),
        header_str(&headers, "topic"),
        header_str(&headers, "authorization").map(|a| clip(&a, 60)),
    ));
    let checked = check_request(&st, &channel, &headers);
    let outcome = match checked {
        Ok(()) => {
            st.versions += 1;
            let version = format!("parley-test-{}", st.versions);
            let notification = json!({
                "messageType": "notification",
                "channelID": channel,
                "version": version,
                "data": URL_SAFE_NO_PAD.encode(&body),
                "headers": {"encoding": "aes128gcm"},
            })
            .to_string();
            let live = st
                .conn
                .as_ref()
                .filter(|_| st.hello_done)
                .map(|c| c.1.clone());
            match live.map(|tx| tx.send(notification.clone())) {
                Some(Ok(())) => {}
                _ => {
                    st.note("[http] Firefox not connected: queued".to_owned());
                    st.pending.push(notification);
                }
            }
            Ok(version)
        }
        Err(why) => {
            st.note(format!("[http] refused: {why}"));
            Err(why)
        }
    };
    let status = match &outcome {
        Ok(_) => StatusCode::CREATED,
        Err(why) if why.starts_with("unknown channel") => StatusCode::NOT_FOUND,
        Err(_) => StatusCode::UNAUTHORIZED,
    };
    st.posted.push(Posted { channel, outcome });
    status.into_response()
}

/// What autopush checks of a Web Push request, as an error message.
fn check_request(st: &PushState, channel: &str, headers: &HeaderMap) -> Result<(), String> {
    let registered_key = st
        .channels
        .get(channel)
        .ok_or_else(|| format!("unknown channel {channel}"))?;
    let encoding = header_str(headers, "content-encoding").unwrap_or_default();
    if encoding != "aes128gcm" {
        return Err(format!("Content-Encoding {encoding:?}, not aes128gcm"));
    }
    header_str(headers, "ttl")
        .and_then(|t| t.parse::<u64>().ok())
        .ok_or("no numeric TTL header")?;
    let auth = header_str(headers, "authorization").ok_or("no Authorization header")?;
    let rest = auth
        .strip_prefix("vapid ")
        .ok_or_else(|| format!("Authorization is not the vapid scheme: {auth}"))?;
    let (mut t, mut k) = (None, None);
    for part in rest.split(',').map(str::trim) {
        if let Some(v) = part.strip_prefix("t=") {
            t = Some(v);
        } else if let Some(v) = part.strip_prefix("k=") {
            k = Some(v);
        }
    }
    let (t, k) = (t.ok_or("no t=")?, k.ok_or("no k=")?);
    if k != st.vapid_key {
        return Err(format!(
            "k={k} is not the node's VAPID key {}",
            st.vapid_key
        ));
    }
    let key = b64d(k).ok_or("k is not base64url")?;
    if registered_key.as_ref().is_some_and(|r| *r != key) {
        return Err("k is not the key the subscription was made with".into());
    }
    let (header, claims) = verify_es256(t, &key)?;
    if header["alg"] != "ES256" {
        return Err(format!("JWT alg {}", header["alg"]));
    }
    if claims["aud"] != st.origin.as_str() {
        return Err(format!("aud {} is not {}", claims["aud"], st.origin));
    }
    let exp = claims["exp"].as_u64().ok_or("no exp")?;
    let now = unix_now();
    if exp <= now || exp > now + 24 * 3600 {
        return Err(format!("exp {exp} not within 24 h of {now}"));
    }
    let sub = claims["sub"].as_str().unwrap_or_default();
    if !(sub.starts_with("mailto:") || sub.starts_with("https:")) {
        return Err(format!("sub {sub:?}"));
    }
    Ok(())
}

/// Verifies an ES256 JWT with `key` (SEC1 bytes); returns (header, claims).
fn verify_es256(token: &str, key: &[u8]) -> Result<(Value, Value), String> {
    use p256::ecdsa::signature::Verifier as _;
    let (input, sig) = token.rsplit_once('.').ok_or("t is not a JWT")?;
    let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(key).map_err(|e| e.to_string())?;
    let sig = b64d(sig).ok_or("signature is not base64url")?;
    let sig = p256::ecdsa::Signature::from_slice(&sig).map_err(|e| e.to_string())?;
    vk.verify(input.as_bytes(), &sig)
        .map_err(|_| "the JWT signature does not verify with k".to_owned())?;
    let (header, claims) = input.split_once('.').ok_or("t is not a JWT")?;
    let part = |s: &str| -> Result<Value, String> {
        let bytes = b64d(s).ok_or("JWT part is not base64url")?;
        serde_json::from_slice(&bytes).map_err(|e| e.to_string())
    };
    Ok((part(header)?, part(claims)?))
}

// ---------------------------------------------------------------------
// The test page's server.

fn no_store() -> [(header::HeaderName, &'static str); 1] {
    [(header::CACHE_CONTROL, "no-store")]
}

#[derive(Clone)]
struct Page {
    addr: SocketAddr,
    push: Shared,
    vapid_key: String,
    /// `(kind, body)` the page and the service worker reported, in order.
    reports: Arc<Mutex<Vec<(String, Value)>>>,
}

impl Page {
    async fn start(push: &PushService, vapid_key: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the page server");
        let page = Self {
            addr: listener.local_addr().expect("its address"),
            push: push.state.clone(),
            vapid_key: vapid_key.to_owned(),
            reports: Arc::default(),
        };
        let app = Router::new()
            .route(
                "/",
                get(|| async {
                    (
                        no_store(),
                        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                        PAGE_HTML,
                    )
                }),
            )
            .route(
                "/sw.js",
                get(|| async {
                    (
                        no_store(),
                        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                        SW_JS,
                    )
                }),
            )
            .route(
                "/config",
                get(|State(p): State<Page>| async move {
                    (no_store(), Json(json!({"vapid_key": p.vapid_key})))
                }),
            )
            .route(
                "/ready",
                get(|State(p): State<Page>| async move {
                    let ready = lock(&p.push).hello_done;
                    let status = if ready {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    (status, no_store())
                }),
            )
            .route(
                "/report/{kind}",
                post(
                    |State(p): State<Page>, UrlPath(kind): UrlPath<String>, body: Bytes| async move {
                        let value = serde_json::from_slice(&body).unwrap_or_else(|_| {
                            Value::String(String::from_utf8_lossy(&body).into_owned())
                        });
                        lock(&p.reports).push((kind, value));
                        StatusCode::NO_CONTENT
                    },
                ),
            )
            .with_state(page.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        page
    }

    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// The first report of `kind`, or a page error as `Err`.
    fn report(&self, kind: &str) -> Option<Result<Value, String>> {
        let reports = lock(&self.reports);
        if let Some((_, error)) = reports.iter().find(|(k, _)| k == "error") {
            return Some(Err(error.to_string()));
        }
        reports
            .iter()
            .find(|(k, _)| k == kind)
            .map(|(_, v)| Ok(v.clone()))
    }

    async fn wait_report(&self, kind: &str) -> Value {
        until(&format!("the page to report {kind}"), BROWSER_WAIT, || {
            let got = self.report(kind);
            async move { got }
        })
        .await
        .unwrap_or_else(|error| panic!("the page failed: {error}"))
    }

    fn reports_text(&self) -> String {
        lock(&self.reports)
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

// ---------------------------------------------------------------------
// A trap for anything Firefox tries to fetch from beyond loopback.

/// The proxy Firefox is given: records the first line of each request
/// (`CONNECT host:443 HTTP/1.1`, `GET http://host/...`) and refuses it.
struct Trap {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Trap {
    async fn start() -> Self {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the proxy trap");
        let port = listener.local_addr().expect("its address").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 2048];
                    let mut len = 0;
                    let read = tokio::time::timeout(Duration::from_secs(5), async {
                        while len < buf.len() && !buf[..len].contains(&b'\n') {
                            match conn.read(&mut buf[len..]).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => len += n,
                            }
                        }
                    });
                    let _ = read.await;
                    let head = String::from_utf8_lossy(&buf[..len]);
                    let line = head.lines().next().unwrap_or_default().to_owned();
                    lock(&log).push(line);
                    let _ = conn
                        .write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .await;
                });
            }
        });
        Self { port, seen }
    }

    fn seen(&self) -> Vec<String> {
        lock(&self.seen).clone()
    }
}

// ---------------------------------------------------------------------
// Firefox.

/// The prefs of the throwaway profile (`fixtures/firefox-push/user.js`:
/// push permission granted, nothing contacting the internet) and where
/// the push stand-in and the proxy trap listen.
fn user_js(push_url: &str, trap_port: u16) -> String {
    format!(
        "{USER_JS}\n\
         user_pref(\"dom.push.serverURL\", {});\n\
         user_pref(\"network.proxy.http_port\", {trap_port});\n\
         user_pref(\"network.proxy.ssl_port\", {trap_port});\n",
        json!(push_url)
    )
}

/// A headless Firefox on a throwaway profile, killed (its whole process
/// group) on drop, so also when the test panics.
struct Firefox {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Firefox {
    fn start(bin: &Path, push_url: &str, page_url: &str, trap_port: u16) -> Self {
        use std::os::unix::process::CommandExt as _;
        let dir = tempfile::tempdir().expect("a temp dir for Firefox");
        let profile = dir.path().join("profile");
        let home = dir.path().join("home");
        std::fs::create_dir_all(&profile).expect("profile dir");
        std::fs::create_dir_all(&home).expect("home dir");
        std::fs::write(profile.join("user.js"), user_js(push_url, trap_port))
            .expect("writing user.js");
        let log = dir.path().join("firefox.log");
        let out = std::fs::File::create(&log).expect("Firefox's log file");
        let err = out.try_clone().expect("Firefox's log file");
        let child = Command::new(bin)
            .arg("--headless")
            .arg("--no-remote")
            .arg("--profile")
            .arg(&profile)
            .arg(page_url)
            .env("HOME", &home)
            .env("MOZ_HEADLESS", "1")
            .env("MOZ_CRASHREPORTER_DISABLE", "1")
            .env("MOZ_DISABLE_AUTO_SAFE_MODE", "1")
            // Honour services.settings.server (a dummy): release builds
            // ignore it otherwise and fetch from Mozilla's servers.
            .env("MOZ_REMOTE_SETTINGS_DEVTOOLS", "1")
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own process group, so the drop takes its content
            // processes down with it.
            .process_group(0)
            .spawn()
            .expect("spawning firefox-esr");
        Self {
            child,
            log,
            _dir: dir,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Firefox {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Prints everything the test saw when it fails.
struct OnFailure<'a> {
    cluster: &'a TestCluster,
    push: &'a PushService,
    page: &'a Page,
    firefox: &'a Firefox,
    trap: &'a Trap,
}

impl Drop for OnFailure<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "===== page and service worker reports =====\n{}\n\
                 ===== push stand-in protocol log =====\n{}\n\
                 ===== requests for beyond loopback (refused) =====\n{}\n\
                 ===== Firefox output =====\n{}\n{}",
                self.page.reports_text(),
                self.push.log(),
                self.trap.seen().join("\n"),
                self.firefox.log_text(),
                self.cluster.logs(),
            );
        }
    }
}

// ---------------------------------------------------------------------
// The node's side.

/// The cluster's VAPID public key, read through `node`.
async fn vapid_key(node: &Node) -> String {
    Api::new(node.http).vapid_public_key().await
}

// ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firefox_receives_and_decrypts_the_nodes_web_push() {
    let Some(bin) = find_in_path(&["firefox-esr"], &["/usr/lib/firefox-esr/firefox-esr"]) else {
        if std::env::var_os("CI").is_some() {
            panic!("firefox-esr is required in CI (apt-get install firefox-esr)");
        }
        eprintln!("NOTICE: skipping the Firefox push test: firefox-esr is not installed (apt-get install firefox-esr)");
        return;
    };

    let start = std::time::Instant::now();
    let step = |what: &str| eprintln!("[{:6.1} s] {what}", start.elapsed().as_secs_f64());
    let cluster = TestCluster::start_with_config(1, CONFIG).await;
    step("node up");
    let node = &cluster.nodes[0];
    let key = vapid_key(node).await;
    let push = PushService::start(&key).await;
    let page = Page::start(&push, &key).await;
    let trap = Trap::start().await;
    let firefox = Firefox::start(&bin, &push.ws_url(), &page.url(), trap.port);
    let _dump = OnFailure {
        cluster: &cluster,
        push: &push,
        page: &page,
        firefox: &firefox,
        trap: &trap,
    };

    let api = Api::new(node.http);
    let (alice, bob) = (api.user("alice").await, api.user("bob").await);

    // Firefox subscribes through the stand-in with the node's key.
    step("Firefox started");
    let subscription = page.wait_report("subscription").await;
    step("Firefox subscribed");
    let endpoint = subscription["endpoint"].as_str().expect("endpoint");
    assert!(
        endpoint.starts_with(&format!(
            "http://{}/wpush/",
            lock(&push.state).origin.trim_start_matches("http://")
        )),
        "the endpoint is the stand-in's: {subscription}"
    );
    let channel = endpoint.rsplit('/').next().expect("channel").to_owned();
    assert_eq!(
        lock(&push.state).channels.get(&channel).cloned().flatten(),
        b64d(&key),
        "Firefox registered the channel with the node's VAPID key"
    );

    // Bob's device, registered with the node exactly as the page got it.
    let (status, body) = api
        .call(
            "POST",
            "/api/push-subscriptions",
            Some(&bob.token),
            Some(subscription.clone()),
        )
        .await;
    assert_eq!(status, 201, "registering Firefox's subscription: {body}");

    // Alice writes while Bob has no connection at all.
    let text = "Dinner at 8? 🍝 Bring the Füße-warm blanket";
    let mut a = Ws::connect(&node.ws_url(&alice.token))
        .await
        .expect("alice connects");
    a.wait_for("hello", T, |f| f["type"] == "hello").await;
    let (conv_id, seq) = a.send_direct(&bob, "firefox-1", text).await;

    // The service worker got the node's payload, decrypted by Firefox.
    step("alice sent");
    let payload = page.wait_report("push").await;
    step("the service worker got the push");
    assert_eq!(payload["type"], "message", "{payload}");
    assert_eq!(payload["user_id"], bob.id, "{payload}");
    assert_eq!(payload["conv_id"], conv_id, "{payload}");
    assert_eq!(payload["seq"], seq, "{payload}");
    assert_eq!(payload["sender"], alice.id, "{payload}");
    assert_eq!(payload["preview"], text, "{payload}");

    // The stand-in accepted the node's request (aes128gcm, TTL, VAPID
    // signed by the cluster key for this origin) and Firefox acked the
    // message as delivered (100), not as a decryption error (101).
    let posted = lock(&push.state).posted.clone();
    assert_eq!(posted.len(), 1, "one request for one message: {posted:?}");
    assert_eq!(posted[0].channel, channel);
    let version = posted[0]
        .outcome
        .clone()
        .unwrap_or_else(|why| panic!("the stand-in refused the node's request: {why}"));
    let state = push.state.clone();
    let ack = until("Firefox to ack the notification", BROWSER_WAIT, || {
        let found = lock(&state)
            .acks
            .iter()
            .find(|(ch, v, _)| *ch == channel && *v == version)
            .map(|a| a.2);
        async move { found }
    })
    .await;
    assert_eq!(ack, 100, "Firefox acks the message as delivered");

    // The service worker could show it as a notification.
    let shown = page.wait_report("notification").await;
    step("notification shown");
    assert!(
        shown["shown"].as_u64().is_some_and(|n| n >= 1),
        "the notification was shown: {shown}"
    );
    assert!(lock(&push.state).nacks.is_empty(), "no delivery errors");
    eprintln!(
        "Firefox reached for beyond loopback (refused by the trap): {:?}",
        trap.seen()
    );
}

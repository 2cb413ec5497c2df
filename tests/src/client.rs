//! Clients of the public protocol: HTTP JSON calls and a WebSocket that
//! records every frame it receives.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// An HTTP client of one node's API.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
}

/// A registered, logged-in user.
#[derive(Debug, Clone)]
pub struct User {
    /// Their id.
    pub id: u64,
    /// Their name.
    pub name: String,
    /// A bearer token.
    pub token: String,
}

impl Api {
    /// A client of the gateway at `http://{addr}`.
    pub fn new(addr: std::net::SocketAddr) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: format!("http://{addr}"),
        }
    }

    /// A client of the gateway at `https://{addr}`, trusting the CA in
    /// the PEM file `ca` (and no other).
    pub fn https(addr: std::net::SocketAddr, ca: &std::path::Path) -> Self {
        Self {
            http: https_client(ca),
            base: format!("https://{addr}"),
        }
    }

    /// Any call: returns the status and the JSON body (`Null` when empty).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("HTTP request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    /// A raw request body (for malformed JSON tests).
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.expect("HTTP request");
        let status = resp.status().as_u16();
        let value = resp.json().await.unwrap_or(Value::Null);
        (status, value)
    }

    /// Registers and logs in `name` (password "correct horse").
    pub async fn user(&self, name: &str) -> User {
        let (status, body) = self
            .call(
                "POST",
                "/api/register",
                None,
                Some(json!({"name": name, "password": "correct horse"})),
            )
            .await;
        assert_eq!(status, 201, "register {name}: {body}");
        self.login(name).await
    }

    /// Logs in an existing user.
    pub async fn login(&self, name: &str) -> User {
        let (status, body) = self
            .call(
                "POST",
                "/api/login",
                None,
                Some(json!({"name": name, "password": "correct horse"})),
            )
            .await;
        assert_eq!(status, 200, "login {name}: {body}");
        User {
            id: body["user"]["id"].as_u64().expect("user id"),
            name: name.to_owned(),
            token: body["token"].as_str().expect("token").to_owned(),
        }
    }

    /// Creates a group of `creator` with `members`; returns its id.
    pub async fn group(&self, creator: &User, name: &str, members: &[&User]) -> u64 {
        let ids: Vec<u64> = members.iter().map(|u| u.id).collect();
        let (status, body) = self
            .call(
                "POST",
                "/api/groups",
                Some(&creator.token),
                Some(json!({"name": name, "members": ids})),
            )
            .await;
        assert_eq!(status, 201, "create group: {body}");
        body["id"].as_u64().expect("group id")
    }

    /// `by` adds `user` to `group`; asserts the 201.
    pub async fn add_member(&self, by: &User, group: u64, user: &User) {
        let (status, body) = self
            .call(
                "POST",
                &format!("/api/groups/{group}/members"),
                Some(&by.token),
                Some(json!({"user_id": user.id})),
            )
            .await;
        assert_eq!(status, 201, "add member: {body}");
    }

    /// The cluster's VAPID public key (base64url), as browsers get it.
    pub async fn vapid_public_key(&self) -> String {
        let (status, body) = self
            .call("GET", "/api/push/vapid-public-key", None, None)
            .await;
        assert_eq!(status, 200, "vapid-public-key: {body}");
        body["public_key"].as_str().expect("public_key").to_owned()
    }

    /// Opens the direct chat of `a` with `b`; returns its id.
    pub async fn direct(&self, a: &User, b: &User) -> u64 {
        let (status, body) = self
            .call(
                "POST",
                &format!("/api/direct/{}", b.id),
                Some(&a.token),
                None,
            )
            .await;
        assert_eq!(status, 200, "open direct chat: {body}");
        body["id"].as_u64().expect("conversation id")
    }
}

type Sink = SplitSink<WebSocketStream<MaybeTlsStream<TcpStream>>, Message>;

#[derive(Default)]
struct Recorded {
    frames: Vec<Value>,
    closed: Option<(u16, String)>,
    ended: bool,
}

/// A WebSocket client that records every frame it receives.
pub struct Ws {
    sink: Sink,
    recorded: Arc<Mutex<Recorded>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Ws {
    /// Connects; `Err` carries the HTTP status when the upgrade is refused.
    pub async fn connect(url: &str) -> Result<Self, String> {
        Self::connect_with(url, None).await
    }

    /// Connects to a `wss://` URL whose certificate chains to the CA in
    /// the PEM file `ca`.
    pub async fn connect_tls(url: &str, ca: &std::path::Path) -> Result<Self, String> {
        Self::connect_with(
            url,
            Some(tokio_tungstenite::Connector::Rustls(rustls_config(ca))),
        )
        .await
    }

    async fn connect_with(
        url: &str,
        connector: Option<tokio_tungstenite::Connector>,
    ) -> Result<Self, String> {
        let (stream, _) =
            tokio_tungstenite::connect_async_tls_with_config(url, None, false, connector)
                .await
                .map_err(|e| e.to_string())?;
        let (sink, mut source) = stream.split();
        let recorded = Arc::new(Mutex::new(Recorded::default()));
        let rec = recorded.clone();
        let reader = tokio::spawn(async move {
            while let Some(msg) = source.next().await {
                let mut r = rec.lock().expect("recorded");
                match msg {
                    Ok(Message::Text(text)) => {
                        let v =
                            serde_json::from_str(&text).unwrap_or(Value::String(text.to_string()));
                        r.frames.push(v);
                    }
                    Ok(Message::Close(frame)) => {
                        r.closed = Some(
                            frame
                                .map(|f| (u16::from(f.code), f.reason.to_string()))
                                .unwrap_or((1005, String::new())),
                        );
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            rec.lock().expect("recorded").ended = true;
        });
        Ok(Self {
            sink,
            recorded,
            reader,
        })
    }

    /// Sends a JSON frame.
    pub async fn send(&mut self, frame: Value) {
        self.send_text(&frame.to_string()).await;
    }

    /// Sends raw text.
    pub async fn send_text(&mut self, text: &str) {
        let _ = self.sink.send(Message::Text(text.to_owned().into())).await;
    }

    /// Sends a direct message to `to` and waits (up to 20 s) for its
    /// `sent`: its (conversation, seq).
    pub async fn send_direct(&mut self, to: &User, id: &str, body: &str) -> (u64, u64) {
        self.send(json!({"type": "send", "to_user": to.id, "client_msg_id": id, "body": body}))
            .await;
        let sent = self
            .wait_for("sent", Duration::from_secs(20), |f| {
                f["type"] == "sent" && f["client_msg_id"] == id
            })
            .await;
        (
            sent["conv_id"].as_u64().expect("conv_id"),
            sent["seq"].as_u64().expect("seq"),
        )
    }

    /// Sends `id` (its own body) to `conv` until it is acknowledged, as a
    /// careful client does: again with the same `client_msg_id` after each
    /// `error` naming it and at least every `resend_every`. Returns its
    /// seq; panics past `within`.
    pub async fn send_until_sent(
        &mut self,
        conv: u64,
        id: &str,
        resend_every: Duration,
        within: Duration,
    ) -> u64 {
        let start = std::time::Instant::now();
        let frame = json!({"type":"send","conv_id": conv,"client_msg_id": id,"body": id});
        let mut errors = 0;
        let mut last_try = std::time::Instant::now();
        self.send(frame.clone()).await;
        loop {
            let answers: Vec<Value> = self
                .frames()
                .into_iter()
                .filter(|f| {
                    (f["type"] == "sent" && f["client_msg_id"] == id)
                        || (f["type"] == "error" && f["ref"] == id)
                })
                .collect();
            if let Some(sent) = answers.iter().find(|f| f["type"] == "sent") {
                eprintln!("{id}: acknowledged after {:?}", start.elapsed());
                return sent["seq"].as_u64().expect("seq");
            }
            if answers.len() > errors || last_try.elapsed() >= resend_every {
                errors = answers.len();
                last_try = std::time::Instant::now();
                self.send(frame.clone()).await;
            }
            assert!(
                start.elapsed() < within,
                "{id} not acknowledged within {within:?} ({errors} errors)"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Sends a frame carrying a `client_msg_id` (a send, an edit, a
    /// deletion, a reaction) and waits (up to 20 s) for its answer: the
    /// `sent` or `error` frame naming it (by `client_msg_id` or `ref`).
    pub async fn request(&mut self, frame: Value) -> Value {
        let id = frame["client_msg_id"]
            .as_str()
            .expect("a frame with a client_msg_id")
            .to_owned();
        self.send(frame).await;
        self.wait_for(
            &format!("the answer to {id}"),
            Duration::from_secs(20),
            |f| {
                (f["type"] == "sent" || f["type"] == "error")
                    && (f["client_msg_id"] == id.as_str() || f["ref"] == id.as_str())
            },
        )
        .await
    }

    /// [`Ws::request`] that must succeed: the seq its `sent` gives.
    pub async fn request_seq(&mut self, frame: Value) -> u64 {
        let got = self.request(frame).await;
        assert_eq!(got["type"], "sent", "{got}");
        got["seq"].as_u64().expect("seq")
    }

    /// Every frame received so far.
    pub fn frames(&self) -> Vec<Value> {
        self.recorded.lock().expect("recorded").frames.clone()
    }

    /// The frames of a given type received so far.
    pub fn of_type(&self, kind: &str) -> Vec<Value> {
        self.frames()
            .into_iter()
            .filter(|f| f["type"] == kind)
            .collect()
    }

    /// The close code and reason, once the server closed the socket.
    pub fn closed(&self) -> Option<(u16, String)> {
        self.recorded.lock().expect("recorded").closed.clone()
    }

    /// Whether the connection has ended (closed or broken).
    pub fn ended(&self) -> bool {
        self.recorded.lock().expect("recorded").ended
    }

    /// Waits for the first received frame matching `pred`.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        crate::wait::until(what, timeout, || {
            let found = self.frames().into_iter().find(|f| pred(f));
            async move { found }
        })
        .await
    }

    /// Waits until at least `n` received frames match `pred`.
    pub async fn wait_for_n(
        &self,
        what: &str,
        n: usize,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        crate::wait::until(what, timeout, || {
            let found: Vec<Value> = self.frames().into_iter().filter(|f| pred(f)).collect();
            async move { (found.len() >= n).then_some(found) }
        })
        .await
    }

    /// Closes the socket.
    pub async fn close(mut self) {
        let _ = self.sink.send(Message::Close(None)).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.reader).await;
    }
}

impl Drop for Ws {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// A reqwest client trusting only the CA in the PEM file `ca`.
pub fn https_client(ca: &std::path::Path) -> reqwest::Client {
    let pem = std::fs::read(ca).expect("reading the CA");
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA certificate"))
        .build()
        .expect("an HTTPS client")
}

/// A rustls client config trusting only the CA in the PEM file `ca`.
fn rustls_config(ca: &std::path::Path) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).expect("reading the CA") {
        roots
            .add(cert.expect("CA certificate"))
            .expect("adding the CA");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    Arc::new(config)
}

//! Simulated users chatting through the public protocol only (HTTP
//! register, login, direct chats and groups; the `/ws` JSON frames), each
//! behaving like a careful client: it keeps its unacknowledged sends,
//! reconnects to another running node with jittered backoff when its
//! socket closes, errors or hangs, and resends them with the same
//! `client_msg_id`. What they see feeds the [`Invariants`].

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use super::invariants::Invariants;
use super::supervisor::Supervisor;

/// A node that sent nothing (not even a pong) for this long is hung.
const HUNG_AFTER: Duration = Duration::from_secs(3);
/// A send still unacknowledged this long after its last attempt is resent
/// on the same connection (idempotent: same `client_msg_id`).
const RESEND_AFTER: Duration = Duration::from_secs(5);
/// How long stopping waits for pending sends and deliveries to drain.
const DRAIN: Duration = Duration::from_secs(15);

/// What the generator runs: `users` users, `rate` messages per second in
/// all, groups of `group_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficSettings {
    /// Simulated users, 2 to 200.
    pub users: usize,
    /// Messages per second in all, 1 to 2000.
    pub rate: u32,
    /// Members per group, 2 to 50 (and at most `users`).
    pub group_size: usize,
}

impl TrafficSettings {
    /// Refuses settings outside the lab's bounds.
    pub fn validate(&self) -> Result<(), String> {
        if !(2..=200).contains(&self.users) {
            return Err("users must be 2 to 200".into());
        }
        if !(1..=2000).contains(&self.rate) {
            return Err("rate must be 1 to 2000 messages per second".into());
        }
        if !(2..=50).contains(&self.group_size) || self.group_size > self.users {
            return Err("group_size must be 2 to 50, and at most users".into());
        }
        Ok(())
    }
}

/// A running generator.
pub struct Traffic {
    settings: TrafficSettings,
    rate: watch::Sender<u32>,
    stop: watch::Sender<bool>,
    phase: Arc<Mutex<String>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct LabUser {
    id: u64,
    token: String,
}

struct Send {
    conv_id: u64,
    client_msg_id: String,
    body: String,
    created: Instant,
}

struct Shared {
    supervisor: Arc<Supervisor>,
    invariants: Arc<Invariants>,
    unacked: Arc<AtomicU64>,
    phase: Arc<Mutex<String>>,
}

impl Shared {
    fn set_phase(&self, phase: &str) {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = phase.to_owned();
    }
}

impl Traffic {
    /// Starts users and conversations, then sends at `settings.rate`.
    pub fn start(
        settings: TrafficSettings,
        supervisor: Arc<Supervisor>,
        invariants: Arc<Invariants>,
        unacked: Arc<AtomicU64>,
    ) -> Self {
        let (rate, rate_rx) = watch::channel(settings.rate);
        let (stop, stop_rx) = watch::channel(false);
        let phase = Arc::new(Mutex::new("setting up".to_owned()));
        let shared = Shared {
            supervisor,
            invariants,
            unacked,
            phase: phase.clone(),
        };
        let task = tokio::spawn(async move {
            if let Err(e) = run(settings, shared.clone_ref(), rate_rx, stop_rx).await {
                tracing::warn!(error = %e, "lab traffic failed");
                shared.set_phase(&format!("failed: {e}"));
            }
        });
        Self {
            settings,
            rate,
            stop,
            phase,
            task,
        }
    }

    /// Its settings.
    pub fn settings(&self) -> TrafficSettings {
        self.settings
    }

    /// What it is doing: setting up, running, draining, stopped, failed.
    pub fn phase(&self) -> String {
        self.phase.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Applies new settings in place when only the rate changed; returns
    /// false when the generator must be restarted for them.
    pub fn reconfigure(&mut self, settings: TrafficSettings) -> bool {
        if settings.users != self.settings.users || settings.group_size != self.settings.group_size
        {
            return false;
        }
        self.settings = settings;
        let _ = self.rate.send(settings.rate);
        true
    }

    /// Stops sending, waits (up to 15 s) for pending sends and deliveries,
    /// then closes every client. The handle completes when all are closed.
    pub fn stop(self) -> tokio::task::JoinHandle<()> {
        let _ = self.stop.send(true);
        self.task
    }
}

impl Shared {
    fn clone_ref(&self) -> Self {
        Self {
            supervisor: self.supervisor.clone(),
            invariants: self.invariants.clone(),
            unacked: self.unacked.clone(),
            phase: self.phase.clone(),
        }
    }
}

/// An HTTP call to any running node, retried on other nodes when one
/// does not answer.
async fn call(
    http: &reqwest::Client,
    shared: &Shared,
    path: &str,
    token: Option<&str>,
    body: Value,
    want: u16,
) -> Result<Value, String> {
    let mut last = String::from("no running node");
    for attempt in 0..6u32 {
        let nodes = shared.supervisor.running();
        let pick = rand::thread_rng().gen_range(0..nodes.len().max(1));
        if let Some((_, url)) = nodes.get(pick) {
            let mut req = http.post(format!("{url}{path}")).json(&body);
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            match req.send().await {
                Ok(r) if r.status().as_u16() == want => {
                    return r.json().await.map_err(|e| format!("{path}: {e}"));
                }
                Ok(r) => {
                    let status = r.status();
                    last = format!("{path}: {status} {}", r.text().await.unwrap_or_default());
                    if status.is_client_error() && status.as_u16() != 429 {
                        return Err(last);
                    }
                }
                Err(e) => last = format!("{path}: {e}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt + 1))).await;
    }
    Err(last)
}

async fn run(
    settings: TrafficSettings,
    shared: Shared,
    mut rate_rx: watch::Receiver<u32>,
    mut stop_rx: watch::Receiver<bool>,
) -> Result<(), String> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let prefix: String = {
        let letters = b"abcdefghjkmnpqrstvwxyz";
        let mut rng = rand::thread_rng();
        (0..6)
            .map(|_| letters[rng.gen_range(0..letters.len())] as char)
            .collect()
    };
    // Register and log in, a few at a time (password hashing is slow).
    let users: Vec<Result<LabUser, String>> = futures_util::stream::iter(0..settings.users)
        .map(|i| {
            let http = &http;
            let shared = &shared;
            let name = format!("lab{prefix}u{i}");
            async move {
                let cred = json!({"name": name, "password": "lab password"});
                call(http, shared, "/api/register", None, cred.clone(), 201).await?;
                let login = call(http, shared, "/api/login", None, cred, 200).await?;
                Ok(LabUser {
                    id: login["user"]["id"]
                        .as_u64()
                        .ok_or("login without user id")?,
                    token: login["token"]
                        .as_str()
                        .ok_or("login without token")?
                        .to_owned(),
                })
            }
        })
        .buffered(4)
        .collect()
        .await;
    let users: Vec<LabUser> = users.into_iter().collect::<Result<_, _>>()?;
    if *stop_rx.borrow() {
        shared.set_phase("stopped");
        return Ok(());
    }
    // Direct chats between neighbours, groups of group_size.
    let mut convs: Vec<(u64, Vec<usize>)> = Vec::new();
    let n = users.len();
    for i in (0..n).step_by(2) {
        let j = if i + 1 < n { i + 1 } else { 0 };
        if i == j {
            continue;
        }
        let path = format!("/api/direct/{}", users[j].id);
        let conv = call(
            &http,
            &shared,
            &path,
            Some(&users[i].token),
            Value::Null,
            200,
        )
        .await?;
        let id = conv["id"].as_u64().ok_or("direct chat without id")?;
        convs.push((id, vec![i, j]));
    }
    let indexes: Vec<usize> = (0..n).collect();
    for (k, chunk) in indexes.chunks(settings.group_size).enumerate() {
        if chunk.len() < 2 {
            continue;
        }
        let members: Vec<u64> = chunk[1..].iter().map(|&m| users[m].id).collect();
        let body = json!({"name": format!("lab group {k}"), "members": members});
        let conv = call(
            &http,
            &shared,
            "/api/groups",
            Some(&users[chunk[0]].token),
            body,
            201,
        )
        .await?;
        let id = conv["id"].as_u64().ok_or("group without id")?;
        convs.push((id, chunk.to_vec()));
    }
    for (id, members) in &convs {
        shared.invariants.set_members(*id, members.clone());
    }
    // One client per user, spread round robin over the nodes.
    let mut senders = Vec::with_capacity(n);
    let mut clients = Vec::with_capacity(n);
    for (i, user) in users.iter().enumerate() {
        let (tx, rx) = mpsc::unbounded_channel();
        senders.push(tx);
        clients.push(tokio::spawn(client(
            i,
            user.clone(),
            shared.clone_ref(),
            rx,
        )));
    }
    // Who may send where: every member of every conversation.
    let mut slots: Vec<(usize, u64)> = convs
        .iter()
        .flat_map(|(id, m)| m.iter().map(move |&u| (u, *id)))
        .collect();
    {
        let mut rng = rand::thread_rng();
        for i in (1..slots.len()).rev() {
            slots.swap(i, rng.gen_range(0..=i));
        }
    }
    shared.set_phase("running");
    // Open loop: credits accrue at `rate` per second whatever the answers.
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = Instant::now();
    let mut credit = 0.0f64;
    let mut counter = 0u64;
    let mut slot = 0usize;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop_rx.changed() => {}
        }
        if *stop_rx.borrow() {
            break;
        }
        let now = Instant::now();
        let rate = f64::from(*rate_rx.borrow_and_update());
        credit = (credit + rate * now.duration_since(last).as_secs_f64()).min(rate.max(1.0));
        last = now;
        while credit >= 1.0 && !slots.is_empty() {
            credit -= 1.0;
            counter += 1;
            let (user, conv_id) = slots[slot % slots.len()];
            slot += 1;
            shared.invariants.on_created();
            let send = Send {
                conv_id,
                client_msg_id: format!("lab-{prefix}-{counter}"),
                body: format!("lab message {counter} from user {user}"),
                created: now,
            };
            if let Some(tx) = senders.get(user) {
                let _ = tx.send(send);
            }
        }
    }
    // Drain: wait for every send to be acknowledged and delivered.
    shared.set_phase("draining");
    let deadline = Instant::now() + DRAIN;
    while Instant::now() < deadline {
        let c = shared
            .invariants
            .snapshot(shared.unacked.load(Ordering::Relaxed));
        if c.unacked_sends == 0 && c.pending_delivery == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(senders);
    for c in clients {
        let _ = tokio::time::timeout(Duration::from_secs(5), c).await;
    }
    shared.set_phase("stopped");
    Ok(())
}

struct Pending {
    send: Send,
    last_attempt: Instant,
}

fn send_frame(send: &Send) -> Message {
    Message::text(
        json!({
            "type": "send",
            "conv_id": send.conv_id,
            "client_msg_id": send.client_msg_id,
            "body": send.body,
        })
        .to_string(),
    )
}

/// One simulated user: one device (`lab-<i>`) connected to one node at a
/// time, starting at node `i` round robin.
async fn client(idx: usize, user: LabUser, shared: Shared, mut rx: mpsc::UnboundedReceiver<Send>) {
    let mut pending: BTreeMap<u64, Pending> = BTreeMap::new();
    let mut order: HashMap<String, u64> = HashMap::new();
    let mut next_order = 0u64;
    let mut node_i = idx;
    let mut failures = 0u32;
    let mut connected_before = false;
    'outer: loop {
        if rx.is_closed() && rx.is_empty() {
            break;
        }
        let nodes = shared.supervisor.running();
        let Some((name, url)) = nodes.get(node_i % nodes.len().max(1)).cloned() else {
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        };
        let ws_url = format!(
            "{}/ws?token={}&device_id=lab-{idx}",
            url.replacen("http://", "ws://", 1),
            user.token
        );
        let connected = tokio::time::timeout(
            HUNG_AFTER,
            tokio_tungstenite::connect_async(ws_url.as_str()),
        )
        .await;
        let socket = match connected {
            Ok(Ok((socket, _))) => Some(socket),
            Ok(Err(e)) => {
                tracing::debug!(client = idx, node = %name, error = %e, "connect failed");
                None
            }
            Err(_) => None,
        };
        if let Some(socket) = socket {
            if connected_before {
                shared.invariants.on_reconnect();
            }
            connected_before = true;
            let (mut write, mut read) = socket.split();
            let mut alive = true;
            for p in pending.values_mut() {
                p.last_attempt = Instant::now();
                if write.send(send_frame(&p.send)).await.is_err() {
                    alive = false;
                    break;
                }
            }
            let mut last_rx = Instant::now();
            let mut ping = tokio::time::interval(Duration::from_secs(1));
            while alive {
                tokio::select! {
                    cmd = rx.recv() => match cmd {
                        None => {
                            let _ = write.send(Message::Close(None)).await;
                            break 'outer;
                        }
                        Some(send) => {
                            let frame = send_frame(&send);
                            next_order += 1;
                            order.insert(send.client_msg_id.clone(), next_order);
                            pending.insert(next_order, Pending { send, last_attempt: Instant::now() });
                            shared.unacked.fetch_add(1, Ordering::Relaxed);
                            if write.send(frame).await.is_err() {
                                alive = false;
                            }
                        }
                    },
                    frame = read.next() => match frame {
                        Some(Ok(Message::Text(text))) => {
                            last_rx = Instant::now();
                            let Ok(v) = serde_json::from_str::<Value>(&text) else { continue };
                            match v["type"].as_str() {
                                Some("hello") => failures = 0,
                                Some("sent") => {
                                    let cmid = v["client_msg_id"].as_str().unwrap_or_default();
                                    if let (Some(o), Some(conv), Some(seq)) =
                                        (order.remove(cmid), v["conv_id"].as_u64(), v["seq"].as_u64())
                                    {
                                        if let Some(p) = pending.remove(&o) {
                                            shared.unacked.fetch_sub(1, Ordering::Relaxed);
                                            shared.invariants.on_sent(
                                                user.id, cmid, conv, seq, p.send.created.elapsed(),
                                            );
                                        }
                                    }
                                }
                                Some("message") => {
                                    if let (Some(conv), Some(seq), Some(sender)) =
                                        (v["conv_id"].as_u64(), v["seq"].as_u64(), v["sender"].as_u64())
                                    {
                                        let cmid = v["client_msg_id"].as_str().unwrap_or_default();
                                        shared.invariants.on_message(idx, conv, seq, sender, cmid);
                                        let ack = json!({"type":"ack","conv_id":conv,"seq":seq,"kind":"delivered"});
                                        if write.send(Message::text(ack.to_string())).await.is_err() {
                                            alive = false;
                                        }
                                    }
                                }
                                Some("error") => {
                                    tracing::debug!(client = idx, node = %name, frame = %text, "error frame");
                                    // A failed send is retried at the next tick.
                                    if let Some(o) = v["ref"].as_str().and_then(|r| order.get(r)) {
                                        if let Some(p) = pending.get_mut(o) {
                                            p.last_attempt = Instant::now()
                                                .checked_sub(RESEND_AFTER - Duration::from_millis(500))
                                                .unwrap_or(p.last_attempt);
                                        }
                                    }
                                }
                                _ => {}
                            }
                        }
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => alive = false,
                        Some(Ok(_)) => last_rx = Instant::now(),
                    },
                    _ = ping.tick() => {
                        if last_rx.elapsed() > HUNG_AFTER {
                            tracing::debug!(client = idx, node = %name, "node hung");
                            alive = false;
                            continue;
                        }
                        let mut frames = vec![Message::text(r#"{"type":"ping"}"#)];
                        for p in pending.values_mut() {
                            if p.last_attempt.elapsed() >= RESEND_AFTER {
                                p.last_attempt = Instant::now();
                                frames.push(send_frame(&p.send));
                            }
                        }
                        for f in frames {
                            if write.send(f).await.is_err() {
                                alive = false;
                                break;
                            }
                        }
                    }
                }
            }
        }
        // Lost (or never had) the connection: another node, after a
        // jittered, growing pause.
        failures = failures.saturating_add(1);
        node_i += 1;
        let base =
            Duration::from_millis(100 * 2u64.pow(failures.min(4))).min(Duration::from_secs(2));
        let jitter = rand::thread_rng().gen_range(0.5..1.0);
        tokio::time::sleep(base.mul_f64(jitter)).await;
    }
    shared
        .unacked
        .fetch_sub(pending.len() as u64, Ordering::Relaxed);
}

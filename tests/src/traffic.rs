//! A traffic driver for cluster and chaos tests.
//!
//! [`Driver::start`] runs one client task per user. Each task speaks the
//! public WebSocket protocol like a real client would:
//!
//! - it sends paced messages (`send` with a fresh `client_msg_id`) to its
//!   conversations in turn;
//! - it resends every unacknowledged message, with the same
//!   `client_msg_id`, after a timeout, and sooner after an `unavailable` or
//!   `rate_limited` error;
//! - when its socket ends (closed by the server, broken by a killed node)
//!   or stalls (nothing heard, not even a `pong`, for a while: a hung node)
//!   it reconnects to the next node, resends what is unacknowledged and
//!   asks for a `sync` from its own watermarks; an *impatient* client
//!   (every `impatient_every`-th) resends at once and never sends `sync`,
//!   relying on the documented automatic sync at connect;
//! - it acknowledges delivery (`ack` / `delivered`) of what it holds, so
//!   the automatic sync at connect stays short.
//!
//! Everything it sees is recorded in a [`Log`]: each send and its `sent`
//! acknowledgement (client_msg_id → seq), each `message` (deduplicated by
//! seq, conflicting copies kept aside), `presence` frames, `error` frames
//! and the connections it made. [`Driver::verify`] checks the logs against
//! the stored histories ([`history`]).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::client::{Api, User};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Sink = SplitSink<Socket, Message>;
type Source = SplitStream<Socket>;

/// A stored or received message: (sender, client_msg_id).
pub type Entry = (u64, String);

/// A conversation's messages by seq.
pub type History = BTreeMap<u64, Entry>;

/// How the clients behave.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Each client sends a new message this often (to its conversations
    /// in turn). Keep it under the server's per-user rate limit.
    pub send_every: Duration,
    /// An unacknowledged message is sent again after this long.
    pub resend_after: Duration,
    /// After an `unavailable` or `rate_limited` error, resend this soon.
    pub retry_after_error: Duration,
    /// Send a `ping` when nothing was heard for this long.
    pub ping_after: Duration,
    /// Give the connection up (and reconnect elsewhere) when nothing was
    /// heard for this long.
    pub stall_after: Duration,
    /// Give up connecting to a node after this long (a hung node accepts
    /// TCP connections but never answers the upgrade).
    pub connect_timeout: Duration,
    /// Pause between failed connection attempts.
    pub reconnect_pause: Duration,
    /// Acknowledge delivery this often.
    pub ack_every: Duration,
    /// Every n-th client (by index, starting with the first) is impatient:
    /// it never sends `sync` (neither after a reconnect nor when asked),
    /// so what it holds is what the server's automatic sync and live
    /// delivery gave it. 0: none.
    pub impatient_every: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            send_every: Duration::from_millis(250),
            resend_after: Duration::from_millis(1000),
            retry_after_error: Duration::from_millis(250),
            ping_after: Duration::from_millis(500),
            stall_after: Duration::from_millis(2000),
            connect_timeout: Duration::from_millis(1000),
            reconnect_pause: Duration::from_millis(100),
            ack_every: Duration::from_millis(500),
            impatient_every: 2,
        }
    }
}

/// One simulated user.
#[derive(Debug, Clone)]
pub struct Member {
    /// Who (with a token).
    pub user: User,
    /// The conversations it sends to and expects messages of.
    pub convs: Vec<u64>,
    /// The index of the node it connects to first.
    pub node: usize,
}

/// The `sent` acknowledgement of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// Its seq.
    pub seq: u64,
    /// When the server committed it (ms since the Unix epoch).
    pub sent_at: u64,
    /// When the client read the acknowledgement.
    pub at: Instant,
}

/// One message a client sent, with its resends.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The conversation.
    pub conv: u64,
    /// When it was first sent.
    pub first: Instant,
    /// When it is due to be sent again if still unacknowledged.
    pub retry_at: Instant,
    /// How many times it was sent.
    pub tries: u32,
    /// The first acknowledgement.
    pub ack: Option<Ack>,
}

/// A `presence` frame as received.
#[derive(Debug, Clone, Copy)]
pub struct Presence {
    /// When it was read.
    pub at: Instant,
    /// Whose presence.
    pub user_id: u64,
    /// Online or not.
    pub online: bool,
}

/// One WebSocket connection of a client.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The node index it went to.
    pub node: usize,
    /// When the socket opened.
    pub opened: Instant,
    /// When `hello` arrived.
    pub hello: Option<Instant>,
    /// When it ended.
    pub ended: Option<Instant>,
    /// The close code and reason, if the server closed it.
    pub close: Option<(u16, String)>,
    /// Why it ended ("closed", "eof", "stalled", ...).
    pub why: String,
}

/// Everything one client recorded.
#[derive(Debug, Clone, Default)]
pub struct Log {
    /// The user.
    pub user_id: u64,
    /// Its conversations.
    pub convs: Vec<u64>,
    /// Every message it sent, by client_msg_id.
    pub attempts: BTreeMap<String, Attempt>,
    /// client_msg_ids in the order they were first sent.
    pub sent_order: Vec<String>,
    /// Messages received, per conversation, deduplicated by seq.
    pub received: BTreeMap<u64, History>,
    /// `message` frames that repeated one already held (at-least-once).
    pub duplicate_frames: u64,
    /// Contradictions seen: a seq with two different messages, a message
    /// acknowledged with two different seqs.
    pub conflicts: Vec<String>,
    /// `presence` frames.
    pub presence: Vec<Presence>,
    /// `error` frames.
    pub errors: Vec<Value>,
    /// Connections, oldest first.
    pub connections: Vec<Connection>,
    /// Connection attempts that failed or timed out.
    pub failed_connects: u64,
    /// `synced` frames.
    pub synced: u64,
}

impl Log {
    /// The node the client is connected to now (after `hello`).
    pub fn current_node(&self) -> Option<usize> {
        self.connections
            .last()
            .filter(|c| c.hello.is_some() && c.ended.is_none())
            .map(|c| c.node)
    }

    /// The highest seq up to which the client holds every message of `conv`.
    pub fn watermark(&self, conv: u64) -> u64 {
        self.received.get(&conv).map_or(0, contiguous)
    }

    /// Messages sent and not acknowledged yet.
    pub fn unacked(&self) -> impl Iterator<Item = (&String, &Attempt)> {
        self.attempts.iter().filter(|(_, a)| a.ack.is_none())
    }

    /// Acknowledgements, with the conversation: (client_msg_id, conv, ack).
    pub fn acks(&self) -> impl Iterator<Item = (&String, u64, Ack)> {
        self.attempts
            .iter()
            .filter_map(|(id, a)| a.ack.map(|ack| (id, a.conv, ack)))
    }

    /// Whether it saw `user_id` go offline (or online) after `since`; when.
    pub fn presence_after(&self, user_id: u64, online: bool, since: Instant) -> Option<Instant> {
        self.presence
            .iter()
            .find(|p| p.user_id == user_id && p.online == online && p.at > since)
            .map(|p| p.at)
    }

    /// The last presence state it was told for `user_id`.
    pub fn last_presence(&self, user_id: u64) -> Option<bool> {
        self.presence
            .iter()
            .rev()
            .find(|p| p.user_id == user_id)
            .map(|p| p.online)
    }
}

/// The highest `n` such that seqs 1..=n are all in `history`.
pub fn contiguous(history: &History) -> u64 {
    let mut n = 0;
    for &seq in history.keys() {
        if seq != n + 1 {
            break;
        }
        n = seq;
    }
    n
}

/// What the clients do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Send new messages (and resend).
    Sending,
    /// Only resend what is unacknowledged.
    Draining,
    /// Close and stop.
    Stopped,
}

/// Totals over every client.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Clients.
    pub clients: usize,
    /// Distinct messages sent.
    pub sent: usize,
    /// Of those, acknowledged.
    pub acked: usize,
    /// Extra sends of the same messages.
    pub resends: u64,
    /// Connections beyond each client's first.
    pub reconnects: usize,
    /// Failed connection attempts.
    pub failed_connects: u64,
    /// Duplicate `message` frames received (deduplicated by seq).
    pub duplicate_frames: u64,
    /// `error` frames by code.
    pub errors: BTreeMap<String, u64>,
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} clients: {} messages sent, {} acknowledged, {} resends, {} reconnects, \
             {} failed connects, {} duplicate frames, errors {:?}",
            self.clients,
            self.sent,
            self.acked,
            self.resends,
            self.reconnects,
            self.failed_connects,
            self.duplicate_frames,
            self.errors
        )
    }
}

/// The running clients.
pub struct Driver {
    logs: Vec<Arc<Mutex<Log>>>,
    phase: watch::Sender<Phase>,
    sync: watch::Sender<u64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn lock(log: &Mutex<Log>) -> MutexGuard<'_, Log> {
    log.lock().unwrap_or_else(|e| e.into_inner())
}

impl Driver {
    /// Starts one client per member against the gateways at `nodes` (a
    /// node's address stays the same across its restarts).
    pub fn start(nodes: &[SocketAddr], members: Vec<Member>, settings: Settings) -> Self {
        assert!(!nodes.is_empty(), "no nodes");
        let nodes = Arc::new(nodes.to_vec());
        let (phase, _) = watch::channel(Phase::Sending);
        let (sync, _) = watch::channel(0u64);
        let mut logs = Vec::new();
        let mut tasks = Vec::new();
        let count = members.len().max(1) as u32;
        for (i, member) in members.into_iter().enumerate() {
            assert!(!member.convs.is_empty(), "a member without conversations");
            let log = Arc::new(Mutex::new(Log {
                user_id: member.user.id,
                convs: member.convs.clone(),
                ..Log::default()
            }));
            logs.push(log.clone());
            let client = Client {
                nodes: nodes.clone(),
                member,
                settings: settings.clone(),
                log,
                phase: phase.subscribe(),
                sync: sync.subscribe(),
                // Spread the clients' sends over the pacing period and over
                // their conversations, rather than all at once to one.
                counter: i as u64,
                offset: settings.send_every * (i as u32) / count,
                impatient: settings.impatient_every > 0 && i % settings.impatient_every == 0,
            };
            tasks.push(tokio::spawn(client.run()));
        }
        Self {
            logs,
            phase,
            sync,
            tasks,
        }
    }

    /// A snapshot of every client's log, in member order.
    pub fn logs(&self) -> Vec<Log> {
        self.logs.iter().map(|l| lock(l).clone()).collect()
    }

    /// A snapshot of one client's log.
    pub fn log(&self, client: usize) -> Log {
        lock(&self.logs[client]).clone()
    }

    /// Totals so far.
    pub fn stats(&self) -> Stats {
        let mut s = Stats {
            clients: self.logs.len(),
            ..Stats::default()
        };
        for l in &self.logs {
            let l = lock(l);
            s.sent += l.attempts.len();
            s.acked += l.attempts.values().filter(|a| a.ack.is_some()).count();
            s.resends += l
                .attempts
                .values()
                .map(|a| u64::from(a.tries.saturating_sub(1)))
                .sum::<u64>();
            s.reconnects += l.connections.len().saturating_sub(1);
            s.failed_connects += l.failed_connects;
            s.duplicate_frames += l.duplicate_frames;
            for e in &l.errors {
                let code = e["code"].as_str().unwrap_or("?").to_owned();
                *s.errors.entry(code).or_default() += 1;
            }
        }
        s
    }

    /// Messages acknowledged so far, over every client.
    pub fn acked(&self) -> usize {
        self.logs
            .iter()
            .map(|l| {
                lock(l)
                    .attempts
                    .values()
                    .filter(|a| a.ack.is_some())
                    .count()
            })
            .sum()
    }

    /// Switches what the clients do.
    pub fn set_phase(&self, phase: Phase) {
        self.phase.send_replace(phase);
    }

    /// Asks every connected client to `sync` from its watermarks now.
    pub fn request_sync(&self) {
        self.sync.send_modify(|g| *g += 1);
    }

    /// Waits until every client is connected (has its `hello`).
    pub async fn wait_connected(&self, timeout: Duration) -> Result<(), String> {
        poll(timeout, || {
            self.logs
                .iter()
                .all(|l| lock(l).current_node().is_some())
                .then_some(())
        })
        .await
        .ok_or_else(|| "not every client connected".to_owned())
    }

    /// Stops new sends and waits until every message sent so far is
    /// acknowledged; the clients keep resending and reconnecting meanwhile.
    pub async fn drain(&self, timeout: Duration) -> Result<(), String> {
        self.set_phase(Phase::Draining);
        let done = poll(timeout, || {
            self.logs
                .iter()
                .all(|l| lock(l).unacked().next().is_none())
                .then_some(())
        })
        .await;
        done.ok_or_else(|| {
            let pending: Vec<String> = self
                .logs()
                .iter()
                .flat_map(|l| {
                    l.unacked()
                        .map(|(id, a)| format!("{id} (conv {}, {} tries)", a.conv, a.tries))
                        .collect::<Vec<_>>()
                })
                .collect();
            format!(
                "{} messages never acknowledged within {timeout:?}: {:?}",
                pending.len(),
                &pending[..pending.len().min(20)]
            )
        })
    }

    /// Asks for syncs (again every 2 s) until every client holds exactly
    /// `truth` for each of its conversations; false on timeout.
    pub async fn await_histories(&self, truth: &BTreeMap<u64, History>, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            self.request_sync();
            let round = (deadline - Instant::now().min(deadline)).min(Duration::from_secs(2));
            let complete = poll(round, || {
                self.logs
                    .iter()
                    .all(|l| {
                        let l = lock(l);
                        l.convs.iter().all(|c| {
                            let empty = History::new();
                            l.received.get(c).unwrap_or(&empty) == truth.get(c).unwrap_or(&empty)
                        })
                    })
                    .then_some(())
            })
            .await;
            if complete.is_some() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
        }
    }

    /// Checks the clients' records against the stored histories `truth`
    /// (conversation → history); returns every violation found:
    ///
    /// - a stored history with a gap, or the same message stored twice;
    /// - an acknowledged message absent from its seq in the history;
    /// - a client whose messages of one of its conversations differ from
    ///   the stored history (missing, extra or different at a seq), so all
    ///   members hold the same gapless sequence;
    /// - contradictions a client saw (two messages at one seq, two seqs
    ///   for one message);
    /// - `error` frames other than `unavailable` and `rate_limited`.
    pub fn verify(&self, truth: &BTreeMap<u64, History>) -> Vec<String> {
        let mut v = Vec::new();
        for (conv, history) in truth {
            let n = history.len() as u64;
            if contiguous(history) != n {
                let missing: Vec<u64> = (1..=history.keys().max().copied().unwrap_or(0))
                    .filter(|s| !history.contains_key(s))
                    .take(10)
                    .collect();
                v.push(format!(
                    "conv {conv}: stored history has gaps at {missing:?}"
                ));
            }
            let mut seen: HashMap<&Entry, u64> = HashMap::new();
            for (seq, entry) in history {
                if let Some(first) = seen.insert(entry, *seq) {
                    v.push(format!(
                        "conv {conv}: message {entry:?} stored twice, at seq {first} and {seq}"
                    ));
                }
            }
        }
        let empty = History::new();
        for l in self.logs() {
            let user = l.user_id;
            for (id, conv, ack) in l.acks() {
                match truth.get(&conv).and_then(|h| h.get(&ack.seq)) {
                    Some((sender, stored)) if *sender == user && stored == id => {}
                    other => v.push(format!(
                        "user {user}: {id} acknowledged as conv {conv} seq {}, stored there: \
                         {other:?}",
                        ack.seq
                    )),
                }
            }
            for c in &l.conflicts {
                v.push(format!("user {user}: {c}"));
            }
            for conv in &l.convs {
                let want = truth.get(conv).unwrap_or(&empty);
                let got = l.received.get(conv).unwrap_or(&empty);
                if got != want {
                    let missing: Vec<u64> = want
                        .keys()
                        .filter(|s| !got.contains_key(s))
                        .copied()
                        .collect();
                    let extra: Vec<u64> = got
                        .keys()
                        .filter(|s| !want.contains_key(s))
                        .copied()
                        .collect();
                    let differ: Vec<u64> = got
                        .iter()
                        .filter(|(s, e)| want.get(s).is_some_and(|w| w != *e))
                        .map(|(s, _)| *s)
                        .collect();
                    v.push(format!(
                        "user {user}, conv {conv}: received history differs from the stored one \
                         ({} stored): missing seqs {:?}, extra {:?}, different {:?}",
                        want.len(),
                        &missing[..missing.len().min(10)],
                        &extra[..extra.len().min(10)],
                        &differ[..differ.len().min(10)],
                    ));
                }
            }
            for e in &l.errors {
                if !matches!(e["code"].as_str(), Some("unavailable" | "rate_limited")) {
                    v.push(format!("user {user}: error frame {e}"));
                }
            }
        }
        v
    }

    /// Closes every client and waits (briefly) for the tasks.
    pub async fn stop(mut self) {
        self.set_phase(Phase::Stopped);
        for task in std::mem::take(&mut self.tasks) {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(3), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.phase.send_replace(Phase::Stopped);
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A conversation as stored: the history and each message's commit time.
#[derive(Debug, Clone, Default)]
pub struct Stored {
    /// seq → (sender, client_msg_id).
    pub history: History,
    /// seq → sent_at (ms since the Unix epoch).
    pub sent_at: BTreeMap<u64, u64>,
}

/// Reads a conversation's whole history over HTTP, newest page first
/// (`limit=200`, paging with `before_seq`). Fails on an HTTP error or on
/// pages that are not strictly newest-first without overlap.
pub async fn history(api: &Api, token: &str, conv: u64) -> Result<Stored, String> {
    let mut out = Stored::default();
    let mut before: Option<u64> = None;
    loop {
        let path = match before {
            Some(b) => format!("/api/conversations/{conv}/messages?limit=200&before_seq={b}"),
            None => format!("/api/conversations/{conv}/messages?limit=200"),
        };
        let (status, body) = api.call("GET", &path, Some(token), None).await;
        if status != 200 {
            return Err(format!("GET {path}: {status} {body}"));
        }
        let page = body["messages"]
            .as_array()
            .ok_or_else(|| format!("GET {path}: no messages in {body}"))?;
        for m in page {
            let seq = m["seq"].as_u64().ok_or("a message without seq")?;
            if before.is_some_and(|b| seq >= b) {
                return Err(format!(
                    "conv {conv}: page before {before:?} holds seq {seq}"
                ));
            }
            let entry = (
                m["sender"].as_u64().ok_or("a message without sender")?,
                m["client_msg_id"].as_str().unwrap_or_default().to_owned(),
            );
            if out.history.insert(seq, entry).is_some() {
                return Err(format!("conv {conv}: seq {seq} listed twice"));
            }
            out.sent_at.insert(seq, m["sent_at"].as_u64().unwrap_or(0));
            before = Some(seq);
        }
        if page.len() < 200 {
            return Ok(out);
        }
    }
}

/// Polls `check` every 20 ms until it returns `Some`, or `None` after
/// `timeout`.
pub async fn poll<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One client's task.
struct Client {
    nodes: Arc<Vec<SocketAddr>>,
    member: Member,
    settings: Settings,
    log: Arc<Mutex<Log>>,
    phase: watch::Receiver<Phase>,
    sync: watch::Receiver<u64>,
    counter: u64,
    /// Delay of this client's first send after connecting.
    offset: Duration,
    /// Never sends `sync`.
    impatient: bool,
}

/// How a connection ended.
struct Ended {
    why: String,
    close: Option<(u16, String)>,
}

impl Ended {
    fn because(why: &str) -> Self {
        Self {
            why: why.to_owned(),
            close: None,
        }
    }
}

fn send_frame(conv: u64, id: &str) -> Value {
    json!({"type": "send", "conv_id": conv, "client_msg_id": id, "body": id})
}

async fn put(sink: &mut Sink, frame: &Value) -> bool {
    let msg = Message::Text(frame.to_string().into());
    matches!(
        tokio::time::timeout(Duration::from_secs(2), sink.send(msg)).await,
        Ok(Ok(()))
    )
}

impl Client {
    async fn run(mut self) {
        let n = self.nodes.len();
        let mut node = self.member.node % n;
        loop {
            if *self.phase.borrow() == Phase::Stopped {
                return;
            }
            let url = format!(
                "ws://{}/ws?token={}",
                self.nodes[node], self.member.user.token
            );
            let connect = tokio_tungstenite::connect_async(url);
            match tokio::time::timeout(self.settings.connect_timeout, connect).await {
                Ok(Ok((socket, _))) => {
                    let index = {
                        let mut l = lock(&self.log);
                        l.connections.push(Connection {
                            node,
                            opened: Instant::now(),
                            hello: None,
                            ended: None,
                            close: None,
                            why: String::new(),
                        });
                        l.connections.len() - 1
                    };
                    let ended = self.session(socket).await;
                    let mut l = lock(&self.log);
                    let c = &mut l.connections[index];
                    c.ended = Some(Instant::now());
                    c.close = ended.close;
                    c.why = ended.why;
                }
                _ => {
                    lock(&self.log).failed_connects += 1;
                    tokio::time::sleep(self.settings.reconnect_pause).await;
                }
            }
            node = (node + 1) % n;
        }
    }

    fn sync_frame(&self) -> Value {
        let l = lock(&self.log);
        let watermarks: serde_json::Map<String, Value> = self
            .member
            .convs
            .iter()
            .map(|c| (c.to_string(), json!(l.watermark(*c))))
            .collect();
        json!({"type": "sync", "watermarks": watermarks})
    }

    /// Sends every unacknowledged message that is due (all when `all`).
    fn due_resends(&self, all: bool) -> Vec<Value> {
        let now = Instant::now();
        let mut l = lock(&self.log);
        l.attempts
            .iter_mut()
            .filter(|(_, a)| a.ack.is_none() && (all || a.retry_at <= now))
            .map(|(id, a)| {
                a.tries += 1;
                a.retry_at = now + self.settings.resend_after;
                send_frame(a.conv, id)
            })
            .collect()
    }

    fn next_message(&mut self) -> Value {
        let convs = &self.member.convs;
        let conv = convs[(self.counter % convs.len() as u64) as usize];
        let id = format!("u{}-{}", self.member.user.id, self.counter);
        self.counter += 1;
        let now = Instant::now();
        let mut l = lock(&self.log);
        l.attempts.insert(
            id.clone(),
            Attempt {
                conv,
                first: now,
                retry_at: now + self.settings.resend_after,
                tries: 1,
                ack: None,
            },
        );
        l.sent_order.push(id.clone());
        send_frame(conv, &id)
    }

    async fn session(&mut self, socket: Socket) -> Ended {
        let (mut sink, mut source) = socket.split();
        let mut sending = *self.phase.borrow_and_update() == Phase::Sending;
        if *self.phase.borrow() == Phase::Stopped {
            return Ended::because("stopped");
        }
        self.sync.borrow_and_update();
        let mut first = self.due_resends(true);
        if !self.impatient {
            first.push(self.sync_frame());
        }
        for frame in &first {
            if !put(&mut sink, frame).await {
                return self.write_failed(&mut source).await;
            }
        }
        let every = self.settings.send_every;
        let first_send = tokio::time::Instant::now() + self.offset + every;
        let mut pace = tokio::time::interval_at(first_send, every);
        pace.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut check = tokio::time::interval(Duration::from_millis(100));
        check.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();
        let mut last_ping = Instant::now();
        let mut last_acks = Instant::now();
        let mut acked_up_to: HashMap<u64, u64> = HashMap::new();
        loop {
            tokio::select! {
                incoming = source.next() => {
                    last_heard = Instant::now();
                    match incoming {
                        Some(Ok(Message::Text(text))) => self.on_frame(&text),
                        Some(Ok(Message::Close(frame))) => {
                            return Ended {
                                why: "closed".into(),
                                close: Some(frame.map_or((1005, String::new()), |f| {
                                    (u16::from(f.code), f.reason.to_string())
                                })),
                            };
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return Ended::because(&format!("read failed: {e}")),
                        None => return Ended::because("eof"),
                    }
                }
                _ = pace.tick(), if sending => {
                    let frame = self.next_message();
                    if !put(&mut sink, &frame).await {
                        return self.write_failed(&mut source).await;
                    }
                }
                _ = check.tick() => {
                    let now = Instant::now();
                    if now - last_heard > self.settings.stall_after {
                        return Ended::because("stalled");
                    }
                    let mut out = Vec::new();
                    if now - last_heard > self.settings.ping_after
                        && now - last_ping > self.settings.ping_after
                    {
                        out.push(json!({"type": "ping"}));
                        last_ping = now;
                    }
                    out.extend(self.due_resends(false));
                    if now - last_acks >= self.settings.ack_every {
                        last_acks = now;
                        let l = lock(&self.log);
                        for &conv in &self.member.convs {
                            let w = l.watermark(conv);
                            if w > acked_up_to.get(&conv).copied().unwrap_or(0) {
                                acked_up_to.insert(conv, w);
                                out.push(json!({
                                    "type": "ack", "conv_id": conv, "seq": w, "kind": "delivered"
                                }));
                            }
                        }
                    }
                    for frame in &out {
                        if !put(&mut sink, frame).await {
                            return self.write_failed(&mut source).await;
                        }
                    }
                }
                changed = self.phase.changed() => {
                    let phase = if changed.is_ok() {
                        *self.phase.borrow_and_update()
                    } else {
                        Phase::Stopped
                    };
                    if phase == Phase::Stopped {
                        let _ = tokio::time::timeout(
                            Duration::from_secs(1),
                            sink.send(Message::Close(None)),
                        )
                        .await;
                        return Ended::because("stopped");
                    }
                    sending = phase == Phase::Sending;
                }
                changed = self.sync.changed() => {
                    if changed.is_err() {
                        return Ended::because("stopped");
                    }
                    self.sync.borrow_and_update();
                    if self.impatient {
                        continue;
                    }
                    let frame = self.sync_frame();
                    if !put(&mut sink, &frame).await {
                        return self.write_failed(&mut source).await;
                    }
                }
            }
        }
    }

    /// A write failed: the server may have closed the socket with a close
    /// frame not read yet. Reads what is left (briefly) to find it.
    async fn write_failed(&self, source: &mut Source) -> Ended {
        let rest = async {
            while let Some(incoming) = source.next().await {
                match incoming {
                    Ok(Message::Text(text)) => self.on_frame(&text),
                    Ok(Message::Close(frame)) => {
                        let close = frame.map_or((1005, String::new()), |f| {
                            (u16::from(f.code), f.reason.to_string())
                        });
                        return (Some(close), "write failed, then closed".to_owned());
                    }
                    Ok(_) => {}
                    Err(e) => return (None, format!("write failed, then read failed: {e}")),
                }
            }
            (None, "write failed, then eof".to_owned())
        };
        let (close, why) = tokio::time::timeout(Duration::from_millis(500), rest)
            .await
            .unwrap_or((None, "write failed".to_owned()));
        Ended { why, close }
    }

    fn on_frame(&self, text: &str) {
        let Ok(f) = serde_json::from_str::<Value>(text) else {
            return;
        };
        let now = Instant::now();
        let mut l = lock(&self.log);
        match f["type"].as_str() {
            Some("hello") => {
                if let Some(c) = l.connections.last_mut() {
                    c.hello = Some(now);
                }
            }
            Some("sent") => {
                let (Some(id), Some(seq)) = (f["client_msg_id"].as_str(), f["seq"].as_u64()) else {
                    return;
                };
                let ack = Ack {
                    seq,
                    sent_at: f["sent_at"].as_u64().unwrap_or(0),
                    at: now,
                };
                let conflict = match l.attempts.get_mut(id) {
                    Some(a) => match a.ack {
                        None => {
                            a.ack = Some(ack);
                            None
                        }
                        Some(first) if first.seq != seq => Some(format!(
                            "{id} acknowledged with seq {} and then {seq}",
                            first.seq
                        )),
                        Some(_) => None,
                    },
                    None => Some(format!("`sent` for unknown message {id}: {f}")),
                };
                if let Some(c) = conflict {
                    l.conflicts.push(c);
                }
            }
            Some("message") => {
                let (Some(conv), Some(seq), Some(sender)) = (
                    f["conv_id"].as_u64(),
                    f["seq"].as_u64(),
                    f["sender"].as_u64(),
                ) else {
                    return;
                };
                let entry = (
                    sender,
                    f["client_msg_id"].as_str().unwrap_or_default().to_owned(),
                );
                let history = l.received.entry(conv).or_default();
                match history.get(&seq) {
                    None => {
                        history.insert(seq, entry);
                    }
                    Some(held) if *held == entry => l.duplicate_frames += 1,
                    Some(held) => {
                        let c = format!("conv {conv} seq {seq}: received {held:?} and {entry:?}");
                        l.conflicts.push(c);
                    }
                }
            }
            Some("presence") => {
                if let (Some(user_id), Some(online)) =
                    (f["user_id"].as_u64(), f["online"].as_bool())
                {
                    l.presence.push(Presence {
                        at: now,
                        user_id,
                        online,
                    });
                }
            }
            Some("error") => {
                let code = f["code"].as_str().unwrap_or_default();
                if matches!(code, "unavailable" | "rate_limited") {
                    let retry = f["retry_after_ms"]
                        .as_u64()
                        .map(Duration::from_millis)
                        .unwrap_or(self.settings.retry_after_error);
                    if let Some(a) = f["ref"].as_str().and_then(|r| l.attempts.get_mut(r)) {
                        if a.ack.is_none() {
                            a.retry_at = a.retry_at.min(now + retry);
                        }
                    }
                }
                l.errors.push(f);
            }
            Some("synced") => l.synced += 1,
            _ => {}
        }
    }
}

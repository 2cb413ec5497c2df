//! Paced message load: `direct` (one-to-one chats) and `fanout` (groups).
//!
//! Open loop: every sender has a schedule of intended send times (its share
//! of the total rate, phases spread so the senders do not fire together),
//! woken at each send time by the [`Pacer`] thread. It sends whatever is
//! due, late or not, and stamps each message with its intended time;
//! latency is measured from that stamp, so a server (or a
//! generator) that falls behind shows up as latency instead of silently
//! lowering the offered rate. Each step has a warm-up, a measured window and
//! a bounded drain.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use super::pacer::{Pacer, Schedule};
use super::procs::{round1, round2, CpuMeter};
use super::report::{latency_fields, put, Fields, Report};
use super::seed::{par_map, User};
use super::servers::{metrics_delta, Servers};
use super::ws::{self, histogram, stamp_of, Frame, SourceIps, Target, Ws};
use super::Env;

/// A step is "sustained" when the server acknowledged (nearly) all it was
/// offered, lost nothing, and its p99 delivery latency stayed under this:
/// beyond it, queues are growing and the rate would not hold for long.
const SUSTAINED_P99_US: u64 = 500_000;

/// Rate, duration and shape of the paced steps.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Total messages per second offered; a comma-separated list runs one
    /// step per rate on the same nodes and connections.
    #[arg(long, value_delimiter = ',', default_value = "1000")]
    pub rate: Vec<f64>,
    /// Measured seconds per step.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before the measured window.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// At most this many seconds after the window to collect late acks and
    /// deliveries (a step ends as soon as everything has arrived).
    #[arg(long, default_value_t = 5.0)]
    pub drain: f64,
    /// Message body size in bytes (at least the stamp's digits).
    #[arg(long, default_value_t = 64)]
    pub body_bytes: usize,
    /// Every client acknowledges each `message` frame it reads as
    /// `delivered`, as the web app does: one `ack` per frame, up to its seq.
    #[arg(long)]
    pub ack_delivered: bool,
}

/// One load client: a connected user, member of one conversation.
pub struct Client {
    ws: Ws,
    user_id: u64,
    conv_id: u64,
    members: u64,
    sends: bool,
}

/// Counters and histograms shared by a step's client tasks.
struct Shared {
    win_start: u64,
    win_end: u64,
    delivery: Mutex<Histogram<u64>>,
    /// Delivery measured from when the generator wrote the message instead
    /// of when it meant to: what the server and the network add.
    delivery_from_write: Mutex<Histogram<u64>>,
    ack: Mutex<Histogram<u64>>,
    send_lag: Mutex<Histogram<u64>>,
    sent: AtomicU64,
    acked: AtomicU64,
    expected: AtomicU64,
    delivered: AtomicU64,
    echoes: AtomicU64,
    sent_in_window: AtomicU64,
    acked_in_window: AtomicU64,
    delivered_in_window: AtomicU64,
    errors: AtomicU64,
    closed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Shared {
    fn new(win_start: u64, win_end: u64) -> Self {
        Self {
            win_start,
            win_end,
            delivery: Mutex::new(histogram()),
            delivery_from_write: Mutex::new(histogram()),
            ack: Mutex::new(histogram()),
            send_lag: Mutex::new(histogram()),
            sent: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            expected: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            echoes: AtomicU64::new(0),
            sent_in_window: AtomicU64::new(0),
            acked_in_window: AtomicU64::new(0),
            delivered_in_window: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            closed: AtomicU64::new(0),
            first_error: Mutex::new(None),
        }
    }

    fn in_window(&self, stamp: u64) -> bool {
        (self.win_start..self.win_end).contains(&stamp)
    }

    fn record(h: &Mutex<Histogram<u64>>, micros: u64) {
        if let Ok(mut h) = h.lock() {
            h.saturating_record(micros.max(1));
        }
    }

    fn on_frame(&self, text: &str, me: u64) {
        let now = stamp_of(Instant::now());
        match ws::parse(text) {
            Frame::Message {
                sender,
                stamp,
                written,
                ..
            } => {
                if sender == me {
                    self.echoes.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                self.delivered.fetch_add(1, Ordering::Relaxed);
                if self.in_window(now) {
                    self.delivered_in_window.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(stamp) = stamp.filter(|s| self.in_window(*s)) {
                    Self::record(&self.delivery, now.saturating_sub(stamp));
                    if let Some(written) = written {
                        Self::record(&self.delivery_from_write, now.saturating_sub(written));
                    }
                }
            }
            Frame::Sent { stamp, .. } => {
                self.acked.fetch_add(1, Ordering::Relaxed);
                if self.in_window(now) {
                    self.acked_in_window.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(stamp) = stamp.filter(|s| self.in_window(*s)) {
                    Self::record(&self.ack, now.saturating_sub(stamp));
                }
            }
            Frame::Error(text) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut f) = self.first_error.lock() {
                    f.get_or_insert_with(|| text.chars().take(300).collect());
                }
            }
            Frame::Other => {}
        }
    }

    fn on_sent(&self, stamp: u64, recipients: u64, lag_us: u64) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        self.expected.fetch_add(recipients, Ordering::Relaxed);
        if self.in_window(stamp) {
            self.sent_in_window.fetch_add(1, Ordering::Relaxed);
            Self::record(&self.send_lag, lag_us);
        }
    }

    fn complete(&self) -> bool {
        self.acked.load(Ordering::Relaxed) >= self.sent.load(Ordering::Relaxed)
            && self.delivered.load(Ordering::Relaxed) >= self.expected.load(Ordering::Relaxed)
    }
}

/// One sender's schedule: woken by the pacer at each send time.
struct Plan {
    ticks: Option<mpsc::UnboundedReceiver<Instant>>,
    interval: Duration,
    send_until: Instant,
    filler: Arc<str>,
    /// Acknowledge each message frame read (`--ack-delivered`).
    ack: bool,
}

async fn client_task(
    mut c: Client,
    plan: Plan,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> Option<Client> {
    let mut ticks = plan.ticks;
    let mut next: Option<Instant> = None;
    let mut k: u64 = 0;
    let recipients = c.members.saturating_sub(1);
    let interval = plan.interval;
    loop {
        let paced = ticks.is_some();
        tokio::select! {
            biased;
            _ = stop.changed() => return Some(c),
            tick = async { ticks.as_mut()?.recv().await }, if paced => {
                let Some(at) = tick else {
                    ticks = None;
                    continue;
                };
                // Everything due, from the first send time not yet sent:
                // a task that fell behind catches up at once.
                let mut due = next.unwrap_or(at);
                let now = Instant::now();
                while due <= now && due < plan.send_until {
                    let stamp = stamp_of(due);
                    let written = stamp_of(Instant::now());
                    let text = format!(
                        r#"{{"type":"send","conv_id":{},"client_msg_id":"{stamp}-{k}","body":"{stamp} {written} {}"}}"#,
                        c.conv_id, plan.filler
                    );
                    if c.ws.feed(Message::Text(text.into())).await.is_err() {
                        shared.closed.fetch_add(1, Ordering::Relaxed);
                        return None;
                    }
                    let lag = Instant::now().saturating_duration_since(due).as_micros() as u64;
                    shared.on_sent(stamp, recipients, lag);
                    k += 1;
                    due += interval;
                }
                next = Some(due);
                if c.ws.flush().await.is_err() {
                    shared.closed.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
            }
            msg = c.ws.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    shared.on_frame(&t, c.user_id);
                    if let Some(seq) = plan.ack.then(|| message_seq(&t)).flatten() {
                        let ack = format!(
                            r#"{{"type":"ack","conv_id":{},"seq":{seq},"kind":"delivered"}}"#,
                            c.conv_id
                        );
                        if c.ws.send(Message::Text(ack.into())).await.is_err() {
                            shared.closed.fetch_add(1, Ordering::Relaxed);
                            return None;
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    shared.closed.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
                Some(Ok(_)) => {}
            },
        }
    }
}

/// The seq of a `message` frame, read without parsing the rest.
fn message_seq(frame: &str) -> Option<u64> {
    if !frame.starts_with(r#"{"type":"message""#) {
        return None;
    }
    let at = frame.find(r#""seq":"#)? + r#""seq":"#.len();
    let digits = frame[at..].split(|c: char| !c.is_ascii_digit()).next()?;
    digits.parse().ok()
}

/// Runs one step at `rate` messages/s over `clients`; returns the clients
/// still connected and the step's row.
async fn run_step(
    clients: Vec<Client>,
    rate: f64,
    args: &LoadArgs,
    servers: &Servers,
) -> Result<(Vec<Client>, Fields)> {
    let senders = clients.iter().filter(|c| c.sends).count().max(1);
    let per_sender = rate / senders as f64;
    let interval = (per_sender > 0.0).then(|| Duration::from_secs_f64(1.0 / per_sender));
    let start = Instant::now() + Duration::from_millis(300);
    let win_start = start + Duration::from_secs_f64(args.warmup);
    let send_until = win_start + Duration::from_secs_f64(args.duration);
    let shared = Arc::new(Shared::new(stamp_of(win_start), stamp_of(send_until)));
    // Two stamps of up to 11 digits and their spaces.
    let filler: Arc<str> = "x".repeat(args.body_bytes.saturating_sub(24)).into();
    let (stop_tx, stop_rx) = watch::channel(false);
    // Spread the senders' phases over one interval (golden ratio steps).
    let schedules = match interval {
        Some(interval) => clients
            .iter()
            .filter(|c| c.sends)
            .enumerate()
            .map(|(i, _)| Schedule {
                first: start + interval.mul_f64((i as f64 * 0.618_033_988_75).fract()),
                interval,
                until: send_until,
            })
            .collect(),
        None => Vec::new(),
    };
    let (pacer, ticks) = Pacer::start(schedules)?;
    let mut ticks = ticks.into_iter();
    let mut handles = Vec::with_capacity(clients.len());
    for c in clients {
        let plan = Plan {
            ticks: if c.sends { ticks.next() } else { None },
            interval: interval.unwrap_or_default(),
            send_until,
            filler: filler.clone(),
            ack: args.ack_delivered,
        };
        handles.push(tokio::spawn(client_task(
            c,
            plan,
            shared.clone(),
            stop_rx.clone(),
        )));
    }
    tokio::time::sleep_until(win_start.into()).await;
    let m0 = servers.metrics_sum().await;
    let disk0 = servers.disk_write_bytes();
    let meter = CpuMeter::start(&servers.pids());
    let store_pids: Vec<(String, u32)> = servers
        .store_pids
        .iter()
        .map(|&p| (format!("store-{p}"), p))
        .collect();
    let store_meter = CpuMeter::start(&store_pids);
    tokio::time::sleep_until(send_until.into()).await;
    let cpu = meter.stop();
    let store_cpu = store_meter.stop();
    let disk1 = servers.disk_write_bytes();
    let m1 = servers.metrics_sum().await;
    let window = args.duration;
    let drain_until = send_until + Duration::from_secs_f64(args.drain);
    while !shared.complete() && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drained_s = Instant::now().saturating_duration_since(send_until);
    drop(pacer);
    let _ = stop_tx.send(true);
    let mut back = Vec::new();
    for h in handles {
        if let Ok(Some(c)) = h.await {
            back.push(c);
        }
    }

    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let mut row = Fields::new();
    let acked_rate = load(&shared.acked_in_window) as f64 / window;
    let delivered_rate = load(&shared.delivered_in_window) as f64 / window;
    let lost_acks = load(&shared.sent).saturating_sub(load(&shared.acked));
    let undelivered = load(&shared.expected).saturating_sub(load(&shared.delivered));
    put(&mut row, "offered_msgs_per_s", rate);
    put(
        &mut row,
        "sent_per_s",
        round1(load(&shared.sent_in_window) as f64 / window),
    );
    put(&mut row, "acked_per_s", round1(acked_rate));
    let committed = metrics_delta(&m0, &m1, "parley_messages_committed_total");
    let batches = metrics_delta(&m0, &m1, "parley_commit_batches_total");
    let commit_secs = metrics_delta(&m0, &m1, "parley_commit_seconds_sum");
    put(
        &mut row,
        "server_committed_per_s",
        round1(committed / window),
    );
    put(&mut row, "deliveries_per_s", round1(delivered_rate));
    put(
        &mut row,
        "server_frames_per_s",
        round1(metrics_delta(&m0, &m1, "parley_frames_delivered_total") / window),
    );
    put(&mut row, "commit_batches_per_s", round1(batches / window));
    // What one message costs the store and the links between nodes.
    let per_msg = |x: f64| if committed > 0.0 { x / committed } else { 0.0 };
    put(
        &mut row,
        "disk_write_bytes_per_msg",
        round1(per_msg(disk1.saturating_sub(disk0) as f64)),
    );
    put(
        &mut row,
        "peer_bytes_per_msg",
        round1(per_msg(metrics_delta(
            &m0,
            &m1,
            "parley_peer_bytes_sent_total",
        ))),
    );
    if !store_pids.is_empty() {
        put(&mut row, "store_cpu_pct", round1(store_cpu.servers_total()));
    }
    put(
        &mut row,
        "msgs_per_batch",
        round2(if batches > 0.0 {
            committed / batches
        } else {
            0.0
        }),
    );
    put(
        &mut row,
        "commit_mean_ms",
        round2(if batches > 0.0 {
            commit_secs / batches * 1000.0
        } else {
            0.0
        }),
    );
    let hist =
        |h: &Mutex<Histogram<u64>>| h.lock().map(|h| h.clone()).unwrap_or_else(|_| histogram());
    latency_fields(&mut row, "delivery", &hist(&shared.delivery));
    let ack = hist(&shared.ack);
    if !ack.is_empty() {
        put(
            &mut row,
            "ack_p50_ms",
            round2(ack.value_at_quantile(0.5) as f64 / 1000.0),
        );
        put(
            &mut row,
            "ack_p99_ms",
            round2(ack.value_at_quantile(0.99) as f64 / 1000.0),
        );
    }
    let from_write = hist(&shared.delivery_from_write);
    if !from_write.is_empty() {
        for (q, name) in [(0.5, "p50"), (0.99, "p99")] {
            put(
                &mut row,
                &format!("delivery_from_write_{name}_ms"),
                round2(from_write.value_at_quantile(q) as f64 / 1000.0),
            );
        }
    }
    let lag = hist(&shared.send_lag);
    if !lag.is_empty() {
        put(
            &mut row,
            "client_send_lag_p99_ms",
            round2(lag.value_at_quantile(0.99) as f64 / 1000.0),
        );
    }
    put(&mut row, "lost_acks", lost_acks);
    put(&mut row, "undelivered", undelivered);
    put(&mut row, "errors", load(&shared.errors));
    put(&mut row, "closed", load(&shared.closed));
    put(
        &mut row,
        "slow_consumers",
        metrics_delta(&m0, &m1, "parley_slow_consumers_total"),
    );
    put(&mut row, "drain_s", round2(drained_s.as_secs_f64()));
    row.extend(cpu.fields());
    let delivery = hist(&shared.delivery);
    let sustained = acked_rate >= 0.97 * rate
        && !delivery.is_empty()
        && delivery.value_at_quantile(0.99) < SUSTAINED_P99_US
        && lost_acks == 0
        && undelivered == 0
        && load(&shared.closed) == 0
        && load(&shared.errors) == 0;
    put(&mut row, "sustained", sustained);
    if let Ok(Some(e)) = shared.first_error.lock().map(|e| e.clone()) {
        put(&mut row, "first_error", e);
    }
    Ok((back, row))
}

/// Shape of a `direct` run.
#[derive(Debug, Clone, clap::Args)]
pub struct DirectArgs {
    /// One-to-one chats; each has two users, both sending.
    #[arg(long, default_value_t = 500)]
    pub pairs: usize,
    /// Rates and durations.
    #[command(flatten)]
    pub load: LoadArgs,
}

/// Shape of a `fanout` run.
#[derive(Debug, Clone, clap::Args)]
pub struct FanoutArgs {
    /// Members per group.
    #[arg(long, default_value_t = 100)]
    pub group_size: usize,
    /// Groups (default: 1000 / group size, at least 1), disjoint members.
    #[arg(long)]
    pub groups: Option<usize>,
    /// Rates (messages/s, all groups together) and durations.
    #[command(flatten)]
    pub load: LoadArgs,
}

/// Connects one client per user; user `i` goes to node `i % nodes`.
async fn connect_clients(
    env: &Env,
    servers: &Servers,
    users: &[User],
    convs: &[(u64, u64)],
) -> Result<Vec<Client>> {
    let addrs = servers.http_addrs();
    let ips = SourceIps(env.source_ips);
    let targets: Vec<Target> = users
        .iter()
        .enumerate()
        .map(|(i, u)| Target {
            addr: addrs[i % addrs.len()],
            src: ips.of(i),
            token: u.token.clone(),
        })
        .collect();
    let (conns, stats) =
        ws::connect_all_with(targets, env.concurrency, servers.tls_connector()?).await;
    if stats.failed > 0 {
        bail!(
            "{} of {} connections failed: {}",
            stats.failed,
            users.len(),
            stats.first_error.unwrap_or_default()
        );
    }
    eprintln!("connected {} clients in {:.1} s", stats.ok, stats.seconds);
    Ok(conns
        .into_iter()
        .zip(users.iter().zip(convs))
        .filter_map(|(ws, (u, &(conv_id, members)))| {
            ws.map(|ws| Client {
                ws,
                user_id: u.id,
                conv_id,
                members,
                sends: true,
            })
        })
        .collect())
}

async fn run_steps(
    servers: &Servers,
    mut clients: Vec<Client>,
    args: &LoadArgs,
    report: &mut Report,
) -> Result<()> {
    // Let the connect-time sync and presence frames settle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for &rate in &args.rate {
        eprintln!(
            "step: {rate} msgs/s for {} s (+{} s warm-up)",
            args.duration, args.warmup
        );
        let (back, mut row) = run_step(clients, rate, args, servers).await?;
        let rss_kib: u64 = servers.rss().iter().filter_map(|(_, kib)| *kib).sum();
        put(&mut row, "server_rss_mib", round1(rss_kib as f64 / 1024.0));
        let lost = report_lost(&row);
        report.rows.push(row);
        clients = back;
        if clients.is_empty() || lost {
            eprintln!(
                "stopping: connections lost; the nodes' logs end with:\n{}",
                servers.log_tails()
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

fn report_lost(row: &Fields) -> bool {
    row.iter()
        .any(|(k, v)| k == "closed" && v.as_u64().unwrap_or(0) > 0)
}

/// `peers`: the workload of the peer comparison in issue #15, exactly:
/// 100 users in 10 groups of 10 (every message reaches 9 members), open
/// loop, 15 s steps, the node pinned to one core and the generator to the
/// others (see `main`).
#[derive(Debug, Clone, clap::Args)]
pub struct PeersArgs {
    /// Messages per second, one step each; a message is 9 deliveries, so
    /// the defaults offer 4.4k, 45k, 90k and 180k deliveries/s.
    #[arg(long, value_delimiter = ',', default_value = "489,5000,10000,20000")]
    pub rate: Vec<f64>,
    /// Measured seconds per step.
    #[arg(long, default_value_t = 15.0)]
    pub duration: f64,
    /// Every client acknowledges each message it reads (see `fanout`).
    #[arg(long)]
    pub ack_delivered: bool,
}

/// Runs `peers`: `fanout` with the comparison's shape.
pub async fn peers(env: &Env, args: &PeersArgs) -> Result<Report> {
    let fanout_args = FanoutArgs {
        group_size: 10,
        groups: Some(10),
        load: LoadArgs {
            rate: args.rate.clone(),
            duration: args.duration,
            warmup: 2.0,
            drain: 5.0,
            body_bytes: 64,
            ack_delivered: args.ack_delivered,
        },
    };
    let mut report = fanout_with(env, &fanout_args, true).await?;
    report.scenario = "peers".into();
    Ok(report)
}

/// `direct`: pairs of users, each sending to the other.
pub async fn direct(env: &Env, args: &DirectArgs) -> Result<Report> {
    let mut report = Report::new("direct");
    let (mut servers, seeder) = env.servers().await?;
    let pairs = args.pairs.max(1);
    let users = seeder
        .users(&super::seed::prefix(), pairs * 2, env.http_concurrency)
        .await?;
    let pair_idx: Vec<(usize, usize)> = (0..pairs).map(|i| (2 * i, 2 * i + 1)).collect();
    let conv_ids = seeder
        .directs(&users, &pair_idx, env.http_concurrency)
        .await?;
    drop(seeder);
    env.start(&mut servers).await?;
    let convs: Vec<(u64, u64)> = (0..pairs * 2).map(|i| (conv_ids[i / 2], 2)).collect();
    let clients = connect_clients(env, &servers, &users, &convs).await?;
    env.describe(&mut report, &servers);
    put(&mut report.fields, "pairs", pairs);
    put(&mut report.fields, "connections", clients.len());
    put(&mut report.fields, "body_bytes", args.load.body_bytes);
    put(&mut report.fields, "tls", env.settings.tls);
    put(&mut report.fields, "window_s", args.load.duration);
    put(&mut report.fields, "ack_delivered", args.load.ack_delivered);
    run_steps(&servers, clients, &args.load, &mut report).await?;
    Ok(report)
}

/// `fanout`: groups whose members all send; every message goes to every
/// other member.
pub async fn fanout(env: &Env, args: &FanoutArgs) -> Result<Report> {
    fanout_with(env, args, false).await
}

/// `fanout`, and with `login_burst` every user logs in at once over HTTP
/// (passwords at the real argon2 cost) before connecting: the memory a
/// login burst leaves behind shows in every step's RSS.
async fn fanout_with(env: &Env, args: &FanoutArgs, login_burst: bool) -> Result<Report> {
    let mut report = Report::new("fanout");
    let size = args.group_size.max(2);
    let groups = args.groups.unwrap_or((1000 / size).max(1));
    let (mut servers, seeder) = env.servers().await?;
    let seeder = if login_burst {
        seeder.with_real_password_cost()
    } else {
        seeder
    };
    let users = seeder
        .users(&super::seed::prefix(), size * groups, env.http_concurrency)
        .await?;
    let mut convs = Vec::with_capacity(users.len());
    for g in 0..groups {
        let members: Vec<&User> = users[g * size..(g + 1) * size].iter().collect();
        let id = seeder
            .group(&format!("bench group {g}"), members[0], &members[1..])
            .await?;
        convs.extend(std::iter::repeat_n((id, size as u64), size));
    }
    drop(seeder);
    env.start(&mut servers).await?;
    if login_burst {
        login_burst_of(&servers, &users, &mut report).await?;
    }
    let clients = connect_clients(env, &servers, &users, &convs).await?;
    env.describe(&mut report, &servers);
    put(&mut report.fields, "group_size", size);
    put(&mut report.fields, "groups", groups);
    put(&mut report.fields, "connections", clients.len());
    put(&mut report.fields, "body_bytes", args.load.body_bytes);
    put(&mut report.fields, "tls", env.settings.tls);
    put(&mut report.fields, "window_s", args.load.duration);
    put(&mut report.fields, "ack_delivered", args.load.ack_delivered);
    run_steps(&servers, clients, &args.load, &mut report).await?;
    Ok(report)
}

/// Logs every user in at once through the first server's API and reports
/// how long that took and the servers' RSS right after.
async fn login_burst_of(servers: &Servers, users: &[User], report: &mut Report) -> Result<()> {
    let addr = *servers
        .http_addrs()
        .first()
        .ok_or_else(|| anyhow::anyhow!("no server to log in to"))?;
    let http = servers.api_seeder(addr);
    let names: Vec<String> = users.iter().map(|u| u.name.clone()).collect();
    let n = names.len();
    let started = Instant::now();
    par_map(names, n, move |name| {
        let http = http.clone();
        async move { http.login_http(&name).await }
    })
    .await?;
    put(&mut report.fields, "login_burst_users", n);
    put(
        &mut report.fields,
        "login_burst_s",
        round2(started.elapsed().as_secs_f64()),
    );
    let rss_kib = servers.rss().into_iter().filter_map(|(_, r)| r).max();
    if let Some(kib) = rss_kib {
        put(
            &mut report.fields,
            "server_rss_after_login_burst_mib",
            round1(kib as f64 / 1024.0),
        );
    }
    Ok(())
}

//! `abuse`: one node with its default limits (and a 1024 open-files
//! limit) under hostile clients, one attack after the other:
//!
//! - `login_burst`: waves of concurrent logins of unknown names (each is
//!   checked against the dummy hash at the real argon2 cost), spread over
//!   the source addresses;
//! - `slowloris`: connections that send one header line per second and
//!   never finish;
//! - `conn_flood`: more half-sent requests than the node has file
//!   descriptors;
//! - `sync_spam`: a client that sends `sync` frames and never reads;
//! - `session_hog`: one account opening WebSocket sessions as fast as it
//!   can, holding every one it gets;
//! - `ack_flood`: a member sending `ack` frames as fast as it can while the
//!   other member of the conversation sends (its `sent` latency is
//!   reported).
//!
//! For each: the node's peak RSS during the attack, its RSS 10 s after,
//! `/healthz` latency (a fresh connection every 50 ms) during it, and how
//! the node answered. The goal (issue #10): RSS below idle + 256 MiB and
//! back within 10 s; `/healthz` p99 under 50 ms.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;

use super::procs::rss_kib;
use super::report::{latency_fields, put, Fields, Report};
use super::seed::{http_call, prefix};
use super::ws::{self, histogram, SourceIps};
use super::Env;

/// Shape of an `abuse` run.
#[derive(Debug, Clone, clap::Args)]
pub struct AbuseArgs {
    /// Concurrent logins per wave.
    #[arg(long, default_value_t = 64)]
    pub login_concurrency: usize,
    /// Waves of logins.
    #[arg(long, default_value_t = 3)]
    pub login_waves: usize,
    /// Slowloris connections.
    #[arg(long, default_value_t = 200)]
    pub slowloris: usize,
    /// How long the slowloris clients keep dribbling, seconds.
    #[arg(long, default_value_t = 15)]
    pub slowloris_secs: u64,
    /// Half-sent requests of the connection flood.
    #[arg(long, default_value_t = 1100)]
    pub flood: usize,
    /// `sync` frames the non-reader sends.
    #[arg(long, default_value_t = 3000)]
    pub sync_frames: usize,
    /// Messages stored in the non-reader's conversation (what each sync
    /// replays).
    #[arg(long, default_value_t = 200)]
    pub sync_messages: usize,
    /// WebSocket connections the session hog attempts with one token.
    #[arg(long, default_value_t = 1000)]
    pub hog: usize,
    /// `ack` frames the ack flooder sends.
    #[arg(long, default_value_t = 1_000_000)]
    pub ack_frames: usize,
}

/// Samples a process's RSS and `/healthz` latency until stopped.
struct Watch {
    stop: Arc<AtomicBool>,
    peak_kib: Arc<AtomicU64>,
    health: Arc<Mutex<Histogram<u64>>>,
    health_failed: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Watch {
    fn start(pid: Option<u32>, addr: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak_kib = Arc::new(AtomicU64::new(rss_kib(pid).unwrap_or(0)));
        let health = Arc::new(Mutex::new(histogram()));
        let health_failed = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        {
            let (stop, peak) = (stop.clone(), peak_kib.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(kib) = rss_kib(pid) {
                        peak.fetch_max(kib, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }));
        }
        {
            let (stop, h, failed) = (stop.clone(), health.clone(), health_failed.clone());
            tasks.push(tokio::spawn(async move {
                // A fresh connection each time: what a load balancer's probe
                // (or a new client) meets.
                let http = reqwest::Client::builder()
                    .pool_max_idle_per_host(0)
                    .timeout(Duration::from_secs(5))
                    .build()
                    .unwrap_or_default();
                let url = format!("http://{addr}/healthz");
                while !stop.load(Ordering::Relaxed) {
                    let t0 = Instant::now();
                    match http.get(&url).send().await {
                        Ok(r) if r.status().is_success() => {
                            if let Ok(mut h) = h.lock() {
                                h.saturating_record(t0.elapsed().as_micros() as u64);
                            }
                        }
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }));
        }
        Self {
            stop,
            peak_kib,
            health,
            health_failed,
            tasks,
        }
    }

    /// Stops sampling and reports into `row`.
    async fn finish(self, row: &mut Fields) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        put(
            row,
            "peak_rss_mib",
            self.peak_kib.load(Ordering::Relaxed) / 1024,
        );
        if let Ok(h) = self.health.lock() {
            latency_fields(row, "healthz", &h);
        }
        put(
            row,
            "healthz_failed",
            self.health_failed.load(Ordering::Relaxed),
        );
    }
}

/// RSS 10 s after an attack ended.
async fn settle(pid: Option<u32>, row: &mut Fields) {
    tokio::time::sleep(Duration::from_secs(10)).await;
    put(row, "rss_after_10s_mib", rss_kib(pid).unwrap_or(0) / 1024);
}

async fn tcp_from(addr: SocketAddr, src: Option<Ipv4Addr>) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if let Some(ip) = src {
        socket.bind(SocketAddr::from((ip, 0)))?;
    }
    socket.connect(addr).await
}

/// Runs the scenario.
pub async fn run(env: &Env, args: &AbuseArgs) -> Result<Report> {
    let mut report = Report::new("abuse");
    let (mut servers, seeder) = env.servers().await?;
    let pre = prefix();
    let users = seeder.users(&pre, 2, 1).await?;
    let conv = seeder.direct(&users[0], &users[1]).await?;
    drop(seeder);
    env.start(&mut servers).await?;
    env.describe(&mut report, &servers);
    let addr = servers.http_addrs()[0];
    let pid = servers.pids().first().map(|(_, p)| *p);
    let ips = SourceIps(env.source_ips);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = rss_kib(pid).unwrap_or(0) / 1024;
    put(&mut report.fields, "idle_rss_mib", idle);

    // Login burst.
    {
        let mut row = Fields::new();
        put(&mut row, "attack", "login_burst");
        let watch = Watch::start(pid, addr);
        let mut by_status = std::collections::BTreeMap::<u16, u64>::new();
        for wave in 0..args.login_waves {
            let calls = (0..args.login_concurrency).map(|i| {
                let src = ips.of(i);
                let name = format!("{pre}x{wave}n{i}");
                async move {
                    let http = reqwest::Client::builder()
                        .local_address(src.map(std::net::IpAddr::V4))
                        .build()
                        .unwrap_or_default();
                    http_call(
                        &http,
                        addr,
                        "POST",
                        "/api/login",
                        None,
                        Some(json!({"name": name, "password": "wrong password"})),
                    )
                    .await
                    .map(|(s, _)| s)
                    .unwrap_or(0)
                }
            });
            for status in futures_util::future::join_all(calls).await {
                *by_status.entry(status).or_default() += 1;
            }
        }
        put(
            &mut row,
            "requests",
            args.login_waves * args.login_concurrency,
        );
        put(
            &mut row,
            "answers",
            by_status
                .iter()
                .map(|(s, n)| format!("{s}x{n}"))
                .collect::<Vec<_>>()
                .join(" "),
        );
        watch.finish(&mut row).await;
        settle(pid, &mut row).await;
        report.rows.push(row);
    }

    // Slowloris.
    {
        let mut row = Fields::new();
        put(&mut row, "attack", "slowloris");
        let watch = Watch::start(pid, addr);
        let closed = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + Duration::from_secs(args.slowloris_secs);
        let mut tasks = Vec::new();
        for i in 0..args.slowloris {
            let src = ips.of(i);
            let closed = closed.clone();
            tasks.push(tokio::spawn(async move {
                let Ok(mut s) = tcp_from(addr, src).await else {
                    closed.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                if s.write_all(b"GET /healthz HTTP/1.1\r\n").await.is_err() {
                    closed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                let mut n = 0;
                while Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    n += 1;
                    let line = format!("X-Dribble-{n}: {n}\r\n");
                    if s.write_all(line.as_bytes()).await.is_err() {
                        closed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        put(&mut row, "connections", args.slowloris);
        put(
            &mut row,
            "answers",
            format!(
                "{} of {} cut off within {} s",
                closed.load(Ordering::Relaxed),
                args.slowloris,
                args.slowloris_secs
            ),
        );
        watch.finish(&mut row).await;
        settle(pid, &mut row).await;
        report.rows.push(row);
    }

    // Connection flood at the file-descriptor limit.
    {
        let mut row = Fields::new();
        put(&mut row, "attack", "conn_flood");
        let watch = Watch::start(pid, addr);
        let mut held = Vec::new();
        let mut failed = 0u64;
        for i in 0..args.flood {
            match tcp_from(addr, ips.of(i)).await {
                Ok(mut s) => {
                    let _ = s.write_all(b"POST /api/login HTTP/1.1\r\n").await;
                    held.push(s);
                }
                Err(_) => failed += 1,
            }
        }
        // Hold them a while, then see how many the node dropped.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let mut dropped = 0u64;
        for s in &mut held {
            let mut buf = [0u8; 64];
            match tokio::time::timeout(Duration::from_millis(1), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => dropped += 1,
                _ => {}
            }
        }
        let metrics = servers.metrics_sum().await;
        put(&mut row, "connections", args.flood);
        put(
            &mut row,
            "answers",
            format!(
                "{} connect errors, {} closed by the node after 5 s; refused {} overflow {}",
                failed,
                dropped,
                metrics
                    .get("parley_connections_refused_total")
                    .copied()
                    .unwrap_or(0.0),
                metrics
                    .get("parley_connections_overflow_total")
                    .copied()
                    .unwrap_or(0.0)
            ),
        );
        drop(held);
        watch.finish(&mut row).await;
        settle(pid, &mut row).await;
        report.rows.push(row);
    }

    // Sync spam by a client that never reads.
    {
        let mut row = Fields::new();
        put(&mut row, "attack", "sync_spam");
        // Something to replay: messages in the spammer's conversation.
        let mut writer = ws::connect(addr, ips.of(0), &users[1].token).await?;
        let body = "s".repeat(200);
        for i in 0..args.sync_messages {
            let frame = json!({"type":"send","conv_id": conv,"client_msg_id": format!("m{i}"),"body": body});
            writer.send(Message::text(frame.to_string())).await?;
        }
        let _ = writer.close(None).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let watch = Watch::start(pid, addr);
        let mut spammer = ws::connect(addr, ips.of(1), &users[0].token).await?;
        let sync = json!({"type":"sync","watermarks": {conv.to_string(): 0}}).to_string();
        let mut sent = 0;
        for _ in 0..args.sync_frames {
            let send = tokio::time::timeout(
                Duration::from_secs(2),
                spammer.send(Message::text(sync.clone())),
            )
            .await;
            if !matches!(send, Ok(Ok(()))) {
                break;
            }
            sent += 1;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        drop(spammer);
        put(&mut row, "requests", sent);
        put(
            &mut row,
            "answers",
            format!("{sent} of {} sync frames accepted", args.sync_frames),
        );
        watch.finish(&mut row).await;
        settle(pid, &mut row).await;
        report.rows.push(row);
    }

    // One account opening sessions as fast as it can, 64 at a time.
    {
        let mut row = Fields::new();
        put(&mut row, "attack", "session_hog");
        let watch = Watch::start(pid, addr);
        let token = users[0].token.clone();
        let attempts = futures_util::stream::iter((0..args.hog).map(|i| {
            let token = token.clone();
            async move { ws::connect(addr, ips.of(i), &token).await }
        }));
        let results: Vec<_> = attempts.buffer_unordered(64).collect().await;
        let mut held = Vec::new();
        let (mut throttled, mut failed) = (0u64, 0u64);
        for r in results {
            match r {
                Ok(ws) => held.push(ws),
                Err(e) if format!("{e:#}").contains("429") => throttled += 1,
                Err(_) => failed += 1,
            }
        }
        // What the node kept of them, while the hog still holds them all.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let metrics = servers.metrics_sum().await;
        let metric = |name: &str| metrics.get(name).copied().unwrap_or(0.0);
        put(&mut row, "connections", args.hog);
        put(
            &mut row,
            "answers",
            format!(
                "{} admitted, {throttled} refused 429, {failed} failed; the node holds {} sessions, {} closed as superseded",
                held.len(),
                metric("parley_sessions"),
                metric("parley_sessions_superseded_total"),
            ),
        );
        drop(held);
        watch.finish(&mut row).await;
        settle(pid, &mut row).await;
        report.rows.push(row);
    }

    // Acks as fast as one client can write them, in the conversation of
    // the sync spam (its messages are what they acknowledge), while the
    // other member sends ten messages a second.
    {
        let mut row = Fields::new();
        put(&mut row, "attack", "ack_flood");
        let watch = Watch::start(pid, addr);
        let flooder = ws::connect(addr, ips.of(0), &users[0].token).await?;
        let (mut flood_tx, mut flood_rx) = flooder.split();
        let drain = tokio::spawn(async move { while let Some(Ok(_)) = flood_rx.next().await {} });
        let sender = ws::connect(addr, ips.of(1), &users[1].token).await?;
        let (mut send_tx, mut send_rx) = sender.split();
        let stop = Arc::new(AtomicBool::new(false));
        let sent_at = Arc::new(Mutex::new(
            std::collections::HashMap::<String, Instant>::new(),
        ));
        let latency = Arc::new(Mutex::new(histogram()));
        let reader = {
            let (sent_at, latency) = (sent_at.clone(), latency.clone());
            tokio::spawn(async move {
                while let Some(Ok(Message::Text(text))) = send_rx.next().await {
                    let Ok(frame) = serde_json::from_str::<serde_json::Value>(&text) else {
                        continue;
                    };
                    if frame["type"] != "sent" {
                        continue;
                    }
                    let id = frame["client_msg_id"].as_str().unwrap_or_default();
                    let start = sent_at.lock().ok().and_then(|mut m| m.remove(id));
                    if let (Some(start), Ok(mut h)) = (start, latency.lock()) {
                        let _ = h.record(start.elapsed().as_micros() as u64);
                    }
                }
            })
        };
        let sends = {
            let (stop, sent_at) = (stop.clone(), sent_at.clone());
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let id = format!("during{i}");
                    let frame = json!({"type":"send","conv_id": conv,"client_msg_id": id,"body": "still there?"});
                    if let Ok(mut m) = sent_at.lock() {
                        m.insert(id, Instant::now());
                    }
                    if send_tx
                        .send(Message::text(frame.to_string()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                i
            })
        };
        let started = Instant::now();
        let mut acked = 0;
        'flood: for chunk in 0..args.ack_frames.div_ceil(1000) {
            for j in 0..1000 {
                let i = chunk * 1000 + j;
                if i >= args.ack_frames {
                    break;
                }
                let seq = i % args.sync_messages.max(1) + 1;
                let frame = json!({"type":"ack","conv_id": conv,"seq": seq,"kind":"delivered"});
                if flood_tx
                    .feed(Message::text(frame.to_string()))
                    .await
                    .is_err()
                {
                    break 'flood;
                }
                acked += 1;
            }
            let flushed = tokio::time::timeout(Duration::from_secs(2), flood_tx.flush()).await;
            if !matches!(flushed, Ok(Ok(()))) {
                break;
            }
        }
        let flood_secs = started.elapsed().as_secs_f64();
        // Let what the node took in drain, then stop the sender.
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop.store(true, Ordering::Relaxed);
        let messages = sends.await.unwrap_or(0);
        tokio::time::sleep(Duration::from_secs(1)).await;
        reader.abort();
        drain.abort();
        put(&mut row, "requests", acked);
        put(
            &mut row,
            "answers",
            format!(
                "{acked} acks written in {flood_secs:.1} s; the other member sent {messages} messages meanwhile"
            ),
        );
        if let Ok(h) = latency.lock() {
            latency_fields(&mut row, "other_member_sent", &h);
        }
        watch.finish(&mut row).await;
        settle(pid, &mut row).await;
        report.rows.push(row);
    }
    Ok(report)
}

//! `idle`: many connected sessions that say nothing; what they cost the
//! server in memory (and CPU, for heartbeats).
//!
//! One process may hold only as many sockets as its open-files limit; past
//! that the sessions are held by worker processes (this binary again, the
//! hidden `idle-worker` command), each connecting its share and keeping it
//! open until told to stop.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use super::procs::{self, round1, round2, CpuMeter};
use super::report::{latency_fields, put, Fields, Report};
use super::ws::{self, SourceIps, Target};
use super::Env;

/// Shape of an `idle` run.
#[derive(Debug, Clone, clap::Args)]
pub struct IdleArgs {
    /// Sessions to connect (spread over the nodes and source addresses).
    #[arg(long, default_value_t = 10_000)]
    pub sessions: usize,
    /// Distinct users (default: one per session).
    #[arg(long)]
    pub users: Option<usize>,
    /// Seconds to hold the sessions idle while measuring CPU.
    #[arg(long, default_value_t = 5.0)]
    pub hold: f64,
}

/// Arguments of the hidden worker command.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    /// Lines of `ADDR SRC TOKEN` to connect.
    #[arg(long)]
    pub targets: PathBuf,
}

/// Sockets kept per process below its open-files limit.
const FD_MARGIN: u64 = 300;

/// Connects, holds the sessions reading (which answers the server's pings)
/// and counts those that close.
async fn hold(targets: Vec<Target>, concurrency: usize) -> (ws::ConnectStats, Holder) {
    let (conns, stats) = ws::connect_all(targets, concurrency).await;
    let closed = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::with_capacity(stats.ok);
    for mut ws in conns.into_iter().flatten() {
        let closed = closed.clone();
        readers.push(tokio::spawn(async move {
            while let Some(m) = ws.next().await {
                if matches!(m, Ok(Message::Close(_)) | Err(_)) {
                    break;
                }
            }
            closed.fetch_add(1, Ordering::Relaxed);
        }));
    }
    (stats, Holder { readers, closed })
}

struct Holder {
    readers: Vec<tokio::task::JoinHandle<()>>,
    closed: Arc<AtomicU64>,
}

impl Drop for Holder {
    fn drop(&mut self) {
        for r in &self.readers {
            r.abort();
        }
    }
}

/// The hidden `idle-worker` command: connect the targets in the file,
/// print one JSON line, then hold them until stdin says `report` (answer
/// how many closed) or closes.
pub async fn worker(args: &WorkerArgs, concurrency: usize) -> Result<()> {
    let text = std::fs::read_to_string(&args.targets)?;
    let targets: Vec<Target> = text
        .lines()
        .filter_map(|l| {
            let mut parts = l.split(' ');
            let addr: SocketAddr = parts.next()?.parse().ok()?;
            let src = parts.next()?;
            let token = parts.next()?.to_owned();
            Some(Target {
                addr,
                src: src.parse().ok(),
                token,
            })
        })
        .collect();
    let (stats, holder) = hold(targets, concurrency).await;
    let ms = |q: f64| round2(stats.latency.value_at_quantile(q) as f64 / 1000.0);
    println!(
        "{}",
        json!({
            "ok": stats.ok, "failed": stats.failed, "seconds": stats.seconds,
            "first_error": stats.first_error, "p50_ms": ms(0.5), "p99_ms": ms(0.99),
            "max_ms": round2(stats.latency.max() as f64 / 1000.0),
        })
    );
    let closed = holder.closed.clone();
    tokio::task::spawn_blocking(move || {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let Ok(line) = line else { break };
            if line.trim() == "report" {
                println!("{}", json!({"closed": closed.load(Ordering::Relaxed)}));
            }
        }
    })
    .await?;
    drop(holder);
    Ok(())
}

struct WorkerProc {
    child: Child,
    stdin: Option<ChildStdin>,
    out: BufReader<std::process::ChildStdout>,
}

impl WorkerProc {
    fn read_json(&mut self) -> Result<Value> {
        let mut line = String::new();
        self.out.read_line(&mut line)?;
        serde_json::from_str(&line).with_context(|| format!("worker said {line:?}"))
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the scenario.
pub async fn run(env: &Env, args: &IdleArgs) -> Result<Report> {
    let mut report = Report::new("idle");
    let sessions = args.sessions.max(1);
    let per_process = env.client_nofile.saturating_sub(FD_MARGIN).max(1) as usize;
    let workers = if sessions > per_process {
        sessions.div_ceil(per_process)
    } else {
        0
    };
    let n_users = args.users.unwrap_or(sessions).clamp(1, sessions);
    let (mut servers, seeder) = env.servers().await?;
    let users = seeder
        .users(&super::seed::prefix(), n_users, env.http_concurrency)
        .await?;
    drop(seeder);
    env.start(&mut servers).await?;
    let per_node = sessions.div_ceil(servers.nodes.len());
    for (name, limit) in servers.nofile() {
        if let Some(limit) = limit {
            if per_node as u64 + 100 > limit {
                eprintln!(
                    "warning: {name} may open {limit} files, fewer than the {per_node} sessions it would get"
                );
            }
        }
    }
    // Let the fresh nodes settle before the baseline.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let anon = |servers: &super::servers::Servers| -> Vec<Option<u64>> {
        servers
            .pids()
            .iter()
            .map(|(_, p)| procs::status_kib(Some(*p), "RssAnon"))
            .collect()
    };
    let rss_before = servers.rss();
    let anon_before = anon(&servers);
    let client_rss_before = procs::rss_kib(None);

    let addrs = servers.http_addrs();
    let ips = SourceIps(env.source_ips);
    let targets: Vec<Target> = (0..sessions)
        .map(|i| Target {
            addr: addrs[i % addrs.len()],
            src: ips.of(i),
            token: users[i % n_users].token.clone(),
        })
        .collect();
    eprintln!(
        "connecting {sessions} sessions{}",
        if workers > 0 {
            format!(" from {workers} worker processes")
        } else {
            String::new()
        }
    );
    let mut fields = Fields::new();
    let mut procs_: Vec<WorkerProc> = Vec::new();
    let mut holder = None;
    let (connected, connect_cpu) = if workers == 0 {
        let meter = CpuMeter::start(&servers.pids());
        let (stats, h) = hold(targets, env.concurrency).await;
        let cpu = meter.stop();
        holder = Some(h);
        put(&mut fields, "connected", stats.ok);
        put(&mut fields, "failed", stats.failed);
        if let Some(e) = &stats.first_error {
            put(&mut fields, "first_error", e.clone());
        }
        put(&mut fields, "connect_s", round2(stats.seconds));
        put(
            &mut fields,
            "connects_per_s",
            round1(stats.ok as f64 / stats.seconds.max(1e-9)),
        );
        latency_fields(&mut fields, "connect", &stats.latency);
        (stats.ok, cpu)
    } else {
        let dir = servers
            .log_dir()
            .ok_or_else(|| anyhow!("workers need the nodes' directory"))?;
        let exe = std::env::current_exe()?;
        let mut chunks: Vec<Vec<Target>> = vec![Vec::new(); workers];
        for (i, t) in targets.into_iter().enumerate() {
            chunks[i % workers].push(t);
        }
        for (w, chunk) in chunks.iter().enumerate() {
            let path = dir.join(format!("idle-worker-{w}.txt"));
            let mut text = String::new();
            for t in chunk {
                let src = t.src.map(|s| s.to_string()).unwrap_or_else(|| "-".into());
                text.push_str(&format!("{} {src} {}\n", t.addr, t.token));
            }
            std::fs::write(&path, text)?;
            let mut child = Command::new(&exe)
                .arg("--concurrency")
                .arg((env.concurrency / workers).max(1).to_string())
                .arg("--client-threads")
                .arg("1")
                .arg("idle-worker")
                .arg("--targets")
                .arg(&path)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .context("starting an idle worker")?;
            let stdin = child.stdin.take();
            let out = BufReader::new(
                child
                    .stdout
                    .take()
                    .ok_or_else(|| anyhow!("worker stdout"))?,
            );
            procs_.push(WorkerProc { child, stdin, out });
        }
        let pids: Vec<u32> = procs_.iter().map(|p| p.child.id()).collect();
        let meter = CpuMeter::start_with(&servers.pids(), &pids);
        let started = std::time::Instant::now();
        let mut replies = Vec::new();
        for p in procs_.iter_mut() {
            replies.push(tokio::task::block_in_place(|| p.read_json())?);
        }
        let seconds = started.elapsed().as_secs_f64();
        let cpu = meter.stop();
        let sum = |k: &str| replies.iter().filter_map(|r| r[k].as_u64()).sum::<u64>();
        let worst = |k: &str| {
            replies
                .iter()
                .filter_map(|r| r[k].as_f64())
                .fold(0.0f64, f64::max)
        };
        let ok = sum("ok") as usize;
        put(&mut fields, "client_processes", workers);
        put(&mut fields, "connected", ok);
        put(&mut fields, "failed", sum("failed"));
        if let Some(e) = replies.iter().find_map(|r| r["first_error"].as_str()) {
            put(&mut fields, "first_error", e.to_owned());
        }
        put(&mut fields, "connect_s", round2(seconds));
        put(&mut fields, "connects_per_s", round1(ok as f64 / seconds));
        put(&mut fields, "connect_p50_ms_worst_worker", worst("p50_ms"));
        put(&mut fields, "connect_p99_ms_worst_worker", worst("p99_ms"));
        put(&mut fields, "connect_max_ms", worst("max_ms"));
        (ok, cpu)
    };
    let helper_pids: Vec<u32> = procs_.iter().map(|p| p.child.id()).collect();
    let client_rss = || -> Option<u64> {
        let mut total = procs::rss_kib(None)?;
        for p in &helper_pids {
            total += procs::rss_kib(Some(*p))?;
        }
        Some(total)
    };

    tokio::time::sleep(Duration::from_secs(2)).await;
    let meter = CpuMeter::start_with(&servers.pids(), &helper_pids);
    tokio::time::sleep(Duration::from_secs_f64(args.hold)).await;
    let idle_cpu = meter.stop();
    let rss_after = servers.rss();
    let anon_after = anon(&servers);
    let client_rss_after = client_rss();
    let metrics = servers.metrics_sum().await;
    let server_sessions = metrics.get("parley_sessions").copied().unwrap_or(f64::NAN);
    let closed = match &holder {
        Some(h) => h.closed.load(Ordering::Relaxed),
        None => {
            let mut closed = 0;
            for p in procs_.iter_mut() {
                if let Some(stdin) = p.stdin.as_mut() {
                    writeln!(stdin, "report")?;
                    stdin.flush()?;
                }
                closed += tokio::task::block_in_place(|| p.read_json())?["closed"]
                    .as_u64()
                    .unwrap_or(0);
            }
            closed
        }
    };

    env.describe(&mut report, &servers);
    put(&mut report.fields, "sessions", sessions);
    put(&mut report.fields, "users", n_users);
    report.fields.extend(fields);
    put(&mut report.fields, "server_sessions", server_sessions);
    if connected == 0 {
        bail!("no session connected");
    }
    let mut before_total = 0u64;
    let mut after_total = 0u64;
    let mut by_node = HashMap::new();
    for ((name, before), (_, after)) in rss_before.iter().zip(&rss_after) {
        if let (Some(b), Some(a)) = (before, after) {
            before_total += b;
            after_total += a;
            by_node.insert(name.clone(), json!({"before_kib": b, "after_kib": a}));
        }
    }
    if !by_node.is_empty() {
        put(&mut report.fields, "server_rss_before_kib", before_total);
        put(&mut report.fields, "server_rss_after_kib", after_total);
        put(
            &mut report.fields,
            "server_rss_per_session_kib",
            round2((after_total as f64 - before_total as f64) / connected as f64),
        );
        let anon: u64 = anon_after
            .iter()
            .zip(&anon_before)
            .filter_map(|(a, b)| Some(a.as_ref()?.saturating_sub(*b.as_ref()?)))
            .sum();
        put(
            &mut report.fields,
            "server_anon_per_session_kib",
            round2(anon as f64 / connected as f64),
        );
        if by_node.len() > 1 {
            put(
                &mut report.fields,
                "server_rss_by_node",
                Value::Object(by_node.into_iter().collect()),
            );
        }
    }
    if let (Some(b), Some(a)) = (client_rss_before, client_rss_after) {
        put(
            &mut report.fields,
            "client_rss_per_session_kib",
            round2((a as f64 - b as f64) / connected as f64),
        );
    }
    for (k, v) in connect_cpu.fields() {
        report.fields.push((format!("connect_{k}"), v));
    }
    for (k, v) in idle_cpu.fields() {
        report.fields.push((format!("idle_{k}"), v));
    }
    put(&mut report.fields, "closed_while_idle", closed);
    drop(holder);
    drop(procs_);
    Ok(report)
}

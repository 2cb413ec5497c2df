//! `failover`: three nodes; a group receives a steady stream of sends from
//! clients on the two other nodes; its home node is killed with SIGKILL.
//! How long until the conversation accepts sends again, and is anything
//! lost, duplicated or reordered?
//!
//! The sender behaves like a real client: a send with no `sent` within
//! `--resend-ms` is sent again with the same `client_msg_id` (idempotent).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio_tungstenite::tungstenite::Message;

use super::procs::round2;
use super::report::{latency_fields, put, Report};
use super::seed::User;
use super::servers::node_name;
use super::ws::{self, histogram, Frame, SourceIps, Target};
use super::Env;

/// Shape of a `failover` run.
#[derive(Debug, Clone, clap::Args)]
pub struct FailoverArgs {
    /// Members of the busy group (one sends, all others receive).
    #[arg(long, default_value_t = 10)]
    pub members: usize,
    /// Sends per second to the group.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Seconds of traffic before the kill.
    #[arg(long, default_value_t = 3.0)]
    pub before: f64,
    /// Seconds of traffic after the kill.
    #[arg(long, default_value_t = 10.0)]
    pub after: f64,
    /// Resend a send not acknowledged within this many milliseconds.
    #[arg(long, default_value_t = 500)]
    pub resend_ms: u64,
}

struct Pending {
    first_sent: Instant,
    last_sent: Instant,
    text: String,
}

#[derive(Default)]
struct Received {
    /// seq -> times received.
    seqs: BTreeMap<u64, u32>,
    out_of_order: u64,
    last: u64,
    first_after_kill: Option<Instant>,
}

fn ms(d: Duration) -> f64 {
    round2(d.as_secs_f64() * 1000.0)
}

/// Runs the scenario.
pub async fn run(env: &Env, args: &FailoverArgs) -> Result<Report> {
    let mut report = Report::new("failover");
    if env.target.is_some() {
        bail!("failover kills nodes: it runs only on nodes it starts (no --target)");
    }
    let mut env = env.clone();
    if env.nodes < 3 {
        eprintln!("failover needs 3 nodes: starting 3");
        env.nodes = 3;
    }
    let members = args.members.max(2);
    let (mut servers, seeder) = env.servers().await?;
    let users: Vec<User> = seeder
        .users(&super::seed::prefix(), members, env.http_concurrency)
        .await?;
    let refs: Vec<&User> = users.iter().collect();
    let conv_id = seeder.group("failover", refs[0], &refs[1..]).await?;
    drop(seeder);
    let names: Vec<String> = (0..env.nodes).map(node_name).collect();
    let home = actors::placement::conversation_home(conv_id, names.iter().map(String::as_str))
        .ok_or_else(|| anyhow!("no home node"))?
        .to_owned();
    let home_idx = names
        .iter()
        .position(|n| *n == home)
        .ok_or_else(|| anyhow!("home {home} is not a node"))?;
    env.start(&mut servers).await?;
    env.describe(&mut report, &servers);
    let survivors: Vec<usize> = (0..env.nodes).filter(|&i| i != home_idx).collect();
    let addrs = servers.http_addrs();
    let ips = SourceIps(env.source_ips);
    let targets: Vec<Target> = users
        .iter()
        .enumerate()
        .map(|(i, u)| Target {
            addr: addrs[survivors[i % survivors.len()]],
            src: ips.of(i),
            token: u.token.clone(),
        })
        .collect();
    let (conns, stats) = ws::connect_all(targets, env.concurrency).await;
    if stats.failed > 0 {
        bail!("connecting: {}", stats.first_error.unwrap_or_default());
    }
    let mut conns: Vec<ws::Ws> = conns.into_iter().flatten().collect();
    let mut sender = conns.remove(0);

    // Receivers record every seq they get.
    let kill_at: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut receivers = Vec::new();
    for mut ws in conns {
        let kill_at = kill_at.clone();
        let mut stop = stop_rx.clone();
        receivers.push(tokio::spawn(async move {
            let mut r = Received::default();
            loop {
                let m = tokio::select! {
                    _ = stop.changed() => break,
                    m = ws.next() => match m {
                        Some(Ok(m)) => m,
                        _ => break,
                    },
                };
                let Message::Text(t) = m else { continue };
                if let Frame::Message { seq, .. } = ws::parse(&t) {
                    let now = Instant::now();
                    let killed = kill_at.lock().ok().and_then(|k| *k);
                    if let Some(k) = killed {
                        if now > k && r.first_after_kill.is_none() && !r.seqs.contains_key(&seq) {
                            r.first_after_kill = Some(now);
                        }
                    }
                    if seq < r.last && !r.seqs.contains_key(&seq) {
                        r.out_of_order += 1;
                    }
                    r.last = r.last.max(seq);
                    *r.seqs.entry(seq).or_insert(0) += 1;
                }
            }
            r
        }));
    }

    let interval = Duration::from_secs_f64(1.0 / args.rate.max(0.1));
    let resend = Duration::from_millis(args.resend_ms.max(1));
    let start = Instant::now();
    let t_kill = start + Duration::from_secs_f64(args.before);
    let send_until = t_kill + Duration::from_secs_f64(args.after);
    let give_up = send_until + Duration::from_secs(15);
    let mut pending: HashMap<String, Pending> = HashMap::new();
    let mut acked: Vec<(Instant, Instant, u64)> = Vec::new(); // (first sent, acked, seq)
    let mut ack_before: Histogram<u64> = histogram();
    let mut ack_after: Histogram<u64> = histogram();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut resends = 0u64;
    let mut k = 0u64;
    let mut next_send = start;
    let mut killed = false;
    let mut check = tokio::time::interval(Duration::from_millis(20));
    loop {
        let now = Instant::now();
        if !killed && now >= t_kill {
            servers.kill(home_idx);
            if let Ok(mut k) = kill_at.lock() {
                *k = Some(Instant::now());
            }
            killed = true;
            eprintln!("killed {home} (home of conversation {conv_id})");
        }
        if now >= give_up || (now >= send_until && pending.is_empty()) {
            break;
        }
        let sending = next_send < send_until;
        tokio::select! {
            _ = tokio::time::sleep_until(next_send.into()), if sending => {
                let id = format!("f{k}");
                let text = format!(
                    r#"{{"type":"send","conv_id":{conv_id},"client_msg_id":"{id}","body":"failover {k}"}}"#
                );
                let now = Instant::now();
                if sender.send(Message::Text(text.clone().into())).await.is_err() {
                    bail!("the sender's connection closed");
                }
                pending.insert(id, Pending { first_sent: now, last_sent: now, text });
                k += 1;
                next_send += interval;
            }
            _ = check.tick() => {
                let now = Instant::now();
                for p in pending.values_mut() {
                    if now.duration_since(p.last_sent) >= resend {
                        p.last_sent = now;
                        resends += 1;
                        if sender.feed(Message::Text(p.text.clone().into())).await.is_err() {
                            bail!("the sender's connection closed");
                        }
                    }
                }
                let _ = sender.flush().await;
            }
            msg = sender.next() => {
                let Some(Ok(msg)) = msg else { bail!("the sender's connection closed") };
                let Message::Text(t) = msg else { continue };
                match ws::parse(&t) {
                    Frame::Sent { client_msg_id, .. } => {
                        if let Some(p) = pending.remove(client_msg_id) {
                            let now = Instant::now();
                            let seq = t
                                .split("\"seq\":")
                                .nth(1)
                                .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
                                .and_then(|s| s.parse().ok())
                                .unwrap_or(0);
                            let lat = now.duration_since(p.first_sent).as_micros() as u64;
                            if p.first_sent < t_kill {
                                ack_before.saturating_record(lat);
                            } else {
                                ack_after.saturating_record(lat);
                            }
                            acked.push((p.first_sent, now, seq));
                        }
                    }
                    Frame::Error(text) => {
                        let code = text
                            .split("\"code\":\"")
                            .nth(1)
                            .and_then(|s| s.split('"').next())
                            .unwrap_or("?")
                            .to_owned();
                        *errors.entry(code).or_insert(0) += 1;
                    }
                    _ => {}
                }
            }
        }
    }
    let kill_time = kill_at
        .lock()
        .ok()
        .and_then(|k| *k)
        .ok_or_else(|| anyhow!("the node was never killed"))?;
    // Let the last deliveries arrive, then stop the receivers.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = stop_tx.send(true);
    let mut results = Vec::new();
    for r in receivers {
        if let Ok(r) = r.await {
            results.push(r);
        }
    }
    drop(sender);

    put(&mut report.fields, "conv_id", conv_id);
    put(&mut report.fields, "killed_node", home.clone());
    put(&mut report.fields, "members", members);
    put(&mut report.fields, "rate", args.rate);
    put(&mut report.fields, "resend_ms", args.resend_ms);
    put(&mut report.fields, "sends", k);
    put(&mut report.fields, "resends", resends);
    put(&mut report.fields, "acked", acked.len());
    put(&mut report.fields, "never_acked", pending.len());
    // Time to the first ack of a send first made after the kill.
    let first_new = acked
        .iter()
        .filter(|(sent, _, _)| *sent >= kill_time)
        .map(|(_, at, _)| *at)
        .min();
    put(
        &mut report.fields,
        "first_ack_of_new_send_after_kill_ms",
        first_new.map(|t| ms(t.duration_since(kill_time))),
    );
    // The longest silence in acks around the kill.
    let mut ack_times: Vec<Instant> = acked.iter().map(|(_, at, _)| *at).collect();
    ack_times.sort();
    let gap = ack_times
        .windows(2)
        .filter(|w| w[1] >= kill_time)
        .map(|w| w[1].duration_since(w[0]))
        .max();
    put(&mut report.fields, "longest_ack_gap_ms", gap.map(ms));
    // Sends in flight at the kill: when the last of them was acknowledged.
    let inflight_done = acked
        .iter()
        .filter(|(sent, at, _)| *sent < kill_time && *at >= kill_time)
        .map(|(_, at, _)| *at)
        .max();
    put(
        &mut report.fields,
        "inflight_at_kill",
        acked
            .iter()
            .filter(|(sent, at, _)| *sent < kill_time && *at >= kill_time)
            .count(),
    );
    put(
        &mut report.fields,
        "inflight_all_acked_after_ms",
        inflight_done.map(|t| ms(t.duration_since(kill_time))),
    );
    latency_fields(&mut report.fields, "ack_before_kill", &ack_before);
    latency_fields(&mut report.fields, "ack_after_kill", &ack_after);
    put(
        &mut report.fields,
        "error_frames",
        serde_json::to_value(&errors)?,
    );
    // Receivers: gapless, in order, no duplicates?
    let max_seq = acked.iter().map(|(_, _, s)| *s).max().unwrap_or(0);
    let distinct_acked: std::collections::BTreeSet<u64> =
        acked.iter().map(|(_, _, s)| *s).collect();
    put(&mut report.fields, "max_seq", max_seq);
    put(
        &mut report.fields,
        "duplicate_seqs_acked",
        acked.len() - distinct_acked.len(),
    );
    let mut missing = 0u64;
    let mut dups = 0u64;
    let mut ooo = 0u64;
    let mut first_delivery: Option<Instant> = None;
    for r in &results {
        missing += (1..=max_seq).filter(|s| !r.seqs.contains_key(s)).count() as u64;
        dups += r
            .seqs
            .values()
            .map(|&c| u64::from(c.saturating_sub(1)))
            .sum::<u64>();
        ooo += r.out_of_order;
        if let Some(t) = r.first_after_kill {
            first_delivery = Some(first_delivery.map_or(t, |f: Instant| f.min(t)));
        }
    }
    put(&mut report.fields, "receivers", results.len());
    put(&mut report.fields, "receiver_missing_seqs", missing);
    put(&mut report.fields, "receiver_duplicate_frames", dups);
    put(&mut report.fields, "receiver_out_of_order", ooo);
    put(
        &mut report.fields,
        "first_delivery_after_kill_ms",
        first_delivery.map(|t| ms(t.duration_since(kill_time))),
    );
    Ok(report)
}

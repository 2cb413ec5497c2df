//! `storm`: many clients arriving at once: log in, connect, authenticate;
//! then all of them reconnecting with the tokens they have (a node came
//! back). Argon2 is measured on its own: at its real cost registering and
//! logging in 10k users takes this machine minutes by design.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use futures_util::SinkExt;
use hdrhistogram::Histogram;
use tokio_tungstenite::tungstenite::Message;

use super::procs::{round1, round2, CpuMeter};
use super::report::{latency_fields, put, Report};
use super::seed::{par_map, prefix, Seeder};
use super::ws::{self, histogram, SourceIps, Target, Ws};
use super::Env;

/// Shape of a `storm` run.
#[derive(Debug, Clone, clap::Args)]
pub struct StormArgs {
    /// Clients arriving together.
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Users registered and logged in over HTTP at the server's real argon2
    /// cost, to measure it (0 skips).
    #[arg(long, default_value_t = 100)]
    pub argon_sample: usize,
}

fn record(h: &Mutex<Histogram<u64>>, since: Instant) {
    if let Ok(mut h) = h.lock() {
        h.saturating_record(since.elapsed().as_micros() as u64);
    }
}

/// Runs the scenario.
pub async fn run(env: &Env, args: &StormArgs) -> Result<Report> {
    let mut report = Report::new("storm");
    let n = args.clients.max(1);
    if n as u64 + 200 > env.client_nofile {
        anyhow::bail!(
            "{n} clients need more open files than this process may have ({})",
            env.client_nofile
        );
    }
    let (mut servers, seeder) = env.servers().await?;
    let pre = prefix();
    let users = seeder.users(&pre, n, env.http_concurrency).await?;
    drop(seeder);
    env.start(&mut servers).await?;
    env.describe(&mut report, &servers);
    put(&mut report.fields, "clients", n);
    put(&mut report.fields, "concurrency", env.concurrency);
    let addrs = servers.http_addrs();

    // Argon2 at the server's real cost.
    if args.argon_sample > 0 {
        let s = args.argon_sample;
        let seeder = Seeder::http(addrs[0]);
        let names: Vec<String> = (0..s).map(|i| format!("{pre}a{i}")).collect();
        let meter = CpuMeter::start(&servers.pids());
        let t0 = Instant::now();
        let sd = seeder.clone();
        par_map(names.clone(), env.http_concurrency, move |name| {
            let sd = sd.clone();
            async move { sd.register_http(&name).await }
        })
        .await?;
        let reg_s = t0.elapsed().as_secs_f64();
        let reg_cpu = meter.stop();
        let meter = CpuMeter::start(&servers.pids());
        let t0 = Instant::now();
        let sd = seeder.clone();
        par_map(names, env.http_concurrency, move |name| {
            let sd = sd.clone();
            async move { sd.login_http(&name).await }
        })
        .await?;
        let login_s = t0.elapsed().as_secs_f64();
        let login_cpu = meter.stop();
        let per_s = |secs: f64| round1(s as f64 / secs.max(1e-9));
        let cpu_ms = |cpu: &super::procs::CpuUse, secs: f64| {
            round2(cpu.servers_total() / 100.0 * secs / s as f64 * 1000.0)
        };
        put(&mut report.fields, "argon_sample", s);
        put(
            &mut report.fields,
            "argon_concurrency",
            env.http_concurrency,
        );
        put(&mut report.fields, "register_per_s", per_s(reg_s));
        put(
            &mut report.fields,
            "register_server_cpu_ms",
            cpu_ms(&reg_cpu, reg_s),
        );
        put(&mut report.fields, "login_per_s", per_s(login_s));
        put(
            &mut report.fields,
            "login_server_cpu_ms",
            cpu_ms(&login_cpu, login_s),
        );
        put(
            &mut report.fields,
            "est_real_argon_login_s",
            round1(n as f64 / (s as f64 / login_s.max(1e-9))),
        );
        put(
            &mut report.fields,
            "est_real_argon_register_s",
            round1(n as f64 / (s as f64 / reg_s.max(1e-9))),
        );
    }

    // The storm: each client logs in (cheap hash: seeded users), connects
    // and waits for hello.
    let ips = SourceIps(env.source_ips);
    let login_h = Arc::new(Mutex::new(histogram()));
    let total_h = Arc::new(Mutex::new(histogram()));
    let jobs: Vec<(usize, String)> = users
        .iter()
        .enumerate()
        .map(|(i, u)| (i, u.name.clone()))
        .collect();
    let meter = CpuMeter::start(&servers.pids());
    let t0 = Instant::now();
    let (lh, th, addrs2) = (login_h.clone(), total_h.clone(), addrs.clone());
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(env.concurrency)
        .build()?;
    let conns: Vec<(Ws, String)> = par_map(jobs, env.concurrency, move |(i, name)| {
        let (lh, th) = (lh.clone(), th.clone());
        let addr = addrs2[i % addrs2.len()];
        let seeder = Seeder::http_at(format!("http://{addr}"), http.clone());
        async move {
            let start = Instant::now();
            let (_, token) = seeder.login_http(&name).await?;
            record(&lh, start);
            let ws = ws::connect(addr, ips.of(i), &token).await?;
            record(&th, start);
            Ok((ws, token))
        }
    })
    .await?;
    let storm_s = t0.elapsed().as_secs_f64();
    let storm_cpu = meter.stop();
    put(&mut report.fields, "login_connect_s", round2(storm_s));
    put(
        &mut report.fields,
        "login_connect_per_s",
        round1(n as f64 / storm_s.max(1e-9)),
    );
    let hist =
        |h: &Mutex<Histogram<u64>>| h.lock().map(|h| h.clone()).unwrap_or_else(|_| histogram());
    latency_fields(&mut report.fields, "login", &hist(&login_h));
    latency_fields(&mut report.fields, "login_connect", &hist(&total_h));
    for (k, v) in storm_cpu.fields() {
        report.fields.push((format!("login_connect_{k}"), v));
    }

    // Everyone leaves, then comes back with the token they have.
    let mut tokens = Vec::with_capacity(conns.len());
    for (mut ws, token) in conns {
        let _ = ws.send(Message::Close(None)).await;
        tokens.push(token);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let m = servers.metrics_sum().await;
        if m.get("parley_sessions").copied().unwrap_or(0.0) == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let targets: Vec<Target> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, token)| Target {
            addr: addrs[i % addrs.len()],
            src: ips.of(i + n),
            token,
        })
        .collect();
    let meter = CpuMeter::start(&servers.pids());
    let (again, stats) = ws::connect_all(targets, env.concurrency).await;
    let cpu = meter.stop();
    put(&mut report.fields, "reconnect_s", round2(stats.seconds));
    put(
        &mut report.fields,
        "reconnects_per_s",
        round1(stats.ok as f64 / stats.seconds.max(1e-9)),
    );
    put(&mut report.fields, "reconnect_failed", stats.failed);
    if let Some(e) = stats.first_error {
        put(&mut report.fields, "reconnect_first_error", e);
    }
    latency_fields(&mut report.fields, "reconnect", &stats.latency);
    for (k, v) in cpu.fields() {
        report.fields.push((format!("reconnect_{k}"), v));
    }
    drop(again);
    Ok(report)
}

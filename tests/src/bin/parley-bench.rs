//! `parley-bench`: Parley's load generator.
//!
//! It simulates users over the real protocol (HTTP to log in, WebSocket to
//! chat) against nodes it starts itself (`--nodes 1|3`, release build,
//! fresh store, free ports, per-user send limits lifted) or against one
//! running node on loopback (`--target`). Scenarios:
//!
//! - `idle`: connect many sessions that stay quiet; server RSS per session;
//! - `direct`: paced one-to-one messages; persisted msgs/s and latency;
//! - `fanout`: paced group messages; deliveries/s and latency;
//! - `storm`: many clients logging in and connecting at once;
//! - `failover`: kill -9 a busy conversation's home node; time to recover;
//! - `abuse`: hostile clients against one node with its default limits
//!   (login burst, slowloris, connection flood, sync spam); RSS and
//!   `/healthz` latency during each.
//!
//! Sends are open loop (a schedule of intended times; latency counts from
//! the intended time). Every run reports the generator's own CPU beside the
//! servers', stops by itself, kills the nodes it started, and prints a
//! table and one JSON line. BENCHMARKS.md has the commands and results.

#[path = "parley_bench/abuse.rs"]
mod abuse;
#[path = "parley_bench/failover.rs"]
mod failover;
#[path = "parley_bench/idle.rs"]
mod idle;
#[path = "parley_bench/load.rs"]
mod load;
#[path = "parley_bench/pacer.rs"]
mod pacer;
#[path = "parley_bench/procs.rs"]
mod procs;
#[path = "parley_bench/report.rs"]
mod report;
#[path = "parley_bench/seed.rs"]
mod seed;
#[path = "parley_bench/servers.rs"]
mod servers;
#[path = "parley_bench/storm.rs"]
mod storm;
#[path = "parley_bench/ws.rs"]
mod ws;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};

use report::{put, Report};
use seed::Seeder;
use servers::{NodeSettings, Servers};

/// Parley's load generator (targets 127.0.0.0/8 only).
#[derive(Debug, Parser)]
#[command(name = "parley-bench", version)]
struct Cli {
    /// Nodes to start and spread the clients over (1 or 3 to compare; the
    /// same total load either way).
    #[arg(long, global = true, default_value_t = 1)]
    nodes: usize,
    /// Load a running node at HOST:PORT instead (127.0.0.0/8 only). Users
    /// are then registered through its API, at its real argon2 cost.
    #[arg(long, global = true)]
    target: Option<String>,
    /// The --target's pid, to report its CPU and memory.
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// The store's own processes (a FoundationDB server's pid; repeat for
    /// several): their CPU and the bytes they write are reported too.
    #[arg(long = "store-pid", global = true)]
    store_pids: Vec<u32>,
    /// The parley binary (default: target/release/parley next to this one).
    #[arg(long, global = true)]
    parley_bin: Option<PathBuf>,
    /// `max_batch` of the started nodes (messages per append transaction).
    #[arg(long, global = true, default_value_t = 256)]
    max_batch: usize,
    /// Spread client sockets over 127.0.0.2 ..= 127.0.0.(1+N) (0: let the
    /// kernel pick 127.0.0.1).
    #[arg(long, global = true, default_value_t = 8)]
    source_ips: u8,
    /// WebSocket handshakes (and storm logins) in flight at once. Above
    /// ~128 a node's accept queue overflows (tokio's listen backlog is 128)
    /// and some connects wait out a 1 s SYN retransmission.
    #[arg(long, global = true, default_value_t = 100)]
    concurrency: usize,
    /// HTTP requests in flight at once while seeding through the API and
    /// measuring argon2.
    #[arg(long, global = true, default_value_t = 8)]
    http_concurrency: usize,
    /// The generator's tokio worker threads (default: one per core).
    #[arg(long, global = true)]
    client_threads: Option<usize>,
    /// Stop (and kill the nodes) after this many seconds whatever happens.
    #[arg(long, global = true, default_value_t = 300)]
    max_seconds: u64,
    /// Keep the nodes' store and logs after the run.
    #[arg(long, global = true)]
    keep: bool,
    /// Pin the started nodes to these CPUs (`taskset -c` list, e.g. `0`);
    /// `peers` defaults to `0`.
    #[arg(long, global = true)]
    server_cpus: Option<String>,
    /// TLS everywhere: the started nodes speak mutual TLS to each other
    /// and HTTPS/WSS to the generator (a throwaway CA made with `parley
    /// certs`), to measure what it costs.
    #[arg(long, global = true)]
    tls: bool,
    /// The nodes' log filter (`PARLEY_LOG`); more than `warn` costs CPU.
    #[arg(long, global = true, default_value = "warn")]
    node_log: String,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Idle sessions: server RSS per connected session.
    Idle(idle::IdleArgs),
    /// One-to-one chats at paced rates: persisted msgs/s and latency.
    Direct(load::DirectArgs),
    /// Group messages at paced rates: deliveries/s and latency.
    Fanout(load::FanoutArgs),
    /// The peer comparison's workload (issue #15): 100 users, 10 groups of
    /// 10, 15 s open-loop steps, the node pinned to CPU 0 and the generator
    /// to the other CPUs.
    Peers(load::PeersArgs),
    /// Many clients logging in and connecting at once.
    Storm(storm::StormArgs),
    /// Kill -9 the home node of a busy conversation (3 nodes).
    Failover(failover::FailoverArgs),
    /// Hostile clients against one node with default limits, 1024 files.
    Abuse(abuse::AbuseArgs),
    /// (internal) Holds a share of `idle`'s sessions in another process.
    #[command(hide = true)]
    IdleWorker(idle::WorkerArgs),
}

/// What every scenario needs: where the servers are and how to reach them.
#[derive(Debug, Clone)]
pub struct Env {
    nodes: usize,
    target: Option<SocketAddr>,
    server_pid: Option<u32>,
    store_pids: Vec<u32>,
    settings: NodeSettings,
    source_ips: u8,
    concurrency: usize,
    http_concurrency: usize,
    keep: bool,
    client_nofile: u64,
    client_threads: usize,
}

impl Env {
    /// The servers (not started) and where to seed their users.
    async fn servers(&self) -> Result<(Servers, Seeder)> {
        if let Some(addr) = self.target {
            let mut servers = Servers::target(addr, self.server_pid);
            servers.store_pids = self.store_pids.clone();
            return Ok((servers, Seeder::http(addr)));
        }
        let mut servers = Servers::prepare(self.nodes, &self.settings, self.keep)?;
        servers.store_pids = self.store_pids.clone();
        let store = servers
            .store()
            .ok_or_else(|| anyhow::anyhow!("no store to seed"))?;
        let seeder = Seeder::store(&store)?;
        Ok((servers, seeder))
    }

    /// Starts the nodes (after seeding).
    async fn start(&self, servers: &mut Servers) -> Result<()> {
        if servers.owned() {
            eprintln!("starting {} node(s)", servers.nodes.len());
        }
        servers.start_all(&self.settings).await
    }

    /// The run's setup, for the report.
    fn describe(&self, report: &mut Report, servers: &Servers) {
        let f = &mut report.fields;
        match self.target {
            Some(t) => put(f, "target", t.to_string()),
            None => put(f, "nodes", servers.nodes.len()),
        }
        put(f, "cores", cores());
        put(f, "client_threads", self.client_threads);
        if servers.owned() {
            put(f, "max_batch", self.settings.max_batch);
        }
        put(f, "client_nofile", self.client_nofile);
        let limits: Vec<u64> = servers
            .nofile()
            .into_iter()
            .filter_map(|(_, l)| l)
            .collect();
        if let Some(l) = limits.iter().min() {
            put(f, "server_nofile", *l);
        }
    }
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let target = match &cli.target {
        Some(t) => Some(servers::parse_target(t)?),
        None => None,
    };
    if target.is_none() && !(1..=16).contains(&cli.nodes) {
        bail!("--nodes must be 1 to 16");
    }
    let client_nofile = procs::raise_nofile(servers::WANT_NOFILE);
    let mut client_threads = cli.client_threads.unwrap_or_else(cores).max(1);
    if let Some(cpus) = &cli.server_cpus {
        procs::parse_cpu_list(cpus)?;
    }
    let server_cpus = match (&cli.server_cpus, &cli.scenario) {
        (Some(cpus), _) => Some(cpus.clone()),
        (None, Scenario::Peers(_)) => Some("0".to_owned()),
        (None, _) => None,
    };
    if matches!(cli.scenario, Scenario::Peers(_)) {
        // The generator takes the CPUs the node does not: set on this
        // thread before the runtime starts, so every thread inherits it.
        let mine = procs::pin_to_other_cpus(server_cpus.as_deref().unwrap_or("0"))?;
        if cli.client_threads.is_none() {
            client_threads = mine.max(1);
        }
    }
    let bin = match &cli.parley_bin {
        Some(b) => b.clone(),
        None => servers::default_bin()?,
    };
    let env = Env {
        nodes: if target.is_some() { 1 } else { cli.nodes },
        target,
        server_pid: cli.server_pid,
        store_pids: cli.store_pids.clone(),
        settings: NodeSettings {
            max_batch: cli.max_batch.max(1),
            bin,
            log: cli.node_log.clone(),
            nofile: matches!(cli.scenario, Scenario::Abuse(_)).then_some(1024),
            default_limits: matches!(cli.scenario, Scenario::Abuse(_)),
            cpus: server_cpus,
            tls: cli.tls,
        },
        source_ips: cli.source_ips,
        concurrency: cli.concurrency.max(1),
        http_concurrency: cli.http_concurrency.max(1),
        keep: cli.keep,
        client_nofile,
        client_threads,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(client_threads)
        .enable_all()
        .build()?;
    let _ = ws::base();
    let max = Duration::from_secs(cli.max_seconds.max(1));
    let result = runtime.block_on(async {
        let run = async {
            match &cli.scenario {
                Scenario::Idle(a) => idle::run(&env, a).await,
                Scenario::Direct(a) => load::direct(&env, a).await,
                Scenario::Fanout(a) => load::fanout(&env, a).await,
                Scenario::Peers(a) => load::peers(&env, a).await,
                Scenario::Storm(a) => storm::run(&env, a).await,
                Scenario::Failover(a) => failover::run(&env, a).await,
                Scenario::Abuse(a) => abuse::run(&env, a).await,
                Scenario::IdleWorker(a) => {
                    idle::worker(a, env.concurrency).await?;
                    Ok(Report::new("idle-worker"))
                }
            }
        };
        tokio::select! {
            r = tokio::time::timeout(max, run) => match r {
                Ok(r) => r,
                Err(_) => bail!("stopped after --max-seconds {}", max.as_secs()),
            },
            _ = tokio::signal::ctrl_c() => bail!("interrupted"),
        }
    });
    // Whatever the outcome the nodes are gone by now (dropped with the
    // scenario); do not wait for client sockets to close politely.
    runtime.shutdown_timeout(Duration::from_millis(200));
    // A seeder on FoundationDB started its client network: stop it before
    // exit (its thread must not outlive main).
    #[cfg(feature = "fdb")]
    storage::fdb::shutdown_network();
    let report = result?;
    if !matches!(cli.scenario, Scenario::IdleWorker(_)) {
        report.print();
    }
    Ok(())
}

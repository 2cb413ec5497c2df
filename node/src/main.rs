//! `parley`: runs one Parley node. Parses the configuration, sets up
//! logging, and hands over to [`node::run`] until SIGTERM or ctrl-c.

use std::time::Duration;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc malloc: glibc keeps the 19 MiB argon2 buffers
/// of a login burst in its per-thread arenas (RSS stayed at 2.5 GiB after
/// 64 concurrent logins); mimalloc returns freed pages to the OS within
/// milliseconds. Measured in BENCHMARKS.md ("abuse").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long blocking work still running at exit (password hashing) may take
/// to finish. Store calls run on the storage pool, whose threads end with the
/// process: by then the graceful leave has committed what was pending.
const BLOCKING_DRAIN: Duration = Duration::from_secs(5);

fn main() -> anyhow::Result<()> {
    let mut cli = node::Cli::parse();
    let filter =
        || EnvFilter::try_from_env("PARLEY_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    match cli.command.take() {
        Some(node::Command::Lab(args)) => return lab(args, filter()),
        Some(node::Command::Certs(args)) => {
            node::certs::run(&args)?;
            return Ok(());
        }
        None => {}
    }
    tracing_subscriber::fmt().with_env_filter(filter()).init();
    let config = node::Config::load(cli)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(config.blocking_threads.max(2))
        .enable_all()
        .build()?;
    let result = runtime.block_on(node::run(config, shutdown_signal()));
    runtime.shutdown_timeout(BLOCKING_DRAIN);
    node::stop_storage_network();
    result?;
    Ok(())
}

/// Runs `parley lab`.
fn lab(args: node::lab::LabArgs, filter: EnvFilter) -> anyhow::Result<()> {
    // The lab's stdout is for its address lines; its logs go to stderr.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(node::lab::run(args, shutdown_signal()))?;
    Ok(())
}

/// Completes on SIGTERM or ctrl-c.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
        _ = node::lab::lab_gone() => {},
    }
}

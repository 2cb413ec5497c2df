//! `parley lab`: a local cluster to watch work and to break, from a
//! browser (issue 13).
//!
//! The lab starts N node processes of this same executable
//! ([`supervisor`]), drives simulated users through the public protocol
//! while checking the delivery contract ([`traffic`], [`invariants`]), and
//! serves a page with a lab API on loopback ([`server`]). Controls that
//! signal processes exist only here, in the lab process: the nodes never
//! get such routes.

pub mod invariants;
pub mod server;
pub mod supervisor;
pub mod traffic;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

/// The environment variable that tells a node it was started by a lab and
/// must leave when the lab is gone (its stdin, a pipe from the lab, ends).
pub const LAB_CHILD_ENV: &str = "PARLEY_LAB_CHILD";

/// `parley lab` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct LabArgs {
    /// How many nodes to start (1 to 9).
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Port of the lab page on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 8090)]
    pub port: u16,
}

/// Why the lab could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A flag is out of range.
    #[error("lab: {0}")]
    Args(String),
    /// A file, directory, process or socket could not be created.
    #[error("lab: {what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The nodes did not all answer `/healthz` in time.
    #[error("lab: {0}")]
    NotReady(String),
    /// The nodes' throwaway certificates could not be made.
    #[error("lab: certificates: {0}")]
    Certs(String),
}

/// A fresh random secret (hex), for the cookie and the lab token.
pub fn random_secret() -> String {
    let bytes: [u8; 16] = rand::thread_rng().gen();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Milliseconds since the Unix epoch, the protocol's time unit.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Completes when this process is a lab's node and the lab is gone (its
/// stdin pipe from the lab reached end of file); never otherwise. Lets a
/// node started by a lab that was killed with `SIGKILL` shut down instead
/// of running on orphaned.
pub async fn lab_gone() {
    if std::env::var_os(LAB_CHILD_ENV).is_none() {
        return std::future::pending().await;
    }
    // A thread of its own, not the runtime's blocking pool: a read that
    // never ends there made every graceful stop wait out the runtime's
    // drain (5 s), past the lab's grace, so each ended in SIGKILL.
    let (tx, eof) = tokio::sync::oneshot::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("lab-stdin".into())
        .spawn(move || {
            use std::io::Read;
            let mut sink = [0u8; 64];
            let mut stdin = std::io::stdin();
            loop {
                match stdin.read(&mut sink) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = tx.send(());
        });
    if spawned.is_err() {
        return std::future::pending().await;
    }
    let _ = eof.await;
    tracing::info!("the lab that started this node is gone; shutting down");
}

/// Runs the lab until `shutdown` completes, then stops every node
/// (`SIGTERM`, `SIGKILL` after 5 s).
pub async fn run(args: LabArgs, shutdown: impl Future<Output = ()>) -> Result<(), LabError> {
    if args.nodes == 0 || args.nodes > 9 {
        return Err(LabError::Args("--nodes must be 1 to 9".into()));
    }
    let token = random_secret();
    let exe = std::env::current_exe().map_err(|source| LabError::Io {
        what: "finding this executable".into(),
        source,
    })?;
    let supervisor = Arc::new(supervisor::Supervisor::start(exe, args.nodes, &token)?);
    let ready = supervisor.wait_healthy(Duration::from_secs(60)).await;
    if let Err(e) = ready {
        supervisor.stop_all().await;
        return Err(e);
    }
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], args.port)))
        .await
        .map_err(|source| LabError::Io {
            what: format!("binding the lab page to 127.0.0.1:{}", args.port),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| LabError::Io {
        what: "reading the lab's address".into(),
        source,
    })?;
    let lab = server::Lab::new(token.clone(), supervisor.clone());
    let app = server::router(lab.clone());
    lab.spawn_background();
    println!("lab: http://{addr}/#token={token}");
    for node in supervisor.snapshot() {
        println!("node: {} {}", node.name, node.http);
    }
    println!(
        "data: {} (node logs are there)",
        supervisor.data_dir().display()
    );
    // Not a graceful shutdown of the server: the page's WebSockets would
    // keep it open; the lab leaves as soon as it is told to.
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    tokio::select! {
        _ = shutdown => {}
        r = server => if let Ok(Err(e)) = r {
            tracing::warn!(error = %e, "lab server failed");
        },
    }
    tracing::info!("lab stopping");
    lab.stop_traffic_now().await;
    supervisor.stop_all().await;
    Ok(())
}

//! The Parley node: opens the store, joins the cluster, serves the gateway,
//! and leaves gracefully.
//!
//! The `parley` binary (`main.rs`) only parses the configuration, sets up
//! logging and calls [`run`]; everything else is here so tests can start a
//! node in-process too.

pub mod certs;
pub mod config;
pub mod lab;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use actors::{Cluster, Metrics};
use storage::chat::ChatStore;
use storage::Database;

pub use config::{Cli, Command, Config, DEFAULT_COOKIE};

/// Why a node could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid.
    #[error("configuration: {0}")]
    Config(String),
    /// The node would join other nodes with the default cookie.
    #[error(
        "refusing to run a multi-node cluster with the default cookie: set --cookie or PARLEY_COOKIE to a shared secret"
    )]
    DefaultCookie,
    /// The store could not be opened or used.
    #[error("storage: {0}")]
    Storage(#[from] storage::Error),
    /// The cluster runtime could not start.
    #[error("cluster: {0}")]
    Cluster(#[from] actors::Error),
    /// A listener could not be bound, or a data directory created.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Opens the configured store: FoundationDB when a cluster file is set,
/// else the embedded SQLite file in the data directory.
pub fn open_database(config: &Config) -> Result<Database, Error> {
    if let Some(cluster_file) = &config.fdb_cluster_file {
        #[cfg(feature = "fdb")]
        return Ok(Database::open_fdb_with_prefix(
            Some(cluster_file),
            config.fdb_key_prefix.clone().into_bytes(),
        )?);
        #[cfg(not(feature = "fdb"))]
        return Err(Error::Config(format!(
            "fdb_cluster_file {} is set, but this build has no FoundationDB support (build with --features fdb)",
            cluster_file.display()
        )));
    }
    std::fs::create_dir_all(&config.data_dir).map_err(|source| Error::Io {
        what: format!("creating {}", config.data_dir.display()),
        source,
    })?;
    let options = storage::SqliteOptions {
        busy_timeout: Duration::from_millis(config.busy_timeout_ms),
        fsync_every_commit: config.fsync,
        ..storage::SqliteOptions::default()
    };
    let backend = storage::SqliteBackend::open(config.data_dir.join("parley.sqlite"), options)?;
    Ok(Database::new(backend))
}

/// Runs a node until `shutdown` completes, then leaves the cluster
/// gracefully: stops accepting, hands conversations off, and closes client
/// sockets with a code that tells clients to reconnect elsewhere.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    config.validate()?;
    let trusted_proxies =
        gateway::client_addr::TrustedProxies::parse(&config.gateway.trusted_proxies)
            .map_err(|e| Error::Config(e.to_string()))?;
    let db = open_database(&config)?;
    let store = ChatStore::open(db, config.limits.clone())?;
    refuse_default_cookie_in_a_cluster(&config, &store).await?;

    let listener = listen(config.http_addr).map_err(|source| Error::Io {
        what: format!("binding the gateway to {}", config.http_addr),
        source,
    })?;
    let mut cluster_config = config.cluster();
    let mut identities = Vec::new();
    if let Some(files) = config.tls.cluster_files()? {
        let identity = Arc::new(actors::tls::Identity::load(files)?);
        identities.push(identity.clone());
        cluster_config.tls = Some(actors::tls::ClusterTls::new(identity)?);
    } else if !config.cluster_addr.ip().is_loopback() {
        tracing::warn!(cluster = %config.cluster_addr,
            "insecure_cluster: messages between nodes travel in plaintext");
    }
    let gateway_tls = match config.tls.gateway_files()? {
        Some(files) => {
            let identity = Arc::new(actors::tls::Identity::load(files)?);
            identities.push(identity.clone());
            let server = actors::tls::gateway_server_config(identity)?;
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(server)))
        }
        None => None,
    };
    let (stop_watching, watch_stop) = tokio::sync::watch::channel(false);
    let metrics = Arc::new(Metrics::new());
    let runtime = Cluster::start(cluster_config, store.clone(), metrics).await?;
    let metrics = runtime.cluster().metrics().clone();
    let state = gateway::AppState::new(store, runtime.cluster().clone(), config.gateway.clone());
    let app = gateway::router(state);
    let limits = gateway::listener::ConnectionLimits::resolve(&config.gateway);

    let (stop_accepting, accepting_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(gateway::listener::serve(
        listener,
        app,
        limits,
        gateway_tls,
        trusted_proxies,
        metrics,
        async {
            let _ = accepting_stopped.await;
        },
    ));
    tracing::info!(
        node = %config.node_name,
        http = %config.http_addr,
        cluster = %config.cluster_addr,
        cluster_tls = config.tls.cert.is_some(),
        gateway_tls = config.tls.gateway_cert.is_some(),
        backend = runtime.cluster().store().db().backend_name(),
        "parley node ready"
    );

    tokio::spawn(actors::tls::watch(
        identities,
        Duration::from_secs(config.tls.reload_secs.max(1)),
        watch_stop,
    ));

    shutdown.await;
    tracing::info!("shutting down");
    let _ = stop_watching.send(true);
    let _ = stop_accepting.send(());
    runtime.shutdown().await;
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "gateway task failed"),
        Err(_) => tracing::warn!("gateway connections still open after 5 s; leaving anyway"),
    }
    tracing::info!("stopped");
    Ok(())
}

/// Stops the FoundationDB client network, if this process started it: the
/// binary's very last step, after its async runtime has shut down, because
/// a storage call still waiting on FoundationDB once the network stopped
/// would never return (and the runtime would wait for it forever).
pub fn stop_storage_network() {
    #[cfg(feature = "fdb")]
    storage::fdb::shutdown_network();
}

/// Connections waiting to be accepted. Tokio's default (128) makes a
/// connection storm wait out TCP's 1 s and 3 s retransmits.
const ACCEPT_BACKLOG: u32 = 4096;

/// Binds the gateway's listener with a deep accept queue.
fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)
}

/// A node that finds other live nodes in its store would join them: with
/// the default cookie anyone could too.
async fn refuse_default_cookie_in_a_cluster(
    config: &Config,
    store: &ChatStore,
) -> Result<(), Error> {
    if config.cookie != DEFAULT_COOKIE {
        return Ok(());
    }
    let store = store.clone();
    let leases = tokio::task::spawn_blocking(move || {
        let now = store.now();
        store.leases().map(|l| {
            l.into_iter()
                .filter(|l| l.expires_at > now)
                .collect::<Vec<_>>()
        })
    })
    .await
    .map_err(|e| Error::Config(format!("reading leases: {e}")))??;
    if leases.iter().any(|l| l.name != config.node_name) {
        return Err(Error::DefaultCookie);
    }
    Ok(())
}

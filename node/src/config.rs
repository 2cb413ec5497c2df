//! The node's one configuration: defaults, then an optional TOML file,
//! then `PARLEY_*` environment variables and command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::{Deserialize, Serialize};

use crate::Error;

/// The cookie a node uses when none is configured. Fine for one node on a
/// laptop; a node that would join others with it refuses to start.
pub const DEFAULT_COOKIE: &str = "parley-insecure-default-cookie";

/// Everything a node needs to start. Every field documents its default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// This node's name, unique in the cluster. Default `node-1`.
    pub node_name: String,
    /// The cluster's name; nodes of different clusters ignore each other's
    /// process groups. Default `parley`.
    pub cluster_name: String,
    /// Shared secret of the cluster transport. Default [`DEFAULT_COOKIE`],
    /// refused when the node would join other nodes.
    pub cookie: String,
    /// Where the cluster transport listens. Default `127.0.0.1:4370`.
    pub cluster_addr: SocketAddr,
    /// The address peers dial for this node. Default: `cluster_addr`.
    pub advertise_addr: Option<String>,
    /// Peers to dial at start (`HOST:PORT`). Nodes sharing a store also find
    /// each other through their leases. Default none.
    pub seeds: Vec<String>,
    /// Where the HTTP and WebSocket gateway listens. Default `127.0.0.1:8080`.
    pub http_addr: SocketAddr,
    /// The URL browsers reach this node's gateway at (`http(s)://host:port`,
    /// no path), written in its lease: the web app reconnects to the
    /// cluster's other gateways through it. Default `http://{http_addr}`
    /// (`https://` with `[tls] gateway_cert`);
    /// set it when listening on `0.0.0.0` or behind a proxy.
    pub public_url: Option<String>,
    /// Directory of the embedded store (`parley.sqlite` in it). Default
    /// `./parley-data`.
    pub data_dir: PathBuf,
    /// Use FoundationDB with this cluster file instead of the embedded
    /// store (needs a build with the `fdb` feature). Default unset.
    pub fdb_cluster_file: Option<PathBuf>,
    /// With FoundationDB: keep every key under this prefix, so several
    /// deployments (or test clusters) can share one FoundationDB cluster.
    /// Every node of one deployment must use the same. Default empty.
    pub fdb_key_prefix: String,
    /// Lease renewal period, in milliseconds. Default 1000.
    pub heartbeat_ms: u64,
    /// Lease lifetime, in milliseconds: a node silent this long is dead to
    /// the others. Default 5000.
    pub lease_ttl_ms: u64,
    /// An idle conversation actor stops after this many seconds. Default 300.
    pub conversation_idle_secs: u64,
    /// Most messages in one append transaction. Default 256.
    pub max_batch: usize,
    /// How long the search index follower lets committed messages gather
    /// before it indexes them, in milliseconds (searches read the messages
    /// it has not reached, so nothing waits on it); a conversation with 256
    /// messages waiting is indexed at once. Default 1000.
    pub index_delay_ms: u64,
    /// Group commits in flight at once on FoundationDB (each carries many
    /// conversations' batches; a conversation has at most one in flight,
    /// so its order holds). The embedded store commits one at a time
    /// whatever this says. Default 8.
    pub commit_pipeline: usize,
    /// Timeout of a push notification request, in milliseconds. Default 5000.
    pub push_timeout_ms: u64,
    /// How long a store transaction waits for another's lock, in
    /// milliseconds (embedded store). Default 5000.
    pub busy_timeout_ms: u64,
    /// fsync every commit (survives power loss, slower) instead of only
    /// surviving process crashes. Default false.
    pub fsync: bool,
    /// Threads for blocking work other than store calls (password
    /// hashing, start-up). Work beyond them queues instead of starting
    /// threads (tokio's own bound is 512). Default 16, at least 2.
    pub blocking_threads: usize,
    /// Threads running store calls (the storage pool); calls beyond them
    /// queue (4096 at most, then callers wait). Each running call may hold
    /// its own SQLite connection with its page cache. Default 16, at
    /// least 1.
    pub storage_threads: usize,
    /// Gateway limits and timeouts (`[gateway]` in the file).
    pub gateway: gateway::GatewayConfig,
    /// Input limits of the chat layer (`[limits]` in the file).
    pub limits: storage::chat::Limits,
    /// Offline notifications: Web Push, FCM, APNs (`[push]` in the file;
    /// every field's default in `actors/src/push/config.rs`).
    pub push: actors::PushConfig,
    /// Certificates: mutual TLS between nodes, HTTPS/WSS on the gateway
    /// (`[tls]` in the file). Default: none (plaintext).
    pub tls: TlsConfig,
    /// Run the cluster transport in plaintext on a non-loopback
    /// `cluster_addr`. Messages then cross the network readable by anyone
    /// on the path, with the cookie as the only gate, so a node refuses
    /// that unless this is set (and warns at start). Default false.
    pub insecure_cluster: bool,
}

/// TLS certificates (PEM files). `cert`, `key` and `ca` together turn on
/// mutual TLS between nodes; `gateway_cert` and `gateway_key` together turn
/// on HTTPS and WSS. `parley certs` makes a development CA and certificates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// This node's certificate chain for the cluster transport, leaf first;
    /// presented to peers both ways. Default none.
    pub cert: Option<PathBuf>,
    /// Its private key. Default none.
    pub key: Option<PathBuf>,
    /// The cluster's CA: a peer must present a certificate it signed, for
    /// the address it is dialed at. Default none.
    pub ca: Option<PathBuf>,
    /// The gateway's certificate chain (HTTPS, WSS). Default none: plain
    /// HTTP (behind a TLS proxy, say).
    pub gateway_cert: Option<PathBuf>,
    /// Its private key. Default none.
    pub gateway_key: Option<PathBuf>,
    /// How often the files are checked for a rotation, in seconds (SIGHUP
    /// reloads at once). Default 10.
    pub reload_secs: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert: None,
            key: None,
            ca: None,
            gateway_cert: None,
            gateway_key: None,
            reload_secs: 10,
        }
    }
}

impl TlsConfig {
    /// The cluster transport's files, if mutual TLS is configured.
    pub fn cluster_files(&self) -> Result<Option<actors::tls::TlsFiles>, Error> {
        match (&self.cert, &self.key, &self.ca) {
            (None, None, None) => Ok(None),
            (Some(cert), Some(key), Some(ca)) => Ok(Some(actors::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: Some(ca.clone()),
            })),
            _ => Err(Error::Config(
                "[tls] cert, key and ca go together (mutual TLS between nodes)".into(),
            )),
        }
    }

    /// The gateway's files, if HTTPS is configured.
    pub fn gateway_files(&self) -> Result<Option<actors::tls::TlsFiles>, Error> {
        match (&self.gateway_cert, &self.gateway_key) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => Ok(Some(actors::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: None,
            })),
            _ => Err(Error::Config(
                "[tls] gateway_cert and gateway_key go together".into(),
            )),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            node_name: "node-1".into(),
            cluster_name: "parley".into(),
            cookie: DEFAULT_COOKIE.into(),
            cluster_addr: SocketAddr::from(([127, 0, 0, 1], 4370)),
            advertise_addr: None,
            seeds: Vec::new(),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            data_dir: PathBuf::from("parley-data"),
            fdb_cluster_file: None,
            fdb_key_prefix: String::new(),
            heartbeat_ms: 1000,
            lease_ttl_ms: 5000,
            conversation_idle_secs: 300,
            max_batch: 256,
            commit_pipeline: 8,
            index_delay_ms: 1000,
            push_timeout_ms: 5000,
            busy_timeout_ms: 5000,
            fsync: false,
            blocking_threads: 16,
            storage_threads: 16,
            gateway: gateway::GatewayConfig::default(),
            limits: storage::chat::Limits::default(),
            push: actors::PushConfig::default(),
            tls: TlsConfig::default(),
            insecure_cluster: false,
        }
    }
}

/// Command-line flags; each also reads a `PARLEY_*` environment variable.
/// Unset ones keep the file's or the default value.
#[derive(Debug, Default, Parser)]
#[command(name = "parley", version, about = "A distributed chat node")]
pub struct Cli {
    /// What to run instead of one node (none: run one node).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// A TOML file with any of the settings (flags and env override it).
    #[arg(long, env = "PARLEY_CONFIG")]
    pub config: Option<PathBuf>,
    /// This node's name, unique in the cluster.
    #[arg(long, env = "PARLEY_NODE_NAME")]
    pub node_name: Option<String>,
    /// The cluster's name.
    #[arg(long, env = "PARLEY_CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    /// Shared secret of the cluster transport.
    #[arg(long, env = "PARLEY_COOKIE", hide_env_values = true)]
    pub cookie: Option<String>,
    /// Where the cluster transport listens (HOST:PORT).
    #[arg(long, env = "PARLEY_CLUSTER_ADDR")]
    pub cluster_addr: Option<SocketAddr>,
    /// The address peers dial for this node.
    #[arg(long, env = "PARLEY_ADVERTISE_ADDR")]
    pub advertise_addr: Option<String>,
    /// A peer to dial at start (repeatable; comma-separated in the env).
    #[arg(long = "seed", env = "PARLEY_SEEDS", value_delimiter = ',')]
    pub seeds: Vec<String>,
    /// Where the HTTP/WebSocket gateway listens (HOST:PORT).
    #[arg(long, env = "PARLEY_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// The URL browsers reach this node's gateway at.
    #[arg(long, env = "PARLEY_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Directory of the embedded store.
    #[arg(long, env = "PARLEY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// FoundationDB cluster file (builds with the `fdb` feature).
    #[arg(long, env = "PARLEY_FDB_CLUSTER_FILE")]
    pub fdb_cluster_file: Option<PathBuf>,
    /// Key prefix of this deployment in the FoundationDB cluster.
    #[arg(long, env = "PARLEY_FDB_KEY_PREFIX")]
    pub fdb_key_prefix: Option<String>,
    /// Lease renewal period in milliseconds.
    #[arg(long, env = "PARLEY_HEARTBEAT_MS")]
    pub heartbeat_ms: Option<u64>,
    /// Lease lifetime in milliseconds.
    #[arg(long, env = "PARLEY_LEASE_TTL_MS")]
    pub lease_ttl_ms: Option<u64>,
    /// This node's certificate for mutual TLS between nodes (`[tls] cert`).
    #[arg(long, env = "PARLEY_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// Its private key (`[tls] key`).
    #[arg(long, env = "PARLEY_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// The cluster's CA (`[tls] ca`).
    #[arg(long, env = "PARLEY_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Allow a plaintext cluster transport on a non-loopback address.
    #[arg(long, env = "PARLEY_INSECURE_CLUSTER")]
    pub insecure_cluster: Option<bool>,
    /// A bearer token with the admin role (`[gateway] admin_token`).
    #[arg(long, env = "PARLEY_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
}

/// Subcommands of `parley`; without one it runs a node.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Start a local cluster and a page to watch it work and break it
    /// (`parley lab --nodes 3`), for learning how it behaves.
    Lab(crate::lab::LabArgs),
    /// Make a development CA and certificates for nodes and gateways
    /// (`parley certs --dir certs --name node-1 --host 10.0.0.1`).
    Certs(crate::certs::CertsArgs),
}

impl Config {
    /// Resolves the configuration: defaults, the file, then flags and env.
    pub fn load(cli: Cli) -> Result<Self, Error> {
        let mut config = match &cli.config {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        macro_rules! apply {
            ($($field:ident),*) => { $( if let Some(v) = cli.$field { config.$field = v; } )* };
        }
        apply!(
            node_name,
            cluster_name,
            cookie,
            cluster_addr,
            http_addr,
            data_dir,
            fdb_key_prefix,
            heartbeat_ms,
            lease_ttl_ms
        );
        if let Some(v) = cli.advertise_addr {
            config.advertise_addr = Some(v);
        }
        if let Some(v) = cli.public_url {
            config.public_url = Some(v);
        }
        if let Some(v) = cli.fdb_cluster_file {
            config.fdb_cluster_file = Some(v);
        }
        if !cli.seeds.is_empty() {
            config.seeds = cli.seeds;
        }
        if let Some(v) = cli.tls_cert {
            config.tls.cert = Some(v);
        }
        if let Some(v) = cli.tls_key {
            config.tls.key = Some(v);
        }
        if let Some(v) = cli.tls_ca {
            config.tls.ca = Some(v);
        }
        if let Some(v) = cli.insecure_cluster {
            config.insecure_cluster = v;
        }
        if let Some(v) = cli.admin_token {
            config.gateway.admin_token = Some(v);
        }
        config.validate()?;
        Ok(config)
    }

    fn from_file(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("reading {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// Refuses settings that cannot work together.
    pub fn validate(&self) -> Result<(), Error> {
        if self.node_name.is_empty() || self.node_name.len() > 64 {
            return Err(Error::Config("node_name must be 1 to 64 bytes".into()));
        }
        if self.heartbeat_ms == 0 || self.lease_ttl_ms <= 2 * self.heartbeat_ms {
            return Err(Error::Config(
                "lease_ttl_ms must be more than twice heartbeat_ms (and heartbeat_ms > 0)".into(),
            ));
        }
        if let Some(url) = &self.public_url {
            let rest = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"));
            if !rest.is_some_and(|r| !r.is_empty() && !r.contains(['/', ' ', ';', ','])) {
                return Err(Error::Config(
                    "public_url must be http(s)://HOST[:PORT] without a path".into(),
                ));
            }
        }
        if self
            .gateway
            .admin_token
            .as_ref()
            .is_some_and(|t| t.len() < 16)
        {
            return Err(Error::Config(
                "admin_token must be at least 16 characters".into(),
            ));
        }
        gateway::client_addr::TrustedProxies::parse(&self.gateway.trusted_proxies)
            .map_err(|e| Error::Config(e.to_string()))?;
        if !self.seeds.is_empty() && self.cookie == DEFAULT_COOKIE {
            return Err(Error::DefaultCookie);
        }
        let cluster_tls = self.tls.cluster_files()?.is_some();
        self.tls.gateway_files()?;
        if !cluster_tls && !self.cluster_addr.ip().is_loopback() && !self.insecure_cluster {
            return Err(Error::Config(format!(
                "cluster_addr {} is not a loopback address: set [tls] cert, key and ca for \
                 mutual TLS between nodes (`parley certs` makes development ones), or \
                 insecure_cluster = true to send messages between nodes in plaintext",
                self.cluster_addr
            )));
        }
        Ok(())
    }

    /// The actor runtime's part of the configuration.
    pub fn cluster(&self) -> actors::ClusterConfig {
        actors::ClusterConfig {
            node_name: self.node_name.clone(),
            cluster_name: self.cluster_name.clone(),
            cookie: self.cookie.clone(),
            listen: self.cluster_addr,
            advertise: self
                .advertise_addr
                .clone()
                .unwrap_or_else(|| self.cluster_addr.to_string()),
            http_addr: self.http_addr.to_string(),
            public_url: self.public_url.clone().unwrap_or_else(|| {
                let scheme = if self.tls.gateway_cert.is_some() {
                    "https"
                } else {
                    "http"
                };
                format!("{scheme}://{}", self.http_addr)
            }),
            seeds: self.seeds.clone(),
            heartbeat: Duration::from_millis(self.heartbeat_ms),
            lease_ttl: Duration::from_millis(self.lease_ttl_ms),
            conversation_idle: Duration::from_secs(self.conversation_idle_secs.max(1)),
            max_batch: self.max_batch.max(1),
            commit_pipeline: self.commit_pipeline.max(1),
            index_delay: Duration::from_millis(self.index_delay_ms),
            storage_threads: self.storage_threads.max(1),
            push_timeout: Duration::from_millis(self.push_timeout_ms),
            push: self.push.clone(),
            tls: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_flags() {
        let dir = std::env::temp_dir().join(format!("parley-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("parley.toml");
        std::fs::write(
            &file,
            "node_name = \"from-file\"\nheartbeat_ms = 200\n[gateway]\nmax_frame_bytes = 100\n",
        )
        .expect("write");
        let cli = Cli {
            config: Some(file),
            heartbeat_ms: Some(300),
            ..Cli::default()
        };
        let config = Config::load(cli).expect("load");
        assert_eq!(config.node_name, "from-file");
        assert_eq!(config.heartbeat_ms, 300);
        assert_eq!(config.gateway.max_frame_bytes, 100);
        assert_eq!(config.lease_ttl_ms, 5000);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn refuses_default_cookie_with_seeds_and_bad_files() {
        let cli = Cli {
            seeds: vec!["127.0.0.1:4371".into()],
            ..Cli::default()
        };
        assert!(matches!(Config::load(cli), Err(Error::DefaultCookie)));
        let cli = Cli {
            seeds: vec!["127.0.0.1:4371".into()],
            cookie: Some("s3cret".into()),
            ..Cli::default()
        };
        assert!(Config::load(cli).is_ok());
        let cli = Cli {
            config: Some("/nonexistent/parley.toml".into()),
            ..Cli::default()
        };
        assert!(matches!(Config::load(cli), Err(Error::Config(_))));
    }

    #[test]
    fn a_short_admin_token_is_refused() {
        let cli = |token: &str| Cli {
            admin_token: Some(token.into()),
            ..Cli::default()
        };
        assert!(matches!(
            Config::load(cli("too-short")),
            Err(Error::Config(m)) if m.contains("admin_token")
        ));
        let config = Config::load(cli("sixteen-chars-ok")).expect("config");
        assert_eq!(
            config.gateway.admin_token.as_deref(),
            Some("sixteen-chars-ok")
        );
    }

    #[test]
    fn an_invalid_trusted_proxy_is_refused() {
        let with = |entries: &[&str]| {
            let mut config = Config::default();
            config.gateway.trusted_proxies = entries.iter().map(|e| e.to_string()).collect();
            config
        };
        assert!(with(&["10.0.0.0/8", "127.0.0.1", "::1/128"])
            .validate()
            .is_ok());
        assert!(matches!(
            with(&["10.0.0.0/8", "10.0.0.0/33"]).validate(),
            Err(Error::Config(m)) if m.contains("trusted_proxies") && m.contains("10.0.0.0/33")
        ));
    }

    #[test]
    fn public_url_must_be_an_http_origin() {
        let with = |url: &str| Config {
            public_url: Some(url.into()),
            ..Config::default()
        };
        assert!(with("http://10.0.0.5:8080").validate().is_ok());
        assert!(with("https://chat.example.com").validate().is_ok());
        for bad in [
            "ftp://x",
            "http://",
            "https://a/b",
            "chat.example.com",
            "http://a b",
        ] {
            assert!(with(bad).validate().is_err(), "{bad}");
        }
        let cluster = Config::default().cluster();
        assert_eq!(cluster.public_url, "http://127.0.0.1:8080");
    }
}

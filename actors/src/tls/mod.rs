//! TLS for the cluster transport and the gateway.
//!
//! Across machines, every message travels between nodes over the
//! ractor_cluster TCP transport, and a shared cookie was the only gate.
//! With `[tls]` configured, nodes speak mutual TLS: each presents a
//! certificate signed by the cluster's CA and accepts only peers that do
//! (the cookie check stays, inside the encrypted stream). The gateway
//! serves HTTPS and WSS with its own certificate.
//!
//! Certificates rotate without a restart: an [`Identity`] re-reads its
//! files when they change (polled) or on SIGHUP ([`watch`]), and every new
//! handshake uses what it holds then. Established connections keep the
//! keys they were set up with.
//!
//! The provider is `ring` everywhere, chosen explicitly: the dependency
//! tree also builds `aws-lc-rs`, and rustls refuses to guess between two.

mod cluster;
mod identity;
mod watch;

use std::path::PathBuf;
use std::sync::Arc;

pub use cluster::{bind, ClusterTls, HANDSHAKE_TIMEOUT, MAX_HANDSHAKES};
pub use identity::Identity;
pub use watch::watch;

/// Where one TLS identity's PEM files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The leaf's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The CA the other side's certificate must chain to: peers for the
    /// cluster transport. `None` for the gateway (browsers present none).
    pub ca: Option<PathBuf>,
}

/// The crypto provider of every TLS config Parley builds.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS server config for the gateway: no client certificates, the
/// identity's current certificate for every handshake, HTTP/1.1 only (the
/// gateway speaks HTTP/1.1 and upgrades WebSockets from it).
pub fn gateway_server_config(
    identity: Arc<Identity>,
) -> Result<rustls::ServerConfig, crate::Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| crate::Error::Tls(format!("protocol versions: {e}")))?
        .with_no_client_auth()
        .with_cert_resolver(identity);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

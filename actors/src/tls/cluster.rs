//! Mutual TLS on the cluster transport.
//!
//! ractor_cluster can accept TLS itself, but it runs each handshake inside
//! its one accept loop with no timeout: a single socket that connects and
//! says nothing would stop every peer from joining. So the node accepts
//! here: each handshake in a task of its own, bounded in time
//! ([`HANDSHAKE_TIMEOUT`]) and in number ([`MAX_HANDSHAKES`]), and only a
//! finished one is handed to the transport, which then checks the cookie
//! inside the encrypted stream as before.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ractor::ActorRef;
use ractor_cluster::{NetworkStream, NodeServerMessage};
use rustls::pki_types::ServerName;
use tokio::net::TcpListener;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::identity::{PeerClients, PeerServers};
use super::Identity;
use crate::Error;

/// How long a connecting peer has to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Handshakes in progress at once; connections past it are closed at once.
/// A cluster has a handful of peers: this bounds what strangers who reach
/// the cluster port can make a node hold.
pub const MAX_HANDSHAKES: usize = 64;

/// A node's TLS on the cluster transport: it presents its certificate both
/// when accepting and when dialing, and requires the peer's, signed by the
/// cluster's CA.
#[derive(Clone)]
pub struct ClusterTls {
    identity: Arc<Identity>,
    acceptor: TlsAcceptor,
    connector: TlsConnector,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterTls")
            .field("files", self.identity.files())
            .finish()
    }
}

impl ClusterTls {
    /// Builds the acceptor and the connector of `identity`, which must name
    /// a CA.
    pub fn new(identity: Arc<Identity>) -> Result<Self, Error> {
        if identity.files().ca.is_none() {
            return Err(Error::Tls(
                "the cluster transport needs a CA to check peers against".into(),
            ));
        }
        let versions = |e: rustls::Error| Error::Tls(format!("protocol versions: {e}"));
        let server = rustls::ServerConfig::builder_with_provider(super::provider())
            .with_safe_default_protocol_versions()
            .map_err(versions)?
            .with_client_cert_verifier(Arc::new(PeerClients(identity.clone())))
            .with_cert_resolver(identity.clone());
        let client = rustls::ClientConfig::builder_with_provider(super::provider())
            .with_safe_default_protocol_versions()
            .map_err(versions)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PeerServers(identity.clone())))
            .with_client_cert_resolver(identity.clone());
        Ok(Self {
            identity,
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
        })
    }

    /// The acceptor (the transport's own listener gets it too, so that no
    /// port of the node ever accepts plaintext).
    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.clone()
    }

    /// The identity (for reloading).
    pub fn identity(&self) -> &Arc<Identity> {
        &self.identity
    }

    /// Accepts peers on `listener` until the transport stops, handing each
    /// finished handshake to the transport.
    pub async fn serve(self, listener: TcpListener, server: ActorRef<NodeServerMessage>) {
        let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "cluster transport: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if server.get_status() != ractor::ActorStatus::Running {
                return;
            }
            let Ok(permit) = handshakes.clone().try_acquire_owned() else {
                tracing::warn!(%peer, "cluster transport: too many handshakes at once, closing");
                continue;
            };
            let (acceptor, server) = (self.acceptor.clone(), server.clone());
            tokio::spawn(async move {
                let _permit = permit;
                let _ = stream.set_nodelay(true);
                let Ok(local) = stream.local_addr() else {
                    return;
                };
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        let opened = NodeServerMessage::ConnectionOpened {
                            stream: Box::new(NetworkStream::TlsServer {
                                peer_addr: peer,
                                local_addr: local,
                                stream,
                            }),
                            is_server: true,
                        };
                        if let Err(e) = server.cast(opened) {
                            tracing::debug!(error = %e, "cluster transport stopped");
                        }
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(%peer, error = %e, "cluster transport: TLS handshake refused")
                    }
                    Err(_) => tracing::warn!(%peer, "cluster transport: TLS handshake timed out"),
                }
            });
        }
    }

    /// Dials a peer at `addr` (`HOST:PORT`): its certificate must chain to
    /// the CA and name `HOST`.
    pub async fn dial(
        &self,
        server: &ActorRef<NodeServerMessage>,
        addr: &str,
    ) -> Result<(), Error> {
        let host = addr
            .rsplit_once(':')
            .map_or(addr, |(host, _)| host)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| Error::Tls(format!("{addr}: not a host name: {e}")))?;
        ractor_cluster::client_connect_enc(server, addr, self.connector.clone(), name)
            .await
            .map_err(|e| Error::Tls(format!("dialing {addr}: {e}")))
    }
}

/// Binds the cluster port for [`ClusterTls::serve`].
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Spawn(format!("cluster transport on {addr}: {e}")))
}

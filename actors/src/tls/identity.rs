//! One reloadable TLS identity: a certificate, its key, and the CA its
//! peers must chain to.

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

use super::TlsFiles;
use crate::Error;

/// What an identity's files held when last read.
#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    /// Verifiers of the other side's certificate, built from the CA file.
    peers: Option<Verifiers>,
}

#[derive(Debug)]
struct Verifiers {
    clients: Arc<dyn ClientCertVerifier>,
    servers: Arc<WebPkiServerVerifier>,
}

/// The modification times and sizes of an identity's files: a change in
/// any of them means a rotation.
type Stamp = Vec<Option<(SystemTime, u64)>>;

/// A certificate, its key and its CA, re-read when the files change.
///
/// It is the rustls certificate resolver (both as server and as client)
/// and the peer verifier of every config built from it, so a reload
/// reaches every new handshake without rebuilding acceptors or
/// connectors. A reload that fails (a half-written file mid-rotation)
/// keeps the identity it had and says why.
#[derive(Debug)]
pub struct Identity {
    files: TlsFiles,
    provider: Arc<rustls::crypto::CryptoProvider>,
    current: RwLock<Arc<Loaded>>,
    stamp: Mutex<Stamp>,
}

impl Identity {
    /// Reads the files; fails if they do not hold a usable identity.
    pub fn load(files: TlsFiles) -> Result<Self, Error> {
        let stamp = stamp_of(&files);
        let provider = super::provider();
        let loaded = read(&files, &provider)?;
        Ok(Self {
            files,
            provider,
            current: RwLock::new(Arc::new(loaded)),
            stamp: Mutex::new(stamp),
        })
    }

    /// The files this identity is read from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Re-reads the files if they changed since the last read (or always,
    /// with `force`). `Ok(true)` when a new identity is in force.
    pub fn reload(&self, force: bool) -> Result<bool, Error> {
        let stamp = stamp_of(&self.files);
        {
            let mut last = self.stamp.lock().unwrap_or_else(|p| p.into_inner());
            if !force && *last == stamp {
                return Ok(false);
            }
            // Noted before reading: a broken file is reported once, not
            // on every poll, and retried when it changes again.
            *last = stamp;
        }
        let loaded = read(&self.files, &self.provider)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(loaded);
        Ok(true)
    }

    fn current(&self) -> Arc<Loaded> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A TLS 1.2 handshake signature, checked the same way for peers that
    /// dial and peers that are dialed.
    fn verify_tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    /// A TLS 1.3 handshake signature (see [`Identity::verify_tls12`]).
    fn verify_tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn verifiers(&self) -> Result<Arc<Loaded>, rustls::Error> {
        let loaded = self.current();
        if loaded.peers.is_none() {
            return Err(rustls::Error::General("no CA configured".into()));
        }
        Ok(loaded)
    }
}

fn stamp_of(files: &TlsFiles) -> Stamp {
    [Some(&files.cert), Some(&files.key), files.ca.as_ref()]
        .into_iter()
        .flatten()
        .map(|path| {
            std::fs::metadata(path)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

fn read(files: &TlsFiles, provider: &Arc<rustls::crypto::CryptoProvider>) -> Result<Loaded, Error> {
    let certs = read_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| Error::Tls(format!("{}: {e}", files.key.display())))?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| Error::Tls(format!("{}: {e}", files.key.display())))?;
    let key = CertifiedKey::new(certs, signing);
    key.keys_match().map_err(|e| {
        Error::Tls(format!(
            "{} does not belong to {}: {e}",
            files.key.display(),
            files.cert.display()
        ))
    })?;
    let peers = match &files.ca {
        None => None,
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(ca)? {
                roots
                    .add(cert)
                    .map_err(|e| Error::Tls(format!("{}: {e}", ca.display())))?;
            }
            let roots = Arc::new(roots);
            let clients =
                WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                    .build()
                    .map_err(|e| Error::Tls(format!("{}: {e}", ca.display())))?;
            let servers = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| Error::Tls(format!("{}: {e}", ca.display())))?;
            Some(Verifiers { clients, servers })
        }
    };
    Ok(Loaded {
        key: Arc::new(key),
        peers,
    })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| Error::Tls(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::Tls(format!("{}: no certificate", path.display())));
    }
    Ok(certs)
}

/// Logs a refused peer certificate: the operator sees which side refused
/// and why (another CA, expired, wrong name).
fn refused<T>(side: &str, result: Result<T, rustls::Error>) -> Result<T, rustls::Error> {
    if let Err(e) = &result {
        tracing::warn!(error = %e, "TLS: {side} certificate refused");
    }
    result
}

impl ResolvesServerCert for Identity {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current().key.clone())
    }
}

impl ResolvesClientCert for Identity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current().key.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Verifies connecting peers' certificates against the identity's
/// current CA.
#[derive(Debug)]
pub(super) struct PeerClients(pub(super) Arc<Identity>);

impl ClientCertVerifier for PeerClients {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Hints are optional; a peer has one certificate anyway.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let loaded = self.0.verifiers()?;
        let Some(peers) = &loaded.peers else {
            return Err(rustls::Error::General("no CA configured".into()));
        };
        refused(
            "connecting peer's",
            peers
                .clients
                .verify_client_cert(end_entity, intermediates, now),
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0
            .provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Verifies dialed peers' certificates against the identity's current CA
/// and the address dialed.
#[derive(Debug)]
pub(super) struct PeerServers(pub(super) Arc<Identity>);

impl ServerCertVerifier for PeerServers {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let loaded = self.0.verifiers()?;
        let Some(peers) = &loaded.peers else {
            return Err(rustls::Error::General("no CA configured".into()));
        };
        refused(
            "dialed peer's",
            peers.servers.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ),
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0
            .provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

//! `parley certs`: a development CA and certificates for nodes.
//!
//! Mutual TLS between nodes needs a CA and a certificate per node, and
//! trying a cluster on one machine should not need openssl incantations.
//! `parley certs --dir certs --name node-1 --host 10.0.0.11` makes
//! `certs/ca.pem` and `certs/ca.key` if they are not there yet, then
//! `certs/node-1.pem` and `certs/node-1.key`, signed by that CA, valid for
//! the given hosts (the addresses peers dial and browsers open) both as a
//! server and as a client. The lab and the tests make throwaway ones the
//! same way. Production deployments would rather use their own PKI.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use crate::Error;

/// The start of the CA's common name. The rest is drawn from its key, so
/// that two development CAs never share a name (a verifier finds an
/// issuer by name) and the CA can be re-created from its key alone.
const CA_NAME: &str = "Parley development CA";

/// Flags of `parley certs`.
#[derive(Debug, Clone, clap::Args)]
pub struct CertsArgs {
    /// Directory of the CA and the certificates (created if needed).
    #[arg(long, default_value = "certs")]
    pub dir: PathBuf,
    /// A certificate to make: `NAME.pem` and `NAME.key` (repeatable).
    #[arg(long = "name", required = true)]
    pub names: Vec<String>,
    /// A host name or IP address the certificates are valid for
    /// (repeatable). Default: localhost and 127.0.0.1.
    #[arg(long = "host")]
    pub hosts: Vec<String>,
    /// Days the certificates stay valid; a negative number makes ones that
    /// expired that many days ago (to see a refusal).
    #[arg(long, default_value_t = 365, allow_negative_numbers = true)]
    pub days: i64,
}

/// A CA that signs certificates: made once, then read back from its key.
pub struct Authority {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Authority {
    /// Reads `dir/ca.key` (and re-creates the CA certificate from it), or
    /// makes a new CA there.
    pub fn open_or_create(dir: &Path) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            what: format!("creating {}", dir.display()),
            source,
        })?;
        let key_path = dir.join("ca.key");
        let fresh = !key_path.exists();
        let key = if fresh {
            KeyPair::generate().map_err(cert_error)?
        } else {
            let pem = std::fs::read_to_string(&key_path).map_err(|source| Error::Io {
                what: format!("reading {}", key_path.display()),
                source,
            })?;
            KeyPair::from_pem(&pem).map_err(cert_error)?
        };
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        let id: String = key
            .public_key_raw()
            .iter()
            .skip(1)
            .take(6)
            .map(|b| format!("{b:02x}"))
            .collect();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{CA_NAME} {id}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(3650);
        let cert = params.self_signed(&key).map_err(cert_error)?;
        if fresh {
            write(&dir.join("ca.pem"), &cert.pem(), false)?;
            write(&key_path, &key.serialize_pem(), true)?;
        }
        Ok(Self { cert, key })
    }

    /// Makes `dir/NAME.pem` and `dir/NAME.key` for `hosts`, valid from
    /// `not_before` to `not_after`; returns their paths.
    pub fn issue(
        &self,
        dir: &Path,
        name: &str,
        hosts: &[String],
        not_before: time::OffsetDateTime,
        not_after: time::OffsetDateTime,
    ) -> Result<(PathBuf, PathBuf), Error> {
        if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
            return Err(Error::Config(format!("certificate name {name:?}")));
        }
        let mut params = CertificateParams::new(hosts.to_vec()).map_err(cert_error)?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = not_before;
        params.not_after = not_after;
        let key = KeyPair::generate().map_err(cert_error)?;
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .map_err(cert_error)?;
        let (cert_path, key_path) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        write(&cert_path, &cert.pem(), false)?;
        write(&key_path, &key.serialize_pem(), true)?;
        Ok((cert_path, key_path))
    }
}

/// Runs `parley certs`.
pub fn run(args: &CertsArgs) -> Result<(), Error> {
    let hosts = if args.hosts.is_empty() {
        vec!["localhost".to_owned(), "127.0.0.1".to_owned()]
    } else {
        args.hosts.clone()
    };
    let ca = Authority::open_or_create(&args.dir)?;
    let now = time::OffsetDateTime::now_utc();
    let not_after = now + time::Duration::days(args.days);
    let not_before = (now - time::Duration::minutes(5)).min(not_after - time::Duration::days(1));
    for name in &args.names {
        let (cert, key) = ca.issue(&args.dir, name, &hosts, not_before, not_after)?;
        println!("{} {}", cert.display(), key.display());
    }
    println!("{}", args.dir.join("ca.pem").display());
    Ok(())
}

fn cert_error(e: rcgen::Error) -> Error {
    Error::Config(format!("making a certificate: {e}"))
}

/// Writes a PEM file; keys are readable by their owner only.
fn write(path: &Path, pem: &str, secret: bool) -> Result<(), Error> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let io = |source| Error::Io {
        what: format!("writing {}", path.display()),
        source,
    };
    // Written beside, then renamed: a node watching the file never reads
    // half of it.
    let tmp = path.with_extension("tmp");
    let mut file = options.open(&tmp).map_err(io)?;
    file.write_all(pem.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

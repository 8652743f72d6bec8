//! TLS for every listener and every outbound call (rustls, with the `ring` provider).
//!
//! One [`Tls`] value is loaded once from PEM files — a certificate chain and its key, and a
//! certificate authority — and gives both sides: a listener config that, when a CA is given,
//! requires every peer to present a certificate that CA signed (mutual TLS), and a client
//! config that trusts that CA (the public web roots without one) and presents the certificate
//! and key as its own when given.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// What a plain client adds to an error when a server answered something it cannot read, as
/// a TLS listener's alert looks to it.
pub const TLS_HINT: &str = " (a TLS listener? then give --tls-ca, and --tls-cert/--tls-key if \
     it requires client certificates)";

/// Where the PEM files are; each is optional, but a certificate needs its key and vice versa.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// This node's (or client's) certificate chain, leaf first: what a listener serves and what
    /// a client presents to a listener that asks for one.
    pub cert: Option<PathBuf>,
    /// The private key of `cert`.
    pub key: Option<PathBuf>,
    /// The certificate authority peers are checked against; given, listeners require client
    /// certificates it signed (mutual TLS).
    pub ca: Option<PathBuf>,
}

impl TlsFiles {
    /// Whether any file is named (TLS is on).
    pub fn any(&self) -> bool {
        self.cert.is_some() || self.key.is_some() || self.ca.is_some()
    }
}

/// TLS files that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read the TLS {what} file {path}: {reason}")]
    Read {
        /// Which file: certificate, key or CA.
        what: &'static str,
        /// The file.
        path: String,
        /// Why (not a `source`: the message shows it once, and `{:#}` would show it twice).
        reason: std::io::Error,
    },
    /// A file holds no usable PEM of the kind wanted.
    #[error("the TLS {what} file {path} {why}")]
    Pem {
        /// Which file: certificate, key or CA.
        what: &'static str,
        /// The file.
        path: String,
        /// What is wrong with it.
        why: String,
    },
    /// A certificate without its key, or a key without its certificate.
    #[error("--tls-cert and --tls-key go together: {0} is missing")]
    Unpaired(&'static str),
    /// A listener needs a certificate and key to serve TLS.
    #[error("a TLS listener needs --tls-cert and --tls-key")]
    NoListenerCert,
    /// The key is not the certificate's.
    #[error("the TLS key {key} does not belong to the certificate {cert}")]
    KeyMismatch {
        /// The certificate file.
        cert: String,
        /// The key file.
        key: String,
    },
    /// rustls refused the combination.
    #[error("the TLS files cannot be used together ({files}): {reason}")]
    Config {
        /// The files involved.
        files: String,
        /// rustls's reason (shown in the message, so not a `source`).
        reason: rustls::Error,
    },
}

/// Loaded TLS settings. Cheap to clone (the configs are shared).
#[derive(Clone)]
pub struct Tls {
    /// What a listener serves with; `None` without a certificate and key.
    server: Option<Arc<ServerConfig>>,
    /// What every outbound call connects with.
    client: Arc<ClientConfig>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("listener", &self.server.is_some())
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Load `files` (at least one named), checking that each is readable PEM of its kind and that
    /// the key matches the certificate.
    pub fn load(files: &TlsFiles) -> Result<Tls, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let identity = match (&files.cert, &files.key) {
            (Some(cert), Some(key)) => Some((read_certs(cert, "certificate")?, read_key(key)?)),
            (Some(_), None) => return Err(TlsError::Unpaired("--tls-key")),
            (None, Some(_)) => return Err(TlsError::Unpaired("--tls-cert")),
            (None, None) => None,
        };
        let roots = match &files.ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for cert in read_certs(ca, "CA")? {
                    roots.add(cert).map_err(|err| TlsError::Pem {
                        what: "CA",
                        path: ca.display().to_string(),
                        why: format!("holds a certificate that cannot be trusted: {err}"),
                    })?;
                }
                roots
            }
            None => RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            },
        };
        let shown = describe(files);
        let refused = |reason| match (reason, &files.cert, &files.key) {
            (
                rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch),
                Some(cert),
                Some(key),
            ) => TlsError::KeyMismatch {
                cert: cert.display().to_string(),
                key: key.display().to_string(),
            },
            (reason, _, _) => TlsError::Config {
                files: shown.clone(),
                reason,
            },
        };
        let server = match &identity {
            Some((certs, key)) => Some(Arc::new(
                server_config(&provider, files.ca.is_some(), &roots, certs, key)
                    .map_err(refused)?,
            )),
            None => None,
        };
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(refused)?
            .with_root_certificates(roots);
        let client = match identity {
            Some((certs, key)) => client.with_client_auth_cert(certs, key).map_err(refused)?,
            None => client.with_no_client_auth(),
        };
        Ok(Tls {
            server,
            client: Arc::new(client),
        })
    }

    /// What a listener accepts TLS connections with.
    pub fn acceptor(&self) -> Result<TlsAcceptor, TlsError> {
        match &self.server {
            Some(config) => Ok(TlsAcceptor::from(config.clone())),
            None => Err(TlsError::NoListenerCert),
        }
    }

    /// What outbound calls connect with.
    pub fn client_config(&self) -> &Arc<ClientConfig> {
        &self.client
    }
}

/// A listener config serving `certs`, requiring client certificates `roots` signed if `mutual`.
fn server_config(
    provider: &Arc<CryptoProvider>,
    mutual: bool,
    roots: &RootCertStore,
    certs: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
) -> Result<ServerConfig, rustls::Error> {
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = if mutual {
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots.clone()), provider.clone())
                .build()
                .map_err(|err| rustls::Error::General(err.to_string()))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder.with_single_cert(certs.to_vec(), key.clone_key())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The files named, for an error message.
fn describe(files: &TlsFiles) -> String {
    [
        ("cert", &files.cert),
        ("key", &files.key),
        ("ca", &files.ca),
    ]
    .iter()
    .filter_map(|(name, path)| path.as_ref().map(|p| format!("{name} {}", p.display())))
    .collect::<Vec<_>>()
    .join(", ")
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|reason| TlsError::Read {
        what,
        path: path.display().to_string(),
        reason,
    })
}

/// Every certificate in the PEM file at `path` (at least one).
fn read_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path, what)?;
    let bad = |why: String| TlsError::Pem {
        what,
        path: path.display().to_string(),
        why,
    };
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| bad(format!("is not valid PEM: {err}")))?;
    if certs.is_empty() {
        return Err(bad("holds no PEM certificate (BEGIN CERTIFICATE)".into()));
    }
    Ok(certs)
}

/// The private key in the PEM file at `path`.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path, "key")?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|err| TlsError::Pem {
        what: "key",
        path: path.display().to_string(),
        why: match err {
            rustls_pki_types::pem::Error::NoItemsFound => {
                "holds no PEM private key (BEGIN PRIVATE KEY, RSA or EC)".into()
            }
            other => format!("is not a valid PEM private key: {other}"),
        },
    })
}

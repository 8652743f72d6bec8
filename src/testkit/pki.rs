//! Throwaway certificate authorities for TLS tests: a CA and certificates it signs for
//! 127.0.0.1 and localhost, written as PEM files into a temporary directory.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use crate::net::{Tls, TlsFiles};

/// A certificate authority whose files live as long as it does.
pub struct TestCa {
    /// Holds every file; deleted on drop.
    dir: tempfile::TempDir,
    /// Signs the certificates issued.
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// The CA's own certificate (PEM), which peers are checked against.
    ca_file: PathBuf,
}

fn must<T, E: std::fmt::Display>(what: &str, result: Result<T, E>) -> T {
    result.unwrap_or_else(|err| panic!("test PKI: cannot {what}: {err}"))
}

impl TestCa {
    /// A new CA called `name`.
    pub fn new(name: &str) -> TestCa {
        let dir = must("create a temporary directory", tempfile::tempdir());
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = must("make a CA key", KeyPair::generate());
        let issuer = must(
            "sign the CA certificate",
            CertifiedIssuer::self_signed(params, key),
        );
        let ca_file = dir.path().join(format!("{name}-ca.pem"));
        must("write the CA file", std::fs::write(&ca_file, issuer.pem()));
        TestCa {
            dir,
            issuer,
            ca_file,
        }
    }

    /// The directory holding this CA's files (tests put broken files beside them).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA's certificate file.
    pub fn ca_file(&self) -> PathBuf {
        self.ca_file.clone()
    }

    /// A certificate called `name` for 127.0.0.1 and localhost (good for serving and for
    /// presenting as a client), signed by this CA: its files, with this CA's (mutual TLS).
    pub fn issue(&self, name: &str) -> TlsFiles {
        let mut params = must(
            "make certificate parameters",
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]),
        );
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = must("make a key", KeyPair::generate());
        let cert = must("sign a certificate", params.signed_by(&key, &self.issuer));
        let cert_file = self.dir.path().join(format!("{name}.pem"));
        let key_file = self.dir.path().join(format!("{name}-key.pem"));
        must(
            "write a certificate",
            std::fs::write(&cert_file, cert.pem()),
        );
        must(
            "write a key",
            std::fs::write(&key_file, key.serialize_pem()),
        );
        TlsFiles {
            cert: Some(cert_file),
            key: Some(key_file),
            ca: Some(self.ca_file()),
        }
    }

    /// [`TestCa::issue`], loaded.
    pub fn tls(&self, name: &str) -> Tls {
        must("load the files", Tls::load(&self.issue(name)))
    }
}

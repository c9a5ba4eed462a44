//! Certificates made for a test (a CA and a server certificate it signed)
//! and TLS channels that trust them.

use std::path::PathBuf;
use std::time::Duration;

use tempfile::TempDir;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

use crate::service::{path_arg, Service};

/// A CA and a server certificate it signed, for `127.0.0.1` and `localhost`,
/// written as PEM files.
pub struct Pki {
    _dir: TempDir,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca_pem: String,
}

impl Pki {
    pub fn new() -> Self {
        let dir = TempDir::new().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "orders test CA");
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let server_key = rcgen::KeyPair::generate().unwrap();
        let mut server_params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .unwrap();
        server_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "orders test server");
        let server_cert = server_params
            .signed_by(&server_key, &ca_cert, &ca_key)
            .unwrap();
        let write = |name: &str, pem: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).unwrap();
            path
        };
        let ca_pem = ca_cert.pem();
        Pki {
            ca: write("ca.pem", &ca_pem),
            cert: write("server.pem", &server_cert.pem()),
            key: write("server.key", &server_key.serialize_pem()),
            ca_pem,
            _dir: dir,
        }
    }

    /// The flags that make a service serve this certificate.
    pub fn server_args(&self) -> Vec<String> {
        vec![
            "--tls-cert".to_owned(),
            path_arg(&self.cert),
            "--tls-key".to_owned(),
            path_arg(&self.key),
        ]
    }

    /// A TLS channel to `service` that trusts this CA.
    pub async fn channel(&self, service: &Service) -> Result<Channel, tonic::transport::Error> {
        tls_channel(service, &self.ca_pem).await
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

/// A TLS channel to `service` that trusts `ca_pem`.
pub async fn tls_channel(
    service: &Service,
    ca_pem: &str,
) -> Result<Channel, tonic::transport::Error> {
    Channel::from_shared(format!("https://{}", service.addr))
        .unwrap()
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem)))?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

//! Server TLS (rustls): the certificate chain and private key, read once at start.

use std::path::Path;

use tonic::transport::{Identity, ServerTlsConfig};

/// The server TLS configuration from PEM files; a clear error names the file.
pub fn server_config(cert: &Path, key: &Path) -> Result<ServerTlsConfig, String> {
    let read = |path: &Path, what: &str| {
        std::fs::read(path)
            .map_err(|e| format!("cannot read the TLS {what} {}: {e}", path.display()))
    };
    let cert_pem = read(cert, "certificate")?;
    let key_pem = read(key, "private key")?;
    if !String::from_utf8_lossy(&cert_pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err(format!("{} holds no PEM certificate", cert.display()));
    }
    if !String::from_utf8_lossy(&key_pem).contains("PRIVATE KEY-----") {
        return Err(format!("{} holds no PEM private key", key.display()));
    }
    Ok(ServerTlsConfig::new().identity(Identity::from_pem(cert_pem, key_pem)))
}

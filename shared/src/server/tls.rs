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

/// The client TLS configuration towards command-service: trust the CA in
/// `ca_file`, and check the server's name against `domain` (default: the
/// endpoint's host).
pub fn client_config(
    ca_file: &Path,
    domain: Option<&str>,
) -> Result<tonic::transport::ClientTlsConfig, String> {
    let pem = std::fs::read(ca_file)
        .map_err(|e| format!("cannot read the CA file {}: {e}", ca_file.display()))?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err(format!("{} holds no PEM certificate", ca_file.display()));
    }
    let config = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(pem));
    Ok(match domain {
        Some(domain) => config.domain_name(domain),
        None => config,
    })
}

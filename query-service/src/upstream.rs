//! How query-service reaches command-service: TLS towards an `https://`
//! endpoint, and the bearer token it presents on `SubscribeEvents`.

use tonic::metadata::MetadataValue;
use tonic::transport::{ClientTlsConfig, Endpoint};

use shared::server::auth::Secret;

#[derive(Debug, Clone, Default)]
pub struct Upstream {
    pub tls: Option<ClientTlsConfig>,
    pub token: Option<Secret>,
}

impl Upstream {
    /// `endpoint` with TLS applied when configured.
    pub fn endpoint(&self, uri: &str) -> Result<Endpoint, String> {
        let endpoint = Endpoint::from_shared(uri.to_owned()).map_err(|e| e.to_string())?;
        match &self.tls {
            Some(tls) => endpoint
                .tls_config(tls.clone())
                .map_err(|e| format!("TLS configuration: {e}")),
            None => Ok(endpoint),
        }
    }

    /// `message` as a request carrying the subscribe token, if any.
    pub fn request<T>(&self, message: T) -> Result<tonic::Request<T>, String> {
        let mut request = tonic::Request::new(message);
        if let Some(token) = &self.token {
            let value = MetadataValue::try_from(format!("Bearer {}", token.expose()))
                .map_err(|_| "the subscribe token is not valid metadata".to_owned())?;
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

//! Command-line flags (each with an environment-variable equivalent), validated
//! before anything is opened or bound.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use shared::telemetry::LogFormat;

use shared::server::auth::{self, Secret};

/// The read side of the order service pair.
#[derive(Debug, Clone, Parser)]
#[command(name = "query-service", version, about)]
pub struct Config {
    /// Address to serve gRPC on; port 0 picks a free port (the bound address is logged).
    #[arg(long, env = "QUERY_LISTEN", default_value = "127.0.0.1:50052")]
    pub listen: SocketAddr,

    /// Directory of this replica's own sled database (created if missing; one process at a time).
    #[arg(long, env = "QUERY_DATA_DIR", default_value = "./data/query")]
    pub data_dir: PathBuf,

    /// Where command-service serves `SubscribeEvents`.
    #[arg(long, env = "COMMAND_ENDPOINT", default_value = "http://127.0.0.1:50051",
          value_parser = parse_endpoint)]
    pub command_endpoint: String,

    /// Log filter, e.g. `info` or `query_service=debug`.
    #[arg(long, env = "QUERY_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Log format: `text` or `json`.
    #[arg(long, env = "QUERY_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,

    /// Longest a query with `min_position` waits when the client sets no deadline
    /// (milliseconds); a client deadline shorter than this wins.
    #[arg(long, env = "QUERY_MAX_WAIT_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub max_wait_ms: u64,

    /// Rebuild every read model from position 0 into fresh trees, keep answering
    /// from the current ones meanwhile, and switch once the rebuild has caught up.
    #[arg(long, env = "QUERY_REBUILD")]
    pub rebuild: bool,

    /// sled page cache size in MiB. sled's resident memory grows with it by
    /// more than the figure (BENCHMARKS.md: a 1M-event catch-up peaks near
    /// 210 MB at 32, 240-275 MB at 64, 275-300 MB at 128).
    #[arg(long, env = "QUERY_CACHE_MB", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(8..=65_536))]
    pub cache_mb: u64,

    /// Most events applied in one atomic sled batch. Large batches matter when
    /// catching up (BENCHMARKS.md: 4096 applies about 1.3x faster than 512);
    /// live traffic makes small batches anyway.
    #[arg(long, env = "QUERY_MAX_BATCH", default_value_t = 4096,
          value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub max_batch: u64,

    /// Bearer token required on query RPCs; unset: open.
    #[arg(long, env = "QUERY_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<Secret>,

    /// File holding the query token (instead of --auth-token).
    #[arg(long, env = "QUERY_AUTH_TOKEN_FILE")]
    pub auth_token_file: Option<PathBuf>,

    /// Bearer token presented to command-service on SubscribeEvents.
    #[arg(long, env = "QUERY_SUBSCRIBE_TOKEN", hide_env_values = true)]
    pub subscribe_token: Option<Secret>,

    /// File holding the subscribe token (instead of --subscribe-token).
    #[arg(long, env = "QUERY_SUBSCRIBE_TOKEN_FILE")]
    pub subscribe_token_file: Option<PathBuf>,

    /// PEM certificate chain: serve gRPC over TLS (with --tls-key).
    #[arg(long, env = "QUERY_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "QUERY_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificate(s) trusted for an `https://` --command-endpoint.
    #[arg(long, env = "QUERY_COMMAND_CA_FILE")]
    pub command_ca_file: Option<PathBuf>,

    /// Name checked against command-service's certificate (default: the endpoint's host).
    #[arg(long, env = "QUERY_COMMAND_TLS_DOMAIN", requires = "command_ca_file")]
    pub command_tls_domain: Option<String>,

    /// Largest gRPC message received or sent, in bytes.
    #[arg(long, env = "QUERY_MAX_MESSAGE_BYTES", default_value_t = 4 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1024..=256 * 1024 * 1024))]
    pub max_message_bytes: u64,

    /// Longest a request may take when the client sets no shorter deadline
    /// (milliseconds); keep it above --max-wait-ms.
    #[arg(long, env = "QUERY_REQUEST_TIMEOUT_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub request_timeout_ms: u64,

    /// Most concurrent HTTP/2 streams (RPCs, open watches included) per connection.
    #[arg(long, env = "QUERY_MAX_CONCURRENT_STREAMS", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_streams: u32,

    /// Most requests being handled at once per connection; more are refused
    /// with RESOURCE_EXHAUSTED.
    #[arg(long, env = "QUERY_MAX_REQUESTS_PER_CONNECTION", default_value_t = 256,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_requests_per_connection: u64,

    /// Most client connections open at once; more are closed on accept.
    #[arg(long, env = "QUERY_MAX_CONNECTIONS", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,

    /// Serve Prometheus metrics at http://ADDR/metrics (port 0 picks one; the
    /// bound address is logged); unset: no metrics endpoint.
    #[arg(long, env = "QUERY_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// After SIGINT/SIGTERM, how long open connections get to finish (milliseconds)
    /// before they are closed anyway, e.g. a stream whose client stopped reading.
    #[arg(long, env = "QUERY_SHUTDOWN_GRACE_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub shutdown_grace_ms: u64,
}

/// Accepts only what tonic can connect to, so a typo fails at start, not on first use.
fn parse_endpoint(value: &str) -> Result<String, String> {
    tonic::transport::Endpoint::from_shared(value.to_owned())
        .map_err(|e| format!("not a valid endpoint URI: {e}"))?;
    if !(value.starts_with("http://") || value.starts_with("https://")) {
        return Err("must start with http:// or https://".to_owned());
    }
    Ok(value.to_owned())
}

impl Config {
    pub fn max_wait(&self) -> Duration {
        Duration::from_millis(self.max_wait_ms)
    }

    pub fn cache_bytes(&self) -> u64 {
        self.cache_mb * 1024 * 1024
    }

    pub fn max_batch(&self) -> usize {
        usize::try_from(self.max_batch).unwrap_or(usize::MAX)
    }

    /// Reads the token files into the token fields (so `run` never reads them
    /// again) and checks the TLS settings; fails with one clear line.
    pub fn load_token_files(&mut self) -> Result<(), String> {
        self.auth_token = auth::resolve(
            self.auth_token.as_ref(),
            self.auth_token_file.as_deref(),
            "auth-token",
        )?;
        self.auth_token_file = None;
        self.subscribe_token = auth::resolve(
            self.subscribe_token.as_ref(),
            self.subscribe_token_file.as_deref(),
            "subscribe-token",
        )?;
        self.subscribe_token_file = None;
        Ok(())
    }

    /// The server TLS configuration, when both files are given.
    pub fn tls(&self) -> Result<Option<tonic::transport::ServerTlsConfig>, String> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => shared::server::tls::server_config(cert, key).map(Some),
            _ => Ok(None),
        }
    }

    /// How to reach command-service: TLS for `https://`, and the subscribe token.
    pub fn upstream(&self) -> Result<crate::upstream::Upstream, String> {
        let https = self.command_endpoint.starts_with("https://");
        let tls = match (&self.command_ca_file, https) {
            (Some(ca), true) => Some(shared::server::tls::client_config(
                ca,
                self.command_tls_domain.as_deref(),
            )?),
            (None, false) => None,
            (None, true) => {
                return Err("an https:// --command-endpoint needs --command-ca-file".to_owned())
            }
            (Some(_), false) => {
                return Err("--command-ca-file needs an https:// --command-endpoint".to_owned())
            }
        };
        let token = auth::resolve(
            self.subscribe_token.as_ref(),
            self.subscribe_token_file.as_deref(),
            "subscribe-token",
        )?;
        Ok(crate::upstream::Upstream { tls, token })
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn max_message_bytes(&self) -> usize {
        usize::try_from(self.max_message_bytes).unwrap_or(usize::MAX)
    }

    pub fn max_requests_per_connection(&self) -> usize {
        usize::try_from(self.max_requests_per_connection).unwrap_or(usize::MAX)
    }

    pub fn max_connections(&self) -> usize {
        usize::try_from(self.max_connections).unwrap_or(usize::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_spec() {
        let config = Config::try_parse_from(["query-service"]).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:50052");
        assert_eq!(config.data_dir, PathBuf::from("./data/query"));
        assert_eq!(config.command_endpoint, "http://127.0.0.1:50051");
        assert!(!config.rebuild);
        assert!(config.auth_token.is_none() && config.subscribe_token.is_none());
        assert!(config.tls_cert.is_none() && config.metrics_listen.is_none());
        assert!(config.upstream().unwrap().tls.is_none());
    }

    #[test]
    fn tls_towards_the_command_side_needs_https_and_a_ca() {
        let https = Config::try_parse_from([
            "query-service",
            "--command-endpoint",
            "https://127.0.0.1:50051",
        ])
        .unwrap();
        assert!(https.upstream().is_err());
        let ca_without_https =
            Config::try_parse_from(["query-service", "--command-ca-file", "ca.pem"]).unwrap();
        assert!(ca_without_https.upstream().is_err());
    }

    #[test]
    fn a_bad_endpoint_is_refused_at_start() {
        assert!(Config::try_parse_from(["query-service", "--command-endpoint", "nope"]).is_err());
        assert!(Config::try_parse_from(["query-service", "--listen", "localhost"]).is_err());
    }
}

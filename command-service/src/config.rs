//! Command-line flags (each with an environment-variable equivalent), validated
//! before anything is opened or bound.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use shared::telemetry::LogFormat;

use shared::server::auth::{self, Secret};

/// The write side of the order service pair.
#[derive(Debug, Clone, Parser)]
#[command(name = "command-service", version, about)]
pub struct Config {
    /// Address to serve gRPC on; port 0 picks a free port (the bound address is logged).
    #[arg(long, env = "COMMAND_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Directory of the sled database (created if missing; one process at a time).
    #[arg(long, env = "COMMAND_DATA_DIR", default_value = "./data/command")]
    pub data_dir: PathBuf,

    /// Log filter, e.g. `info` or `command_service=debug`.
    #[arg(long, env = "COMMAND_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Log format: `text` or `json`.
    #[arg(long, env = "COMMAND_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,

    /// sled page cache size in MiB.
    #[arg(long, env = "COMMAND_CACHE_MB", default_value_t = 256,
          value_parser = clap::value_parser!(u64).range(8..=65_536))]
    pub cache_mb: u64,

    /// Most commands committed with one flush (group commit).
    #[arg(long, env = "COMMAND_MAX_BATCH", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub max_batch: u64,

    /// Milliseconds between heartbeats on an idle `SubscribeEvents` stream.
    #[arg(long, env = "COMMAND_HEARTBEAT_MS", default_value_t = 2000,
          value_parser = clap::value_parser!(u64).range(10..=600_000))]
    pub heartbeat_ms: u64,

    /// Bearer token required on command RPCs (CreateOrder ... CancelOrder); unset: open.
    #[arg(long, env = "COMMAND_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<Secret>,

    /// File holding the command token (instead of --auth-token).
    #[arg(long, env = "COMMAND_AUTH_TOKEN_FILE")]
    pub auth_token_file: Option<PathBuf>,

    /// Bearer token required on SubscribeEvents (query-service presents it); unset: open.
    #[arg(long, env = "COMMAND_SUBSCRIBE_TOKEN", hide_env_values = true)]
    pub subscribe_token: Option<Secret>,

    /// File holding the subscribe token (instead of --subscribe-token).
    #[arg(long, env = "COMMAND_SUBSCRIBE_TOKEN_FILE")]
    pub subscribe_token_file: Option<PathBuf>,

    /// PEM certificate chain: serve gRPC over TLS (with --tls-key).
    #[arg(long, env = "COMMAND_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "COMMAND_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Largest gRPC message received or sent, in bytes.
    #[arg(long, env = "COMMAND_MAX_MESSAGE_BYTES", default_value_t = 4 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1024..=256 * 1024 * 1024))]
    pub max_message_bytes: u64,

    /// Longest a request may take when the client sets no shorter deadline (milliseconds).
    #[arg(long, env = "COMMAND_REQUEST_TIMEOUT_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub request_timeout_ms: u64,

    /// Most concurrent HTTP/2 streams (RPCs, open event streams included) per connection.
    #[arg(long, env = "COMMAND_MAX_CONCURRENT_STREAMS", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_streams: u32,

    /// Most requests being handled at once per connection; more are refused
    /// with RESOURCE_EXHAUSTED.
    #[arg(long, env = "COMMAND_MAX_REQUESTS_PER_CONNECTION", default_value_t = 256,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_requests_per_connection: u64,

    /// Most client connections open at once; more are closed on accept.
    #[arg(long, env = "COMMAND_MAX_CONNECTIONS", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,

    /// Serve Prometheus metrics at http://ADDR/metrics (port 0 picks one; the
    /// bound address is logged); unset: no metrics endpoint.
    #[arg(long, env = "COMMAND_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// After SIGINT/SIGTERM, how long open connections get to finish (milliseconds)
    /// before they are closed anyway, e.g. a stream whose client stopped reading.
    #[arg(long, env = "COMMAND_SHUTDOWN_GRACE_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub shutdown_grace_ms: u64,
}

/// The tokens after reading any token files.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    pub command: Option<Secret>,
    pub subscribe: Option<Secret>,
}

impl Config {
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms)
    }

    pub fn cache_bytes(&self) -> u64 {
        self.cache_mb * 1024 * 1024
    }

    pub fn max_batch(&self) -> usize {
        usize::try_from(self.max_batch).unwrap_or(usize::MAX)
    }

    /// Reads the token files into the token fields (so `run` never reads them
    /// again); fails on an unreadable file or a token given twice.
    pub fn load_token_files(&mut self) -> Result<(), String> {
        let tokens = self.tokens()?;
        self.auth_token = tokens.command;
        self.auth_token_file = None;
        self.subscribe_token = tokens.subscribe;
        self.subscribe_token_file = None;
        Ok(())
    }

    /// The tokens, reading any token file still named.
    pub fn tokens(&self) -> Result<Tokens, String> {
        Ok(Tokens {
            command: auth::resolve(
                self.auth_token.as_ref(),
                self.auth_token_file.as_deref(),
                "auth-token",
            )?,
            subscribe: auth::resolve(
                self.subscribe_token.as_ref(),
                self.subscribe_token_file.as_deref(),
                "subscribe-token",
            )?,
        })
    }

    /// The server TLS configuration, when both files are given.
    pub fn tls(&self) -> Result<Option<tonic::transport::ServerTlsConfig>, String> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => shared::server::tls::server_config(cert, key).map(Some),
            _ => Ok(None),
        }
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
    fn defaults_keep_auth_tls_and_metrics_off() {
        let config = Config::try_parse_from(["command-service"]).unwrap();
        assert!(config.auth_token.is_none() && config.subscribe_token.is_none());
        assert!(config.tls_cert.is_none() && config.metrics_listen.is_none());
        assert_eq!(config.max_message_bytes(), 4 * 1024 * 1024);
    }

    #[test]
    fn tls_needs_both_files() {
        assert!(Config::try_parse_from(["command-service", "--tls-cert", "c.pem"]).is_err());
        assert!(Config::try_parse_from(["command-service", "--tls-key", "k.pem"]).is_err());
    }
}

//! The command-line flags every gRPC server of the pair shares, as a clap `Args`
//! struct that each service flattens into its own config. Only the environment
//! names differ between services (`COMMAND_...`, `QUERY_...`): a service names
//! its prefix once with [`server_env!`](crate::server_env).

use std::fmt::Debug;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use crate::server::auth::Secret;
use crate::telemetry::LogFormat;

/// The environment-variable name of each common flag, for one service.
pub trait ServerEnv: Debug + Clone + Send + Sync + 'static {
    const LOG_LEVEL: &'static str;
    const LOG_FORMAT: &'static str;
    const AUTH_TOKEN: &'static str;
    const AUTH_TOKEN_FILE: &'static str;
    const TLS_CERT: &'static str;
    const TLS_KEY: &'static str;
    const MAX_MESSAGE_BYTES: &'static str;
    const REQUEST_TIMEOUT_MS: &'static str;
    const MAX_CONCURRENT_STREAMS: &'static str;
    const MAX_REQUESTS_PER_CONNECTION: &'static str;
    const MAX_CONNECTIONS: &'static str;
    const KEEPALIVE_INTERVAL_MS: &'static str;
    const KEEPALIVE_TIMEOUT_MS: &'static str;
    const METRICS_LISTEN: &'static str;
    const SHUTDOWN_GRACE_MS: &'static str;
    const CORS_ORIGIN: &'static str;
    const OTLP_ENDPOINT: &'static str;
}

/// Declares a marker type naming the common flags' environment variables
/// `<PREFIX>_LOG_LEVEL`, `<PREFIX>_AUTH_TOKEN`, ... for one service.
#[macro_export]
macro_rules! server_env {
    ($(#[$meta:meta])* $vis:vis $name:ident = $prefix:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy)]
        $vis struct $name;

        impl $crate::server::flags::ServerEnv for $name {
            const LOG_LEVEL: &'static str = concat!($prefix, "_LOG_LEVEL");
            const LOG_FORMAT: &'static str = concat!($prefix, "_LOG_FORMAT");
            const AUTH_TOKEN: &'static str = concat!($prefix, "_AUTH_TOKEN");
            const AUTH_TOKEN_FILE: &'static str = concat!($prefix, "_AUTH_TOKEN_FILE");
            const TLS_CERT: &'static str = concat!($prefix, "_TLS_CERT");
            const TLS_KEY: &'static str = concat!($prefix, "_TLS_KEY");
            const MAX_MESSAGE_BYTES: &'static str = concat!($prefix, "_MAX_MESSAGE_BYTES");
            const REQUEST_TIMEOUT_MS: &'static str = concat!($prefix, "_REQUEST_TIMEOUT_MS");
            const MAX_CONCURRENT_STREAMS: &'static str =
                concat!($prefix, "_MAX_CONCURRENT_STREAMS");
            const MAX_REQUESTS_PER_CONNECTION: &'static str =
                concat!($prefix, "_MAX_REQUESTS_PER_CONNECTION");
            const MAX_CONNECTIONS: &'static str = concat!($prefix, "_MAX_CONNECTIONS");
            const KEEPALIVE_INTERVAL_MS: &'static str = concat!($prefix, "_KEEPALIVE_INTERVAL_MS");
            const KEEPALIVE_TIMEOUT_MS: &'static str = concat!($prefix, "_KEEPALIVE_TIMEOUT_MS");
            const METRICS_LISTEN: &'static str = concat!($prefix, "_METRICS_LISTEN");
            const SHUTDOWN_GRACE_MS: &'static str = concat!($prefix, "_SHUTDOWN_GRACE_MS");
            const CORS_ORIGIN: &'static str = concat!($prefix, "_CORS_ORIGIN");
            const OTLP_ENDPOINT: &'static str = concat!($prefix, "_OTLP_ENDPOINT");
        }
    };
}

/// Logging, auth, TLS, limits, keepalive, metrics and shutdown: the flags of a
/// gRPC server, as given. [`ServerSettings::from_flags`](super::ServerSettings::from_flags)
/// validates them into what `serve` uses.
#[derive(Debug, Clone, Args)]
pub struct ServerFlags<E: ServerEnv> {
    /// Log filter, e.g. `info` or `info,shared::server::observe=debug`.
    #[arg(long, env = E::LOG_LEVEL, default_value = "info")]
    pub log_level: String,

    /// Log format: `text` or `json`.
    #[arg(long, env = E::LOG_FORMAT, default_value = "text")]
    pub log_format: LogFormat,

    /// Bearer token required on this service's API RPCs. Once any token of the
    /// service is set, every API RPC needs one (health and reflection stay open);
    /// with none set, every RPC is open.
    #[arg(long, env = E::AUTH_TOKEN, hide_env_values = true)]
    pub auth_token: Option<Secret>,

    /// File holding the API token (instead of --auth-token).
    #[arg(long, env = E::AUTH_TOKEN_FILE)]
    pub auth_token_file: Option<PathBuf>,

    /// PEM certificate chain: serve gRPC over TLS (with --tls-key).
    #[arg(long, env = E::TLS_CERT, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = E::TLS_KEY, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Largest gRPC message received or sent, in bytes.
    #[arg(long, env = E::MAX_MESSAGE_BYTES, default_value_t = 4 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1024..=256 * 1024 * 1024))]
    pub max_message_bytes: u64,

    /// Longest a request may take when the client sets no shorter deadline
    /// (milliseconds); on query-service keep it above --max-wait-ms.
    #[arg(long, env = E::REQUEST_TIMEOUT_MS, default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub request_timeout_ms: u64,

    /// Most concurrent HTTP/2 streams (RPCs, open server streams included) per connection.
    #[arg(long, env = E::MAX_CONCURRENT_STREAMS, default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_streams: u32,

    /// Most requests being handled at once per connection; more are refused
    /// with RESOURCE_EXHAUSTED.
    #[arg(long, env = E::MAX_REQUESTS_PER_CONNECTION, default_value_t = 256,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_requests_per_connection: u64,

    /// Most client connections open at once; more are closed on accept.
    #[arg(long, env = E::MAX_CONNECTIONS, default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,

    /// Milliseconds between HTTP/2 keepalive pings on an open connection, so a
    /// peer that vanished without closing is noticed.
    #[arg(long, env = E::KEEPALIVE_INTERVAL_MS, default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(1_000..=86_400_000))]
    pub keepalive_interval_ms: u64,

    /// Milliseconds a keepalive ping may go unanswered before the connection is closed.
    #[arg(long, env = E::KEEPALIVE_TIMEOUT_MS, default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1_000..=600_000))]
    pub keepalive_timeout_ms: u64,

    /// Serve Prometheus metrics at http://ADDR/metrics (port 0 picks one; the
    /// bound address is logged); unset: no metrics endpoint.
    #[arg(long, env = E::METRICS_LISTEN)]
    pub metrics_listen: Option<SocketAddr>,

    /// After SIGINT/SIGTERM, how long open connections get to finish (milliseconds)
    /// before they are closed anyway, e.g. a stream whose client stopped reading.
    #[arg(long, env = E::SHUTDOWN_GRACE_MS, default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub shutdown_grace_ms: u64,

    /// Browser pages of this origin may call the API over gRPC-Web, e.g.
    /// `http://127.0.0.1:8080` (repeat the flag or separate with commas; `*`
    /// alone: any origin). Unset: none (no CORS headers; browsers refuse pages
    /// of other origins). gRPC-Web itself is always served on the gRPC port.
    #[arg(long, env = E::CORS_ORIGIN, value_delimiter = ',', value_name = "ORIGIN")]
    pub cors_origin: Vec<String>,
    /// Export traces over OTLP/gRPC (plaintext) to this collector, e.g.
    /// `http://127.0.0.1:4317` (batched; `OTEL_BSP_*` variables tune the
    /// batches); unset: no export.
    #[arg(long, env = E::OTLP_ENDPOINT)]
    pub otlp_endpoint: Option<String>,

    #[arg(skip)]
    _env: PhantomData<E>,
}

/// The effective values, for the start-up log line; never a token (whether
/// one is set is for the service to say, under its own name).
impl<E: ServerEnv> std::fmt::Display for ServerFlags<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "log_level={} log_format={:?} tls={} max_message_bytes={} request_timeout_ms={} \
             max_concurrent_streams={} max_requests_per_connection={} max_connections={} \
             keepalive_interval_ms={} keepalive_timeout_ms={} shutdown_grace_ms={} cors_origin={} otlp_endpoint={} \
             metrics_listen=",
            self.log_level,
            self.log_format,
            self.tls_cert.is_some(),
            self.max_message_bytes,
            self.request_timeout_ms,
            self.max_concurrent_streams,
            self.max_requests_per_connection,
            self.max_connections,
            self.keepalive_interval_ms,
            self.keepalive_timeout_ms,
            self.shutdown_grace_ms,
            if self.cors_origin.is_empty() {
                "none".to_owned()
            } else {
                self.cors_origin.join(",")
            },
            self.otlp_endpoint.as_deref().unwrap_or("off"),
        )?;
        match self.metrics_listen {
            Some(addr) => write!(f, "{addr}"),
            None => f.write_str("off"),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    crate::server_env!(TestEnv = "TESTSVC");

    #[derive(Debug, Parser)]
    struct Config {
        #[command(flatten)]
        server: ServerFlags<TestEnv>,
    }

    #[test]
    fn environment_names_carry_the_service_prefix() {
        assert_eq!(TestEnv::AUTH_TOKEN, "TESTSVC_AUTH_TOKEN");
        assert_eq!(
            TestEnv::MAX_REQUESTS_PER_CONNECTION,
            "TESTSVC_MAX_REQUESTS_PER_CONNECTION"
        );
        let command = <Config as clap::CommandFactory>::command();
        let env = |id: &str| {
            command
                .get_arguments()
                .find(|a| a.get_id() == id)
                .and_then(|a| a.get_env())
                .map(|e| e.to_string_lossy().into_owned())
        };
        assert_eq!(
            env("metrics_listen").as_deref(),
            Some("TESTSVC_METRICS_LISTEN")
        );
        assert_eq!(env("tls_key").as_deref(), Some("TESTSVC_TLS_KEY"));
        assert_eq!(env("cors_origin").as_deref(), Some("TESTSVC_CORS_ORIGIN"));
        assert_eq!(
            env("otlp_endpoint").as_deref(),
            Some("TESTSVC_OTLP_ENDPOINT")
        );
    }

    #[test]
    fn cors_origins_repeat_or_split_at_commas_and_default_to_none() {
        let config = Config::try_parse_from(["svc"]).unwrap();
        assert!(config.server.cors_origin.is_empty());
        assert!(config.server.to_string().contains("cors_origin=none"));
        let config = Config::try_parse_from([
            "svc",
            "--cors-origin",
            "http://a.example,http://b.example",
            "--cors-origin",
            "https://c.example",
        ])
        .unwrap();
        assert_eq!(
            config.server.cors_origin,
            ["http://a.example", "http://b.example", "https://c.example"]
        );
    }

    #[test]
    fn defaults_keep_auth_tls_and_metrics_off_and_keepalive_on() {
        let config = Config::try_parse_from(["svc"]).unwrap();
        assert!(config.server.auth_token.is_none() && config.server.tls_cert.is_none());
        assert!(config.server.metrics_listen.is_none());
        assert!(config.server.otlp_endpoint.is_none());
        assert_eq!(config.server.max_message_bytes, 4 * 1024 * 1024);
        assert_eq!(config.server.keepalive_interval_ms, 30_000);
        assert_eq!(config.server.keepalive_timeout_ms, 10_000);
    }

    #[test]
    fn the_effective_values_print_without_the_token() {
        let config = Config::try_parse_from(["svc", "--auth-token", "hunter2"]).unwrap();
        let line = config.server.to_string();
        assert!(
            line.contains("keepalive_interval_ms=30000") && line.contains("metrics_listen=off")
        );
        assert!(!line.contains("hunter2"), "{line}");
    }

    #[test]
    fn tls_needs_both_files() {
        assert!(Config::try_parse_from(["svc", "--tls-cert", "c.pem"]).is_err());
        assert!(Config::try_parse_from(["svc", "--tls-key", "k.pem"]).is_err());
    }
}

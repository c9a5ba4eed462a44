//! The common server flags validated once, before anything binds, into what
//! `serve` uses as is: TLS read and checked, tokens read from their files, the
//! auth policy decided, durations typed, the metrics recorder installed.

use std::net::SocketAddr;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tonic::transport::ServerTlsConfig;

use crate::server::auth::{self, AuthPolicy, Rule};
use crate::server::flags::{ServerEnv, ServerFlags};
use crate::server::web::CorsOrigins;

/// Ready-to-use server settings; built only by [`ServerSettings::from_flags`].
#[derive(Clone)]
pub struct ServerSettings {
    pub tls: Option<ServerTlsConfig>,
    pub auth: AuthPolicy,
    pub max_message_bytes: usize,
    pub request_timeout: Duration,
    pub max_concurrent_streams: u32,
    pub max_requests_per_connection: usize,
    pub max_connections: usize,
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    pub shutdown_grace: Duration,
    /// The installed Prometheus recorder and where to serve it, with --metrics-listen.
    pub metrics: Option<(PrometheusHandle, SocketAddr)>,
    /// The origins whose browser pages may call the API (gRPC-Web), from --cors-origin.
    pub cors: CorsOrigins,
}

impl std::fmt::Debug for ServerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSettings")
            .field("tls", &self.tls.is_some())
            .field("auth", &self.auth)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("request_timeout", &self.request_timeout)
            .field("max_connections", &self.max_connections)
            .field("keepalive_interval", &self.keepalive_interval)
            .field("metrics", &self.metrics.as_ref().map(|(_, addr)| addr))
            .field("cors", &self.cors)
            .finish_non_exhaustive()
    }
}

fn usize_of(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

impl ServerSettings {
    /// Validates `flags`. `api` is what the service's `--auth-token` guards
    /// (every API path no rule of `rules` claims, e.g. `"commands"`), `rules`
    /// the paths with tokens of their own. Fails with one line naming the flag.
    pub fn from_flags<E: ServerEnv>(
        flags: &ServerFlags<E>,
        api: &'static str,
        rules: Vec<Rule>,
    ) -> Result<Self, String> {
        if flags.keepalive_timeout_ms >= flags.keepalive_interval_ms {
            return Err(format!(
                "--keepalive-timeout-ms ({}) must be below --keepalive-interval-ms ({})",
                flags.keepalive_timeout_ms, flags.keepalive_interval_ms
            ));
        }
        let tls = match (&flags.tls_cert, &flags.tls_key) {
            (Some(cert), Some(key)) => Some(crate::server::tls::server_config(cert, key)?),
            _ => None,
        };
        let token = auth::resolve(
            flags.auth_token.as_ref(),
            flags.auth_token_file.as_deref(),
            "auth-token",
        )?;
        let auth = AuthPolicy::new(
            Rule {
                path_prefix: "/",
                role: api,
                flag: "auth-token",
                token,
            },
            rules,
        )?;
        let cors = CorsOrigins::parse(&flags.cors_origin)?;
        let metrics = match flags.metrics_listen {
            Some(addr) => Some((crate::server::metrics::install()?, addr)),
            None => None,
        };
        Ok(ServerSettings {
            tls,
            auth,
            max_message_bytes: usize_of(flags.max_message_bytes),
            request_timeout: Duration::from_millis(flags.request_timeout_ms),
            max_concurrent_streams: flags.max_concurrent_streams,
            max_requests_per_connection: usize_of(flags.max_requests_per_connection),
            max_connections: usize_of(flags.max_connections),
            keepalive_interval: Duration::from_millis(flags.keepalive_interval_ms),
            keepalive_timeout: Duration::from_millis(flags.keepalive_timeout_ms),
            shutdown_grace: Duration::from_millis(flags.shutdown_grace_ms),
            metrics,
            cors,
        })
    }

    /// Whether `--metrics-listen` installed the recorder (metric macros are no-ops otherwise).
    pub fn metrics_enabled(&self) -> bool {
        self.metrics.is_some()
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    crate::server_env!(TestEnv = "SETTINGSTEST");

    #[derive(Debug, Parser)]
    struct Config {
        #[command(flatten)]
        server: ServerFlags<TestEnv>,
    }

    fn settings(args: &[&str]) -> Result<ServerSettings, String> {
        let config = Config::try_parse_from(std::iter::once("svc").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        ServerSettings::from_flags(&config.server, "queries", Vec::new())
    }

    #[test]
    fn defaults_validate() {
        let settings = settings(&[]).unwrap();
        assert!(settings.tls.is_none() && !settings.auth.is_on());
        assert_eq!(settings.keepalive_interval, Duration::from_secs(30));
        assert_eq!(settings.max_message_bytes, 4 * 1024 * 1024);
    }

    #[test]
    fn a_keepalive_timeout_not_below_the_interval_is_refused_naming_both_flags() {
        let error = settings(&[
            "--keepalive-interval-ms",
            "5000",
            "--keepalive-timeout-ms",
            "5000",
        ])
        .unwrap_err();
        assert!(
            error.contains("--keepalive-timeout-ms") && error.contains("--keepalive-interval-ms")
        );
    }

    #[test]
    fn unreadable_files_are_refused_naming_the_file() {
        let error = settings(&["--auth-token-file", "/nonexistent/token"]).unwrap_err();
        assert!(error.contains("--auth-token-file"), "{error}");
        let error =
            settings(&["--tls-cert", "/nonexistent/c.pem", "--tls-key", "k.pem"]).unwrap_err();
        assert!(error.contains("/nonexistent/c.pem"), "{error}");
    }

    #[test]
    fn cors_origins_are_validated_at_start() {
        assert_eq!(settings(&[]).unwrap().cors, CorsOrigins::None);
        let ok = settings(&["--cors-origin", "http://127.0.0.1:8080"]).unwrap();
        assert_eq!(
            ok.cors,
            CorsOrigins::Exact(vec!["http://127.0.0.1:8080".to_owned()])
        );
        let error = settings(&["--cors-origin", "http://127.0.0.1:8080/"]).unwrap_err();
        assert!(error.contains("--cors-origin"), "{error}");
    }
}

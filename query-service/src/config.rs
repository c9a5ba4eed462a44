//! Command-line flags (each with an environment-variable equivalent), validated
//! before anything is opened or bound.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use shared::server::auth::{self, Rule, Secret};
use shared::server::{ServerFlags, ServerSettings};

use crate::bootstrap::Peer;
use crate::upstream::Upstream;

shared::server_env!(
    /// query-service's common server flags read `QUERY_...` variables.
    pub QueryEnv = "QUERY"
);

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

    /// Longest a query with `min_position` waits when the client sets no deadline
    /// (milliseconds); a client deadline shorter than this wins.
    #[arg(long, env = "QUERY_MAX_WAIT_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub max_wait_ms: u64,

    /// Rebuild every read model from position 0 into fresh trees, keep answering
    /// from the current ones meanwhile, and switch once the rebuild has caught up.
    #[arg(long, env = "QUERY_REBUILD")]
    pub rebuild: bool,

    /// sled page cache size in MiB; the process's resident memory grows with
    /// it, by more than the cache size itself (BENCHMARKS.md).
    #[arg(long, env = "QUERY_CACHE_MB", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(8..=65_536))]
    pub cache_mb: u64,

    /// Most events applied in one atomic sled batch; larger batches catch up
    /// faster (BENCHMARKS.md), live traffic makes small batches anyway.
    #[arg(long, env = "QUERY_MAX_BATCH", default_value_t = 4096,
          value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub max_batch: u64,

    /// Async worker threads (0: one per core). Queries are answered on them,
    /// so more cores answer more queries at once; 1 costs less CPU per
    /// applied event when the replica mostly follows (BENCHMARKS.md).
    #[arg(long, env = "QUERY_WORKER_THREADS", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=1024))]
    pub worker_threads: u64,

    /// Readiness: gRPC health reports `orders.v1.QueryService` NOT_SERVING
    /// while the replica is more than this many events behind the command
    /// side's head (or has not heard it yet, or has stopped applying); `""`
    /// (liveness) is not affected.
    #[arg(long, env = "QUERY_READY_MAX_LAG", default_value_t = 1000)]
    pub ready_max_lag: u64,

    /// Most `WatchOrder` streams open on one order; more are refused with
    /// RESOURCE_EXHAUSTED.
    #[arg(long, env = "QUERY_MAX_WATCHERS_PER_ORDER",
          default_value_t = crate::watchers::DEFAULT_MAX_PER_ORDER,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_watchers_per_order: u64,

    /// Most `WatchOrder` streams open in total; more are refused with
    /// RESOURCE_EXHAUSTED.
    #[arg(long, env = "QUERY_MAX_WATCHERS", default_value_t = crate::watchers::DEFAULT_MAX_TOTAL,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_watchers: u64,

    /// Bearer token presented to command-service on SubscribeEvents.
    #[arg(long, env = "QUERY_SUBSCRIBE_TOKEN", hide_env_values = true)]
    pub subscribe_token: Option<Secret>,

    /// File holding the subscribe token (instead of --subscribe-token).
    #[arg(long, env = "QUERY_SUBSCRIBE_TOKEN_FILE")]
    pub subscribe_token_file: Option<PathBuf>,

    /// Bearer token required for `orders.v1.ProjectionAdminService` (pause,
    /// skip, retry, rebuild); without it the admin RPCs take --auth-token.
    #[arg(long, env = "QUERY_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<Secret>,

    /// File holding the admin token (instead of --admin-token).
    #[arg(long, env = "QUERY_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,

    /// Crash-loop protection: park an event automatically (and go on) once it
    /// has stopped applying this many times, counted across restarts; logged
    /// and counted in metrics. 0 (the default): never, an operator decides
    /// (ProjectionAdminService.SkipEvent).
    #[arg(long, env = "QUERY_PARK_AFTER_STOPS", default_value_t = 0)]
    pub park_after_stops: u32,

    /// PEM CA certificate(s) trusted for an `https://` --command-endpoint.
    #[arg(long, env = "QUERY_COMMAND_CA_FILE")]
    pub command_ca_file: Option<PathBuf>,

    /// Name checked against command-service's certificate (default: the endpoint's host).
    #[arg(long, env = "QUERY_COMMAND_TLS_DOMAIN", requires = "command_ca_file")]
    pub command_tls_domain: Option<String>,

    /// Serve the dashboard (a web page over both services' gRPC-Web) on this
    /// address; off when unset. Port 0 picks a free port (logged as `dashboard on`).
    #[arg(long, env = "QUERY_WEB_LISTEN")]
    pub web_listen: Option<SocketAddr>,

    /// command-service's URL as the dashboard's browser reaches it (default:
    /// --command-endpoint).
    #[arg(long, env = "QUERY_WEB_COMMAND_URL", value_parser = parse_endpoint)]
    pub web_command_url: Option<String>,
    /// On an empty data directory, copy the read models of the running replica
    /// at this endpoint (`ReplicationService.StreamSnapshot`) before serving,
    /// then follow the command log from the copy's position. Ignored (with a
    /// warning) when the directory already holds read models.
    #[arg(long, env = "QUERY_BOOTSTRAP_FROM", value_parser = parse_endpoint)]
    pub bootstrap_from: Option<String>,

    /// Bearer token presented to the --bootstrap-from replica (its --auth-token).
    #[arg(long, env = "QUERY_BOOTSTRAP_TOKEN", hide_env_values = true)]
    pub bootstrap_token: Option<Secret>,

    /// File holding the bootstrap token (instead of --bootstrap-token).
    #[arg(long, env = "QUERY_BOOTSTRAP_TOKEN_FILE")]
    pub bootstrap_token_file: Option<PathBuf>,

    /// PEM CA certificate(s) trusted for an `https://` --bootstrap-from.
    #[arg(long, env = "QUERY_BOOTSTRAP_CA_FILE")]
    pub bootstrap_ca_file: Option<PathBuf>,

    /// Name checked against the --bootstrap-from replica's certificate (default: the endpoint's host).
    #[arg(
        long,
        env = "QUERY_BOOTSTRAP_TLS_DOMAIN",
        requires = "bootstrap_ca_file"
    )]
    pub bootstrap_tls_domain: Option<String>,

    #[command(flatten)]
    pub server: ServerFlags<QueryEnv>,
}

/// The paths `--admin-token` guards.
pub const ADMIN_PATH_PREFIX: &str = "/orders.v1.ProjectionAdminService/";

/// The configuration validated: what `run` uses, nothing left to read or check.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub command_endpoint: String,
    pub upstream: Upstream,
    pub max_wait: Duration,
    pub rebuild: bool,
    pub cache_bytes: u64,
    pub max_batch: usize,
    pub ready_max_lag: u64,
    pub max_watchers_per_order: usize,
    pub max_watchers: usize,
    /// The dashboard's address and command-service's browser URL, with --web-listen.
    pub web: Option<(SocketAddr, String)>,
    pub park_after_stops: u32,
    /// `--bootstrap-from`: the replica to copy the read models from.
    pub bootstrap_from: Option<Peer>,
    pub server: ServerSettings,
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
    /// Reads the token, TLS and CA files once and checks how the command side
    /// is reached; fails with one line naming the flag.
    pub fn validate(&self) -> Result<Settings, String> {
        let admin_token = auth::resolve(
            self.admin_token.as_ref(),
            self.admin_token_file.as_deref(),
            "admin-token",
        )?;
        let server = ServerSettings::from_flags(
            &self.server,
            "queries",
            vec![Rule {
                path_prefix: ADMIN_PATH_PREFIX,
                role: "ProjectionAdminService",
                flag: "admin-token",
                token: admin_token,
            }],
        )?;
        if self.max_watchers_per_order > self.max_watchers {
            return Err(format!(
                "--max-watchers-per-order ({}) must not exceed --max-watchers ({})",
                self.max_watchers_per_order, self.max_watchers
            ));
        }
        let count = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        Ok(Settings {
            data_dir: self.data_dir.clone(),
            command_endpoint: self.command_endpoint.clone(),
            upstream: self.upstream()?,
            max_wait: Duration::from_millis(self.max_wait_ms),
            rebuild: self.rebuild,
            cache_bytes: self.cache_mb * 1024 * 1024,
            max_batch: count(self.max_batch),
            ready_max_lag: self.ready_max_lag,
            max_watchers_per_order: count(self.max_watchers_per_order),
            max_watchers: count(self.max_watchers),
            web: self.web_listen.map(|addr| {
                let url = self.web_command_url.as_ref();
                (addr, url.unwrap_or(&self.command_endpoint).clone())
            }),
            park_after_stops: self.park_after_stops,
            bootstrap_from: self.bootstrap_peer()?,
            server,
        })
    }

    /// How to reach command-service: TLS for `https://`, and the subscribe token.
    fn upstream(&self) -> Result<Upstream, String> {
        let tls = client_tls(
            &self.command_endpoint,
            self.command_ca_file.as_deref(),
            self.command_tls_domain.as_deref(),
            "command-endpoint",
            "command-ca-file",
        )?;
        let token = auth::resolve(
            self.subscribe_token.as_ref(),
            self.subscribe_token_file.as_deref(),
            "subscribe-token",
        )?;
        Ok(Upstream { tls, token })
    }

    /// How to reach the `--bootstrap-from` replica, if one is given.
    fn bootstrap_peer(&self) -> Result<Option<Peer>, String> {
        let Some(endpoint) = &self.bootstrap_from else {
            return Ok(None);
        };
        let tls = client_tls(
            endpoint,
            self.bootstrap_ca_file.as_deref(),
            self.bootstrap_tls_domain.as_deref(),
            "bootstrap-from",
            "bootstrap-ca-file",
        )?;
        let token = auth::resolve(
            self.bootstrap_token.as_ref(),
            self.bootstrap_token_file.as_deref(),
            "bootstrap-token",
        )?;
        Ok(Some(Peer {
            endpoint: endpoint.clone(),
            upstream: Upstream { tls, token },
        }))
    }
}

/// TLS towards `endpoint`: a CA for `https://`, none for `http://`; `flag` and
/// `ca_flag` name the flags in the error.
fn client_tls(
    endpoint: &str,
    ca_file: Option<&std::path::Path>,
    domain: Option<&str>,
    flag: &str,
    ca_flag: &str,
) -> Result<Option<tonic::transport::ClientTlsConfig>, String> {
    match (ca_file, endpoint.starts_with("https://")) {
        (Some(ca), true) => Ok(Some(shared::server::tls::client_config(ca, domain)?)),
        (None, false) => Ok(None),
        (None, true) => Err(format!("an https:// --{flag} needs --{ca_flag}")),
        (Some(_), false) => Err(format!("--{ca_flag} needs an https:// --{flag}")),
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
        let settings = config.validate().unwrap();
        assert!(!settings.server.auth.is_on() && settings.upstream.token.is_none());
        assert!(settings.server.tls.is_none() && settings.server.metrics.is_none());
        assert!(settings.upstream.tls.is_none());
        assert_eq!(
            (settings.max_watchers_per_order, settings.max_watchers),
            (16, 10_000)
        );
        assert_eq!(settings.ready_max_lag, 1000);
        assert!(settings.web.is_none());
        assert_eq!(settings.park_after_stops, 0);
    }

    #[test]
    fn the_dashboard_reaches_the_command_side_at_its_endpoint_unless_told_otherwise() {
        let parse = |args: &[&str]| {
            let config = Config::try_parse_from([&["query-service"], args].concat()).unwrap();
            config.validate().unwrap().web
        };
        let web = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(
            parse(&[
                "--web-listen",
                "127.0.0.1:8080",
                "--command-endpoint",
                "http://10.0.0.1:1"
            ]),
            Some((web, "http://10.0.0.1:1".to_owned()))
        );
        assert_eq!(
            parse(&[
                "--web-listen",
                "127.0.0.1:8080",
                "--web-command-url",
                "https://cmd.example"
            ]),
            Some((web, "https://cmd.example".to_owned()))
        );
        assert!(Config::try_parse_from(["query-service", "--web-command-url", "nope"]).is_err());
    }

    #[test]
    fn an_admin_token_alone_is_refused_since_queries_would_stay_open() {
        let alone = Config::try_parse_from(["query-service", "--admin-token", "adm1n"]).unwrap();
        let error = alone.validate().unwrap_err();
        assert!(error.contains("--admin-token"), "{error}");
        let both = Config::try_parse_from([
            "query-service",
            "--admin-token",
            "adm1n",
            "--auth-token",
            "qu3ry",
        ])
        .unwrap();
        let summary = both.validate().unwrap().server.auth.summary().to_owned();
        assert!(
            summary.contains("ProjectionAdminService needs --admin-token"),
            "{summary}"
        );
    }

    #[test]
    fn tls_towards_the_command_side_needs_https_and_a_ca() {
        let https = Config::try_parse_from([
            "query-service",
            "--command-endpoint",
            "https://127.0.0.1:50051",
        ])
        .unwrap();
        assert!(https.validate().is_err());
        let ca_without_https =
            Config::try_parse_from(["query-service", "--command-ca-file", "ca.pem"]).unwrap();
        assert!(ca_without_https.validate().is_err());
    }

    #[test]
    fn bootstrap_from_takes_its_own_token_and_tls() {
        let peer = |args: &[&str]| {
            let mut all = vec!["query-service"];
            all.extend_from_slice(args);
            Config::try_parse_from(all).unwrap().validate()
        };
        assert!(peer(&[]).unwrap().bootstrap_from.is_none());
        let settings = peer(&[
            "--bootstrap-from",
            "http://127.0.0.1:7",
            "--bootstrap-token",
            "t0ken",
        ])
        .unwrap();
        let from = settings.bootstrap_from.unwrap();
        assert_eq!(from.endpoint, "http://127.0.0.1:7");
        assert_eq!(from.upstream.token.unwrap().expose(), "t0ken");
        assert!(from.upstream.tls.is_none() && settings.upstream.token.is_none());
        let error = peer(&["--bootstrap-from", "https://127.0.0.1:7"]).unwrap_err();
        assert!(error.contains("--bootstrap-ca-file"), "{error}");
        assert!(Config::try_parse_from(["query-service", "--bootstrap-from", "nope"]).is_err());
    }

    #[test]
    fn a_bad_endpoint_is_refused_at_start() {
        assert!(Config::try_parse_from(["query-service", "--command-endpoint", "nope"]).is_err());
        assert!(Config::try_parse_from(["query-service", "--listen", "localhost"]).is_err());
    }
}

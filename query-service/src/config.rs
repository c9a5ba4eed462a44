//! Command-line flags (each with an environment-variable equivalent), validated
//! before anything is opened or bound.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use shared::telemetry::LogFormat;

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

    /// sled page cache size in MiB.
    #[arg(long, env = "QUERY_CACHE_MB", default_value_t = 128,
          value_parser = clap::value_parser!(u64).range(8..=65_536))]
    pub cache_mb: u64,

    /// Most events applied in one sled transaction.
    #[arg(long, env = "QUERY_MAX_BATCH", default_value_t = 512,
          value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub max_batch: u64,
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
    }

    #[test]
    fn a_bad_endpoint_is_refused_at_start() {
        assert!(Config::try_parse_from(["query-service", "--command-endpoint", "nope"]).is_err());
        assert!(Config::try_parse_from(["query-service", "--listen", "localhost"]).is_err());
    }
}

//! Command-line flags (each with an environment-variable equivalent), validated
//! before anything is opened or bound.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use shared::telemetry::LogFormat;

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
}

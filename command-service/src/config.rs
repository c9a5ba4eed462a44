//! Command-line flags (each with an environment-variable equivalent), validated
//! before anything is opened or bound.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use shared::server::auth::{self, Rule, Secret};
use shared::server::{ServerFlags, ServerSettings};

shared::server_env!(
    /// command-service's common server flags read `COMMAND_...` variables.
    pub CommandEnv = "COMMAND"
);

/// The write side of the order service pair.
#[derive(Debug, Clone, Parser)]
#[command(name = "command-service", version, about)]
pub struct Config {
    /// Without a subcommand, command-service serves.
    #[command(subcommand)]
    pub tool: Option<Tool>,

    /// Address to serve gRPC on; port 0 picks a free port (the bound address is logged).
    #[arg(long, env = "COMMAND_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Directory of the sled database (created if missing; one process at a time).
    #[arg(long, env = "COMMAND_DATA_DIR", default_value = "./data/command")]
    pub data_dir: PathBuf,

    /// sled page cache size in MiB.
    #[arg(long, env = "COMMAND_CACHE_MB", default_value_t = 256,
          value_parser = clap::value_parser!(u64).range(8..=65_536))]
    pub cache_mb: u64,

    /// Most commands committed with one flush (group commit).
    #[arg(long, env = "COMMAND_MAX_BATCH", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub max_batch: u64,

    /// Async worker threads serving gRPC (0: one per core). The writer and
    /// the checkpointer have threads of their own, so one worker is enough
    /// for what one writer can commit, and at ordinary load it costs about
    /// half the CPU per command of two (BENCHMARKS.md): with more, each
    /// request also wakes an idle worker that finds nothing to do.
    #[arg(long, env = "COMMAND_WORKER_THREADS", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(0..=1024))]
    pub worker_threads: u64,

    /// Milliseconds between heartbeats on an idle `SubscribeEvents` stream.
    #[arg(long, env = "COMMAND_HEARTBEAT_MS", default_value_t = 2000,
          value_parser = clap::value_parser!(u64).range(10..=600_000))]
    pub heartbeat_ms: u64,

    /// Most `SubscribeEvents` streams open at once (each reads up to
    /// --max-subscriber-buffer-bytes ahead); more are refused with
    /// RESOURCE_EXHAUSTED.
    #[arg(long, env = "COMMAND_MAX_SUBSCRIBERS", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub max_subscribers: u64,

    /// Bytes of the log read ahead for one `SubscribeEvents` stream whose
    /// client reads slower than the log grows (a bound on its memory; the
    /// stream then reads on as the client catches up).
    #[arg(long, env = "COMMAND_MAX_SUBSCRIBER_BUFFER_BYTES", default_value_t = 4 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(65_536..=1_073_741_824))]
    pub max_subscriber_buffer_bytes: u64,

    /// Bearer token required on SubscribeEvents (query-service presents it);
    /// unset: SubscribeEvents takes the command token (--auth-token), and with
    /// no token at all every RPC is open.
    #[arg(long, env = "COMMAND_SUBSCRIBE_TOKEN", hide_env_values = true)]
    pub subscribe_token: Option<Secret>,

    /// File holding the subscribe token (instead of --subscribe-token).
    #[arg(long, env = "COMMAND_SUBSCRIBE_TOKEN_FILE")]
    pub subscribe_token_file: Option<PathBuf>,

    /// Bearer token required on `CommandAdminService` (`Backup`); unset: it
    /// takes the command token (--auth-token).
    #[arg(long, env = "COMMAND_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<Secret>,

    /// File holding the admin token (instead of --admin-token).
    #[arg(long, env = "COMMAND_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,

    #[command(flatten)]
    pub server: ServerFlags<CommandEnv>,
}

/// The operator's tools, instead of serving.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Tool {
    /// Calls `CommandAdminService.Backup` on a running command-service and
    /// writes the snapshot to a file (prints its position and log id).
    Backup(BackupArgs),
    /// Loads a backup file into a new data directory, for a command-service
    /// to serve from (it continues the same log).
    Restore(RestoreArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct BackupArgs {
    /// The command-service to back up: `http://HOST:PORT`, `https://HOST:PORT`
    /// (with --ca-file) or `HOST:PORT`.
    #[arg(long)]
    pub endpoint: String,

    /// The backup file to write (replaced only once the backup is whole).
    #[arg(long)]
    pub to: PathBuf,

    /// Bearer token to present: the service's admin token, or its command
    /// token when it has no admin token.
    #[arg(long, env = "COMMAND_BACKUP_TOKEN", hide_env_values = true)]
    pub token: Option<Secret>,

    /// File holding the token (instead of --token).
    #[arg(long, env = "COMMAND_BACKUP_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,

    /// PEM CA certificate to trust for an `https://` endpoint.
    #[arg(long, env = "COMMAND_BACKUP_CA_FILE")]
    pub ca_file: Option<PathBuf>,

    /// Server name to check in its certificate (default: the endpoint's host).
    #[arg(long, requires = "ca_file")]
    pub tls_domain: Option<String>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct RestoreArgs {
    /// The backup file to load.
    #[arg(long)]
    pub from: PathBuf,

    /// The data directory to create: it must not exist or be empty.
    #[arg(long)]
    pub data_dir: PathBuf,
}

/// The configuration validated: what `run` uses, nothing left to read or check.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub cache_bytes: u64,
    pub max_batch: usize,
    pub heartbeat_interval: Duration,
    pub max_subscribers: usize,
    pub max_subscriber_buffer_bytes: usize,
    pub server: ServerSettings,
}

impl Config {
    /// Reads the token and TLS files and decides the auth policy, once;
    /// fails with one line naming the flag.
    pub fn validate(&self) -> Result<Settings, String> {
        let subscribe = auth::resolve(
            self.subscribe_token.as_ref(),
            self.subscribe_token_file.as_deref(),
            "subscribe-token",
        )?;
        let admin = auth::resolve(
            self.admin_token.as_ref(),
            self.admin_token_file.as_deref(),
            "admin-token",
        )?;
        let server = ServerSettings::from_flags(
            &self.server,
            "commands",
            vec![
                Rule {
                    path_prefix: crate::routes::SUBSCRIBE_PATH,
                    role: "SubscribeEvents",
                    flag: "subscribe-token",
                    token: subscribe,
                },
                Rule {
                    path_prefix: crate::admin::ADMIN_PATH,
                    role: "CommandAdminService",
                    flag: "admin-token",
                    token: admin,
                },
            ],
        )?;
        Ok(Settings {
            data_dir: self.data_dir.clone(),
            cache_bytes: self.cache_mb * 1024 * 1024,
            max_batch: usize::try_from(self.max_batch).unwrap_or(usize::MAX),
            heartbeat_interval: Duration::from_millis(self.heartbeat_ms),
            max_subscribers: usize::try_from(self.max_subscribers).unwrap_or(usize::MAX),
            max_subscriber_buffer_bytes: usize::try_from(self.max_subscriber_buffer_bytes)
                .unwrap_or(usize::MAX),
            server,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn parse(args: &[&str]) -> Config {
        Config::try_parse_from(std::iter::once("command-service").chain(args.iter().copied()))
            .unwrap()
    }

    #[test]
    fn defaults_keep_auth_tls_and_metrics_off() {
        let settings = parse(&[]).validate().unwrap();
        assert!(!settings.server.auth.is_on());
        assert!(settings.server.tls.is_none() && settings.server.metrics.is_none());
        assert_eq!(settings.server.max_message_bytes, 4 * 1024 * 1024);
        assert_eq!(settings.max_subscribers, 64);
    }

    #[test]
    fn no_subcommand_serves_and_the_tools_take_their_own_flags() {
        assert!(parse(&["--listen", "127.0.0.1:0"]).tool.is_none());
        let config = parse(&["backup", "--endpoint", "127.0.0.1:1", "--to", "b.bak"]);
        assert!(matches!(config.tool, Some(Tool::Backup(ref a)) if a.endpoint == "127.0.0.1:1"));
        let config = parse(&["restore", "--from", "b.bak", "--data-dir", "d"]);
        assert!(matches!(config.tool, Some(Tool::Restore(ref a)) if a.data_dir == Path::new("d")));
        let restore = ["command-service", "restore", "--from", "b.bak"];
        assert!(
            Config::try_parse_from(restore).is_err(),
            "--data-dir is required"
        );
    }

    #[test]
    fn the_admin_token_guards_the_admin_service_alone() {
        let settings = parse(&["--auth-token", "c", "--admin-token", "a"])
            .validate()
            .unwrap();
        let summary = settings.server.auth.summary().to_owned();
        assert!(
            summary.contains("CommandAdminService needs --admin-token"),
            "{summary}"
        );
        let error = parse(&["--admin-token", "a"]).validate().unwrap_err();
        assert!(error.contains("--admin-token") && error.contains("--auth-token"));
        let settings = parse(&["--auth-token", "c"]).validate().unwrap();
        assert!(settings
            .server
            .auth
            .summary()
            .contains("CommandAdminService needs --auth-token"));
    }

    #[test]
    fn a_subscribe_token_alone_is_refused_since_commands_would_stay_open() {
        let error = parse(&["--subscribe-token", "s"]).validate().unwrap_err();
        assert!(error.contains("--subscribe-token") && error.contains("--auth-token"));
        let settings = parse(&["--auth-token", "c"]).validate().unwrap();
        assert!(settings
            .server
            .auth
            .summary()
            .contains("SubscribeEvents needs --auth-token"));
    }
}

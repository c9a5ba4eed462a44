//! Entry point: parse flags, set up logging, validate, open the database, bind, run.

use std::process::ExitCode;

use clap::Parser;
use command_service::config::Config;
use command_service::store::Store;

/// mimalloc instead of glibc malloc, as in query-service (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    let server = &config.server;
    if let Err(e) = shared::telemetry::init_logging(&server.log_level, server.log_format) {
        eprintln!("command-service: error: {e}");
        return ExitCode::from(2);
    }
    tracing::info!(
        listen = %config.listen,
        data_dir = %config.data_dir.display(),
        log_level = %server.log_level,
        log_format = ?server.log_format,
        cache_mb = config.cache_mb,
        max_batch = config.max_batch,
        heartbeat_ms = config.heartbeat_ms,
        max_subscribers = config.max_subscribers,
        // Whether a token is set, never the token.
        command_auth = server.auth_token.is_some() || server.auth_token_file.is_some(),
        subscribe_auth = config.subscribe_token.is_some() || config.subscribe_token_file.is_some(),
        tls = server.tls_cert.is_some(),
        max_message_bytes = server.max_message_bytes,
        request_timeout_ms = server.request_timeout_ms,
        shutdown_grace_ms = server.shutdown_grace_ms,
        max_concurrent_streams = server.max_concurrent_streams,
        max_requests_per_connection = server.max_requests_per_connection,
        max_connections = server.max_connections,
        keepalive_interval_ms = server.keepalive_interval_ms,
        keepalive_timeout_ms = server.keepalive_timeout_ms,
        metrics_listen = ?server.metrics_listen,
        "effective configuration"
    );
    // Configuration errors end the start before anything is opened or bound.
    let settings = match config.validate() {
        Ok(settings) => settings,
        Err(e) => return fail(&e),
    };
    tracing::info!("{}", settings.server.auth.summary());
    let store = match Store::open(&settings.data_dir, settings.cache_bytes) {
        Ok(store) => store,
        Err(e) => return fail(&e.to_string()),
    };
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(e) => return fail(&format!("cannot listen on {}: {e}", config.listen)),
    };
    match command_service::run(
        settings,
        store,
        listener,
        shared::telemetry::shutdown_signal(),
    )
    .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e.to_string()),
    }
}

/// One clear log line (stderr) and a non-zero exit.
fn fail(message: &str) -> ExitCode {
    tracing::error!("{message}");
    ExitCode::FAILURE
}

//! Entry point: parse flags, set up logging, open the database, bind, run.

use std::process::ExitCode;

use clap::Parser;
use command_service::config::Config;
use command_service::store::Store;

/// mimalloc instead of glibc malloc, as in query-service (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let mut config = Config::parse();
    if let Err(e) = shared::telemetry::init_logging(&config.log_level, config.log_format) {
        eprintln!("command-service: error: {e}");
        return ExitCode::from(2);
    }
    tracing::info!(
        listen = %config.listen,
        data_dir = %config.data_dir.display(),
        log_level = %config.log_level,
        log_format = ?config.log_format,
        cache_mb = config.cache_mb,
        max_batch = config.max_batch,
        heartbeat_ms = config.heartbeat_ms,
        // Whether a token is set, never the token.
        command_auth = config.auth_token.is_some() || config.auth_token_file.is_some(),
        subscribe_auth = config.subscribe_token.is_some() || config.subscribe_token_file.is_some(),
        tls = config.tls_cert.is_some(),
        max_message_bytes = config.max_message_bytes,
        request_timeout_ms = config.request_timeout_ms,
        shutdown_grace_ms = config.shutdown_grace_ms,
        max_concurrent_streams = config.max_concurrent_streams,
        max_requests_per_connection = config.max_requests_per_connection,
        max_connections = config.max_connections,
        metrics_listen = ?config.metrics_listen,
        "effective configuration"
    );
    // Configuration errors end the start before anything is opened or bound.
    if let Err(e) = config
        .load_token_files()
        .and_then(|()| config.tls().map(drop))
    {
        return fail(&e);
    }
    let store = match Store::open(&config.data_dir, config.cache_bytes()) {
        Ok(store) => store,
        Err(e) => return fail(&e.to_string()),
    };
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(e) => return fail(&format!("cannot listen on {}: {e}", config.listen)),
    };
    match listener.local_addr() {
        Ok(addr) => tracing::info!("listening on {addr}"),
        Err(e) => return fail(&format!("cannot read the bound address: {e}")),
    }
    match command_service::run(
        config,
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

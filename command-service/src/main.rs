//! Entry point: parse flags, set up logging, open the database, bind, run.

use std::process::ExitCode;

use clap::Parser;
use command_service::config::Config;
use command_service::store::Store;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
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
        "effective configuration"
    );
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

//! Entry point: parse flags, set up logging, bind, run.

use std::process::ExitCode;

use clap::Parser;
use query_service::config::Config;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    if let Err(e) = shared::telemetry::init_logging(&config.log_level, config.log_format) {
        eprintln!("query-service: error: {e}");
        return ExitCode::from(2);
    }
    tracing::info!(
        listen = %config.listen,
        data_dir = %config.data_dir.display(),
        command_endpoint = %config.command_endpoint,
        log_level = %config.log_level,
        log_format = ?config.log_format,
        max_wait_ms = config.max_wait_ms,
        rebuild = config.rebuild,
        cache_mb = config.cache_mb,
        max_batch = config.max_batch,
        "effective configuration"
    );
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(e) => return fail(&format!("cannot listen on {}: {e}", config.listen)),
    };
    match query_service::run(config, listener, shared::telemetry::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e.to_string()),
    }
}

/// One clear log line (stderr) and a non-zero exit.
fn fail(message: &str) -> ExitCode {
    tracing::error!("{message}");
    ExitCode::FAILURE
}

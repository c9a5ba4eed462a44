//! Entry point: parse flags, set up logging, validate, bind, run.

use std::process::ExitCode;

use clap::Parser;
use query_service::config::Config;

/// mimalloc instead of glibc malloc (about 45% of a catch-up's CPU): a catch-up
/// applies about 1.3x the events per CPU-second (BENCHMARKS.md). Built with
/// `no_thp`: transparent huge pages raised the peak RSS by about 60 MB.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let config = Config::parse();
    shared::server::block_on(
        "query-service",
        config.worker_threads,
        shared::server::NextTask::Woken,
        shared::server::traced("query-service", &config.server, serve(&config)),
    )
}

async fn serve(config: &Config) -> ExitCode {
    let server = &config.server;
    tracing::info!(
        listen = %config.listen,
        data_dir = %config.data_dir.display(),
        command_endpoint = %config.command_endpoint,
        max_wait_ms = config.max_wait_ms,
        rebuild = config.rebuild,
        cache_mb = config.cache_mb,
        max_batch = config.max_batch,
        worker_threads = config.worker_threads,
        ready_max_lag = config.ready_max_lag,
        max_watchers_per_order = config.max_watchers_per_order,
        max_watchers = config.max_watchers,
        // Whether a token is set, never the token.
        query_auth = server.auth_token.is_some() || server.auth_token_file.is_some(),
        subscribe_token = config.subscribe_token.is_some() || config.subscribe_token_file.is_some(),
        admin_token = config.admin_token.is_some() || config.admin_token_file.is_some(),
        park_after_stops = config.park_after_stops,
        command_ca_file = ?config.command_ca_file,
        web_listen = ?config.web_listen,
        web_command_url = ?config.web_command_url,
        bootstrap_from = ?config.bootstrap_from,
        bootstrap_token = config.bootstrap_token.is_some() || config.bootstrap_token_file.is_some(),
        server = %server,
        "effective configuration"
    );
    if server.request_timeout_ms <= config.max_wait_ms {
        tracing::warn!(
            "--request-timeout-ms ({}) is not above --max-wait-ms ({}): min_position waits \
             without a client deadline will be cut by the request timeout (CANCELLED)",
            server.request_timeout_ms,
            config.max_wait_ms
        );
    }
    // Configuration errors end the start before anything is opened or bound.
    let settings = match config.validate() {
        Ok(settings) => settings,
        Err(e) => return fail(&e),
    };
    tracing::info!("{}", settings.server.auth.summary());
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(e) => return fail(&format!("cannot listen on {}: {e}", config.listen)),
    };
    match query_service::run(settings, listener, shared::telemetry::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e.to_string()),
    }
}

/// One clear log line (stderr) and a non-zero exit.
fn fail(message: &str) -> ExitCode {
    tracing::error!("{message}");
    ExitCode::FAILURE
}

//! Entry point: parse flags, set up logging, validate, open the database, bind,
//! run; or, with a subcommand, run that tool (`backup`, `restore`) and exit.

use std::process::ExitCode;

use clap::Parser;
use command_service::config::{Config, Tool};
use command_service::store::Store;

/// mimalloc instead of glibc malloc, as in query-service (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let config = Config::parse();
    shared::server::block_on(
        "command-service",
        config.worker_threads,
        shared::server::NextTask::Oldest,
        async {
            match &config.tool {
                Some(tool) => run_tool(tool, &config).await,
                None => {
                    shared::server::traced("command-service", &config.server, serve(&config)).await
                }
            }
        },
    )
}

async fn serve(config: &Config) -> ExitCode {
    let server = &config.server;
    tracing::info!(
        listen = %config.listen,
        data_dir = %config.data_dir.display(),
        cache_mb = config.cache_mb,
        max_batch = config.max_batch,
        worker_threads = config.worker_threads,
        heartbeat_ms = config.heartbeat_ms,
        max_subscribers = config.max_subscribers,
        max_subscriber_buffer_bytes = config.max_subscriber_buffer_bytes,
        // Whether a token is set, never the token.
        command_auth = server.auth_token.is_some() || server.auth_token_file.is_some(),
        subscribe_auth = config.subscribe_token.is_some() || config.subscribe_token_file.is_some(),
        admin_auth = config.admin_token.is_some() || config.admin_token_file.is_some(),
        server = %server,
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

/// A tool's result on stdout, or its error as one line on stderr and a
/// non-zero exit. Only warnings are logged (stderr), not the server's info.
async fn run_tool(tool: &Tool, config: &Config) -> ExitCode {
    let _ = shared::telemetry::init_logging("warn", config.server.log_format);
    let done = match tool {
        Tool::Backup(args) => command_service::backup_tool::backup(args).await,
        Tool::Restore(args) => {
            let args = args.clone();
            tokio::task::spawn_blocking(move || command_service::backup_tool::restore(&args))
                .await
                .unwrap_or_else(|e| Err(format!("restore stopped: {e}")))
        }
    };
    match done {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("command-service: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One clear log line (stderr) and a non-zero exit.
fn fail(message: &str) -> ExitCode {
    tracing::error!("{message}");
    ExitCode::FAILURE
}

//! gRPC server plumbing both services use: the common flags and their
//! validated settings, the `serve` skeleton, bearer-token auth, connection
//! limits, per-RPC spans and metrics, TLS configuration, server reflection, the
//! bounded shutdown drain, the Prometheus endpoint, and gRPC-Web with CORS for
//! browsers.

pub mod auth;
pub mod connections;
pub mod flags;
pub mod http;
pub mod metrics;
pub mod observe;
pub mod reflection;
pub mod serve;
pub mod settings;
pub mod shutdown;
pub mod tls;
pub mod web;

pub use flags::{ServerEnv, ServerFlags};
pub use serve::{serve, Api, ServeError};
pub use settings::ServerSettings;

/// A service's `main` after parsing its flags: runs `body` on a tokio runtime
/// of `worker_threads` async workers (`--worker-threads`; 0: one per core, or
/// `TOKIO_WORKER_THREADS`), and exits non-zero when it cannot start one.
pub fn block_on(
    service: &str,
    worker_threads: u64,
    body: impl std::future::Future<Output = std::process::ExitCode>,
) -> std::process::ExitCode {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Ok(workers @ 1..) = usize::try_from(worker_threads) {
        builder.worker_threads(workers);
    }
    match builder.build() {
        Ok(runtime) => runtime.block_on(body),
        Err(e) => {
            eprintln!("{service}: error: cannot start the async runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Sets up logging and, with `--otlp-endpoint`, trace export from the common
/// flags, runs `serve`, then sends the last spans (the shutdown's included)
/// before the process ends. Bad logging flags: one line, exit code 2.
pub async fn traced<E: ServerEnv>(
    service: &'static str,
    flags: &ServerFlags<E>,
    serve: impl std::future::Future<Output = std::process::ExitCode>,
) -> std::process::ExitCode {
    let telemetry = match crate::telemetry::init(
        &flags.log_level,
        flags.log_format,
        flags.otlp_endpoint.as_deref(),
        service,
    ) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("{service}: error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let code = serve.await;
    telemetry.shutdown().await;
    code
}

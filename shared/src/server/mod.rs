//! gRPC server plumbing both services use: the common flags and their
//! validated settings, the `serve` skeleton, bearer-token auth, connection
//! limits, per-RPC spans and metrics, TLS configuration, server reflection, the
//! bounded shutdown drain, the Prometheus endpoint, and gRPC-Web with CORS for
//! browsers.

pub mod auth;
pub mod connections;
pub mod flags;
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

/// The tokio runtime a service runs on: `worker_threads` async worker threads
/// (`--worker-threads`; 0: one per core, or `TOKIO_WORKER_THREADS`).
pub fn runtime(worker_threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if worker_threads > 0 {
        builder.worker_threads(worker_threads);
    }
    builder.build()
}

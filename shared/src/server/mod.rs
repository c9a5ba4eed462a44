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

/// A service's `main` after parsing its flags: runs `body` on [`runtime`],
/// and exits non-zero when it cannot start one.
pub fn block_on(
    service: &str,
    worker_threads: u64,
    next: NextTask,
    body: impl std::future::Future<Output = std::process::ExitCode>,
) -> std::process::ExitCode {
    match runtime(worker_threads, next) {
        Ok(runtime) => runtime.block_on(body),
        Err(e) => {
            eprintln!("{service}: error: cannot start the async runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Which task a tokio worker runs after the running task woke another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextTask {
    /// The one it woke (tokio's default, its "LIFO slot"), which stays on
    /// the worker that woke it, out of reach of the other workers' stealing:
    /// query-service, a worker per core by default. With the slot off, its CPU per
    /// applied event following at 2,000 commands/s rose from 90-118 µs to
    /// 118-124 µs (BENCHMARKS.md).
    Woken,
    /// The one queued longest (the LIFO slot off). Every gRPC response wakes
    /// its HTTP/2 connection's task. With the slot, that task ran right after
    /// each response and wrote it with a `writev` of its own, even when a
    /// whole commit group's replies were ready together. Now it runs after
    /// them and writes them in one go: command-service, one async worker by
    /// default, made one `writev` per 8 commands instead of one per command
    /// at saturation, for 20-30% less CPU per command (BENCHMARKS.md).
    ///
    /// `disable_lifo_slot` is one of tokio's unstable options: the
    /// workspace's `.cargo/config.toml` builds with `--cfg tokio_unstable`.
    /// A `RUSTFLAGS` in the environment replaces that setting; a build
    /// without the flag gets `Woken` (and the test below fails).
    Oldest,
}

/// The services' tokio runtime: `worker_threads` async workers
/// (`--worker-threads`; 0: one per core, or `TOKIO_WORKER_THREADS`), running
/// woken tasks as `next` says.
pub fn runtime(worker_threads: u64, next: NextTask) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    #[cfg(tokio_unstable)]
    if next == NextTask::Oldest {
        builder.disable_lifo_slot();
    }
    #[cfg(not(tokio_unstable))]
    let _ = next;
    if let Ok(workers @ 1..) = usize::try_from(worker_threads) {
        builder.worker_threads(workers);
    }
    builder.build()
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::{runtime, NextTask};

    /// The order in which three tasks spawned by a running task run, on a
    /// runtime of one worker.
    fn spawned_order(next: NextTask) -> Vec<u32> {
        let runtime = runtime(1, next).expect("a runtime");
        runtime.block_on(async {
            tokio::spawn(async {
                let order = Arc::new(Mutex::new(Vec::new()));
                let tasks: Vec<_> = (0..3)
                    .map(|i| {
                        let order = Arc::clone(&order);
                        tokio::spawn(async move { order.lock().expect("not poisoned").push(i) })
                    })
                    .collect();
                for task in tasks {
                    task.await.expect("the task ran");
                }
                let order = order.lock().expect("not poisoned").clone();
                order
            })
            .await
            .expect("the spawning task ran")
        })
    }

    #[test]
    fn oldest_runs_woken_tasks_in_the_order_they_were_woken() {
        assert_eq!(
            spawned_order(NextTask::Oldest),
            [0, 1, 2],
            "the runtime ran the last woken task first: was this built without \
             `--cfg tokio_unstable` (.cargo/config.toml; a RUSTFLAGS in the environment replaces it)?"
        );
    }

    #[test]
    fn woken_runs_the_last_woken_task_first() {
        assert_eq!(spawned_order(NextTask::Woken), [2, 0, 1]);
    }
}

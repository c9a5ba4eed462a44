//! command-service: the write side of the order CQRS pair.
//!
//! `main` parses the config and binds; `run` owns everything after that, so tests
//! and tools can start it on an already bound port-0 listener.

pub mod config;
pub mod decide;
pub mod error;
pub mod grpc;
pub mod routes;
pub mod store;
pub mod subscription;
pub mod wal;
pub mod writer;

use std::future::Future;

use shared::proto::command_service_server::CommandServiceServer;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::grpc::CommandApi;
use crate::store::Store;
use shared::server::auth::{AuthLayer, Rule};
use shared::server::observe::{ObserveLayer, RpcMetrics};
use shared::server::shutdown::{drain_within, Drained};

const API: &str = "/orders.v1.CommandService/";

/// Serves until `shutdown` completes, then stops accepting, lets in-flight
/// commands finish, ends the event streams, flushes and returns.
pub async fn run(
    config: Config,
    store: Store,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let tokens = config.tokens()?;
    let tls = config.tls()?;
    let metrics = match config.metrics_listen {
        Some(addr) => Some((shared::server::metrics::install()?, addr)),
        None => None,
    };
    let (head_tx, head_rx) = watch::channel(store.head()?);
    let writer::Spawned {
        handle: writer,
        thread: writer_thread,
        failure: mut storage_failure,
    } = writer::spawn(store.clone(), config.max_batch(), head_tx)?;
    let failed = storage_failure.clone();
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopping = stop_rx.clone();

    let api = CommandApi {
        writer,
        store: store.clone(),
        head: head_rx,
        heartbeat_interval: config.heartbeat_interval(),
        shutdown: stop_rx,
    };

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<CommandServiceServer<CommandApi>>()
        .await;
    let reflection = || shared::server::reflection::builder("orders.v1.CommandService");
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let (stop_metrics_tx, stop_metrics) = watch::channel(false);
    if let Some((handle, addr)) = metrics {
        let metrics_listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen for metrics on {addr}: {e}"))?;
        tracing::info!("metrics listening on {}", metrics_listener.local_addr()?);
        let mut stop = stop_metrics.clone();
        tokio::spawn(shared::server::metrics::serve(
            metrics_listener,
            handle,
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
        ));
        let mut head = api.head.clone();
        let mut stop = stop_metrics;
        tokio::spawn(async move {
            loop {
                #[allow(clippy::cast_precision_loss)] // positions stay far below 2^53
                ::metrics::gauge!("orders_log_head_position").set(*head.borrow_and_update() as f64);
                tokio::select! {
                    changed = head.changed() => if changed.is_err() { break },
                    _ = stop.wait_for(|s| *s) => break,
                }
            }
        });
    }

    let incoming = shared::server::connections::limited(
        listener,
        config.max_connections(),
        config.tls_cert.is_some(),
    );
    let signal = async move {
        // A storage failure stops the service like a signal (crash-only: it
        // is restarted on its storage and recovers from what is on disk).
        tokio::select! {
            () = shutdown => {}
            _ = storage_failure.wait_for(Option::is_some) => {}
        }
        let _ = stop_metrics_tx.send(true);
        tracing::info!("stopping: no new connections; finishing in-flight commands");
        health_reporter
            .set_not_serving::<CommandServiceServer<CommandApi>>()
            .await;
        health_reporter
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        // Ends every SubscribeEvents stream so the server can drain.
        let _ = stop_tx.send(true);
    };
    let mut server = tonic::transport::Server::builder()
        .timeout(config.request_timeout())
        .max_concurrent_streams(config.max_concurrent_streams)
        .concurrency_limit_per_connection(config.max_requests_per_connection())
        .load_shed(true);
    if let Some(tls) = tls {
        server = server.tls_config(tls)?;
    }
    let api = routes::CommandRoutes::new(api, config.max_message_bytes());
    let serve = server
        .layer(ObserveLayer::new(RpcMetrics {
            path_prefix: API,
            total: "orders_commands_total",
            duration: "orders_command_duration_seconds",
            label: "command",
            streams: &[("SubscribeEvents", "orders_subscribers")],
        }))
        // tonic's OUT_OF_RANGE for a request over --max-message-bytes -> RESOURCE_EXHAUSTED.
        .layer(shared::grpc_codec::OversizeLayer)
        // The first matching rule wins: SubscribeEvents has its own token.
        .layer(AuthLayer::new(vec![
            Rule {
                path_prefix: routes::SUBSCRIBE_PATH,
                token: tokens.subscribe,
            },
            Rule {
                path_prefix: API,
                token: tokens.command,
            },
        ]))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(api)
        .serve_with_incoming_shutdown(incoming, signal);
    let drained = drain_within(serve, stopping, config.shutdown_grace()).await?;

    if drained == Drained::Cleanly {
        // The server has dropped the API and with it the last writer handle:
        // the writer finishes its queue, flushes and ends.
        tokio::task::spawn_blocking(move || writer_thread.join())
            .await?
            .map_err(|_| "the writer thread panicked")?;
    }
    if let Some(failure) = failed.borrow().clone() {
        return Err(format!("stopped after a storage failure: {failure}").into());
    }
    // Abandoned connections still hold a writer handle; whatever the writer
    // commits from here on is crash-safe like any write, and nothing unsynced
    // was acknowledged.
    store.checkpoint()?;
    tracing::info!("stopped cleanly");
    Ok(())
}

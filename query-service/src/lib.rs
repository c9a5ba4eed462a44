//! query-service: the read side of the order CQRS pair.
//!
//! `main` parses the config and binds; `run` owns everything after that, so tests
//! and tools can start it on an already bound port-0 listener.

pub mod applier;
pub mod config;
pub mod deadline;
pub mod error;
pub mod grpc;
pub mod metrics;
pub mod page_token;
pub mod projection;
pub mod read_models;
pub mod status;
pub mod storage;
pub mod store;
pub mod subscriber;
pub mod upstream;
pub mod watchers;

use std::future::Future;
use std::sync::Arc;

use shared::proto::query_service_server::QueryServiceServer;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::applier::Applier;
use crate::config::Config;
pub use crate::error::RunError;
use crate::grpc::QueryApi;
use crate::status::ProjectionStatus;
use crate::store::Store;
use crate::subscriber::Subscriber;
use crate::watchers::Watchers;
use shared::server::auth::{AuthLayer, Rule};
use shared::server::observe::{ObserveLayer, RpcMetrics};
use shared::server::shutdown::drain_within;

/// Events received but not yet applied; the subscriber waits when it is full.
const EVENT_BUFFER: usize = 4096;
const API: &str = "/orders.v1.QueryService/";

/// Opens the store, starts the subscriber and the applier, and serves until
/// `shutdown` completes; then stops accepting, ends the watch streams, lets the
/// applier finish its batch, flushes and returns.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let tls = config.tls().map_err(RunError::Config)?;
    let upstream = config.upstream().map_err(RunError::Config)?;
    let query_token = shared::server::auth::resolve(
        config.auth_token.as_ref(),
        config.auth_token_file.as_deref(),
        "auth-token",
    )
    .map_err(RunError::Config)?;
    let metrics = match config.metrics_listen {
        Some(addr) => Some((
            shared::server::metrics::install().map_err(RunError::Config)?,
            addr,
        )),
        None => None,
    };
    let (store, target) = Store::open(&config.data_dir, config.cache_bytes(), config.rebuild)?;
    let store = Arc::new(store);
    let served = store.active().checkpoint()?;
    let start = target.checkpoint()?;
    if store.active().number() != target.number() {
        tracing::info!(
            generation = target.number(),
            from_position = start.position,
            served_position = served.position,
            "rebuilding the read models from the event log; answering from the current ones until it catches up"
        );
    }
    tracing::info!(applied_position = served.position, "read models opened");
    let status = Arc::new(ProjectionStatus::new(served));
    let watchers = Arc::new(Watchers::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopping = stop_rx.clone();
    let stop_tx = Arc::new(stop_tx);

    let (events_tx, events_rx) = mpsc::channel(EVENT_BUFFER);
    let applier = Applier {
        store: Arc::clone(&store),
        target,
        status: Arc::clone(&status),
        watchers: Arc::clone(&watchers),
        max_batch: config.max_batch(),
        retired: None,
    };
    let applier = tokio::spawn(applier.run(start, events_rx));
    let subscriber = Subscriber {
        endpoint: config.command_endpoint.clone(),
        upstream,
        status: Arc::clone(&status),
        shutdown: stop_rx.clone(),
    };
    let subscriber = tokio::spawn(subscriber.run(start.position, events_tx));

    let progress = Arc::clone(&status);
    let api = QueryApi {
        store: Arc::clone(&store),
        status,
        watchers,
        max_wait: config.max_wait(),
        shutdown: stop_rx,
    };
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<QueryServiceServer<QueryApi>>()
        .await;
    let reflection = || shared::server::reflection::builder("orders.v1.QueryService");
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let addr = listener.local_addr().map_err(RunError::Address)?;
    let incoming = shared::server::connections::limited(
        listener,
        config.max_connections(),
        config.tls_cert.is_some(),
    );
    let stop = Arc::clone(&stop_tx);
    let signal = async move {
        shutdown.await;
        tracing::info!("stopping: no new connections; ending watch streams");
        health_reporter
            .set_not_serving::<QueryServiceServer<QueryApi>>()
            .await;
        // Ends WatchOrder streams, min_position waits and the subscriber.
        let _ = stop.send(true);
    };
    tracing::info!("listening on {addr}");
    // After the gRPC address line: the harness and operators read that one first.
    if let Some((handle, addr)) = metrics {
        let metrics_listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| RunError::Config(format!("cannot listen for metrics on {addr}: {e}")))?;
        let bound = metrics_listener.local_addr().map_err(RunError::Address)?;
        tracing::info!("metrics listening on {bound}");
        let mut stop = stop_tx.subscribe();
        tokio::spawn(shared::server::metrics::serve(
            metrics_listener,
            handle,
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
        ));
        tokio::spawn(crate::metrics::track_progress(
            Arc::clone(&progress),
            stop_tx.subscribe(),
        ));
    }
    let mut server = tonic::transport::Server::builder()
        .timeout(config.request_timeout())
        .max_concurrent_streams(config.max_concurrent_streams)
        .concurrency_limit_per_connection(config.max_requests_per_connection())
        .load_shed(true);
    if let Some(tls) = tls {
        server = server
            .tls_config(tls)
            .map_err(|e| RunError::Config(format!("TLS configuration: {e}")))?;
    }
    let api = QueryServiceServer::new(api)
        .max_decoding_message_size(config.max_message_bytes())
        .max_encoding_message_size(config.max_message_bytes());
    let serve = server
        .layer(ObserveLayer::new(RpcMetrics {
            path_prefix: API,
            total: "orders_queries_total",
            duration: "orders_query_duration_seconds",
            label: "query",
            streams: &[("WatchOrder", "orders_watchers")],
        }))
        // tonic's OUT_OF_RANGE for a request over --max-message-bytes -> RESOURCE_EXHAUSTED.
        .layer(shared::grpc_codec::OversizeLayer)
        .layer(AuthLayer::new(vec![Rule {
            path_prefix: API,
            token: query_token,
        }]))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(api)
        .serve_with_incoming_shutdown(incoming, signal);
    // A WatchOrder client that stopped reading must not keep the service alive.
    let served = drain_within(serve, stopping, config.shutdown_grace()).await;

    // Also when serving failed rather than being asked to stop.
    let _ = stop_tx.send(true);
    // The subscriber ends on the stop signal and drops its sender; the applier
    // then drains what was received and ends.
    if let Err(e) = subscriber.await {
        tracing::error!(error = %e, "subscriber task failed");
    }
    if let Err(e) = applier.await {
        tracing::error!(error = %e, "applier task failed");
    }
    store.flush().await?;
    served?;
    tracing::info!("stopped cleanly");
    Ok(())
}

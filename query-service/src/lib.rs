//! query-service: the read side of the order CQRS pair.
//!
//! `main` parses the config and binds; `run` owns everything after that, so tests
//! and tools can start it on an already bound port-0 listener.

pub mod admin;
pub mod applier;
pub mod bootstrap;
pub mod config;
pub mod dbfiles;
pub mod deadline;
pub mod error;
pub mod grpc;
pub mod metrics;
pub mod page_token;
pub mod parking;
pub mod projection;
pub mod read_models;
pub mod readiness;
pub mod routes;
pub mod snapshot;
pub mod status;
pub mod storage;
pub mod store;
pub mod subscriber;
pub mod upstream;
pub mod watchers;
pub mod web;

use std::future::Future;
use std::sync::Arc;

use shared::proto::projection_admin_service_server::{
    ProjectionAdminServiceServer, SERVICE_NAME as ADMIN_SERVICE_NAME,
};
use shared::proto::query_service_server::SERVICE_NAME;
use shared::proto::replication_service_server::{
    ReplicationServiceServer, SERVICE_NAME as REPLICATION_SERVICE,
};
use shared::server::observe::RpcMetrics;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::admin::AdminApi;
use crate::applier::{Applier, Failure, EVENT_BUFFER};
use crate::config::Settings;
pub use crate::error::RunError;
use crate::grpc::QueryApi;
use crate::snapshot::ReplicationApi;
use crate::status::ProjectionStatus;
use crate::store::Store;
use crate::subscriber::Subscriber;
use crate::watchers::{WatchLimits, Watchers};

/// Opens the store the bootstrap has just looked into. sled releases its
/// directory lock only when its IO threads let go of the database, a little
/// after the last handle is dropped: the lock is retried for a while.
async fn open_after_bootstrap(
    settings: &Settings,
) -> Result<(Store, Arc<store::Generation>), RunError> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match Store::open(&settings.data_dir, settings.cache_bytes, settings.rebuild) {
            Err(storage::StoreError::Locked(_)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            opened => return Ok(opened?),
        }
    }
}

/// Opens the store, starts the subscriber and the applier, and serves until
/// `shutdown` completes or storage fails; then stops accepting, ends the watch
/// streams, lets the applier finish its batch, flushes and returns (an error
/// after a storage failure: crash-only, the process exits non-zero).
pub async fn run(
    mut settings: Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    // Bound before anything is opened, so a taken port fails the start cleanly.
    let dashboard = match settings.web.clone() {
        Some((addr, command_url)) => {
            Some(web::bind(addr, &listener, &mut settings.server, &command_url).await?)
        }
        None => None,
    };
    let (store, target) = match &settings.bootstrap_from {
        Some(peer) => match bootstrap::run(&settings, peer).await? {
            Some(opened) => opened,
            // The flag was ignored: the directory was opened to see that.
            None => open_after_bootstrap(&settings).await?,
        },
        None => Store::open(&settings.data_dir, settings.cache_bytes, settings.rebuild)?,
    };
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
    let status = Arc::new(ProjectionStatus::new(served, settings.ready_max_lag));
    let watchers = Arc::new(Watchers::new(WatchLimits {
        per_order: settings.max_watchers_per_order,
        total: settings.max_watchers,
    }));
    // Set when the service begins stopping (or serving fails): ends WatchOrder
    // streams, min_position waits and the subscriber.
    let (stop_tx, stop_rx) = watch::channel(false);

    // A storage failure stops the service like a signal (crash-only).
    let (failure, mut storage_failure) = Failure::new();
    let failed = storage_failure.clone();
    tokio::spawn(applier::check_flushes(
        Arc::clone(&store),
        failure.clone(),
        stop_rx.clone(),
    ));

    let (events_tx, events_rx) = mpsc::channel(EVENT_BUFFER);
    // ProjectionAdminService's requests to the applier, and the applier's
    // request to the subscriber to start over (a rebuild).
    let (control_tx, control_rx) = mpsc::channel(16);
    let (resubscribe_tx, resubscribe_rx) = mpsc::channel(1);
    let applier = Applier {
        store: Arc::clone(&store),
        target,
        status: Arc::clone(&status),
        watchers: Arc::clone(&watchers),
        max_batch: settings.max_batch,
        retired: None,
        failure,
        park_after_stops: settings.park_after_stops,
        control: control_rx,
        resubscribe: resubscribe_tx,
        shutdown: stop_rx.clone(),
    };
    let applier = tokio::spawn(applier.run(start, events_rx));
    let subscriber = Subscriber {
        endpoint: settings.command_endpoint.clone(),
        upstream: settings.upstream.clone(),
        status: Arc::clone(&status),
        shutdown: stop_rx.clone(),
        store: Arc::clone(&store),
        accept_new_log: settings.rebuild,
        resubscribe: resubscribe_rx,
    };
    let subscriber = tokio::spawn(subscriber.run(start.position, events_tx));
    if settings.server.metrics_enabled() {
        tokio::spawn(crate::metrics::track_progress(
            Arc::clone(&status),
            stop_rx.clone(),
        ));
    }

    // Readiness follows the projection; serve reports it under the service's name.
    let (ready_tx, ready_rx) = watch::channel(false);
    tokio::spawn(readiness::follow(
        Arc::clone(&status),
        Arc::clone(&store),
        settings.ready_max_lag,
        ready_tx,
        stop_rx.clone(),
    ));

    if let Some((web, endpoints)) = dashboard {
        let mut stopping = stop_rx.clone();
        tokio::spawn(web::serve(web, endpoints, async move {
            let _ = stopping.wait_for(|s| *s).await;
        }));
    }
    let replication = ReplicationServiceServer::new(ReplicationApi {
        store: Arc::clone(&store),
        chunk_bytes: snapshot::chunk_bytes(settings.server.max_message_bytes),
        shutdown: stop_rx.clone(),
    })
    .max_decoding_message_size(settings.server.max_message_bytes)
    .max_encoding_message_size(settings.server.max_message_bytes);
    let api = QueryApi {
        store: Arc::clone(&store),
        status,
        watchers,
        max_wait: settings.max_wait,
        shutdown: stop_rx,
    };
    let admin = ProjectionAdminServiceServer::new(AdminApi {
        control: control_tx,
        store: Arc::clone(&store),
    })
    .max_decoding_message_size(settings.server.max_message_bytes)
    .max_encoding_message_size(settings.server.max_message_bytes);
    let api = shared::server::Api::new(
        SERVICE_NAME,
        tonic::service::Routes::new(routes::QueryRoutes::new(
            api,
            settings.server.max_message_bytes,
        ))
        .add_service(admin)
        .add_service(replication),
        RpcMetrics {
            total: "orders_queries_total",
            duration: "orders_query_duration_seconds",
            label: "query",
            streams: &[("WatchOrder", "orders_watchers")],
        },
    )
    .ready_when(ready_rx)
    .also_serving(ADMIN_SERVICE_NAME)
    .also_serving(REPLICATION_SERVICE);
    let shutdown = async move {
        tokio::select! {
            () = shutdown => {}
            _ = storage_failure.wait_for(Option::is_some) => {}
        }
    };
    // A WatchOrder client that stopped reading must not keep the service alive.
    let served = shared::server::serve(settings.server, api, listener, shutdown, stop_tx).await;

    // The subscriber ends on the stop signal and drops its sender; the applier
    // then drains what was received and ends.
    if let Err(e) = subscriber.await {
        tracing::error!(error = %e, "subscriber task failed");
    }
    if let Err(e) = applier.await {
        tracing::error!(error = %e, "applier task failed");
    }
    if let Some(failure) = failed.borrow().clone() {
        return Err(RunError::StorageFailure(failure));
    }
    store.flush().await?;
    served?;
    tracing::info!("stopped cleanly");
    Ok(())
}

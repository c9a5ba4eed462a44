//! command-service: the write side of the order CQRS pair.
//!
//! `main` parses the config and binds; `run` owns everything after that, so tests
//! and tools can start it on an already bound port-0 listener.

pub mod admin;
pub mod backup_file;
pub mod backup_tool;
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

use shared::proto::command_admin_service_server::{
    CommandAdminServiceServer, SERVICE_NAME as ADMIN_SERVICE_NAME,
};
use shared::proto::command_service_server::SERVICE_NAME;
use shared::server::observe::RpcMetrics;
use shared::server::shutdown::Drained;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::CommandAdmin;
use crate::config::Settings;
use crate::grpc::CommandApi;
use crate::store::Store;
use crate::subscription::SubscriberLimit;

/// Serves until `shutdown` completes (or storage fails), then stops accepting,
/// lets in-flight commands finish, ends the event streams, checkpoints and returns.
pub async fn run(
    settings: Settings,
    store: Store,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // The single writer, and the durable head it publishes after each sync.
    let (head_tx, head_rx) = watch::channel(store.head()?);
    let writer::Spawned {
        handle: writer,
        thread: writer_thread,
        failure: mut storage_failure,
    } = writer::spawn(store.clone(), settings.max_batch, head_tx)?;
    let failed = storage_failure.clone();

    // Set when the service begins stopping: ends every SubscribeEvents stream.
    let (stop_tx, stop_rx) = watch::channel(false);
    if settings.server.metrics_enabled() {
        tokio::spawn(track_head(head_rx.clone(), stop_rx.clone()));
    }
    let admin = CommandAdmin {
        store: store.clone(),
        head: head_rx.clone(),
        shutdown: stop_rx.clone(),
    };
    let api = CommandApi {
        writer,
        store: store.clone(),
        head: head_rx,
        heartbeat_interval: settings.heartbeat_interval,
        shutdown: stop_rx,
        subscriber_buffer_bytes: settings.max_subscriber_buffer_bytes,
    };
    let routes = routes::CommandRoutes::new(
        api,
        settings.server.max_message_bytes,
        SubscriberLimit::new(settings.max_subscribers),
    );
    // CommandAdminService beside it, behind the same layers (its own auth rule).
    let routes =
        tonic::service::Routes::new(routes).add_service(CommandAdminServiceServer::new(admin));
    let api = shared::server::Api::new(
        SERVICE_NAME,
        routes,
        RpcMetrics {
            total: "orders_commands_total",
            duration: "orders_command_duration_seconds",
            label: "command",
            streams: &[("SubscribeEvents", "orders_subscribers")],
        },
    )
    .also_serving(ADMIN_SERVICE_NAME);
    // A storage failure stops the service like a signal (crash-only: it is
    // restarted on its storage and recovers from what is on disk).
    let stop = async move {
        tokio::select! {
            () = shutdown => {}
            _ = storage_failure.wait_for(Option::is_some) => {}
        }
    };
    let drained = shared::server::serve(settings.server, api, listener, stop, stop_tx).await?;

    if drained == Drained::Cleanly {
        // The server has dropped the API and with it the last writer handle:
        // the writer finishes its queue, syncs and ends.
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

/// Keeps `orders_log_head_position` at the published head until the service stops.
async fn track_head(mut head: watch::Receiver<u64>, mut stop: watch::Receiver<bool>) {
    loop {
        #[allow(clippy::cast_precision_loss)] // positions stay far below 2^53
        ::metrics::gauge!("orders_log_head_position").set(*head.borrow_and_update() as f64);
        tokio::select! {
            changed = head.changed() => if changed.is_err() { break },
            _ = stop.wait_for(|s| *s) => break,
        }
    }
}

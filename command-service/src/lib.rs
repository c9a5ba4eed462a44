//! command-service: the write side of the order CQRS pair.
//!
//! `main` parses the config and binds; `run` owns everything after that, so tests
//! and tools can start it on an already bound port-0 listener.

pub mod config;
pub mod error;
pub mod grpc;
pub mod store;
pub mod subscription;
pub mod writer;

use std::future::Future;

use shared::proto::command_service_server::CommandServiceServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::server::TcpIncoming;

use crate::config::Config;
use crate::grpc::CommandApi;
use crate::store::Store;

/// Serves until `shutdown` completes, then stops accepting, lets in-flight
/// commands finish, ends the event streams, flushes and returns.
pub async fn run(
    config: Config,
    store: Store,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (head_tx, head_rx) = watch::channel(store.head()?);
    let (writer, writer_thread) = writer::spawn(store.clone(), config.max_batch(), head_tx)?;
    let (stop_tx, stop_rx) = watch::channel(false);

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
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(shared::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // The descriptor set also holds QueryService: advertise only what is served.
            .with_service_name("orders.v1.CommandService")
            .with_service_name("grpc.health.v1.Health")
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let signal = async move {
        shutdown.await;
        tracing::info!("stopping: no new connections; finishing in-flight commands");
        health_reporter
            .set_not_serving::<CommandServiceServer<CommandApi>>()
            .await;
        // Ends every SubscribeEvents stream so the server can drain.
        let _ = stop_tx.send(true);
    };
    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(CommandServiceServer::new(api))
        .serve_with_incoming_shutdown(incoming, signal)
        .await?;

    // The server has dropped the API and with it the last writer handle: the
    // writer finishes its queue, flushes and ends.
    tokio::task::spawn_blocking(move || writer_thread.join())
        .await?
        .map_err(|_| "the writer thread panicked")?;
    store.flush()?;
    tracing::info!("stopped cleanly");
    Ok(())
}

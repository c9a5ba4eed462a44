//! The server skeleton both services run: health, reflection, the `/metrics`
//! endpoint, the builder with its limits and keepalive, the layers (metrics and
//! spans, over-size mapping, auth), gRPC-Web and CORS for browsers, TLS, the
//! connection limit, and the graceful drain bounded by `--shutdown-grace-ms`. A service brings its routes
//! and its metric names; everything else is the same for both.

use std::future::Future;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::service::Routes;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};
use tonic_health::ServingStatus;

use crate::server::auth::AuthLayer;
use crate::server::observe::{ObserveLayer, RpcMetrics};
use crate::server::settings::ServerSettings;
use crate::server::shutdown::{drain_within, Drained};
use crate::server::web::{CorsOrigins, Http1BodyLayer};

/// What one service brings to [`serve`].
pub struct Api {
    /// The gRPC service, e.g. `orders.v1.CommandService`: reported on health,
    /// advertised by reflection, and observed by the RPC metrics.
    name: &'static str,
    /// The service's routes (more services may be added to them).
    routes: Routes,
    metrics: RpcMetrics,
    health: HealthReporter,
    /// When set, the service's name is reported SERVING only while this says
    /// `true` (readiness); otherwise from the start until stopped.
    ready: Option<watch::Receiver<bool>>,
    /// Further services in `routes`: advertised by reflection, SERVING on
    /// health from the start until stopped.
    also: Vec<&'static str>,
}

impl Api {
    pub fn new(name: &'static str, routes: Routes, metrics: RpcMetrics) -> Self {
        Api {
            name,
            routes,
            metrics,
            health: HealthReporter::new(),
            ready: None,
            also: Vec::new(),
        }
    }

    /// Reports the service's name (what readiness probes ask) SERVING only
    /// while `ready` is `true`, and NOT_SERVING once stopping whatever it says;
    /// `""` (liveness) stays SERVING until the service stops.
    #[must_use]
    pub fn ready_when(mut self, ready: watch::Receiver<bool>) -> Self {
        self.ready = Some(ready);
        self
    }

    /// `name` is served too (its routes already added to the service's):
    /// reflection advertises it, health reports it SERVING until stopped.
    #[must_use]
    pub fn also_serving(mut self, name: &'static str) -> Self {
        self.also.push(name);
        self
    }

    /// The health reporter `serve` answers from, for a service that reports
    /// more than "serving until stopped" (readiness, a failed disk).
    pub fn health(&self) -> HealthReporter {
        self.health.clone()
    }
}

/// Why serving failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot read the bound address: {0}")]
    Address(std::io::Error),
    #[error("cannot listen for metrics on {addr}: {error}")]
    Metrics {
        addr: std::net::SocketAddr,
        error: std::io::Error,
    },
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves `api` on `listener` until `shutdown` completes; then reports
/// NOT_SERVING (under the service's name and `""`), sets `stop` (which the service's streams and tasks watch, and
/// which ends the metrics endpoint), stops accepting and drains for at most the
/// shutdown grace. `stop` is also set when serving fails.
pub async fn serve(
    settings: ServerSettings,
    api: Api,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    stop: watch::Sender<bool>,
) -> Result<Drained, ServeError> {
    let addr = listener.local_addr().map_err(ServeError::Address)?;
    // The first address line a service logs is its gRPC one: harnesses read it.
    tracing::info!("listening on {addr}");
    let served = serve_bound(settings, api, listener, shutdown, &stop).await;
    // Also when serving failed rather than being asked to stop.
    stop.send_replace(true);
    served
}

async fn serve_bound(
    settings: ServerSettings,
    api: Api,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    stop: &watch::Sender<bool>,
) -> Result<Drained, ServeError> {
    if let Some((handle, addr)) = settings.metrics.clone() {
        let metrics = TcpListener::bind(addr)
            .await
            .map_err(|error| ServeError::Metrics { addr, error })?;
        let bound = metrics.local_addr().map_err(ServeError::Address)?;
        tracing::info!("metrics listening on {bound}");
        let mut stopping = stop.subscribe();
        tokio::spawn(crate::server::metrics::serve(metrics, handle, async move {
            let _ = stopping.wait_for(|s| *s).await;
        }));
    }

    let health = api.health;
    let health_service = HealthServer::new(HealthService::from_health_reporter(health.clone()));
    match api.ready {
        None => {
            health
                .set_service_status(api.name, ServingStatus::Serving)
                .await;
        }
        Some(ready) => {
            // Registered before the first request can ask.
            let now = status_of(*ready.borrow());
            health.set_service_status(api.name, now).await;
            tokio::spawn(follow_readiness(
                health.clone(),
                api.name,
                ready,
                stop.subscribe(),
            ));
        }
    }
    for name in &api.also {
        health
            .set_service_status(*name, ServingStatus::Serving)
            .await;
    }
    let also = api.also;
    let reflection = || {
        also.iter()
            .fold(crate::server::reflection::builder(api.name), |b, name| {
                b.with_service_name(*name)
            })
    };
    let routes = api
        .routes
        .add_service(health_service)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?);

    let incoming = crate::server::connections::limited(
        listener,
        settings.max_connections,
        settings.tls.is_some(),
    );
    let name = api.name;
    let also_names = also.clone();
    let signal = {
        let stop = stop.clone();
        async move {
            shutdown.await;
            tracing::info!("stopping: no new connections; finishing in-flight requests");
            health
                .set_service_status(name, ServingStatus::NotServing)
                .await;
            for name in &also_names {
                health
                    .set_service_status(*name, ServingStatus::NotServing)
                    .await;
            }
            health
                .set_service_status("", ServingStatus::NotServing)
                .await;
            // Ends the service's streams (and the metrics endpoint) so the server can drain.
            stop.send_replace(true);
        }
    };
    if settings.cors == CorsOrigins::Any {
        tracing::warn!("--cors-origin *: browser pages of every origin may call the API");
    }
    let mut server = tonic::transport::Server::builder()
        // gRPC-Web from browsers (HTTP/1.1 or HTTP/2); see server/web.rs.
        .accept_http1(true)
        .timeout(settings.request_timeout)
        .max_concurrent_streams(settings.max_concurrent_streams)
        .concurrency_limit_per_connection(settings.max_requests_per_connection)
        .load_shed(true)
        .http2_keepalive_interval(Some(settings.keepalive_interval))
        .http2_keepalive_timeout(Some(settings.keepalive_timeout));
    if let Some(tls) = settings.tls {
        server = server.tls_config(tls)?;
    }
    let serving = server
        // Outermost: answers CORS preflights, then turns gRPC-Web into gRPC so
        // every layer below sees a gRPC request.
        .layer(tower::util::option_layer(settings.cors.layer()))
        .layer(Http1BodyLayer::new(settings.max_message_bytes))
        .layer(tonic_web::GrpcWebLayer::new())
        .layer(also.iter().fold(
            ObserveLayer::new(
                api.name,
                crate::server::reflection::methods(api.name),
                api.metrics,
            ),
            |layer, name| {
                layer.and(
                    name,
                    crate::server::reflection::methods(name),
                    crate::server::observe::ADMIN_METRICS,
                )
            },
        ))
        // tonic's OUT_OF_RANGE for a request over --max-message-bytes -> RESOURCE_EXHAUSTED.
        .layer(crate::grpc_codec::OversizeLayer)
        .layer(AuthLayer::new(&settings.auth))
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, signal);
    let drained = drain_within(serving, stop.subscribe(), settings.shutdown_grace).await?;
    Ok(drained)
}

fn status_of(ready: bool) -> ServingStatus {
    if ready {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    }
}

/// Reports `name` as `ready` says until `stop` is set, then NOT_SERVING (last,
/// so a change seen just before stopping cannot outlive the stop).
async fn follow_readiness(
    health: HealthReporter,
    name: &'static str,
    mut ready: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let now = *ready.borrow_and_update();
        if *stop.borrow() {
            break;
        }
        health.set_service_status(name, status_of(now)).await;
        tokio::select! {
            changed = ready.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    health
        .set_service_status(name, ServingStatus::NotServing)
        .await;
}

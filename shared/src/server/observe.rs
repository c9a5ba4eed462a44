//! One tracing span and the RPC metrics per request, as a tower layer in front of
//! the gRPC routes. The span continues the W3C trace context of the request's
//! `traceparent`/`tracestate` headers (with `--otlp-endpoint`), and the
//! request's trace context is handed to the handler as a request extension,
//! [`TraceContext`](crate::telemetry::TraceContext) (when a valid `traceparent`
//! came or OTLP is on). The metrics: a counter by method and outcome and a
//! latency histogram for unary RPCs of the service's own API, and a gauge of
//! live server streams.
//!
//! Only the methods the service has are label values; any other path under the
//! service's prefix counts as `unknown`, so made-up method names cannot grow
//! the metrics without bound.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use http_body::Frame;
use tonic::body::Body;
use tower::{Layer, Service};
use tracing::Instrument;

/// The label value of every call to a method the service does not have.
pub const UNKNOWN_METHOD: &str = "unknown";

/// The metric names one service reports under.
#[derive(Debug, Clone)]
pub struct RpcMetrics {
    /// Counter by `label` (the method) and `outcome` (the gRPC code).
    pub total: &'static str,
    /// Histogram of handler latency in seconds, by `label`.
    pub duration: &'static str,
    /// Label name carrying the method, e.g. `command` or `query`.
    pub label: &'static str,
    /// Server-streaming methods and the gauge counting their open streams.
    pub streams: &'static [(&'static str, &'static str)],
}

/// The metric names of the further services a binary serves
/// (`Api::also_serving`: `CommandAdminService`, `ProjectionAdminService`,
/// `ReplicationService`); their method names do not overlap.
pub const ADMIN_METRICS: RpcMetrics = RpcMetrics {
    total: "orders_admin_rpcs_total",
    duration: "orders_admin_rpc_duration_seconds",
    label: "rpc",
    streams: &[
        ("Backup", "orders_admin_streams"),
        ("StreamSnapshot", "orders_admin_streams"),
    ],
};

/// What the layer needs per request: the service's path prefix and methods.
#[derive(Debug, Clone)]
struct Spec {
    /// e.g. `/orders.v1.CommandService/`.
    path_prefix: String,
    /// The method names that exist, sorted: the only label values besides `unknown`.
    methods: Vec<String>,
    metrics: RpcMetrics,
}

impl Spec {
    /// The label value of `method`: itself when the service has it.
    fn label(&self, method: &str) -> &str {
        match self.methods.binary_search_by(|m| m.as_str().cmp(method)) {
            Ok(i) => &self.methods[i],
            Err(_) => UNKNOWN_METHOD,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ObserveLayer {
    specs: Arc<Vec<Spec>>,
}

impl ObserveLayer {
    /// Observes the calls to `service` (e.g. `orders.v1.CommandService`), whose
    /// methods are `methods`.
    pub fn new(service: &str, methods: Vec<String>, metrics: RpcMetrics) -> Self {
        ObserveLayer {
            specs: Arc::new(Vec::new()),
        }
        .and(service, methods, metrics)
    }

    /// Observes the calls to `service` too, under its own metric names.
    #[must_use]
    pub fn and(self, service: &str, mut methods: Vec<String>, metrics: RpcMetrics) -> Self {
        methods.sort();
        let mut specs = Arc::unwrap_or_clone(self.specs);
        specs.push(Spec {
            path_prefix: format!("/{service}/"),
            methods,
            metrics,
        });
        ObserveLayer {
            specs: Arc::new(specs),
        }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe {
            inner,
            specs: Arc::clone(&self.specs),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Observe<S> {
    inner: S,
    specs: Arc<Vec<Spec>>,
}

/// The gRPC code of a response whose status is in its headers (errors and
/// trailers-only responses); `OK` otherwise: a unary handler that returned a
/// message has succeeded.
fn outcome(response: &http::Response<Body>) -> &'static str {
    let code = response
        .headers()
        .get("grpc-status")
        .map(|v| tonic::Code::from_bytes(v.as_bytes()))
        .unwrap_or(tonic::Code::Ok);
    code_name(code)
}

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

impl<S> Service<http::Request<Body>> for Observe<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let path = request.uri().path().to_owned();
        let span = tracing::info_span!(
            "rpc",
            rpc = %path,
            otel.name = tracing::field::Empty,
            otel.kind = tracing::field::Empty
        );
        if crate::telemetry::otlp_enabled() {
            span.record("otel.name", path.as_str());
            span.record("otel.kind", "server");
        }
        if let Some(trace) = crate::telemetry::request_context(request.headers(), &span) {
            request.extensions_mut().insert(trace);
        }
        let specs = Arc::clone(&self.specs);
        let started = Instant::now();
        let response = self.inner.call(request);
        Box::pin(
            async move {
                let result = response.await;
                let elapsed = started.elapsed();
                let Ok(response) = result else {
                    tracing::debug!("rpc failed in transport");
                    return result;
                };
                let code = outcome(&response);
                tracing::debug!(
                    code,
                    elapsed_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
                    "rpc answered"
                );
                let Some((spec, method)) = specs.iter().find_map(|spec| {
                    let method = path.strip_prefix(spec.path_prefix.as_str())?;
                    Some((spec, method))
                }) else {
                    return Ok(response);
                };
                let method = spec.label(method);
                let metrics = &spec.metrics;
                if let Some((_, gauge)) = metrics.streams.iter().find(|(m, _)| *m == method) {
                    if code != "OK" {
                        return Ok(response);
                    }
                    // Open until the response body (the stream) is dropped.
                    let live = LiveStream::open(gauge);
                    return Ok(response.map(|body| Body::new(Tracked { body, _live: live })));
                }
                let method = method.to_owned();
                metrics::counter!(metrics.total, metrics.label => method.clone(), "outcome" => code)
                    .increment(1);
                metrics::histogram!(metrics.duration, metrics.label => method)
                    .record(elapsed.as_secs_f64());
                Ok(response)
            }
            .instrument(span),
        )
    }
}

/// One open server stream on a gauge, closed on drop.
struct LiveStream(metrics::Gauge);

impl LiveStream {
    fn open(name: &'static str) -> Self {
        let gauge = metrics::gauge!(name);
        gauge.increment(1.0);
        LiveStream(gauge)
    }
}

impl Drop for LiveStream {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

struct Tracked {
    body: Body,
    _live: LiveStream,
}

impl http_body::Body for Tracked {
    type Data = <Body as http_body::Body>::Data;
    type Error = <Body as http_body::Body>::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_existing_methods_are_label_values() {
        let layer = ObserveLayer::new(
            "pkg.Svc",
            vec!["Watch".to_owned(), "Get".to_owned()],
            RpcMetrics {
                total: "t",
                duration: "d",
                label: "l",
                streams: &[],
            },
        );
        let spec = &layer.specs[0];
        assert_eq!(spec.path_prefix, "/pkg.Svc/");
        assert_eq!(spec.label("Get"), "Get");
        assert_eq!(spec.label("Watch"), "Watch");
        assert_eq!(spec.label("Made-Up-1"), UNKNOWN_METHOD);
        assert_eq!(spec.label(""), UNKNOWN_METHOD);
    }
}

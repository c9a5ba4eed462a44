//! One tracing span and the RPC metrics per request, as a tower layer in front of
//! the gRPC routes: a counter by method and outcome and a latency histogram for
//! unary RPCs of the service's own API, and a gauge of live server streams.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use http_body::Frame;
use tonic::body::Body;
use tower::{Layer, Service};
use tracing::Instrument;

/// The metric names and the RPCs one service reports on.
#[derive(Debug)]
pub struct RpcMetrics {
    /// Path prefix of the service's own API, e.g. `/orders.v1.CommandService/`.
    pub path_prefix: &'static str,
    /// Counter by `label` (the method) and `outcome` (the gRPC code).
    pub total: &'static str,
    /// Histogram of handler latency in seconds, by `label`.
    pub duration: &'static str,
    /// Label name carrying the method, e.g. `command` or `query`.
    pub label: &'static str,
    /// Server-streaming methods and the gauge counting their open streams.
    pub streams: &'static [(&'static str, &'static str)],
}

#[derive(Debug, Clone)]
pub struct ObserveLayer {
    spec: Arc<RpcMetrics>,
}

impl ObserveLayer {
    pub fn new(spec: RpcMetrics) -> Self {
        ObserveLayer {
            spec: Arc::new(spec),
        }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe {
            inner,
            spec: Arc::clone(&self.spec),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Observe<S> {
    inner: S,
    spec: Arc<RpcMetrics>,
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

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let path = request.uri().path().to_owned();
        let span = tracing::info_span!("rpc", rpc = %path);
        let spec = Arc::clone(&self.spec);
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
                let Some(method) = path.strip_prefix(spec.path_prefix) else {
                    return Ok(response);
                };
                if let Some((_, gauge)) = spec.streams.iter().find(|(m, _)| *m == method) {
                    if code != "OK" {
                        return Ok(response);
                    }
                    // Open until the response body (the stream) is dropped.
                    let live = LiveStream::open(gauge);
                    return Ok(response.map(|body| Body::new(Tracked { body, _live: live })));
                }
                let method = method.to_owned();
                metrics::counter!(spec.total, spec.label => method.clone(), "outcome" => code)
                    .increment(1);
                metrics::histogram!(spec.duration, spec.label => method)
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

//! Process plumbing both binaries use: logging and tracing set-up, W3C trace
//! context, and the shutdown signal.
//!
//! Traces leave the process only with `--otlp-endpoint`: then spans of this
//! workspace's crates (the per-request `rpc` span, the writer's `group_commit`,
//! the projection's `apply`, ...) are exported over OTLP/gRPC by a batch span
//! processor (`OTEL_BSP_*` variables tune it). Without it no OpenTelemetry layer
//! is installed and the helpers here are a flag check.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?} (use text or json)")),
        }
    }
}

/// Set once `init` has installed the OTLP exporter.
static OTLP_ON: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported (`--otlp-endpoint`).
#[inline]
pub fn otlp_enabled() -> bool {
    OTLP_ON.load(Ordering::Relaxed)
}

/// The crates whose spans are exported: this workspace's, not the libraries'
/// (h2, hyper, tonic, sled), which also keeps the exporter's own calls out.
const EXPORTED_TARGETS: [&str; 3] = ["shared", "command_service", "query_service"];

/// The installed tracing set-up; [`Telemetry::shutdown`] flushes what is not
/// exported yet.
#[must_use = "call shutdown() at exit so the last spans are exported"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still queued and stops the exporter (a no-op without
    /// `--otlp-endpoint`). Runs off the async workers: the export needs them.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        let done = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        match done {
            Ok(Ok(())) => tracing::debug!("trace exporter flushed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot flush the trace exporter"),
            Err(e) => tracing::warn!(error = %e, "the trace exporter flush task failed"),
        }
    }
}

/// Installs the global tracing subscriber: logs to stderr, and with
/// `otlp_endpoint` (plaintext, e.g. `http://127.0.0.1:4317`) spans exported over OTLP/gRPC
/// under the resource attribute `service.name = service_name`. Must run inside
/// a Tokio runtime when `otlp_endpoint` is set.
///
/// `level` is an `EnvFilter` directive such as `info` or `query_service=debug`;
/// it filters the logs only, not the exported spans (this workspace's, at info).
pub fn init(
    level: &str,
    format: LogFormat,
    otlp_endpoint: Option<&str>,
    service_name: &'static str,
) -> Result<Telemetry, String> {
    let filter =
        EnvFilter::try_new(level).map_err(|e| format!("bad --log-level {level:?}: {e}"))?;
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    }
    .with_filter(filter);
    let provider = otlp_endpoint
        .map(|e| provider(e, service_name))
        .transpose()?;
    let otel = provider.as_ref().map(|provider| {
        let targets = EXPORTED_TARGETS.iter().fold(Targets::new(), |t, target| {
            t.with_target(*target, LevelFilter::INFO)
        });
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(service_name))
            .with_filter(targets)
    });
    tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init()
        .map_err(|e| format!("cannot install the logger: {e}"))?;
    if let Some(endpoint) = otlp_endpoint {
        OTLP_ON.store(true, Ordering::Relaxed);
        tracing::info!(endpoint, "exporting traces over OTLP");
    }
    Ok(Telemetry { provider })
}

/// Logging only, no trace export: `init(level, format, None, ..)`.
pub fn init_logging(level: &str, format: LogFormat) -> Result<(), String> {
    init(level, format, None, "").map(|_| ())
}

/// The OTLP/gRPC exporter behind a batch span processor.
fn provider(endpoint: &str, service_name: &'static str) -> Result<SdkTracerProvider, String> {
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|e| format!("bad --otlp-endpoint {endpoint:?}: {e}"))?;
    // Plaintext only: the exporter is built without a TLS stack of its own.
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(format!(
            "bad --otlp-endpoint {endpoint:?}: use http://HOST:PORT (TLS to the collector \
             is not supported)"
        ));
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| format!("cannot set up the OTLP exporter for {endpoint}: {e}"))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service_name)
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// A W3C trace context as it travels with a request and is stored with the
/// events of a command (`EventMetadata`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`.
    pub traceparent: String,
    /// The vendor entries that came with it; empty when none.
    pub tracestate: String,
}

/// The longest `tracestate` kept (W3C: 32 entries; 512 is what must be propagated).
const MAX_TRACESTATE: usize = 512;

/// Whether `value` is a W3C `traceparent` this service keeps: 55 characters,
/// `version-traceid-parentid-flags` in lowercase hex, version not `ff`, ids not
/// all zero. Longer values of future versions are not kept.
pub fn valid_traceparent(value: &str) -> bool {
    let b = value.as_bytes();
    let hex = |range: std::ops::Range<usize>| {
        b[range]
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
    };
    let nonzero = |range: std::ops::Range<usize>| b[range].iter().any(|&c| c != b'0');
    b.len() == 55
        && b[2] == b'-'
        && b[35] == b'-'
        && b[52] == b'-'
        && hex(0..2)
        && &b[0..2] != b"ff"
        && hex(3..35)
        && nonzero(3..35)
        && hex(36..52)
        && nonzero(36..52)
        && hex(53..55)
}

/// `traceparent`/`tracestate` of an HTTP request, for the propagator.
struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// A stored trace context, for the propagator.
struct Stored<'a>(&'a str, &'a str);

impl Extractor for Stored<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => Some(self.0),
            "tracestate" if !self.1.is_empty() => Some(self.1),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

/// The trace context of a request whose span is `span`, to hand on with it.
///
/// With OTLP on, the request's `traceparent` (and `tracestate`) header becomes
/// the parent of `span`, and the answer is `span`'s own context (a new trace
/// when no header came). With OTLP off, it is the header as received when it
/// is a valid `traceparent`, and `None` otherwise: then this reads one header
/// and allocates nothing.
pub fn request_context(headers: &http::HeaderMap, span: &tracing::Span) -> Option<TraceContext> {
    let header = headers.get("traceparent");
    if otlp_enabled() {
        if header.is_some() {
            let parent = TraceContextPropagator::new().extract(&Headers(headers));
            // Fails only when the span is disabled: then it is not exported either.
            let _ = span.set_parent(parent);
        }
        let context = span.context();
        let own = context.span().span_context().clone();
        if own.is_valid() {
            return Some(TraceContext::of(&own));
        }
    }
    let traceparent = header?.to_str().ok().filter(|v| valid_traceparent(v))?;
    let tracestate = headers
        .get("tracestate")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= MAX_TRACESTATE)
        .unwrap_or("");
    Some(TraceContext {
        traceparent: traceparent.to_owned(),
        tracestate: tracestate.to_owned(),
    })
}

impl TraceContext {
    fn of(span: &SpanContext) -> Self {
        TraceContext {
            traceparent: format!(
                "00-{}-{}-{:02x}",
                span.trace_id(),
                span.span_id(),
                span.trace_flags().to_u8()
            ),
            tracestate: span.trace_state().header(),
        }
    }

    /// The span context it names, when `traceparent` is valid.
    pub fn span_context(traceparent: &str, tracestate: &str) -> Option<SpanContext> {
        let context = TraceContextPropagator::new().extract(&Stored(traceparent, tracestate));
        let span = context.span().span_context().clone();
        span.is_valid().then_some(span)
    }
}

/// Links `span` to each of `contexts` (`(traceparent, tracestate)`), the
/// distinct ones, at most `max`; a no-op with OTLP off. Returns how many links
/// were added.
pub fn link_to<'a>(
    span: &tracing::Span,
    contexts: impl IntoIterator<Item = (&'a str, &'a str)>,
    max: usize,
) -> usize {
    if !otlp_enabled() || span.is_disabled() {
        return 0;
    }
    let mut seen: Vec<&str> = Vec::new();
    for (traceparent, tracestate) in contexts {
        if seen.len() == max {
            break;
        }
        if traceparent.is_empty() || seen.contains(&traceparent) {
            continue;
        }
        if let Some(context) = TraceContext::span_context(traceparent, tracestate) {
            seen.push(traceparent);
            span.add_link(context);
        }
    }
    seen.len()
}

/// Completes on the first SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received, shutting down"),
        () = terminate => tracing::info!("SIGTERM received, shutting down"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn only_well_formed_traceparents_are_valid() {
        assert!(valid_traceparent(VALID));
        assert!(valid_traceparent(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
        ));
        for bad in [
            "",
            "garbage",
            // Upper case, a zero trace id, a zero span id, version ff.
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // Wrong separators, a longer value.
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
        ] {
            assert!(!valid_traceparent(bad), "{bad}");
        }
    }

    #[test]
    fn without_otlp_the_request_context_is_the_valid_header_as_received() {
        assert!(!otlp_enabled());
        let span = tracing::Span::none();
        let mut headers = http::HeaderMap::new();
        assert_eq!(request_context(&headers, &span), None);
        headers.insert("traceparent", VALID.parse().unwrap());
        assert_eq!(
            request_context(&headers, &span),
            Some(TraceContext {
                traceparent: VALID.into(),
                tracestate: String::new(),
            })
        );
        headers.insert("tracestate", "vendor=abc".parse().unwrap());
        assert_eq!(
            request_context(&headers, &span).unwrap().tracestate,
            "vendor=abc"
        );
        headers.insert("tracestate", "x".repeat(513).parse().unwrap());
        assert_eq!(request_context(&headers, &span).unwrap().tracestate, "");
        headers.insert("traceparent", "00-nope".parse().unwrap());
        assert_eq!(request_context(&headers, &span), None);
    }

    #[test]
    fn a_stored_context_names_its_span_and_links_nothing_without_otlp() {
        let context = TraceContext::span_context(VALID, "vendor=abc").unwrap();
        assert_eq!(
            context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(context.span_id().to_string(), "00f067aa0ba902b7");
        assert_eq!(context.trace_state().header(), "vendor=abc");
        assert!(context.is_sampled() && context.is_remote());
        assert_eq!(
            TraceContext::of(&context),
            TraceContext {
                traceparent: VALID.into(),
                tracestate: "vendor=abc".into(),
            }
        );
        assert!(TraceContext::span_context("00-nope", "").is_none());
        let span = tracing::info_span!("test");
        assert_eq!(link_to(&span, [(VALID, "")], 32), 0);
    }

    #[test]
    fn a_bad_otlp_endpoint_is_refused_naming_the_flag() {
        for bad in [
            "localhost:4317",
            "ftp://collector:4317",
            "http://",
            "https://collector:4317",
        ] {
            let error = provider(bad, "test").unwrap_err();
            assert!(error.contains("--otlp-endpoint"), "{bad}: {error}");
        }
    }
}

//! OpenTelemetry across the command -> event -> projection hop, through the real
//! binaries: an OTLP collector started here (a real gRPC `TraceService`)
//! receives, for one `CreateOrder` sent with a `traceparent`, command-service's
//! span of that RPC in the caller's trace, and query-service's `apply` span
//! linked to it; the trace context is stored with the order's event.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use e2e::commands::create_request;
use e2e::{
    command_args, eventually, pb, query_args, read_log, terminate_within, CommandClient,
    QueryClient, Service,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use tempfile::TempDir;
use tokio_stream::wrappers::TcpListenerStream;

/// The caller's trace and span, as a client would send them.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN_ID: &str = "00f067aa0ba902b7";

fn traceparent() -> String {
    format!("00-{TRACE_ID}-{CALLER_SPAN_ID}-01")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One exported span with the `service.name` of the process that sent it.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    span: Span,
}

/// Keeps every span exported to it.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Received>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    Value::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    spans.push(Received {
                        service: service.clone(),
                        span,
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    /// Serves the collector on 127.0.0.1:0; gives its endpoint.
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = TraceServiceServer::new(self.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
                .expect("the collector serves");
        });
        format!("http://{addr}")
    }

    /// The first span `find` picks, waiting up to 30 s for it to be exported.
    async fn span(&self, what: &str, find: impl Fn(&Received) -> bool) -> Span {
        eventually(what, Duration::from_secs(30), || {
            let found = self.spans.lock().unwrap().iter().find(|r| find(r)).cloned();
            async move { found.map(|r| r.span) }
        })
        .await
    }

    fn dump(&self) -> String {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .map(|r| {
                format!(
                    "{} {} trace={} span={} parent={} links={:?}",
                    r.service,
                    r.span.name,
                    hex(&r.span.trace_id),
                    hex(&r.span.span_id),
                    hex(&r.span.parent_span_id),
                    r.span
                        .links
                        .iter()
                        .map(|l| format!("{}/{}", hex(&l.trace_id), hex(&l.span_id)))
                        .collect::<Vec<_>>()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn traced<T>(message: T, traceparent: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    request
        .metadata_mut()
        .insert("tracestate", "vendor=abc".parse().unwrap());
    request
}

/// Short batches, so spans reach the collector within a test's patience.
const BATCH_ENV: [(&str, &str); 1] = [("OTEL_BSP_SCHEDULE_DELAY", "100")];

fn with_otlp(mut args: Vec<String>, endpoint: &str) -> Vec<String> {
    args.extend(["--otlp-endpoint".to_owned(), endpoint.to_owned()]);
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_create_order_is_one_trace_from_the_command_to_the_projection() {
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let command_dir = TempDir::new().unwrap();
    let query_dir = TempDir::new().unwrap();
    let command = Service::spawn(
        "command-service",
        &with_otlp(command_args(command_dir.path(), "127.0.0.1:0"), &endpoint),
        &BATCH_ENV,
    );
    let query = Service::spawn(
        "query-service",
        &with_otlp(
            query_args(query_dir.path(), "127.0.0.1:0", &command.endpoint()),
            &endpoint,
        ),
        &BATCH_ENV,
    );
    let mut commands = CommandClient::new(command.channel().await);
    let ack = commands
        .create_order(traced(create_request("traced-1"), &traceparent()))
        .await
        .expect("create")
        .into_inner();

    // command-service: the RPC's span, a child of the caller's span.
    let rpc = collector
        .span("command-service's CreateOrder span", |r| {
            r.service == "command-service" && r.span.name == "/orders.v1.CommandService/CreateOrder"
        })
        .await;
    assert_eq!(hex(&rpc.trace_id), TRACE_ID, "{}", collector.dump());
    assert_eq!(hex(&rpc.parent_span_id), CALLER_SPAN_ID);
    let rpc_span_id = hex(&rpc.span_id);

    // The event carries the RPC span's context (and the caller's tracestate).
    let log = read_log(&mut commands, 0).await;
    assert_eq!(log.len(), 1);
    let metadata = log[0].metadata.clone().expect("the event's trace context");
    assert_eq!(
        metadata.traceparent,
        format!("00-{TRACE_ID}-{rpc_span_id}-01")
    );
    assert_eq!(metadata.tracestate, "vendor=abc");

    // command-service: the group commit that wrote it links to the RPC.
    let commit = collector
        .span("command-service's group_commit span", |r| {
            r.service == "command-service"
                && r.span.name == "group_commit"
                && r.span.links.iter().any(|l| hex(&l.trace_id) == TRACE_ID)
        })
        .await;
    assert!(commit.links.iter().any(|l| hex(&l.span_id) == rpc_span_id));

    // query-service: the batch that applied the event links to the RPC's span.
    let apply = collector
        .span("query-service's apply span linked to the trace", |r| {
            r.service == "query-service"
                && r.span.name == "apply"
                && r.span.links.iter().any(|l| hex(&l.trace_id) == TRACE_ID)
        })
        .await;
    let link = apply
        .links
        .iter()
        .find(|l| hex(&l.trace_id) == TRACE_ID)
        .unwrap();
    assert_eq!(hex(&link.span_id), rpc_span_id, "{}", collector.dump());
    assert_ne!(
        hex(&apply.trace_id),
        TRACE_ID,
        "a batch is a trace of its own"
    );

    // query-service: a read-your-writes wait in the caller's next trace.
    let next_trace = "0af7651916cd43dd8448eb211c80319c";
    let mut queries = QueryClient::new(query.channel().await);
    queries
        .get_order(traced(
            pb::GetOrderRequest {
                order_id: "traced-1".into(),
                min_position: ack.position,
            },
            &format!("00-{next_trace}-b7ad6b7169203331-01"),
        ))
        .await
        .expect("get order");
    let wait = collector
        .span("query-service's min_position_wait span", |r| {
            r.service == "query-service" && r.span.name == "min_position_wait"
        })
        .await;
    assert_eq!(hex(&wait.trace_id), next_trace, "{}", collector.dump());

    // query-service: a WatchOrder stream is a span that ends with the stream.
    let watch_trace = "5b8aa5a2d2c872e8321cf37308d69df2";
    let mut stream = queries
        .watch_order(traced(
            pb::WatchOrderRequest {
                order_id: "traced-1".into(),
            },
            &format!("00-{watch_trace}-051581bf3cb55c13-01"),
        ))
        .await
        .expect("watch order")
        .into_inner();
    stream.message().await.expect("the current view").unwrap();
    drop(stream);
    let watch = collector
        .span("query-service's watch_order span", |r| {
            r.service == "query-service" && r.span.name == "watch_order"
        })
        .await;
    assert_eq!(hex(&watch.trace_id), watch_trace, "{}", collector.dump());
    drop(query);
    drop(command);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_otlp_a_valid_traceparent_is_stored_as_received_and_nothing_else_is() {
    let dir = TempDir::new().unwrap();
    let command = Service::spawn(
        "command-service",
        &command_args(dir.path(), "127.0.0.1:0"),
        &[],
    );
    let mut commands = CommandClient::new(command.channel().await);
    commands
        .create_order(traced(create_request("with-trace"), &traceparent()))
        .await
        .expect("create with a traceparent");
    commands
        .create_order(create_request("without-trace"))
        .await
        .expect("create without one");
    commands
        .create_order(traced(
            create_request("bad-trace"),
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        ))
        .await
        .expect("an invalid traceparent is ignored, not refused");
    let log = read_log(&mut commands, 0).await;
    let metadata: Vec<_> = log
        .iter()
        .map(|e| (e.order_id.as_str(), e.metadata.clone()))
        .collect();
    assert_eq!(
        metadata,
        vec![
            (
                "with-trace",
                Some(pb::EventMetadata {
                    traceparent: traceparent(),
                    tracestate: "vendor=abc".into(),
                })
            ),
            ("without-trace", None),
            ("bad-trace", None),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_still_queued_are_exported_at_shutdown() {
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let dir = TempDir::new().unwrap();
    // A batch delay far beyond the test: only the shutdown flush exports.
    let command = Service::spawn(
        "command-service",
        &with_otlp(command_args(dir.path(), "127.0.0.1:0"), &endpoint),
        &[("OTEL_BSP_SCHEDULE_DELAY", "600000")],
    );
    let mut commands = CommandClient::new(command.channel().await);
    commands
        .create_order(traced(create_request("flushed-1"), &traceparent()))
        .await
        .expect("create");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        collector.spans.lock().unwrap().is_empty(),
        "nothing is exported before the batch delay or shutdown: {}",
        collector.dump()
    );
    let status = terminate_within(command, Duration::from_secs(20)).await;
    assert!(status.success(), "{status:?}");
    let rpc = collector
        .span("the CreateOrder span, flushed at shutdown", |r| {
            r.span.name == "/orders.v1.CommandService/CreateOrder"
        })
        .await;
    assert_eq!(hex(&rpc.trace_id), TRACE_ID);
}

//! gRPC-Web through the real binaries, as a browser sends it: HTTP/1.1 POSTs
//! with `application/grpc-web+proto` bodies framed by hand (flag byte, 4-byte
//! length, protobuf) on the gRPC port, the status read from the trailer frame
//! (flag 0x80) or, for a trailers-only answer, the headers. Unary commands and
//! queries, both server streams, CORS preflights for allowed and other
//! origins, and bearer tokens.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use e2e::auth::{COMMAND_TOKEN, QUERY_TOKEN};
use e2e::commands::{add, create_request};
use e2e::{command_args, item, pb, query_args, Service};
use http::{HeaderMap, Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use prost::Message;
use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio_stream::wrappers::ReceiverStream;

const ALLOWED: &str = "http://127.0.0.1:8080";
const OTHER: &str = "http://evil.example";
/// How long one gRPC-Web exchange (or one stream message) may take.
const PATIENCE: Duration = Duration::from_secs(20);

/// One frame of a gRPC-Web response body.
#[derive(Debug)]
enum Frame {
    Message(Bytes),
    /// The trailer frame, parsed (`name: value` lines, names lowercase).
    Trailers(Vec<(String, String)>),
}

/// A gRPC-Web response being read frame by frame (so a stream's messages are
/// seen as they come).
struct WebResponse {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    body: Incoming,
    buf: BytesMut,
    trailers: Option<Vec<(String, String)>>,
}

impl WebResponse {
    fn new(response: http::Response<Incoming>) -> Self {
        let (parts, body) = response.into_parts();
        WebResponse {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body,
            buf: BytesMut::new(),
            trailers: None,
        }
    }

    /// The next whole frame, or `None` at the end of the body.
    async fn next_frame(&mut self) -> Option<Frame> {
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes(self.buf[1..5].try_into().unwrap()) as usize;
                if self.buf.len() >= 5 + len {
                    let flag = self.buf[0];
                    self.buf.advance(5);
                    let payload = self.buf.split_to(len).freeze();
                    return Some(if flag & 0x80 != 0 {
                        Frame::Trailers(parse_trailers(&payload))
                    } else {
                        assert_eq!(flag, 0, "an uncompressed message frame");
                        Frame::Message(payload)
                    });
                }
            }
            let frame = tokio::time::timeout(PATIENCE, self.body.frame())
                .await
                .expect("the next body frame in time");
            match frame {
                None => {
                    assert!(self.buf.is_empty(), "a truncated frame: {:?}", self.buf);
                    return None;
                }
                Some(frame) => {
                    let frame = frame.expect("read the response body");
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    /// The next message of the stream, decoded; `None` once the trailers came.
    async fn next_message<M: Message + Default>(&mut self) -> Option<M> {
        match self.next_frame().await? {
            Frame::Message(bytes) => Some(M::decode(bytes).expect("decode a message")),
            Frame::Trailers(trailers) => {
                self.trailers = Some(trailers);
                None
            }
        }
    }

    /// Reads to the end: the messages, then the gRPC status code and message,
    /// from the trailer frame or (trailers-only) the headers.
    async fn finish<M: Message + Default>(mut self) -> (Vec<M>, i32, String) {
        let mut messages = Vec::new();
        while let Some(m) = self.next_message().await {
            messages.push(m);
        }
        if let Some(frame) = self.next_frame().await {
            panic!("a frame after the trailers: {frame:?}");
        }
        let (code, message) = self.grpc_status();
        (messages, code, message)
    }

    fn grpc_status(&self) -> (i32, String) {
        let from_trailers = self.trailers.as_ref().and_then(|t| {
            let get = |name: &str| t.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
            Some((get("grpc-status")?, get("grpc-message").unwrap_or_default()))
        });
        let from_headers = || {
            let get = |name: &str| {
                self.headers
                    .get(name)
                    .map(|v| v.to_str().unwrap().to_owned())
            };
            Some((get("grpc-status")?, get("grpc-message").unwrap_or_default()))
        };
        let (code, message) = from_trailers
            .or_else(from_headers)
            .unwrap_or_else(|| panic!("no grpc-status in trailers or headers: {:?}", self.headers));
        (code.parse().expect("a numeric grpc-status"), message)
    }
}

fn parse_trailers(payload: &[u8]) -> Vec<(String, String)> {
    std::str::from_utf8(payload)
        .expect("ASCII trailers")
        .split("\r\n")
        .filter(|line| !line.is_empty())
        .map(|line| {
            let (name, value) = line.split_once(':').expect("name: value");
            (name.trim().to_ascii_lowercase(), value.trim().to_owned())
        })
        .collect()
}

/// A length-prefixed gRPC-Web message frame.
fn framed(message: &impl Message) -> Bytes {
    let body = message.encode_to_vec();
    let mut out = Vec::with_capacity(5 + body.len());
    out.push(0);
    out.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
    out.extend_from_slice(&body);
    out.into()
}

/// Sends `request` on a fresh HTTP/1.1 connection to `addr`.
async fn send(addr: SocketAddr, request: Request<Full<Bytes>>) -> WebResponse {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(connection);
    let response = tokio::time::timeout(PATIENCE, sender.send_request(request))
        .await
        .expect("a response in time")
        .expect("an HTTP response");
    WebResponse::new(response)
}

/// A gRPC-Web call of `path` (`/orders.v1.CommandService/CreateOrder`) with
/// `message` and extra `headers`, as grpc-web / connect-web send it.
async fn call(
    addr: SocketAddr,
    path: &str,
    message: &impl Message,
    headers: &[(&str, &str)],
) -> WebResponse {
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header("host", addr.to_string())
        .header("content-type", "application/grpc-web+proto")
        .header("accept", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .header("x-user-agent", "grpc-web-e2e/1")
        .header("grpc-timeout", "15S");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = send(addr, request.body(Full::new(framed(message))).unwrap()).await;
    assert_eq!(response.version, Version::HTTP_11, "answered over HTTP/1.1");
    assert_eq!(response.status, StatusCode::OK, "{:?}", response.headers);
    assert_eq!(
        response.headers["content-type"], "application/grpc-web+proto",
        "a gRPC-Web answer"
    );
    response
}

/// A unary gRPC-Web call: the single answer, or the status code and message.
async fn unary<M: Message + Default>(
    addr: SocketAddr,
    path: &str,
    message: &impl Message,
    headers: &[(&str, &str)],
) -> Result<M, (i32, String)> {
    let (mut messages, code, text) = call(addr, path, message, headers).await.finish().await;
    if code != 0 {
        assert!(messages.is_empty(), "no message with an error");
        return Err((code, text));
    }
    assert_eq!(messages.len(), 1, "one answer to a unary call");
    Ok(messages.remove(0))
}

/// A CORS preflight for a gRPC-Web POST to `path` from `origin`.
async fn preflight(addr: SocketAddr, path: &str, origin: &str) -> (StatusCode, HeaderMap) {
    let request = Request::builder()
        .method(Method::OPTIONS)
        .uri(path)
        .header("host", addr.to_string())
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type,x-grpc-web,x-user-agent,grpc-timeout,traceparent",
        )
        .body(Full::new(Bytes::new()))
        .unwrap();
    let mut response = send(addr, request).await;
    // Drain the (empty) body.
    while response.next_frame().await.is_some() {}
    (response.status, response.headers)
}

fn header_list(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| v.to_str().unwrap().split(','))
        .map(|v| v.trim().to_ascii_lowercase())
        .collect()
}

const CREATE: &str = "/orders.v1.CommandService/CreateOrder";
const ADD_ITEM: &str = "/orders.v1.CommandService/AddItem";
const SUBSCRIBE: &str = "/orders.v1.CommandService/SubscribeEvents";
const GET_ORDER: &str = "/orders.v1.QueryService/GetOrder";
const WATCH_ORDER: &str = "/orders.v1.QueryService/WatchOrder";

fn with(args: Vec<String>, more: &[&str]) -> Vec<String> {
    args.into_iter()
        .chain(more.iter().map(|a| (*a).to_owned()))
        .collect()
}

struct Pair {
    _dirs: (TempDir, TempDir),
    command: Service,
    query: Service,
}

fn start_pair(command_extra: &[&str], query_extra: &[&str]) -> Pair {
    let dirs = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let command = Service::spawn(
        "command-service",
        &with(command_args(dirs.0.path(), "127.0.0.1:0"), command_extra),
        &[],
    );
    let query = Service::spawn(
        "query-service",
        &with(
            query_args(dirs.1.path(), "127.0.0.1:0", &command.endpoint()),
            query_extra,
        ),
        &[],
    );
    Pair {
        _dirs: dirs,
        command,
        query,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commands_and_queries_answer_grpc_web_over_http1() {
    let pair = start_pair(&[], &[]);
    let created: pb::CreateOrderResponse =
        unary(pair.command.addr, CREATE, &create_request("web-1"), &[])
            .await
            .expect("CreateOrder over gRPC-Web");
    assert_eq!((created.order_id.as_str(), created.version), ("web-1", 1));
    assert!(created.position >= 1, "{created:?}");

    // A refused command keeps its code and message (trailers-only answer).
    let refused = unary::<pb::AddItemResponse>(
        pair.command.addr,
        ADD_ITEM,
        &add("no-such-order", item("sku-9", 1, 100)),
        &[],
    )
    .await
    .unwrap_err();
    assert_eq!(refused.0, tonic::Code::NotFound as i32, "{refused:?}");
    // Bad input: INVALID_ARGUMENT naming the field.
    let invalid = unary::<pb::AddItemResponse>(
        pair.command.addr,
        ADD_ITEM,
        &add("web-1", item("sku-9", 0, 100)),
        &[],
    )
    .await
    .unwrap_err();
    assert_eq!(
        invalid.0,
        tonic::Code::InvalidArgument as i32,
        "{invalid:?}"
    );
    assert!(invalid.1.contains("quantity"), "{invalid:?}");

    // Read-your-writes on the query side, over gRPC-Web too.
    let got: pb::GetOrderResponse = unary(
        pair.query.addr,
        GET_ORDER,
        &pb::GetOrderRequest {
            order_id: "web-1".to_owned(),
            min_position: created.position,
        },
        &[],
    )
    .await
    .expect("GetOrder over gRPC-Web");
    let view = got.order.expect("the order");
    assert_eq!(
        (
            view.order_id.as_str(),
            view.total_cents,
            view.item_count,
            view.currency.as_str()
        ),
        ("web-1", 300, 2, "EUR")
    );

    // Plain gRPC (HTTP/2) still works on the same port.
    let mut client = e2e::command_client(&pair.command).await;
    let ack = client
        .create_order(create_request("h2-1"))
        .await
        .expect("CreateOrder over gRPC")
        .into_inner();
    assert_eq!(ack.position, created.position + 1);

    // A request that is neither gRPC-Web nor HTTP/2 gRPC is refused by HTTP status.
    let plain = Request::builder()
        .method(Method::POST)
        .uri(CREATE)
        .header("host", pair.command.addr.to_string())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let response = send(pair.command.addr, plain).await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_streams_arrive_message_by_message_over_grpc_web() {
    let pair = start_pair(&[], &[]);
    let created: pb::CreateOrderResponse =
        unary(pair.command.addr, CREATE, &create_request("web-s"), &[])
            .await
            .expect("CreateOrder");

    // SubscribeEvents (the pre-encoded route): the log identity header, the
    // event, then a heartbeat at the head.
    let mut events = call(
        pair.command.addr,
        SUBSCRIBE,
        &pb::SubscribeEventsRequest::default(),
        &[],
    )
    .await;
    let log_id = events
        .headers
        .get(shared::LOG_ID_HEADER)
        .expect("the orders-log-id header over gRPC-Web")
        .to_str()
        .unwrap()
        .to_owned();
    assert!(!log_id.is_empty());
    let first: pb::SubscribeEventsResponse = events.next_message().await.expect("an event");
    match first.kind {
        Some(pb::subscribe_events_response::Kind::Event(event)) => {
            assert_eq!((event.position, event.order_id.as_str()), (1, "web-s"));
        }
        other => panic!("expected the first event, got {other:?}"),
    }
    let second: pb::SubscribeEventsResponse = events.next_message().await.expect("a heartbeat");
    match second.kind {
        Some(pb::subscribe_events_response::Kind::Heartbeat(beat)) => {
            assert_eq!(beat.head_position, created.position);
            assert_eq!(beat.log_id, log_id);
        }
        other => panic!("expected the caught-up heartbeat, got {other:?}"),
    }

    // WatchOrder: the current view, then the next version once a command lands.
    let mut watch = call(
        pair.query.addr,
        WATCH_ORDER,
        &pb::WatchOrderRequest {
            order_id: "web-s".to_owned(),
        },
        &[],
    )
    .await;
    let now: pb::WatchOrderResponse = watch.next_message().await.expect("the current view");
    assert_eq!(now.order.as_ref().map(|o| o.version), Some(1), "{now:?}");
    let added: pb::AddItemResponse = unary(
        pair.command.addr,
        ADD_ITEM,
        &add("web-s", item("sku-2", 3, 50)),
        &[],
    )
    .await
    .expect("AddItem");
    let next: pb::WatchOrderResponse = watch.next_message().await.expect("the next view");
    let view = next.order.expect("a view");
    assert_eq!((view.version, view.item_count), (added.version, 5));

    // The subscription, still open, sees that event as well.
    let third: pb::SubscribeEventsResponse = events.next_message().await.expect("the next event");
    match third.kind {
        Some(pb::subscribe_events_response::Kind::Event(event)) => {
            assert_eq!(event.position, added.position);
        }
        other => panic!("expected the AddItem event, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cors_preflights_are_answered_for_configured_origins_only() {
    let dirs = (TempDir::new().unwrap(), TempDir::new().unwrap());
    // command-service by flag; query-service by environment, comma-separated.
    let command = Service::spawn(
        "command-service",
        &with(
            command_args(dirs.0.path(), "127.0.0.1:0"),
            &["--cors-origin", ALLOWED],
        ),
        &[],
    );
    let query = Service::spawn(
        "query-service",
        &query_args(dirs.1.path(), "127.0.0.1:0", &command.endpoint()),
        &[(
            "QUERY_CORS_ORIGIN",
            "https://dash.example,http://127.0.0.1:8080",
        )],
    );

    for (svc, path) in [(&command, CREATE), (&query, GET_ORDER)] {
        let (status, headers) = preflight(svc.addr, path, ALLOWED).await;
        assert!(status.is_success(), "{path}: {status} {headers:?}");
        assert_eq!(
            headers
                .get("access-control-allow-origin")
                .map(|v| v.to_str().unwrap()),
            Some(ALLOWED),
            "{path}: {headers:?}"
        );
        let allowed = header_list(&headers, "access-control-allow-headers");
        for needed in [
            "authorization",
            "content-type",
            "x-grpc-web",
            "x-user-agent",
            "grpc-timeout",
            "traceparent",
        ] {
            assert!(allowed.iter().any(|h| h == needed), "{needed}: {allowed:?}");
        }
        assert!(header_list(&headers, "access-control-allow-methods").contains(&"post".to_owned()));
        assert!(headers.get("access-control-allow-credentials").is_none());

        let (_, refused) = preflight(svc.addr, path, OTHER).await;
        assert!(
            refused.get("access-control-allow-origin").is_none(),
            "{path}: another origin must not be allowed: {refused:?}"
        );
    }

    // The real request from the allowed origin: its answer may be read and
    // exposes the status and log-id headers; from another origin it carries no
    // allow-origin (the browser hides it).
    let response = call(
        command.addr,
        CREATE,
        &create_request("cors-1"),
        &[("origin", ALLOWED)],
    )
    .await;
    assert_eq!(response.headers["access-control-allow-origin"], ALLOWED);
    let exposed = header_list(&response.headers, "access-control-expose-headers");
    for needed in [
        "grpc-status",
        "grpc-message",
        "grpc-status-details-bin",
        "orders-log-id",
    ] {
        assert!(exposed.iter().any(|h| h == needed), "{needed}: {exposed:?}");
    }
    let (_, code, _) = response.finish::<pb::CreateOrderResponse>().await;
    assert_eq!(code, 0);
    let other = call(
        query.addr,
        GET_ORDER,
        &pb::GetOrderRequest {
            order_id: "cors-1".to_owned(),
            min_position: 1,
        },
        &[("origin", OTHER)],
    )
    .await;
    assert!(other.headers.get("access-control-allow-origin").is_none());

    // By default no origin is allowed: no CORS headers at all.
    let plain = start_pair(&[], &[]);
    for (svc, path) in [(&plain.command, CREATE), (&plain.query, GET_ORDER)] {
        let (_, headers) = preflight(svc.addr, path, ALLOWED).await;
        assert!(
            headers.get("access-control-allow-origin").is_none(),
            "{path}: {headers:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bearer_tokens_guard_grpc_web_calls_like_grpc_ones() {
    // Without --subscribe-token of its own, command-service's SubscribeEvents
    // takes the command token, which query-service presents.
    let pair = start_pair(
        &["--auth-token", COMMAND_TOKEN],
        &[
            "--auth-token",
            QUERY_TOKEN,
            "--subscribe-token",
            COMMAND_TOKEN,
        ],
    );
    let request = create_request("auth-1");
    let unauthenticated = tonic::Code::Unauthenticated as i32;
    for (case, headers) in [
        ("no token", vec![]),
        (
            "a wrong token",
            vec![("authorization", "Bearer not-the-token")],
        ),
    ] {
        let refused =
            unary::<pb::CreateOrderResponse>(pair.command.addr, CREATE, &request, &headers)
                .await
                .unwrap_err();
        assert_eq!(refused.0, unauthenticated, "{case}: {refused:?}");
    }
    let command_bearer = format!("Bearer {COMMAND_TOKEN}");
    let created: pb::CreateOrderResponse = unary(
        pair.command.addr,
        CREATE,
        &request,
        &[("authorization", &command_bearer)],
    )
    .await
    .expect("CreateOrder with the token");
    assert_eq!(created.version, 1);

    let get = pb::GetOrderRequest {
        order_id: "auth-1".to_owned(),
        min_position: created.position,
    };
    let refused = unary::<pb::GetOrderResponse>(pair.query.addr, GET_ORDER, &get, &[])
        .await
        .unwrap_err();
    assert_eq!(refused.0, unauthenticated, "{refused:?}");
    // The command token is not the query token.
    let refused = unary::<pb::GetOrderResponse>(
        pair.query.addr,
        GET_ORDER,
        &get,
        &[("authorization", &command_bearer)],
    )
    .await
    .unwrap_err();
    assert_eq!(refused.0, unauthenticated, "{refused:?}");
    let query_bearer = format!("Bearer {QUERY_TOKEN}");
    let got: pb::GetOrderResponse = unary(
        pair.query.addr,
        GET_ORDER,
        &get,
        &[("authorization", &query_bearer)],
    )
    .await
    .expect("GetOrder with the token");
    assert_eq!(got.order.map(|o| o.version), Some(1));
}

/// A request body fed through a channel.
type SlowBody = StreamBody<ReceiverStream<Result<hyper::body::Frame<Bytes>, Infallible>>>;

/// A gRPC-Web request whose body is sent `delay` after its headers, as a
/// client that writes them separately does.
fn slow_body_request(
    addr: SocketAddr,
    path: &str,
    message: &impl Message,
    token: Option<&str>,
    delay: Duration,
) -> Request<SlowBody> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let body = framed(message);
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let _ = tx.send(Ok(hyper::body::Frame::data(body))).await;
    });
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header("host", addr.to_string())
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    request
        .body(StreamBody::new(ReceiverStream::new(rx)))
        .unwrap()
}

/// Over HTTP/1.1 a refusal that needs no body (auth) is still given only
/// once the body is read: the client is not cut off while sending it, and the
/// connection stays usable for the next request. A body too large to be one
/// message is refused with RESOURCE_EXHAUSTED.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refusal_over_http1_waits_for_the_body_and_keeps_the_connection() {
    let dir = TempDir::new().unwrap();
    let command = Service::spawn(
        "command-service",
        &with(
            command_args(dir.path(), "127.0.0.1:0"),
            &["--auth-token", COMMAND_TOKEN, "--max-message-bytes", "1024"],
        ),
        &[],
    );
    let stream = TcpStream::connect(command.addr).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(connection);
    let delay = Duration::from_millis(300);
    let started = std::time::Instant::now();
    let refused = sender
        .send_request(slow_body_request(
            command.addr,
            CREATE,
            &create_request("slow-1"),
            None,
            delay,
        ))
        .await
        .expect("an answer, not a broken connection");
    let (_, code, _) = WebResponse::new(refused)
        .finish::<pb::CreateOrderResponse>()
        .await;
    assert_eq!(code, tonic::Code::Unauthenticated as i32);
    assert!(started.elapsed() >= delay, "answered before the body came");

    sender.ready().await.expect("the connection is kept");
    let created = sender
        .send_request(slow_body_request(
            command.addr,
            CREATE,
            &create_request("slow-1"),
            Some(COMMAND_TOKEN),
            Duration::ZERO,
        ))
        .await
        .expect("the second request on the same connection");
    let (messages, code, message) = WebResponse::new(created)
        .finish::<pb::CreateOrderResponse>()
        .await;
    assert_eq!(code, 0, "{message}");
    assert_eq!(messages[0].version, 1);

    let bearer = format!("Bearer {COMMAND_TOKEN}");
    let oversize = pb::CreateOrderRequest {
        customer_id: "c".repeat(4096),
        ..create_request("big-1")
    };
    let refused = unary::<pb::CreateOrderResponse>(
        command.addr,
        CREATE,
        &oversize,
        &[("authorization", &bearer)],
    )
    .await
    .unwrap_err();
    assert_eq!(
        refused.0,
        tonic::Code::ResourceExhausted as i32,
        "{refused:?}"
    );
}

#[test]
fn an_origin_a_browser_never_sends_is_refused_at_start() {
    let dir = TempDir::new().unwrap();
    for bad in [
        "http://127.0.0.1:8080/",
        "127.0.0.1:8080",
        "*,http://a.example",
    ] {
        let (logs, status) = Service::try_spawn(
            "command-service",
            &with(
                command_args(dir.path(), "127.0.0.1:0"),
                &["--cors-origin", bad],
            ),
            &[],
        )
        .err()
        .unwrap_or_else(|| panic!("{bad}: started"));
        assert!(status.is_some_and(|s| !s.success()), "{bad}: {status:?}");
        assert!(
            logs.iter().any(|l| l.contains("--cors-origin")),
            "{bad}: the error names the flag: {logs:?}"
        );
    }
}

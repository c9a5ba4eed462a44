//! Secure by default (SPEC guarantee 10) and bounded metrics, through the real
//! binaries: one token closes every API RPC, `SubscribeEvents` included, and
//! calls to methods that do not exist cannot grow `/metrics`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use e2e::{command_args, pb, Service};
use shared::grpc_codec::OrdersCodec;
use shared::proto::command_service_client::CommandServiceClient;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::MetadataValue;
use tonic::Code;

const COMMAND_TOKEN: &str = "only-command-token-5b2e";

fn with_token<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        let value = MetadataValue::try_from(format!("Bearer {token}")).expect("ascii token");
        request.metadata_mut().insert("authorization", value);
    }
    request
}

fn start_command(dir: &TempDir, extra: &[&str]) -> Service {
    let mut args = command_args(dir.path(), "127.0.0.1:0");
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    Service::spawn("command-service", &args, &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_command_token_alone_also_closes_subscribe_events() {
    let dir = TempDir::new().unwrap();
    let svc = start_command(&dir, &["--auth-token", COMMAND_TOKEN]);
    let mut client = CommandServiceClient::new(svc.channel().await);
    let subscribe = |token| with_token(pb::SubscribeEventsRequest { after_position: 0 }, token);

    for (case, token) in [("no token", None), ("a wrong token", Some("wrong"))] {
        match client.subscribe_events(subscribe(token)).await {
            Err(status) => assert_eq!(status.code(), Code::Unauthenticated, "{case}: {status:?}"),
            Ok(_) => panic!("{case}: SubscribeEvents was open"),
        }
    }
    let mut stream = client
        .subscribe_events(subscribe(Some(COMMAND_TOKEN)))
        .await
        .expect("the command token opens SubscribeEvents when no subscribe token is set")
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a first message in time")
        .expect("no stream error")
        .expect("the stream is open");
    assert!(
        matches!(
            first.kind,
            Some(pb::subscribe_events_response::Kind::Heartbeat(_))
        ),
        "an empty log answers with a heartbeat: {first:?}"
    );
    assert!(
        svc.logs()
            .iter()
            .any(|l| l.contains("auth: on") && l.contains("SubscribeEvents needs --auth-token")),
        "the start-up log says which token SubscribeEvents takes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_no_token_the_start_up_log_says_every_rpc_is_open() {
    let dir = TempDir::new().unwrap();
    let svc = start_command(&dir, &[]);
    let mut client = CommandServiceClient::new(svc.channel().await);
    client
        .subscribe_events(pb::SubscribeEventsRequest { after_position: 0 })
        .await
        .expect("open without tokens");
    assert!(
        svc.logs()
            .iter()
            .any(|l| l.contains("auth: off, every RPC is open")),
        "the start-up log says auth is off"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscribe_token_without_a_command_token_stops_the_start() {
    let dir = TempDir::new().unwrap();
    let mut args = command_args(dir.path(), "127.0.0.1:0");
    args.extend(["--subscribe-token".to_owned(), "sub-only".to_owned()]);
    let Err((logs, status)) = Service::try_spawn("command-service", &args, &[]) else {
        panic!("command-service started with its commands open beside a closed stream");
    };
    assert!(status.is_some_and(|s| !s.success()), "{status:?}");
    assert!(
        logs.iter()
            .any(|l| l.contains("--subscribe-token is set but --auth-token is not")),
        "{logs:?}"
    );
}

/// The address a service logged as `metrics listening on ADDR`.
async fn metrics_addr(service: &Service) -> SocketAddr {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found = service.logs().iter().find_map(|line| {
            let rest = &line[line.find("metrics listening on ")? + "metrics listening on ".len()..];
            rest.split(|c: char| c.is_whitespace() || c == '"' || c == ',')
                .next()?
                .parse()
                .ok()
        });
        if let Some(addr) = found {
            return addr;
        }
        assert!(Instant::now() < deadline, "no metrics address logged");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The body of `GET /metrics`.
async fn scrape(addr: SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET /metrics HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        stream.read_to_string(&mut response),
    )
    .await
    .expect("a scrape in time")
    .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

/// The values of the `command` label of `orders_commands_total`.
fn command_labels(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| l.starts_with("orders_commands_total{"))
        .filter_map(|l| {
            let rest = &l[l.find("command=\"")? + "command=\"".len()..];
            Some(rest[..rest.find('"')?].to_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_to_made_up_methods_add_at_most_one_label_value() {
    let dir = TempDir::new().unwrap();
    let svc = start_command(
        &dir,
        &[
            "--auth-token",
            COMMAND_TOKEN,
            "--metrics-listen",
            "127.0.0.1:0",
        ],
    );
    let addr = metrics_addr(&svc).await;
    let mut client = CommandServiceClient::new(svc.channel().await);
    let refused = client
        .create_order(pb::CreateOrderRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    let before = command_labels(&scrape(addr).await);
    assert!(before.contains("CreateOrder"), "{before:?}");

    let mut grpc = tonic::client::Grpc::new(svc.channel().await);
    for i in 0..300 {
        grpc.ready().await.unwrap();
        let path = PathAndQuery::try_from(format!("/orders.v1.CommandService/MadeUp{i}")).unwrap();
        let answer = grpc
            .unary::<(), (), _>(
                tonic::Request::new(()),
                path,
                OrdersCodec::<(), ()>::default(),
            )
            .await;
        assert_eq!(
            answer.unwrap_err().code(),
            Code::Unauthenticated,
            "call {i}"
        );
    }
    let after = command_labels(&scrape(addr).await);
    let added: Vec<_> = after.difference(&before).collect();
    assert!(
        added.len() <= 1,
        "made-up methods became label values: {added:?}"
    );
    assert!(after.iter().all(|l| !l.starts_with("MadeUp")), "{after:?}");
}

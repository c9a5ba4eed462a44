//! Secure by default (SPEC guarantee 10) and bounded metrics, through the real
//! binaries: one token closes every API RPC, `SubscribeEvents` included, and
//! calls to methods that do not exist cannot grow `/metrics`.

use std::collections::BTreeSet;
use std::time::Duration;

use e2e::auth::{bearer, COMMAND_TOKEN};
use e2e::metrics::{metrics_addr, scrape};
use e2e::{command_args, command_client, pb, within, Service};
use shared::grpc_codec::OrdersCodec;
use tempfile::TempDir;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::Code;

fn start_command(dir: &TempDir, extra: &[&str]) -> Service {
    let mut args = command_args(dir.path(), "127.0.0.1:0");
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    Service::spawn("command-service", &args, &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_command_token_alone_also_closes_subscribe_events() {
    let dir = TempDir::new().unwrap();
    let svc = start_command(&dir, &["--auth-token", COMMAND_TOKEN]);
    let mut client = command_client(&svc).await;
    let subscribe = |token| {
        bearer(
            pb::SubscribeEventsRequest {
                after_position: 0,
                ..Default::default()
            },
            token,
        )
    };

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
    let first = within("a first message", Duration::from_secs(10), stream.message())
        .await
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
    let mut client = command_client(&svc).await;
    client
        .subscribe_events(pb::SubscribeEventsRequest {
            after_position: 0,
            ..Default::default()
        })
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
    let mut client = command_client(&svc).await;
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

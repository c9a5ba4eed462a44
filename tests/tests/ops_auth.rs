//! Bearer-token authentication through the real binaries: each token kind is
//! tried without, with a wrong and with the right token; health stays open;
//! query-service presents the subscribe token; no token reaches a log.

use std::time::Duration;

use e2e::auth::*;
use e2e::commands::create_request;
use e2e::reflection::{self, ReflectionRequest};
use e2e::{
    command_args, eventually, path_arg, pb, query_args, CommandClient, QueryClient, Service,
};
use tempfile::TempDir;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

fn start_command_with_tokens(dir: &TempDir) -> Service {
    let mut args = command_args(dir.path(), "127.0.0.1:0");
    args.extend([
        "--auth-token".to_owned(),
        COMMAND_TOKEN.to_owned(),
        "--subscribe-token".to_owned(),
        SUBSCRIBE_TOKEN.to_owned(),
    ]);
    Service::spawn("command-service", &args, &[])
}

#[track_caller]
fn assert_unauthenticated<T: std::fmt::Debug>(result: Result<T, tonic::Status>, case: &str) {
    match result {
        Err(status) => assert_eq!(status.code(), Code::Unauthenticated, "{case}: {status:?}"),
        Ok(response) => panic!("{case}: expected UNAUTHENTICATED, got {response:?}"),
    }
}

#[track_caller]
fn assert_no_secret_logged(service: &Service) {
    for line in service.logs() {
        for token in [COMMAND_TOKEN, SUBSCRIBE_TOKEN, QUERY_TOKEN] {
            assert!(!line.contains(token), "a token reached the log: {line}");
        }
    }
}

async fn health_is_serving(service: &Service) {
    let mut health = HealthClient::new(service.channel().await);
    let response = health
        .check(HealthCheckRequest {
            service: "".to_owned(),
        })
        .await
        .expect("health needs no token")
        .into_inner();
    assert_eq!(response.status(), ServingStatus::Serving);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn command_rpcs_need_the_command_token() {
    let dir = TempDir::new().unwrap();
    let svc = start_command_with_tokens(&dir);
    let mut client = CommandClient::new(svc.channel().await);

    let cases = [
        ("no token", None),
        ("a wrong token", Some("not-the-token")),
        ("the subscribe token", Some(SUBSCRIBE_TOKEN)),
        ("a longer token", Some("cmd-token-3f9a1cX")),
    ];
    for (case, token) in cases {
        assert_unauthenticated(
            client
                .create_order(bearer(create_request("ord-a"), token))
                .await,
            case,
        );
    }
    let created = client
        .create_order(bearer(create_request("ord-a"), Some(COMMAND_TOKEN)))
        .await
        .expect("the right token is accepted")
        .into_inner();
    assert_eq!((created.version, created.position), (1, 1));
    // The refused attempts wrote nothing: the accepted one is position 1.

    let placed = client
        .place_order(bearer(
            pb::PlaceOrderRequest {
                order_id: "ord-a".to_owned(),
                expected_version: Some(1),
                command_id: String::new(),
            },
            Some("wrong"),
        ))
        .await;
    assert_unauthenticated(placed, "PlaceOrder with a wrong token");

    health_is_serving(&svc).await;
    let listed = reflection::ask(
        svc.channel().await,
        "v1",
        ReflectionRequest {
            list_services: Some(String::new()),
            ..Default::default()
        },
    )
    .await
    .expect("reflection needs no token");
    assert!(listed.list_services_response.is_some(), "{listed:?}");
    assert_no_secret_logged(&svc);
    assert!(
        svc.logs()
            .iter()
            .any(|l| l.contains("command_auth=true") && l.contains("subscribe_auth=true")),
        "the effective configuration says that tokens are set"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscribe_events_needs_the_subscribe_token() {
    let dir = TempDir::new().unwrap();
    let svc = start_command_with_tokens(&dir);
    let mut client = CommandClient::new(svc.channel().await);
    let request = |token| {
        bearer(
            pb::SubscribeEventsRequest {
                after_position: 0,
                ..Default::default()
            },
            token,
        )
    };

    for (case, token) in [
        ("no token", None),
        ("a wrong token", Some("nope")),
        ("the command token", Some(COMMAND_TOKEN)),
    ] {
        assert_unauthenticated(client.subscribe_events(request(token)).await, case);
    }
    let mut stream = client
        .subscribe_events(request(Some(SUBSCRIBE_TOKEN)))
        .await
        .expect("the subscribe token is accepted")
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a first message")
        .expect("no stream error")
        .expect("the stream is open");
    assert!(
        matches!(
            first.kind,
            Some(pb::subscribe_events_response::Kind::Heartbeat(_))
        ),
        "an empty log answers with a heartbeat: {first:?}"
    );
    assert_no_secret_logged(&svc);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn query_service_presents_the_subscribe_token_and_guards_queries() {
    let tokens = TempDir::new().unwrap();
    let write = |name: &str, token: &str| {
        let path = tokens.path().join(name);
        std::fs::write(&path, format!("{token}\n")).unwrap();
        path
    };
    let command_file = write("command", COMMAND_TOKEN);
    let subscribe_file = write("subscribe", SUBSCRIBE_TOKEN);
    let query_file = write("query", QUERY_TOKEN);

    // The command side reads its tokens from files, query-service from the environment.
    let command_dir = TempDir::new().unwrap();
    let mut args = command_args(command_dir.path(), "127.0.0.1:0");
    args.extend([
        "--auth-token-file".to_owned(),
        path_arg(&command_file),
        "--subscribe-token-file".to_owned(),
        path_arg(&subscribe_file),
    ]);
    let command = Service::spawn("command-service", &args, &[]);
    let query_dir = TempDir::new().unwrap();
    let query = Service::spawn(
        "query-service",
        &query_args(query_dir.path(), "127.0.0.1:0", &command.endpoint()),
        &[
            ("QUERY_SUBSCRIBE_TOKEN", SUBSCRIBE_TOKEN),
            ("QUERY_AUTH_TOKEN_FILE", query_file.to_str().unwrap()),
        ],
    );

    let mut commands = CommandClient::new(command.channel().await);
    let ack = commands
        .create_order(bearer(create_request("ord-q"), Some(COMMAND_TOKEN)))
        .await
        .expect("create with the command token")
        .into_inner();
    let mut queries = QueryClient::new(query.channel().await);
    let get = |token| {
        let mut request = bearer(
            pb::GetOrderRequest {
                order_id: "ord-q".to_owned(),
                min_position: ack.position,
            },
            token,
        );
        request.set_timeout(Duration::from_secs(20));
        request
    };
    for (case, token) in [
        ("no token", None),
        ("a wrong token", Some("wrong")),
        ("the command token", Some(COMMAND_TOKEN)),
    ] {
        assert_unauthenticated(queries.get_order(get(token)).await, case);
    }
    // Only reachable if query-service got the events through the guarded stream.
    let order = queries
        .get_order(get(Some(QUERY_TOKEN)))
        .await
        .expect("the query token is accepted and the event arrived")
        .into_inner()
        .order
        .expect("an order view");
    assert_eq!(order.order_id, "ord-q");
    assert_eq!(order.total_cents, 300);

    health_is_serving(&query).await;
    assert_no_secret_logged(&command);
    assert_no_secret_logged(&query);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_query_service_with_a_wrong_subscribe_token_is_refused_and_says_so() {
    let command_dir = TempDir::new().unwrap();
    let command = start_command_with_tokens(&command_dir);
    let query_dir = TempDir::new().unwrap();
    let mut args = query_args(query_dir.path(), "127.0.0.1:0", &command.endpoint());
    args.extend([
        "--subscribe-token".to_owned(),
        "not-the-subscribe-token".to_owned(),
    ]);
    let query = Service::spawn("query-service", &args, &[]);

    eventually(
        "query-service to log the refused subscription",
        Duration::from_secs(20),
        || {
            let refused = query.logs().iter().any(|l| {
                l.contains("SubscribeEvents refused") && l.contains("invalid bearer token")
            });
            async move { refused.then_some(()) }
        },
    )
    .await;
    let mut queries = QueryClient::new(query.channel().await);
    let status = queries
        .get_projection_status(pb::GetProjectionStatusRequest {})
        .await
        .expect("queries are open: no query token is set")
        .into_inner();
    assert!(!status.connected, "a refused subscriber is not connected");
    assert_no_secret_logged(&query);
}

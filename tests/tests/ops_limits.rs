//! Limits through the real binaries: an over-size message, requests beyond the
//! per-connection limit, connections beyond the connection limit, and the
//! server-side request timeout are each refused with a clear status, and the
//! service goes on serving.

use std::time::Duration;

use e2e::commands::create_request;
use e2e::{command_args, eventually, item, pb, query_args, CommandClient, QueryClient, Service};
use tempfile::TempDir;
use tonic::transport::Channel;
use tonic::Code;

/// query-service following a command side that is not there: queries with a
/// `min_position` ahead simply wait, which makes slow requests on demand.
fn start_lonely_query_service(dir: &TempDir, extra: &[&str]) -> Service {
    let mut args = query_args(dir.path(), "127.0.0.1:0", "http://127.0.0.1:1");
    args.extend(extra.iter().map(|a| a.to_string()));
    Service::spawn("query-service", &args, &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_oversize_message_is_refused_and_nothing_is_written() {
    let dir = TempDir::new().unwrap();
    let mut args = command_args(dir.path(), "127.0.0.1:0");
    args.extend(["--max-message-bytes".to_owned(), "65536".to_owned()]);
    let command = Service::spawn("command-service", &args, &[]);
    let mut client = CommandClient::new(command.channel().await);

    let mut big = create_request("ord-big");
    big.items = (0..3000)
        .map(|i| item(&format!("sku-{i:060}"), 1, 1))
        .collect();
    let status = client
        .create_order(big)
        .await
        .expect_err("a request over --max-message-bytes is refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("message length too large")
            || status.message().contains("too large"),
        "the message says why: {status:?}"
    );

    let ack = client
        .create_order(create_request("ord-small"))
        .await
        .expect("a normal request after it is served")
        .into_inner();
    assert_eq!(ack.position, 1, "the refused request wrote nothing");

    let query_dir = TempDir::new().unwrap();
    let query = start_lonely_query_service(&query_dir, &["--max-message-bytes", "4096"]);
    let mut queries = QueryClient::new(query.channel().await);
    let status = queries
        .get_order(pb::GetOrderRequest {
            order_id: "x".repeat(10_000),
            min_position: 0,
        })
        .await
        .expect_err("an over-size query is refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_beyond_the_per_connection_limit_are_shed_with_resource_exhausted() {
    let dir = TempDir::new().unwrap();
    let query = start_lonely_query_service(&dir, &["--max-requests-per-connection", "2"]);
    let channel = query.channel().await;

    // Ten slow requests at once on one connection: two are admitted and wait,
    // the rest are refused at once.
    let slow = (0..10).map(|_| {
        let mut client = QueryClient::new(channel.clone());
        async move {
            let mut request = tonic::Request::new(pb::GetOrderRequest {
                order_id: "ord-1".to_owned(),
                min_position: 1_000_000,
            });
            request.set_timeout(Duration::from_secs(3));
            client
                .get_order(request)
                .await
                .expect_err("nothing to answer")
        }
    });
    let statuses = futures::future::join_all(slow).await;
    let shed: Vec<_> = statuses
        .iter()
        .filter(|s| s.code() == Code::ResourceExhausted)
        .collect();
    assert!(
        (8..=9).contains(&shed.len()),
        "two (or, by timing, one) admitted, the rest shed: {statuses:?}"
    );
    assert!(
        shed[0].message().contains("Too many active requests"),
        "{:?}",
        shed[0]
    );
    assert!(statuses.iter().any(|s| s.code() == Code::DeadlineExceeded));

    // Once the slow ones are gone the connection serves again.
    let status = QueryClient::new(channel)
        .get_projection_status(pb::GetProjectionStatusRequest {})
        .await;
    assert!(status.is_ok(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_beyond_the_limit_are_refused_until_one_leaves() {
    let dir = TempDir::new().unwrap();
    let mut args = command_args(dir.path(), "127.0.0.1:0");
    args.extend(["--max-connections".to_owned(), "1".to_owned()]);
    let command = Service::spawn("command-service", &args, &[]);

    let first = command.channel().await;
    CommandClient::new(first.clone())
        .create_order(create_request("ord-1"))
        .await
        .expect("the first connection is served");

    let second = Channel::from_shared(command.endpoint())
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5));
    let status = CommandClient::new(second.connect().await.expect("TCP and HTTP/2 accept"))
        .create_order(create_request("ord-2"))
        .await
        .expect_err("a connection beyond the limit is refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("too many connections"),
        "the refusal says why: {status:?}"
    );
    eventually("the refusal in the log", Duration::from_secs(10), || {
        let logged = command
            .logs()
            .iter()
            .any(|l| l.contains("connection limit is reached"));
        async move { logged.then_some(()) }
    })
    .await;

    drop(first);
    let ack = eventually(
        "a new connection once the first is closed",
        Duration::from_secs(20),
        || {
            let second = second.clone();
            async move {
                let channel = second.connect().await.ok()?;
                CommandClient::new(channel)
                    .create_order(create_request("ord-2"))
                    .await
                    .ok()
            }
        },
    )
    .await
    .into_inner();
    assert_eq!(ack.position, 2, "the refused request wrote nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_without_a_deadline_is_cut_at_the_server_timeout() {
    let dir = TempDir::new().unwrap();
    let query = start_lonely_query_service(
        &dir,
        &["--request-timeout-ms", "300", "--max-wait-ms", "60000"],
    );
    let mut queries = QueryClient::new(query.channel().await);
    let started = std::time::Instant::now();
    let status = queries
        .get_order(pb::GetOrderRequest {
            order_id: "ord-1".to_owned(),
            min_position: 1_000_000,
        })
        .await
        .expect_err("the server timeout ends the wait");
    assert_eq!(status.code(), Code::Cancelled, "{status:?}");
    assert!(status.message().contains("Timeout expired"), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "ended by the 300 ms server timeout, not the 60 s wait"
    );
}

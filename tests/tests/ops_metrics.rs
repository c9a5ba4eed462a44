//! Observability through the real binaries: `/metrics` scraped over plain HTTP
//! from each service's own port, its counters and gauges moving with traffic,
//! and one log span per RPC in the JSON log.

use std::time::Duration;

use e2e::commands::create_request;
use e2e::metrics::*;
use e2e::{
    command_args, eventually, pb, query_args, read_log, CommandClient, QueryClient, Service,
};
use tempfile::TempDir;

fn with_metrics(mut args: Vec<String>) -> Vec<String> {
    args.extend(["--metrics-listen".to_owned(), "127.0.0.1:0".to_owned()]);
    args
}

/// A command-service on `dir` serving metrics, and its metrics address.
async fn command_service_with_metrics(dir: &TempDir) -> (Service, std::net::SocketAddr) {
    let command = Service::spawn(
        "command-service",
        &with_metrics(command_args(dir.path(), "127.0.0.1:0")),
        &[],
    );
    let addr = metrics_addr(&command).await;
    (command, addr)
}

/// Scrapes until `series` has reached `at_least`, for gauges updated in the background.
async fn until_at_least(addr: std::net::SocketAddr, series: &str, at_least: f64) -> String {
    eventually(series, Duration::from_secs(20), || async move {
        let text = scrape(addr).await;
        (sample(&text, series)? >= at_least).then_some(text)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn command_service_metrics_move_with_traffic() {
    let dir = TempDir::new().unwrap();
    let (command, addr) = command_service_with_metrics(&dir).await;
    assert_ne!(addr, command.addr, "metrics have their own port");
    let (status, _) = http_get(addr, "/elsewhere").await;
    assert!(status.contains("404"), "{status}");

    let before = scrape(addr).await;
    assert_eq!(
        sample(
            &before,
            r#"orders_commands_total{command="CreateOrder",outcome="OK"}"#
        ),
        None
    );

    let mut client = CommandClient::new(command.channel().await);
    for i in 0..3 {
        client
            .create_order(create_request(&format!("ord-{i}")))
            .await
            .expect("create");
    }
    let rejected = client.create_order(create_request("ord-0")).await;
    assert_eq!(rejected.unwrap_err().code(), tonic::Code::AlreadyExists);
    let mut stream = client
        .subscribe_events(pb::SubscribeEventsRequest {
            after_position: 0,
            ..Default::default()
        })
        .await
        .expect("subscribe")
        .into_inner();
    stream.message().await.expect("a first event");

    let text = until_at_least(addr, "orders_log_head_position", 3.0).await;
    assert_eq!(
        sample(
            &text,
            r#"orders_commands_total{command="CreateOrder",outcome="OK"}"#
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"orders_commands_total{command="CreateOrder",outcome="ALREADY_EXISTS"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"orders_command_duration_seconds_count{command="CreateOrder"}"#
        ),
        Some(4.0)
    );
    assert!(
        text.contains(r#"orders_command_duration_seconds_bucket{command="CreateOrder",le="0.01"}"#),
        "latency is a histogram with buckets"
    );
    let batches = sample(&text, "orders_commit_batch_size_count").expect("batch sizes");
    assert!(
        (1.0..=4.0).contains(&batches),
        "one group commit per batch: {batches}"
    );
    assert_eq!(
        sample(&text, "orders_commit_batch_size_sum"),
        Some(4.0),
        "four commands decided"
    );
    assert_eq!(sample(&text, "orders_log_head_position"), Some(3.0));
    assert_eq!(sample(&text, "orders_subscribers"), Some(1.0));

    drop(stream);
    eventually(
        "the subscriber gauge to drop",
        Duration::from_secs(20),
        || async move { (sample(&scrape(addr).await, "orders_subscribers")? == 0.0).then_some(()) },
    )
    .await;
}

/// The two commit paths, told apart by `orders_commit_inline_total`: a
/// command that comes alone (spaced well apart from the others) is committed
/// on its request's thread; a burst goes through the writer thread's queue
/// and forms groups, every command still answered once, positions gap-free.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spaced_commands_commit_inline_and_a_burst_forms_groups() {
    const SPACED: usize = 5;
    const BURST: usize = 64;
    let dir = TempDir::new().unwrap();
    let (command, addr) = command_service_with_metrics(&dir).await;
    let mut client = CommandClient::new(command.channel().await);
    for i in 0..SPACED {
        tokio::time::sleep(Duration::from_millis(20)).await;
        client
            .create_order(create_request(&format!("spaced-{i}")))
            .await
            .expect("create");
    }
    let text = scrape(addr).await;
    assert_eq!(
        sample(&text, "orders_commit_inline_total"),
        Some(SPACED as f64),
        "each spaced command committed on its own thread"
    );
    assert_eq!(
        sample(&text, "orders_commit_batch_size_count"),
        Some(SPACED as f64)
    );

    let burst = (0..BURST).map(|i| {
        let mut client = client.clone();
        async move {
            client
                .create_order(create_request(&format!("burst-{i}")))
                .await
                .expect("create")
                .into_inner()
        }
    });
    let mut positions: Vec<u64> = futures::future::join_all(burst)
        .await
        .iter()
        .map(|ack| ack.position)
        .collect();
    positions.sort_unstable();
    let expected: Vec<u64> = (SPACED as u64 + 1..=(SPACED + BURST) as u64).collect();
    assert_eq!(positions, expected, "one position each, no gaps");
    let text = scrape(addr).await;
    let inline = sample(&text, "orders_commit_inline_total").unwrap() - SPACED as f64;
    let groups = sample(&text, "orders_commit_batch_size_count").unwrap() - SPACED as f64;
    assert!(
        inline < BURST as f64 / 2.0,
        "a burst goes through the queue, not one inline sync per command: {inline} inline"
    );
    assert!(
        groups < BURST as f64,
        "the burst's commands share syncs: {groups} groups for {BURST} commands"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn query_service_metrics_follow_the_projection() {
    let command_dir = TempDir::new().unwrap();
    let command = Service::spawn(
        "command-service",
        &command_args(command_dir.path(), "127.0.0.1:0"),
        &[],
    );
    let query_dir = TempDir::new().unwrap();
    let query = Service::spawn(
        "query-service",
        &with_metrics(query_args(
            query_dir.path(),
            "127.0.0.1:0",
            &command.endpoint(),
        )),
        &[],
    );
    let addr = metrics_addr(&query).await;

    let mut commands = CommandClient::new(command.channel().await);
    let mut last = 0;
    for i in 0..5 {
        last = commands
            .create_order(create_request(&format!("ord-{i}")))
            .await
            .expect("create")
            .into_inner()
            .position;
    }
    let mut queries = QueryClient::new(query.channel().await);
    let mut request = tonic::Request::new(pb::GetOrderRequest {
        order_id: "ord-4".to_owned(),
        min_position: last,
    });
    request.set_timeout(Duration::from_secs(20));
    queries.get_order(request).await.expect("read your write");
    let missing = queries
        .get_order(pb::GetOrderRequest {
            order_id: "nope".to_owned(),
            min_position: 0,
        })
        .await;
    assert_eq!(missing.unwrap_err().code(), tonic::Code::NotFound);

    let text = until_at_least(addr, "orders_events_applied_total", 5.0).await;
    assert_eq!(
        sample(&text, "orders_events_applied_total"),
        Some(5.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "orders_projection_applied_position"),
        Some(5.0)
    );
    assert_eq!(sample(&text, "orders_projection_lag_events"), Some(0.0));
    assert_eq!(sample(&text, "orders_projection_lag_seconds"), Some(0.0));
    assert_eq!(
        sample(
            &text,
            r#"orders_queries_total{query="GetOrder",outcome="OK"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"orders_queries_total{query="GetOrder",outcome="NOT_FOUND"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"orders_query_duration_seconds_count{query="GetOrder"}"#
        ),
        Some(2.0)
    );

    // The command side goes away: the replica reports the lost link.
    drop(command);
    eventually(
        "the link to be reported down",
        Duration::from_secs(30),
        || async move {
            (sample(&scrape(addr).await, "orders_projection_connected")? == 0.0).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_rpc_is_one_span_in_the_json_log() {
    let dir = TempDir::new().unwrap();
    let mut args = command_args(dir.path(), "127.0.0.1:0");
    args.extend([
        "--log-format".to_owned(),
        "json".to_owned(),
        "--log-level".to_owned(),
        "info,shared::server::observe=debug".to_owned(),
    ]);
    let command = Service::spawn("command-service", &args, &[]);
    let mut client = CommandClient::new(command.channel().await);
    client
        .create_order(create_request("ord-span"))
        .await
        .expect("create");
    assert_eq!(read_log(&mut client, 0).await.len(), 1);

    let line = eventually("the RPC's log line", Duration::from_secs(10), || {
        let line = command.logs().into_iter().find(|l| {
            l.contains("rpc answered") && l.contains("/orders.v1.CommandService/CreateOrder")
        });
        async move { line }
    })
    .await;
    assert!(line.starts_with('{'), "JSON: {line}");
    assert!(
        line.contains(r#""span":{"#) && line.contains(r#""name":"rpc""#),
        "{line}"
    );
    assert!(line.contains(r#""code":"OK""#), "{line}");
}

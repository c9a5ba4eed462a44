//! Bounded streams through the real binaries: concurrent `SubscribeEvents`
//! streams on command-service, `WatchOrder` watchers per order and in total on
//! query-service. One more is refused with RESOURCE_EXHAUSTED naming the flag,
//! and a place comes back when a stream ends.

use std::time::Duration;

use e2e::commands::{create, item};
use e2e::{command_args, command_client, eventually, pb, query_args, query_client, Service};
use tempfile::TempDir;
use tonic::{Code, Status};

#[track_caller]
fn assert_refused<T>(result: Result<T, Status>, flag: &str) {
    match result {
        Err(status) => {
            assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
            assert!(status.message().contains(flag), "{status:?} names {flag}");
        }
        Ok(_) => panic!("expected RESOURCE_EXHAUSTED naming {flag}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscribe_events_streams_beyond_the_limit_are_refused() {
    let dir = TempDir::new().unwrap();
    let mut args = command_args(dir.path(), "127.0.0.1:0");
    args.extend(["--max-subscribers".to_owned(), "2".to_owned()]);
    let svc = Service::spawn("command-service", &args, &[]);
    let mut client = command_client(&svc).await;
    let subscribe = || pb::SubscribeEventsRequest {
        after_position: 0,
        ..Default::default()
    };

    let mut open = Vec::new();
    for _ in 0..2 {
        let mut stream = client
            .subscribe_events(subscribe())
            .await
            .expect("within the limit")
            .into_inner();
        stream.message().await.expect("a heartbeat").expect("open");
        open.push(stream);
    }
    assert_refused(
        client.subscribe_events(subscribe()).await,
        "--max-subscribers",
    );

    drop(open.pop());
    eventually(
        "a closed stream to give its place back",
        Duration::from_secs(20),
        || {
            let mut client = client.clone();
            async move { client.subscribe_events(subscribe()).await.ok() }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watchers_beyond_the_limits_per_order_and_in_total_are_refused() {
    let command_dir = TempDir::new().unwrap();
    let command = Service::spawn(
        "command-service",
        &command_args(command_dir.path(), "127.0.0.1:0"),
        &[],
    );
    let query_dir = TempDir::new().unwrap();
    let mut args = query_args(query_dir.path(), "127.0.0.1:0", &command.endpoint());
    args.extend(["--max-watchers-per-order", "1", "--max-watchers", "2"].map(str::to_owned));
    let query = Service::spawn("query-service", &args, &[]);

    let mut commands = command_client(&command).await;
    let mut last = 0;
    for id in ["w1", "w2", "w3"] {
        last = commands
            .create_order(create(id, vec![item("sku-1", 1, 100)]))
            .await
            .expect("create")
            .into_inner()
            .position;
    }
    let mut queries = query_client(&query).await;
    let mut caught_up = tonic::Request::new(pb::GetOrderRequest {
        order_id: "w3".to_owned(),
        min_position: last,
    });
    caught_up.set_timeout(Duration::from_secs(20));
    queries
        .get_order(caught_up)
        .await
        .expect("the replica caught up");
    let watch = |id: &str| pb::WatchOrderRequest {
        order_id: id.to_owned(),
    };

    let mut w1 = queries
        .watch_order(watch("w1"))
        .await
        .expect("a first watch of w1")
        .into_inner();
    w1.message().await.expect("the current view").expect("open");
    assert_refused(
        queries.watch_order(watch("w1")).await,
        "--max-watchers-per-order",
    );
    let _w2 = queries
        .watch_order(watch("w2"))
        .await
        .expect("a watch of another order")
        .into_inner();
    assert_refused(queries.watch_order(watch("w3")).await, "--max-watchers");

    drop(w1);
    eventually(
        "a closed watch to give its place back",
        Duration::from_secs(20),
        || {
            let mut queries = queries.clone();
            async move { queries.watch_order(watch("w1")).await.ok() }
        },
    )
    .await;
}

//! query-service through both real binaries, gRPC from outside: what a client sees
//! after each command (read-your-writes through `min_position`), `WatchOrder`,
//! the deadline of `min_position`, malformed queries, and the projection status.

use std::time::{Duration, Instant};

use e2e::commands::{add, cancel, create, ok, place, remove, send, ship, with};
use e2e::queries::projection_status;
use e2e::reflection;
use e2e::{
    command_client, eventually, item, pb, query_args, query_client, start_command_service,
    start_query_service, ClosedPort, QueryClient, Service,
};
use futures::StreamExt;
use pb::OrderStatus as S;
use tempfile::TempDir;
use tonic::Code;

async fn get(q: &mut QueryClient, order_id: &str, min_position: u64) -> pb::OrderView {
    q.get_order(pb::GetOrderRequest {
        order_id: order_id.to_owned(),
        min_position,
    })
    .await
    .expect("GetOrder")
    .into_inner()
    .order
    .expect("order")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_command_is_visible_to_a_query_with_its_position() {
    let dir = TempDir::new().unwrap();
    let cmd = start_command_service(&dir.path().join("command"));
    let qs = start_query_service(&dir.path().join("query"), &cmd.endpoint());
    let mut c = command_client(&cmd).await;
    let mut q = query_client(&qs).await;

    let created = pb::CreateOrderRequest {
        customer_id: "alice".into(),
        currency: "EUR".into(),
        ..create("o-1", vec![item("apple", 2, 150)])
    };
    let created = ok(&mut c, created).await;
    let view = get(&mut q, "o-1", created.position).await;
    assert_eq!(view.status, S::Draft as i32);
    assert_eq!(
        (view.total_cents, view.item_count, view.version),
        (300, 2, 1)
    );
    assert_eq!(view.currency, "EUR");
    assert_eq!(view.last_position, created.position);
    assert!(view.created_at.is_some() && view.placed_at.is_none());

    let added = ok(&mut c, with(add("o-1", item("pear", 3, 99)), Some(1), "")).await;
    let view = get(&mut q, "o-1", added.position).await;
    assert_eq!(view.lines.len(), 2);
    assert_eq!(view.lines[1].line_total_cents, 297);
    assert_eq!(
        (view.total_cents, view.item_count, view.version),
        (597, 5, 2)
    );

    let removed = ok(&mut c, remove("o-1", "apple", 0)).await;
    let view = get(&mut q, "o-1", removed.position).await;
    let skus: Vec<_> = view.lines.iter().map(|l| l.sku.as_str()).collect();
    assert_eq!(skus, ["pear"]);
    assert_eq!(view.total_cents, 297);

    let placed = ok(&mut c, place("o-1")).await;
    let view = get(&mut q, "o-1", placed.position).await;
    assert_eq!(view.status, S::Placed as i32);
    assert!(view.placed_at.is_some());

    let shipped = pb::ShipOrderRequest {
        tracking_number: "T-42".into(),
        ..ship("o-1")
    };
    let shipped = ok(&mut c, shipped).await;
    let view = get(&mut q, "o-1", shipped.position).await;
    assert_eq!(view.status, S::Shipped as i32);
    assert_eq!(
        (view.carrier.as_str(), view.tracking_number.as_str()),
        ("DHL", "T-42")
    );
    assert!(view.shipped_at.is_some());
    assert_eq!(view.version, 5);

    // A second order, placed and then cancelled: analytics take it back out.
    let items = vec![item("pear", 1, 99), item("fig", 4, 10)];
    let created_2 = pb::CreateOrderRequest {
        customer_id: "alice".into(),
        ..create("o-2", items)
    };
    ok(&mut c, created_2).await;
    ok(&mut c, with(place("o-2"), Some(1), "")).await;
    let placed_2 = send(&mut c, place("o-2")).await;
    assert_eq!(placed_2.unwrap_err().code(), Code::FailedPrecondition);
    let analytics = q
        .get_order_analytics(pb::GetOrderAnalyticsRequest {
            min_position: shipped.position + 2,
            top_n: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .analytics
        .unwrap();
    assert_eq!((analytics.placed_orders, analytics.shipped_orders), (1, 1));
    assert_eq!(analytics.placed_revenue_cents, 297 + 139);
    assert_eq!(analytics.average_order_value_cents, (297 + 139) / 2);
    let top: Vec<_> = analytics
        .top_products
        .iter()
        .map(|p| (p.sku.as_str(), p.quantity))
        .collect();
    assert_eq!(top, [("fig", 4), ("pear", 4)]);
    assert_eq!(analytics.daily.len(), 1);
    assert_eq!(analytics.daily[0].orders_placed, 2);

    let cancel_2 = with(cancel("o-2", "changed my mind"), Some(2), "");
    let cancelled = ok(&mut c, cancel_2).await;
    let view = get(&mut q, "o-2", cancelled.position).await;
    assert_eq!(view.status, S::Cancelled as i32);
    assert_eq!(view.cancel_reason, "changed my mind");
    assert!(view.cancelled_at.is_some() && view.placed_at.is_some());
    let analytics = q
        .get_order_analytics(pb::GetOrderAnalyticsRequest {
            min_position: cancelled.position,
            top_n: 1,
        })
        .await
        .unwrap()
        .into_inner()
        .analytics
        .unwrap();
    assert_eq!(analytics.total_orders, 2);
    assert_eq!(
        (analytics.shipped_orders, analytics.cancelled_orders),
        (1, 1)
    );
    assert_eq!(analytics.placed_revenue_cents, 297);
    assert_eq!(analytics.top_products.len(), 1);
    assert_eq!(analytics.top_products[0].sku, "pear");
    assert_eq!(analytics.top_products[0].quantity, 3);
    assert_eq!(analytics.daily[0].orders_placed, 1);
    assert_eq!(analytics.daily[0].revenue_cents, 297);

    let recent = q
        .list_recent_orders(pb::ListRecentOrdersRequest {
            min_position: cancelled.position,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<_> = recent.orders.iter().map(|o| o.order_id.as_str()).collect();
    assert_eq!(ids, ["o-2", "o-1"]);
    assert!(recent.next_page_token.is_empty());
    let shipped_only = q
        .list_recent_orders(pb::ListRecentOrdersRequest {
            status: S::Shipped as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shipped_only.orders.len(), 1);
    assert_eq!(shipped_only.orders[0].order_id, "o-1");
    let mine = q
        .list_customer_orders(pb::ListCustomerOrdersRequest {
            customer_id: "alice".into(),
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(mine.orders[0].order_id, "o-2");
    assert!(!mine.next_page_token.is_empty());

    let status = projection_status(&q).await;
    assert!(status.applied_position >= cancelled.position);
    assert!(status.connected);
    assert!(status.error.is_empty());
    assert!(status.last_applied_at.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_order_sees_every_change_in_order() {
    let dir = TempDir::new().unwrap();
    let cmd = start_command_service(&dir.path().join("command"));
    let qs = start_query_service(&dir.path().join("query"), &cmd.endpoint());
    let mut c = command_client(&cmd).await;
    let mut q = query_client(&qs).await;

    let created = pb::CreateOrderRequest {
        customer_id: "bob".into(),
        ..create("w-1", vec![])
    };
    let created = ok(&mut c, created).await;
    get(&mut q, "w-1", created.position).await;
    let mut watch = q
        .watch_order(pb::WatchOrderRequest {
            order_id: "w-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.next().await.unwrap().unwrap().order.unwrap();
    assert_eq!(first.version, 1);

    // Many changes in quick succession, also to another order in between, so
    // several of them land in one applier batch.
    let mut positions = vec![created.position];
    for i in 0..40u32 {
        let line = item(&format!("s{}", i % 7), 1, 10 + i64::from(i % 7));
        let ack = ok(&mut c, add("w-1", line)).await;
        positions.push(ack.position);
        if i % 5 == 0 {
            let noise = pb::CreateOrderRequest {
                customer_id: "noise".into(),
                ..Default::default()
            };
            ok(&mut c, noise).await;
        }
    }
    let placed = ok(&mut c, place("w-1")).await;
    positions.push(placed.position);

    let mut seen = vec![first];
    while seen.last().unwrap().version < 42 {
        let message = tokio::time::timeout(Duration::from_secs(15), watch.next())
            .await
            .expect("a change within 15s")
            .expect("stream open")
            .expect("no stream error");
        seen.push(message.order.unwrap());
    }
    let versions: Vec<u64> = seen.iter().map(|v| v.version).collect();
    assert_eq!(
        versions,
        (1..=42).collect::<Vec<_>>(),
        "one message per change, in order"
    );
    let seen_positions: Vec<u64> = seen.iter().map(|v| v.last_position).collect();
    assert_eq!(seen_positions, positions);
    assert_eq!(seen[41].status, S::Placed as i32);
    assert_eq!(seen[41].item_count, 40);
    // Each message is the whole view after its change.
    assert_eq!(seen[8].item_count, 8);

    // A watch of an order that does not exist is refused; the stream ends cleanly
    // when the client leaves, and the service keeps serving.
    let missing = q
        .watch_order(pb::WatchOrderRequest {
            order_id: "nope".into(),
        })
        .await;
    assert_eq!(missing.unwrap_err().code(), Code::NotFound);
    drop(watch);
    get(&mut q, "w-1", placed.position).await;

    // SIGTERM with a watch open: the stream ends and the process exits 0.
    let mut open = q
        .watch_order(pb::WatchOrderRequest {
            order_id: "w-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        open.next().await.unwrap().unwrap().order.unwrap().version,
        42
    );
    let mut qs = qs;
    assert!(qs.terminate().success(), "exit 0 on SIGTERM");
    let end = tokio::time::timeout(Duration::from_secs(10), open.next())
        .await
        .expect("the watch ends at shutdown");
    assert!(
        !matches!(end, Some(Ok(_))),
        "no more views after shutdown: {end:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn min_position_beyond_the_head_fails_within_the_deadline() {
    let dir = TempDir::new().unwrap();
    let cmd = start_command_service(&dir.path().join("command"));
    let mut args = query_args(&dir.path().join("query"), "127.0.0.1:0", &cmd.endpoint());
    args.extend(["--max-wait-ms".to_owned(), "700".to_owned()]);
    let qs = Service::spawn("query-service", &args, &[]);
    let mut c = command_client(&cmd).await;
    let mut q = query_client(&qs).await;
    let created = c
        .create_order(pb::CreateOrderRequest {
            customer_id: "carol".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let beyond = created.position + 1_000;

    // The client's deadline bounds the wait, and the answer says how far the projection got.
    let mut request = tonic::Request::new(pb::GetOrderRequest {
        order_id: created.order_id.clone(),
        min_position: beyond,
    });
    request.set_timeout(Duration::from_millis(1500));
    let started = Instant::now();
    let status = q.get_order(request).await.unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Unavailable),
        "{status:?}"
    );
    assert!(
        took >= Duration::from_millis(700),
        "answered after {took:?}, before the wait"
    );
    assert!(
        took < Duration::from_millis(1500),
        "answered after {took:?}, past the deadline"
    );
    assert!(
        status.message().contains("min_position"),
        "{}",
        status.message()
    );

    // Without a client deadline, the server's cap (700 ms here) bounds it.
    let started = Instant::now();
    let status = q
        .get_order_analytics(pb::GetOrderAnalyticsRequest {
            min_position: beyond,
            top_n: 0,
        })
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(matches!(
        status.code(),
        Code::DeadlineExceeded | Code::Unavailable
    ));
    assert!(took < Duration::from_secs(3), "answered after {took:?}");
    assert!(
        status
            .message()
            .contains(&format!("applied up to position {}", created.position)),
        "{}",
        status.message()
    );
    for code in [
        q.list_recent_orders(pb::ListRecentOrdersRequest {
            min_position: beyond,
            ..Default::default()
        })
        .await
        .unwrap_err()
        .code(),
        q.list_customer_orders(pb::ListCustomerOrdersRequest {
            customer_id: "carol".into(),
            min_position: beyond,
            ..Default::default()
        })
        .await
        .unwrap_err()
        .code(),
    ] {
        assert!(matches!(code, Code::DeadlineExceeded | Code::Unavailable));
    }
    // A position that is reached in time is answered.
    get(&mut q, &created.order_id, created.position).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_queries_are_refused_naming_the_field() {
    let dir = TempDir::new().unwrap();
    let cmd = start_command_service(&dir.path().join("command"));
    let qs = start_query_service(&dir.path().join("query"), &cmd.endpoint());
    let mut q = query_client(&qs).await;

    let refused = |r: Result<(), tonic::Status>, field: &str| {
        let status = r.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().contains(field),
            "{field}: {}",
            status.message()
        );
    };
    refused(
        q.get_order(pb::GetOrderRequest {
            order_id: "bad id".into(),
            min_position: 0,
        })
        .await
        .map(|_| ()),
        "order_id",
    );
    refused(
        q.get_order(pb::GetOrderRequest::default())
            .await
            .map(|_| ()),
        "order_id",
    );
    refused(
        q.list_recent_orders(pb::ListRecentOrdersRequest {
            page_token: "not-a-token".into(),
            ..Default::default()
        })
        .await
        .map(|_| ()),
        "page_token",
    );
    refused(
        q.list_recent_orders(pb::ListRecentOrdersRequest {
            status: 99,
            ..Default::default()
        })
        .await
        .map(|_| ()),
        "status",
    );
    refused(
        q.list_customer_orders(pb::ListCustomerOrdersRequest {
            customer_id: "x".repeat(65),
            ..Default::default()
        })
        .await
        .map(|_| ()),
        "customer_id",
    );
    // A token from one list is not accepted by another, or for another customer.
    let mut c = command_client(&cmd).await;
    let mut last = 0;
    for _ in 0..3 {
        last = c
            .create_order(pb::CreateOrderRequest {
                customer_id: "dave".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .position;
    }
    let page = q
        .list_customer_orders(pb::ListCustomerOrdersRequest {
            customer_id: "dave".into(),
            page_size: 1,
            min_position: last,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    refused(
        q.list_customer_orders(pb::ListCustomerOrdersRequest {
            customer_id: "erin".into(),
            page_token: page.next_page_token.clone(),
            ..Default::default()
        })
        .await
        .map(|_| ()),
        "page_token",
    );
    refused(
        q.list_recent_orders(pb::ListRecentOrdersRequest {
            page_token: page.next_page_token,
            ..Default::default()
        })
        .await
        .map(|_| ()),
        "page_token",
    );
    let missing = q
        .get_order(pb::GetOrderRequest {
            order_id: "no-such-order".into(),
            min_position: last,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    // Health is served, and the status shows the link.
    let mut health = tonic_health::pb::health_client::HealthClient::new(qs.channel().await);
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "orders.v1.QueryService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        serving.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let status = eventually("caught up", Duration::from_secs(10), || {
        let q = q.clone();
        async move {
            let s = projection_status(&q).await;
            (s.connected && s.applied_position == last && s.head_position == last).then_some(s)
        }
    })
    .await;
    assert_eq!(status.lag, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reflection_lists_the_query_service_in_v1_and_v1alpha() {
    let dir = TempDir::new().unwrap();
    let cmd = start_command_service(&dir.path().join("command"));
    let qs = start_query_service(&dir.path().join("query"), &cmd.endpoint());
    for version in ["v1", "v1alpha"] {
        let names = reflection::list_services(qs.channel().await, version).await;
        assert!(
            names.contains(&"orders.v1.QueryService".to_owned()),
            "{names:?}"
        );
        assert!(
            names.contains(&"grpc.health.v1.Health".to_owned()),
            "{names:?}"
        );
        assert!(
            !names.contains(&"orders.v1.CommandService".to_owned()),
            "{names:?}"
        );
        let files =
            reflection::files_containing(qs.channel().await, version, "orders.v1.QueryService")
                .await;
        assert!(!files.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_configuration_ends_the_start_with_one_clear_line() {
    let dir = TempDir::new().unwrap();
    let query_dir = dir.path().join("query");
    // No command-service is needed to start: it would be reconnected to later.
    let nowhere = ClosedPort::new();
    let endpoint = nowhere.endpoint();
    let running = start_query_service(&query_dir, &endpoint);

    let refused = |args: Vec<String>, expected: &str| {
        let Err((logs, status)) = Service::try_spawn("query-service", &args, &[]) else {
            panic!("started with {args:?}");
        };
        let status = status.expect("exited rather than hanging");
        assert!(!status.success(), "{args:?}: exit status {status}");
        let errors: Vec<_> = logs.iter().filter(|l| l.contains("ERROR")).collect();
        assert_eq!(errors.len(), 1, "{args:?}: {logs:#?}");
        assert!(errors[0].contains(expected), "{args:?}: {}", errors[0]);
    };
    // The data directory is held by the running replica.
    refused(
        query_args(&query_dir, "127.0.0.1:0", &endpoint),
        "locked by another process",
    );
    // Its port is taken.
    refused(
        query_args(
            &dir.path().join("other"),
            &running.addr.to_string(),
            &endpoint,
        ),
        "cannot listen on",
    );

    // A malformed flag is refused by the parser, naming it.
    let args = vec!["--command-endpoint".to_owned(), "not a uri".to_owned()];
    let Err((logs, status)) = Service::try_spawn("query-service", &args, &[]) else {
        panic!("started with a bad endpoint");
    };
    assert!(!status.unwrap().success());
    assert!(
        logs.iter().any(|l| l.contains("--command-endpoint")),
        "{logs:#?}"
    );
}

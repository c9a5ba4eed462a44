//! `ListOrderEvents` through the real command-service: one order's events in
//! version order, paged, from an index written in the same commit as the
//! events, so the history is whole after a `kill -9` too; and its errors.

use std::time::Duration;

use e2e::{command_client, item, pb, read_log, start_command_service};
use shared::proto::command_service_client::CommandServiceClient;
use tempfile::TempDir;
use tonic::transport::Channel;
use tonic::Code;

type Client = CommandServiceClient<Channel>;

async fn create(client: &mut Client, order_id: &str) {
    client
        .create_order(pb::CreateOrderRequest {
            order_id: order_id.into(),
            customer_id: "cust-1".into(),
            items: vec![item("base", 1, 100)],
            ..Default::default()
        })
        .await
        .expect("create");
}

/// `count` AddItem commands on `order_id`, one after the other.
async fn add_items(mut client: Client, order_id: String, count: u32) {
    for n in 0..count {
        client
            .add_item(pb::AddItemRequest {
                order_id: order_id.clone(),
                item: Some(item(&format!("sku-{}", n % 50), 1, 10)),
                ..Default::default()
            })
            .await
            .expect("add item");
    }
}

/// Writes `orders` orders with `1 + adds` events each, from one task per
/// order at once, so their events interleave in the log across many groups.
async fn write_interleaved(client: &Client, orders: &[String], adds: u32) {
    let mut tasks = Vec::new();
    for id in orders {
        let mut c = client.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            create(&mut c, &id).await;
            add_items(c, id, adds).await;
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

fn request(
    order_id: &str,
    after_version: u64,
    page_size: u32,
    token: &str,
) -> pb::ListOrderEventsRequest {
    pb::ListOrderEventsRequest {
        order_id: order_id.into(),
        after_version,
        page_size,
        page_token: token.into(),
    }
}

/// Every event of `order_id` after `after_version`, page by page; also the
/// number of pages it took.
async fn whole_history(
    client: &mut Client,
    order_id: &str,
    after_version: u64,
    page_size: u32,
) -> (Vec<pb::EventEnvelope>, usize) {
    let (mut events, mut pages, mut token) = (Vec::new(), 0, String::new());
    loop {
        let page = client
            .list_order_events(request(order_id, after_version, page_size, &token))
            .await
            .expect("list order events")
            .into_inner();
        pages += 1;
        assert!(
            page_size == 0 || page.events.len() <= page_size as usize,
            "a page holds at most page_size events"
        );
        events.extend(page.events);
        if page.next_page_token.is_empty() {
            return (events, pages);
        }
        token = page.next_page_token;
    }
}

/// The log's events of `order_id`, in log order.
fn of_order(log: &[pb::EventEnvelope], order_id: &str) -> Vec<pb::EventEnvelope> {
    log.iter()
        .filter(|e| e.order_id == order_id)
        .cloned()
        .collect()
}

fn versions(events: &[pb::EventEnvelope]) -> Vec<u64> {
    events.iter().map(|e| e.version).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_orders_history_is_its_events_in_version_order_across_groups_and_pages() {
    let dir = TempDir::new().unwrap();
    let svc = start_command_service(dir.path());
    let mut client = command_client(&svc).await;
    let orders: Vec<String> = (0..4).map(|n| format!("hist-{n}")).collect();
    write_interleaved(&client, &orders, 60).await;
    let log = read_log(&mut client, 0).await;
    assert_eq!(log.len(), 4 * 61);

    for id in &orders {
        let expected = of_order(&log, id);
        assert_eq!(versions(&expected), (1..=61).collect::<Vec<_>>());
        assert!(
            expected
                .windows(2)
                .any(|w| w[1].position > w[0].position + 1),
            "the orders' events interleave in the log"
        );
        // The envelopes exactly as SubscribeEvents streams them, in every page size.
        for page_size in [1, 7, 60, 61, 1000] {
            let (history, pages) = whole_history(&mut client, id, 0, page_size).await;
            assert_eq!(history, expected, "{id}, page_size {page_size}");
            // The last page is the one that ends the history: no empty page after it.
            assert_eq!(
                pages,
                61usize.div_ceil(page_size as usize),
                "{id}, page_size {page_size}"
            );
        }
        // No page_size: the default page (100) holds all 61.
        let (history, pages) = whole_history(&mut client, id, 0, 0).await;
        assert_eq!((history.len(), pages), (61, 1));
        // after_version: only what follows it.
        let (after_10, _) = whole_history(&mut client, id, 10, 9).await;
        assert_eq!(after_10, expected[10..].to_vec());
        let (after_all, pages) = whole_history(&mut client, id, 61, 0).await;
        assert_eq!((after_all.len(), pages), (0, 1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_page_token_goes_on_where_it_left_off_while_events_are_written() {
    let dir = TempDir::new().unwrap();
    let svc = start_command_service(dir.path());
    let mut client = command_client(&svc).await;
    let orders = vec!["paged".to_owned(), "other".to_owned()];
    write_interleaved(&client, &orders, 20).await;

    let first = client
        .list_order_events(request("paged", 0, 8, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(versions(&first.events), (1..=8).collect::<Vec<_>>());
    assert!(!first.next_page_token.is_empty());
    // More events for both orders before the next page is asked for.
    add_items(client.clone(), "paged".into(), 5).await;
    add_items(client.clone(), "other".into(), 5).await;

    let mut seen = first.events;
    let mut token = first.next_page_token;
    while !token.is_empty() {
        let page = client
            .list_order_events(request("paged", 0, 8, &token))
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.events);
        token = page.next_page_token;
    }
    assert_eq!(versions(&seen), (1..=26).collect::<Vec<_>>());
    let log = read_log(&mut client, 0).await;
    assert_eq!(seen, of_order(&log, "paged"));

    // The same token read twice gives the same page.
    let again = client
        .list_order_events(request("paged", 0, 8, ""))
        .await
        .unwrap()
        .into_inner();
    let second_a = client
        .list_order_events(request("paged", 0, 8, &again.next_page_token))
        .await
        .unwrap()
        .into_inner();
    let second_b = client
        .list_order_events(request("paged", 0, 8, &again.next_page_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second_a, second_b);
    assert_eq!(versions(&second_a.events), (9..=16).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unknown_order_is_not_found_and_a_bad_request_names_its_field() {
    let dir = TempDir::new().unwrap();
    let svc = start_command_service(dir.path());
    let mut client = command_client(&svc).await;
    write_interleaved(&client, &["known".to_owned(), "other".to_owned()], 3).await;

    let status = client
        .list_order_events(request("nobody", 0, 0, ""))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(status.message().contains("nobody"), "{status:?}");

    let token = client
        .list_order_events(request("known", 0, 1, ""))
        .await
        .unwrap()
        .into_inner()
        .next_page_token;
    let token_of_other = client
        .list_order_events(request("other", 0, 1, ""))
        .await
        .unwrap()
        .into_inner()
        .next_page_token;
    for bad in ["not-a-token", &token[..token.len() - 1], &token_of_other] {
        let status = client
            .list_order_events(request("known", 0, 0, bad))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{bad}: {status:?}");
        assert!(status.message().starts_with("page_token:"), "{status:?}");
    }
    for bad_id in ["", "a b", &"x".repeat(65)] {
        let status = client
            .list_order_events(request(bad_id, 0, 0, ""))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{bad_id:?}");
        assert!(status.message().starts_with("order_id:"), "{status:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_history_is_whole_after_a_kill_9_and_a_restart() {
    let dir = TempDir::new().unwrap();
    let mut svc = start_command_service(dir.path());
    let client = command_client(&svc).await;
    let orders: Vec<String> = (0..3).map(|n| format!("crash-{n}")).collect();
    write_interleaved(&client, &orders, 40).await;
    // Straight after the last acknowledgement: the latest groups are only in
    // the write-ahead log, not yet in a checkpoint of sled.
    svc.kill();

    let svc = start_command_service(dir.path());
    let mut client = command_client(&svc).await;
    let log = read_log(&mut client, 0).await;
    assert_eq!(log.len(), 3 * 41);
    for id in &orders {
        let (history, _) = whole_history(&mut client, id, 0, 16).await;
        assert_eq!(history, of_order(&log, id), "{id}");
        assert_eq!(versions(&history), (1..=41).collect::<Vec<_>>());
    }
    // Writing goes on, and the new events join the history.
    add_items(client.clone(), orders[0].clone(), 2).await;
    let (history, _) = tokio::time::timeout(
        Duration::from_secs(30),
        whole_history(&mut client, &orders[0], 40, 0),
    )
    .await
    .unwrap();
    assert_eq!(versions(&history), vec![41, 42, 43]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_history_takes_the_command_token_when_auth_is_on() {
    let dir = TempDir::new().unwrap();
    let mut args = e2e::command_args(dir.path(), "127.0.0.1:0");
    args.extend(["--auth-token".to_owned(), "history-secret".to_owned()]);
    let svc = e2e::Service::spawn("command-service", &args, &[]);
    let mut client = command_client(&svc).await;
    let status = client
        .list_order_events(request("any", 0, 0, ""))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    let mut with_token = tonic::Request::new(request("any", 0, 0, ""));
    with_token
        .metadata_mut()
        .insert("authorization", "Bearer history-secret".parse().unwrap());
    let status = client.list_order_events(with_token).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "past auth: {status:?}");
}

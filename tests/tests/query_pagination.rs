//! Page tokens stay stable while orders are being created: walking
//! `ListRecentOrders` and `ListCustomerOrders` page by page never repeats or
//! skips an order that existed when the walk began.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use e2e::queries::{page, List};
use e2e::{
    command_client, eventually, pb, query_client, start_command_service, start_query_service,
};
use futures::future::join_all;
use tempfile::TempDir;

const CUSTOMERS: [&str; 3] = ["pc-0", "pc-1", "pc-2"];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pages_neither_repeat_nor_skip_while_orders_are_created() {
    let dir = TempDir::new().unwrap();
    let cmd = start_command_service(&dir.path().join("command"));
    let qs = start_query_service(&dir.path().join("query"), &cmd.endpoint());
    let q = query_client(&qs).await;

    // The orders that exist when the walks begin.
    let creators = (0..6).map(|t| {
        let channel_cmd = &cmd;
        async move {
            let mut c = command_client(channel_cmd).await;
            let mut made = Vec::new();
            for i in 0..25 {
                let r = c
                    .create_order(pb::CreateOrderRequest {
                        order_id: format!("init-{t}-{i}"),
                        customer_id: CUSTOMERS[(t + i) % 3].to_owned(),
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                made.push((r.order_id, CUSTOMERS[(t + i) % 3], r.position));
            }
            made
        }
    });
    let initial: Vec<_> = join_all(creators).await.into_iter().flatten().collect();
    let start_position = initial.iter().map(|o| o.2).max().unwrap();

    // Other clients keep creating orders for the same customers during the walks.
    let stop = Arc::new(AtomicBool::new(false));
    let created_meanwhile = Arc::new(AtomicU64::new(0));
    let mut background = Vec::new();
    for t in 0..2 {
        let mut c = command_client(&cmd).await;
        let stop = Arc::clone(&stop);
        let count = Arc::clone(&created_meanwhile);
        background.push(tokio::spawn(async move {
            let mut made = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let r = c
                    .create_order(pb::CreateOrderRequest {
                        order_id: format!("new-{t}-{i}"),
                        customer_id: CUSTOMERS[i % 3].to_owned(),
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                made.push((r.order_id, r.position));
                count.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            made
        }));
    }

    let mut walks = Vec::new();
    for (customer, page_size) in [(None, 7u32), (Some("pc-1"), 4), (Some("pc-2"), 9)] {
        let list = customer.map_or(List::Recent(0), List::Customer);
        let mut walked: Vec<pb::OrderSummary> = Vec::new();
        let mut token = String::new();
        let mut pages = 0;
        loop {
            // Make sure new orders really are created between any two pages.
            let before = created_meanwhile.load(Ordering::Relaxed);
            eventually("a concurrent create", Duration::from_secs(10), || {
                let n = created_meanwhile.load(Ordering::Relaxed);
                async move { (n > before).then_some(()) }
            })
            .await;
            let (orders, next) = page(&q, list, page_size, token, start_position).await;
            assert!(orders.len() <= page_size as usize);
            pages += 1;
            walked.extend(orders);
            if next.is_empty() {
                break;
            }
            token = next;
        }
        assert!(pages > 3, "the walk of {customer:?} spans several pages");
        walks.push((customer, walked));
    }
    stop.store(true, Ordering::Relaxed);
    let mut created_at: HashMap<String, u64> = initial
        .iter()
        .map(|(id, _, position)| (id.clone(), *position))
        .collect();
    for task in background {
        created_at.extend(task.await.unwrap());
    }
    assert!(created_meanwhile.load(Ordering::Relaxed) > 10);

    for (customer, walked) in walks {
        let expected: HashSet<&str> = initial
            .iter()
            .filter(|o| customer.is_none_or(|c| c == o.1))
            .map(|o| o.0.as_str())
            .collect();
        let ids: HashSet<&str> = walked.iter().map(|o| o.order_id.as_str()).collect();
        let missing: Vec<_> = expected.difference(&ids).collect();
        assert!(
            missing.is_empty(),
            "walk of {customer:?} skipped {missing:?}"
        );
        if let Some(customer) = customer {
            assert!(walked.iter().all(|o| o.customer_id == customer));
        }
        // Strictly newest created first across all pages: no order repeats, and
        // an order created meanwhile can only show up ahead of the cursor.
        let positions: Vec<u64> = walked.iter().map(|o| created_at[&o.order_id]).collect();
        for (i, w) in positions.windows(2).enumerate() {
            assert!(
                w[0] > w[1],
                "walk of {customer:?}: {} (created at {}) follows {} (created at {})",
                walked[i + 1].order_id,
                w[1],
                walked[i].order_id,
                w[0]
            );
        }
    }
}

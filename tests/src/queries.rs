//! Reading query-service whole: many orders at once, every page of a list,
//! the projection status.

use futures::stream::{self, StreamExt};

use crate::clients::QueryClient;
use crate::pb;

/// `GetOrder` for each id (8 at a time), waiting for `min_position`.
pub async fn get_orders(
    query: &QueryClient,
    ids: &[String],
    min_position: u64,
) -> Vec<pb::OrderView> {
    stream::iter(ids.iter().cloned())
        .map(|order_id| {
            let mut q = query.clone();
            async move {
                q.get_order(pb::GetOrderRequest {
                    order_id: order_id.clone(),
                    min_position,
                })
                .await
                .unwrap_or_else(|s| panic!("GetOrder {order_id}: {s}"))
                .into_inner()
                .order
                .expect("order")
            }
        })
        .buffered(8)
        .collect()
        .await
}

pub async fn projection_status(query: &QueryClient) -> pb::GetProjectionStatusResponse {
    query
        .clone()
        .get_projection_status(pb::GetProjectionStatusRequest {})
        .await
        .expect("GetProjectionStatus")
        .into_inner()
}

/// Walks `ListRecentOrders` to the end with `page_size`, optionally filtered.
pub async fn walk_recent(
    query: &QueryClient,
    status: i32,
    page_size: u32,
    min_position: u64,
) -> Vec<pb::OrderSummary> {
    let mut q = query.clone();
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = q
            .list_recent_orders(pb::ListRecentOrdersRequest {
                page_size,
                page_token: token,
                status,
                min_position,
            })
            .await
            .expect("ListRecentOrders")
            .into_inner();
        assert!(page.orders.len() <= page_size as usize);
        out.extend(page.orders);
        if page.next_page_token.is_empty() {
            return out;
        }
        token = page.next_page_token;
    }
}

/// Walks `ListCustomerOrders` for `customer_id` to the end with `page_size`.
pub async fn walk_customer(
    query: &QueryClient,
    customer_id: &str,
    page_size: u32,
    min_position: u64,
) -> Vec<pb::OrderSummary> {
    let mut q = query.clone();
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = q
            .list_customer_orders(pb::ListCustomerOrdersRequest {
                customer_id: customer_id.to_owned(),
                page_size,
                page_token: token,
                min_position,
            })
            .await
            .expect("ListCustomerOrders")
            .into_inner();
        out.extend(page.orders);
        if page.next_page_token.is_empty() {
            return out;
        }
        token = page.next_page_token;
    }
}

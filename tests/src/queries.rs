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

/// A list query, to page through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum List<'a> {
    /// `ListRecentOrders` filtered by a status (0: every order).
    Recent(i32),
    /// `ListCustomerOrders` of one customer.
    Customer(&'a str),
}

/// One page of `list`: its orders and the token for the next (empty on the last).
pub async fn page(
    query: &QueryClient,
    list: List<'_>,
    page_size: u32,
    page_token: String,
    min_position: u64,
) -> (Vec<pb::OrderSummary>, String) {
    let mut q = query.clone();
    match list {
        List::Recent(status) => {
            let r = q
                .list_recent_orders(pb::ListRecentOrdersRequest {
                    page_size,
                    page_token,
                    status,
                    min_position,
                })
                .await
                .expect("ListRecentOrders")
                .into_inner();
            (r.orders, r.next_page_token)
        }
        List::Customer(customer_id) => {
            let r = q
                .list_customer_orders(pb::ListCustomerOrdersRequest {
                    customer_id: customer_id.to_owned(),
                    page_size,
                    page_token,
                    min_position,
                })
                .await
                .expect("ListCustomerOrders")
                .into_inner();
            (r.orders, r.next_page_token)
        }
    }
}

/// Walks `list` to the end with `page_size`; no page holds more than that.
pub async fn walk(
    query: &QueryClient,
    list: List<'_>,
    page_size: u32,
    min_position: u64,
) -> Vec<pb::OrderSummary> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let (orders, next) = page(query, list, page_size, token, min_position).await;
        assert!(
            orders.len() <= page_size as usize,
            "{list:?}: page too long"
        );
        out.extend(orders);
        if next.is_empty() {
            return out;
        }
        token = next;
    }
}

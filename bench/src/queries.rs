//! Queries: three `GetOrder`s of a random known order for every
//! `ListRecentOrders` page (20 newest, all statuses or one), over a set of orders.

use std::sync::Arc;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shared::proto as pb;
use shared::proto::query_service_client::QueryServiceClient;
use tonic::transport::Channel;
use tonic::Status;

use crate::load::{Recorder, Workload};

pub struct Queries {
    pub channels: Vec<Channel>,
    pub order_ids: Arc<Vec<String>>,
}

pub struct Worker {
    client: QueryServiceClient<Channel>,
    rng: StdRng,
}

/// Collects up to `limit` order ids, newest first, by paging `ListRecentOrders`.
pub async fn collect_ids(channel: Channel, limit: usize) -> Result<Vec<String>, Status> {
    let mut client = QueryServiceClient::new(channel);
    let mut ids = Vec::with_capacity(limit);
    let mut token = String::new();
    while ids.len() < limit {
        let page = client
            .list_recent_orders(pb::ListRecentOrdersRequest {
                page_size: 500,
                page_token: token,
                ..Default::default()
            })
            .await?
            .into_inner();
        ids.extend(page.orders.into_iter().map(|o| o.order_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    ids.truncate(limit);
    Ok(ids)
}

impl Workload for Queries {
    type State = Worker;

    fn series(&self) -> Vec<&'static str> {
        vec!["query", "GetOrder", "ListRecentOrders"]
    }

    async fn start(&self, index: usize) -> Result<Worker, Status> {
        if self.order_ids.is_empty() {
            return Err(Status::failed_precondition("no orders to query"));
        }
        Ok(Worker {
            client: QueryServiceClient::new(self.channels[index % self.channels.len()].clone()),
            rng: StdRng::seed_from_u64(index as u64),
        })
    }

    async fn step(&self, w: &mut Worker, rec: &mut Recorder) -> Result<(), Status> {
        let pick: u32 = w.rng.random_range(0..4);
        let sent = Instant::now();
        let series = if pick < 3 {
            let id = &self.order_ids[w.rng.random_range(0..self.order_ids.len())];
            let response = w
                .client
                .get_order(pb::GetOrderRequest {
                    order_id: id.clone(),
                    min_position: 0,
                })
                .await?;
            if response.get_ref().order.is_none() {
                return Err(Status::internal("GetOrder answered without an order"));
            }
            1
        } else {
            let status = match w.rng.random_range(0..3) {
                0 => pb::OrderStatus::Unspecified,
                1 => pb::OrderStatus::Draft,
                _ => pb::OrderStatus::Placed,
            };
            w.client
                .list_recent_orders(pb::ListRecentOrdersRequest {
                    page_size: 20,
                    status: status.into(),
                    ..Default::default()
                })
                .await?;
            2
        };
        let latency = sent.elapsed();
        rec.request(latency);
        rec.record(series, latency);
        Ok(())
    }
}

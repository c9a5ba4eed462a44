//! Durable commands: each worker walks orders through create, three `AddItem`s
//! and place, one command per step, every one acknowledged only after its flush.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use shared::proto as pb;
use shared::proto::command_service_client::CommandServiceClient;
use tonic::transport::Channel;
use tonic::Status;

use crate::load::{Recorder, Workload};

/// Steps per order: create, add, add, add, place.
pub const STEPS_PER_ORDER: u64 = 5;

pub struct Commands {
    pub channels: Vec<Channel>,
    /// Prefix of every order id, so runs against a running service never collide.
    pub run_id: String,
    /// The highest log position acknowledged so far.
    pub head: Arc<AtomicU64>,
}

pub struct Worker {
    client: CommandServiceClient<Channel>,
    index: usize,
    orders: u64,
    order_id: String,
    stage: u64,
    version: u64,
}

impl Worker {
    fn next_order(&mut self, run_id: &str) {
        self.orders += 1;
        self.order_id = format!("{run_id}-{}-{}", self.index, self.orders);
        self.stage = 0;
        self.version = 0;
    }
}

pub fn line(sku: u64, quantity: u32) -> pb::LineItem {
    pb::LineItem {
        sku: format!("sku-{:03}", sku % 200),
        quantity,
        unit_price_cents: 199 + i64::try_from(sku % 50).unwrap_or(0) * 100,
    }
}

/// A typical command request (`AddItem`), for sizing the echo baseline.
pub fn sample_request() -> pb::AddItemRequest {
    pb::AddItemRequest {
        order_id: "r1a2b3c4-12-123456".to_owned(),
        item: Some(line(17, 2)),
        expected_version: Some(3),
        command_id: "r1a2b3c4-12-123456-3".to_owned(),
    }
}

/// A typical command result, for sizing the echo baseline.
pub fn sample_response() -> pb::AddItemResponse {
    pb::AddItemResponse {
        order_id: "r1a2b3c4-12-123456".to_owned(),
        version: 4,
        position: 123_456,
    }
}

impl Workload for Commands {
    type State = Worker;

    fn series(&self) -> Vec<&'static str> {
        vec!["command"]
    }

    async fn start(&self, index: usize) -> Result<Worker, Status> {
        let mut worker = Worker {
            client: CommandServiceClient::new(self.channels[index % self.channels.len()].clone()),
            index,
            orders: 0,
            order_id: String::new(),
            stage: 0,
            version: 0,
        };
        worker.next_order(&self.run_id);
        Ok(worker)
    }

    async fn step(&self, w: &mut Worker, rec: &mut Recorder) -> Result<(), Status> {
        let order_id = w.order_id.clone();
        let command_id = format!("{order_id}-{}", w.stage);
        let expected_version = Some(w.version);
        let seed = w.orders * 7 + w.stage;
        let sent = Instant::now();
        let result = match w.stage {
            0 => w
                .client
                .create_order(pb::CreateOrderRequest {
                    order_id,
                    customer_id: format!("cust-{}", w.orders % 500),
                    items: vec![line(seed, 1)],
                    currency: "EUR".to_owned(),
                    command_id,
                })
                .await
                .map(|r| r.into_inner().position_and_version()),
            1..=3 => w
                .client
                .add_item(pb::AddItemRequest {
                    order_id,
                    item: Some(line(seed, 2)),
                    expected_version,
                    command_id,
                })
                .await
                .map(|r| r.into_inner().position_and_version()),
            _ => w
                .client
                .place_order(pb::PlaceOrderRequest {
                    order_id,
                    expected_version,
                    command_id,
                })
                .await
                .map(|r| r.into_inner().position_and_version()),
        };
        match result {
            Ok((position, version)) => {
                rec.request(sent.elapsed());
                self.head.fetch_max(position, Ordering::Relaxed);
                w.version = version;
                w.stage += 1;
                if w.stage == STEPS_PER_ORDER {
                    w.next_order(&self.run_id);
                }
                Ok(())
            }
            Err(status) => {
                w.next_order(&self.run_id);
                Err(status)
            }
        }
    }
}

/// The two numbers every command result carries.
pub trait CommandResult {
    fn position_and_version(&self) -> (u64, u64);
}

macro_rules! command_result {
    ($($t:ty),*) => {$(
        impl CommandResult for $t {
            fn position_and_version(&self) -> (u64, u64) {
                (self.position, self.version)
            }
        }
    )*};
}

command_result!(
    pb::CreateOrderResponse,
    pb::AddItemResponse,
    pb::PlaceOrderResponse
);

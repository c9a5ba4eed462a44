//! End to end: a command is acknowledged, then how long until a reader sees it,
//! through a `GetOrder` with `min_position` and through an open `WatchOrder`.
//! Each worker owns one order, adds items to it and watches it.

use std::time::{Duration, Instant};

use shared::proto as pb;
use shared::proto::command_service_client::CommandServiceClient;
use shared::proto::query_service_client::QueryServiceClient;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

use crate::load::{Recorder, Workload};

/// Adds per order before a worker moves on to a new one (a line holds 10,000).
const ADDS_PER_ORDER: u64 = 5_000;
const WATCH_TIMEOUT: Duration = Duration::from_secs(10);

pub struct EndToEnd {
    pub command: Vec<Channel>,
    pub query: Vec<Channel>,
    pub run_id: String,
}

pub struct Worker {
    commands: CommandServiceClient<Channel>,
    queries: QueryServiceClient<Channel>,
    watch: Streaming<pb::WatchOrderResponse>,
    index: usize,
    orders: u64,
    order_id: String,
    adds: u64,
}

impl EndToEnd {
    /// Creates a new order for the worker and opens its watch.
    async fn open(
        &self,
        index: usize,
        orders: u64,
        commands: &mut CommandServiceClient<Channel>,
        queries: &mut QueryServiceClient<Channel>,
    ) -> Result<(String, Streaming<pb::WatchOrderResponse>), Status> {
        let order_id = format!("{}-e2e-{index}-{orders}", self.run_id);
        let created = commands
            .create_order(pb::CreateOrderRequest {
                order_id: order_id.clone(),
                customer_id: format!("e2e-{index}"),
                items: vec![crate::commands::line(1, 1)],
                currency: "EUR".to_owned(),
                command_id: String::new(),
            })
            .await?
            .into_inner();
        queries
            .get_order(pb::GetOrderRequest {
                order_id: order_id.clone(),
                min_position: created.position,
            })
            .await?;
        let mut watch = queries
            .watch_order(pb::WatchOrderRequest {
                order_id: order_id.clone(),
            })
            .await?
            .into_inner();
        // The current view comes first.
        watch
            .message()
            .await?
            .ok_or_else(|| Status::unavailable("watch ended"))?;
        Ok((order_id, watch))
    }
}

/// Reads the watch until it shows `position` or later.
async fn watch_until(
    watch: &mut Streaming<pb::WatchOrderResponse>,
    position: u64,
) -> Result<(), Status> {
    loop {
        let message = watch
            .message()
            .await?
            .ok_or_else(|| Status::unavailable("watch ended"))?;
        if message.order.is_some_and(|o| o.last_position >= position) {
            return Ok(());
        }
    }
}

impl Workload for EndToEnd {
    type State = Worker;

    fn series(&self) -> Vec<&'static str> {
        vec!["ack", "ack->query", "ack->watch"]
    }

    async fn start(&self, index: usize) -> Result<Worker, Status> {
        let mut commands =
            CommandServiceClient::new(self.command[index % self.command.len()].clone());
        let mut queries = QueryServiceClient::new(self.query[index % self.query.len()].clone());
        let (order_id, watch) = self.open(index, 0, &mut commands, &mut queries).await?;
        Ok(Worker {
            commands,
            queries,
            watch,
            index,
            orders: 0,
            order_id,
            adds: 0,
        })
    }

    async fn step(&self, w: &mut Worker, rec: &mut Recorder) -> Result<(), Status> {
        if w.adds >= ADDS_PER_ORDER {
            w.orders += 1;
            let (order_id, watch) = self
                .open(w.index, w.orders, &mut w.commands, &mut w.queries)
                .await?;
            w.order_id = order_id;
            w.watch = watch;
            w.adds = 0;
        }
        w.adds += 1;
        let sent = Instant::now();
        let ack = w
            .commands
            .add_item(pb::AddItemRequest {
                order_id: w.order_id.clone(),
                item: Some(crate::commands::line(1, 1)),
                expected_version: None,
                command_id: String::new(),
            })
            .await?
            .into_inner();
        let acked = Instant::now();
        rec.request(acked - sent);
        let mut queries = w.queries.clone();
        let order_id = w.order_id.clone();
        let stream = &mut w.watch;
        let query = async {
            queries
                .get_order(pb::GetOrderRequest {
                    order_id,
                    min_position: ack.position,
                })
                .await?;
            Ok::<_, Status>(acked.elapsed())
        };
        let watch = async {
            tokio::time::timeout(WATCH_TIMEOUT, watch_until(stream, ack.position))
                .await
                .map_err(|_| Status::deadline_exceeded("watch did not show the change"))??;
            Ok::<_, Status>(acked.elapsed())
        };
        let (query, watch) = tokio::join!(query, watch);
        rec.record(1, query?);
        rec.record(2, watch?);
        Ok(())
    }
}

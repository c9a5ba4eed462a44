//! The query side's expected answers, computed only from what the command side
//! acknowledged: a model order per acknowledged command sequence, the analytics
//! the SPEC defines over those orders, and a randomized workload that drives
//! command-service while building the model.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shared::convert::timestamp_from_proto;
use shared::proto as pb;
use shared::proto::command_service_client::CommandServiceClient;
use shared::proto::query_service_client::QueryServiceClient;
use tonic::transport::Channel;
use tonic::Code;

use pb::event_envelope::Event as E;
use pb::OrderStatus as S;

/// One order as the acknowledged commands left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelOrder {
    pub order_id: String,
    pub customer_id: String,
    pub currency: String,
    pub status: S,
    /// (sku, quantity, unit price), in the order each sku was first added.
    pub lines: Vec<(String, u32, i64)>,
    pub version: u64,
    /// The position of the last acknowledged command on this order.
    pub last_position: u64,
    pub was_placed: bool,
    pub carrier: String,
    pub tracking_number: String,
    pub cancel_reason: String,
}

impl ModelOrder {
    pub fn total_cents(&self) -> i64 {
        self.lines.iter().map(|l| i64::from(l.1) * l.2).sum()
    }

    pub fn item_count(&self) -> u64 {
        self.lines.iter().map(|l| u64::from(l.1)).sum()
    }

    fn line(&self, sku: &str) -> Option<&(String, u32, i64)> {
        self.lines.iter().find(|l| l.0 == sku)
    }

    fn add(&mut self, sku: &str, quantity: u32, price: i64) {
        match self.lines.iter_mut().find(|l| l.0 == sku) {
            Some(line) => line.1 += quantity,
            None => self.lines.push((sku.to_owned(), quantity, price)),
        }
    }

    fn remove(&mut self, sku: &str, quantity: u32) {
        let index = self.lines.iter().position(|l| l.0 == sku).expect("line");
        let line = &mut self.lines[index];
        if quantity == 0 || quantity >= line.1 {
            self.lines.remove(index);
        } else {
            line.1 -= quantity;
        }
    }

    /// Panics, naming the order and the field, unless `view` shows this order.
    pub fn assert_view(&self, view: &pb::OrderView) {
        let id = &self.order_id;
        assert_eq!(view.order_id, *id);
        assert_eq!(view.customer_id, self.customer_id, "{id}: customer_id");
        assert_eq!(view.status, self.status as i32, "{id}: status");
        let lines: Vec<_> = view
            .lines
            .iter()
            .map(|l| {
                assert_eq!(
                    l.line_total_cents,
                    i64::from(l.quantity) * l.unit_price_cents,
                    "{id}: line_total_cents of {}",
                    l.sku
                );
                (l.sku.clone(), l.quantity, l.unit_price_cents)
            })
            .collect();
        assert_eq!(lines, self.lines, "{id}: lines");
        assert_eq!(view.total_cents, self.total_cents(), "{id}: total_cents");
        assert_eq!(view.item_count, self.item_count(), "{id}: item_count");
        assert_eq!(view.currency, self.currency, "{id}: currency");
        assert_eq!(view.version, self.version, "{id}: version");
        assert_eq!(
            view.last_position, self.last_position,
            "{id}: last_position"
        );
        assert!(view.created_at.is_some(), "{id}: created_at");
        assert!(view.updated_at.is_some(), "{id}: updated_at");
        assert_eq!(view.placed_at.is_some(), self.was_placed, "{id}: placed_at");
        assert_eq!(
            view.shipped_at.is_some(),
            self.status == S::Shipped,
            "{id}: shipped_at"
        );
        assert_eq!(
            view.cancelled_at.is_some(),
            self.status == S::Cancelled,
            "{id}: cancelled_at"
        );
        assert_eq!(view.carrier, self.carrier, "{id}: carrier");
        assert_eq!(
            view.tracking_number, self.tracking_number,
            "{id}: tracking_number"
        );
        assert_eq!(
            view.cancel_reason, self.cancel_reason,
            "{id}: cancel_reason"
        );
    }
}

/// Every order the workload created, and the highest position acknowledged.
#[derive(Debug, Default, Clone)]
pub struct Model {
    pub orders: BTreeMap<String, ModelOrder>,
    pub max_position: u64,
    pub commands_acknowledged: usize,
    pub commands_rejected: usize,
}

/// UTC placement date of every order placed, from the command side's own log.
pub fn placement_dates(log: &[pb::EventEnvelope]) -> HashMap<String, String> {
    log.iter()
        .filter_map(|e| match &e.event {
            Some(E::OrderPlaced(p)) => {
                let at = timestamp_from_proto(p.placed_at.as_ref().expect("placed_at"));
                Some((e.order_id.clone(), at.utc_date()))
            }
            _ => None,
        })
        .collect()
}

impl Model {
    /// `OrderAnalytics` exactly as the SPEC defines each field.
    pub fn analytics(&self, dates: &HashMap<String, String>, top_n: usize) -> pb::OrderAnalytics {
        let mut a = pb::OrderAnalytics {
            total_orders: self.orders.len() as u64,
            ..Default::default()
        };
        let mut products: BTreeMap<String, (u64, i64)> = BTreeMap::new();
        let mut daily: BTreeMap<String, (u64, i64)> = BTreeMap::new();
        let mut paying = 0i64;
        for order in self.orders.values() {
            match order.status {
                S::Draft => a.draft_orders += 1,
                S::Placed => a.placed_orders += 1,
                S::Shipped => a.shipped_orders += 1,
                S::Cancelled => a.cancelled_orders += 1,
                S::Unspecified => unreachable!(),
            }
            if matches!(order.status, S::Placed | S::Shipped) {
                paying += 1;
                a.placed_revenue_cents += order.total_cents();
                for (sku, quantity, price) in &order.lines {
                    let p = products.entry(sku.clone()).or_default();
                    p.0 += u64::from(*quantity);
                    p.1 += i64::from(*quantity) * price;
                }
                let date = dates.get(&order.order_id).unwrap_or_else(|| {
                    panic!("{} placed but no OrderPlaced in the log", order.order_id)
                });
                let d = daily.entry(date.clone()).or_default();
                d.0 += 1;
                d.1 += order.total_cents();
            }
        }
        a.average_order_value_cents = if paying == 0 {
            0
        } else {
            a.placed_revenue_cents / paying
        };
        let mut top: Vec<_> = products.into_iter().collect();
        top.sort_by(|x, y| y.1 .0.cmp(&x.1 .0).then(x.0.cmp(&y.0)));
        a.top_products = top
            .into_iter()
            .take(top_n)
            .map(|(sku, (quantity, revenue_cents))| pb::ProductStat {
                sku,
                quantity,
                revenue_cents,
            })
            .collect();
        a.daily = daily
            .into_iter()
            .map(|(date, (orders_placed, revenue_cents))| pb::DailyStat {
                date,
                orders_placed,
                revenue_cents,
            })
            .collect();
        a
    }

    /// Asserts `GetOrder` for every order and `GetOrderAnalytics` equal the model.
    pub async fn assert_query_side(
        &self,
        query: &QueryServiceClient<Channel>,
        dates: &HashMap<String, String>,
    ) {
        let ids: Vec<String> = self.orders.keys().cloned().collect();
        let views = get_orders(query, &ids, self.max_position).await;
        for (id, view) in ids.iter().zip(&views) {
            self.orders[id].assert_view(view);
        }
        let mut q = query.clone();
        for top_n in [0u32, 3, 1000] {
            let analytics = q
                .get_order_analytics(pb::GetOrderAnalyticsRequest {
                    min_position: self.max_position,
                    top_n,
                })
                .await
                .expect("GetOrderAnalytics")
                .into_inner()
                .analytics
                .expect("analytics");
            let expected = self.analytics(dates, if top_n == 0 { 10 } else { top_n as usize });
            assert_eq!(analytics, expected, "analytics with top_n {top_n}");
        }
    }
}

/// `GetOrder` for each id (8 at a time), waiting for `min_position`.
pub async fn get_orders(
    query: &QueryServiceClient<Channel>,
    ids: &[String],
    min_position: u64,
) -> Vec<pb::OrderView> {
    use futures::stream::{self, StreamExt};
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

/// Polls `check` until it returns `Some`, panicking with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn projection_status(
    query: &QueryServiceClient<Channel>,
) -> pb::GetProjectionStatusResponse {
    query
        .clone()
        .get_projection_status(pb::GetProjectionStatusRequest {})
        .await
        .expect("GetProjectionStatus")
        .into_inner()
}

// ---- the randomized workload ----

const SKUS: usize = 40;
const CUSTOMERS: usize = 50;

/// Every sku has one price; the workload sometimes offers another to be refused.
fn price(sku: usize) -> i64 {
    99 + (sku as i64) * 37
}

fn sku(i: usize) -> String {
    format!("sku-{i:02}")
}

/// A command of the workload, with whether the model says it must succeed.
struct Step {
    request: Request,
    expect_ok: bool,
    apply: Box<dyn FnOnce(&mut ModelOrder) + Send>,
}

enum Request {
    Add(pb::AddItemRequest),
    Remove(pb::RemoveItemRequest),
    Place(pb::PlaceOrderRequest),
    Ship(pb::ShipOrderRequest),
    Cancel(pb::CancelOrderRequest),
}

type Ack = Result<(u64, u64), tonic::Status>;

async fn send(client: &mut CommandServiceClient<Channel>, request: Request) -> Ack {
    macro_rules! ack {
        ($call:expr) => {
            $call.await.map(|r| {
                let r = r.into_inner();
                (r.version, r.position)
            })
        };
    }
    match request {
        Request::Add(r) => ack!(client.add_item(r)),
        Request::Remove(r) => ack!(client.remove_item(r)),
        Request::Place(r) => ack!(client.place_order(r)),
        Request::Ship(r) => ack!(client.ship_order(r)),
        Request::Cancel(r) => ack!(client.cancel_order(r)),
    }
}

/// Picks the next command for `order`, valid or deliberately not.
fn next_step(rng: &mut StdRng, order: &ModelOrder) -> Step {
    let id = order.order_id.clone();
    let draft = order.status == S::Draft;
    let roll = rng.random_range(0..100);
    // One in ten commands carries a stale expected_version and must be refused.
    let stale = rng.random_range(0..10) == 0;
    let expected_version = if stale {
        Some(order.version + 1 + rng.random_range(0..3))
    } else if rng.random_bool(0.3) {
        Some(order.version)
    } else {
        None
    };
    let version_ok = !stale;
    match roll {
        0..=39 => {
            let s = rng.random_range(0..SKUS);
            let quantity = rng.random_range(1..=5);
            let existing = order.line(&sku(s)).map(|l| l.2);
            let wrong_price = rng.random_range(0..10) == 0;
            let unit_price = if wrong_price { price(s) + 1 } else { price(s) };
            // A sku already in the order at the same price raises the line.
            let fits = existing.is_none_or(|p| p == unit_price)
                && (existing.is_some() || order.lines.len() < 100);
            let sku_name = sku(s);
            Step {
                request: Request::Add(pb::AddItemRequest {
                    order_id: id,
                    item: Some(pb::LineItem {
                        sku: sku_name.clone(),
                        quantity,
                        unit_price_cents: unit_price,
                    }),
                    expected_version,
                    command_id: String::new(),
                }),
                expect_ok: version_ok && draft && fits,
                apply: Box::new(move |o| o.add(&sku_name, quantity, unit_price)),
            }
        }
        40..=54 => {
            // Mostly a sku the order has; sometimes one it has not.
            let (sku_name, held) = if !order.lines.is_empty() && rng.random_range(0..6) != 0 {
                let l = &order.lines[rng.random_range(0..order.lines.len())];
                (l.0.clone(), l.1)
            } else {
                (sku(rng.random_range(0..SKUS)), 0)
            };
            let held = order.line(&sku_name).map_or(0, |l| l.1).max(held);
            let quantity = match rng.random_range(0..4) {
                0 => 0,
                1 => held + 1,
                _ => rng.random_range(1..=held.max(1)),
            };
            let fits = held > 0 && quantity <= held;
            Step {
                request: Request::Remove(pb::RemoveItemRequest {
                    order_id: id,
                    sku: sku_name.clone(),
                    quantity,
                    expected_version,
                    command_id: String::new(),
                }),
                expect_ok: version_ok && draft && fits,
                apply: Box::new(move |o| o.remove(&sku_name, quantity)),
            }
        }
        55..=74 => Step {
            request: Request::Place(pb::PlaceOrderRequest {
                order_id: id,
                expected_version,
                command_id: String::new(),
            }),
            expect_ok: version_ok && draft && !order.lines.is_empty(),
            apply: Box::new(|o| {
                o.status = S::Placed;
                o.was_placed = true;
            }),
        },
        75..=89 => {
            let carrier = format!("carrier-{}", rng.random_range(0..5));
            let tracking = format!("trk-{}", rng.random_range(0..1_000_000));
            let (c, t) = (carrier.clone(), tracking.clone());
            Step {
                request: Request::Ship(pb::ShipOrderRequest {
                    order_id: id,
                    carrier,
                    tracking_number: tracking,
                    expected_version,
                    command_id: String::new(),
                }),
                expect_ok: version_ok && order.status == S::Placed,
                apply: Box::new(move |o| {
                    o.status = S::Shipped;
                    o.carrier = c;
                    o.tracking_number = t;
                }),
            }
        }
        _ => {
            let reason = format!("reason {}", rng.random_range(0..100));
            let r = reason.clone();
            Step {
                request: Request::Cancel(pb::CancelOrderRequest {
                    order_id: id,
                    reason,
                    expected_version,
                    command_id: String::new(),
                }),
                expect_ok: version_ok && matches!(order.status, S::Draft | S::Placed),
                apply: Box::new(move |o| {
                    o.status = S::Cancelled;
                    o.cancel_reason = r;
                }),
            }
        }
    }
}

/// Creates and drives one order through random commands, checking every
/// acknowledgement and refusal against the model.
async fn drive_order(
    client: &mut CommandServiceClient<Channel>,
    order_id: String,
    seed: u64,
    model: &mut Model,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let customer_id = format!("cust-{:02}", rng.random_range(0..CUSTOMERS));
    let currency = ["USD", "EUR", ""][rng.random_range(0..3)];
    let mut order = ModelOrder {
        order_id: order_id.clone(),
        customer_id: customer_id.clone(),
        currency: if currency.is_empty() { "USD" } else { currency }.to_owned(),
        status: S::Draft,
        lines: Vec::new(),
        version: 0,
        last_position: 0,
        was_placed: false,
        carrier: String::new(),
        tracking_number: String::new(),
        cancel_reason: String::new(),
    };
    let mut items = Vec::new();
    let mut first: Vec<usize> = (0..SKUS).collect();
    for _ in 0..rng.random_range(0..4) {
        let s = first.swap_remove(rng.random_range(0..first.len()));
        let quantity = rng.random_range(1..=4);
        items.push(pb::LineItem {
            sku: sku(s),
            quantity,
            unit_price_cents: price(s),
        });
        order.lines.push((sku(s), quantity, price(s)));
    }
    let created = client
        .create_order(pb::CreateOrderRequest {
            order_id: order_id.clone(),
            customer_id,
            items,
            currency: currency.to_owned(),
            command_id: format!("create-{order_id}"),
        })
        .await
        .unwrap_or_else(|s| panic!("CreateOrder {order_id}: {s}"))
        .into_inner();
    assert_eq!(created.version, 1, "{order_id}: version after create");
    order.version = 1;
    order.last_position = created.position;
    model.commands_acknowledged += 1;
    model.max_position = model.max_position.max(created.position);

    for _ in 0..rng.random_range(2..10) {
        if matches!(order.status, S::Shipped | S::Cancelled) && rng.random_bool(0.7) {
            break;
        }
        let step = next_step(&mut rng, &order);
        let describe = match &step.request {
            Request::Add(r) => format!("{r:?}"),
            Request::Remove(r) => format!("{r:?}"),
            Request::Place(r) => format!("{r:?}"),
            Request::Ship(r) => format!("{r:?}"),
            Request::Cancel(r) => format!("{r:?}"),
        };
        match (send(client, step.request).await, step.expect_ok) {
            (Ok((version, position)), true) => {
                (step.apply)(&mut order);
                assert_eq!(version, order.version + 1, "{describe}: version");
                order.version = version;
                order.last_position = position;
                model.commands_acknowledged += 1;
                model.max_position = model.max_position.max(position);
            }
            (Err(status), false) => {
                assert!(
                    matches!(
                        status.code(),
                        Code::FailedPrecondition | Code::Aborted | Code::InvalidArgument
                    ),
                    "{describe}: refused with {status}"
                );
                model.commands_rejected += 1;
            }
            (Ok(_), false) => {
                panic!("{describe} was acknowledged; the model expected a refusal ({order:?})")
            }
            (Err(status), true) => {
                panic!("{describe} was refused ({status}); the model expected success ({order:?})")
            }
        }
    }
    model.orders.insert(order_id, order);
}

/// Runs `orders` random orders against command-service with `concurrency`
/// orders in flight, and returns the model of what it acknowledged.
pub async fn run_workload(
    channel: Channel,
    prefix: &str,
    orders: usize,
    concurrency: usize,
    seed: u64,
) -> Model {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let next = Arc::clone(&next);
        let mut client = CommandServiceClient::new(channel.clone());
        let prefix = prefix.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut model = Model::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= orders {
                    return model;
                }
                let order_id = format!("{prefix}-{i:04}");
                drive_order(
                    &mut client,
                    order_id,
                    seed.wrapping_mul(1_000_003) ^ i as u64,
                    &mut model,
                )
                .await;
            }
        }));
    }
    let mut model = Model::default();
    for task in tasks {
        let part = task.await.expect("workload task");
        model.orders.extend(part.orders);
        model.max_position = model.max_position.max(part.max_position);
        model.commands_acknowledged += part.commands_acknowledged;
        model.commands_rejected += part.commands_rejected;
    }
    model
}

/// A port that was free a moment ago, for a service that must come back on the same address.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("local addr").port()
}

// ---- whole-read-side snapshots, to compare replicas ----

/// Every answer the query side gives about the workload's orders.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadSnapshot {
    pub views: Vec<pb::OrderView>,
    pub analytics: pb::OrderAnalytics,
    pub recent: Vec<pb::OrderSummary>,
    /// ListRecentOrders filtered by each status, Draft..Cancelled.
    pub by_status: Vec<Vec<pb::OrderSummary>>,
    pub by_customer: BTreeMap<String, Vec<pb::OrderSummary>>,
}

/// Walks `ListRecentOrders` to the end with `page_size`, optionally filtered.
pub async fn walk_recent(
    query: &QueryServiceClient<Channel>,
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
    query: &QueryServiceClient<Channel>,
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

impl Model {
    /// Reads every answer about the model's orders from `query`, once it has
    /// applied everything the model acknowledged.
    pub async fn read_snapshot(&self, query: &QueryServiceClient<Channel>) -> ReadSnapshot {
        let ids: Vec<String> = self.orders.keys().cloned().collect();
        let views = get_orders(query, &ids, self.max_position).await;
        let analytics = query
            .clone()
            .get_order_analytics(pb::GetOrderAnalyticsRequest {
                min_position: self.max_position,
                top_n: 1000,
            })
            .await
            .expect("GetOrderAnalytics")
            .into_inner()
            .analytics
            .expect("analytics");
        let recent = walk_recent(query, 0, 37, self.max_position).await;
        let mut by_status = Vec::new();
        for status in [S::Draft, S::Placed, S::Shipped, S::Cancelled] {
            by_status.push(walk_recent(query, status as i32, 50, self.max_position).await);
        }
        let mut by_customer = BTreeMap::new();
        let customers: std::collections::BTreeSet<_> = self
            .orders
            .values()
            .map(|o| o.customer_id.clone())
            .collect();
        for customer in customers {
            let orders = walk_customer(query, &customer, 4, self.max_position).await;
            by_customer.insert(customer, orders);
        }
        ReadSnapshot {
            views,
            analytics,
            recent,
            by_status,
            by_customer,
        }
    }

    /// Checks the lists in `snapshot` hold exactly the model's orders, newest first.
    pub fn assert_lists(&self, snapshot: &ReadSnapshot) {
        let mut listed: Vec<_> = snapshot.recent.iter().map(|o| o.order_id.clone()).collect();
        assert_eq!(listed.len(), self.orders.len(), "ListRecentOrders length");
        listed.sort();
        assert!(
            listed.iter().eq(self.orders.keys()),
            "ListRecentOrders holds every order once"
        );
        let created: Vec<_> = snapshot
            .recent
            .iter()
            .map(|o| {
                let t = o.created_at.expect("created_at");
                (t.seconds, t.nanos)
            })
            .collect();
        assert!(
            created.windows(2).all(|w| w[0] >= w[1]),
            "newest created first"
        );
        for (i, status) in [S::Draft, S::Placed, S::Shipped, S::Cancelled]
            .iter()
            .enumerate()
        {
            let expected = self.orders.values().filter(|o| o.status == *status).count();
            assert_eq!(
                snapshot.by_status[i].len(),
                expected,
                "orders listed as {status:?}"
            );
            assert!(snapshot.by_status[i]
                .iter()
                .all(|o| o.status == *status as i32));
        }
        for (customer, orders) in &snapshot.by_customer {
            let expected = self
                .orders
                .values()
                .filter(|o| &o.customer_id == customer)
                .count();
            assert_eq!(orders.len(), expected, "orders of {customer}");
            assert!(orders.iter().all(|o| &o.customer_id == customer));
        }
    }
}

//! A randomized workload: random orders driven through command-service, each
//! acknowledgement and refusal checked against the model as it goes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;
use tonic::Code;

use crate::clients::CommandClient;
use crate::commands::{describe, send, Cmd};
use crate::model::{Model, ModelOrder};
use crate::pb;
use pb::OrderStatus as S;

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
    cmd: Cmd,
    expect_ok: bool,
    apply: Box<dyn FnOnce(&mut ModelOrder) + Send>,
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
                cmd: Cmd::Add(pb::AddItemRequest {
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
                cmd: Cmd::Remove(pb::RemoveItemRequest {
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
            cmd: Cmd::Place(pb::PlaceOrderRequest {
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
                cmd: Cmd::Ship(pb::ShipOrderRequest {
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
                cmd: Cmd::Cancel(pb::CancelOrderRequest {
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
async fn drive_order(client: &mut CommandClient, order_id: String, seed: u64, model: &mut Model) {
    let mut rng = StdRng::seed_from_u64(seed);
    let customer_id = format!("cust-{:02}", rng.random_range(0..CUSTOMERS));
    let currency = ["USD", "EUR", ""][rng.random_range(0..3)];
    let mut order = ModelOrder::new(
        &order_id,
        &customer_id,
        if currency.is_empty() { "USD" } else { currency },
    );
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
    let create = pb::CreateOrderRequest {
        order_id: order_id.clone(),
        customer_id,
        items,
        currency: currency.to_owned(),
        command_id: format!("create-{order_id}"),
    };
    let created = send(client, create)
        .await
        .unwrap_or_else(|s| panic!("CreateOrder {order_id}: {s}"));
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
        let describe = describe(&step.cmd);
        match (send(client, step.cmd).await, step.expect_ok) {
            (Ok(ack), true) => {
                (step.apply)(&mut order);
                assert_eq!(ack.version, order.version + 1, "{describe}: version");
                order.version = ack.version;
                order.last_position = ack.position;
                model.commands_acknowledged += 1;
                model.max_position = model.max_position.max(ack.position);
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
        let mut client = CommandClient::new(channel.clone());
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
        model.merge(task.await.expect("workload task"));
    }
    model
}

//! What the command-service test files share on top of the `e2e` harness:
//! request builders, one `send` for every command RPC, and assertions on gRPC
//! status codes and on the event log.

// Each test binary compiles this module and uses a different part of it.
#![allow(dead_code)]

pub mod reflection;

use std::collections::HashSet;
use std::future::Future;
use std::process::{Command, ExitStatus};
use std::time::Duration;

use e2e::{pb, read_log, Service};
use shared::proto::command_service_client::CommandServiceClient;
use tonic::transport::Channel;
use tonic::{Code, Status};

pub type Client = CommandServiceClient<Channel>;

/// The three fields every command response carries ("the command result").
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Ack {
    pub order_id: String,
    pub version: u64,
    pub position: u64,
}

pub fn ack(order_id: &str, version: u64, position: u64) -> Ack {
    Ack {
        order_id: order_id.to_owned(),
        version,
        position,
    }
}

macro_rules! ack_from {
    ($($ty:ident),*) => {$(
        impl From<pb::$ty> for Ack {
            fn from(r: pb::$ty) -> Self {
                Ack { order_id: r.order_id, version: r.version, position: r.position }
            }
        }
    )*};
}
ack_from!(
    CreateOrderResponse,
    AddItemResponse,
    RemoveItemResponse,
    PlaceOrderResponse,
    ShipOrderResponse,
    CancelOrderResponse
);

/// The command result an event in the log stands for.
pub fn ack_of(e: &pb::EventEnvelope) -> Ack {
    ack(&e.order_id, e.version, e.position)
}

/// Any command request, so tests can keep tables of them.
#[derive(Debug, Clone, PartialEq)]
pub enum Cmd {
    Create(pb::CreateOrderRequest),
    Add(pb::AddItemRequest),
    Remove(pb::RemoveItemRequest),
    Place(pb::PlaceOrderRequest),
    Ship(pb::ShipOrderRequest),
    Cancel(pb::CancelOrderRequest),
}

macro_rules! cmd_from {
    ($($variant:ident($ty:ident)),*) => {$(
        impl From<pb::$ty> for Cmd {
            fn from(r: pb::$ty) -> Self {
                Cmd::$variant(r)
            }
        }
    )*};
}
cmd_from!(
    Create(CreateOrderRequest),
    Add(AddItemRequest),
    Remove(RemoveItemRequest),
    Place(PlaceOrderRequest),
    Ship(ShipOrderRequest),
    Cancel(CancelOrderRequest)
);

/// Sends one command and returns its result or its status.
pub async fn send(client: &mut Client, cmd: impl Into<Cmd>) -> Result<Ack, Status> {
    match cmd.into() {
        Cmd::Create(r) => client.create_order(r).await.map(|r| r.into_inner().into()),
        Cmd::Add(r) => client.add_item(r).await.map(|r| r.into_inner().into()),
        Cmd::Remove(r) => client.remove_item(r).await.map(|r| r.into_inner().into()),
        Cmd::Place(r) => client.place_order(r).await.map(|r| r.into_inner().into()),
        Cmd::Ship(r) => client.ship_order(r).await.map(|r| r.into_inner().into()),
        Cmd::Cancel(r) => client.cancel_order(r).await.map(|r| r.into_inner().into()),
    }
}

/// Sends a command that must succeed.
pub async fn ok(client: &mut Client, cmd: impl Into<Cmd>) -> Ack {
    let cmd = cmd.into();
    let what = describe(&cmd);
    send(client, cmd)
        .await
        .unwrap_or_else(|s| panic!("{what} failed: {:?}: {}", s.code(), s.message()))
}

/// A short description of a command for failure messages (ids may be huge).
pub fn describe(cmd: &Cmd) -> String {
    let text = format!("{cmd:?}");
    if text.len() > 300 {
        format!("{}... ({} bytes)", &text[..300], text.len())
    } else {
        text
    }
}

// ---- request builders (override fields with `..builder()`) ----

pub fn create(order_id: &str, items: Vec<pb::LineItem>) -> pb::CreateOrderRequest {
    pb::CreateOrderRequest {
        order_id: order_id.to_owned(),
        customer_id: "cust-1".to_owned(),
        items,
        currency: String::new(),
        command_id: String::new(),
    }
}

pub fn add(order_id: &str, item: pb::LineItem) -> pb::AddItemRequest {
    pb::AddItemRequest {
        order_id: order_id.to_owned(),
        item: Some(item),
        expected_version: None,
        command_id: String::new(),
    }
}

pub fn remove(order_id: &str, sku: &str, quantity: u32) -> pb::RemoveItemRequest {
    pb::RemoveItemRequest {
        order_id: order_id.to_owned(),
        sku: sku.to_owned(),
        quantity,
        expected_version: None,
        command_id: String::new(),
    }
}

pub fn place(order_id: &str) -> pb::PlaceOrderRequest {
    pb::PlaceOrderRequest {
        order_id: order_id.to_owned(),
        expected_version: None,
        command_id: String::new(),
    }
}

pub fn ship(order_id: &str) -> pb::ShipOrderRequest {
    pb::ShipOrderRequest {
        order_id: order_id.to_owned(),
        carrier: "DHL".to_owned(),
        tracking_number: "TRACK-1".to_owned(),
        expected_version: None,
        command_id: String::new(),
    }
}

pub fn cancel(order_id: &str, reason: &str) -> pb::CancelOrderRequest {
    pb::CancelOrderRequest {
        order_id: order_id.to_owned(),
        reason: reason.to_owned(),
        expected_version: None,
        command_id: String::new(),
    }
}

/// Sets the optional fields every command shares.
pub fn with(cmd: impl Into<Cmd>, expected_version: Option<u64>, command_id: &str) -> Cmd {
    let mut cmd = cmd.into();
    let key = command_id.to_owned();
    match &mut cmd {
        Cmd::Create(r) => r.command_id = key,
        Cmd::Add(r) => (r.expected_version, r.command_id) = (expected_version, key),
        Cmd::Remove(r) => (r.expected_version, r.command_id) = (expected_version, key),
        Cmd::Place(r) => (r.expected_version, r.command_id) = (expected_version, key),
        Cmd::Ship(r) => (r.expected_version, r.command_id) = (expected_version, key),
        Cmd::Cancel(r) => (r.expected_version, r.command_id) = (expected_version, key),
    }
    cmd
}

// ---- assertions ----

/// Asserts that `result` failed with `code` and returns the status.
#[track_caller]
pub fn expect_code(result: Result<Ack, Status>, code: Code, case: &str) -> Status {
    match result {
        Ok(a) => panic!("{case}: expected {code:?}, but the command succeeded: {a:?}"),
        Err(s) => {
            assert_eq!(
                s.code(),
                code,
                "{case}: wrong code; message: {:?}",
                s.message()
            );
            s
        }
    }
}

/// The unsigned integers written in `text`, in order.
pub fn numbers_in(text: &str) -> Vec<u64> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// The last position of the stored log (0 when empty).
pub async fn log_head(client: &mut Client) -> u64 {
    read_log(client, 0).await.last().map_or(0, |e| e.position)
}

/// Asserts that nothing was appended to the log after `head`.
pub async fn assert_log_unchanged(client: &mut Client, head: u64, case: &str) {
    let grown = read_log(client, head).await;
    assert!(
        grown.is_empty(),
        "{case}: a rejected command wrote to the log: {:?}",
        grown.iter().map(ack_of).collect::<Vec<_>>()
    );
}

/// Asserts that `log` holds positions 1..=len in order, with unique event ids,
/// and every order's versions run 1, 2, 3... in log order.
#[track_caller]
pub fn assert_gap_free(log: &[pb::EventEnvelope]) {
    let positions: Vec<u64> = log.iter().map(|e| e.position).collect();
    let expected: Vec<u64> = (1..=log.len() as u64).collect();
    assert_eq!(positions, expected, "log positions are not 1..=n in order");
    let mut ids = HashSet::new();
    for e in log {
        assert!(
            !e.event_id.is_empty(),
            "event {} has no event_id",
            e.position
        );
        assert!(
            ids.insert(e.event_id.clone()),
            "event_id {} repeated",
            e.event_id
        );
        assert!(e.event.is_some(), "event {} has no payload", e.position);
        assert!(
            e.occurred_at.is_some(),
            "event {} has no occurred_at",
            e.position
        );
    }
    let mut versions = std::collections::HashMap::<&str, u64>::new();
    for e in log {
        let v = versions.entry(e.order_id.as_str()).or_default();
        *v += 1;
        assert_eq!(
            e.version, *v,
            "order {} at position {}: versions are not 1, 2, 3...",
            e.order_id, e.position
        );
    }
}

/// The name of an envelope's event, for readable assertions.
pub fn kind(e: &pb::EventEnvelope) -> &'static str {
    use pb::event_envelope::Event as E;
    match &e.event {
        Some(E::OrderCreated(_)) => "OrderCreated",
        Some(E::ItemAdded(_)) => "ItemAdded",
        Some(E::ItemRemoved(_)) => "ItemRemoved",
        Some(E::OrderPlaced(_)) => "OrderPlaced",
        Some(E::OrderShipped(_)) => "OrderShipped",
        Some(E::OrderCancelled(_)) => "OrderCancelled",
        None => "none",
    }
}

/// Runs `future` with a deadline, failing the test with `what` when it passes.
pub async fn within<T>(what: &str, timeout: Duration, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(timeout, future)
        .await
        .unwrap_or_else(|_| panic!("timed out after {timeout:?}: {what}"))
}

/// SIGTERM, waiting at most `timeout` for the exit; a process that hangs is
/// killed and fails the test.
pub async fn terminate_within(mut svc: Service, timeout: Duration) -> ExitStatus {
    let pid = svc.pid().expect("running");
    let waiting = tokio::task::spawn_blocking(move || svc.terminate());
    match tokio::time::timeout(timeout, waiting).await {
        Ok(status) => status.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("the service did not exit within {timeout:?} of SIGTERM");
        }
    }
}

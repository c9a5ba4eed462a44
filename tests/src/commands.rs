//! The commands of command-service as one model: `Cmd` (any command request),
//! `Ack` (the command result), one `send` for every command RPC, request
//! builders, and assertions on refusals.

use tonic::{Code, Status};

use crate::clients::CommandClient;
use crate::pb;

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
pub async fn send(client: &mut CommandClient, cmd: impl Into<Cmd>) -> Result<Ack, Status> {
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
pub async fn ok(client: &mut CommandClient, cmd: impl Into<Cmd>) -> Ack {
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

/// A line item.
pub fn item(sku: &str, quantity: u32, unit_price_cents: i64) -> pb::LineItem {
    pb::LineItem {
        sku: sku.to_owned(),
        quantity,
        unit_price_cents,
    }
}

pub fn create(order_id: &str, items: Vec<pb::LineItem>) -> pb::CreateOrderRequest {
    pb::CreateOrderRequest {
        order_id: order_id.to_owned(),
        customer_id: "cust-1".to_owned(),
        items,
        currency: String::new(),
        command_id: String::new(),
    }
}

/// A valid create with one line, in EUR, for customer `cust-ops`.
pub fn create_request(order_id: &str) -> pb::CreateOrderRequest {
    pb::CreateOrderRequest {
        customer_id: "cust-ops".to_owned(),
        currency: "EUR".to_owned(),
        ..create(order_id, vec![item("sku-1", 2, 150)])
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

// ---- refusals ----

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

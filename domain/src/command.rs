//! Commands: what a client asks an `Order` to do (imperative names).

use serde::{Deserialize, Serialize};

use super::lines::Line;
use super::values::{CommandId, Currency, CustomerId, OrderId, Sku, Text};

/// One command for one order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    CreateOrder {
        customer_id: CustomerId,
        currency: Currency,
        /// Distinct skus, each validated.
        items: Vec<Line>,
    },
    AddItem {
        item: Line,
    },
    RemoveItem {
        sku: Sku,
        /// 0 removes the whole line.
        quantity: u32,
    },
    PlaceOrder,
    ShipOrder {
        carrier: Text,
        tracking_number: Text,
    },
    CancelOrder {
        reason: Text,
    },
}

impl Command {
    /// The RPC name, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Command::CreateOrder { .. } => "CreateOrder",
            Command::AddItem { .. } => "AddItem",
            Command::RemoveItem { .. } => "RemoveItem",
            Command::PlaceOrder => "PlaceOrder",
            Command::ShipOrder { .. } => "ShipOrder",
            Command::CancelOrder { .. } => "CancelOrder",
        }
    }
}

/// A validated request: everything that makes two requests "the same" for idempotency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRequest {
    /// `None` only for a `CreateOrder` whose id the server must generate.
    pub order_id: Option<OrderId>,
    pub expected_version: Option<u64>,
    pub command: Command,
}

/// A validated request together with its optional idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    pub request: CommandRequest,
    pub command_id: Option<CommandId>,
}

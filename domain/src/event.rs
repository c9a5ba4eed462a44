//! Events: what happened to an `Order` (past-tense names). Each carries what a
//! read model needs, so projections never look anything up or recompute totals.

use serde::{Deserialize, Serialize};

use super::lines::Line;
use super::status::OrderStatus;
use super::values::{CommandId, Currency, CustomerId, OrderId, Sku, Text, Timestamp};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    OrderCreated {
        customer_id: CustomerId,
        currency: Currency,
        items: Vec<Line>,
        total_cents: i64,
        item_count: u64,
    },
    ItemAdded {
        customer_id: CustomerId,
        /// The sku, the quantity added and the unit price.
        item: Line,
        /// Quantity of the line after the event.
        line_quantity: u32,
        total_cents: i64,
        item_count: u64,
    },
    ItemRemoved {
        customer_id: CustomerId,
        sku: Sku,
        /// The quantity removed.
        quantity: u32,
        unit_price_cents: i64,
        /// Quantity of the line after the event; 0: the line is gone.
        line_quantity: u32,
        total_cents: i64,
        item_count: u64,
    },
    OrderPlaced {
        customer_id: CustomerId,
        currency: Currency,
        lines: Vec<Line>,
        total_cents: i64,
        item_count: u64,
        placed_at: Timestamp,
    },
    OrderShipped {
        customer_id: CustomerId,
        carrier: Text,
        tracking_number: Text,
        total_cents: i64,
    },
    OrderCancelled {
        customer_id: CustomerId,
        reason: Text,
        previous_status: OrderStatus,
        lines: Vec<Line>,
        total_cents: i64,
        /// When the order had been placed; `None` for a Draft.
        placed_at: Option<Timestamp>,
    },
}

impl Event {
    pub fn name(&self) -> &'static str {
        match self {
            Event::OrderCreated { .. } => "OrderCreated",
            Event::ItemAdded { .. } => "ItemAdded",
            Event::ItemRemoved { .. } => "ItemRemoved",
            Event::OrderPlaced { .. } => "OrderPlaced",
            Event::OrderShipped { .. } => "OrderShipped",
            Event::OrderCancelled { .. } => "OrderCancelled",
        }
    }
}

/// An event as stored in the log, with its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    /// Global log position: from 1, gap-free, commit order.
    pub position: u64,
    pub event_id: String,
    pub order_id: OrderId,
    /// The order's version after this event.
    pub version: u64,
    pub occurred_at: Timestamp,
    pub command_id: Option<CommandId>,
    pub event: Event,
}

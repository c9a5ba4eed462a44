//! The stored order view: one row per order, everything `GetOrder` answers
//! with, denormalized from the events; and the summary of it the order lists
//! answer with.

use serde::{Deserialize, Serialize};
use shared::domain::{Line, OrderStatus, Timestamp};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRow {
    pub order_id: String,
    pub customer_id: String,
    pub status: OrderStatus,
    /// In the order each sku was first added, as the aggregate keeps them.
    pub lines: Vec<Line>,
    pub total_cents: i64,
    pub item_count: u64,
    pub currency: String,
    pub version: u64,
    /// The log position of the last event applied to this row.
    pub last_position: u64,
    /// The log position of `OrderCreated`: the sort key of the order lists,
    /// unique and fixed for the life of the order.
    pub created_position: u64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub placed_at: Option<Timestamp>,
    pub shipped_at: Option<Timestamp>,
    pub cancelled_at: Option<Timestamp>,
    pub carrier: String,
    pub tracking_number: String,
    pub cancel_reason: String,
}

/// What the order lists answer for one order: stored as the value of each list
/// index entry, so a page is read from the index alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryRow {
    pub order_id: String,
    pub customer_id: String,
    pub status: OrderStatus,
    pub total_cents: i64,
    pub item_count: u64,
    pub created_at: Timestamp,
}

impl From<&OrderRow> for SummaryRow {
    fn from(row: &OrderRow) -> Self {
        SummaryRow {
            order_id: row.order_id.clone(),
            customer_id: row.customer_id.clone(),
            status: row.status,
            total_cents: row.total_cents,
            item_count: row.item_count,
            created_at: row.created_at,
        }
    }
}

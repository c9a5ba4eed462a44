//! The order view read model: one `OrderRow` per order (key `v` + order id), everything `GetOrder` and `WatchOrder` answer with.

use serde::{Deserialize, Serialize};
use shared::domain::{Line, OrderStatus, Timestamp};

use super::{Batch, Descriptor};
use crate::storage::{key, Reader, StoreError, Writes};

const PREFIX: u8 = b'v';

pub static MODEL: Descriptor = Descriptor {
    name: "order_view",
    prefixes: &[PREFIX],
    version: 1,
    update,
};

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

fn view_key(order_id: &str) -> Vec<u8> {
    key(&[&[PREFIX], order_id.as_bytes()])
}

/// The order's row, if it was ever created.
pub fn get(reader: &Reader, order_id: &str) -> Result<Option<OrderRow>, StoreError> {
    reader.get(&view_key(order_id))
}

fn update(batch: &Batch<'_>, _: &Reader, writes: &mut Writes) -> Result<(), StoreError> {
    for change in batch.changes {
        writes.put(view_key(&change.after.order_id), &change.after);
    }
    Ok(())
}

/// An empty Draft row, never placed, shipped or cancelled: what the
/// projection fills in from an `OrderCreated`.
impl Default for OrderRow {
    fn default() -> Self {
        OrderRow {
            order_id: String::new(),
            customer_id: String::new(),
            status: OrderStatus::Draft,
            lines: Vec::new(),
            total_cents: 0,
            item_count: 0,
            currency: String::new(),
            version: 0,
            last_position: 0,
            created_position: 0,
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
            placed_at: None,
            shipped_at: None,
            cancelled_at: None,
            carrier: String::new(),
            tracking_number: String::new(),
            cancel_reason: String::new(),
        }
    }
}

#[cfg(test)]
impl OrderRow {
    /// A Draft order of customer `c` created at position 1 with `lines`, for tests.
    pub(crate) fn draft(order_id: &str, lines: Vec<Line>) -> OrderRow {
        OrderRow {
            order_id: order_id.to_owned(),
            customer_id: "c".to_owned(),
            total_cents: lines.iter().map(|l| l.total_cents() as i64).sum(),
            item_count: lines.iter().map(|l| u64::from(l.quantity)).sum(),
            lines,
            currency: "USD".to_owned(),
            version: 1,
            last_position: 1,
            created_position: 1,
            ..OrderRow::default()
        }
    }
}

//! The order lists read model: indexes of `SummaryRow`s, newest created first, for all orders, by status and by customer.
//!
//! | list | key | value |
//! |---|---|---|
//! | recent | `r`, `!created_position` (u64 BE, so newest first) | `SummaryRow` |
//! | by status | `s`, status byte, `!created_position` | `SummaryRow` |
//! | by customer | `c`, customer id, `0x00`, `!created_position` | `SummaryRow` |
//!
//! Each entry holds the summary the lists answer with, so a page never reads
//! the (larger) views.

use serde::{Deserialize, Serialize};
use shared::domain::{OrderStatus, Timestamp};

use super::order_view::OrderRow;
use super::{Batch, Descriptor};
use crate::storage::{descending, encode, from_descending, key, Reader, StoreError, Writes};

const RECENT: u8 = b'r';
const BY_STATUS: u8 = b's';
const BY_CUSTOMER: u8 = b'c';

pub static MODEL: Descriptor = Descriptor {
    name: "order_lists",
    prefixes: &[RECENT, BY_STATUS, BY_CUSTOMER],
    version: 1,
    update,
};

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

/// One page of an order list.
#[derive(Debug, Default)]
pub struct Page {
    pub rows: Vec<SummaryRow>,
    /// The sort key of the last order examined, when more may follow.
    pub next_cursor: Option<u64>,
}

fn status_byte(status: OrderStatus) -> u8 {
    match status {
        OrderStatus::Draft => 1,
        OrderStatus::Placed => 2,
        OrderStatus::Shipped => 3,
        OrderStatus::Cancelled => 4,
    }
}

fn recent_prefix(status: Option<OrderStatus>) -> Vec<u8> {
    match status {
        Some(status) => vec![BY_STATUS, status_byte(status)],
        None => vec![RECENT],
    }
}

/// The customer's part of a by-customer key.
fn customer_prefix(customer_id: &str) -> Vec<u8> {
    // Ids never contain 0x00, so "c" never prefixes the entries of "c1".
    key(&[&[BY_CUSTOMER], customer_id.as_bytes(), &[0]])
}

fn update(batch: &Batch<'_>, _: &Reader, writes: &mut Writes) -> Result<(), StoreError> {
    for change in batch.changes {
        let row = &change.after;
        let created = descending(row.created_position);
        if let Some(before) = change.before.as_ref().filter(|b| b.status != row.status) {
            writes.remove(key(&[&recent_prefix(Some(before.status)), &created]));
        }
        // The summary changes with every event (status, total or items), so
        // all three list entries are written.
        let summary = encode(&SummaryRow::from(row));
        writes.put_encoded(key(&[&recent_prefix(None), &created]), summary.clone());
        writes.put_encoded(
            key(&[&recent_prefix(Some(row.status)), &created]),
            summary.clone(),
        );
        writes.put_encoded(
            key(&[&customer_prefix(&row.customer_id), &created]),
            summary,
        );
    }
    Ok(())
}

/// Newest created first, optionally only orders in `status`, starting after `cursor`.
pub fn recent_page(
    reader: &Reader,
    status: Option<OrderStatus>,
    cursor: Option<u64>,
    size: usize,
) -> Result<Page, StoreError> {
    page(reader, &recent_prefix(status), cursor, size)
}

/// One customer's orders, newest created first, starting after `cursor`.
pub fn customer_page(
    reader: &Reader,
    customer_id: &str,
    cursor: Option<u64>,
    size: usize,
) -> Result<Page, StoreError> {
    page(reader, &customer_prefix(customer_id), cursor, size)
}

/// Walks the list under `prefix` from the entry after `cursor`, newest
/// created first, taking up to `size` orders.
fn page(
    reader: &Reader,
    prefix: &[u8],
    cursor: Option<u64>,
    size: usize,
) -> Result<Page, StoreError> {
    let after = cursor.map(|cursor| key(&[prefix, &descending(cursor)]));
    let mut page = Page {
        rows: Vec::with_capacity(size.min(64)),
        next_cursor: None,
    };
    let mut last = None;
    for (examined, entry) in reader.scan(prefix, after).enumerate() {
        let (key, value) = entry?;
        if examined == size {
            page.next_cursor = last;
            break;
        }
        last = Some(from_descending(&key[prefix.len()..])?);
        page.rows.push(crate::storage::decode(&value)?);
    }
    Ok(page)
}

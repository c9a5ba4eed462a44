//! The analytics read model: running totals, products in hash buckets, a ranking with one small entry per product, one row per day, so a batch and a query touch only what they need.
//!
//! | entry | key | value |
//! |---|---|---|
//! | totals | `a`, `t` | `Totals` (counts by status, placed revenue) |
//! | products | `a`, `p`, bucket (hash of the sku mod 64) | sku -> `ProductTotals` |
//! | ranking | `a`, `q`, `!quantity` (u64 BE, so highest first), sku | revenue (`i128`) |
//! | day | `a`, `d`, `YYYY-MM-DD` | `DayTotals` |
//!
//! What an order contributes is a function of its row alone (its status,
//! total, lines and placement day), so a batch adds, per order it touched, the
//! contribution of the row after it and takes back that of the row before.
//! Only the rows of the products and days a batch changes are read and
//! written.
//!
//! Products are grouped in bucket rows rather than stored one per entry:
//! every sled write copies the leaf it lands in, and a batch placing orders
//! (catching up) touches hundreds of skus whose entries share a few leaves.
//! The ranking is the other way round: one entry per product, its key the
//! quantity then the sku, so `top_n` reads the first N entries and nothing
//! else. It used to be rows of products by quantity band, but real
//! quantities bunch together: a few bands held nearly every sku, and placing
//! one order decoded, re-encoded and rewrote rows of hundreds of products
//! (at one event per batch, half of query-service's CPU per event). An entry
//! is written only when its product's quantity or revenue changes, twice
//! per product a batch touches (the old key removed, the new one put).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use shared::domain::OrderStatus;

use super::order_view::OrderRow;
use super::{Batch, Descriptor};
use crate::storage::{decode, descending, from_descending, key, Reader, StoreError, Writes};

/// Product rows are this many buckets: a batch writes at most this many
/// product rows however many skus it touches.
const BUCKETS: u32 = 64;
const TOTALS: &[u8] = b"at";
const PRODUCT: &[u8] = b"ap";
const RANKING: &[u8] = b"aq";
const DAY: &[u8] = b"ad";

pub static MODEL: Descriptor = Descriptor {
    name: "analytics",
    prefixes: b"a",
    version: 3,
    update,
};

/// Counts by current status and the revenue of the orders now Placed or Shipped.
/// Sums are `i128` so no number of orders can overflow them; they are clamped
/// to `i64` only when answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub draft: u64,
    pub placed: u64,
    pub shipped: u64,
    pub cancelled: u64,
    pub placed_revenue_cents: i128,
}

/// Quantity and revenue of one sku over the orders now Placed or Shipped.
/// Stored only while the quantity is not zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductTotals {
    pub quantity: u64,
    pub revenue_cents: i128,
}

/// Products of one bucket, by sku.
type Products = BTreeMap<String, ProductTotals>;

/// Orders placed on one UTC date and not cancelled since; stored only while
/// there are some.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayTotals {
    pub orders: u64,
    pub revenue_cents: i128,
}

/// What `GetOrderAnalytics` answers, before conversion to proto.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnalyticsReport {
    pub total_orders: u64,
    pub draft_orders: u64,
    pub placed_orders: u64,
    pub shipped_orders: u64,
    pub cancelled_orders: u64,
    pub placed_revenue_cents: i64,
    pub average_order_value_cents: i64,
    /// (sku, quantity, revenue)
    pub top_products: Vec<(String, u64, i64)>,
    /// (date, orders placed, revenue), oldest first.
    pub daily: Vec<(String, u64, i64)>,
}

fn clamp(value: i128) -> i64 {
    i64::try_from(value).unwrap_or(if value < 0 { i64::MIN } else { i64::MAX })
}

/// `count + delta`, never below zero.
fn shift(count: u64, delta: i64) -> u64 {
    if delta >= 0 {
        count.saturating_add(delta.unsigned_abs())
    } else {
        count.saturating_sub(delta.unsigned_abs())
    }
}

/// The row of the bucket `sku` falls in: a hash that stays the same across
/// builds and platforms.
fn bucket_key(sku: &str) -> Vec<u8> {
    let hash = sku
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    let bucket = u8::try_from(hash % BUCKETS).expect("BUCKETS fits a byte");
    key(&[PRODUCT, &[bucket]])
}

/// The ranking entry of a product with `quantity`: highest quantity first,
/// then by sku.
fn rank_key(quantity: u64, sku: &str) -> Vec<u8> {
    key(&[RANKING, &descending(quantity), sku.as_bytes()])
}

/// The (quantity, sku bytes) of a ranking entry's key: `rank_key` undone.
fn from_rank_key(key: &[u8]) -> Result<(u64, &[u8]), StoreError> {
    let (quantity, sku) = key[RANKING.len()..]
        .split_at_checked(8)
        .unwrap_or((&[], &[]));
    Ok((from_descending(quantity)?, sku))
}

/// The row under `key`, read once per batch into `rows`.
fn loaded<'m>(
    rows: &'m mut BTreeMap<Vec<u8>, Products>,
    reader: &Reader,
    key: Vec<u8>,
) -> Result<&'m mut Products, StoreError> {
    if !rows.contains_key(&key) {
        let row = reader.get(&key)?.unwrap_or_default();
        rows.insert(key.clone(), row);
    }
    Ok(rows.get_mut(&key).expect("inserted above"))
}

/// Revenue counts for orders now Placed or Shipped (not Draft, not Cancelled).
fn paying(status: OrderStatus) -> bool {
    matches!(status, OrderStatus::Placed | OrderStatus::Shipped)
}

/// The change a batch makes to the analytics, summed over the orders it touched.
#[derive(Debug, Default)]
struct Delta<'a> {
    /// Indexed by `OrderStatus as usize`.
    counts: [i64; 4],
    revenue_cents: i128,
    /// sku -> (quantity, revenue)
    products: BTreeMap<&'a str, (i64, i128)>,
    /// date -> (orders, revenue)
    days: BTreeMap<String, (i64, i128)>,
}

impl<'a> Delta<'a> {
    /// Adds (`sign` 1) or takes back (`sign` -1) what `row` contributes.
    fn add(&mut self, row: &'a OrderRow, sign: i64) {
        self.counts[row.status as usize] += sign;
        if !paying(row.status) {
            return;
        }
        let total = i128::from(row.total_cents) * i128::from(sign);
        self.revenue_cents += total;
        for line in &row.lines {
            let product = self.products.entry(line.sku.as_str()).or_default();
            product.0 += i64::from(line.quantity) * sign;
            product.1 += line.total_cents() * i128::from(sign);
        }
        // A Placed or Shipped row always has `placed_at`; the fallback only
        // keeps the function total.
        let placed_at = row.placed_at.unwrap_or(row.created_at);
        let day = self.days.entry(placed_at.utc_date()).or_default();
        day.0 += sign;
        day.1 += total;
    }

    fn write(self, reader: &Reader, writes: &mut Writes) -> Result<(), StoreError> {
        if self.counts != [0; 4] || self.revenue_cents != 0 {
            let mut totals = totals(reader)?;
            let [draft, placed, shipped, cancelled] = self.counts;
            totals.draft = shift(totals.draft, draft);
            totals.placed = shift(totals.placed, placed);
            totals.shipped = shift(totals.shipped, shipped);
            totals.cancelled = shift(totals.cancelled, cancelled);
            totals.placed_revenue_cents += self.revenue_cents;
            writes.put(TOTALS.to_vec(), &totals);
        }
        let mut buckets = BTreeMap::new();
        for (sku, (quantity, revenue_cents)) in self.products {
            if (quantity, revenue_cents) == (0, 0) {
                continue;
            }
            let bucket = loaded(&mut buckets, reader, bucket_key(sku))?;
            let old = bucket.get(sku).copied().unwrap_or_default();
            let new = ProductTotals {
                quantity: shift(old.quantity, quantity),
                revenue_cents: old.revenue_cents + revenue_cents,
            };
            if new.quantity == 0 {
                bucket.remove(sku);
            } else {
                bucket.insert(sku.to_owned(), new);
            }
            if old.quantity > 0 && old.quantity != new.quantity {
                writes.remove(rank_key(old.quantity, sku));
            }
            if new.quantity > 0 {
                writes.put(rank_key(new.quantity, sku), &new.revenue_cents);
            }
        }
        for (key, row) in buckets {
            if row.is_empty() {
                writes.remove(key);
            } else {
                writes.put(key, &row);
            }
        }
        for (date, (orders, revenue_cents)) in self.days {
            if (orders, revenue_cents) == (0, 0) {
                continue;
            }
            let day_key = key(&[DAY, date.as_bytes()]);
            let old: DayTotals = reader.get(&day_key)?.unwrap_or_default();
            let new = DayTotals {
                orders: shift(old.orders, orders),
                revenue_cents: old.revenue_cents + revenue_cents,
            };
            if new.orders == 0 {
                writes.remove(day_key);
            } else {
                writes.put(day_key, &new);
            }
        }
        Ok(())
    }
}

fn update(batch: &Batch<'_>, reader: &Reader, writes: &mut Writes) -> Result<(), StoreError> {
    let mut delta = Delta::default();
    for change in batch.changes {
        if let Some(before) = &change.before {
            delta.add(before, -1);
        }
        delta.add(&change.after, 1);
    }
    delta.write(reader, writes)
}

fn totals(reader: &Reader) -> Result<Totals, StoreError> {
    Ok(reader.get(TOTALS)?.unwrap_or_default())
}

/// The answer, with the `top_n` best-selling products: reads the totals, the
/// first `top_n` entries of the ranking and the days.
pub fn report(reader: &Reader, top_n: usize) -> Result<AnalyticsReport, StoreError> {
    let totals = totals(reader)?;
    let paying = totals.placed + totals.shipped;
    let average = if paying == 0 {
        0
    } else {
        totals.placed_revenue_cents.div_euclid(i128::from(paying))
    };
    let top_products = reader
        .scan(RANKING, None)
        .take(top_n)
        .map(|entry| {
            let (key, value) = entry?;
            let (quantity, sku) = from_rank_key(&key)?;
            let revenue: i128 = decode(&value)?;
            let sku = String::from_utf8_lossy(sku).into_owned();
            Ok((sku, quantity, clamp(revenue)))
        })
        .collect::<Result<_, StoreError>>()?;
    let daily = reader
        .scan(DAY, None)
        .map(|entry| {
            let (key, value) = entry?;
            let day: DayTotals = decode(&value)?;
            let date = String::from_utf8_lossy(&key[DAY.len()..]).into_owned();
            Ok((date, day.orders, clamp(day.revenue_cents)))
        })
        .collect::<Result<_, StoreError>>()?;
    Ok(AnalyticsReport {
        total_orders: totals.draft + totals.placed + totals.shipped + totals.cancelled,
        draft_orders: totals.draft,
        placed_orders: totals.placed,
        shipped_orders: totals.shipped,
        cancelled_orders: totals.cancelled,
        placed_revenue_cents: clamp(totals.placed_revenue_cents),
        average_order_value_cents: clamp(average),
        top_products,
        daily,
    })
}

#[cfg(test)]
mod tests {
    use shared::domain::{Line, Sku, Timestamp};

    use super::*;
    use crate::read_models::Change;
    use crate::storage::temporary;

    const DAY: i64 = 86_400_000_000;

    fn line(sku: &str, quantity: u32, price: i64) -> Line {
        Line {
            sku: Sku::parse("sku", sku).unwrap(),
            quantity,
            unit_price_cents: price,
        }
    }

    fn with_status(row: &OrderRow, status: OrderStatus, day: i64) -> OrderRow {
        OrderRow {
            status,
            placed_at: Some(Timestamp(day * DAY)),
            ..row.clone()
        }
    }

    /// The skus in every product row, sorted.
    fn stored(reader: &Reader) -> Vec<String> {
        let mut skus: Vec<String> = reader
            .scan(PRODUCT, None)
            .flat_map(|e| decode::<Products>(&e.unwrap().1).unwrap().into_keys())
            .collect();
        skus.sort();
        skus
    }

    /// The ranking's entries as (quantity, sku), in key order.
    fn ranked(reader: &Reader) -> Vec<(u64, String)> {
        reader
            .scan(RANKING, None)
            .map(|e| {
                let key = e.unwrap().0;
                let (quantity, sku) = from_rank_key(&key).unwrap();
                (quantity, String::from_utf8(sku.to_vec()).unwrap())
            })
            .collect()
    }

    #[test]
    fn the_ranking_orders_by_quantity_then_sku_and_top_n_takes_its_head() {
        let (_dir, reader) = temporary();
        let lines: Vec<_> = (1..=40u32)
            .map(|q| line(&format!("s{:02}", q % 7), q, 1))
            .collect();
        let draft = OrderRow::draft("o", lines);
        apply(
            &reader,
            vec![(None, with_status(&draft, OrderStatus::Placed, 0))],
        );
        let all = report(&reader, 100).unwrap().top_products;
        assert_eq!(all.len(), 7);
        assert!(all
            .windows(2)
            .all(|w| w[0].1 > w[1].1 || (w[0].1 == w[1].1 && w[0].0 < w[1].0)));
        let top3 = report(&reader, 3).unwrap().top_products;
        assert_eq!(top3, all[..3]);
        let keys: Vec<_> = all.iter().map(|(sku, q, _)| (*q, sku.clone())).collect();
        assert_eq!(
            ranked(&reader),
            keys,
            "one entry per product, in answer order"
        );
    }

    /// Writes one batch of (row before, row after) changes.
    fn apply(reader: &Reader, changes: Vec<(Option<OrderRow>, OrderRow)>) {
        let changes: Vec<_> = changes
            .into_iter()
            .map(|(before, after)| Change { before, after })
            .collect();
        let batch = Batch {
            changes: &changes,
            checkpoint: Default::default(),
        };
        let mut writes = Writes::default();
        update(&batch, reader, &mut writes).unwrap();
        reader.commit(writes).unwrap();
    }

    #[test]
    fn cancelling_a_placed_order_takes_back_what_placing_added() {
        let (_dir, reader) = temporary();
        let a = OrderRow::draft("a", vec![line("a", 2, 100), line("b", 1, 50)]);
        let b = OrderRow::draft("b", vec![line("b", 3, 50)]);
        apply(&reader, vec![(None, a.clone()), (None, b.clone())]);
        let a_placed = with_status(&a, OrderStatus::Placed, 1);
        let b_placed = with_status(&b, OrderStatus::Placed, 2);
        apply(
            &reader,
            vec![
                (Some(a.clone()), a_placed.clone()),
                (Some(b), b_placed.clone()),
            ],
        );
        let report = report(&reader, 10).unwrap();
        assert_eq!(report.placed_revenue_cents, 400);
        assert_eq!(report.average_order_value_cents, 200);
        assert_eq!(
            report.top_products,
            vec![("b".to_owned(), 4, 200), ("a".to_owned(), 2, 200)]
        );
        assert_eq!(report.daily.len(), 2);

        let b_shipped = with_status(&b_placed, OrderStatus::Shipped, 2);
        let a_cancelled = with_status(&a_placed, OrderStatus::Cancelled, 1);
        apply(
            &reader,
            vec![(Some(a_placed), a_cancelled), (Some(b_placed), b_shipped)],
        );
        let report = super::report(&reader, 10).unwrap();
        assert_eq!(report.total_orders, 2);
        assert_eq!(report.placed_orders, 0);
        assert_eq!(report.shipped_orders, 1);
        assert_eq!(report.cancelled_orders, 1);
        assert_eq!(report.placed_revenue_cents, 150);
        assert_eq!(report.top_products, vec![("b".to_owned(), 3, 150)]);
        assert_eq!(report.daily, vec![("1970-01-03".to_owned(), 1, 150)]);
        // Nothing is left of sku a: not in a product row, not in the ranking.
        assert_eq!(stored(&reader), ["b"]);
        assert_eq!(ranked(&reader), [(3, "b".to_owned())]);
    }

    #[test]
    fn top_products_tie_break_on_sku_and_respect_top_n() {
        let (_dir, reader) = temporary();
        let draft = OrderRow::draft("o", vec![line("z", 5, 1), line("m", 5, 1), line("a", 1, 1)]);
        apply(
            &reader,
            vec![(None, with_status(&draft, OrderStatus::Placed, 0))],
        );
        let report = report(&reader, 2).unwrap();
        let skus: Vec<_> = report.top_products.iter().map(|p| p.0.as_str()).collect();
        assert_eq!(skus, ["m", "z"]);
        let (_dir, empty) = temporary();
        assert_eq!(
            super::report(&empty, 10).unwrap().average_order_value_cents,
            0
        );
    }

    #[test]
    fn a_product_whose_quantity_changes_moves_in_the_top_index() {
        let (_dir, reader) = temporary();
        let one = OrderRow::draft("1", vec![line("a", 1, 10), line("b", 2, 10)]);
        apply(
            &reader,
            vec![(None, with_status(&one, OrderStatus::Placed, 0))],
        );
        let two = OrderRow::draft("2", vec![line("a", 5, 10)]);
        apply(
            &reader,
            vec![(None, with_status(&two, OrderStatus::Placed, 0))],
        );
        let report = report(&reader, 10).unwrap();
        assert_eq!(
            report.top_products,
            vec![("a".to_owned(), 6, 60), ("b".to_owned(), 2, 20)]
        );
        // One entry per sku: "a" left its entry at quantity 1.
        assert_eq!(ranked(&reader), [(6, "a".to_owned()), (2, "b".to_owned())]);
        assert_eq!(stored(&reader), ["a", "b"]);
        assert_eq!(report.daily, vec![("1970-01-01".to_owned(), 2, 80)]);
    }

    #[test]
    fn an_order_placed_and_cancelled_in_one_batch_leaves_only_its_count() {
        let (_dir, reader) = temporary();
        let draft = OrderRow::draft("o", vec![line("a", 1, 10)]);
        apply(
            &reader,
            vec![(None, with_status(&draft, OrderStatus::Cancelled, 0))],
        );
        let report = report(&reader, 10).unwrap();
        assert_eq!((report.total_orders, report.cancelled_orders), (1, 1));
        assert!(report.top_products.is_empty() && report.daily.is_empty());
        assert_eq!(reader.scan(b"a", None).count(), 1, "only the totals row");
    }
}

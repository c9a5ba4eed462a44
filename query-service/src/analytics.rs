//! The analytics read model: running totals kept in one row, updated by each
//! event with the values it carries, so a query never scans the orders.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use shared::domain::{Line, OrderStatus, Timestamp};

/// Quantity and revenue of one sku over the orders now Placed or Shipped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductTotals {
    pub quantity: u64,
    pub revenue_cents: i128,
}

/// Orders placed on one UTC date and not cancelled since.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayTotals {
    pub orders: u64,
    pub revenue_cents: i128,
}

/// Sums are `i128` so no number of orders can overflow them; they are clamped
/// to `i64` only when answered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnalyticsRow {
    pub draft: u64,
    pub placed: u64,
    pub shipped: u64,
    pub cancelled: u64,
    /// Sum of the totals of the orders now Placed or Shipped.
    pub placed_revenue_cents: i128,
    /// Only skus with a non-zero quantity.
    pub products: BTreeMap<String, ProductTotals>,
    /// Keyed by `YYYY-MM-DD`, which sorts oldest first; only days with orders.
    pub daily: BTreeMap<String, DayTotals>,
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

impl AnalyticsRow {
    fn count_mut(&mut self, status: OrderStatus) -> &mut u64 {
        match status {
            OrderStatus::Draft => &mut self.draft,
            OrderStatus::Placed => &mut self.placed,
            OrderStatus::Shipped => &mut self.shipped,
            OrderStatus::Cancelled => &mut self.cancelled,
        }
    }

    pub fn order_created(&mut self) {
        self.draft += 1;
    }

    /// Moves one order from one status count to another.
    pub fn status_changed(&mut self, from: OrderStatus, to: OrderStatus) {
        let from_count = self.count_mut(from);
        *from_count = from_count.saturating_sub(1);
        *self.count_mut(to) += 1;
    }

    /// An order was placed: its revenue, products and placement day start counting.
    pub fn order_placed(&mut self, lines: &[Line], total_cents: i64, placed_at: Timestamp) {
        self.add_placed(lines, total_cents, placed_at, 1);
    }

    /// A placed order was cancelled: everything `order_placed` added is taken back.
    pub fn placed_order_cancelled(
        &mut self,
        lines: &[Line],
        total_cents: i64,
        placed_at: Timestamp,
    ) {
        self.add_placed(lines, total_cents, placed_at, -1);
    }

    fn add_placed(&mut self, lines: &[Line], total_cents: i64, placed_at: Timestamp, sign: i8) {
        let total = i128::from(total_cents) * i128::from(sign);
        self.placed_revenue_cents += total;
        for line in lines {
            let entry = self
                .products
                .entry(line.sku.as_str().to_owned())
                .or_default();
            let quantity = u64::from(line.quantity);
            if sign > 0 {
                entry.quantity += quantity;
            } else {
                entry.quantity = entry.quantity.saturating_sub(quantity);
            }
            entry.revenue_cents += line.total_cents() * i128::from(sign);
            if entry.quantity == 0 {
                self.products.remove(line.sku.as_str());
            }
        }
        let day = self.daily.entry(placed_at.utc_date()).or_default();
        if sign > 0 {
            day.orders += 1;
        } else {
            day.orders = day.orders.saturating_sub(1);
        }
        day.revenue_cents += total;
        if day.orders == 0 {
            self.daily.remove(&placed_at.utc_date());
        }
    }

    /// The answer, with the `top_n` best-selling products.
    pub fn report(&self, top_n: usize) -> AnalyticsReport {
        let paying = self.placed + self.shipped;
        let average = if paying == 0 {
            0
        } else {
            self.placed_revenue_cents.div_euclid(i128::from(paying))
        };
        let mut products: Vec<(&String, &ProductTotals)> = self.products.iter().collect();
        // BTreeMap iteration is by sku already; a stable sort keeps that for equal quantities.
        products.sort_by_key(|p| std::cmp::Reverse(p.1.quantity));
        AnalyticsReport {
            total_orders: self.draft + self.placed + self.shipped + self.cancelled,
            draft_orders: self.draft,
            placed_orders: self.placed,
            shipped_orders: self.shipped,
            cancelled_orders: self.cancelled,
            placed_revenue_cents: clamp(self.placed_revenue_cents),
            average_order_value_cents: clamp(average),
            top_products: products
                .into_iter()
                .take(top_n)
                .map(|(sku, t)| (sku.clone(), t.quantity, clamp(t.revenue_cents)))
                .collect(),
            daily: self
                .daily
                .iter()
                .map(|(date, d)| (date.clone(), d.orders, clamp(d.revenue_cents)))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use shared::domain::Sku;

    use super::*;

    fn line(sku: &str, quantity: u32, price: i64) -> Line {
        Line {
            sku: Sku::parse("sku", sku).unwrap(),
            quantity,
            unit_price_cents: price,
        }
    }

    const DAY: i64 = 86_400_000_000;

    #[test]
    fn cancelling_a_placed_order_takes_back_what_placing_added() {
        let mut row = AnalyticsRow::default();
        row.order_created();
        row.order_created();
        let a = [line("a", 2, 100), line("b", 1, 50)];
        row.status_changed(OrderStatus::Draft, OrderStatus::Placed);
        row.order_placed(&a, 250, Timestamp(DAY));
        let b = [line("b", 3, 50)];
        row.status_changed(OrderStatus::Draft, OrderStatus::Placed);
        row.order_placed(&b, 150, Timestamp(2 * DAY));
        let report = row.report(10);
        assert_eq!(report.placed_revenue_cents, 400);
        assert_eq!(report.average_order_value_cents, 200);
        assert_eq!(
            report.top_products,
            vec![("b".to_owned(), 4, 200), ("a".to_owned(), 2, 200)]
        );
        assert_eq!(report.daily.len(), 2);

        row.status_changed(OrderStatus::Placed, OrderStatus::Cancelled);
        row.placed_order_cancelled(&a, 250, Timestamp(DAY));
        let report = row.report(10);
        assert_eq!(report.total_orders, 2);
        assert_eq!(report.placed_orders, 1);
        assert_eq!(report.cancelled_orders, 1);
        assert_eq!(report.placed_revenue_cents, 150);
        assert_eq!(report.top_products, vec![("b".to_owned(), 3, 150)]);
        assert_eq!(report.daily, vec![("1970-01-03".to_owned(), 1, 150)]);
    }

    #[test]
    fn top_products_tie_break_on_sku_and_respect_top_n() {
        let mut row = AnalyticsRow::default();
        row.order_placed(
            &[line("z", 5, 1), line("m", 5, 1), line("a", 1, 1)],
            11,
            Timestamp(0),
        );
        let report = row.report(2);
        let skus: Vec<_> = report.top_products.iter().map(|p| p.0.as_str()).collect();
        assert_eq!(skus, ["m", "z"]);
        assert_eq!(
            AnalyticsRow::default().report(10).average_order_value_cents,
            0
        );
    }
}

//! The query side's expected answers, computed only from what the command side
//! acknowledged: a model order per acknowledged command sequence, and the
//! analytics the SPEC defines over those orders.

use std::collections::{BTreeMap, HashMap};

use shared::convert::timestamp_from_proto;

use crate::clients::QueryClient;
use crate::pb;
use crate::queries::get_orders;
use pb::event_envelope::Event as E;
use pb::OrderStatus as S;

/// One order as the acknowledged commands left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelOrder {
    pub order_id: String,
    pub customer_id: String,
    pub currency: String,
    pub status: S,
    /// (sku, quantity, unit price), in the order each sku was first added.
    pub lines: Vec<(String, u32, i64)>,
    pub version: u64,
    /// The position of the last acknowledged command on this order.
    pub last_position: u64,
    pub was_placed: bool,
    pub carrier: String,
    pub tracking_number: String,
    pub cancel_reason: String,
}

impl ModelOrder {
    pub fn total_cents(&self) -> i64 {
        self.lines.iter().map(|l| i64::from(l.1) * l.2).sum()
    }

    pub fn item_count(&self) -> u64 {
        self.lines.iter().map(|l| u64::from(l.1)).sum()
    }

    /// A Draft order with no lines, before its create is acknowledged.
    pub fn new(order_id: &str, customer_id: &str, currency: &str) -> ModelOrder {
        ModelOrder {
            order_id: order_id.to_owned(),
            customer_id: customer_id.to_owned(),
            currency: currency.to_owned(),
            status: S::Draft,
            lines: Vec::new(),
            version: 0,
            last_position: 0,
            was_placed: false,
            carrier: String::new(),
            tracking_number: String::new(),
            cancel_reason: String::new(),
        }
    }

    pub fn line(&self, sku: &str) -> Option<&(String, u32, i64)> {
        self.lines.iter().find(|l| l.0 == sku)
    }

    /// Adds a line, or raises the quantity of the line with that sku.
    pub fn add(&mut self, sku: &str, quantity: u32, price: i64) {
        match self.lines.iter_mut().find(|l| l.0 == sku) {
            Some(line) => line.1 += quantity,
            None => self.lines.push((sku.to_owned(), quantity, price)),
        }
    }

    /// Removes `quantity` of a line (0 or all of it: the line).
    pub fn remove(&mut self, sku: &str, quantity: u32) {
        let index = self.lines.iter().position(|l| l.0 == sku).expect("line");
        let line = &mut self.lines[index];
        if quantity == 0 || quantity >= line.1 {
            self.lines.remove(index);
        } else {
            line.1 -= quantity;
        }
    }

    /// Panics, naming the order and the field, unless `view` shows this order.
    pub fn assert_view(&self, view: &pb::OrderView) {
        let id = &self.order_id;
        assert_eq!(view.order_id, *id);
        assert_eq!(view.customer_id, self.customer_id, "{id}: customer_id");
        assert_eq!(view.status, self.status as i32, "{id}: status");
        let lines: Vec<_> = view
            .lines
            .iter()
            .map(|l| {
                assert_eq!(
                    l.line_total_cents,
                    i64::from(l.quantity) * l.unit_price_cents,
                    "{id}: line_total_cents of {}",
                    l.sku
                );
                (l.sku.clone(), l.quantity, l.unit_price_cents)
            })
            .collect();
        assert_eq!(lines, self.lines, "{id}: lines");
        assert_eq!(view.total_cents, self.total_cents(), "{id}: total_cents");
        assert_eq!(view.item_count, self.item_count(), "{id}: item_count");
        assert_eq!(view.currency, self.currency, "{id}: currency");
        assert_eq!(view.version, self.version, "{id}: version");
        assert_eq!(
            view.last_position, self.last_position,
            "{id}: last_position"
        );
        assert!(view.created_at.is_some(), "{id}: created_at");
        assert!(view.updated_at.is_some(), "{id}: updated_at");
        assert_eq!(view.placed_at.is_some(), self.was_placed, "{id}: placed_at");
        assert_eq!(
            view.shipped_at.is_some(),
            self.status == S::Shipped,
            "{id}: shipped_at"
        );
        assert_eq!(
            view.cancelled_at.is_some(),
            self.status == S::Cancelled,
            "{id}: cancelled_at"
        );
        assert_eq!(view.carrier, self.carrier, "{id}: carrier");
        assert_eq!(
            view.tracking_number, self.tracking_number,
            "{id}: tracking_number"
        );
        assert_eq!(
            view.cancel_reason, self.cancel_reason,
            "{id}: cancel_reason"
        );
    }
}

/// Every order the workload created, and the highest position acknowledged.
#[derive(Debug, Default, Clone)]
pub struct Model {
    pub orders: BTreeMap<String, ModelOrder>,
    pub max_position: u64,
    pub commands_acknowledged: usize,
    pub commands_rejected: usize,
}

/// UTC placement date of every order placed, from the command side's own log.
pub fn placement_dates(log: &[pb::EventEnvelope]) -> HashMap<String, String> {
    log.iter()
        .filter_map(|e| match &e.event {
            Some(E::OrderPlaced(p)) => {
                let at = timestamp_from_proto(p.placed_at.as_ref().expect("placed_at"));
                Some((e.order_id.clone(), at.utc_date()))
            }
            _ => None,
        })
        .collect()
}

impl Model {
    /// Adds what another part of the workload acknowledged (other orders).
    pub fn merge(&mut self, part: Model) {
        self.orders.extend(part.orders);
        self.max_position = self.max_position.max(part.max_position);
        self.commands_acknowledged += part.commands_acknowledged;
        self.commands_rejected += part.commands_rejected;
    }

    /// `OrderAnalytics` exactly as the SPEC defines each field.
    pub fn analytics(&self, dates: &HashMap<String, String>, top_n: usize) -> pb::OrderAnalytics {
        let mut a = pb::OrderAnalytics {
            total_orders: self.orders.len() as u64,
            ..Default::default()
        };
        let mut products: BTreeMap<String, (u64, i64)> = BTreeMap::new();
        let mut daily: BTreeMap<String, (u64, i64)> = BTreeMap::new();
        let mut paying = 0i64;
        for order in self.orders.values() {
            match order.status {
                S::Draft => a.draft_orders += 1,
                S::Placed => a.placed_orders += 1,
                S::Shipped => a.shipped_orders += 1,
                S::Cancelled => a.cancelled_orders += 1,
                S::Unspecified => unreachable!(),
            }
            if matches!(order.status, S::Placed | S::Shipped) {
                paying += 1;
                a.placed_revenue_cents += order.total_cents();
                for (sku, quantity, price) in &order.lines {
                    let p = products.entry(sku.clone()).or_default();
                    p.0 += u64::from(*quantity);
                    p.1 += i64::from(*quantity) * price;
                }
                let date = dates.get(&order.order_id).unwrap_or_else(|| {
                    panic!("{} placed but no OrderPlaced in the log", order.order_id)
                });
                let d = daily.entry(date.clone()).or_default();
                d.0 += 1;
                d.1 += order.total_cents();
            }
        }
        a.average_order_value_cents = if paying == 0 {
            0
        } else {
            a.placed_revenue_cents / paying
        };
        let mut top: Vec<_> = products.into_iter().collect();
        top.sort_by(|x, y| y.1 .0.cmp(&x.1 .0).then(x.0.cmp(&y.0)));
        a.top_products = top
            .into_iter()
            .take(top_n)
            .map(|(sku, (quantity, revenue_cents))| pb::ProductStat {
                sku,
                quantity,
                revenue_cents,
            })
            .collect();
        a.daily = daily
            .into_iter()
            .map(|(date, (orders_placed, revenue_cents))| pb::DailyStat {
                date,
                orders_placed,
                revenue_cents,
            })
            .collect();
        a
    }

    /// Asserts `GetOrder` for every order and `GetOrderAnalytics` equal the model.
    pub async fn assert_query_side(&self, query: &QueryClient, dates: &HashMap<String, String>) {
        let ids: Vec<String> = self.orders.keys().cloned().collect();
        let views = get_orders(query, &ids, self.max_position).await;
        for (id, view) in ids.iter().zip(&views) {
            self.orders[id].assert_view(view);
        }
        let mut q = query.clone();
        for top_n in [0u32, 3, 1000] {
            let analytics = q
                .get_order_analytics(pb::GetOrderAnalyticsRequest {
                    min_position: self.max_position,
                    top_n,
                })
                .await
                .expect("GetOrderAnalytics")
                .into_inner()
                .analytics
                .expect("analytics");
            let expected = self.analytics(dates, if top_n == 0 { 10 } else { top_n as usize });
            assert_eq!(analytics, expected, "analytics with top_n {top_n}");
        }
    }
}

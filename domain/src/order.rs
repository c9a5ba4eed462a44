//! The `Order` aggregate: `handle` decides (every business rule lives there),
//! `apply` evolves state and cannot fail.

use serde::{Deserialize, Serialize};

use super::command::Command;
use super::error::{DomainError, Rule};
use super::event::Event;
use super::values::{Currency, CustomerId, Sku, Timestamp};

/// At most this many distinct lines per order.
pub const MAX_LINES: usize = 100;
/// At most this many units in one line.
pub const MAX_LINE_QUANTITY: u32 = 10_000;
/// The largest order total, in cents (10^12).
pub const MAX_TOTAL_CENTS: i64 = 1_000_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OrderStatus {
    Draft,
    Placed,
    Shipped,
    Cancelled,
}

/// One line of an order: a sku, how many, and the price of one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub sku: Sku,
    pub quantity: u32,
    pub unit_price_cents: i64,
}

impl Line {
    /// `quantity * unit_price_cents`; cannot overflow for validated values.
    pub fn total_cents(&self) -> i128 {
        i128::from(self.quantity) * i128::from(self.unit_price_cents)
    }
}

/// The write model of one order. `Order::default()` is an order that does not exist yet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// Count of events applied; 0 means the order does not exist.
    pub version: u64,
    pub state: Option<OrderState>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderState {
    pub customer_id: CustomerId,
    pub currency: Currency,
    pub status: OrderStatus,
    pub lines: Vec<Line>,
    pub placed_at: Option<Timestamp>,
}

fn sum_totals(lines: &[Line]) -> i128 {
    lines.iter().map(Line::total_cents).sum()
}

fn sum_quantities(lines: &[Line]) -> u64 {
    lines.iter().map(|l| u64::from(l.quantity)).sum()
}

fn checked_total(lines: &[Line]) -> Result<i64, DomainError> {
    let total = sum_totals(lines);
    if total > i128::from(MAX_TOTAL_CENTS) {
        return Err(DomainError::Rule(Rule::TotalLimit));
    }
    Ok(total as i64)
}

impl Order {
    pub fn exists(&self) -> bool {
        self.state.is_some()
    }

    /// Decides what a command does to this order, without changing it.
    pub fn handle(
        &self,
        command: &Command,
        expected_version: Option<u64>,
        now: Timestamp,
    ) -> Result<Vec<Event>, DomainError> {
        let state = match (&self.state, command) {
            (Some(_), Command::CreateOrder { .. }) => return Err(DomainError::AlreadyExists),
            (None, Command::CreateOrder { .. }) => None,
            (None, _) => return Err(DomainError::NotFound),
            (Some(state), _) => Some(state),
        };
        if let Some(expected) = expected_version {
            if expected != self.version {
                return Err(DomainError::VersionConflict {
                    expected,
                    actual: self.version,
                });
            }
        }
        let Some(state) = state else {
            let Command::CreateOrder {
                customer_id,
                currency,
                items,
            } = command
            else {
                unreachable!("only CreateOrder reaches a missing order")
            };
            if items.len() > MAX_LINES {
                return Err(DomainError::Rule(Rule::TooManyLines));
            }
            if items.iter().any(|i| i.quantity > MAX_LINE_QUANTITY) {
                return Err(DomainError::Rule(Rule::LineQuantityLimit));
            }
            return Ok(vec![Event::OrderCreated {
                customer_id: customer_id.clone(),
                currency: currency.clone(),
                items: items.clone(),
                total_cents: checked_total(items)?,
                item_count: sum_quantities(items),
            }]);
        };
        let customer_id = state.customer_id.clone();
        match command {
            Command::CreateOrder { .. } => unreachable!("handled above"),
            Command::AddItem { item } => {
                state.require_draft(Rule::ItemsOnlyWhileDraft)?;
                let mut lines = state.lines.clone();
                let line_quantity = match lines.iter_mut().find(|l| l.sku == item.sku) {
                    Some(line) if line.unit_price_cents != item.unit_price_cents => {
                        return Err(DomainError::Rule(Rule::PriceMismatch))
                    }
                    Some(line) => {
                        line.quantity = line.quantity.saturating_add(item.quantity);
                        line.quantity
                    }
                    None => {
                        if lines.len() >= MAX_LINES {
                            return Err(DomainError::Rule(Rule::TooManyLines));
                        }
                        lines.push(item.clone());
                        item.quantity
                    }
                };
                if line_quantity > MAX_LINE_QUANTITY {
                    return Err(DomainError::Rule(Rule::LineQuantityLimit));
                }
                Ok(vec![Event::ItemAdded {
                    customer_id,
                    item: item.clone(),
                    line_quantity,
                    total_cents: checked_total(&lines)?,
                    item_count: sum_quantities(&lines),
                }])
            }
            Command::RemoveItem { sku, quantity } => {
                state.require_draft(Rule::ItemsOnlyWhileDraft)?;
                let mut lines = state.lines.clone();
                let index = lines
                    .iter()
                    .position(|l| &l.sku == sku)
                    .ok_or(DomainError::Rule(Rule::SkuNotInOrder))?;
                let line = &mut lines[index];
                let removed = if *quantity == 0 {
                    line.quantity
                } else {
                    *quantity
                };
                if removed > line.quantity {
                    return Err(DomainError::Rule(Rule::RemoveMoreThanLine));
                }
                line.quantity -= removed;
                let line_quantity = line.quantity;
                let unit_price_cents = line.unit_price_cents;
                if line_quantity == 0 {
                    lines.remove(index);
                }
                Ok(vec![Event::ItemRemoved {
                    customer_id,
                    sku: sku.clone(),
                    quantity: removed,
                    unit_price_cents,
                    line_quantity,
                    total_cents: checked_total(&lines)?,
                    item_count: sum_quantities(&lines),
                }])
            }
            Command::PlaceOrder => {
                state.require_draft(Rule::PlaceOnlyDraft)?;
                if state.lines.is_empty() {
                    return Err(DomainError::Rule(Rule::PlaceEmptyOrder));
                }
                Ok(vec![Event::OrderPlaced {
                    customer_id,
                    currency: state.currency.clone(),
                    lines: state.lines.clone(),
                    total_cents: checked_total(&state.lines)?,
                    item_count: sum_quantities(&state.lines),
                    placed_at: now,
                }])
            }
            Command::ShipOrder {
                carrier,
                tracking_number,
            } => {
                if state.status != OrderStatus::Placed {
                    return Err(DomainError::Rule(Rule::ShipOnlyPlaced));
                }
                Ok(vec![Event::OrderShipped {
                    customer_id,
                    carrier: carrier.clone(),
                    tracking_number: tracking_number.clone(),
                    total_cents: checked_total(&state.lines)?,
                }])
            }
            Command::CancelOrder { reason } => {
                if !matches!(state.status, OrderStatus::Draft | OrderStatus::Placed) {
                    return Err(DomainError::Rule(Rule::CancelOnlyDraftOrPlaced));
                }
                Ok(vec![Event::OrderCancelled {
                    customer_id,
                    reason: reason.clone(),
                    previous_status: state.status,
                    lines: state.lines.clone(),
                    total_cents: checked_total(&state.lines)?,
                    placed_at: state.placed_at,
                }])
            }
        }
    }

    /// Evolves the state by one event. Never fails: events are facts.
    pub fn apply(&mut self, event: &Event) {
        self.version += 1;
        match event {
            Event::OrderCreated {
                customer_id,
                currency,
                items,
                ..
            } => {
                self.state = Some(OrderState {
                    customer_id: customer_id.clone(),
                    currency: currency.clone(),
                    status: OrderStatus::Draft,
                    lines: items.clone(),
                    placed_at: None,
                });
            }
            Event::ItemAdded {
                item,
                line_quantity,
                ..
            } => {
                let state = self.state_mut();
                match state.lines.iter_mut().find(|l| l.sku == item.sku) {
                    Some(line) => line.quantity = *line_quantity,
                    None => state.lines.push(Line {
                        quantity: *line_quantity,
                        ..item.clone()
                    }),
                }
            }
            Event::ItemRemoved {
                sku, line_quantity, ..
            } => {
                let state = self.state_mut();
                if *line_quantity == 0 {
                    state.lines.retain(|l| &l.sku != sku);
                } else if let Some(line) = state.lines.iter_mut().find(|l| &l.sku == sku) {
                    line.quantity = *line_quantity;
                }
            }
            Event::OrderPlaced { placed_at, .. } => {
                let state = self.state_mut();
                state.status = OrderStatus::Placed;
                state.placed_at = Some(*placed_at);
            }
            Event::OrderShipped { .. } => self.state_mut().status = OrderStatus::Shipped,
            Event::OrderCancelled { .. } => self.state_mut().status = OrderStatus::Cancelled,
        }
    }

    fn state_mut(&mut self) -> &mut OrderState {
        // Only OrderCreated can be an order's first event; the log is written by
        // `handle`, which never emits anything else for a missing order.
        self.state
            .get_or_insert_with(|| unreachable!("an event for an order that was never created"))
    }
}

impl OrderState {
    fn require_draft(&self, rule: Rule) -> Result<(), DomainError> {
        if self.status == OrderStatus::Draft {
            Ok(())
        } else {
            Err(DomainError::Rule(rule))
        }
    }
}

#[cfg(test)]
#[path = "order_tests.rs"]
mod tests;

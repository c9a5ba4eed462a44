//! The `Order` aggregate: `handle` decides, with one method per command (every
//! business rule is checked there, through the line rules of `lines.rs` and the
//! status rules of `status.rs`); `apply` evolves state and cannot fail.

use serde::{Deserialize, Serialize};

use super::command::Command;
use super::error::{DomainError, Rule};
use super::event::Event;
use super::lines::{self, checked_total, item_count, Line, MAX_LINES, MAX_LINE_QUANTITY};
use super::status::OrderStatus;
use super::values::{Currency, CustomerId, Sku, Text, Timestamp};

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

impl Order {
    pub fn exists(&self) -> bool {
        self.state.is_some()
    }

    /// Decides what a command does to this order, without changing it: whether
    /// the order must exist, then `expected_version`, then the command's own rules.
    pub fn handle(
        &self,
        command: &Command,
        expected_version: Option<u64>,
        now: Timestamp,
    ) -> Result<Vec<Event>, DomainError> {
        let event = match (&self.state, command) {
            (Some(_), Command::CreateOrder { .. }) => return Err(DomainError::AlreadyExists),
            (
                None,
                Command::CreateOrder {
                    customer_id,
                    currency,
                    items,
                },
            ) => {
                self.check_version(expected_version)?;
                create_order(customer_id, currency, items)?
            }
            (None, _) => return Err(DomainError::NotFound),
            (Some(state), command) => {
                self.check_version(expected_version)?;
                state.decide(command, now)?
            }
        };
        Ok(vec![event])
    }

    fn check_version(&self, expected_version: Option<u64>) -> Result<(), DomainError> {
        match expected_version {
            Some(expected) if expected != self.version => Err(DomainError::VersionConflict {
                expected,
                actual: self.version,
            }),
            _ => Ok(()),
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
            } => lines::set_line_quantity(
                &mut self.state_mut().lines,
                &item.sku,
                item.unit_price_cents,
                *line_quantity,
            ),
            Event::ItemRemoved {
                sku,
                unit_price_cents,
                line_quantity,
                ..
            } => lines::set_line_quantity(
                &mut self.state_mut().lines,
                sku,
                *unit_price_cents,
                *line_quantity,
            ),
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

/// `CreateOrder`: a Draft with the given items.
fn create_order(
    customer_id: &CustomerId,
    currency: &Currency,
    items: &[Line],
) -> Result<Event, DomainError> {
    if items.len() > MAX_LINES {
        return Err(Rule::TooManyLines.into());
    }
    if items.iter().any(|i| i.quantity > MAX_LINE_QUANTITY) {
        return Err(Rule::LineQuantityLimit.into());
    }
    Ok(Event::OrderCreated {
        customer_id: customer_id.clone(),
        currency: currency.clone(),
        items: items.to_vec(),
        total_cents: checked_total(items)?,
        item_count: item_count(items),
    })
}

/// The decisions on an order that exists: one method per command.
impl OrderState {
    fn decide(&self, command: &Command, now: Timestamp) -> Result<Event, DomainError> {
        match command {
            Command::CreateOrder { .. } => Err(DomainError::AlreadyExists),
            Command::AddItem { item } => self.add_item(item),
            Command::RemoveItem { sku, quantity } => self.remove_item(sku, *quantity),
            Command::PlaceOrder => self.place(now),
            Command::ShipOrder {
                carrier,
                tracking_number,
            } => self.ship(carrier, tracking_number),
            Command::CancelOrder { reason } => self.cancel(reason),
        }
    }

    fn add_item(&self, item: &Line) -> Result<Event, DomainError> {
        self.status.check_item_change()?;
        let mut lines = self.lines.clone();
        let line_quantity = lines::add_item(&mut lines, item)?;
        Ok(Event::ItemAdded {
            customer_id: self.customer_id.clone(),
            item: item.clone(),
            line_quantity,
            total_cents: checked_total(&lines)?,
            item_count: item_count(&lines),
        })
    }

    fn remove_item(&self, sku: &Sku, quantity: u32) -> Result<Event, DomainError> {
        self.status.check_item_change()?;
        let mut lines = self.lines.clone();
        let removed = lines::remove_item(&mut lines, sku, quantity)?;
        Ok(Event::ItemRemoved {
            customer_id: self.customer_id.clone(),
            sku: sku.clone(),
            quantity: removed.quantity,
            unit_price_cents: removed.unit_price_cents,
            line_quantity: removed.line_quantity,
            total_cents: checked_total(&lines)?,
            item_count: item_count(&lines),
        })
    }

    fn place(&self, now: Timestamp) -> Result<Event, DomainError> {
        self.status.check_place()?;
        if self.lines.is_empty() {
            return Err(Rule::PlaceEmptyOrder.into());
        }
        Ok(Event::OrderPlaced {
            customer_id: self.customer_id.clone(),
            currency: self.currency.clone(),
            lines: self.lines.clone(),
            total_cents: checked_total(&self.lines)?,
            item_count: item_count(&self.lines),
            placed_at: now,
        })
    }

    fn ship(&self, carrier: &Text, tracking_number: &Text) -> Result<Event, DomainError> {
        self.status.check_ship()?;
        Ok(Event::OrderShipped {
            customer_id: self.customer_id.clone(),
            carrier: carrier.clone(),
            tracking_number: tracking_number.clone(),
            total_cents: checked_total(&self.lines)?,
        })
    }

    fn cancel(&self, reason: &Text) -> Result<Event, DomainError> {
        self.status.check_cancel()?;
        Ok(Event::OrderCancelled {
            customer_id: self.customer_id.clone(),
            reason: reason.clone(),
            previous_status: self.status,
            lines: self.lines.clone(),
            total_cents: checked_total(&self.lines)?,
            placed_at: self.placed_at,
        })
    }
}

#[cfg(test)]
#[path = "order_tests.rs"]
mod tests;

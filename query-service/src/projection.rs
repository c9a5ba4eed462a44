//! How one event changes an order's row: a pure function from the row (if any) and the event to the new row, refusing events that do not fit. No storage here; the read models are written from the rows it returns.
//!
//! The status rules (which event may follow which status) and the merging of
//! lines are the domain's, the same the write model decides with
//! (`OrderStatus::check_*`, `lines::set_line_quantity`): this file only says
//! where each event leads.

use shared::domain::{lines, Event, OrderStatus, RecordedEvent};

use crate::read_models::order_view::OrderRow;

/// An event that does not fit the state the projection holds: a poison event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProjectionError {
    #[error("{event} for order {order_id}, which this projection has never seen created")]
    UnknownOrder {
        order_id: String,
        event: &'static str,
    },
    #[error("OrderCreated for order {order_id}, which already exists")]
    AlreadyCreated { order_id: String },
    #[error("order {order_id} is at version {current}, but the event has version {event_version}")]
    VersionGap {
        order_id: String,
        current: u64,
        event_version: u64,
    },
    #[error("{event} for order {order_id} in status {status:?}, which it cannot follow")]
    WrongStatus {
        order_id: String,
        event: &'static str,
        status: OrderStatus,
    },
}

/// Applies `event` to `current`, the order's row before it (`None`: not created yet).
pub fn apply(
    current: Option<OrderRow>,
    recorded: &RecordedEvent,
) -> Result<OrderRow, ProjectionError> {
    let order_id = recorded.order_id.as_str();
    let mut row = match current {
        None => {
            let row = created(recorded).ok_or_else(|| ProjectionError::UnknownOrder {
                order_id: order_id.to_owned(),
                event: recorded.event.name(),
            })?;
            check_version(order_id, 0, recorded.version)?;
            return Ok(row);
        }
        Some(_) if matches!(recorded.event, Event::OrderCreated { .. }) => {
            return Err(ProjectionError::AlreadyCreated {
                order_id: order_id.to_owned(),
            })
        }
        Some(row) => row,
    };
    check_version(order_id, row.version, recorded.version)?;
    let previous = row.status;
    row.status =
        next_status(&recorded.event, previous).ok_or_else(|| ProjectionError::WrongStatus {
            order_id: order_id.to_owned(),
            event: recorded.event.name(),
            status: previous,
        })?;
    match &recorded.event {
        // `next_status` refused it above: an order is created only once.
        Event::OrderCreated { .. } => {}
        Event::ItemAdded {
            item,
            line_quantity,
            total_cents,
            item_count,
            ..
        } => {
            lines::set_line_quantity(
                &mut row.lines,
                &item.sku,
                item.unit_price_cents,
                *line_quantity,
            );
            row.total_cents = *total_cents;
            row.item_count = *item_count;
        }
        Event::ItemRemoved {
            sku,
            line_quantity,
            total_cents,
            item_count,
            ..
        } => {
            // The line keeps its price; an ItemRemoved for a line the row
            // does not have changes nothing.
            let price = row.lines.iter().find(|l| &l.sku == sku);
            if let Some(price) = price.map(|l| l.unit_price_cents) {
                lines::set_line_quantity(&mut row.lines, sku, price, *line_quantity);
            }
            row.total_cents = *total_cents;
            row.item_count = *item_count;
        }
        Event::OrderPlaced {
            lines,
            total_cents,
            item_count,
            placed_at,
            ..
        } => {
            row.lines = lines.clone();
            row.total_cents = *total_cents;
            row.item_count = *item_count;
            row.placed_at = Some(*placed_at);
        }
        Event::OrderShipped {
            carrier,
            tracking_number,
            ..
        } => {
            row.shipped_at = Some(recorded.occurred_at);
            row.carrier = carrier.as_str().to_owned();
            row.tracking_number = tracking_number.as_str().to_owned();
        }
        Event::OrderCancelled { reason, .. } => {
            row.cancelled_at = Some(recorded.occurred_at);
            row.cancel_reason = reason.as_str().to_owned();
        }
    }
    row.version = recorded.version;
    row.last_position = recorded.position;
    row.updated_at = recorded.occurred_at;
    Ok(row)
}

/// The row an `OrderCreated` starts; `None` for any other event.
fn created(recorded: &RecordedEvent) -> Option<OrderRow> {
    let Event::OrderCreated {
        customer_id,
        currency,
        items,
        total_cents,
        item_count,
    } = &recorded.event
    else {
        return None;
    };
    Some(OrderRow {
        order_id: recorded.order_id.as_str().to_owned(),
        customer_id: customer_id.as_str().to_owned(),
        lines: items.clone(),
        total_cents: *total_cents,
        item_count: *item_count,
        currency: currency.as_str().to_owned(),
        version: recorded.version,
        last_position: recorded.position,
        created_position: recorded.position,
        created_at: recorded.occurred_at,
        updated_at: recorded.occurred_at,
        ..OrderRow::default()
    })
}

/// The status an order has after `event`, or `None` when the event cannot
/// follow `status` by the domain's rules.
fn next_status(event: &Event, status: OrderStatus) -> Option<OrderStatus> {
    use OrderStatus::{Cancelled, Draft, Placed, Shipped};
    let (allowed, next) = match event {
        Event::ItemAdded { .. } | Event::ItemRemoved { .. } => (status.check_item_change(), Draft),
        Event::OrderPlaced { .. } => (status.check_place(), Placed),
        Event::OrderShipped { .. } => (status.check_ship(), Shipped),
        Event::OrderCancelled {
            previous_status, ..
        } if *previous_status == status => (status.check_cancel(), Cancelled),
        // Created only once; a cancel that names another previous status.
        _ => return None,
    };
    allowed.ok().map(|()| next)
}

fn check_version(order_id: &str, current: u64, event_version: u64) -> Result<(), ProjectionError> {
    if event_version == current + 1 {
        Ok(())
    } else {
        Err(ProjectionError::VersionGap {
            order_id: order_id.to_owned(),
            current,
            event_version,
        })
    }
}

#[cfg(test)]
mod tests {
    use shared::domain::{Currency, CustomerId, Line, OrderId, Sku, Text, Timestamp};

    use super::*;

    fn line(sku: &str, quantity: u32, price: i64) -> Line {
        Line {
            sku: Sku::parse("sku", sku).unwrap(),
            quantity,
            unit_price_cents: price,
        }
    }

    fn recorded(position: u64, version: u64, event: Event) -> RecordedEvent {
        RecordedEvent {
            position,
            event_id: format!("e{position}"),
            order_id: OrderId::parse("order_id", "o-1").unwrap(),
            version,
            occurred_at: Timestamp(position as i64 * 1_000_000),
            command_id: None,
            event,
        }
    }

    fn customer() -> CustomerId {
        CustomerId::parse("customer_id", "c-1").unwrap()
    }

    fn created() -> Event {
        Event::OrderCreated {
            customer_id: customer(),
            currency: Currency::parse("currency", "EUR").unwrap(),
            items: vec![line("a", 1, 100)],
            total_cents: 100,
            item_count: 1,
        }
    }

    #[test]
    fn a_lifecycle_builds_the_view() {
        let row = apply(None, &recorded(3, 1, created())).unwrap();
        assert_eq!(row.created_position, 3);
        assert_eq!(row.status, OrderStatus::Draft);
        let added = Event::ItemAdded {
            customer_id: customer(),
            item: line("b", 2, 50),
            line_quantity: 2,
            total_cents: 200,
            item_count: 3,
        };
        let row = apply(Some(row), &recorded(4, 2, added)).unwrap();
        assert_eq!(row.lines, vec![line("a", 1, 100), line("b", 2, 50)]);
        let added = Event::ItemAdded {
            customer_id: customer(),
            item: line("a", 2, 100),
            line_quantity: 3,
            total_cents: 400,
            item_count: 5,
        };
        let row = apply(Some(row), &recorded(5, 3, added)).unwrap();
        assert_eq!(row.lines, vec![line("a", 3, 100), line("b", 2, 50)]);
        let removed = Event::ItemRemoved {
            customer_id: customer(),
            sku: Sku::parse("sku", "b").unwrap(),
            quantity: 2,
            unit_price_cents: 50,
            line_quantity: 0,
            total_cents: 300,
            item_count: 3,
        };
        let row = apply(Some(row), &recorded(6, 4, removed)).unwrap();
        assert_eq!(row.lines, vec![line("a", 3, 100)]);
        assert_eq!((row.total_cents, row.item_count), (300, 3));
        let placed = Event::OrderPlaced {
            customer_id: customer(),
            currency: Currency::parse("currency", "EUR").unwrap(),
            lines: vec![line("a", 3, 100)],
            total_cents: 300,
            item_count: 3,
            placed_at: Timestamp(7_000_000),
        };
        let row = apply(Some(row), &recorded(7, 5, placed)).unwrap();
        assert_eq!(row.status, OrderStatus::Placed);
        assert_eq!(row.placed_at, Some(Timestamp(7_000_000)));
        let cancelled = Event::OrderCancelled {
            customer_id: customer(),
            reason: Text::parse("reason", "changed my mind").unwrap(),
            previous_status: OrderStatus::Placed,
            lines: vec![line("a", 3, 100)],
            total_cents: 300,
            placed_at: Some(Timestamp(7_000_000)),
        };
        let row = apply(Some(row), &recorded(9, 6, cancelled)).unwrap();
        assert_eq!(row.status, OrderStatus::Cancelled);
        assert_eq!(row.version, 6);
        assert_eq!(row.last_position, 9);
        assert_eq!(row.updated_at, Timestamp(9_000_000));
        assert_eq!(row.cancelled_at, Some(Timestamp(9_000_000)));
        assert_eq!(row.cancel_reason, "changed my mind");
    }

    #[test]
    fn events_that_do_not_fit_are_refused_not_skipped() {
        let shipped = Event::OrderShipped {
            customer_id: customer(),
            carrier: Text::default(),
            tracking_number: Text::default(),
            total_cents: 0,
        };
        assert!(matches!(
            apply(None, &recorded(1, 1, shipped.clone())),
            Err(ProjectionError::UnknownOrder { .. })
        ));
        let row = apply(None, &recorded(1, 1, created())).unwrap();
        assert!(matches!(
            apply(Some(row.clone()), &recorded(2, 1, created())),
            Err(ProjectionError::AlreadyCreated { .. })
        ));
        // Applying an event twice shows up as a version gap.
        assert!(matches!(
            apply(Some(row.clone()), &recorded(2, 3, shipped.clone())),
            Err(ProjectionError::VersionGap { .. })
        ));
        assert_eq!(
            apply(Some(row), &recorded(2, 2, shipped)),
            Err(ProjectionError::WrongStatus {
                order_id: "o-1".to_owned(),
                event: "OrderShipped",
                status: OrderStatus::Draft,
            })
        );
    }

    #[test]
    fn a_cancellation_must_name_the_status_it_cancels() {
        let row = apply(None, &recorded(1, 1, created())).unwrap();
        let cancelled = |previous_status| Event::OrderCancelled {
            customer_id: customer(),
            reason: Text::default(),
            previous_status,
            lines: Vec::new(),
            total_cents: 100,
            placed_at: None,
        };
        assert!(matches!(
            apply(
                Some(row.clone()),
                &recorded(2, 2, cancelled(OrderStatus::Placed))
            ),
            Err(ProjectionError::WrongStatus { .. })
        ));
        let row = apply(Some(row), &recorded(2, 2, cancelled(OrderStatus::Draft))).unwrap();
        assert!(matches!(
            apply(
                Some(row),
                &recorded(3, 3, cancelled(OrderStatus::Cancelled))
            ),
            Err(ProjectionError::WrongStatus { .. })
        ));
    }
}

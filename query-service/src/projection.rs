//! How one event changes the read models: a pure function from the order's row
//! (if any) and the analytics totals to the new row. No storage here; the store
//! runs it for each event of a batch before writing the batch.

use shared::domain::{Event, OrderStatus, RecordedEvent};

use crate::analytics::AnalyticsRow;
use crate::order_row::OrderRow;

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

/// The row after the event, and the status it had before (`None`: just created).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub row: OrderRow,
    pub previous_status: Option<OrderStatus>,
}

/// Applies `event` to `current` and to `analytics`. On error neither is usable
/// and the caller must store nothing of its batch.
pub fn apply(
    current: Option<OrderRow>,
    recorded: &RecordedEvent,
    analytics: &mut AnalyticsRow,
) -> Result<Applied, ProjectionError> {
    let order_id = recorded.order_id.as_str();
    let event = &recorded.event;
    let mut row = match (current, event) {
        (Some(_), Event::OrderCreated { .. }) => {
            return Err(ProjectionError::AlreadyCreated {
                order_id: order_id.to_owned(),
            })
        }
        (
            None,
            Event::OrderCreated {
                customer_id,
                currency,
                items,
                total_cents,
                item_count,
            },
        ) => {
            check_version(order_id, 0, recorded.version)?;
            analytics.order_created();
            return Ok(Applied {
                row: OrderRow {
                    order_id: order_id.to_owned(),
                    customer_id: customer_id.as_str().to_owned(),
                    status: OrderStatus::Draft,
                    lines: items.clone(),
                    total_cents: *total_cents,
                    item_count: *item_count,
                    currency: currency.as_str().to_owned(),
                    version: recorded.version,
                    last_position: recorded.position,
                    created_position: recorded.position,
                    created_at: recorded.occurred_at,
                    updated_at: recorded.occurred_at,
                    placed_at: None,
                    shipped_at: None,
                    cancelled_at: None,
                    carrier: String::new(),
                    tracking_number: String::new(),
                    cancel_reason: String::new(),
                },
                previous_status: None,
            });
        }
        (None, event) => {
            return Err(ProjectionError::UnknownOrder {
                order_id: order_id.to_owned(),
                event: event.name(),
            })
        }
        (Some(row), _) => row,
    };
    check_version(order_id, row.version, recorded.version)?;
    let previous_status = row.status;
    let wrong_status = || ProjectionError::WrongStatus {
        order_id: order_id.to_owned(),
        event: event.name(),
        status: previous_status,
    };
    match event {
        Event::OrderCreated { .. } => unreachable!("handled above"),
        Event::ItemAdded {
            item,
            line_quantity,
            total_cents,
            item_count,
            ..
        } => {
            if row.status != OrderStatus::Draft {
                return Err(wrong_status());
            }
            match row.lines.iter_mut().find(|l| l.sku == item.sku) {
                Some(line) => line.quantity = *line_quantity,
                None => row.lines.push(shared::domain::Line {
                    quantity: *line_quantity,
                    ..item.clone()
                }),
            }
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
            if row.status != OrderStatus::Draft {
                return Err(wrong_status());
            }
            if *line_quantity == 0 {
                row.lines.retain(|l| &l.sku != sku);
            } else if let Some(line) = row.lines.iter_mut().find(|l| &l.sku == sku) {
                line.quantity = *line_quantity;
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
            if row.status != OrderStatus::Draft {
                return Err(wrong_status());
            }
            row.status = OrderStatus::Placed;
            row.lines = lines.clone();
            row.total_cents = *total_cents;
            row.item_count = *item_count;
            row.placed_at = Some(*placed_at);
            analytics.status_changed(OrderStatus::Draft, OrderStatus::Placed);
            analytics.order_placed(lines, *total_cents, *placed_at);
        }
        Event::OrderShipped {
            carrier,
            tracking_number,
            ..
        } => {
            if row.status != OrderStatus::Placed {
                return Err(wrong_status());
            }
            row.status = OrderStatus::Shipped;
            row.shipped_at = Some(recorded.occurred_at);
            row.carrier = carrier.as_str().to_owned();
            row.tracking_number = tracking_number.as_str().to_owned();
            analytics.status_changed(OrderStatus::Placed, OrderStatus::Shipped);
        }
        Event::OrderCancelled {
            reason,
            previous_status: stated,
            lines,
            total_cents,
            placed_at,
            ..
        } => {
            if *stated != row.status
                || !matches!(row.status, OrderStatus::Draft | OrderStatus::Placed)
            {
                return Err(wrong_status());
            }
            if row.status == OrderStatus::Placed {
                // The event says when the order was placed; the row knows it too.
                let placed_at = placed_at.or(row.placed_at).unwrap_or(recorded.occurred_at);
                analytics.placed_order_cancelled(lines, *total_cents, placed_at);
            }
            analytics.status_changed(row.status, OrderStatus::Cancelled);
            row.status = OrderStatus::Cancelled;
            row.cancelled_at = Some(recorded.occurred_at);
            row.cancel_reason = reason.as_str().to_owned();
        }
    }
    row.version = recorded.version;
    row.last_position = recorded.position;
    row.updated_at = recorded.occurred_at;
    Ok(Applied {
        row,
        previous_status: Some(previous_status),
    })
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
    fn a_lifecycle_builds_the_view_and_the_analytics() {
        let mut stats = AnalyticsRow::default();
        let a = apply(None, &recorded(3, 1, created()), &mut stats).unwrap();
        assert_eq!(a.previous_status, None);
        assert_eq!(a.row.created_position, 3);
        let added = Event::ItemAdded {
            customer_id: customer(),
            item: line("a", 2, 100),
            line_quantity: 3,
            total_cents: 300,
            item_count: 3,
        };
        let a = apply(Some(a.row), &recorded(5, 2, added), &mut stats).unwrap();
        assert_eq!(a.row.lines, vec![line("a", 3, 100)]);
        let placed = Event::OrderPlaced {
            customer_id: customer(),
            currency: Currency::parse("currency", "EUR").unwrap(),
            lines: vec![line("a", 3, 100)],
            total_cents: 300,
            item_count: 3,
            placed_at: Timestamp(6_000_000),
        };
        let a = apply(Some(a.row), &recorded(6, 3, placed), &mut stats).unwrap();
        assert_eq!(a.previous_status, Some(OrderStatus::Draft));
        assert_eq!(stats.report(10).placed_revenue_cents, 300);
        let cancelled = Event::OrderCancelled {
            customer_id: customer(),
            reason: Text::parse("reason", "changed my mind").unwrap(),
            previous_status: OrderStatus::Placed,
            lines: vec![line("a", 3, 100)],
            total_cents: 300,
            placed_at: Some(Timestamp(6_000_000)),
        };
        let a = apply(Some(a.row), &recorded(9, 4, cancelled), &mut stats).unwrap();
        assert_eq!(a.row.status, OrderStatus::Cancelled);
        assert_eq!(a.row.version, 4);
        assert_eq!(a.row.last_position, 9);
        assert_eq!(a.row.cancel_reason, "changed my mind");
        let report = stats.report(10);
        assert_eq!((report.total_orders, report.cancelled_orders), (1, 1));
        assert_eq!(report.placed_revenue_cents, 0);
        assert!(report.top_products.is_empty() && report.daily.is_empty());
    }

    #[test]
    fn events_that_do_not_fit_are_refused_not_skipped() {
        let mut stats = AnalyticsRow::default();
        let shipped = Event::OrderShipped {
            customer_id: customer(),
            carrier: Text::default(),
            tracking_number: Text::default(),
            total_cents: 0,
        };
        assert!(matches!(
            apply(None, &recorded(1, 1, shipped.clone()), &mut stats),
            Err(ProjectionError::UnknownOrder { .. })
        ));
        let row = apply(None, &recorded(1, 1, created()), &mut stats)
            .unwrap()
            .row;
        assert!(matches!(
            apply(Some(row.clone()), &recorded(2, 1, created()), &mut stats),
            Err(ProjectionError::AlreadyCreated { .. })
        ));
        // Applying an event twice shows up as a version gap.
        assert!(matches!(
            apply(
                Some(row.clone()),
                &recorded(2, 3, shipped.clone()),
                &mut stats
            ),
            Err(ProjectionError::VersionGap { .. })
        ));
        assert!(matches!(
            apply(Some(row), &recorded(2, 2, shipped), &mut stats),
            Err(ProjectionError::WrongStatus { .. })
        ));
    }
}

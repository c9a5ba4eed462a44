//! The only place that knows both proto types and domain types.
//!
//! Requests become domain commands through `TryFrom`, which validates every field
//! and names the offending one; events go both ways.

use crate::domain::{
    Command, CommandId, CommandRequest, Currency, CustomerId, Event, Line, OrderId, OrderStatus,
    RecordedEvent, Sku, Submission, Text, Timestamp, ValidationError, MAX_LINES, MAX_LINE_QUANTITY,
    MAX_TOTAL_CENTS,
};
use crate::proto as pb;

fn order_id(value: &str) -> Result<OrderId, ValidationError> {
    OrderId::parse("order_id", value)
}

fn command_id(value: &str) -> Result<Option<CommandId>, ValidationError> {
    if value.is_empty() {
        Ok(None)
    } else {
        CommandId::parse("command_id", value).map(Some)
    }
}

/// Validates one `LineItem`; `field` is its path, e.g. `items[3]` or `item`.
fn line(field: &str, item: &pb::LineItem) -> Result<Line, ValidationError> {
    let sku = Sku::parse(&format!("{field}.sku"), &item.sku)?;
    if item.quantity == 0 {
        return Err(ValidationError::new(
            format!("{field}.quantity"),
            "must be at least 1",
        ));
    }
    if item.quantity > MAX_LINE_QUANTITY {
        return Err(ValidationError::new(
            format!("{field}.quantity"),
            format!("must be at most {MAX_LINE_QUANTITY}"),
        ));
    }
    if item.unit_price_cents < 0 {
        return Err(ValidationError::new(
            format!("{field}.unit_price_cents"),
            "must not be negative",
        ));
    }
    if item.unit_price_cents > MAX_TOTAL_CENTS {
        return Err(ValidationError::new(
            format!("{field}.unit_price_cents"),
            format!("must be at most {MAX_TOTAL_CENTS}"),
        ));
    }
    Ok(Line {
        sku,
        quantity: item.quantity,
        unit_price_cents: item.unit_price_cents,
    })
}

fn submission(
    order_id: Option<OrderId>,
    expected_version: Option<u64>,
    command_id_value: &str,
    command: Command,
) -> Result<Submission, ValidationError> {
    Ok(Submission {
        request: CommandRequest {
            order_id,
            expected_version,
            command,
        },
        command_id: command_id(command_id_value)?,
    })
}

impl TryFrom<&pb::CreateOrderRequest> for Submission {
    type Error = ValidationError;

    fn try_from(req: &pb::CreateOrderRequest) -> Result<Self, Self::Error> {
        let id = if req.order_id.is_empty() {
            None
        } else {
            Some(order_id(&req.order_id)?)
        };
        let customer_id = CustomerId::parse("customer_id", &req.customer_id)?;
        if req.items.len() > MAX_LINES {
            return Err(ValidationError::new(
                "items",
                format!("at most {MAX_LINES} lines per order"),
            ));
        }
        let mut items: Vec<Line> = Vec::with_capacity(req.items.len());
        for (i, item) in req.items.iter().enumerate() {
            let field = format!("items[{i}]");
            let line = line(&field, item)?;
            if items.iter().any(|l| l.sku == line.sku) {
                return Err(ValidationError::new(
                    format!("{field}.sku"),
                    format!("duplicate sku {:?}: give each sku once", line.sku.as_str()),
                ));
            }
            items.push(line);
        }
        let currency = Currency::parse("currency", &req.currency)?;
        let command = Command::CreateOrder {
            customer_id,
            currency,
            items,
        };
        submission(id, None, &req.command_id, command)
    }
}

impl TryFrom<&pb::AddItemRequest> for Submission {
    type Error = ValidationError;

    fn try_from(req: &pb::AddItemRequest) -> Result<Self, Self::Error> {
        let id = order_id(&req.order_id)?;
        let item = req
            .item
            .as_ref()
            .ok_or_else(|| ValidationError::new("item", "is required"))?;
        let command = Command::AddItem {
            item: line("item", item)?,
        };
        submission(Some(id), req.expected_version, &req.command_id, command)
    }
}

impl TryFrom<&pb::RemoveItemRequest> for Submission {
    type Error = ValidationError;

    fn try_from(req: &pb::RemoveItemRequest) -> Result<Self, Self::Error> {
        let id = order_id(&req.order_id)?;
        let command = Command::RemoveItem {
            sku: Sku::parse("sku", &req.sku)?,
            quantity: req.quantity,
        };
        submission(Some(id), req.expected_version, &req.command_id, command)
    }
}

impl TryFrom<&pb::PlaceOrderRequest> for Submission {
    type Error = ValidationError;

    fn try_from(req: &pb::PlaceOrderRequest) -> Result<Self, Self::Error> {
        let id = order_id(&req.order_id)?;
        submission(
            Some(id),
            req.expected_version,
            &req.command_id,
            Command::PlaceOrder,
        )
    }
}

impl TryFrom<&pb::ShipOrderRequest> for Submission {
    type Error = ValidationError;

    fn try_from(req: &pb::ShipOrderRequest) -> Result<Self, Self::Error> {
        let id = order_id(&req.order_id)?;
        let command = Command::ShipOrder {
            carrier: Text::parse("carrier", &req.carrier)?,
            tracking_number: Text::parse("tracking_number", &req.tracking_number)?,
        };
        submission(Some(id), req.expected_version, &req.command_id, command)
    }
}

impl TryFrom<&pb::CancelOrderRequest> for Submission {
    type Error = ValidationError;

    fn try_from(req: &pb::CancelOrderRequest) -> Result<Self, Self::Error> {
        let id = order_id(&req.order_id)?;
        let command = Command::CancelOrder {
            reason: Text::parse("reason", &req.reason)?,
        };
        submission(Some(id), req.expected_version, &req.command_id, command)
    }
}

// ---- time and status ----

pub fn timestamp_to_proto(ts: Timestamp) -> prost_types::Timestamp {
    let micros = ts.micros();
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1_000) as i32,
    }
}

pub fn timestamp_from_proto(ts: &prost_types::Timestamp) -> Timestamp {
    let micros = i128::from(ts.seconds) * 1_000_000 + i128::from(ts.nanos) / 1_000;
    Timestamp::from_micros(micros.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64)
}

impl From<OrderStatus> for pb::OrderStatus {
    fn from(status: OrderStatus) -> Self {
        match status {
            OrderStatus::Draft => pb::OrderStatus::Draft,
            OrderStatus::Placed => pb::OrderStatus::Placed,
            OrderStatus::Shipped => pb::OrderStatus::Shipped,
            OrderStatus::Cancelled => pb::OrderStatus::Cancelled,
        }
    }
}

/// Reads a proto `OrderStatus` number; `field` names it in the error.
pub fn order_status_from_proto(field: &str, value: i32) -> Result<OrderStatus, ValidationError> {
    match pb::OrderStatus::try_from(value) {
        Ok(pb::OrderStatus::Draft) => Ok(OrderStatus::Draft),
        Ok(pb::OrderStatus::Placed) => Ok(OrderStatus::Placed),
        Ok(pb::OrderStatus::Shipped) => Ok(OrderStatus::Shipped),
        Ok(pb::OrderStatus::Cancelled) => Ok(OrderStatus::Cancelled),
        Ok(pb::OrderStatus::Unspecified) | Err(_) => Err(ValidationError::new(
            field,
            format!("unknown order status {value}"),
        )),
    }
}

// ---- events ----

fn line_to_proto(line: &Line) -> pb::LineItem {
    pb::LineItem {
        sku: line.sku.as_str().to_owned(),
        quantity: line.quantity,
        unit_price_cents: line.unit_price_cents,
    }
}

fn lines_to_proto(lines: &[Line]) -> Vec<pb::LineItem> {
    lines.iter().map(line_to_proto).collect()
}

/// Reads stored lines back. Unlike `line`, accepts what the aggregate may hold.
fn line_from_proto(field: &str, item: &pb::LineItem) -> Result<Line, ValidationError> {
    Ok(Line {
        sku: Sku::parse(&format!("{field}.sku"), &item.sku)?,
        quantity: item.quantity,
        unit_price_cents: item.unit_price_cents,
    })
}

fn lines_from_proto(field: &str, items: &[pb::LineItem]) -> Result<Vec<Line>, ValidationError> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| line_from_proto(&format!("{field}[{i}]"), item))
        .collect()
}

impl From<&Event> for pb::event_envelope::Event {
    fn from(event: &Event) -> Self {
        use pb::event_envelope::Event as E;
        match event {
            Event::OrderCreated {
                customer_id,
                currency,
                items,
                total_cents,
                item_count,
            } => E::OrderCreated(pb::OrderCreated {
                customer_id: customer_id.to_string(),
                currency: currency.as_str().to_owned(),
                items: lines_to_proto(items),
                total_cents: *total_cents,
                item_count: *item_count,
            }),
            Event::ItemAdded {
                customer_id,
                item,
                line_quantity,
                total_cents,
                item_count,
            } => E::ItemAdded(pb::ItemAdded {
                customer_id: customer_id.to_string(),
                item: Some(line_to_proto(item)),
                line_quantity: *line_quantity,
                total_cents: *total_cents,
                item_count: *item_count,
            }),
            Event::ItemRemoved {
                customer_id,
                sku,
                quantity,
                unit_price_cents,
                line_quantity,
                total_cents,
                item_count,
            } => E::ItemRemoved(pb::ItemRemoved {
                customer_id: customer_id.to_string(),
                sku: sku.to_string(),
                quantity: *quantity,
                unit_price_cents: *unit_price_cents,
                line_quantity: *line_quantity,
                total_cents: *total_cents,
                item_count: *item_count,
            }),
            Event::OrderPlaced {
                customer_id,
                currency,
                lines,
                total_cents,
                item_count,
                placed_at,
            } => E::OrderPlaced(pb::OrderPlaced {
                customer_id: customer_id.to_string(),
                currency: currency.as_str().to_owned(),
                lines: lines_to_proto(lines),
                total_cents: *total_cents,
                item_count: *item_count,
                placed_at: Some(timestamp_to_proto(*placed_at)),
            }),
            Event::OrderShipped {
                customer_id,
                carrier,
                tracking_number,
                total_cents,
            } => E::OrderShipped(pb::OrderShipped {
                customer_id: customer_id.to_string(),
                carrier: carrier.as_str().to_owned(),
                tracking_number: tracking_number.as_str().to_owned(),
                total_cents: *total_cents,
            }),
            Event::OrderCancelled {
                customer_id,
                reason,
                previous_status,
                lines,
                total_cents,
                placed_at,
            } => E::OrderCancelled(pb::OrderCancelled {
                customer_id: customer_id.to_string(),
                reason: reason.as_str().to_owned(),
                previous_status: pb::OrderStatus::from(*previous_status) as i32,
                lines: lines_to_proto(lines),
                total_cents: *total_cents,
                placed_at: placed_at.map(timestamp_to_proto),
            }),
        }
    }
}

impl From<&RecordedEvent> for pb::EventEnvelope {
    fn from(e: &RecordedEvent) -> Self {
        pb::EventEnvelope {
            position: e.position,
            event_id: e.event_id.clone(),
            order_id: e.order_id.to_string(),
            version: e.version,
            occurred_at: Some(timestamp_to_proto(e.occurred_at)),
            command_id: e
                .command_id
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            event: Some((&e.event).into()),
        }
    }
}

fn required_ts(
    field: &str,
    ts: &Option<prost_types::Timestamp>,
) -> Result<Timestamp, ValidationError> {
    ts.as_ref()
        .map(timestamp_from_proto)
        .ok_or_else(|| ValidationError::new(field, "is required"))
}

impl TryFrom<&pb::event_envelope::Event> for Event {
    type Error = ValidationError;

    fn try_from(event: &pb::event_envelope::Event) -> Result<Self, Self::Error> {
        use pb::event_envelope::Event as E;
        let customer = |field: &str, v: &str| CustomerId::parse(field, v);
        Ok(match event {
            E::OrderCreated(e) => Event::OrderCreated {
                customer_id: customer("order_created.customer_id", &e.customer_id)?,
                currency: Currency::parse("order_created.currency", &e.currency)?,
                items: lines_from_proto("order_created.items", &e.items)?,
                total_cents: e.total_cents,
                item_count: e.item_count,
            },
            E::ItemAdded(e) => Event::ItemAdded {
                customer_id: customer("item_added.customer_id", &e.customer_id)?,
                item: line_from_proto(
                    "item_added.item",
                    e.item
                        .as_ref()
                        .ok_or_else(|| ValidationError::new("item_added.item", "is required"))?,
                )?,
                line_quantity: e.line_quantity,
                total_cents: e.total_cents,
                item_count: e.item_count,
            },
            E::ItemRemoved(e) => Event::ItemRemoved {
                customer_id: customer("item_removed.customer_id", &e.customer_id)?,
                sku: Sku::parse("item_removed.sku", &e.sku)?,
                quantity: e.quantity,
                unit_price_cents: e.unit_price_cents,
                line_quantity: e.line_quantity,
                total_cents: e.total_cents,
                item_count: e.item_count,
            },
            E::OrderPlaced(e) => Event::OrderPlaced {
                customer_id: customer("order_placed.customer_id", &e.customer_id)?,
                currency: Currency::parse("order_placed.currency", &e.currency)?,
                lines: lines_from_proto("order_placed.lines", &e.lines)?,
                total_cents: e.total_cents,
                item_count: e.item_count,
                placed_at: required_ts("order_placed.placed_at", &e.placed_at)?,
            },
            E::OrderShipped(e) => Event::OrderShipped {
                customer_id: customer("order_shipped.customer_id", &e.customer_id)?,
                carrier: Text::parse("order_shipped.carrier", &e.carrier)?,
                tracking_number: Text::parse("order_shipped.tracking_number", &e.tracking_number)?,
                total_cents: e.total_cents,
            },
            E::OrderCancelled(e) => Event::OrderCancelled {
                customer_id: customer("order_cancelled.customer_id", &e.customer_id)?,
                reason: Text::parse("order_cancelled.reason", &e.reason)?,
                previous_status: order_status_from_proto(
                    "order_cancelled.previous_status",
                    e.previous_status,
                )?,
                lines: lines_from_proto("order_cancelled.lines", &e.lines)?,
                total_cents: e.total_cents,
                placed_at: e.placed_at.as_ref().map(timestamp_from_proto),
            },
        })
    }
}

impl TryFrom<&pb::EventEnvelope> for RecordedEvent {
    type Error = ValidationError;

    /// Fails on an envelope this build cannot understand (for instance a newer
    /// event type, which decodes with no `event`): the query side treats that as
    /// a poison event.
    fn try_from(e: &pb::EventEnvelope) -> Result<Self, Self::Error> {
        if e.position == 0 {
            return Err(ValidationError::new("position", "must be at least 1"));
        }
        let event = e.event.as_ref().ok_or_else(|| {
            ValidationError::new(
                "event",
                "missing or of an event type this build does not know",
            )
        })?;
        Ok(RecordedEvent {
            position: e.position,
            event_id: e.event_id.clone(),
            order_id: order_id(&e.order_id)?,
            version: e.version,
            occurred_at: required_ts("occurred_at", &e.occurred_at)?,
            command_id: command_id(&e.command_id)?,
            event: event.try_into()?,
        })
    }
}

#[cfg(test)]
#[path = "convert_tests.rs"]
mod tests;

//! The only place that knows both proto types and domain types.
//!
//! Requests become domain commands through `TryFrom`, which validates every field
//! and names the offending one (`ListOrderEventsRequest` becomes an
//! `OrderEventsPage`, its page token checked here too); events go both ways.

use crate::domain::{
    Command, CommandId, CommandRequest, Currency, CustomerId, Event, Line, OrderId, OrderStatus,
    RecordedEvent, Sku, Submission, Text, Timestamp, ValidationError, MAX_LINES, MAX_LINE_QUANTITY,
    MAX_TOTAL_CENTS,
};
use crate::proto as pb;
use std::fmt;

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

/// Where a line sits in its message, e.g. `items[3]` or `item`: spelled
/// out only when an error names it, not for every valid line.
#[derive(Clone, Copy)]
enum LineAt<'a> {
    Field(&'a str),
    Index(&'a str, usize),
}

impl fmt::Display for LineAt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineAt::Field(field) => f.write_str(field),
            LineAt::Index(field, i) => write!(f, "{field}[{i}]"),
        }
    }
}

impl LineAt<'_> {
    /// The path of one of the line's fields.
    fn field(self, name: &str) -> String {
        format!("{self}.{name}")
    }

    /// A line's sku, its error naming the sku's whole path.
    fn sku(self, value: &str) -> Result<Sku, ValidationError> {
        Sku::parse("sku", value).map_err(|e| ValidationError::new(self.field("sku"), e.message))
    }
}

/// Validates one `LineItem` at `at`.
fn line(at: LineAt<'_>, item: &pb::LineItem) -> Result<Line, ValidationError> {
    let sku = at.sku(&item.sku)?;
    if item.quantity == 0 {
        return Err(ValidationError::new(
            at.field("quantity"),
            "must be at least 1",
        ));
    }
    if item.quantity > MAX_LINE_QUANTITY {
        return Err(ValidationError::new(
            at.field("quantity"),
            format!("must be at most {MAX_LINE_QUANTITY}"),
        ));
    }
    if item.unit_price_cents < 0 {
        return Err(ValidationError::new(
            at.field("unit_price_cents"),
            "must not be negative",
        ));
    }
    if item.unit_price_cents > MAX_TOTAL_CENTS {
        return Err(ValidationError::new(
            at.field("unit_price_cents"),
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
            let at = LineAt::Index("items", i);
            let line = line(at, item)?;
            if items.iter().any(|l| l.sku == line.sku) {
                return Err(ValidationError::new(
                    at.field("sku"),
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
            item: line(LineAt::Field("item"), item)?,
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

// ---- one order's history ----

/// `ListOrderEvents` page size when the request gives none.
pub const DEFAULT_ORDER_EVENTS_PAGE_SIZE: usize = 100;
/// The largest `ListOrderEvents` page; a larger `page_size` is served as this.
pub const MAX_ORDER_EVENTS_PAGE_SIZE: usize = 1000;

/// A validated `ListOrderEventsRequest`: the events of `order_id` with a
/// version greater than `after_version`, at most `page_size` of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderEventsPage {
    pub order_id: OrderId,
    /// The request's `after_version`, or the page token's cursor when that
    /// is further on.
    pub after_version: u64,
    pub page_size: usize,
}

/// The format byte in front of an order-history page token.
const HISTORY_TOKEN_FORMAT: u8 = 1;
const HISTORY_TOKEN_LEN: usize = 1 + 8 + 8;

/// FNV-1a of the order id: binds a token to the order it was issued for,
/// stable across builds and platforms.
fn order_fingerprint(id: &OrderId) -> u64 {
    id.as_str().bytes().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl OrderEventsPage {
    /// The opaque token that continues after the event at `last_version`:
    /// hex of `[format, last_version u64 BE, order id fingerprint u64 BE]`.
    /// Versions never change, so the next page neither repeats nor skips an
    /// event, however many are written meanwhile.
    pub fn next_page_token(&self, last_version: u64) -> String {
        let mut bytes = Vec::with_capacity(HISTORY_TOKEN_LEN);
        bytes.push(HISTORY_TOKEN_FORMAT);
        bytes.extend_from_slice(&last_version.to_be_bytes());
        bytes.extend_from_slice(&order_fingerprint(&self.order_id).to_be_bytes());
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The version a page token continues after, checked against the order it
/// was issued for.
fn history_cursor(order_id: &OrderId, token: &str) -> Result<u64, ValidationError> {
    let invalid = || {
        ValidationError::new(
            "page_token",
            "not a token issued by ListOrderEvents for this order_id",
        )
    };
    if token.len() != 2 * HISTORY_TOKEN_LEN || !token.is_ascii() {
        return Err(invalid());
    }
    let bytes = (0..HISTORY_TOKEN_LEN)
        .map(|i| u8::from_str_radix(&token[2 * i..2 * i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| invalid())?;
    let word = |at: usize| {
        u64::from_be_bytes(
            bytes[at..at + 8]
                .try_into()
                .expect("the length was checked"),
        )
    };
    if bytes[0] != HISTORY_TOKEN_FORMAT || word(9) != order_fingerprint(order_id) {
        return Err(invalid());
    }
    Ok(word(1))
}

impl TryFrom<&pb::ListOrderEventsRequest> for OrderEventsPage {
    type Error = ValidationError;

    fn try_from(req: &pb::ListOrderEventsRequest) -> Result<Self, Self::Error> {
        let order_id = order_id(&req.order_id)?;
        let after_version = if req.page_token.is_empty() {
            req.after_version
        } else {
            history_cursor(&order_id, &req.page_token)?.max(req.after_version)
        };
        let page_size = match req.page_size {
            0 => DEFAULT_ORDER_EVENTS_PAGE_SIZE,
            n => usize::try_from(n)
                .unwrap_or(usize::MAX)
                .min(MAX_ORDER_EVENTS_PAGE_SIZE),
        };
        Ok(OrderEventsPage {
            order_id,
            after_version,
            page_size,
        })
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
fn line_from_proto(at: LineAt<'_>, item: &pb::LineItem) -> Result<Line, ValidationError> {
    Ok(Line {
        sku: at.sku(&item.sku)?,
        quantity: item.quantity,
        unit_price_cents: item.unit_price_cents,
    })
}

fn lines_from_proto(field: &str, items: &[pb::LineItem]) -> Result<Vec<Line>, ValidationError> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| line_from_proto(LineAt::Index(field, i), item))
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
            // The command side adds the trace context (decide.rs).
            metadata: None,
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
                    LineAt::Field("item_added.item"),
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

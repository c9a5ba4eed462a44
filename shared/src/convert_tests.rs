//! Tests of the proto <-> domain conversions: every malformed request is refused
//! with an error naming the offending field, and events survive the trip
//! domain -> proto -> domain unchanged.

use super::*;
use crate::domain::{MAX_ID_LEN, MAX_TEXT_CHARS};

// ---- helpers ----

fn item(sku: &str, quantity: u32, unit_price_cents: i64) -> pb::LineItem {
    pb::LineItem {
        sku: sku.to_owned(),
        quantity,
        unit_price_cents,
    }
}

fn create_request() -> pb::CreateOrderRequest {
    pb::CreateOrderRequest {
        order_id: "order-1".into(),
        customer_id: "cust-1".into(),
        items: vec![item("apple", 2, 150), item("pear", 1, 99)],
        currency: "EUR".into(),
        command_id: "cmd-1".into(),
    }
}

fn add_request() -> pb::AddItemRequest {
    pb::AddItemRequest {
        order_id: "order-1".into(),
        item: Some(item("plum", 3, 40)),
        expected_version: Some(4),
        command_id: String::new(),
    }
}

fn remove_request() -> pb::RemoveItemRequest {
    pb::RemoveItemRequest {
        order_id: "order-1".into(),
        sku: "apple".into(),
        quantity: 0,
        expected_version: None,
        command_id: "cmd-2".into(),
    }
}

fn place_request() -> pb::PlaceOrderRequest {
    pb::PlaceOrderRequest {
        order_id: "order-1".into(),
        expected_version: Some(2),
        command_id: String::new(),
    }
}

fn ship_request() -> pb::ShipOrderRequest {
    pb::ShipOrderRequest {
        order_id: "order-1".into(),
        carrier: "DHL".into(),
        tracking_number: "TRACK-1".into(),
        expected_version: None,
        command_id: String::new(),
    }
}

fn cancel_request() -> pb::CancelOrderRequest {
    pb::CancelOrderRequest {
        order_id: "order-1".into(),
        reason: "changed my mind".into(),
        expected_version: None,
        command_id: String::new(),
    }
}

/// Asserts that `result` is a validation error for exactly `field`, and that its
/// message (what a client sees) starts with the field name.
#[track_caller]
fn assert_rejects(result: Result<Submission, ValidationError>, field: &str) {
    match result {
        Ok(s) => panic!("expected a validation error on {field}, got {s:?}"),
        Err(e) => {
            assert_eq!(e.field, field, "wrong field in {e}");
            assert!(!e.message.is_empty(), "empty message for {field}");
            assert!(
                e.to_string().starts_with(&format!("{field}: ")),
                "message does not name the field: {e}"
            );
        }
    }
}

fn sku(s: &str) -> Sku {
    Sku::parse("sku", s).unwrap()
}

fn line(s: &str, quantity: u32, unit_price_cents: i64) -> Line {
    Line {
        sku: sku(s),
        quantity,
        unit_price_cents,
    }
}

fn bad_ids() -> Vec<(&'static str, String)> {
    vec![
        ("empty", String::new()),
        ("space", "a b".into()),
        ("slash", "a/b".into()),
        ("non-ascii", "caf\u{e9}".into()),
        ("too long", "a".repeat(MAX_ID_LEN + 1)),
        ("huge", "x".repeat(1 << 20)),
    ]
}

// ---- valid requests ----

#[test]
fn a_valid_create_order_request_becomes_a_create_command() {
    let s = Submission::try_from(&create_request()).unwrap();
    assert_eq!(s.command_id.as_ref().map(CommandId::as_str), Some("cmd-1"));
    assert_eq!(
        s.request.order_id.as_ref().map(OrderId::as_str),
        Some("order-1")
    );
    assert_eq!(s.request.expected_version, None);
    assert_eq!(
        s.request.command,
        Command::CreateOrder {
            customer_id: CustomerId::parse("c", "cust-1").unwrap(),
            currency: Currency::parse("c", "EUR").unwrap(),
            items: vec![line("apple", 2, 150), line("pear", 1, 99)],
        }
    );
}

#[test]
fn an_empty_order_id_on_create_asks_the_server_to_generate_one() {
    let mut req = create_request();
    req.order_id.clear();
    let s = Submission::try_from(&req).unwrap();
    assert_eq!(s.request.order_id, None);
}

#[test]
fn an_empty_currency_means_usd() {
    let mut req = create_request();
    req.currency.clear();
    let s = Submission::try_from(&req).unwrap();
    let Command::CreateOrder { currency, .. } = s.request.command else {
        panic!("not a create");
    };
    assert_eq!(currency.as_str(), "USD");
}

#[test]
fn an_empty_command_id_means_no_idempotency_key() {
    let s = Submission::try_from(&add_request()).unwrap();
    assert_eq!(s.command_id, None);
}

#[test]
fn every_command_request_converts_with_its_fields() {
    let s = Submission::try_from(&add_request()).unwrap();
    assert_eq!(s.request.expected_version, Some(4));
    assert_eq!(
        s.request.command,
        Command::AddItem {
            item: line("plum", 3, 40)
        }
    );

    let s = Submission::try_from(&remove_request()).unwrap();
    assert_eq!(s.request.expected_version, None);
    assert_eq!(
        s.request.command,
        Command::RemoveItem {
            sku: sku("apple"),
            quantity: 0
        }
    );

    let s = Submission::try_from(&place_request()).unwrap();
    assert_eq!(s.request.expected_version, Some(2));
    assert_eq!(s.request.command, Command::PlaceOrder);

    let s = Submission::try_from(&ship_request()).unwrap();
    assert_eq!(
        s.request.command,
        Command::ShipOrder {
            carrier: Text::parse("t", "DHL").unwrap(),
            tracking_number: Text::parse("t", "TRACK-1").unwrap(),
        }
    );

    let s = Submission::try_from(&cancel_request()).unwrap();
    assert_eq!(
        s.request.command,
        Command::CancelOrder {
            reason: Text::parse("t", "changed my mind").unwrap()
        }
    );
}

#[test]
fn the_limits_themselves_are_accepted() {
    let mut req = create_request();
    req.order_id = "o".repeat(MAX_ID_LEN);
    req.items = (0..MAX_LINES)
        .map(|i| item(&format!("sku-{i}"), MAX_LINE_QUANTITY, 0))
        .collect();
    assert!(Submission::try_from(&req).is_ok());

    let mut req = ship_request();
    req.carrier = "c".repeat(MAX_TEXT_CHARS);
    req.tracking_number = "\u{e9}".repeat(MAX_TEXT_CHARS);
    assert!(Submission::try_from(&req).is_ok());
}

// ---- identifiers ----

#[test]
fn a_bad_order_id_is_refused_naming_order_id_on_every_request() {
    for (case, id) in bad_ids() {
        if !id.is_empty() {
            // An empty id on CreateOrder means "generate one".
            let mut req = create_request();
            req.order_id = id.clone();
            assert_rejects(Submission::try_from(&req), "order_id");
        }
        let mut req = add_request();
        req.order_id = id.clone();
        assert_rejects(Submission::try_from(&req), "order_id");
        let mut req = remove_request();
        req.order_id = id.clone();
        assert_rejects(Submission::try_from(&req), "order_id");
        let mut req = place_request();
        req.order_id = id.clone();
        assert_rejects(Submission::try_from(&req), "order_id");
        let mut req = ship_request();
        req.order_id = id.clone();
        assert_rejects(Submission::try_from(&req), "order_id");
        let mut req = cancel_request();
        req.order_id = id.clone();
        assert_rejects(Submission::try_from(&req), "order_id");
        let _ = case;
    }
}

#[test]
fn a_bad_customer_id_is_refused() {
    for (_, id) in bad_ids() {
        let mut req = create_request();
        req.customer_id = id;
        assert_rejects(Submission::try_from(&req), "customer_id");
    }
}

#[test]
fn a_bad_command_id_is_refused() {
    for (_, id) in bad_ids().into_iter().filter(|(_, id)| !id.is_empty()) {
        let mut req = create_request();
        req.command_id = id.clone();
        assert_rejects(Submission::try_from(&req), "command_id");
        let mut req = cancel_request();
        req.command_id = id;
        assert_rejects(Submission::try_from(&req), "command_id");
    }
}

#[test]
fn a_bad_sku_is_refused_with_its_path() {
    for (_, id) in bad_ids() {
        let mut req = create_request();
        req.items[1].sku = id.clone();
        assert_rejects(Submission::try_from(&req), "items[1].sku");
        let mut req = add_request();
        req.item.as_mut().unwrap().sku = id.clone();
        assert_rejects(Submission::try_from(&req), "item.sku");
        let mut req = remove_request();
        req.sku = id;
        assert_rejects(Submission::try_from(&req), "sku");
    }
}

// ---- line items ----

#[test]
fn quantity_zero_is_refused() {
    let mut req = create_request();
    req.items[0].quantity = 0;
    assert_rejects(Submission::try_from(&req), "items[0].quantity");
    let mut req = add_request();
    req.item.as_mut().unwrap().quantity = 0;
    assert_rejects(Submission::try_from(&req), "item.quantity");
}

#[test]
fn a_quantity_over_10000_is_refused() {
    for quantity in [MAX_LINE_QUANTITY + 1, u32::MAX] {
        let mut req = create_request();
        req.items[1].quantity = quantity;
        assert_rejects(Submission::try_from(&req), "items[1].quantity");
        let mut req = add_request();
        req.item.as_mut().unwrap().quantity = quantity;
        assert_rejects(Submission::try_from(&req), "item.quantity");
    }
}

#[test]
fn a_negative_price_is_refused() {
    for price in [-1, i64::MIN] {
        let mut req = create_request();
        req.items[1].unit_price_cents = price;
        assert_rejects(Submission::try_from(&req), "items[1].unit_price_cents");
        let mut req = add_request();
        req.item.as_mut().unwrap().unit_price_cents = price;
        assert_rejects(Submission::try_from(&req), "item.unit_price_cents");
    }
}

#[test]
fn a_price_no_order_could_hold_is_refused() {
    let mut req = add_request();
    req.item.as_mut().unwrap().unit_price_cents = i64::MAX;
    assert_rejects(Submission::try_from(&req), "item.unit_price_cents");
}

#[test]
fn a_missing_item_is_refused() {
    let mut req = add_request();
    req.item = None;
    assert_rejects(Submission::try_from(&req), "item");
}

#[test]
fn more_than_100_items_are_refused() {
    let mut req = create_request();
    req.items = (0..=MAX_LINES)
        .map(|i| item(&format!("sku-{i}"), 1, 1))
        .collect();
    assert_rejects(Submission::try_from(&req), "items");
}

#[test]
fn a_huge_item_list_is_refused_as_too_many_lines() {
    let mut req = create_request();
    req.items = vec![item("same", 0, -1); 100_000];
    assert_rejects(Submission::try_from(&req), "items");
}

#[test]
fn a_sku_given_twice_in_create_is_refused_at_the_second_one() {
    let mut req = create_request();
    req.items = vec![item("a", 1, 1), item("b", 1, 1), item("a", 2, 1)];
    assert_rejects(Submission::try_from(&req), "items[2].sku");
    // Even at the same price: one line per sku.
    req.items = vec![item("a", 1, 1), item("a", 1, 1)];
    assert_rejects(Submission::try_from(&req), "items[1].sku");
}

// ---- currency and text ----

#[test]
fn an_unknown_or_malformed_currency_is_refused() {
    for currency in ["XYZ", "usd", "US", "EURO", "E1R", "\u{20ac}"] {
        let mut req = create_request();
        req.currency = currency.into();
        assert_rejects(Submission::try_from(&req), "currency");
    }
}

#[test]
fn text_over_256_characters_is_refused() {
    let long = "x".repeat(MAX_TEXT_CHARS + 1);
    let mut req = ship_request();
    req.carrier = long.clone();
    assert_rejects(Submission::try_from(&req), "carrier");
    let mut req = ship_request();
    req.tracking_number = long.clone();
    assert_rejects(Submission::try_from(&req), "tracking_number");
    let mut req = cancel_request();
    req.reason = long;
    assert_rejects(Submission::try_from(&req), "reason");
    let mut req = cancel_request();
    req.reason = "\u{e9}".repeat(MAX_TEXT_CHARS + 1);
    assert_rejects(Submission::try_from(&req), "reason");
}

// ---- requests compare equal exactly when they are the same command ----

#[test]
fn equal_requests_make_equal_submissions_and_different_ones_do_not() {
    let a = Submission::try_from(&add_request()).unwrap();
    let b = Submission::try_from(&add_request()).unwrap();
    assert_eq!(a.request, b.request);
    let mut other = add_request();
    other.item.as_mut().unwrap().quantity += 1;
    assert_ne!(a.request, Submission::try_from(&other).unwrap().request);
    let mut other = add_request();
    other.expected_version = None;
    assert_ne!(a.request, Submission::try_from(&other).unwrap().request);
}

// ---- status and time ----

#[test]
fn order_status_round_trips_and_unspecified_is_refused() {
    for status in [
        OrderStatus::Draft,
        OrderStatus::Placed,
        OrderStatus::Shipped,
        OrderStatus::Cancelled,
    ] {
        let number = pb::OrderStatus::from(status) as i32;
        assert_eq!(order_status_from_proto("status", number).unwrap(), status);
    }
    for number in [0, 5, -1] {
        let err = order_status_from_proto("status", number).unwrap_err();
        assert_eq!(err.field, "status");
    }
}

#[test]
fn timestamps_round_trip_at_microsecond_precision() {
    for micros in [
        0,
        1,
        -1,
        1_764_000_000_123_456,
        -1_000_001,
        i64::MAX,
        i64::MIN,
    ] {
        let ts = Timestamp::from_micros(micros);
        let proto = timestamp_to_proto(ts);
        assert!((0..1_000_000_000).contains(&proto.nanos), "{proto:?}");
        assert_eq!(timestamp_from_proto(&proto), ts);
    }
}

// ---- events ----

fn customer() -> CustomerId {
    CustomerId::parse("customer_id", "cust-1").unwrap()
}

fn text(s: &str) -> Text {
    Text::parse("t", s).unwrap()
}

fn every_event() -> Vec<Event> {
    let lines = vec![line("apple", 2, 150), line("pear", 1, 0)];
    vec![
        Event::OrderCreated {
            customer_id: customer(),
            currency: Currency::parse("c", "JPY").unwrap(),
            items: lines.clone(),
            total_cents: 300,
            item_count: 3,
        },
        Event::OrderCreated {
            customer_id: customer(),
            currency: Currency::parse("c", "USD").unwrap(),
            items: vec![],
            total_cents: 0,
            item_count: 0,
        },
        Event::ItemAdded {
            customer_id: customer(),
            item: line("apple", 3, 150),
            line_quantity: 5,
            total_cents: 750,
            item_count: 6,
        },
        Event::ItemRemoved {
            customer_id: customer(),
            sku: sku("apple"),
            quantity: 2,
            unit_price_cents: 150,
            line_quantity: 0,
            total_cents: 0,
            item_count: 1,
        },
        Event::OrderPlaced {
            customer_id: customer(),
            currency: Currency::parse("c", "EUR").unwrap(),
            lines: lines.clone(),
            total_cents: MAX_TOTAL_CENTS,
            item_count: u64::from(MAX_LINE_QUANTITY),
            placed_at: Timestamp::from_micros(1_764_000_000_123_456),
        },
        Event::OrderShipped {
            customer_id: customer(),
            carrier: text("DHL \u{e9}xpress"),
            tracking_number: text(""),
            total_cents: 300,
        },
        Event::OrderCancelled {
            customer_id: customer(),
            reason: text("too slow"),
            previous_status: OrderStatus::Placed,
            lines: lines.clone(),
            total_cents: 300,
            placed_at: Some(Timestamp::from_micros(-5)),
        },
        Event::OrderCancelled {
            customer_id: customer(),
            reason: text(""),
            previous_status: OrderStatus::Draft,
            lines: vec![],
            total_cents: 0,
            placed_at: None,
        },
    ]
}

#[test]
fn every_event_round_trips_domain_to_proto_to_domain() {
    for event in every_event() {
        let proto = pb::event_envelope::Event::from(&event);
        let back = Event::try_from(&proto).unwrap_or_else(|e| panic!("{event:?}: {e}"));
        assert_eq!(back, event);
    }
}

/// Each event goes into one log block, as the command side stores it, and comes
/// back out of its frame, decoded as the `SubscribeEventsResponse` a subscriber
/// receives.
#[test]
fn every_recorded_event_round_trips_through_the_envelope_and_a_log_block() {
    use prost::Message;
    let mut block = crate::codec::new_log_block();
    let mut envelopes = Vec::new();
    let mut recorded_events = Vec::new();
    for (i, event) in every_event().into_iter().enumerate() {
        let recorded = RecordedEvent {
            position: i as u64 + 1,
            event_id: format!("event-{i}"),
            order_id: OrderId::parse("order_id", "order-1").unwrap(),
            version: i as u64 + 7,
            occurred_at: Timestamp::from_micros(1_764_000_000_000_000 + i as i64),
            command_id: (i % 2 == 0).then(|| CommandId::parse("c", &format!("cmd-{i}")).unwrap()),
            event,
        };
        let envelope = pb::EventEnvelope::from(&recorded);
        assert_eq!(envelope.position, recorded.position);
        assert_eq!(envelope.order_id, "order-1");
        assert_eq!(envelope.version, recorded.version);
        if recorded.command_id.is_none() {
            assert_eq!(envelope.command_id, "");
        }
        crate::codec::push_log_event(&mut block, &envelope);
        envelopes.push(envelope);
        recorded_events.push(recorded);
    }
    let frames = crate::codec::log_block_frames(&block).unwrap();
    assert_eq!(frames.len(), envelopes.len());
    for ((frame, envelope), recorded) in frames.into_iter().zip(envelopes).zip(recorded_events) {
        let response = pb::SubscribeEventsResponse::decode(&block[frame]).unwrap();
        let Some(pb::subscribe_events_response::Kind::Event(decoded)) = response.kind else {
            panic!("a log block frame without an event: {response:?}");
        };
        assert_eq!(decoded, envelope);
        assert_eq!(RecordedEvent::try_from(&decoded).unwrap(), recorded);
    }
}

#[test]
fn the_proto_event_carries_what_the_read_side_needs() {
    let event = Event::OrderPlaced {
        customer_id: customer(),
        currency: Currency::parse("c", "EUR").unwrap(),
        lines: vec![line("apple", 2, 150)],
        total_cents: 300,
        item_count: 2,
        placed_at: Timestamp::from_micros(2_500_000),
    };
    let pb::event_envelope::Event::OrderPlaced(p) = pb::event_envelope::Event::from(&event) else {
        panic!("wrong variant");
    };
    assert_eq!(p.customer_id, "cust-1");
    assert_eq!(p.currency, "EUR");
    assert_eq!(p.lines, vec![item("apple", 2, 150)]);
    assert_eq!(p.total_cents, 300);
    assert_eq!(p.item_count, 2);
    assert_eq!(
        p.placed_at,
        Some(prost_types::Timestamp {
            seconds: 2,
            nanos: 500_000_000
        })
    );
}

#[test]
fn an_envelope_this_build_cannot_read_is_refused_naming_the_field() {
    let recorded = RecordedEvent {
        position: 3,
        event_id: "e".into(),
        order_id: OrderId::parse("order_id", "order-1").unwrap(),
        version: 1,
        occurred_at: Timestamp::from_micros(0),
        command_id: None,
        event: every_event().remove(0),
    };
    let good = pb::EventEnvelope::from(&recorded);

    let mut no_event = good.clone();
    no_event.event = None;
    assert_eq!(
        RecordedEvent::try_from(&no_event).unwrap_err().field,
        "event"
    );

    let mut position_zero = good.clone();
    position_zero.position = 0;
    assert_eq!(
        RecordedEvent::try_from(&position_zero).unwrap_err().field,
        "position"
    );

    let mut no_time = good.clone();
    no_time.occurred_at = None;
    assert_eq!(
        RecordedEvent::try_from(&no_time).unwrap_err().field,
        "occurred_at"
    );

    let mut bad_order = good.clone();
    bad_order.order_id = String::new();
    assert_eq!(
        RecordedEvent::try_from(&bad_order).unwrap_err().field,
        "order_id"
    );

    let mut placed_without_time = pb::event_envelope::Event::from(&every_event()[4]);
    if let pb::event_envelope::Event::OrderPlaced(p) = &mut placed_without_time {
        p.placed_at = None;
    }
    assert_eq!(
        Event::try_from(&placed_without_time).unwrap_err().field,
        "order_placed.placed_at"
    );

    // A stored line names its whole path, index included.
    let mut created = pb::event_envelope::Event::from(&every_event()[0]);
    if let pb::event_envelope::Event::OrderCreated(c) = &mut created {
        c.items[1].sku = "no spaces".into();
    }
    assert_eq!(
        Event::try_from(&created).unwrap_err().field,
        "order_created.items[1].sku"
    );
    let mut added = pb::event_envelope::Event::from(&every_event()[2]);
    if let pb::event_envelope::Event::ItemAdded(a) = &mut added {
        a.item.as_mut().unwrap().sku = String::new();
    }
    assert_eq!(
        Event::try_from(&added).unwrap_err().field,
        "item_added.item.sku"
    );
}

// ---- one order's history ----

fn history_request() -> pb::ListOrderEventsRequest {
    pb::ListOrderEventsRequest {
        order_id: "order-1".into(),
        after_version: 0,
        page_size: 0,
        page_token: String::new(),
    }
}

#[test]
fn a_history_request_defaults_its_page_size_and_caps_it() {
    let page = OrderEventsPage::try_from(&history_request()).unwrap();
    assert_eq!(page.order_id.as_str(), "order-1");
    assert_eq!(page.after_version, 0);
    assert_eq!(page.page_size, DEFAULT_ORDER_EVENTS_PAGE_SIZE);
    for (asked, served) in [(1, 1), (1000, 1000), (1001, 1000), (u32::MAX, 1000)] {
        let req = pb::ListOrderEventsRequest {
            page_size: asked,
            ..history_request()
        };
        assert_eq!(OrderEventsPage::try_from(&req).unwrap().page_size, served);
    }
}

#[test]
fn a_history_request_with_a_bad_order_id_is_refused_naming_order_id() {
    for (case, id) in bad_ids() {
        let req = pb::ListOrderEventsRequest {
            order_id: id,
            ..history_request()
        };
        let error = OrderEventsPage::try_from(&req).unwrap_err();
        assert_eq!(error.field, "order_id", "{case}");
    }
}

#[test]
fn a_history_page_token_continues_after_its_version() {
    let first = OrderEventsPage::try_from(&history_request()).unwrap();
    let req = pb::ListOrderEventsRequest {
        page_token: first.next_page_token(42),
        ..history_request()
    };
    assert_eq!(OrderEventsPage::try_from(&req).unwrap().after_version, 42);
    // An after_version further on than the token wins.
    let req = pb::ListOrderEventsRequest {
        after_version: 50,
        ..req
    };
    assert_eq!(OrderEventsPage::try_from(&req).unwrap().after_version, 50);
}

#[test]
fn a_bad_history_page_token_is_refused_naming_page_token() {
    let token = OrderEventsPage::try_from(&history_request())
        .unwrap()
        .next_page_token(7);
    let other_order = OrderEventsPage::try_from(&pb::ListOrderEventsRequest {
        order_id: "order-2".into(),
        ..history_request()
    })
    .unwrap()
    .next_page_token(7);
    let mut wrong_format = token.clone();
    wrong_format.replace_range(0..2, "09");
    for bad in [
        "zz".to_owned(),
        token[..token.len() - 2].to_owned(),
        format!("{token}00"),
        token.replace(|c: char| c.is_ascii_digit(), "g"),
        "\u{e9}".repeat(17),
        wrong_format,
        other_order,
    ] {
        let req = pb::ListOrderEventsRequest {
            page_token: bad.clone(),
            ..history_request()
        };
        let error = OrderEventsPage::try_from(&req).unwrap_err();
        assert_eq!(error.field, "page_token", "{bad:?}");
    }
}

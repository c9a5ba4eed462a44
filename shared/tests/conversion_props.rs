//! Property tests of request validation: random proto requests (any field
//! values, huge strings, extreme integers, empty and duplicate skus) through
//! `Submission::try_from` never panic; they succeed exactly when an
//! independent statement of the SPEC's rules says they are valid (and then
//! carry the request's values), and otherwise give a `ValidationError` naming
//! one of the request's fields. Random bytes decoded as requests and then
//! validated never panic either, and decode failures name a field or say
//! `request`.
//!
//! `PROPTEST_CASES=100000 cargo test -p orders-shared --test conversion_props`

use proptest::prelude::*;
use prost::Message;
use shared::domain::{Command, Submission, ValidationError};
use shared::proto as pb;

// ---- the SPEC's rules, stated independently of `shared::domain` ----

fn valid_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

fn valid_key(s: &str) -> bool {
    s.is_empty() || valid_id(s)
}

fn valid_text(s: &str) -> bool {
    s.chars().count() <= 256
}

/// The currency strategy only draws from this table, so validity is known.
const CURRENCIES: &[(&str, bool)] = &[
    ("", true),
    ("USD", true),
    ("EUR", true),
    ("JPY", true),
    ("XAU", true),
    ("usd", false),
    ("XYZ", false),
    ("EURO", false),
    ("US", false),
    ("€", false),
    ("U\u{0}D", false),
];

fn valid_currency(s: &str) -> bool {
    CURRENCIES.iter().any(|(c, ok)| *c == s && *ok)
}

fn valid_item(i: &pb::LineItem) -> bool {
    valid_id(&i.sku)
        && (1..=10_000).contains(&i.quantity)
        && (0..=1_000_000_000_000).contains(&i.unit_price_cents)
}

fn valid_create(r: &pb::CreateOrderRequest) -> bool {
    let mut skus = std::collections::HashSet::new();
    (r.order_id.is_empty() || valid_id(&r.order_id))
        && valid_id(&r.customer_id)
        && r.items.len() <= 100
        && r.items.iter().all(valid_item)
        && r.items.iter().all(|i| skus.insert(i.sku.clone()))
        && valid_currency(&r.currency)
        && valid_key(&r.command_id)
}

// ---- strategies ----

/// Strings a hostile client might send, valid ids among them.
fn any_string() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[A-Za-z0-9._:-]{1,64}",
        2 => Just(String::new()),
        2 => "[a-c]{1,2}",
        2 => any::<String>(),
        1 => "[A-Za-z0-9]{65,70}",
        1 => "\\PC{0,300}",
        1 => "[é ]{250,260}",
        1 => (0usize..3).prop_map(|i| ["\0", " ", "a b", "a/b"][i].to_owned()),
        1 => (1usize..200_000).prop_map(|n| "x".repeat(n)),
    ]
}

fn any_u32() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0u32),
        1u32..=3,
        9_999u32..=10_001,
        Just(u32::MAX),
        any::<u32>()
    ]
}

fn any_i64() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(0i64),
        Just(-1i64),
        1i64..=1_000,
        999_999_999_999i64..=1_000_000_000_001,
        Just(i64::MAX),
        Just(i64::MIN),
        any::<i64>()
    ]
}

fn any_version() -> impl Strategy<Value = Option<u64>> {
    prop_oneof![
        Just(None),
        Just(Some(0)),
        Just(Some(u64::MAX)),
        any::<Option<u64>>()
    ]
}

fn any_item() -> impl Strategy<Value = pb::LineItem> {
    (any_string(), any_u32(), any_i64()).prop_map(|(sku, quantity, unit_price_cents)| {
        pb::LineItem {
            sku,
            quantity,
            unit_price_cents,
        }
    })
}

fn items() -> impl Strategy<Value = Vec<pb::LineItem>> {
    prop_oneof![
        4 => prop::collection::vec(any_item(), 0..5),
        // Valid items with few skus, so duplicates are common.
        2 => prop::collection::vec(
            ("[ab]", 1u32..=10_000, 0i64..=1000).prop_map(|(sku, quantity, unit_price_cents)| {
                pb::LineItem { sku, quantity, unit_price_cents }
            }),
            0..4,
        ),
        // Around the 100-line limit, distinct valid skus.
        1 => (98usize..=102).prop_map(|n| {
            (0..n)
                .map(|i| pb::LineItem { sku: format!("s{i}"), quantity: 1, unit_price_cents: 1 })
                .collect()
        }),
    ]
}

fn currency() -> impl Strategy<Value = String> {
    (0..CURRENCIES.len()).prop_map(|i| CURRENCIES[i].0.to_owned())
}

/// Asserts `error` names a field this request has.
fn names_a_field(error: &ValidationError, allowed: &[&str]) {
    let field = error.field.as_str();
    let base = match field.split_once('[') {
        Some((head, rest)) => {
            let (index, tail) = rest.split_once(']').expect("a closing bracket");
            assert!(index.parse::<usize>().is_ok(), "bad index in {field}");
            format!("{head}[]{tail}")
        }
        None => field.to_owned(),
    };
    assert!(
        allowed.contains(&base.as_str()),
        "{field:?} is not a field of the request (allowed {allowed:?})"
    );
    assert!(!error.message.is_empty());
    assert!(error.to_string().starts_with(field));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn create_order_is_accepted_exactly_when_valid(
        order_id in any_string(),
        customer_id in any_string(),
        items in items(),
        currency in currency(),
        command_id in any_string(),
    ) {
        let request = pb::CreateOrderRequest { order_id, customer_id, items, currency, command_id };
        let result = Submission::try_from(&request);
        prop_assert_eq!(result.is_ok(), valid_create(&request), "{:?}", result);
        match result {
            Ok(s) => {
                prop_assert_eq!(
                    s.request.order_id.map(|o| o.to_string()).unwrap_or_default(),
                    request.order_id.clone()
                );
                let Command::CreateOrder { customer_id, items, currency } = s.request.command else {
                    panic!("CreateOrder became another command");
                };
                prop_assert_eq!(customer_id.as_str(), request.customer_id.as_str());
                prop_assert_eq!(items.len(), request.items.len());
                for (line, item) in items.iter().zip(&request.items) {
                    prop_assert_eq!(line.sku.as_str(), item.sku.as_str());
                    prop_assert_eq!(line.quantity, item.quantity);
                    prop_assert_eq!(line.unit_price_cents, item.unit_price_cents);
                }
                let want = if request.currency.is_empty() { "USD" } else { request.currency.as_str() };
                prop_assert_eq!(currency.as_str(), want);
                prop_assert_eq!(
                    s.command_id.map(|c| c.to_string()).unwrap_or_default(),
                    request.command_id
                );
            }
            Err(e) => names_a_field(&e, &[
                "order_id", "customer_id", "items", "items[].sku", "items[].quantity",
                "items[].unit_price_cents", "currency", "command_id",
            ]),
        }
    }

    #[test]
    fn add_item_is_accepted_exactly_when_valid(
        order_id in any_string(),
        item in proptest::option::of(any_item()),
        expected_version in any_version(),
        command_id in any_string(),
    ) {
        let request = pb::AddItemRequest { order_id, item, expected_version, command_id };
        let valid = valid_id(&request.order_id)
            && request.item.as_ref().is_some_and(valid_item)
            && valid_key(&request.command_id);
        let result = Submission::try_from(&request);
        prop_assert_eq!(result.is_ok(), valid, "{:?}", result);
        match result {
            Ok(s) => prop_assert_eq!(s.request.expected_version, request.expected_version),
            Err(e) => names_a_field(&e, &[
                "order_id", "item", "item.sku", "item.quantity", "item.unit_price_cents",
                "command_id",
            ]),
        }
    }

    #[test]
    fn remove_item_is_accepted_exactly_when_valid(
        order_id in any_string(),
        sku in any_string(),
        quantity in any_u32(),
        expected_version in any_version(),
        command_id in any_string(),
    ) {
        let request = pb::RemoveItemRequest { order_id, sku, quantity, expected_version, command_id };
        let valid = valid_id(&request.order_id) && valid_id(&request.sku) && valid_key(&request.command_id);
        let result = Submission::try_from(&request);
        prop_assert_eq!(result.is_ok(), valid, "{:?}", result);
        match result {
            Ok(s) => prop_assert_eq!(
                s.request.command,
                Command::RemoveItem {
                    sku: shared::domain::Sku::parse("sku", &request.sku).unwrap(),
                    quantity: request.quantity,
                }
            ),
            Err(e) => names_a_field(&e, &["order_id", "sku", "command_id"]),
        }
    }

    #[test]
    fn place_ship_and_cancel_are_accepted_exactly_when_valid(
        order_id in any_string(),
        carrier in any_string(),
        tracking_number in any_string(),
        reason in any_string(),
        expected_version in any_version(),
        command_id in any_string(),
    ) {
        let ids_ok = valid_id(&order_id) && valid_key(&command_id);
        let place = pb::PlaceOrderRequest {
            order_id: order_id.clone(), expected_version, command_id: command_id.clone(),
        };
        let result = Submission::try_from(&place);
        prop_assert_eq!(result.is_ok(), ids_ok, "{:?}", result);
        if let Err(e) = result {
            names_a_field(&e, &["order_id", "command_id"]);
        }
        let ship = pb::ShipOrderRequest {
            order_id: order_id.clone(), carrier, tracking_number, expected_version,
            command_id: command_id.clone(),
        };
        let result = Submission::try_from(&ship);
        let valid = ids_ok && valid_text(&ship.carrier) && valid_text(&ship.tracking_number);
        prop_assert_eq!(result.is_ok(), valid, "{:?}", result);
        if let Err(e) = result {
            names_a_field(&e, &["order_id", "carrier", "tracking_number", "command_id"]);
        }
        let cancel = pb::CancelOrderRequest { order_id, reason, expected_version, command_id };
        let result = Submission::try_from(&cancel);
        prop_assert_eq!(result.is_ok(), ids_ok && valid_text(&cancel.reason), "{:?}", result);
        if let Err(e) = result {
            names_a_field(&e, &["order_id", "reason", "command_id"]);
        }
    }

    /// Bytes off the wire: decoding either fails with a message naming a field
    /// (or `request`), or gives a request that validates without panicking.
    #[test]
    fn random_bytes_decode_and_validate_without_panicking(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..256),
            // Valid messages with a few bytes flipped.
            (any_string(), any_string(), items(), any::<Vec<(usize, u8)>>()).prop_map(
                |(order_id, customer_id, items, flips)| {
                    let mut bytes = pb::CreateOrderRequest {
                        order_id, customer_id, items, ..Default::default()
                    }.encode_to_vec();
                    for (at, value) in flips {
                        if !bytes.is_empty() {
                            let n = bytes.len();
                            bytes[at % n] = value;
                        }
                    }
                    bytes
                }
            ),
        ]
    ) {
        macro_rules! check {
            ($ty:ty) => {
                match <$ty>::decode(bytes.as_slice()) {
                    Ok(request) => { let _ = Submission::try_from(&request); }
                    Err(e) => {
                        let text = shared::grpc_codec::describe_decode_error(&e);
                        prop_assert!(text.contains(": does not decode as protobuf: "), "{}", text);
                    }
                }
            };
        }
        check!(pb::CreateOrderRequest);
        check!(pb::AddItemRequest);
        check!(pb::RemoveItemRequest);
        check!(pb::PlaceOrderRequest);
        check!(pb::ShipOrderRequest);
        check!(pb::CancelOrderRequest);
    }
}

//! Property tests of the `Order` aggregate: random command sequences against a
//! simple reference model of the SPEC's business rules. Every decision (the
//! events, or the refusal) must match the model, `handle` never changes the
//! order, and no sequence breaks an invariant (at most 100 lines, at most
//! 10,000 units a line, total at most 10^12 cents, totals carried by events
//! equal to the lines).
//!
//! `PROPTEST_CASES=100000 cargo test -p orders-domain --test aggregate_props`

use orders_domain::{
    Command, Currency, CustomerId, DomainError, Event, Line, Order, OrderStatus, Rule, Sku, Text,
    Timestamp, MAX_LINES, MAX_LINE_QUANTITY, MAX_TOTAL_CENTS,
};
use proptest::prelude::*;

/// The reference model: the SPEC's rules, written as plainly as possible.
#[derive(Debug, Clone, Default, PartialEq)]
struct Reference {
    exists: bool,
    version: u64,
    status: Option<OrderStatus>,
    /// (sku, quantity, unit price), in the order each sku was first added.
    lines: Vec<(String, u64, i64)>,
}

impl Reference {
    fn total(lines: &[(String, u64, i64)]) -> i128 {
        lines
            .iter()
            .map(|l| i128::from(l.1) * i128::from(l.2))
            .sum()
    }

    /// What the command must do: the new state, or the refusal.
    fn decide(&self, command: &Command, expected: Option<u64>) -> Result<Reference, DomainError> {
        use OrderStatus::*;
        let create = matches!(command, Command::CreateOrder { .. });
        if self.exists && create {
            return Err(DomainError::AlreadyExists);
        }
        if !self.exists && !create {
            return Err(DomainError::NotFound);
        }
        if let Some(expected) = expected {
            if expected != self.version {
                return Err(DomainError::VersionConflict {
                    expected,
                    actual: self.version,
                });
            }
        }
        let rule = |r| Err(DomainError::Rule(r));
        let mut next = self.clone();
        next.version += 1;
        match command {
            Command::CreateOrder { items, .. } => {
                if items.len() > MAX_LINES {
                    return rule(Rule::TooManyLines);
                }
                if items.iter().any(|i| i.quantity > MAX_LINE_QUANTITY) {
                    return rule(Rule::LineQuantityLimit);
                }
                next.lines = items
                    .iter()
                    .map(|i| (i.sku.to_string(), u64::from(i.quantity), i.unit_price_cents))
                    .collect();
                next.exists = true;
                next.status = Some(Draft);
            }
            Command::AddItem { item } => {
                if self.status != Some(Draft) {
                    return rule(Rule::ItemsOnlyWhileDraft);
                }
                let sku = item.sku.to_string();
                match next.lines.iter_mut().find(|l| l.0 == sku) {
                    Some(l) if l.2 != item.unit_price_cents => return rule(Rule::PriceMismatch),
                    Some(l) => l.1 += u64::from(item.quantity),
                    None if self.lines.len() >= MAX_LINES => return rule(Rule::TooManyLines),
                    None => next.lines.push((
                        sku.clone(),
                        u64::from(item.quantity),
                        item.unit_price_cents,
                    )),
                }
                let line = next.lines.iter().find(|l| l.0 == sku).unwrap();
                if line.1 > u64::from(MAX_LINE_QUANTITY) {
                    return rule(Rule::LineQuantityLimit);
                }
            }
            Command::RemoveItem { sku, quantity } => {
                if self.status != Some(Draft) {
                    return rule(Rule::ItemsOnlyWhileDraft);
                }
                let Some(index) = next.lines.iter().position(|l| l.0 == sku.as_str()) else {
                    return rule(Rule::SkuNotInOrder);
                };
                let held = next.lines[index].1;
                let removed = if *quantity == 0 {
                    held
                } else {
                    u64::from(*quantity)
                };
                if removed > held {
                    return rule(Rule::RemoveMoreThanLine);
                }
                next.lines[index].1 -= removed;
                if next.lines[index].1 == 0 {
                    next.lines.remove(index);
                }
            }
            Command::PlaceOrder => {
                if self.status != Some(Draft) {
                    return rule(Rule::PlaceOnlyDraft);
                }
                if self.lines.is_empty() {
                    return rule(Rule::PlaceEmptyOrder);
                }
                next.status = Some(Placed);
            }
            Command::ShipOrder { .. } => {
                if self.status != Some(Placed) {
                    return rule(Rule::ShipOnlyPlaced);
                }
                next.status = Some(Shipped);
            }
            Command::CancelOrder { .. } => {
                if !matches!(self.status, Some(Draft | Placed)) {
                    return rule(Rule::CancelOnlyDraftOrPlaced);
                }
                next.status = Some(Cancelled);
            }
        }
        if Self::total(&next.lines) > i128::from(MAX_TOTAL_CENTS) {
            return rule(Rule::TotalLimit);
        }
        Ok(next)
    }
}

fn state_of(order: &Order) -> Reference {
    match &order.state {
        None => Reference {
            version: order.version,
            ..Reference::default()
        },
        Some(s) => Reference {
            exists: true,
            version: order.version,
            status: Some(s.status),
            lines: s
                .lines
                .iter()
                .map(|l| (l.sku.to_string(), u64::from(l.quantity), l.unit_price_cents))
                .collect(),
        },
    }
}

// ---- strategies ----

fn sku(pool: usize) -> impl Strategy<Value = Sku> {
    (0..pool).prop_map(|i| Sku::parse("sku", &format!("s{i}")).unwrap())
}

fn quantity() -> impl Strategy<Value = u32> {
    prop_oneof![
        8 => 1u32..=5,
        1 => 9_990u32..=10_001,
        1 => Just(u32::MAX),
    ]
}

fn price() -> impl Strategy<Value = i64> {
    prop_oneof![
        8 => 0i64..=3,
        1 => 99_999_999i64..=100_000_001,
        1 => Just(MAX_TOTAL_CENTS),
    ]
}

fn line(pool: usize) -> impl Strategy<Value = Line> {
    (sku(pool), quantity(), price()).prop_map(|(sku, quantity, unit_price_cents)| Line {
        sku,
        quantity,
        unit_price_cents,
    })
}

fn command(pool: usize) -> impl Strategy<Value = Command> {
    let text = || "[a-z ]{0,8}".prop_map(|s| Text::parse("text", &s).unwrap());
    prop_oneof![
        1 => prop::collection::vec(line(pool), 0..4).prop_map(|mut items| {
            // The conversion layer gives each sku once.
            let mut seen = std::collections::HashSet::new();
            items.retain(|l| seen.insert(l.sku.clone()));
            Command::CreateOrder {
                customer_id: CustomerId::parse("customer_id", "c").unwrap(),
                currency: Currency::parse("currency", "EUR").unwrap(),
                items,
            }
        }),
        10 => line(pool).prop_map(|item| Command::AddItem { item }),
        3 => (sku(pool), prop_oneof![Just(0u32), 1u32..=6, Just(u32::MAX)])
            .prop_map(|(sku, quantity)| Command::RemoveItem { sku, quantity }),
        2 => Just(Command::PlaceOrder),
        1 => (text(), text()).prop_map(|(carrier, tracking_number)| Command::ShipOrder {
            carrier,
            tracking_number,
        }),
        1 => text().prop_map(|reason| Command::CancelOrder { reason }),
    ]
}

/// A command with its `expected_version`: none, right, or off by a little.
fn step(pool: usize) -> impl Strategy<Value = (Command, Option<i8>)> {
    (
        command(pool),
        prop_oneof![3 => Just(None), 2 => Just(Some(0i8)), 1 => (-2i8..=2).prop_map(Some)],
    )
}

fn check_invariants(order: &Order, events: &[Event]) {
    let Some(state) = &order.state else { return };
    assert!(state.lines.len() <= MAX_LINES, "too many lines");
    let mut skus = std::collections::HashSet::new();
    for l in &state.lines {
        assert!(l.quantity >= 1 && l.quantity <= MAX_LINE_QUANTITY, "{l:?}");
        assert!(skus.insert(l.sku.clone()), "sku {} twice", l.sku);
    }
    let total: i128 = state.lines.iter().map(Line::total_cents).sum();
    assert!(total <= i128::from(MAX_TOTAL_CENTS));
    let count: u64 = state.lines.iter().map(|l| u64::from(l.quantity)).sum();
    for event in events {
        let carried = match event {
            Event::OrderCreated {
                total_cents,
                item_count,
                ..
            }
            | Event::ItemAdded {
                total_cents,
                item_count,
                ..
            }
            | Event::ItemRemoved {
                total_cents,
                item_count,
                ..
            }
            | Event::OrderPlaced {
                total_cents,
                item_count,
                ..
            } => Some((*total_cents, Some(*item_count))),
            Event::OrderShipped { total_cents, .. } | Event::OrderCancelled { total_cents, .. } => {
                Some((*total_cents, None))
            }
        };
        if let Some((t, c)) = carried {
            assert_eq!(
                i128::from(t),
                total,
                "{} carries the wrong total",
                event.name()
            );
            if let Some(c) = c {
                assert_eq!(c, count, "{} carries the wrong item count", event.name());
            }
        }
    }
}

fn run(steps: Vec<(Command, Option<i8>)>) {
    let now = Timestamp::from_micros(1_764_000_000_000_000);
    let mut order = Order::default();
    let mut reference = Reference::default();
    for (i, (command, offset)) in steps.into_iter().enumerate() {
        let expected = offset.map(|o| order.version.saturating_add_signed(i64::from(o)));
        let before = order.clone();
        let decided = order.handle(&command, expected, now);
        assert_eq!(order, before, "handle changed the order");
        let wanted = reference.decide(&command, expected);
        match (decided, wanted) {
            (Ok(events), Ok(next)) => {
                assert_eq!(events.len(), 1, "step {i}: one event per command");
                for event in &events {
                    order.apply(event);
                }
                check_invariants(&order, &events);
                assert_eq!(state_of(&order), next, "step {i}: {command:?}");
                reference = next;
            }
            (Err(got), Err(want)) => assert_eq!(got, want, "step {i}: {command:?}"),
            (got, want) => panic!(
                "step {i}: {command:?} expecting {expected:?} on {reference:?}: aggregate {got:?}, reference {want:?}"
            ),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Few skus: lines grow, prices clash, orders go through their whole life.
    #[test]
    fn the_aggregate_decides_like_the_reference_model(
        steps in prop::collection::vec(step(4), 1..60)
    ) {
        run(steps);
    }

    /// Many skus and long runs of adds to one draft: the 100-line limit is reached.
    #[test]
    fn line_limits_hold_over_long_sequences(
        adds in prop::collection::vec(line(120), 200..300),
        rest in prop::collection::vec(step(120), 0..40),
    ) {
        let create = Command::CreateOrder {
            customer_id: CustomerId::parse("customer_id", "c").unwrap(),
            currency: Currency::parse("currency", "").unwrap(),
            items: Vec::new(),
        };
        let mut steps = vec![(create, None)];
        steps.extend(adds.into_iter().map(|item| (Command::AddItem { item }, None)));
        steps.extend(rest);
        run(steps);
    }
}

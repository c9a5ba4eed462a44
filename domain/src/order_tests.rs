//! Given/when/then tests of the `Order` aggregate: given past events, when a
//! command, then these events or that error. One test per business rule of the
//! SPEC, plus the happy paths. No runtime, no disk, no network.

use super::*;
use crate::{Command, CustomerId, DomainError, Event, Rule, Sku, Text, Timestamp, MAX_TOTAL_CENTS};

// ---- the given / when / then helper ----

/// The moment every `when` happens.
const NOW: Timestamp = Timestamp(1_764_000_000_000_000);
/// When the order of `placed()` was placed.
const PLACED_AT: Timestamp = Timestamp(1_763_990_000_000_000);

/// An order rebuilt from past events, as the command side loads it.
struct Given {
    order: Order,
}

fn given(events: impl IntoIterator<Item = Event>) -> Given {
    let mut order = Order::default();
    for event in events {
        order.apply(&event);
    }
    Given { order }
}

/// An order that does not exist yet.
fn given_no_order() -> Given {
    given([])
}

/// What `handle` decided, and the order it decided on.
struct Then {
    order: Order,
    outcome: Result<Vec<Event>, DomainError>,
}

impl Given {
    fn when(self, command: Command) -> Then {
        self.when_expecting(None, command)
    }

    fn when_expecting(self, expected_version: Option<u64>, command: Command) -> Then {
        let before = self.order.clone();
        let outcome = self.order.handle(&command, expected_version, NOW);
        assert_eq!(self.order, before, "handle must not change the order");
        Then {
            order: self.order,
            outcome,
        }
    }
}

impl Then {
    /// Asserts the emitted events and returns the order with them applied.
    #[track_caller]
    fn then(self, expected: Vec<Event>) -> Order {
        let events = match self.outcome {
            Ok(events) => events,
            Err(e) => panic!("expected events {expected:?}, got error {e:?} ({e})"),
        };
        assert_eq!(events, expected);
        let mut order = self.order;
        let version = order.version;
        for event in &events {
            order.apply(event);
        }
        assert_eq!(order.version, version + events.len() as u64);
        order
    }

    #[track_caller]
    fn then_error(self, expected: DomainError) {
        match self.outcome {
            Ok(events) => panic!("expected error {expected:?}, got events {events:?}"),
            Err(e) => assert_eq!(e, expected),
        }
    }

    #[track_caller]
    fn then_rule(self, rule: Rule) {
        self.then_error(DomainError::Rule(rule));
    }
}

// ---- builders ----

fn sku(s: &str) -> Sku {
    Sku::parse("sku", s).unwrap()
}

fn customer() -> CustomerId {
    CustomerId::parse("customer_id", "cust-1").unwrap()
}

fn usd() -> Currency {
    Currency::parse("currency", "USD").unwrap()
}

fn text(s: &str) -> Text {
    Text::parse("text", s).unwrap()
}

fn line(s: &str, quantity: u32, unit_price_cents: i64) -> Line {
    Line {
        sku: sku(s),
        quantity,
        unit_price_cents,
    }
}

fn total(lines: &[Line]) -> i64 {
    lines.iter().map(|l| l.total_cents() as i64).sum()
}

fn count(lines: &[Line]) -> u64 {
    lines.iter().map(|l| u64::from(l.quantity)).sum()
}

fn create(items: Vec<Line>) -> Command {
    Command::CreateOrder {
        customer_id: customer(),
        currency: usd(),
        items,
    }
}

fn add(s: &str, quantity: u32, unit_price_cents: i64) -> Command {
    Command::AddItem {
        item: line(s, quantity, unit_price_cents),
    }
}

fn remove(s: &str, quantity: u32) -> Command {
    Command::RemoveItem {
        sku: sku(s),
        quantity,
    }
}

fn ship() -> Command {
    Command::ShipOrder {
        carrier: text("DHL"),
        tracking_number: text("TRACK-1"),
    }
}

fn cancel() -> Command {
    Command::CancelOrder {
        reason: text("changed my mind"),
    }
}

fn created(items: Vec<Line>) -> Event {
    Event::OrderCreated {
        customer_id: customer(),
        currency: usd(),
        total_cents: total(&items),
        item_count: count(&items),
        items,
    }
}

fn added(
    s: &str,
    quantity: u32,
    unit_price_cents: i64,
    line_quantity: u32,
    after: &[Line],
) -> Event {
    Event::ItemAdded {
        customer_id: customer(),
        item: line(s, quantity, unit_price_cents),
        line_quantity,
        total_cents: total(after),
        item_count: count(after),
    }
}

fn placed_event(lines: Vec<Line>, placed_at: Timestamp) -> Event {
    Event::OrderPlaced {
        customer_id: customer(),
        currency: usd(),
        total_cents: total(&lines),
        item_count: count(&lines),
        lines,
        placed_at,
    }
}

fn shipped_event(lines: &[Line]) -> Event {
    Event::OrderShipped {
        customer_id: customer(),
        carrier: text("DHL"),
        tracking_number: text("TRACK-1"),
        total_cents: total(lines),
    }
}

fn cancelled_event(
    previous_status: OrderStatus,
    lines: Vec<Line>,
    placed_at: Option<Timestamp>,
) -> Event {
    Event::OrderCancelled {
        customer_id: customer(),
        reason: text("changed my mind"),
        previous_status,
        total_cents: total(&lines),
        lines,
        placed_at,
    }
}

fn basket() -> Vec<Line> {
    vec![line("apple", 2, 150), line("pear", 1, 99)]
}

fn draft() -> Vec<Event> {
    vec![created(basket())]
}

fn placed() -> Vec<Event> {
    vec![created(basket()), placed_event(basket(), PLACED_AT)]
}

fn shipped() -> Vec<Event> {
    let mut events = placed();
    events.push(shipped_event(&basket()));
    events
}

fn cancelled() -> Vec<Event> {
    vec![
        created(basket()),
        cancelled_event(OrderStatus::Draft, basket(), None),
    ]
}

/// Every state in which the order exists but is no longer Draft.
fn not_draft() -> [(&'static str, Vec<Event>); 3] {
    [
        ("placed", placed()),
        ("shipped", shipped()),
        ("cancelled", cancelled()),
    ]
}

fn state(order: &Order) -> &OrderState {
    order.state.as_ref().expect("the order exists")
}

/// `count` distinct lines `sku-0..`, one unit each at 1 cent.
fn many_lines(count: usize) -> Vec<Line> {
    (0..count)
        .map(|i| line(&format!("sku-{i}"), 1, 1))
        .collect()
}

// ---- happy paths ----

#[test]
fn a_new_order_is_created_as_draft_with_its_items_and_totals() {
    let order = given_no_order()
        .when(create(basket()))
        .then(vec![Event::OrderCreated {
            customer_id: customer(),
            currency: usd(),
            items: basket(),
            total_cents: 2 * 150 + 99,
            item_count: 3,
        }]);
    assert_eq!(order.version, 1);
    assert!(order.exists());
    assert_eq!(state(&order).status, OrderStatus::Draft);
    assert_eq!(state(&order).lines, basket());
    assert_eq!(state(&order).placed_at, None);
}

#[test]
fn an_order_can_be_created_without_items() {
    let order = given_no_order()
        .when(create(vec![]))
        .then(vec![created(vec![])]);
    assert_eq!(order.version, 1);
    assert!(state(&order).lines.is_empty());
}

#[test]
fn the_default_order_does_not_exist() {
    let order = Order::default();
    assert!(!order.exists());
    assert_eq!(order.version, 0);
}

#[test]
fn adding_a_new_sku_adds_a_line() {
    let after = vec![
        line("apple", 2, 150),
        line("pear", 1, 99),
        line("plum", 3, 40),
    ];
    let order = given(draft())
        .when(add("plum", 3, 40))
        .then(vec![added("plum", 3, 40, 3, &after)]);
    assert_eq!(order.version, 2);
    assert_eq!(state(&order).lines, after);
}

#[test]
fn adding_a_sku_at_the_same_price_raises_the_quantity_of_its_line() {
    let after = vec![line("apple", 7, 150), line("pear", 1, 99)];
    let order = given(draft())
        .when(add("apple", 5, 150))
        .then(vec![added("apple", 5, 150, 7, &after)]);
    assert_eq!(state(&order).lines, after);
}

#[test]
fn removing_part_of_a_line_lowers_its_quantity() {
    let order = given(draft())
        .when(remove("apple", 1))
        .then(vec![Event::ItemRemoved {
            customer_id: customer(),
            sku: sku("apple"),
            quantity: 1,
            unit_price_cents: 150,
            line_quantity: 1,
            total_cents: 150 + 99,
            item_count: 2,
        }]);
    assert_eq!(
        state(&order).lines,
        vec![line("apple", 1, 150), line("pear", 1, 99)]
    );
}

#[test]
fn removing_quantity_zero_removes_the_whole_line() {
    let order = given(draft())
        .when(remove("apple", 0))
        .then(vec![Event::ItemRemoved {
            customer_id: customer(),
            sku: sku("apple"),
            quantity: 2,
            unit_price_cents: 150,
            line_quantity: 0,
            total_cents: 99,
            item_count: 1,
        }]);
    assert_eq!(state(&order).lines, vec![line("pear", 1, 99)]);
}

#[test]
fn removing_exactly_what_a_line_holds_removes_the_line() {
    let order = given(draft())
        .when(remove("pear", 1))
        .then(vec![Event::ItemRemoved {
            customer_id: customer(),
            sku: sku("pear"),
            quantity: 1,
            unit_price_cents: 99,
            line_quantity: 0,
            total_cents: 300,
            item_count: 2,
        }]);
    assert_eq!(state(&order).lines, vec![line("apple", 2, 150)]);
}

#[test]
fn a_draft_with_items_is_placed_with_its_lines_and_the_time() {
    let order = given(draft())
        .when(Command::PlaceOrder)
        .then(vec![placed_event(basket(), NOW)]);
    assert_eq!(state(&order).status, OrderStatus::Placed);
    assert_eq!(state(&order).placed_at, Some(NOW));
}

#[test]
fn a_placed_order_is_shipped() {
    let order = given(placed())
        .when(ship())
        .then(vec![shipped_event(&basket())]);
    assert_eq!(state(&order).status, OrderStatus::Shipped);
    assert_eq!(order.version, 3);
}

#[test]
fn a_draft_is_cancelled_without_a_placement_time() {
    let order = given(draft()).when(cancel()).then(vec![cancelled_event(
        OrderStatus::Draft,
        basket(),
        None,
    )]);
    assert_eq!(state(&order).status, OrderStatus::Cancelled);
}

#[test]
fn a_placed_order_is_cancelled_carrying_when_it_was_placed() {
    let order = given(placed()).when(cancel()).then(vec![cancelled_event(
        OrderStatus::Placed,
        basket(),
        Some(PLACED_AT),
    )]);
    assert_eq!(state(&order).status, OrderStatus::Cancelled);
}

#[test]
fn every_event_raises_the_version_by_one() {
    let mut order = Order::default();
    for (i, event) in shipped().iter().enumerate() {
        order.apply(event);
        assert_eq!(order.version, i as u64 + 1);
    }
}

// ---- existence ----

#[test]
fn creating_an_order_that_exists_is_rejected() {
    given(draft())
        .when(create(vec![]))
        .then_error(DomainError::AlreadyExists);
    given(cancelled())
        .when(create(basket()))
        .then_error(DomainError::AlreadyExists);
}

#[test]
fn every_command_but_create_needs_an_existing_order() {
    for command in [
        add("apple", 1, 1),
        remove("apple", 0),
        Command::PlaceOrder,
        ship(),
        cancel(),
    ] {
        given_no_order()
            .when(command.clone())
            .then_error(DomainError::NotFound);
        // A missing order is NOT_FOUND, not a version conflict.
        given_no_order()
            .when_expecting(Some(3), command)
            .then_error(DomainError::NotFound);
    }
}

// ---- expected_version ----

#[test]
fn a_command_with_the_current_version_expected_is_accepted() {
    given(placed())
        .when_expecting(Some(2), ship())
        .then(vec![shipped_event(&basket())]);
}

#[test]
fn a_command_expecting_another_version_is_a_conflict_naming_the_current_one() {
    for expected in [0, 1, 3, u64::MAX] {
        given(placed())
            .when_expecting(Some(expected), ship())
            .then_error(DomainError::VersionConflict {
                expected,
                actual: 2,
            });
    }
    let err = given(draft())
        .order
        .handle(&add("apple", 1, 150), Some(7), NOW)
        .unwrap_err();
    assert!(err.to_string().contains("version 1"), "{err}");
}

// ---- Rule: items can be changed only while Draft ----

#[test]
fn items_cannot_be_added_unless_the_order_is_draft() {
    for (name, events) in not_draft() {
        let then = given(events).when(add("plum", 1, 40));
        assert!(then.outcome.is_err(), "add to a {name} order");
        then.then_rule(Rule::ItemsOnlyWhileDraft);
    }
}

#[test]
fn items_cannot_be_removed_unless_the_order_is_draft() {
    for (name, events) in not_draft() {
        let then = given(events).when(remove("apple", 1));
        assert!(then.outcome.is_err(), "remove from a {name} order");
        then.then_rule(Rule::ItemsOnlyWhileDraft);
    }
}

// ---- Rule: only a Draft can be placed; an empty order cannot be placed ----

#[test]
fn only_a_draft_can_be_placed() {
    for (name, events) in not_draft() {
        let then = given(events).when(Command::PlaceOrder);
        assert!(then.outcome.is_err(), "place a {name} order");
        then.then_rule(Rule::PlaceOnlyDraft);
    }
}

#[test]
fn an_order_without_items_cannot_be_placed() {
    given([created(vec![])])
        .when(Command::PlaceOrder)
        .then_rule(Rule::PlaceEmptyOrder);
}

#[test]
fn an_order_whose_items_were_all_removed_cannot_be_placed() {
    let order = given(draft())
        .when(remove("apple", 0))
        .then(vec![Event::ItemRemoved {
            customer_id: customer(),
            sku: sku("apple"),
            quantity: 2,
            unit_price_cents: 150,
            line_quantity: 0,
            total_cents: 99,
            item_count: 1,
        }]);
    let order = Given { order }
        .when(remove("pear", 0))
        .then(vec![Event::ItemRemoved {
            customer_id: customer(),
            sku: sku("pear"),
            quantity: 1,
            unit_price_cents: 99,
            line_quantity: 0,
            total_cents: 0,
            item_count: 0,
        }]);
    Given { order }
        .when(Command::PlaceOrder)
        .then_rule(Rule::PlaceEmptyOrder);
}

// ---- Rule: only a Placed order can be shipped ----

#[test]
fn only_a_placed_order_can_be_shipped() {
    for (name, events) in [
        ("draft", draft()),
        ("shipped", shipped()),
        ("cancelled", cancelled()),
    ] {
        let then = given(events).when(ship());
        assert!(then.outcome.is_err(), "ship a {name} order");
        then.then_rule(Rule::ShipOnlyPlaced);
    }
}

// ---- Rule: a Shipped or Cancelled order cannot be cancelled ----

#[test]
fn a_shipped_order_cannot_be_cancelled() {
    given(shipped())
        .when(cancel())
        .then_rule(Rule::CancelOnlyDraftOrPlaced);
}

#[test]
fn a_cancelled_order_cannot_be_cancelled_again() {
    given(cancelled())
        .when(cancel())
        .then_rule(Rule::CancelOnlyDraftOrPlaced);
    let placed_then_cancelled = {
        let mut events = placed();
        events.push(cancelled_event(
            OrderStatus::Placed,
            basket(),
            Some(PLACED_AT),
        ));
        events
    };
    given(placed_then_cancelled)
        .when(cancel())
        .then_rule(Rule::CancelOnlyDraftOrPlaced);
}

#[test]
fn nothing_changes_a_shipped_or_cancelled_order() {
    for (name, events) in [("shipped", shipped()), ("cancelled", cancelled())] {
        for command in [
            add("plum", 1, 40),
            remove("apple", 1),
            Command::PlaceOrder,
            ship(),
            cancel(),
            create(basket()),
        ] {
            let outcome = given(events.clone()).when(command.clone()).outcome;
            assert!(
                outcome.is_err(),
                "{} changed a {name} order: {outcome:?}",
                command.name()
            );
        }
    }
}

// ---- Rule: at most 100 distinct lines ----

#[test]
fn an_order_may_be_created_with_100_lines_but_not_101() {
    let hundred = many_lines(MAX_LINES);
    given_no_order()
        .when(create(hundred.clone()))
        .then(vec![created(hundred)]);
    given_no_order()
        .when(create(many_lines(MAX_LINES + 1)))
        .then_rule(Rule::TooManyLines);
}

#[test]
fn a_101st_line_cannot_be_added() {
    let mut after = many_lines(MAX_LINES);
    after.pop();
    let ninety_nine = after.clone();
    after.push(line("last", 1, 1));
    let order = given([created(ninety_nine)])
        .when(add("last", 1, 1))
        .then(vec![added("last", 1, 1, 1, &after)]);
    assert_eq!(state(&order).lines.len(), MAX_LINES);
    Given {
        order: order.clone(),
    }
    .when(add("one-too-many", 1, 1))
    .then_rule(Rule::TooManyLines);
    // More of an existing line is not a new line.
    let mut more = after.clone();
    more[0].quantity = 3;
    Given { order }
        .when(add("sku-0", 2, 1))
        .then(vec![added("sku-0", 2, 1, 3, &more)]);
}

// ---- Rule: at most 10,000 units per line ----

#[test]
fn a_line_may_hold_10000_units_but_not_more_when_created() {
    let full = vec![line("apple", MAX_LINE_QUANTITY, 1)];
    given_no_order()
        .when(create(full.clone()))
        .then(vec![created(full)]);
    given_no_order()
        .when(create(vec![line("apple", MAX_LINE_QUANTITY + 1, 1)]))
        .then_rule(Rule::LineQuantityLimit);
}

#[test]
fn adding_units_may_fill_a_line_to_10000_but_not_beyond() {
    let start = vec![line("apple", 9_000, 1)];
    let full = vec![line("apple", MAX_LINE_QUANTITY, 1)];
    let order = given([created(start.clone())])
        .when(add("apple", 1_000, 1))
        .then(vec![added("apple", 1_000, 1, MAX_LINE_QUANTITY, &full)]);
    Given { order }
        .when(add("apple", 1, 1))
        .then_rule(Rule::LineQuantityLimit);
    given([created(start)])
        .when(add("apple", 1_001, 1))
        .then_rule(Rule::LineQuantityLimit);
}

#[test]
fn a_new_line_over_10000_units_is_rejected() {
    given(draft())
        .when(add("plum", MAX_LINE_QUANTITY + 1, 1))
        .then_rule(Rule::LineQuantityLimit);
}

#[test]
fn adding_units_never_overflows_the_line_quantity() {
    given([created(vec![line("apple", MAX_LINE_QUANTITY, 1)])])
        .when(add("apple", u32::MAX, 1))
        .then_rule(Rule::LineQuantityLimit);
}

// ---- Rule: order total at most 10^12 cents ----

#[test]
fn an_order_total_may_reach_10_to_the_12_cents_but_not_exceed_it() {
    // 10,000 units at 10^8 cents is exactly 10^12.
    let at_limit = vec![line("gold", MAX_LINE_QUANTITY, 100_000_000)];
    assert_eq!(total(&at_limit), MAX_TOTAL_CENTS);
    let order = given_no_order()
        .when(create(at_limit.clone()))
        .then(vec![created(at_limit.clone())]);
    Given { order }
        .when(add("penny", 1, 1))
        .then_rule(Rule::TotalLimit);
    given_no_order()
        .when(create(vec![
            line("gold", MAX_LINE_QUANTITY, 100_000_000),
            line("penny", 1, 1),
        ]))
        .then_rule(Rule::TotalLimit);
}

#[test]
fn raising_a_line_past_the_total_limit_is_rejected() {
    let lines = vec![line("gold", 5_000, 200_000_000)];
    assert_eq!(total(&lines), MAX_TOTAL_CENTS);
    given([created(vec![line("gold", 4_000, 200_000_000)])])
        .when(add("gold", 1_001, 200_000_000))
        .then_rule(Rule::TotalLimit);
}

#[test]
fn huge_prices_are_refused_without_overflow() {
    // The aggregate must not overflow even if a caller skipped validation.
    given_no_order()
        .when(create(vec![
            line("a", MAX_LINE_QUANTITY, i64::MAX),
            line("b", MAX_LINE_QUANTITY, i64::MAX),
        ]))
        .then_rule(Rule::TotalLimit);
    given(draft())
        .when(add("big", MAX_LINE_QUANTITY, i64::MAX))
        .then_rule(Rule::TotalLimit);
}

// ---- Rule: the same sku cannot have two prices ----

#[test]
fn adding_a_sku_the_order_has_at_another_price_is_rejected() {
    given(draft())
        .when(add("apple", 1, 151))
        .then_rule(Rule::PriceMismatch);
}

// ---- Rule: removing more than a line holds, or an unknown sku ----

#[test]
fn removing_more_units_than_the_line_holds_is_rejected() {
    given(draft())
        .when(remove("apple", 3))
        .then_rule(Rule::RemoveMoreThanLine);
    given(draft())
        .when(remove("apple", u32::MAX))
        .then_rule(Rule::RemoveMoreThanLine);
}

#[test]
fn removing_a_sku_the_order_does_not_have_is_rejected() {
    given(draft())
        .when(remove("plum", 1))
        .then_rule(Rule::SkuNotInOrder);
    given(draft())
        .when(remove("plum", 0))
        .then_rule(Rule::SkuNotInOrder);
}

#[test]
fn a_removed_line_is_gone_for_later_removals() {
    let order = given(draft())
        .when(remove("pear", 0))
        .then(vec![Event::ItemRemoved {
            customer_id: customer(),
            sku: sku("pear"),
            quantity: 1,
            unit_price_cents: 99,
            line_quantity: 0,
            total_cents: 300,
            item_count: 2,
        }]);
    Given { order }
        .when(remove("pear", 0))
        .then_rule(Rule::SkuNotInOrder);
}

// ---- rules name themselves ----

#[test]
fn every_rule_has_a_message() {
    for rule in [
        Rule::ItemsOnlyWhileDraft,
        Rule::PlaceOnlyDraft,
        Rule::PlaceEmptyOrder,
        Rule::ShipOnlyPlaced,
        Rule::CancelOnlyDraftOrPlaced,
        Rule::TooManyLines,
        Rule::LineQuantityLimit,
        Rule::TotalLimit,
        Rule::SkuNotInOrder,
        Rule::RemoveMoreThanLine,
        Rule::PriceMismatch,
    ] {
        assert!(!DomainError::Rule(rule).to_string().is_empty(), "{rule:?}");
    }
}

//! command-service through the real binary, real sled in a temp dir, gRPC from
//! outside: the order lifecycle, every command-side row of the SPEC's error
//! table, and idempotent retries (also across a restart).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use e2e::commands::*;
use e2e::event_log::*;
use e2e::{command_client, pb, start_command_service, terminate_within, CommandClient};
use pb::event_envelope::Event as E;
use tempfile::TempDir;
use tonic::Code;

// ---- the lifecycle ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orders_go_through_their_lifecycle_with_a_version_and_position_per_command() {
    let dir = TempDir::new().unwrap();
    let svc = start_command_service(dir.path());
    let mut c = command_client(&svc).await;

    let create_1 = pb::CreateOrderRequest {
        command_id: "create-1".into(),
        ..create("order-1", vec![item("apple", 2, 150)])
    };
    assert_eq!(ok(&mut c, create_1).await, ack("order-1", 1, 1));
    assert_eq!(
        ok(
            &mut c,
            with(add("order-1", item("pear", 1, 99)), Some(1), "")
        )
        .await,
        ack("order-1", 2, 2)
    );
    // The same sku at the same price raises the line.
    assert_eq!(
        ok(&mut c, add("order-1", item("apple", 3, 150))).await,
        ack("order-1", 3, 3)
    );
    assert_eq!(
        ok(&mut c, remove("order-1", "apple", 1)).await,
        ack("order-1", 4, 4)
    );
    // Quantity 0 removes the whole line.
    assert_eq!(
        ok(&mut c, remove("order-1", "pear", 0)).await,
        ack("order-1", 5, 5)
    );
    assert_eq!(
        ok(&mut c, with(place("order-1"), Some(5), "")).await,
        ack("order-1", 6, 6)
    );
    assert_eq!(ok(&mut c, ship("order-1")).await, ack("order-1", 7, 7));

    // A second order, created empty and cancelled as a Draft.
    assert_eq!(
        ok(
            &mut c,
            pb::CreateOrderRequest {
                currency: "EUR".into(),
                customer_id: "cust-2".into(),
                ..create("order-2", vec![])
            }
        )
        .await,
        ack("order-2", 1, 8)
    );
    assert_eq!(
        ok(&mut c, cancel("order-2", "changed my mind")).await,
        ack("order-2", 2, 9)
    );

    // A third, with an id the server generates, cancelled once Placed.
    let generated = ok(&mut c, create("", vec![item("plum", 1, 40)])).await;
    let id = generated.order_id.clone();
    assert!(
        (1..=64).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".:_-".contains(&b)),
        "a generated order id must itself be a valid id: {id:?}"
    );
    assert_eq!(generated, ack(&id, 1, 10));
    assert_eq!(ok(&mut c, place(&id)).await, ack(&id, 2, 11));
    assert_eq!(ok(&mut c, cancel(&id, "too slow")).await, ack(&id, 3, 12));

    // The log holds exactly those twelve events, in that order.
    let log = read_log(&mut c, 0).await;
    assert_gap_free(&log);
    let acks: Vec<Ack> = log.iter().map(ack_of).collect();
    let expected: Vec<Ack> = (1..=7)
        .map(|v| ack("order-1", v, v))
        .chain([ack("order-2", 1, 8), ack("order-2", 2, 9)])
        .chain((1..=3).map(|v| ack(&id, v, 9 + v)))
        .collect();
    assert_eq!(acks, expected);
    let kinds: Vec<&str> = log.iter().map(kind).collect();
    assert_eq!(
        kinds,
        [
            "OrderCreated",
            "ItemAdded",
            "ItemAdded",
            "ItemRemoved",
            "ItemRemoved",
            "OrderPlaced",
            "OrderShipped",
            "OrderCreated",
            "OrderCancelled",
            "OrderCreated",
            "OrderPlaced",
            "OrderCancelled",
        ]
    );
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for e in &log {
        let at = e.occurred_at.as_ref().unwrap().seconds;
        assert!(
            (now - 600..=now + 60).contains(&at),
            "event {} occurred_at {at} is not about now ({now})",
            e.position
        );
    }
    assert_eq!(log[0].command_id, "create-1");
    assert!(log[1..].iter().all(|e| e.command_id.is_empty()));

    // Each event carries what a read model needs.
    let Some(E::OrderCreated(e)) = &log[0].event else {
        unreachable!()
    };
    assert_eq!(
        (e.customer_id.as_str(), e.currency.as_str()),
        ("cust-1", "USD")
    );
    assert_eq!(e.items, vec![item("apple", 2, 150)]);
    assert_eq!((e.total_cents, e.item_count), (300, 2));
    let Some(E::ItemAdded(e)) = &log[2].event else {
        unreachable!()
    };
    assert_eq!(e.item, Some(item("apple", 3, 150)));
    assert_eq!((e.line_quantity, e.total_cents, e.item_count), (5, 849, 6));
    let Some(E::ItemRemoved(e)) = &log[3].event else {
        unreachable!()
    };
    assert_eq!(
        (e.sku.as_str(), e.quantity, e.line_quantity, e.total_cents),
        ("apple", 1, 4, 699)
    );
    let Some(E::ItemRemoved(e)) = &log[4].event else {
        unreachable!()
    };
    assert_eq!(
        (
            e.sku.as_str(),
            e.quantity,
            e.line_quantity,
            e.total_cents,
            e.item_count
        ),
        ("pear", 1, 0, 600, 4)
    );
    let Some(E::OrderPlaced(e)) = &log[5].event else {
        unreachable!()
    };
    assert_eq!(e.lines, vec![item("apple", 4, 150)]);
    assert_eq!((e.total_cents, e.item_count), (600, 4));
    assert!(e.placed_at.is_some());
    let Some(E::OrderShipped(e)) = &log[6].event else {
        unreachable!()
    };
    assert_eq!(
        (
            e.carrier.as_str(),
            e.tracking_number.as_str(),
            e.total_cents
        ),
        ("DHL", "TRACK-1", 600)
    );
    let Some(E::OrderCreated(e)) = &log[7].event else {
        unreachable!()
    };
    assert_eq!(
        (e.customer_id.as_str(), e.currency.as_str()),
        ("cust-2", "EUR")
    );
    let Some(E::OrderCancelled(e)) = &log[8].event else {
        unreachable!()
    };
    assert_eq!(e.previous_status, pb::OrderStatus::Draft as i32);
    assert_eq!(e.reason, "changed my mind");
    assert!(e.placed_at.is_none());
    let Some(E::OrderCancelled(e)) = &log[11].event else {
        unreachable!()
    };
    assert_eq!(e.previous_status, pb::OrderStatus::Placed as i32);
    assert_eq!(
        (e.lines.clone(), e.total_cents),
        (vec![item("plum", 1, 40)], 40)
    );
    assert!(e.placed_at.is_some());

    // A subscriber that starts after position 9 gets 10, 11, 12.
    let tail: Vec<u64> = read_log(&mut c, 9)
        .await
        .iter()
        .map(|e| e.position)
        .collect();
    assert_eq!(tail, [10, 11, 12]);
}

// ---- the error table ----

/// Orders in every state the error cases need. Returns the log head.
async fn orders_in_every_state(c: &mut CommandClient) -> u64 {
    ok(c, create("draft", vec![item("apple", 2, 150)])).await;
    ok(c, create("empty", vec![])).await;
    ok(c, create("placed", vec![item("apple", 2, 150)])).await;
    ok(c, place("placed")).await;
    ok(c, create("shipped", vec![item("apple", 2, 150)])).await;
    ok(c, place("shipped")).await;
    ok(c, ship("shipped")).await;
    ok(c, create("cancelled", vec![item("apple", 2, 150)])).await;
    ok(c, cancel("cancelled", "")).await;
    let hundred = (0..100).map(|i| item(&format!("sku-{i}"), 1, 1)).collect();
    ok(c, create("hundred-lines", hundred)).await;
    ok(c, create("full-line", vec![item("apple", 10_000, 1)])).await;
    // 10,000 units at 10^8 cents: exactly the 10^12 limit.
    ok(
        c,
        create("at-total-limit", vec![item("gold", 10_000, 100_000_000)]),
    )
    .await;
    // Version 5, so the current version in an ABORTED message is recognisable.
    ok(c, create("busy", vec![])).await;
    for i in 0..4 {
        ok(c, add("busy", item(&format!("b{i}"), 1, 1))).await;
    }
    let head = log_head(c).await;
    assert_eq!(head, 17);
    head
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_requests_are_invalid_argument_naming_the_field_and_write_nothing() {
    let dir = TempDir::new().unwrap();
    let svc = start_command_service(dir.path());
    let mut c = command_client(&svc).await;
    let head = orders_in_every_state(&mut c).await;

    let long_id = "a".repeat(65);
    let huge_id = "h".repeat(100_000);
    let long_text = "t".repeat(257);
    let cases: Vec<(&str, Cmd)> = vec![
        ("order_id", add("", item("plum", 1, 1)).into()),
        ("order_id", add("has space", item("plum", 1, 1)).into()),
        ("order_id", place(&long_id).into()),
        ("order_id", cancel(&huge_id, "").into()),
        ("order_id", create("bad/id", vec![]).into()),
        (
            "customer_id",
            pb::CreateOrderRequest {
                customer_id: String::new(),
                ..create("new-1", vec![])
            }
            .into(),
        ),
        (
            "items[1].quantity",
            create("new-1", vec![item("a", 1, 1), item("b", 0, 1)]).into(),
        ),
        (
            "items[0].quantity",
            create("new-1", vec![item("a", 10_001, 1)]).into(),
        ),
        (
            "items[0].unit_price_cents",
            create("new-1", vec![item("a", 1, -5)]).into(),
        ),
        ("items[0].sku", create("new-1", vec![item("", 1, 1)]).into()),
        (
            "items[2].sku",
            create(
                "new-1",
                vec![item("a", 1, 1), item("b", 1, 1), item("a", 1, 1)],
            )
            .into(),
        ),
        (
            "items",
            create(
                "new-1",
                (0..101).map(|i| item(&format!("s{i}"), 1, 1)).collect(),
            )
            .into(),
        ),
        (
            "currency",
            pb::CreateOrderRequest {
                currency: "XYZ".into(),
                ..create("new-1", vec![])
            }
            .into(),
        ),
        (
            "currency",
            pb::CreateOrderRequest {
                currency: "usd".into(),
                ..create("new-1", vec![])
            }
            .into(),
        ),
        ("item.quantity", add("draft", item("plum", 0, 1)).into()),
        (
            "item.quantity",
            add("draft", item("plum", 10_001, 1)).into(),
        ),
        (
            "item.unit_price_cents",
            add("draft", item("plum", 1, -1)).into(),
        ),
        ("item.sku", add("draft", item("no spaces", 1, 1)).into()),
        (
            "item",
            pb::AddItemRequest {
                item: None,
                ..add("draft", item("plum", 1, 1))
            }
            .into(),
        ),
        ("sku", remove("draft", "", 1).into()),
        (
            "carrier",
            pb::ShipOrderRequest {
                carrier: long_text.clone(),
                ..ship("placed")
            }
            .into(),
        ),
        (
            "tracking_number",
            pb::ShipOrderRequest {
                tracking_number: long_text.clone(),
                ..ship("placed")
            }
            .into(),
        ),
        ("reason", cancel("draft", &long_text).into()),
        ("command_id", with(place("draft"), None, "not a valid key!")),
        ("command_id", with(place("draft"), None, &long_id)),
    ];
    for (field, cmd) in cases {
        let case = describe(&cmd);
        let status = expect_code(send(&mut c, cmd).await, Code::InvalidArgument, &case);
        assert!(
            status.message().contains(field),
            "{case}: the message does not name the field {field}: {:?}",
            status.message()
        );
        assert_log_unchanged(&mut c, head, &case).await;
    }

    // None of that hurt the service: the orders are still usable.
    assert_eq!(
        ok(&mut c, add("draft", item("plum", 1, 1))).await,
        ack("draft", 2, head + 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn huge_requests_are_refused_and_the_service_carries_on() {
    let dir = TempDir::new().unwrap();
    let svc = start_command_service(dir.path());
    let mut c = command_client(&svc).await;
    ok(&mut c, create("o1", vec![])).await;

    let cases: Vec<(&str, Cmd)> = vec![
        ("reason", cancel("o1", &"r".repeat(3 << 20)).into()),
        (
            "items",
            create(
                "o2",
                (0..100_000).map(|i| item(&format!("s{i}"), 1, 1)).collect(),
            )
            .into(),
        ),
    ];
    for (field, cmd) in cases {
        let case = describe(&cmd);
        let status = expect_code(send(&mut c, cmd).await, Code::InvalidArgument, &case);
        assert!(status.message().contains(field), "{case}: {status:?}");
        assert_log_unchanged(&mut c, 1, &case).await;
    }
    // Beyond the transport's message limit: refused, whatever the code.
    let result = send(&mut c, cancel("o1", &"r".repeat(8 << 20))).await;
    assert!(result.is_err(), "an 8 MB request was accepted: {result:?}");
    let mut c = command_client(&svc).await;
    assert_log_unchanged(&mut c, 1, "an 8 MB request").await;
    assert_eq!(ok(&mut c, cancel("o1", "")).await, ack("o1", 2, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commands_on_a_missing_order_are_not_found_and_write_nothing() {
    let dir = TempDir::new().unwrap();
    let svc = start_command_service(dir.path());
    let mut c = command_client(&svc).await;
    let head = orders_in_every_state(&mut c).await;

    for expected_version in [None, Some(0)] {
        let cases: Vec<Cmd> = vec![
            add("missing", item("plum", 1, 1)).into(),
            remove("missing", "apple", 1).into(),
            place("missing").into(),
            ship("missing").into(),
            cancel("missing", "").into(),
        ];
        for cmd in cases {
            let cmd = with(cmd, expected_version, "");
            let case = describe(&cmd);
            expect_code(send(&mut c, cmd).await, Code::NotFound, &case);
            assert_log_unchanged(&mut c, head, &case).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn creating_an_order_that_exists_is_already_exists_and_writes_nothing() {
    let dir = TempDir::new().unwrap();
    let svc = start_command_service(dir.path());
    let mut c = command_client(&svc).await;
    let head = orders_in_every_state(&mut c).await;

    let cases: Vec<Cmd> = vec![
        // Exactly the request that created it, without a command_id.
        create("draft", vec![item("apple", 2, 150)]).into(),
        create("draft", vec![]).into(),
        with(create("placed", vec![]), None, "fresh-key"),
        create("cancelled", vec![item("apple", 2, 150)]).into(),
        create("shipped", vec![]).into(),
    ];
    for cmd in cases {
        let case = describe(&cmd);
        expect_code(send(&mut c, cmd).await, Code::AlreadyExists, &case);
        assert_log_unchanged(&mut c, head, &case).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn business_rule_violations_are_failed_precondition_naming_the_rule_and_write_nothing() {
    let dir = TempDir::new().unwrap();
    let svc = start_command_service(dir.path());
    let mut c = command_client(&svc).await;
    let head = orders_in_every_state(&mut c).await;

    // Each case: the command, and words of which the message must hold one.
    let cases: Vec<(Cmd, &[&str])> = vec![
        // Items change only while Draft.
        (add("placed", item("plum", 1, 1)).into(), &["draft"]),
        (add("shipped", item("plum", 1, 1)).into(), &["draft"]),
        (add("cancelled", item("plum", 1, 1)).into(), &["draft"]),
        (remove("placed", "apple", 1).into(), &["draft"]),
        (remove("shipped", "apple", 0).into(), &["draft"]),
        (remove("cancelled", "apple", 1).into(), &["draft"]),
        // An order with no items cannot be placed.
        (place("empty").into(), &["item", "empty"]),
        // Only a Draft is placed; nothing changes a Shipped or Cancelled order.
        (place("placed").into(), &["draft"]),
        (place("shipped").into(), &["draft"]),
        (place("cancelled").into(), &["draft"]),
        // Only a Placed order can be shipped.
        (ship("draft").into(), &["placed"]),
        (ship("shipped").into(), &["placed"]),
        (ship("cancelled").into(), &["placed"]),
        // Shipped and Cancelled orders cannot be cancelled.
        (cancel("shipped", "").into(), &["cancel"]),
        (cancel("cancelled", "").into(), &["cancel"]),
        // One price per sku.
        (add("draft", item("apple", 1, 151)).into(), &["price"]),
        // Removing more than the line holds, or a sku the order lacks.
        (
            remove("draft", "apple", 3).into(),
            &["line", "remove", "quantity"],
        ),
        (remove("draft", "plum", 1).into(), &["sku", "line"]),
        (remove("draft", "plum", 0).into(), &["sku", "line"]),
        // At most 100 lines.
        (
            add("hundred-lines", item("sku-100", 1, 1)).into(),
            &["100", "lines"],
        ),
        // At most 10,000 units per line.
        (
            add("full-line", item("apple", 1, 1)).into(),
            &["10000", "10,000", "10 000", "quantity", "units"],
        ),
        // Order total at most 10^12 cents.
        (
            add("at-total-limit", item("penny", 1, 1)).into(),
            &["total"],
        ),
        (
            create(
                "over-total",
                vec![item("gold", 10_000, 100_000_000), item("penny", 1, 1)],
            )
            .into(),
            &["total"],
        ),
    ];
    for (cmd, words) in cases {
        let case = describe(&cmd);
        let status = expect_code(send(&mut c, cmd).await, Code::FailedPrecondition, &case);
        let message = status.message().to_lowercase();
        assert!(
            words.iter().any(|w| message.contains(w)),
            "{case}: the message does not name the rule (expected one of {words:?}): {:?}",
            status.message()
        );
        assert_log_unchanged(&mut c, head, &case).await;
    }

    // The limits themselves are fine.
    assert_eq!(
        ok(&mut c, add("hundred-lines", item("sku-0", 9_999, 1))).await,
        ack("hundred-lines", 2, head + 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stale_expected_version_is_aborted_with_the_current_version_and_writes_nothing() {
    let dir = TempDir::new().unwrap();
    let svc = start_command_service(dir.path());
    let mut c = command_client(&svc).await;
    let head = orders_in_every_state(&mut c).await;

    // "busy" is at version 5, "draft" at 1, "placed" at 2.
    let cases: Vec<(u64, Cmd)> = vec![
        (5, with(add("busy", item("plum", 1, 1)), Some(4), "")),
        (5, with(add("busy", item("plum", 1, 1)), Some(6), "")),
        (5, with(remove("busy", "b0", 1), Some(0), "")),
        (5, with(place("busy"), Some(u64::MAX), "")),
        (5, with(cancel("busy", "x"), Some(1), "")),
        (2, with(ship("placed"), Some(1), "")),
        (2, with(cancel("placed", ""), Some(3), "")),
        (1, with(add("draft", item("plum", 1, 1)), Some(0), "")),
        (1, with(place("draft"), Some(2), "a-key")),
    ];
    for (current, cmd) in cases {
        let case = describe(&cmd);
        let status = expect_code(send(&mut c, cmd).await, Code::Aborted, &case);
        assert!(
            numbers_in(status.message()).contains(&current),
            "{case}: the message does not give the current version {current}: {:?}",
            status.message()
        );
        assert_log_unchanged(&mut c, head, &case).await;
    }

    // With the right version the same commands go through.
    assert_eq!(
        ok(&mut c, with(add("busy", item("plum", 1, 1)), Some(5), "")).await,
        ack("busy", 6, head + 1)
    );
    assert_eq!(
        ok(&mut c, with(ship("placed"), Some(2), "")).await,
        ack("placed", 3, head + 2)
    );
}

// ---- idempotency ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_repeated_command_id_returns_the_original_result_and_writes_nothing() {
    let dir = TempDir::new().unwrap();
    let svc = start_command_service(dir.path());
    let mut c = command_client(&svc).await;

    let create_o1 = with(create("o1", vec![item("apple", 1, 100)]), None, "k-create");
    let generated = with(create("", vec![]), None, "k-generated");
    let add_o1 = with(add("o1", item("pear", 2, 50)), Some(1), "k-add");
    let place_o1 = with(place("o1"), None, "k-place");

    assert_eq!(ok(&mut c, create_o1.clone()).await, ack("o1", 1, 1));
    assert_eq!(ok(&mut c, create_o1.clone()).await, ack("o1", 1, 1));
    let first = ok(&mut c, generated.clone()).await;
    assert_eq!((first.version, first.position), (1, 2));
    // The retry gets the id generated the first time, not a new order.
    assert_eq!(ok(&mut c, generated.clone()).await, first);
    assert_eq!(ok(&mut c, add_o1.clone()).await, ack("o1", 2, 3));
    assert_eq!(
        ok(&mut c, add("o1", item("plum", 1, 1))).await,
        ack("o1", 3, 4)
    );
    // The retry wins although its expected_version is stale by now.
    assert_eq!(ok(&mut c, add_o1.clone()).await, ack("o1", 2, 3));
    assert_eq!(ok(&mut c, place_o1.clone()).await, ack("o1", 4, 5));
    // ... and although the order is no longer Draft.
    assert_eq!(ok(&mut c, add_o1.clone()).await, ack("o1", 2, 3));
    assert_eq!(ok(&mut c, place_o1.clone()).await, ack("o1", 4, 5));
    assert_eq!(ok(&mut c, create_o1.clone()).await, ack("o1", 1, 1));

    let log = read_log(&mut c, 0).await;
    assert_gap_free(&log);
    assert_eq!(log.len(), 5, "retries wrote events: {log:?}");
    let keys: Vec<&str> = log.iter().map(|e| e.command_id.as_str()).collect();
    assert_eq!(keys, ["k-create", "k-generated", "k-add", "", "k-place"]);

    same_key_other_request_is_invalid_argument(&mut c, 5).await;
}

/// A known `command_id` with another request is refused and writes nothing.
async fn same_key_other_request_is_invalid_argument(c: &mut CommandClient, head: u64) {
    let cases: Vec<Cmd> = vec![
        // Another quantity.
        with(add("o1", item("pear", 3, 50)), Some(1), "k-add"),
        // Another expected_version.
        with(add("o1", item("pear", 2, 50)), None, "k-add"),
        // Another order.
        with(create("o2", vec![item("apple", 1, 100)]), None, "k-create"),
        // Another RPC.
        with(place("o1"), None, "k-add"),
        with(cancel("o1", ""), None, "k-place"),
        with(create("", vec![item("x", 1, 1)]), None, "k-generated"),
    ];
    for cmd in cases {
        let case = describe(&cmd);
        let status = expect_code(send(c, cmd).await, Code::InvalidArgument, &case);
        assert!(
            status.message().contains("command_id"),
            "{case}: the message does not name command_id: {:?}",
            status.message()
        );
        assert_log_unchanged(c, head, &case).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_repeated_command_id_is_recognised_after_a_restart() {
    let dir = TempDir::new().unwrap();
    let svc = start_command_service(dir.path());
    let mut c = command_client(&svc).await;

    let create_o1 = with(create("o1", vec![item("apple", 1, 100)]), None, "k-create");
    let generated = with(create("", vec![]), None, "k-generated");
    let add_o1 = with(add("o1", item("pear", 2, 50)), Some(1), "k-add");
    let place_o1 = with(place("o1"), None, "k-place");
    let mut acks = Vec::new();
    for cmd in [&create_o1, &generated, &add_o1] {
        acks.push(ok(&mut c, cmd.clone()).await);
    }
    ok(&mut c, add("o1", item("plum", 1, 1))).await;
    acks.push(ok(&mut c, place_o1.clone()).await);
    assert_eq!(acks[3], ack("o1", 4, 5));

    drop(c);
    let status = terminate_within(svc, Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(0), "SIGTERM must exit 0");
    let svc = start_command_service(dir.path());
    let mut c = command_client(&svc).await;

    for (cmd, original) in [&create_o1, &generated, &add_o1, &place_o1]
        .into_iter()
        .zip(&acks)
    {
        assert_eq!(&ok(&mut c, cmd.clone()).await, original, "{cmd:?}");
    }
    assert_log_unchanged(&mut c, 5, "retries after restart").await;
    same_key_other_request_is_invalid_argument(&mut c, 5).await;

    // Writing continues where it stopped.
    assert_eq!(
        ok(&mut c, with(ship("o1"), Some(4), "k-ship")).await,
        ack("o1", 5, 6)
    );
    let log = read_log(&mut c, 0).await;
    assert_gap_free(&log);
    assert_eq!(log.len(), 6);
}

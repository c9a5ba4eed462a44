//! `SubscribeEvents` filters: by event type and by order. A filtered stream
//! sends exactly the matching events of the log, in order, then a heartbeat
//! carrying the log's head; an unfiltered one is unchanged; a bad filter is
//! INVALID_ARGUMENT naming the field.

use std::time::Duration;

use e2e::commands::{add, create_request};
use e2e::{command_client, item, pb, read_log, start_command_service, CommandClient};

/// Reads a filtered stream until its first heartbeat: (events, head).
async fn read_filtered(
    client: &mut CommandClient,
    request: pb::SubscribeEventsRequest,
) -> (Vec<pb::EventEnvelope>, u64) {
    let mut stream = client.subscribe_events(request).await.unwrap().into_inner();
    let mut events = Vec::new();
    loop {
        let message = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .expect("no heartbeat within 30 s")
            .unwrap()
            .expect("stream ended");
        match message.kind.unwrap() {
            pb::subscribe_events_response::Kind::Event(e) => events.push(e),
            pb::subscribe_events_response::Kind::Heartbeat(h) => return (events, h.head_position),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_streams_carry_only_what_they_ask_for_and_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let service = start_command_service(&dir.path().join("command"));
    let mut client = command_client(&service).await;
    for order in ["a", "b", "c"] {
        client.create_order(create_request(order)).await.unwrap();
        client
            .add_item(add(order, item("pear", 1, 10)))
            .await
            .unwrap();
    }
    client
        .place_order(pb::PlaceOrderRequest {
            order_id: "b".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let log = read_log(&mut client, 0).await;
    let head = log.last().unwrap().position;

    let (of_b, seen_head) = read_filtered(
        &mut client,
        pb::SubscribeEventsRequest {
            order_id: "b".into(),
            ..Default::default()
        },
    )
    .await;
    let expected: Vec<_> = log.iter().filter(|e| e.order_id == "b").cloned().collect();
    assert_eq!(of_b, expected);
    assert_eq!(of_b.len(), 3);
    assert_eq!(seen_head, head, "the heartbeat still carries the head");

    let (placed_or_created, _) = read_filtered(
        &mut client,
        pb::SubscribeEventsRequest {
            event_types: vec![
                pb::EventType::OrderPlaced as i32,
                pb::EventType::OrderCreated as i32,
            ],
            ..Default::default()
        },
    )
    .await;
    let expected: Vec<_> = log
        .iter()
        .filter(|e| {
            matches!(
                e.event,
                Some(
                    pb::event_envelope::Event::OrderPlaced(_)
                        | pb::event_envelope::Event::OrderCreated(_)
                )
            )
        })
        .cloned()
        .collect();
    assert_eq!(placed_or_created, expected);
    assert_eq!(placed_or_created.len(), 4);

    // Both filters, and a position to start after.
    let (b_added, _) = read_filtered(
        &mut client,
        pb::SubscribeEventsRequest {
            after_position: 1,
            event_types: vec![pb::EventType::ItemAdded as i32],
            order_id: "b".into(),
        },
    )
    .await;
    assert_eq!(b_added.len(), 1);
    assert!(matches!(
        b_added[0].event,
        Some(pb::event_envelope::Event::ItemAdded(_))
    ));

    // Unfiltered: the whole log, as before.
    assert_eq!(read_log(&mut client, 0).await, log);

    for (request, field) in [
        (
            pb::SubscribeEventsRequest {
                event_types: vec![0],
                ..Default::default()
            },
            "event_types",
        ),
        (
            pb::SubscribeEventsRequest {
                event_types: vec![99],
                ..Default::default()
            },
            "event_types",
        ),
        (
            pb::SubscribeEventsRequest {
                order_id: "no spaces".into(),
                ..Default::default()
            },
            "order_id",
        ),
    ] {
        let refused = client.subscribe_events(request).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
        assert!(
            refused.message().starts_with(field),
            "{}",
            refused.message()
        );
    }
}

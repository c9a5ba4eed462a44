//! Reading command-service's event log over `SubscribeEvents`, and the
//! assertions every suite makes on it.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tonic::Streaming;

use crate::clients::{narrow_window_channel, CommandClient};
use crate::commands::{ack, Ack};
use crate::pb;
use crate::service::Service;

/// Reads the whole event log from position `after` up to the first heartbeat
/// (the point where the stream has caught up with the stored log).
pub async fn read_log(client: &mut CommandClient, after: u64) -> Vec<pb::EventEnvelope> {
    let mut stream = client
        .subscribe_events(pb::SubscribeEventsRequest {
            after_position: after,
            ..Default::default()
        })
        .await
        .expect("subscribe")
        .into_inner();
    let mut events = Vec::new();
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .expect("log read timed out")
            .expect("stream error")
            .expect("stream ended");
        match msg.kind.expect("message kind") {
            pb::subscribe_events_response::Kind::Event(e) => events.push(e),
            pb::subscribe_events_response::Kind::Heartbeat(h) => {
                if events.last().map_or(after, |e| e.position) >= h.head_position {
                    return events;
                }
            }
        }
    }
}

/// A subscription from position 0 on a connection with the minimum HTTP/2
/// windows (64 KiB), for the test not to read: the server soon has to stop
/// sending, and the rest waits in its buffer, then in the log.
pub async fn stalled_subscription(svc: &Service) -> Streaming<pb::SubscribeEventsResponse> {
    CommandClient::new(narrow_window_channel(&svc.endpoint()).await)
        .subscribe_events(pb::SubscribeEventsRequest {
            after_position: 0,
            ..Default::default()
        })
        .await
        .expect("subscribe")
        .into_inner()
}

/// The last position of the stored log (0 when empty).
pub async fn log_head(client: &mut CommandClient) -> u64 {
    read_log(client, 0).await.last().map_or(0, |e| e.position)
}

/// The command result an event in the log stands for.
pub fn ack_of(e: &pb::EventEnvelope) -> Ack {
    ack(&e.order_id, e.version, e.position)
}

/// Asserts that nothing was appended to the log after `head`.
pub async fn assert_log_unchanged(client: &mut CommandClient, head: u64, case: &str) {
    let grown = read_log(client, head).await;
    assert!(
        grown.is_empty(),
        "{case}: a rejected command wrote to the log: {:?}",
        grown.iter().map(ack_of).collect::<Vec<_>>()
    );
}

/// Asserts that `log` holds positions 1..=len in order, with unique event ids,
/// and every order's versions run 1, 2, 3... in log order.
#[track_caller]
pub fn assert_gap_free(log: &[pb::EventEnvelope]) {
    let positions: Vec<u64> = log.iter().map(|e| e.position).collect();
    let expected: Vec<u64> = (1..=log.len() as u64).collect();
    assert_eq!(positions, expected, "log positions are not 1..=n in order");
    let mut ids = HashSet::new();
    for e in log {
        assert!(
            !e.event_id.is_empty(),
            "event {} has no event_id",
            e.position
        );
        assert!(
            ids.insert(e.event_id.clone()),
            "event_id {} repeated",
            e.event_id
        );
        assert!(e.event.is_some(), "event {} has no payload", e.position);
        assert!(
            e.occurred_at.is_some(),
            "event {} has no occurred_at",
            e.position
        );
    }
    let mut versions = HashMap::<&str, u64>::new();
    for e in log {
        let v = versions.entry(e.order_id.as_str()).or_default();
        *v += 1;
        assert_eq!(
            e.version, *v,
            "order {} at position {}: versions are not 1, 2, 3...",
            e.order_id, e.position
        );
    }
}

/// The name of an envelope's event, for readable assertions.
pub fn kind(e: &pb::EventEnvelope) -> &'static str {
    use pb::event_envelope::Event as E;
    match &e.event {
        Some(E::OrderCreated(_)) => "OrderCreated",
        Some(E::ItemAdded(_)) => "ItemAdded",
        Some(E::ItemRemoved(_)) => "ItemRemoved",
        Some(E::OrderPlaced(_)) => "OrderPlaced",
        Some(E::OrderShipped(_)) => "OrderShipped",
        Some(E::OrderCancelled(_)) => "OrderCancelled",
        None => "none",
    }
}

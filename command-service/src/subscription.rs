//! `SubscribeEvents`: one task per subscriber reads the stored log into a bounded
//! channel, first to catch up, then whenever the writer publishes a new head.
//!
//! The log on disk is the only source of events, so there is no switch-over from
//! "catch-up" to "live" where an event could be missed or sent twice, and a slow
//! subscriber only ever holds up its own task: writers never wait for it.

use std::time::Duration;

use shared::proto as pb;
use shared::proto::subscribe_events_response::Kind;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::store::Store;

/// Events read from sled per step.
const CHUNK: usize = 512;
/// Messages buffered per subscriber before its task waits for the client.
const BUFFER: usize = 1024;

pub type EventStream = ReceiverStream<Result<pb::SubscribeEventsResponse, Status>>;

pub struct Subscription {
    pub store: Store,
    /// The last durable position, published by the writer after each flush.
    pub head: watch::Receiver<u64>,
    pub heartbeat_interval: Duration,
    /// Becomes true when the service shuts down: the stream then ends.
    pub shutdown: watch::Receiver<bool>,
}

impl Subscription {
    /// Starts streaming every event after `after_position`.
    pub fn start(self, after_position: u64) -> EventStream {
        let (tx, rx) = mpsc::channel(BUFFER);
        tokio::spawn(self.run(after_position, tx));
        ReceiverStream::new(rx)
    }

    async fn run(
        mut self,
        mut sent: u64,
        tx: mpsc::Sender<Result<pb::SubscribeEventsResponse, Status>>,
    ) {
        let mut announced_caught_up = false;
        loop {
            let head = *self.head.borrow_and_update();
            while sent < head {
                let store = self.store.clone();
                let from = sent + 1;
                let chunk =
                    tokio::task::spawn_blocking(move || store.read_events(from, head, CHUNK)).await;
                let events = match chunk {
                    Ok(Ok(events)) if !events.is_empty() => events,
                    Ok(Ok(_)) => {
                        tracing::error!(from, head, "event log has a gap below the head");
                        let _ = tx.send(Err(Status::internal("event log is damaged"))).await;
                        return;
                    }
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, from, "reading the event log failed");
                        let _ = tx
                            .send(Err(Status::unavailable("reading the event log failed")))
                            .await;
                        return;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "log reader task failed");
                        return;
                    }
                };
                for event in events {
                    let position = event.position;
                    if position != sent + 1 {
                        tracing::error!(expected = sent + 1, found = position, "event log gap");
                        let _ = tx.send(Err(Status::internal("event log is damaged"))).await;
                        return;
                    }
                    let msg = pb::SubscribeEventsResponse {
                        kind: Some(Kind::Event(event)),
                    };
                    if !self.deliver(&tx, msg).await {
                        return; // the client left, or the service is stopping
                    }
                    sent = position;
                }
            }
            if !announced_caught_up {
                announced_caught_up = true;
                if !self.deliver(&tx, heartbeat(head)).await {
                    return;
                }
            }
            tokio::select! {
                changed = self.head.changed() => {
                    if changed.is_err() {
                        return; // the writer stopped
                    }
                }
                () = tokio::time::sleep(self.heartbeat_interval) => {
                    let head = *self.head.borrow();
                    if sent >= head && !self.deliver(&tx, heartbeat(head)).await {
                        return;
                    }
                }
                () = stopped(&mut self.shutdown) => return,
                () = tx.closed() => return,
            }
        }
    }

    /// Sends one message. `false` when the client left or the service began
    /// stopping first: a subscriber that reads slowly (or not at all) keeps
    /// its buffer full, and the task must not wait on it past shutdown.
    async fn deliver(
        &mut self,
        tx: &mpsc::Sender<Result<pb::SubscribeEventsResponse, Status>>,
        msg: pb::SubscribeEventsResponse,
    ) -> bool {
        tokio::select! {
            sent = tx.send(Ok(msg)) => sent.is_ok(),
            () = stopped(&mut self.shutdown) => false,
        }
    }
}

/// Completes once the shutdown flag is set (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

fn heartbeat(head_position: u64) -> pb::SubscribeEventsResponse {
    pb::SubscribeEventsResponse {
        kind: Some(Kind::Heartbeat(pb::Heartbeat { head_position })),
    }
}

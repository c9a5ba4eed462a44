//! `SubscribeEvents`: one task per subscriber reads the stored log into a bounded
//! channel, first to catch up, then whenever the writer publishes a new head.
//!
//! The log on disk is the only source of events, so there is no switch-over from
//! "catch-up" to "live" where an event could be missed or sent twice, and a slow
//! subscriber only ever holds up its own task: writers never wait for it.
//!
//! Each open stream can buffer several MB, so at most `--max-subscribers` are
//! open at once (`SubscriberLimit`); one more is refused with RESOURCE_EXHAUSTED.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use shared::proto as pb;
use shared::proto::subscribe_events_response::Kind;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio_stream::Stream;
use tonic::Status;

use crate::error::StoreError;
use crate::store::Store;

/// Events read from sled per step, and sent to the client's stream as one chunk.
const CHUNK: usize = 1024;
/// Chunks buffered per subscriber before its task waits for the client.
const BUFFER: usize = 4;
/// Reads of at most this many events (the live tail) run on the task itself.
const INLINE_READ: u64 = 64;

/// The stream of encoded `SubscribeEventsResponse` messages of one subscriber.
///
/// The log is stored as encoded responses (`shared::codec` log blocks), so it
/// goes out without being decoded and encoded again (see `routes.rs`).
pub struct EventStream {
    chunks: mpsc::Receiver<Result<Vec<Bytes>, Status>>,
    current: std::vec::IntoIter<Bytes>,
    /// The stream's place under `--max-subscribers`, given back when it is dropped.
    _slot: Option<OwnedSemaphorePermit>,
}

impl EventStream {
    /// The stream, holding `slot` of the subscriber limit for as long as it lives.
    pub fn holding(mut self, slot: SubscriberSlot) -> Self {
        self._slot = Some(slot.0);
        self
    }
}

/// The bound on concurrent `SubscribeEvents` streams (`--max-subscribers`).
#[derive(Debug, Clone)]
pub struct SubscriberLimit {
    open: Arc<Semaphore>,
    max: usize,
}

/// One admitted subscription's place under the limit.
#[derive(Debug)]
pub struct SubscriberSlot(OwnedSemaphorePermit);

impl SubscriberLimit {
    pub fn new(max: usize) -> Self {
        SubscriberLimit {
            open: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// A place for one more stream, or RESOURCE_EXHAUSTED naming the limit and its flag.
    pub fn admit(&self) -> Result<SubscriberSlot, Status> {
        match Arc::clone(&self.open).try_acquire_owned() {
            Ok(permit) => Ok(SubscriberSlot(permit)),
            Err(_) => {
                tracing::warn!(
                    max_subscribers = self.max,
                    "SubscribeEvents refused: the subscriber limit is reached (--max-subscribers)"
                );
                Err(Status::resource_exhausted(format!(
                    "too many SubscribeEvents streams: at most {} may be open at once \
                     (--max-subscribers)",
                    self.max
                )))
            }
        }
    }
}

impl Stream for EventStream {
    type Item = Result<Bytes, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(message) = self.current.next() {
                return Poll::Ready(Some(Ok(message)));
            }
            match std::task::ready!(self.chunks.poll_recv(cx)) {
                Some(Ok(chunk)) => self.current = chunk.into_iter(),
                Some(Err(status)) => return Poll::Ready(Some(Err(status))),
                None => return Poll::Ready(None),
            }
        }
    }
}

type Sender = mpsc::Sender<Result<Vec<Bytes>, Status>>;

pub struct Subscription {
    pub store: Store,
    /// The last durable position, published by the writer after each flush.
    pub head: watch::Receiver<u64>,
    pub heartbeat_interval: Duration,
    /// Becomes true when the service shuts down: the stream then ends.
    pub shutdown: watch::Receiver<bool>,
    /// `--max-subscriber-buffer-bytes`: about this much of the log is read
    /// ahead of a slow client (`BUFFER` chunks of a quarter each).
    pub buffer_bytes: usize,
    /// Which events the client asked for (`Filter::all()`: every one).
    pub filter: Filter,
}

/// The events a subscriber asked for: some event types, one order. An
/// unfiltered stream sends the stored bytes as they are; a filtered one
/// decodes each event to choose.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// `EventType` values; empty: every type.
    pub event_types: Vec<pb::EventType>,
    /// Empty: every order.
    pub order_id: String,
}

impl Filter {
    fn is_all(&self) -> bool {
        self.event_types.is_empty() && self.order_id.is_empty()
    }

    fn keeps(&self, message: &Bytes) -> bool {
        let Ok(response) = pb::SubscribeEventsResponse::decode(message.clone()) else {
            return true; // the client decodes it and reports the damage
        };
        let Some(Kind::Event(event)) = response.kind else {
            return true;
        };
        if !self.order_id.is_empty() && event.order_id != self.order_id {
            return false;
        }
        self.event_types.is_empty()
            || event
                .event
                .as_ref()
                .is_some_and(|e| self.event_types.contains(&event_type(e)))
    }
}

fn event_type(event: &pb::event_envelope::Event) -> pb::EventType {
    use pb::event_envelope::Event;
    match event {
        Event::OrderCreated(_) => pb::EventType::OrderCreated,
        Event::ItemAdded(_) => pb::EventType::ItemAdded,
        Event::ItemRemoved(_) => pb::EventType::ItemRemoved,
        Event::OrderPlaced(_) => pb::EventType::OrderPlaced,
        Event::OrderShipped(_) => pb::EventType::OrderShipped,
        Event::OrderCancelled(_) => pb::EventType::OrderCancelled,
    }
}

/// Why a chunk of the log could not be read.
enum ReadError {
    /// The log has no event at `expected` although the head is past it.
    Gap {
        expected: u64,
        found: Option<u64>,
    },
    Store(StoreError),
}

/// Reads about `CHUNK` events from `from` on, as encoded
/// `SubscribeEventsResponse` messages: (messages, position of the last one).
fn read_chunk(
    store: &Store,
    from: u64,
    head: u64,
    max_bytes: usize,
) -> Result<(Vec<Bytes>, u64), ReadError> {
    let events = store
        .read_events_within(from, head, CHUNK, max_bytes)
        .map_err(ReadError::Store)?;
    let mut messages = Vec::with_capacity(events.len());
    let mut expected = from;
    for (position, message) in events {
        if position != expected {
            return Err(ReadError::Gap {
                expected,
                found: Some(position),
            });
        }
        messages.push(message);
        expected += 1;
    }
    if messages.is_empty() {
        return Err(ReadError::Gap {
            expected,
            found: None,
        });
    }
    Ok((messages, expected - 1))
}

impl Subscription {
    /// Starts streaming every event after `after_position`.
    pub fn start(self, after_position: u64) -> EventStream {
        let (tx, rx) = mpsc::channel(BUFFER);
        tokio::spawn(self.run(after_position, tx));
        EventStream {
            chunks: rx,
            current: Vec::new().into_iter(),
            _slot: None,
        }
    }

    async fn run(mut self, mut sent: u64, tx: Sender) {
        let mut announced_caught_up = false;
        loop {
            let head = *self.head.borrow_and_update();
            while sent < head {
                let store = self.store.clone();
                let from = sent + 1;
                let chunk_bytes = self.buffer_bytes / BUFFER;
                // At the live tail a read is a few events just written, in
                // sled's cache: read in place. Handing it to the blocking
                // pool cost two thread wake-ups per group.
                let chunk = if head - sent <= INLINE_READ {
                    Ok(read_chunk(&store, from, head, chunk_bytes))
                } else {
                    tokio::task::spawn_blocking(move || read_chunk(&store, from, head, chunk_bytes))
                        .await
                };
                let (messages, last) = match chunk {
                    Ok(Ok(read)) => read,
                    Ok(Err(ReadError::Gap { expected, found })) => {
                        tracing::error!(
                            expected,
                            ?found,
                            head,
                            "event log has a gap below the head"
                        );
                        let _ = tx.send(Err(Status::internal("event log is damaged"))).await;
                        return;
                    }
                    Ok(Err(ReadError::Store(e))) => {
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
                let messages = if self.filter.is_all() {
                    messages
                } else {
                    messages
                        .into_iter()
                        .filter(|m| self.filter.keeps(m))
                        .collect()
                };
                if !messages.is_empty() && !self.deliver(&tx, messages).await {
                    return; // the client left, or the service is stopping
                }
                sent = last;
            }
            if !announced_caught_up {
                announced_caught_up = true;
                if !self
                    .deliver(&tx, vec![heartbeat(head, self.store.log_id())])
                    .await
                {
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
                    if sent >= head && !self.deliver(&tx, vec![heartbeat(head, self.store.log_id())]).await {
                        return;
                    }
                }
                () = stopped(&mut self.shutdown) => return,
                () = tx.closed() => return,
            }
        }
    }

    /// Sends messages. `false` when the client left or the service began
    /// stopping first: a subscriber that reads slowly (or not at all) keeps
    /// its buffer full, and the task must not wait on it past shutdown.
    async fn deliver(&mut self, tx: &Sender, messages: Vec<Bytes>) -> bool {
        tokio::select! {
            sent = tx.send(Ok(messages)) => sent.is_ok(),
            () = stopped(&mut self.shutdown) => false,
        }
    }
}

/// Completes once the shutdown flag is set (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

fn heartbeat(head_position: u64, log_id: &str) -> Bytes {
    pb::SubscribeEventsResponse {
        kind: Some(Kind::Heartbeat(pb::Heartbeat {
            head_position,
            log_id: log_id.to_owned(),
        })),
    }
    .encode_to_vec()
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subscriber_limit_refuses_one_more_and_frees_a_place_on_drop() {
        let limit = SubscriberLimit::new(2);
        let first = limit.admit().unwrap();
        let _second = limit.admit().unwrap();
        let refused = limit.admit().unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            refused.message().contains("--max-subscribers"),
            "{refused:?}"
        );
        assert!(refused.message().contains("at most 2"), "{refused:?}");
        drop(first);
        assert!(limit.admit().is_ok());
    }
}

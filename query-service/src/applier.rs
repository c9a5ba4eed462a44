//! The single writer of the read models: takes the events the subscriber
//! received, applies them in batches (one atomic sled batch each, checkpoint
//! included), then wakes waiting queries and watchers. Stops at the first event
//! it cannot apply and reports it, keeping the last good state served.
//!
//! A storage failure (a sled write or flush error, which sled makes permanent
//! for the process) is not a poison event: it is published (`Failure`) so the
//! service reports NOT_SERVING and exits non-zero, and is restarted on its
//! storage (crash-only); it resumes from its last durable checkpoint.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use shared::domain::{RecordedEvent, Timestamp};
use shared::proto as pb;
use tokio::sync::{mpsc, watch};

use crate::read_models::checkpoint::Checkpoint;
use crate::read_models::order_view::OrderRow;
use crate::status::ProjectionStatus;
use crate::storage::StoreError;
use crate::store::{ApplyError, Generation, Store};
use crate::watchers::Watchers;

/// How often a rebuild logs its progress.
const REBUILD_LOG_EVERY: Duration = Duration::from_secs(5);

/// How often the store is flushed, so a failed background flush is seen even
/// when no event arrives to be written.
const FLUSH_CHECK_EVERY: Duration = Duration::from_secs(1);

/// The first storage failure, published to whoever stops the service.
#[derive(Clone)]
pub struct Failure(Arc<watch::Sender<Option<String>>>);

impl Failure {
    pub fn new() -> (Self, watch::Receiver<Option<String>>) {
        let (tx, rx) = watch::channel(None);
        (Failure(Arc::new(tx)), rx)
    }

    /// Records `message` unless a failure is already recorded.
    pub fn set(&self, message: String) {
        self.0.send_if_modified(|first| {
            if first.is_some() {
                return false;
            }
            tracing::error!(
                "storage failure: {message}; query-service stops (restart it on healthy storage)"
            );
            *first = Some(message);
            true
        });
    }
}

/// Flushes `store` every second until `stop`; a failure is published.
pub async fn check_flushes(store: Arc<Store>, failure: Failure, mut stop: watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(FLUSH_CHECK_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if let Err(e) = store.flush().await {
            failure.set(format!("flushing the read models: {e}"));
            return;
        }
    }
}

pub struct Applier {
    pub store: Arc<Store>,
    /// The generation events go to: the served one, or the one being rebuilt.
    pub target: Arc<Generation>,
    pub status: Arc<ProjectionStatus>,
    pub watchers: Arc<Watchers>,
    pub max_batch: usize,
    /// The generation a finished rebuild replaced, until no query reads it.
    pub retired: Option<Arc<Generation>>,
    /// Where a storage failure is published.
    pub failure: Failure,
}

/// An event as the subscriber hands it over: already read from its envelope
/// (on the subscriber's task, so not on the applier's path), or why it cannot be.
pub struct Received {
    pub position: u64,
    pub event: Result<RecordedEvent, String>,
}

impl From<pb::EventEnvelope> for Received {
    fn from(envelope: pb::EventEnvelope) -> Self {
        Received {
            position: envelope.position,
            event: RecordedEvent::try_from(&envelope).map_err(|e| e.to_string()),
        }
    }
}

/// Where and why applying stopped.
struct Poison {
    position: u64,
    error: String,
    /// A storage failure rather than an event that cannot be applied.
    storage: bool,
}

impl Poison {
    fn event(position: u64, error: String) -> Self {
        Poison {
            position,
            error,
            storage: false,
        }
    }

    fn storage(position: u64, error: String) -> Self {
        Poison {
            position,
            error,
            storage: true,
        }
    }

    /// Applying events from `position` on failed.
    fn applying(position: u64, error: ApplyError) -> Self {
        match error {
            ApplyError::Store(e) => Poison::storage(position, e.to_string()),
            other @ ApplyError::Projection { .. } => Poison::event(position, other.to_string()),
        }
    }
}

fn now() -> Timestamp {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
    Timestamp::from_micros(micros)
}

impl Applier {
    /// Applies events from `events` until the channel closes (shutdown) or an
    /// event cannot be applied. `start` is the target generation's checkpoint.
    pub async fn run(mut self, start: Checkpoint, mut events: mpsc::Receiver<Received>) {
        let mut next = start.position + 1;
        let mut last_log = Instant::now();
        let store = Arc::clone(&self.store);
        let writing = store.writing().await;
        if let Err(poison) = self.committed(Vec::new(), start) {
            return self.stop(poison);
        }
        drop(writing);
        while let Some(first) = events.recv().await {
            let mut batch = Vec::with_capacity(self.max_batch.min(1024));
            batch.push(first);
            while batch.len() < self.max_batch {
                match events.try_recv() {
                    Ok(event) => batch.push(event),
                    Err(_) => break,
                }
            }
            let (decoded, mut poison) = decode(batch, &mut next);
            if !decoded.is_empty() {
                if let Err(p) = self.apply(decoded).await {
                    poison = Some(p);
                }
            }
            if let Some(poison) = poison {
                return self.stop(poison);
            }
            self.drop_retired();
            if !self.serving() && last_log.elapsed() >= REBUILD_LOG_EVERY {
                last_log = Instant::now();
                let p = self.status.snapshot();
                tracing::info!(
                    rebuilt_to = next - 1,
                    served_at = p.applied_position,
                    head = p.head_position,
                    "rebuilding read models"
                );
            }
        }
        self.drop_retired();
        tracing::debug!("event channel closed; applier stopping");
    }

    fn drop_retired(&mut self) {
        if let Some(retired) = self.retired.take() {
            match self.store.drop_retired(retired) {
                Ok(still_read) => self.retired = still_read,
                Err(e) => tracing::warn!(error = %e, "cannot drop the replaced read models yet"),
            }
        }
    }

    fn serving(&self) -> bool {
        self.store.active().number() == self.target.number()
    }

    /// Applies consecutive events; on a poison event, still commits those before it.
    async fn apply(&mut self, events: Vec<RecordedEvent>) -> Result<(), Poison> {
        // From choosing whose rows to keep until they are handed to the
        // watchers, nobody starts watching (watchers.rs).
        // Not while a snapshot is being copied (snapshot.rs); held through a
        // switch of generations too. Taken first, so that watchers can
        // register while a copy holds the applier off.
        let store = Arc::clone(&self.store);
        let _writing = store.writing().await;
        let watchers = Arc::clone(&self.watchers);
        let _registrations = watchers.hold_registrations().await;
        let applied_at = Some(now());
        let (events, result) = self.apply_blocking(events, applied_at).await?;
        match result {
            Ok(rows) => {
                let position = events.last().map_or(0, |e| e.position);
                self.committed(
                    rows,
                    Checkpoint {
                        position,
                        applied_at,
                    },
                )
            }
            Err(ApplyError::Projection { index, error }) => {
                let position = events[index].position;
                let mut good = events;
                good.truncate(index);
                if let Some(last) = good.last().map(|e| e.position) {
                    let (_, result) = self.apply_blocking(good, applied_at).await?;
                    let rows = result.map_err(|e| Poison::applying(last, e))?;
                    self.committed(
                        rows,
                        Checkpoint {
                            position: last,
                            applied_at,
                        },
                    )?;
                }
                Err(Poison::event(
                    position,
                    format!("event at position {position} cannot be applied: {error}"),
                ))
            }
            Err(ApplyError::Store(e)) => Err(Poison::storage(
                events.first().map_or(0, |e| e.position),
                e.to_string(),
            )),
        }
    }

    /// sled writes block: run them off the async workers.
    async fn apply_blocking(
        &self,
        events: Vec<RecordedEvent>,
        applied_at: Option<Timestamp>,
    ) -> Result<(Vec<RecordedEvent>, Result<Vec<OrderRow>, ApplyError>), Poison> {
        let target = Arc::clone(&self.target);
        let watchers = Arc::clone(&self.watchers);
        let first = events.first().map_or(0, |e| e.position);
        tokio::task::spawn_blocking(move || {
            let result = target.apply(&events, applied_at, |id| watchers.is_watched(id));
            (events, result)
        })
        .await
        .map_err(|e| Poison::event(first, format!("the apply task failed: {e}")))
    }

    /// After a commit: switch a finished rebuild in, wake queries, feed watchers.
    fn committed(&mut self, rows: Vec<OrderRow>, checkpoint: Checkpoint) -> Result<(), Poison> {
        if !self.serving() {
            let served = self.status.snapshot().applied_position;
            if checkpoint.position < served {
                return Ok(());
            }
            let old = self
                .store
                .switch_to(&self.target)
                .map_err(|e: StoreError| {
                    Poison::storage(
                        checkpoint.position + 1,
                        format!("cannot switch to the rebuilt read models: {e}"),
                    )
                })?;
            self.retired = Some(old);
            tracing::info!(
                generation = self.target.number(),
                position = checkpoint.position,
                "rebuild caught up; now answering from the rebuilt read models"
            );
            // Watchers have seen everything up to `served` from the old trees.
            let rows: Vec<_> = rows
                .into_iter()
                .filter(|r| r.last_position > served)
                .collect();
            self.status.applied(checkpoint);
            self.watchers.notify(&rows);
            return Ok(());
        }
        self.status.applied(checkpoint);
        self.watchers.notify(&rows);
        Ok(())
    }

    fn stop(&self, poison: Poison) {
        if poison.storage {
            // Queries waiting beyond it fail now; the service stops.
            self.status.stop(
                poison.position,
                format!("storage failure: {}", poison.error),
            );
            self.failure.set(poison.error);
            return;
        }
        tracing::error!(
            position = poison.position,
            error = %poison.error,
            "applying stopped at an event that cannot be applied; queries are answered from the last good state"
        );
        self.status.stop(poison.position, poison.error);
    }
}

/// Takes the events in order. Stops at the first one that cannot be read or
/// does not follow the previous one (`next` is the position expected next).
fn decode(batch: Vec<Received>, next: &mut u64) -> (Vec<RecordedEvent>, Option<Poison>) {
    let mut out = Vec::with_capacity(batch.len());
    for received in batch {
        let position = received.position;
        if position < *next {
            tracing::warn!(position, "event received twice; ignored");
            continue;
        }
        if position > *next {
            let poison = Poison::event(
                *next,
                format!(
                    "the event stream skipped from position {} to {position}",
                    *next
                ),
            );
            return (out, Some(poison));
        }
        match received.event {
            Ok(event) => {
                out.push(event);
                *next += 1;
            }
            Err(e) => {
                let poison = Poison::event(
                    position,
                    format!("event at position {position} cannot be read: {e}"),
                );
                return (out, Some(poison));
            }
        }
    }
    (out, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(position: u64) -> Received {
        Received::from(envelope_of(position))
    }

    fn envelope_of(position: u64) -> pb::EventEnvelope {
        pb::EventEnvelope {
            position,
            event_id: format!("e{position}"),
            order_id: "o".to_owned(),
            version: position,
            occurred_at: Some(prost_types::Timestamp::default()),
            command_id: String::new(),
            event: Some(pb::event_envelope::Event::OrderShipped(pb::OrderShipped {
                customer_id: "c".to_owned(),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn decoding_stops_at_an_unknown_event_or_a_gap() {
        let mut next = 1;
        let mut unknown = envelope_of(3);
        unknown.event = None;
        let unknown = Received::from(unknown);
        let (events, poison) = decode(
            vec![envelope(1), envelope(2), unknown, envelope(4)],
            &mut next,
        );
        assert_eq!(events.len(), 2);
        let poison = poison.unwrap();
        assert_eq!(poison.position, 3);
        assert!(poison.error.contains("position 3"), "{}", poison.error);

        let mut next = 1;
        let (events, poison) = decode(vec![envelope(1), envelope(1), envelope(3)], &mut next);
        assert_eq!(events.len(), 1);
        assert_eq!(poison.unwrap().position, 2);
    }
}

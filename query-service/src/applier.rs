//! The single writer of the read models: takes the events the subscriber
//! received, applies them in batches (one atomic sled batch each, checkpoint
//! included), then wakes waiting queries and watchers. Stops at the first event
//! it cannot apply and reports it, keeping the last good state served, and
//! waits there for the operator (`admin.rs`): skipping the event parks it
//! (`parking.rs`) and applying goes on. It also pauses and resumes, re-applies
//! parked events, and starts rebuilds while serving, each on request
//! (`Control`), between batches.
//!
//! A storage failure (a sled write or flush error, which sled makes permanent
//! for the process) is not a poison event: it is published (`Failure`) so the
//! service reports NOT_SERVING and exits non-zero, and is restarted on its
//! storage (crash-only); it resumes from its last durable checkpoint.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prost::Message;
use shared::domain::{RecordedEvent, Timestamp};
use shared::proto as pb;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use crate::admin::{AdminError, Control, RebuildStarted, Retried};
use crate::parking::{ParkedEvent, SkipKind, SkipRecord};
use crate::read_models::checkpoint::Checkpoint;
use crate::read_models::order_view::OrderRow;
use crate::status::ProjectionStatus;
use crate::storage::StoreError;
use crate::store::{ApplyError, Generation, Store};
use crate::watchers::Watchers;

/// How often a rebuild logs its progress.
const REBUILD_LOG_EVERY: Duration = Duration::from_secs(5);

/// How often the store is flushed. sled runs without its own flusher
/// (`store::open_sled`), so this is what writes the read models out between
/// shutdowns (a crash loses at most this much applying, which the replica
/// then does again from the log), and a failed flush is seen even when no
/// event arrives to be written.
const FLUSH_CHECK_EVERY: Duration = Duration::from_secs(1);

/// Batches of at most this many events are applied on the async worker (the
/// live tail: tens of microseconds of sled inserts); larger ones on the
/// blocking pool.
const INLINE_APPLY_EVENTS: usize = 16;

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

/// An event as the subscriber hands it over: already read from its envelope
/// (on the subscriber's task, so not on the applier's path), or why it cannot be.
pub struct Received {
    pub position: u64,
    /// The event, or why it cannot be read and the envelope as received
    /// (kept to be parked).
    pub event: Result<RecordedEvent, (String, Box<pb::EventEnvelope>)>,
    /// The trace context of the command that caused it, when it had one.
    pub trace: Option<pb::EventMetadata>,
}

impl From<pb::EventEnvelope> for Received {
    fn from(mut envelope: pb::EventEnvelope) -> Self {
        let position = envelope.position;
        match RecordedEvent::try_from(&envelope) {
            Ok(event) => Received {
                position,
                event: Ok(event),
                trace: envelope.metadata.take(),
            },
            Err(e) => Received {
                position,
                trace: envelope.metadata.clone(),
                event: Err((e.to_string(), Box::new(envelope))),
            },
        }
    }
}

/// The most commands' traces an `apply` span links to.
const MAX_SPAN_LINKS: usize = 32;

/// With OTLP on, the span of applying `batch`: a trace of its own, linked to
/// the traces of the commands whose events it holds. Disabled otherwise.
fn apply_span(batch: &[Received]) -> tracing::Span {
    if !shared::telemetry::otlp_enabled() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        parent: None,
        "apply",
        events = batch.len(),
        first_position = batch.first().map_or(0, |r| r.position),
        last_position = batch.last().map_or(0, |r| r.position),
    );
    let traces = batch.iter().filter_map(|r| r.trace.as_ref());
    shared::telemetry::link_to(
        &span,
        traces.map(|t| (t.traceparent.as_str(), t.tracestate.as_str())),
        MAX_SPAN_LINKS,
    );
    span
}

/// An event applying stopped at: its position, why, the event as received
/// (`None`: it never arrived, the stream skipped it), and what was received
/// after it.
struct EventStop {
    position: u64,
    error: String,
    envelope: Option<pb::EventEnvelope>,
    rest: Vec<Received>,
}

/// Where applying is stopped, waiting for the operator.
struct StoppedAt {
    position: u64,
    error: String,
    envelope: Option<pb::EventEnvelope>,
}

/// Where a rebuild asks the subscriber to subscribe again: after `after`,
/// delivering into `events` (the applier reads the new channel from then on).
pub struct Resubscribe {
    pub after: u64,
    pub events: mpsc::Sender<Received>,
}

/// Events received but not yet applied; the subscriber waits when it is full.
pub const EVENT_BUFFER: usize = 4096;

/// Why applying cannot go on: a storage failure (`storage`; the service
/// stops), or an event that cannot be applied.
struct Poison {
    position: u64,
    error: String,
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
    /// `--park-after-stops`: park an event after it has stopped applying this
    /// many times (across restarts); 0: never.
    pub park_after_stops: u32,
    /// Requests of `ProjectionAdminService`.
    pub control: mpsc::Receiver<Control>,
    /// Where a rebuild started at runtime asks the subscriber to start over.
    pub resubscribe: mpsc::Sender<Resubscribe>,
    /// Ends the wait of a paused or stopped applier.
    pub shutdown: watch::Receiver<bool>,
}

/// What the applier loop holds between batches.
struct Cursor {
    /// The position expected next.
    next: u64,
    /// Received, not applied yet (the rest of a batch after a stop).
    pending: VecDeque<Received>,
    stopped: Option<StoppedAt>,
    paused: bool,
    /// The positions parked now (a rebuild skips them again).
    parked: BTreeSet<u64>,
}

/// Why a batch did not apply in full.
enum Halt {
    Storage(Poison),
    Event(Box<EventStop>),
}

impl From<Poison> for Halt {
    fn from(poison: Poison) -> Self {
        if poison.storage {
            Halt::Storage(poison)
        } else {
            Halt::Event(Box::new(EventStop {
                position: poison.position,
                error: poison.error,
                envelope: None,
                rest: Vec::new(),
            }))
        }
    }
}

fn event_type(envelope: &pb::EventEnvelope) -> String {
    RecordedEvent::try_from(envelope).map_or_else(
        |_| "unknown".to_owned(),
        |event| event.event.name().to_owned(),
    )
}

impl Applier {
    /// Applies events from `events` until the channel closes (shutdown), or,
    /// while paused or stopped at an event, until `shutdown`; answers
    /// `control` requests between batches. `start` is the target generation's
    /// checkpoint. Returns early only on a storage failure.
    pub async fn run(mut self, start: Checkpoint, mut events: mpsc::Receiver<Received>) {
        let parked = match self.store.parking().parked_positions() {
            Ok(parked) => parked,
            Err(e) => {
                return self.fail(Poison::storage(
                    start.position + 1,
                    format!("reading the parked events: {e}"),
                ))
            }
        };
        let mut cursor = Cursor {
            next: start.position + 1,
            pending: VecDeque::new(),
            stopped: None,
            paused: false,
            parked,
        };
        self.publish_parking();
        if !self.serving() {
            self.status.set_rebuild(Some(start.position));
        }
        let mut last_log = Instant::now();
        let store = Arc::clone(&self.store);
        let writing = store.writing().await;
        if let Err(poison) = self.committed(Vec::new(), start) {
            return self.fail(poison);
        }
        drop(writing);
        let mut control_open = true;
        loop {
            let running = cursor.stopped.is_none() && !cursor.paused;
            if running && !cursor.pending.is_empty() {
                if let Err(poison) = self.apply_pending(&mut cursor).await {
                    return self.fail(poison);
                }
                self.drop_retired();
                if !self.serving() {
                    self.status.set_rebuild(Some(cursor.next - 1));
                    if last_log.elapsed() >= REBUILD_LOG_EVERY {
                        last_log = Instant::now();
                        let p = self.status.snapshot();
                        tracing::info!(
                            rebuilt_to = cursor.next - 1,
                            served_at = p.applied_position,
                            head = p.head_position,
                            "rebuilding read models"
                        );
                    }
                }
                continue;
            }
            let mut shutdown = self.shutdown.clone();
            let stopping = async move {
                let _ = shutdown.wait_for(|s| *s).await;
            };
            tokio::select! {
                biased;
                control = self.control.recv(), if control_open => match control {
                    Some(control) => {
                        if let Err(poison) = self.handle(control, &mut cursor, &mut events).await {
                            return self.fail(poison);
                        }
                    }
                    None => control_open = false,
                },
                received = events.recv(), if running => match received {
                    Some(first) => {
                        cursor.pending.push_back(first);
                        while cursor.pending.len() < self.max_batch {
                            match events.try_recv() {
                                Ok(event) => cursor.pending.push_back(event),
                                Err(_) => break,
                            }
                        }
                    }
                    None => break,
                },
                () = stopping, if !running => break,
            }
        }
        self.drop_retired();
        tracing::debug!("applier stopping");
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

    fn publish_parking(&self) {
        let parking = self.store.parking();
        self.status
            .set_parking(parking.parked_count(), parking.skipped_count());
    }

    /// Applies up to a batch of what is pending; at an event that cannot be
    /// applied, skips it again if it is parked (a rebuild), parks it if it has
    /// stopped applying `--park-after-stops` times, or else stops there.
    async fn apply_pending(&mut self, cursor: &mut Cursor) -> Result<(), Poison> {
        let n = cursor.pending.len().min(self.max_batch);
        let batch: Vec<Received> = cursor.pending.drain(..n).collect();
        let stop = match self.apply_batch(batch, &mut cursor.next).await {
            Ok(()) => return Ok(()),
            Err(Halt::Storage(poison)) => return Err(poison),
            Err(Halt::Event(stop)) => *stop,
        };
        cursor.next = stop.position;
        for received in stop.rest.into_iter().rev() {
            cursor.pending.push_front(received);
        }
        let position = stop.position;
        if cursor.parked.contains(&position) {
            // Parked when it was first met: a rebuild skips it again.
            let reason = "parked; skipped again while rebuilding".to_owned();
            self.skip(
                cursor,
                position,
                SkipKind::Rebuild,
                reason,
                &stop.error,
                None,
            )
            .await?;
            return Ok(());
        }
        if self.park_after_stops > 0 {
            if let Some(envelope) = &stop.envelope {
                let stops = self
                    .store
                    .parking()
                    .count_stop(position)
                    .await
                    .map_err(|e| Poison::storage(position, e.to_string()))?;
                if stops >= self.park_after_stops {
                    let reason = format!("auto-parked after {stops} stops");
                    tracing::error!(
                        position,
                        error = %stop.error,
                        "{reason} (--park-after-stops {}): the event is parked, NOT applied; see ListParkedEvents",
                        self.park_after_stops
                    );
                    metrics::counter!("orders_projection_auto_parked_total").increment(1);
                    self.skip(
                        cursor,
                        position,
                        SkipKind::Auto,
                        reason,
                        &stop.error,
                        Some(envelope),
                    )
                    .await?;
                    return Ok(());
                }
                tracing::warn!(
                    position,
                    stops,
                    park_after_stops = self.park_after_stops,
                    "stopped at this event before; it is parked after --park-after-stops stops"
                );
            }
        }
        tracing::error!(
            position,
            error = %stop.error,
            "applying stopped at an event that cannot be applied; queries are answered from the last good state (ProjectionAdminService.SkipEvent parks it)"
        );
        self.status.stop(position, stop.error.clone());
        cursor.stopped = Some(StoppedAt {
            position,
            error: stop.error,
            envelope: stop.envelope,
        });
        Ok(())
    }

    /// Moves the checkpoint past `position` without applying it: parks the
    /// event (unless `kind` is a rebuild's, it is parked already) and records
    /// the skip, atomically and durably; then applying goes on.
    async fn skip(
        &mut self,
        cursor: &mut Cursor,
        position: u64,
        kind: SkipKind,
        reason: String,
        error: &str,
        envelope: Option<&pb::EventEnvelope>,
    ) -> Result<Option<ParkedEvent>, Poison> {
        // Moves the checkpoint: not while a snapshot is being copied.
        let _writing = self.store.writing().await;
        let at = now();
        let parked = envelope.map(|envelope| ParkedEvent {
            position,
            envelope: envelope.encode_to_vec(),
            order_id: envelope.order_id.clone(),
            event_type: event_type(envelope),
            reason: reason.clone(),
            error: error.to_owned(),
            parked_at: at,
            auto: kind == SkipKind::Auto,
            retries: 0,
            last_retry_at: None,
        });
        let record = SkipRecord {
            position,
            kind,
            reason,
            skipped_at: at,
        };
        let checkpoint = Checkpoint {
            position,
            applied_at: Some(at),
        };
        let store = Arc::clone(&self.store);
        let target = Arc::clone(&self.target);
        let to_park = parked.clone();
        let written = tokio::task::spawn_blocking(move || {
            target.skip(checkpoint, store.parking(), to_park.as_ref(), &record)
        })
        .await
        .map_err(|e| Poison::storage(position, format!("the skip task failed: {e}")))?;
        let stored = match written {
            Ok(()) => self.store.parking().flush().await,
            Err(e) => Err(e),
        };
        stored.map_err(|e| Poison::storage(position, format!("skipping: {e}")))?;
        if let Err(e) = self.store.parking().clear_stops(position) {
            tracing::warn!(error = %e, position, "cannot clear the stop count");
        }
        tracing::warn!(
            position,
            kind = ?kind,
            error,
            "event skipped: the checkpoint moved past it without applying it"
        );
        metrics::counter!("orders_projection_skipped_events_total").increment(1);
        cursor.parked.insert(position);
        cursor.stopped = None;
        cursor.next = position + 1;
        self.status.clear_stop();
        self.publish_parking();
        self.committed(Vec::new(), checkpoint)?;
        Ok(parked)
    }

    /// Answers one admin request.
    async fn handle(
        &mut self,
        control: Control,
        cursor: &mut Cursor,
        events: &mut mpsc::Receiver<Received>,
    ) -> Result<(), Poison> {
        let applied = || self.status.snapshot().applied_position;
        match control {
            Control::Pause(reply) => {
                let was = std::mem::replace(&mut cursor.paused, true);
                if !was {
                    tracing::warn!(
                        applied_position = applied(),
                        "applying paused (PauseProjection)"
                    );
                }
                self.status.set_paused(true);
                let _ = reply.send(Ok((was, applied())));
            }
            Control::Resume(reply) => {
                let was = std::mem::replace(&mut cursor.paused, false);
                if was {
                    tracing::info!(
                        applied_position = applied(),
                        "applying resumed (ResumeProjection)"
                    );
                }
                self.status.set_paused(false);
                let _ = reply.send(Ok((!was, applied())));
            }
            Control::Skip {
                position,
                reason,
                reply,
            } => {
                let answer = match &cursor.stopped {
                    None => Err(AdminError::NotStopped { position }),
                    Some(s) if s.position != position => Err(AdminError::NotTheStoppedEvent {
                        position,
                        stopped: s.position,
                    }),
                    Some(s) if s.envelope.is_none() => Err(AdminError::NothingToPark { position }),
                    Some(_) => {
                        let stopped = cursor.stopped.take().expect("checked above");
                        let parked = self
                            .skip(
                                cursor,
                                position,
                                SkipKind::Operator,
                                reason,
                                &stopped.error,
                                stopped.envelope.as_ref(),
                            )
                            .await?;
                        Ok(parked.expect("an event with its envelope is parked"))
                    }
                };
                let _ = reply.send(answer);
            }
            Control::Retry { positions, reply } => {
                let answer = self.retry(cursor, positions).await?;
                let _ = reply.send(answer);
            }
            Control::StartRebuild(reply) => {
                let answer = self.start_rebuild(cursor, events).await?;
                let _ = reply.send(answer);
            }
        }
        Ok(())
    }

    /// Re-applies parked events in position order. Each is applied only if it
    /// fits the order's row as it is now (the projection checks the order's
    /// version), so an event is never applied out of order over later ones.
    async fn retry(
        &mut self,
        cursor: &mut Cursor,
        positions: Vec<u64>,
    ) -> Result<Result<Retried, AdminError>, Poison> {
        if self.store.is_rebuilding() {
            return Ok(Err(AdminError::Precondition(
                "a rebuild is running: retry parked events once it has switched in".to_owned(),
            )));
        }
        let mut wanted: Vec<u64> = if positions.is_empty() {
            cursor.parked.iter().copied().collect()
        } else {
            positions
        };
        wanted.sort_unstable();
        wanted.dedup();
        if let Some(unknown) = wanted.iter().find(|p| !cursor.parked.contains(p)) {
            return Ok(Err(AdminError::NotParked(*unknown)));
        }
        // Writes the served read models: not while a snapshot is being copied.
        let _writing = self.store.writing().await;
        let watchers = Arc::clone(&self.watchers);
        let _registrations = watchers.hold_registrations().await;
        let mut retried = Retried::default();
        for position in wanted {
            let storage = |e: StoreError| Poison::storage(position, e.to_string());
            let Some(mut parked) = self.store.parking().get(position).map_err(storage)? else {
                continue;
            };
            let event = pb::EventEnvelope::decode(parked.envelope.as_slice())
                .map_err(|e| e.to_string())
                .and_then(|envelope| {
                    RecordedEvent::try_from(&envelope)
                        .map_err(|e| format!("event at position {position} cannot be read: {e}"))
                });
            let outcome = match event {
                Err(error) => Err(error),
                Ok(event) => {
                    let store = Arc::clone(&self.store);
                    let target = Arc::clone(&self.target);
                    let watchers = Arc::clone(&self.watchers);
                    let applied = tokio::task::spawn_blocking(move || {
                        let checkpoint = target.checkpoint()?;
                        target.apply_parked(&event, checkpoint, store.parking(), |id| {
                            watchers.is_watched(id)
                        })
                    })
                    .await
                    .map_err(|e| {
                        Poison::storage(position, format!("the retry task failed: {e}"))
                    })?;
                    match applied {
                        Ok(rows) => Ok(rows),
                        Err(ApplyError::Store(e)) => return Err(storage(e)),
                        Err(e @ ApplyError::Projection { .. }) => Err(format!(
                            "event at position {position} cannot be applied: {e}"
                        )),
                    }
                }
            };
            match outcome {
                Ok(rows) => {
                    tracing::warn!(position, "parked event applied (RetryParkedEvents)");
                    cursor.parked.remove(&position);
                    self.watchers.notify(&rows);
                    retried.applied.push(position);
                }
                Err(error) => {
                    parked.error = error;
                    parked.retries = parked.retries.saturating_add(1);
                    parked.last_retry_at = Some(now());
                    self.store.parking().update(&parked).map_err(storage)?;
                    retried.still_parked.push(parked);
                }
            }
        }
        self.store
            .parking()
            .flush()
            .await
            .map_err(|e| Poison::storage(0, e.to_string()))?;
        self.publish_parking();
        Ok(Ok(retried))
    }

    /// Starts a rebuild while serving: a fresh generation filled from
    /// position 0 by a new subscription; the served one keeps answering until
    /// the rebuild reaches it (`committed` switches).
    async fn start_rebuild(
        &mut self,
        cursor: &mut Cursor,
        events: &mut mpsc::Receiver<Received>,
    ) -> Result<Result<RebuildStarted, AdminError>, Poison> {
        let precondition = |why: &str| Ok(Err(AdminError::Precondition(why.to_owned())));
        if cursor.stopped.is_some() || self.status.snapshot().stopped.is_some() {
            return precondition(
                "applying is stopped: skip the event it is stopped at (SkipEvent) first, or restart with --rebuild",
            );
        }
        if cursor.paused {
            return precondition("applying is paused: resume it (ResumeProjection) first");
        }
        let generation = match self.store.start_rebuild() {
            Ok(Some(generation)) => generation,
            Ok(None) => {
                return precondition("a rebuild is already running (see GetProjectionStatus)")
            }
            Err(e) => {
                return Err(Poison::storage(
                    cursor.next,
                    format!("starting a rebuild: {e}"),
                ))
            }
        };
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        // Sent before the old channel is dropped, so the subscriber finds it
        // when its next send fails.
        if self
            .resubscribe
            .send(Resubscribe {
                after: 0,
                events: tx,
            })
            .await
            .is_err()
        {
            return Ok(Err(AdminError::ShuttingDown));
        }
        *events = rx;
        cursor.pending.clear();
        cursor.next = 1;
        self.target = generation;
        self.status.set_rebuild(Some(0));
        let served_position = self.status.snapshot().applied_position;
        tracing::warn!(
            generation = self.target.number(),
            served_position,
            "rebuild started (StartRebuild): building the read models from position 0; answering from the current ones until it catches up"
        );
        Ok(Ok(RebuildStarted {
            generation: self.target.number(),
            served_position,
        }))
    }

    /// Applies `batch` (consecutive positions from `next`); on an event that
    /// cannot be read or applied, still commits those before it.
    async fn apply_batch(&mut self, batch: Vec<Received>, next: &mut u64) -> Result<(), Halt> {
        let span = apply_span(&batch);
        let (decoded, decode_stop) = decode(batch, next);
        if decoded.is_empty() {
            return decode_stop.map_or(Ok(()), |stop| Err(Halt::Event(Box::new(stop))));
        }
        match self.apply(decoded).instrument(span).await {
            Ok(()) => decode_stop.map_or(Ok(()), |stop| Err(Halt::Event(Box::new(stop)))),
            Err(ApplyHalt::Poison(poison)) => Err(poison.into()),
            Err(ApplyHalt::Event {
                position,
                error,
                event,
                after,
            }) => {
                // What follows the failed event: the rest of the decoded
                // events, then what decoding stopped at, and after it.
                let mut rest: Vec<Received> = after
                    .into_iter()
                    .map(|e| Received {
                        position: e.position,
                        event: Ok(e),
                        trace: None,
                    })
                    .collect();
                if let Some(stop) = decode_stop {
                    if let Some(envelope) = stop.envelope {
                        rest.push(Received::from(envelope));
                    }
                    rest.extend(stop.rest);
                }
                Err(Halt::Event(Box::new(EventStop {
                    position,
                    error,
                    envelope: Some(pb::EventEnvelope::from(&*event)),
                    rest,
                })))
            }
        }
    }

    /// Applies consecutive events; on a poison event, still commits those before it.
    async fn apply(&mut self, events: Vec<RecordedEvent>) -> Result<(), ApplyHalt> {
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
                Ok(self.committed(
                    rows,
                    Checkpoint {
                        position,
                        applied_at,
                    },
                )?)
            }
            Err(ApplyError::Projection { index, error }) => {
                let position = events[index].position;
                let mut good = events;
                let mut after = good.split_off(index);
                let event = Box::new(after.remove(0));
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
                Err(ApplyHalt::Event {
                    position,
                    error: format!("event at position {position} cannot be applied: {error}"),
                    event,
                    after,
                })
            }
            Err(ApplyError::Store(e)) => {
                Err(Poison::storage(events.first().map_or(0, |e| e.position), e.to_string()).into())
            }
        }
    }

    /// sled writes block: a large batch (catch-up) runs off the async
    /// workers; a small one (the live tail) runs here, since handing it to the
    /// blocking pool and back costs two thread wake-ups, more than its writes.
    async fn apply_blocking(
        &self,
        events: Vec<RecordedEvent>,
        applied_at: Option<Timestamp>,
    ) -> Result<(Vec<RecordedEvent>, Result<Vec<OrderRow>, ApplyError>), Poison> {
        let target = Arc::clone(&self.target);
        let watchers = Arc::clone(&self.watchers);
        if events.len() <= INLINE_APPLY_EVENTS {
            let result = target.apply(&events, applied_at, |id| watchers.is_watched(id));
            return Ok((events, result));
        }
        let first = events.first().map_or(0, |e| e.position);
        tokio::task::spawn_blocking(move || {
            let result = target.apply(&events, applied_at, |id| watchers.is_watched(id));
            (events, result)
        })
        .await
        .map_err(|e| Poison::storage(first, format!("the apply task failed: {e}")))
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
            self.status.set_rebuild(None);
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

    /// A storage failure: reported, and the service stops.
    fn fail(&self, poison: Poison) {
        // Queries waiting beyond it fail now; the service stops.
        self.status.stop(
            poison.position,
            format!("storage failure: {}", poison.error),
        );
        self.failure.set(poison.error);
    }
}

/// Why `Applier::apply` did not apply every event.
enum ApplyHalt {
    Poison(Poison),
    /// `event` (at `position`) does not fit; `after` are the events after it.
    Event {
        position: u64,
        error: String,
        event: Box<RecordedEvent>,
        after: Vec<RecordedEvent>,
    },
}

impl From<Poison> for ApplyHalt {
    fn from(poison: Poison) -> Self {
        ApplyHalt::Poison(poison)
    }
}

/// Takes the events in order. Stops at the first one that cannot be read or
/// does not follow the previous one (`next` is the position expected next).
fn decode(batch: Vec<Received>, next: &mut u64) -> (Vec<RecordedEvent>, Option<EventStop>) {
    let mut out = Vec::with_capacity(batch.len());
    let mut batch = batch.into_iter();
    while let Some(received) = batch.next() {
        let position = received.position;
        if position < *next {
            tracing::warn!(position, "event received twice; ignored");
            continue;
        }
        if position > *next {
            let stop = EventStop {
                position: *next,
                error: format!(
                    "the event stream skipped from position {} to {position}",
                    *next
                ),
                envelope: None,
                rest: std::iter::once(received).chain(batch).collect(),
            };
            return (out, Some(stop));
        }
        match received.event {
            Ok(event) => {
                out.push(event);
                *next += 1;
            }
            Err((e, envelope)) => {
                let stop = EventStop {
                    position,
                    error: format!("event at position {position} cannot be read: {e}"),
                    envelope: Some(*envelope),
                    rest: batch.collect(),
                };
                return (out, Some(stop));
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
            metadata: None,
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
        // The unreadable event is kept to be parked, and what follows it.
        assert_eq!(poison.envelope.as_ref().map(|e| e.position), Some(3));
        assert_eq!(poison.rest.len(), 1);

        let mut next = 1;
        let (events, poison) = decode(vec![envelope(1), envelope(1), envelope(3)], &mut next);
        assert_eq!(events.len(), 1);
        let gap = poison.unwrap();
        assert_eq!(gap.position, 2);
        assert!(gap.envelope.is_none());
        assert_eq!(gap.rest.len(), 1);
    }

    #[test]
    fn a_received_event_keeps_its_trace_context() {
        let metadata = pb::EventMetadata {
            traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            tracestate: String::new(),
        };
        let mut traced = envelope_of(1);
        traced.metadata = Some(metadata.clone());
        assert_eq!(Received::from(traced).trace, Some(metadata));
        assert_eq!(envelope(2).trace, None);
    }
}

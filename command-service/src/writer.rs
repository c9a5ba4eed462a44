//! The single writer: decides commands against the current aggregates and
//! commits them in groups, one atomic sled batch (`Tree::apply_batch`) per
//! group.
//!
//! Runs on its own OS thread (sled calls block), with a flusher thread behind
//! it: while the flusher makes group N durable, the writer already decides and
//! writes group N+1. Every reply (acknowledgement or refusal, since a refusal
//! may rest on group N's state) is sent by the flusher only after a flush that
//! began after its group was decided, and the new head position is published
//! only then, so neither clients nor subscribers ever see a write that a crash
//! could undo.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use shared::codec;
use shared::domain::{
    CommandId, CommandRequest, Order, OrderId, RecordedEvent, Submission, Timestamp,
};
use shared::proto as pb;
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::CommandError;
use crate::store::{CommandResult, Store, StoredCommand, WriteBatch};

type Reply = oneshot::Sender<Result<CommandResult, CommandError>>;

struct Job {
    submission: Submission,
    reply: Reply,
}

/// The handle request handlers use to submit commands to the writer.
#[derive(Clone)]
pub struct WriterHandle {
    jobs: mpsc::Sender<Job>,
}

impl WriterHandle {
    /// Submits a command and waits until it is durably committed or refused.
    pub async fn submit(&self, submission: Submission) -> Result<CommandResult, CommandError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { submission, reply })
            .await
            .map_err(|_| CommandError::ShuttingDown)?;
        answer.await.map_err(|_| CommandError::ShuttingDown)?
    }
}

/// Starts the writer thread. It runs until every `WriterHandle` is dropped, then
/// flushes and ends; join the returned handle to wait for that.
pub fn spawn(
    store: Store,
    max_batch: usize,
    head: watch::Sender<u64>,
) -> Result<(WriterHandle, std::thread::JoinHandle<()>), CommandError> {
    let next_position = store.head()? + 1;
    let (jobs, queue) = mpsc::channel(max_batch.max(64) * 4);
    let (decided, flusher_queue) = std::sync::mpsc::sync_channel(FLUSH_QUEUE);
    let flusher = Flusher {
        store: store.clone(),
        queue: flusher_queue,
        head,
    };
    let spawn_error = |e| CommandError::Storage(sled::Error::Io(e).into());
    let flusher = std::thread::Builder::new()
        .name("command-flusher".into())
        .spawn(move || flusher.run())
        .map_err(spawn_error)?;
    let writer = Writer {
        store,
        queue,
        max_batch,
        decided,
        next_position,
    };
    let thread = std::thread::Builder::new()
        .name("command-writer".into())
        .spawn(move || {
            writer.run();
            // The writer dropped its end of the flush queue: the flusher
            // answers what is left and ends.
            if flusher.join().is_err() {
                tracing::error!("the flusher thread panicked");
            }
        })
        .map_err(spawn_error)?;
    Ok((WriterHandle { jobs }, thread))
}

/// Groups decided and written but not yet flushed; the writer waits when this
/// many are queued.
const FLUSH_QUEUE: usize = 8;

/// A decided group on its way to the flusher.
struct Decided {
    /// The last position the group wrote, if it wrote any.
    last_position: Option<u64>,
    outcomes: Vec<(Reply, Result<CommandResult, CommandError>)>,
}

/// Makes written groups durable and only then answers them.
struct Flusher {
    store: Store,
    queue: std::sync::mpsc::Receiver<Decided>,
    head: watch::Sender<u64>,
}

impl Flusher {
    fn run(self) {
        while let Ok(first) = self.queue.recv() {
            // Everything queued so far shares one flush.
            let mut groups = vec![first];
            groups.extend(self.queue.try_iter());
            // Written but perhaps not durable when the flush fails: the
            // positions stay taken (a later flush may still persist them), and
            // nothing is acknowledged.
            match self.store.flush() {
                Ok(()) => {
                    if let Some(last) = groups.iter().filter_map(|g| g.last_position).max() {
                        self.head.send_replace(last);
                    }
                    for (reply, outcome) in groups.into_iter().flat_map(|g| g.outcomes) {
                        let _ = reply.send(outcome);
                    }
                }
                Err(e) => {
                    let commands: usize = groups.iter().map(|g| g.outcomes.len()).sum();
                    tracing::error!(error = %e, commands, "flush failed");
                    for (reply, _) in groups.into_iter().flat_map(|g| g.outcomes) {
                        let _ = reply.send(Err(CommandError::Storage(clone_store_error(&e))));
                    }
                }
            }
        }
        if let Err(e) = self.store.flush() {
            tracing::error!(error = %e, "final flush failed");
        }
        tracing::info!("writer stopped");
    }
}

struct Writer {
    store: Store,
    queue: mpsc::Receiver<Job>,
    max_batch: usize,
    /// Where decided groups go to be flushed and answered.
    decided: std::sync::mpsc::SyncSender<Decided>,
    /// The position the next event gets.
    next_position: u64,
}

/// What a group of commands has decided but not yet written, so that later
/// commands of the same group see the earlier ones.
#[derive(Default)]
struct Pending {
    orders: HashMap<OrderId, Order>,
    commands: HashMap<CommandId, StoredCommand>,
    batch: WriteBatch,
}

impl Writer {
    fn run(mut self) {
        let mut jobs = Vec::with_capacity(self.max_batch);
        while let Some(first) = self.queue.blocking_recv() {
            jobs.push(first);
            while jobs.len() < self.max_batch {
                match self.queue.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            #[allow(clippy::cast_precision_loss)] // at most --max-batch
            metrics::histogram!("orders_commit_batch_size").record(jobs.len() as f64);
            self.commit_group(&mut jobs);
        }
    }

    fn commit_group(&mut self, jobs: &mut Vec<Job>) {
        let now = now();
        let mut pending = Pending::default();
        let first_position = self.next_position;
        let outcomes: Vec<(Reply, Result<CommandResult, CommandError>)> = jobs
            .drain(..)
            .map(|job| {
                let outcome = self.decide(&mut pending, job.submission, now);
                (job.reply, outcome)
            })
            .collect();
        pending.batch.orders.extend(pending.orders.drain());
        if pending.batch.is_empty() {
            // Nothing to write, but the answers may rest on state the flusher
            // has not made durable yet: they queue behind it like any group.
            self.hand_over(None, outcomes);
        } else if let Err(e) = self.store.write(&pending.batch) {
            // The batch wrote nothing: the positions are free again, and
            // the refusal needs no flush.
            self.next_position = first_position;
            tracing::error!(error = %e, commands = outcomes.len(), "group commit failed");
            for (reply, _) in outcomes {
                let _ = reply.send(Err(CommandError::Storage(clone_store_error(&e))));
            }
        } else {
            self.hand_over(Some(self.next_position - 1), outcomes);
        }
    }

    fn hand_over(
        &self,
        last_position: Option<u64>,
        outcomes: Vec<(Reply, Result<CommandResult, CommandError>)>,
    ) {
        let group = Decided {
            last_position,
            outcomes,
        };
        if let Err(std::sync::mpsc::SendError(group)) = self.decided.send(group) {
            // Only if the flusher thread died: nothing can be made durable.
            tracing::error!("the flusher is gone");
            for (reply, _) in group.outcomes {
                let _ = reply.send(Err(CommandError::ShuttingDown));
            }
        }
    }

    /// Decides one command against the stored state plus what this group has decided.
    fn decide(
        &mut self,
        pending: &mut Pending,
        submission: Submission,
        now: Timestamp,
    ) -> Result<CommandResult, CommandError> {
        let Submission {
            request,
            command_id,
        } = submission;
        let fingerprint = codec::encode_snapshot(&request);
        if let Some(id) = &command_id {
            let earlier = match pending.commands.get(id) {
                Some(stored) => Some(stored.clone()),
                None => self.store.load_command(id)?,
            };
            if let Some(stored) = earlier {
                return if stored.fingerprint == fingerprint {
                    Ok(stored.result)
                } else {
                    Err(CommandError::CommandIdReused(id.clone()))
                };
            }
        }
        let CommandRequest {
            order_id,
            expected_version,
            command,
        } = request;
        let order_id = order_id.unwrap_or_else(generate_order_id);
        let mut order = match pending.orders.get(&order_id) {
            Some(order) => order.clone(),
            None => self.store.load_order(&order_id)?,
        };
        let events = order
            .handle(&command, expected_version, now)
            .map_err(|e| CommandError::from_domain(&order_id, e))?;
        for event in events {
            order.apply(&event);
            let recorded = RecordedEvent {
                position: self.next_position,
                event_id: uuid::Uuid::now_v7().simple().to_string(),
                order_id: order_id.clone(),
                version: order.version,
                occurred_at: now,
                command_id: command_id.clone(),
                event,
            };
            let envelope = pb::EventEnvelope::from(&recorded);
            pending.batch.push_event(recorded.position, &envelope);
            self.next_position += 1;
        }
        let result = CommandResult {
            order_id: order_id.clone(),
            version: order.version,
            position: self.next_position - 1,
        };
        pending.orders.insert(order_id, order);
        if let Some(id) = command_id {
            let stored = StoredCommand {
                fingerprint,
                result: result.clone(),
            };
            pending.batch.commands.push((id.clone(), stored.clone()));
            pending.commands.insert(id, stored);
        }
        Ok(result)
    }
}

fn clone_store_error(e: &crate::error::StoreError) -> crate::error::StoreError {
    // sled errors are not Clone; the message is what callers and logs need.
    crate::error::StoreError::Sled(sled::Error::Unsupported(e.to_string()))
}

fn now() -> Timestamp {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    Timestamp::from_micros(micros)
}

/// A fresh order id: a UUIDv7 in simple form (32 hex digits, time-ordered).
fn generate_order_id() -> OrderId {
    OrderId::parse("order_id", &uuid::Uuid::now_v7().simple().to_string())
        .expect("a uuid is a valid order id")
}

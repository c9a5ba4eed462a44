//! The single writer and the threads behind it: group commit to stable storage.
//!
//! - The **writer** thread drains up to `--max-batch` jobs, decides them in
//!   order (`decide::Group`), and commits the group: one record appended to
//!   the write-ahead log and applied to sled (`Store::commit`, no flush). It
//!   then hands the group to the syncer and goes on with the next one.
//! - The **syncer** thread takes every group handed over so far, fdatasyncs
//!   the log segments they were appended to (one sync for all of them), then
//!   publishes the new head position and answers. No reply leaves, not even a
//!   refusal (which may rest on an earlier group's state), and no subscriber
//!   sees a position, before a sync that started after its group was written
//!   has completed.
//! - The **checkpointer** thread makes sled durable about once a second
//!   (`Store::checkpoint`) so that old log segments can go.
//!
//! A storage error (a write, a sync, a checkpoint) is final for the process:
//! after a failed fdatasync the kernel may have dropped the dirty pages, so a
//! later sync could succeed without them. The group and every later one are
//! answered UNAVAILABLE, nothing more is written, and the failure is
//! published (`Failure`) so the service reports NOT_SERVING and exits: it is
//! restarted on its storage and recovers from what is on disk.

use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shared::domain::{Submission, Timestamp};
use tokio::sync::{mpsc, oneshot, watch};

use crate::decide::Group;
use crate::error::{CommandError, StoreError};
use crate::store::{CommandResult, Store};
use crate::wal::Ticket;

type Reply = oneshot::Sender<Result<CommandResult, CommandError>>;
type Outcome = (Reply, Result<CommandResult, CommandError>);

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

/// The first storage failure of the process, once there is one.
#[derive(Clone)]
pub struct Failure {
    first: Arc<Mutex<Option<String>>>,
    published: watch::Sender<Option<String>>,
}

impl Failure {
    fn new() -> (Self, watch::Receiver<Option<String>>) {
        let (published, watched) = watch::channel(None);
        let failure = Failure {
            first: Arc::new(Mutex::new(None)),
            published,
        };
        (failure, watched)
    }

    /// Records a failure (the first one is kept) and publishes it.
    fn set(&self, what: &str, error: &StoreError) {
        let mut first = self.first.lock().expect("failure");
        if first.is_none() {
            let message = format!("{what}: {error}");
            tracing::error!("storage failure, no further command is accepted: {message}");
            *first = Some(message.clone());
            self.published.send_replace(Some(message));
        }
    }

    fn get(&self) -> Option<String> {
        self.first.lock().expect("failure").clone()
    }

    fn refusal(&self) -> CommandError {
        CommandError::Storage(StoreError::Failed(self.get().unwrap_or_default()))
    }
}

/// What `spawn` starts: the handle, the thread to join at shutdown, and the
/// storage failure signal (`Some(message)` once storage has failed).
pub struct Spawned {
    pub handle: WriterHandle,
    pub thread: std::thread::JoinHandle<()>,
    pub failure: watch::Receiver<Option<String>>,
}

/// Starts the writer, syncer and checkpointer threads. They run until every
/// `WriterHandle` is dropped, then answer what is left, checkpoint and end;
/// join `Spawned::thread` to wait for that.
pub fn spawn(
    store: Store,
    max_batch: usize,
    head: watch::Sender<u64>,
) -> Result<Spawned, CommandError> {
    let next_position = store.head()? + 1;
    let (failure, watched) = Failure::new();
    let (jobs, queue) = mpsc::channel(max_batch.max(64) * 4);
    let (written, syncer_queue) = std_mpsc::sync_channel(SYNC_QUEUE);
    let (stop_checkpoints, checkpoint_stop) = std_mpsc::channel::<()>();
    let spawn_error = |e| CommandError::Storage(sled::Error::Io(e).into());
    let syncer = Syncer {
        queue: syncer_queue,
        head,
        failure: failure.clone(),
    };
    let syncer = std::thread::Builder::new()
        .name("command-syncer".into())
        .spawn(move || syncer.run())
        .map_err(spawn_error)?;
    let checkpointer = Checkpointer {
        store: store.clone(),
        stop: checkpoint_stop,
        failure: failure.clone(),
    };
    let checkpointer = std::thread::Builder::new()
        .name("command-checkpoint".into())
        .spawn(move || checkpointer.run())
        .map_err(spawn_error)?;
    let writer = Writer {
        store,
        queue,
        max_batch,
        written,
        next_position,
        failure,
    };
    let thread = std::thread::Builder::new()
        .name("command-writer".into())
        .spawn(move || {
            writer.run();
            // The writer dropped its end of the sync queue: the syncer
            // answers what is left and ends; then the last checkpoint.
            if syncer.join().is_err() {
                tracing::error!("the syncer thread panicked");
            }
            drop(stop_checkpoints);
            if checkpointer.join().is_err() {
                tracing::error!("the checkpoint thread panicked");
            }
            tracing::info!("writer stopped");
        })
        .map_err(spawn_error)?;
    Ok(Spawned {
        handle: WriterHandle { jobs },
        thread,
        failure: watched,
    })
}

/// Groups written but not yet synced; the writer waits when this many are queued.
const SYNC_QUEUE: usize = 8;
/// How often sled is made durable so that log segments can be released.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// A group on its way to the syncer.
struct Written {
    /// The log segment the group was appended to and its last position, if
    /// it wrote anything.
    appended: Option<(Ticket, u64)>,
    outcomes: Vec<Outcome>,
}

struct Writer {
    store: Store,
    queue: mpsc::Receiver<Job>,
    max_batch: usize,
    /// Where written groups go to be synced and answered.
    written: std_mpsc::SyncSender<Written>,
    /// The position the next event gets.
    next_position: u64,
    failure: Failure,
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
            if self.failure.get().is_some() {
                for job in jobs.drain(..) {
                    let _ = job.reply.send(Err(self.failure.refusal()));
                }
                continue;
            }
            self.commit_group(&mut jobs);
        }
    }

    fn commit_group(&mut self, jobs: &mut Vec<Job>) {
        let now = now();
        let mut group = Group::new(self.next_position);
        let outcomes: Vec<Outcome> = jobs
            .drain(..)
            .map(|job| {
                let outcome = group.decide(&self.store, job.submission, now);
                (job.reply, outcome)
            })
            .collect();
        let appended = match group.finish() {
            // Nothing to write, but the answers may rest on state the syncer
            // has not made durable yet: they queue behind it like any group.
            None => None,
            Some(decided) => {
                let record = Store::record(
                    &decided.batch,
                    decided.first_position,
                    decided.last_position,
                );
                match self.store.commit(&record) {
                    Ok(ticket) => {
                        self.next_position = decided.last_position + 1;
                        Some((ticket, decided.last_position))
                    }
                    Err(e) => {
                        self.failure.set("group commit", &e);
                        for (reply, _) in outcomes {
                            let _ = reply.send(Err(self.failure.refusal()));
                        }
                        return;
                    }
                }
            }
        };
        let group = Written { appended, outcomes };
        if let Err(std_mpsc::SendError(group)) = self.written.send(group) {
            // Only if the syncer thread died: nothing can be made durable.
            tracing::error!("the syncer is gone");
            for (reply, _) in group.outcomes {
                let _ = reply.send(Err(CommandError::ShuttingDown));
            }
        }
    }
}

/// Makes written groups durable and only then answers them.
struct Syncer {
    queue: std_mpsc::Receiver<Written>,
    head: watch::Sender<u64>,
    failure: Failure,
}

impl Syncer {
    fn run(self) {
        while let Ok(first) = self.queue.recv() {
            // Everything queued so far shares one sync per segment.
            let mut groups = vec![first];
            groups.extend(self.queue.try_iter());
            match self.sync(&groups) {
                Ok(last) => {
                    if let Some(last) = last {
                        self.head.send_replace(last);
                    }
                    for (reply, outcome) in groups.into_iter().flat_map(|g| g.outcomes) {
                        let _ = reply.send(outcome);
                    }
                }
                Err(()) => {
                    for (reply, _) in groups.into_iter().flat_map(|g| g.outcomes) {
                        let _ = reply.send(Err(self.failure.refusal()));
                    }
                }
            }
        }
    }

    /// Syncs every segment the groups were appended to; the last position
    /// they wrote, if any. Once storage has failed, nothing is synced again.
    fn sync(&self, groups: &[Written]) -> Result<Option<u64>, ()> {
        if self.failure.get().is_some() {
            return Err(());
        }
        let mut synced: Vec<&Ticket> = Vec::new();
        let mut last = None;
        for (ticket, position) in groups.iter().filter_map(|g| g.appended.as_ref()) {
            if !synced.iter().any(|done| done.same_segment(ticket)) {
                let started = std::time::Instant::now();
                if let Err(e) = ticket.sync() {
                    self.failure
                        .set("fdatasync of the write-ahead log", &e.into());
                    return Err(());
                }
                metrics::histogram!("orders_wal_sync_seconds")
                    .record(started.elapsed().as_secs_f64());
                synced.push(ticket);
            }
            last = Some(*position);
        }
        Ok(last)
    }
}

/// Makes sled durable now and then, so the log segments it covers can go.
struct Checkpointer {
    store: Store,
    /// Disconnected when the writer has stopped: one last checkpoint, then end.
    stop: std_mpsc::Receiver<()>,
    failure: Failure,
}

impl Checkpointer {
    fn run(self) {
        let mut covered = self.store.written();
        loop {
            let stopping = matches!(
                self.stop.recv_timeout(CHECKPOINT_EVERY),
                Err(std_mpsc::RecvTimeoutError::Disconnected)
            );
            let written = self.store.written();
            if self.failure.get().is_none() && (written != covered || stopping) {
                match self.store.checkpoint() {
                    Ok(()) => covered = written,
                    Err(e) => self.failure.set("checkpoint", &e),
                }
            }
            if stopping {
                return;
            }
        }
    }
}

fn now() -> Timestamp {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    Timestamp::from_micros(micros)
}

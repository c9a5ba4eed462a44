//! The single writer: group commit to stable storage.
//!
//! The **writer** thread drains up to `--max-batch` jobs, decides them in
//! order (`decide::Group`), and commits the group (`Store::commit`): one
//! record appended to the write-ahead log, one fdatasync of the log file,
//! then the writes applied to sled. Only then does it publish the new head
//! position and answer. So no reply leaves, not even a refusal (which may rest
//! on an earlier group's state, and that is in sled only once synced), and no
//! subscriber sees a position, before a sync that started after its group was
//! written has completed. Commands that arrive during a sync wait and form
//! the next group: one sync per group, however many commands it holds.
//!
//! The **checkpointer** thread makes sled durable about once a second
//! (`Store::checkpoint`) so that old log segments can go.
//!
//! A storage error (a write, a sync, a checkpoint) is final for the process:
//! after a failed fdatasync the kernel may have dropped the dirty pages, so a
//! later sync could succeed without them. The group and every later one are
//! answered UNAVAILABLE, nothing more is written, and the failure is
//! published (`Failure`) so the service reports NOT_SERVING and exits: it is
//! restarted on its storage and recovers from what is on disk.

use std::sync::mpsc as std_mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shared::domain::{Submission, Timestamp};
use shared::proto as pb;
use shared::telemetry::TraceContext;
use tokio::sync::{mpsc, oneshot, watch};

use crate::decide::Group;
use crate::error::{CommandError, StoreError};
use crate::store::{CommandResult, Store};

type Reply = oneshot::Sender<Result<CommandResult, CommandError>>;
type Outcome = (Reply, Result<CommandResult, CommandError>);

struct Job {
    submission: Submission,
    /// The request's trace context, stored with the command's events.
    trace: Option<TraceContext>,
    reply: Reply,
}

/// The most commands' traces a `group_commit` span links to.
const MAX_SPAN_LINKS: usize = 32;

/// The handle request handlers use to submit commands to the writer.
#[derive(Clone)]
pub struct WriterHandle {
    jobs: mpsc::Sender<Job>,
}

impl WriterHandle {
    /// Submits a command and waits until it is durably committed or refused;
    /// `trace` is stored with its events.
    pub async fn submit(
        &self,
        submission: Submission,
        trace: Option<TraceContext>,
    ) -> Result<CommandResult, CommandError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job {
                submission,
                trace,
                reply,
            })
            .await
            .map_err(|_| CommandError::ShuttingDown)?;
        answer.await.map_err(|_| CommandError::ShuttingDown)?
    }
}

/// The first storage failure of the process, once there is one: kept in the
/// watch that publishes it.
#[derive(Clone)]
pub struct Failure {
    published: watch::Sender<Option<String>>,
}

impl Failure {
    fn new() -> (Self, watch::Receiver<Option<String>>) {
        let (published, watched) = watch::channel(None);
        (Failure { published }, watched)
    }

    /// Records a failure (the first one is kept) and publishes it.
    fn set(&self, what: &str, error: &StoreError) {
        self.published.send_if_modified(|first| {
            if first.is_some() {
                return false;
            }
            let message = format!("{what}: {error}");
            tracing::error!("storage failure, no further command is accepted: {message}");
            *first = Some(message);
            true
        });
    }

    fn get(&self) -> Option<String> {
        self.published.borrow().clone()
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

/// Starts the writer and checkpointer threads. They run until every
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
    let (stop_checkpoints, checkpoint_stop) = std_mpsc::channel::<()>();
    let spawn_error = |e| CommandError::Storage(sled::Error::Io(e).into());
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
        head,
        next_position,
        failure,
    };
    let thread = std::thread::Builder::new()
        .name("command-writer".into())
        .spawn(move || {
            writer.run();
            // The last checkpoint.
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

/// How often sled is made durable so that log segments can be released.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

struct Writer {
    store: Store,
    queue: mpsc::Receiver<Job>,
    max_batch: usize,
    /// The last durable position, for subscribers.
    head: watch::Sender<u64>,
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
            if shared::telemetry::otlp_enabled() {
                let span = tracing::info_span!("group_commit", commands = jobs.len());
                let traces = jobs.iter().filter_map(|job| job.trace.as_ref());
                shared::telemetry::link_to(
                    &span,
                    traces.map(|t| (t.traceparent.as_str(), t.tracestate.as_str())),
                    MAX_SPAN_LINKS,
                );
                span.in_scope(|| self.commit_group(&mut jobs));
            } else {
                self.commit_group(&mut jobs);
            }
        }
    }

    fn commit_group(&mut self, jobs: &mut Vec<Job>) {
        let now = now();
        let mut group = Group::new(self.next_position);
        let outcomes: Vec<Outcome> = jobs
            .drain(..)
            .map(|job| {
                let metadata = job.trace.map(|t| pb::EventMetadata {
                    traceparent: t.traceparent,
                    tracestate: t.tracestate,
                });
                let outcome = group.decide(&self.store, job.submission, now, metadata.as_ref());
                (job.reply, outcome)
            })
            .collect();
        // A group that writes nothing answers from sled, which holds only
        // what was synced.
        if let Some(decided) = group.finish() {
            let record = Store::record(
                &decided.batch,
                decided.first_position,
                decided.last_position,
            );
            let started = std::time::Instant::now();
            if let Err(e) = self.store.commit(&record) {
                self.failure.set("group commit", &e);
                for (reply, _) in outcomes {
                    let _ = reply.send(Err(self.failure.refusal()));
                }
                return;
            }
            metrics::histogram!("orders_commit_seconds").record(started.elapsed().as_secs_f64());
            self.next_position = decided.last_position + 1;
            self.head.send_replace(decided.last_position);
        }
        for (reply, outcome) in outcomes {
            let _ = reply.send(outcome);
        }
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

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
//! At low load the writer thread is skipped: a command that arrives at least
//! `QUIET_GAP` after the one before it, while commands come on average at
//! least that far apart, not right after a commit ended, and finds no other
//! command in the service (none in flight, none queued, the writer not
//! committing) is committed on the request's own thread, as a group of one,
//! through the same `Core` under the same lock (`WriterHandle::idle_core`,
//! `Pace`). That saves the two thread hand-offs (request task -> writer ->
//! request task) that cost more CPU than the commit itself at a few hundred
//! commands per second. The durability argument does not change: one
//! committer at a time (the lock), the same `Store::commit` (append,
//! fdatasync, apply), the head published and the reply returned only after
//! it.
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

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use shared::domain::{Submission, Timestamp};
use shared::proto as pb;
use shared::telemetry::TraceContext;
use tokio::sync::{mpsc, oneshot, watch};

use crate::decide::Group;
use crate::error::{CommandError, StoreError};
use crate::store::{CommandResult, Store};

type Reply = oneshot::Sender<Result<CommandResult, CommandError>>;

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
    core: Arc<Mutex<Core>>,
    pace: Arc<Pace>,
}

/// How busy the service is, as seen by `submit`: what decides whether a
/// command may be committed inline.
struct Pace {
    /// Commands submitted and not yet answered.
    in_flight: AtomicUsize,
    /// When a command last arrived, in nanoseconds since `epoch`.
    last_arrival: AtomicU64,
    /// When a group commit last ended, in nanoseconds since `epoch`.
    last_commit: AtomicU64,
    /// A moving average of the time between arrivals, in nanoseconds (see
    /// `settle`): the rate commands come at, not just the last gap.
    mean_interval: AtomicU64,
    epoch: Instant,
}

/// The least time since the previous command's arrival, and the least mean
/// time between arrivals, for a command to be committed inline. Under load
/// (even a steady 2,000 commands/s) commands come closer together than this,
/// and the request thread is better left to read and answer requests while
/// the writer thread syncs; at a few hundred commands per second they come
/// further apart, and each would be a group of one anyway. The mean matters
/// too: one long gap under saturating load (the clients' own threads
/// descheduled for a moment) is not low load, and a request thread held by
/// a sync then would hold up the flood that follows.
const QUIET_GAP: Duration = Duration::from_millis(1);

/// The least time since the end of the last commit for a command to be
/// committed inline. A burst that arrives during an inline commit waits
/// unread (the request thread is syncing) and is read right after that
/// commit ends: its first command must queue, not sync inline again, so
/// that the rest (then not alone) join it in one group. Longer than reading
/// one request takes, shorter than the gap between commands at low load.
const AFTER_COMMIT: Duration = Duration::from_micros(250);

/// The longest interval `settle` takes in: after an idle hour, ten or so
/// close arrivals bring the mean under `QUIET_GAP`.
const INTERVAL_CAP: Duration = Duration::from_millis(4);

impl Pace {
    fn new() -> Self {
        Pace {
            in_flight: AtomicUsize::new(0),
            last_arrival: AtomicU64::new(0),
            last_commit: AtomicU64::new(0),
            mean_interval: AtomicU64::new(nanos(INTERVAL_CAP)),
            epoch: Instant::now(),
        }
    }

    fn now(&self) -> u64 {
        nanos(self.epoch.elapsed())
    }

    /// Counts a command in flight until the returned guard drops; also says
    /// whether it came alone (see `alone_at`).
    fn arrive(&self) -> (InFlight<'_>, bool) {
        let others = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let alone = self.alone_at(self.now());
        (InFlight(&self.in_flight), others == 0 && alone)
    }

    /// Notes a command arriving at `now`; says whether it came alone, as
    /// far as time goes: at least `QUIET_GAP` after the previous arrival,
    /// arrivals on average at least as far apart, and at least
    /// `AFTER_COMMIT` after the last commit ended.
    fn alone_at(&self, now: u64) -> bool {
        // `fetch_max`: clocks read on two threads may arrive out of order.
        let before = self.last_arrival.fetch_max(now, Ordering::AcqRel);
        let gap = now.saturating_sub(before);
        let mean = self.settle(gap);
        let since_commit = now.saturating_sub(self.last_commit.load(Ordering::Acquire));
        gap >= nanos(QUIET_GAP) && mean >= nanos(QUIET_GAP) && since_commit >= nanos(AFTER_COMMIT)
    }

    /// Notes the end of a group commit.
    fn committed(&self) {
        self.last_commit.fetch_max(self.now(), Ordering::AcqRel);
    }

    /// Takes in the interval between two arrivals (at most `INTERVAL_CAP`),
    /// weighing 1/8, and returns the new mean. Two arrivals at once may
    /// each take in theirs over the other's: one sample lost, no harm to an
    /// estimate.
    fn settle(&self, interval: u64) -> u64 {
        let interval = interval.min(nanos(INTERVAL_CAP));
        let mean = self.mean_interval.load(Ordering::Acquire);
        let mean = mean - mean / 8 + interval / 8;
        self.mean_interval.store(mean, Ordering::Release);
        mean
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// Counts a command in flight while it lives.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl WriterHandle {
    /// Submits a command and waits until it is durably committed or refused;
    /// `trace` is stored with its events.
    ///
    /// A command that comes alone (`Pace::arrive`) is committed here, on the
    /// calling thread, as a group of one (`idle_core`): at low load that
    /// saves two thread hand-offs per command. Otherwise it joins the queue
    /// and the writer thread's next group.
    pub async fn submit(
        &self,
        submission: Submission,
        trace: Option<TraceContext>,
    ) -> Result<CommandResult, CommandError> {
        let (_in_flight, alone) = self.pace.arrive();
        if alone {
            if let Some(mut core) = self.idle_core() {
                metrics::counter!("orders_commit_inline_total").increment(1);
                let mut outcomes = core.commit(vec![(submission, trace)]);
                return outcomes.pop().expect("one outcome per command");
            }
        }
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

    /// The writer's core, for a command to commit on this thread, if nothing
    /// waits in the queue, no one is committing and the writer still runs.
    /// The caller has checked that the command came alone: under load the
    /// request threads have other requests to read and answer, and a sync on
    /// one of them would hold those up (the service runs one request thread
    /// by default).
    fn idle_core(&self) -> Option<MutexGuard<'_, Core>> {
        if self.jobs.capacity() < self.jobs.max_capacity() || self.jobs.is_closed() {
            return None;
        }
        // A poisoned core goes to the writer thread, whose `lock` reports it.
        self.core.try_lock().ok()
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

    /// The answers to a group of `commands` refused for the failure.
    fn refusals(&self, commands: usize) -> Vec<Result<CommandResult, CommandError>> {
        (0..commands).map(|_| Err(self.refusal())).collect()
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
    let pace = Arc::new(Pace::new());
    let core = Arc::new(Mutex::new(Core {
        store,
        head,
        next_position,
        failure,
        pace: Arc::clone(&pace),
    }));
    let writer = Writer {
        core: Arc::clone(&core),
        queue,
        max_batch,
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
        handle: WriterHandle { jobs, core, pace },
        thread,
        failure: watched,
    })
}

/// How often sled is made durable so that log segments can be released.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

struct Writer {
    core: Arc<Mutex<Core>>,
    queue: mpsc::Receiver<Job>,
    max_batch: usize,
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
            let (commands, replies): (Vec<_>, Vec<_>) = jobs
                .drain(..)
                .map(|job| ((job.submission, job.trace), job.reply))
                .unzip();
            // A command committed inline holds the core for its commit.
            let outcomes = lock(&self.core).commit(commands);
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(outcome);
            }
        }
    }
}

/// The writer's state. Whoever holds it commits: the writer thread, or a
/// request's task committing inline; one at a time, so positions are
/// assigned, synced and published in order.
struct Core {
    store: Store,
    /// The last durable position, for subscribers.
    head: watch::Sender<u64>,
    /// The position the next event gets.
    next_position: u64,
    failure: Failure,
    /// Told when each commit ends.
    pace: Arc<Pace>,
}

/// Takes the core. If a commit panicked while holding it (its request task
/// unwound), where it stopped is unknown: its record may be in the log
/// without `next_position` having moved past it. That is a storage failure
/// like any other: nothing more is committed, and the restart recovers from
/// what is on disk.
fn lock(core: &Mutex<Core>) -> MutexGuard<'_, Core> {
    core.lock().unwrap_or_else(|poisoned| {
        let core = poisoned.into_inner();
        core.failure.set(
            "group commit",
            &StoreError::Failed("a commit panicked".into()),
        );
        core
    })
}

impl Core {
    /// Decides and commits one group; one outcome per command, in order.
    fn commit(
        &mut self,
        commands: Vec<(Submission, Option<TraceContext>)>,
    ) -> Vec<Result<CommandResult, CommandError>> {
        #[allow(clippy::cast_precision_loss)] // at most --max-batch
        metrics::histogram!("orders_commit_batch_size").record(commands.len() as f64);
        let outcomes = if self.failure.get().is_some() {
            self.failure.refusals(commands.len())
        } else if shared::telemetry::otlp_enabled() {
            let span = tracing::info_span!("group_commit", commands = commands.len());
            let traces = commands.iter().filter_map(|(_, trace)| trace.as_ref());
            shared::telemetry::link_to(
                &span,
                traces.map(|t| (t.traceparent.as_str(), t.tracestate.as_str())),
                MAX_SPAN_LINKS,
            );
            span.in_scope(|| self.commit_group(commands))
        } else {
            self.commit_group(commands)
        };
        self.pace.committed();
        outcomes
    }

    fn commit_group(
        &mut self,
        commands: Vec<(Submission, Option<TraceContext>)>,
    ) -> Vec<Result<CommandResult, CommandError>> {
        let now = now();
        let mut group = Group::new(self.next_position);
        let outcomes: Vec<_> = commands
            .into_iter()
            .map(|(submission, trace)| {
                let metadata = trace.map(|t| pb::EventMetadata {
                    traceparent: t.traceparent,
                    tracestate: t.tracestate,
                });
                group.decide(&self.store, submission, now, metadata.as_ref())
            })
            .collect();
        // A group that writes nothing answers from sled, which holds only
        // what was synced.
        if let Some(decided) = group.finish() {
            let record =
                Store::record(decided.batch, decided.first_position, decided.last_position);
            let started = Instant::now();
            if let Err(e) = self.store.commit(&record) {
                self.failure.set("group commit", &e);
                return self.failure.refusals(outcomes.len());
            }
            metrics::histogram!("orders_commit_seconds").record(started.elapsed().as_secs_f64());
            self.next_position = decided.last_position + 1;
            self.head.send_replace(decided.last_position);
        }
        outcomes
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

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn a_command_comes_alone_only_after_a_quiet_gap() {
        let pace = Pace::new();
        assert!(pace.alone_at(5 * MS), "the first arrival, 5 ms after start");
        assert!(!pace.alone_at(5 * MS + MS / 2), "half a millisecond later");
        assert!(pace.alone_at(7 * MS), "1.5 ms after the last one");
        // Clocks read on two threads may arrive out of order: an older reading
        // neither counts as quiet nor moves the last arrival back.
        assert!(!pace.alone_at(6 * MS));
        assert!(!pace.alone_at(7 * MS + MS / 2));
    }

    #[test]
    fn a_command_right_after_a_commit_is_not_alone() {
        let pace = Pace::new();
        assert!(pace.alone_at(5 * MS));
        pace.last_commit.store(8 * MS, Ordering::Release);
        assert!(
            !pace.alone_at(8 * MS + 100_000),
            "100 µs after a commit ended"
        );
        assert!(pace.alone_at(10 * MS), "2 ms after it");
    }

    #[test]
    fn the_end_of_a_commit_is_noted() {
        let pace = Pace::new();
        std::thread::sleep(QUIET_GAP * 2);
        pace.committed();
        let (_first, alone) = pace.arrive();
        assert!(!alone, "right after a commit ended");
    }

    #[test]
    fn the_mean_interval_follows_the_rate_and_forgets_long_idles() {
        let pace = Pace::new();
        let gap = nanos(QUIET_GAP);
        assert!(pace.settle(nanos(INTERVAL_CAP)) >= gap, "idle at start");
        // Saturating load: one long gap among short ones is not low load.
        for _ in 0..64 {
            pace.settle(50_000);
        }
        assert!(pace.settle(3 * gap) < gap, "one long gap under load");
        // An idle hour counts as INTERVAL_CAP: a short burst is load again.
        pace.settle(3_600 * 1_000_000_000);
        let mut closes = 0;
        while pace.settle(50_000) >= gap {
            closes += 1;
        }
        assert!(
            closes <= 12,
            "{closes} close arrivals to forget an idle hour"
        );
        // A steady few hundred per second is low load.
        for _ in 0..64 {
            pace.settle(2 * gap);
        }
        assert!(pace.settle(2 * gap) >= gap);
    }

    #[test]
    fn a_command_is_not_alone_while_another_is_in_flight() {
        let pace = Pace::new();
        std::thread::sleep(QUIET_GAP * 2);
        let (first, alone) = pace.arrive();
        assert!(alone, "nothing else in flight, quiet since start");
        std::thread::sleep(QUIET_GAP * 2);
        let (second, alone) = pace.arrive();
        assert!(!alone, "the first is still in flight");
        drop((first, second));
        assert_eq!(pace.in_flight.load(Ordering::Acquire), 0);
        std::thread::sleep(QUIET_GAP * 2);
        assert!(pace.arrive().1, "alone again once both were answered");
    }
}

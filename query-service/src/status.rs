//! The projection's progress as the rest of the service sees it: applied and head
//! positions, the link to the command side, and a stop at a poison event. Queries
//! with `min_position` wait on it; the applier wakes them; readiness follows it.

use tokio::sync::watch;
use tokio::time::Instant;

use shared::domain::Timestamp;

use crate::error::QueryError;
use crate::read_models::checkpoint::Checkpoint;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// The last position of the served read models.
    pub applied_position: u64,
    /// The command side's last position, as last seen.
    pub head_position: u64,
    pub connected: bool,
    pub last_applied_at: Option<Timestamp>,
    /// Whether the command side has told its head (a heartbeat) since the
    /// start: until then the replica is not known to be caught up. Events do
    /// not tell it: the first heartbeat follows the backlog (command-service
    /// `subscription.rs`).
    pub head_seen: bool,
    /// Set once applying has stopped (an event it cannot apply, or any other
    /// reason the log cannot be followed); cleared when the event is skipped.
    pub stopped: Option<Stopped>,
    /// Applying is paused (`PauseProjection`).
    pub paused: bool,
    /// Events parked now, and skips recorded (`parking.rs`).
    pub parked: u64,
    pub skipped: u64,
    /// While a rebuild runs: the position it has reached.
    pub rebuild_position: Option<u64>,
}

impl Progress {
    /// Within `max_lag` events of a head the command side has told: the
    /// projection half of readiness (the rest is in `readiness.rs`).
    pub fn caught_up(&self, max_lag: u64) -> bool {
        self.head_seen
            && self.stopped.is_none()
            && !self.paused
            && self.head_position.saturating_sub(self.applied_position) <= max_lag
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stopped {
    pub position: u64,
    pub error: String,
}

pub struct ProjectionStatus {
    progress: watch::Sender<Progress>,
    /// `--ready-max-lag`: head changes wake watchers only when they move the
    /// projection across it (not on every event or heartbeat).
    ready_max_lag: u64,
}

impl ProjectionStatus {
    pub fn new(served: Checkpoint, ready_max_lag: u64) -> Self {
        let progress = Progress {
            applied_position: served.position,
            head_position: served.position,
            last_applied_at: served.applied_at,
            ..Progress::default()
        };
        ProjectionStatus {
            progress: watch::Sender::new(progress),
            ready_max_lag,
        }
    }

    /// Follows every change that matters to readiness or to waiting queries.
    pub fn subscribe(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    pub fn snapshot(&self) -> Progress {
        self.progress.borrow().clone()
    }

    /// The served read models now reflect `checkpoint`: wakes waiting queries.
    pub fn applied(&self, checkpoint: Checkpoint) {
        self.progress.send_modify(|p| {
            p.applied_position = checkpoint.position;
            p.head_position = p.head_position.max(checkpoint.position);
            p.last_applied_at = checkpoint.applied_at;
        });
    }

    /// Link changes wake nobody: waiting queries only care about `applied`.
    pub fn set_connected(&self, connected: bool) {
        self.progress.send_if_modified(|p| {
            p.connected = connected;
            false
        });
    }

    /// A heartbeat: the command side's head as it says it is.
    pub fn set_head(&self, head: u64) {
        self.move_head(|_| head, true);
    }

    /// An event arrived: the head is at least there.
    pub fn saw_position(&self, position: u64) {
        self.move_head(|head| head.max(position), false);
    }

    /// Moves the head; wakes watchers (readiness) only when that crosses
    /// `--ready-max-lag`, so a stream of events costs waiting queries nothing.
    fn move_head(&self, to: impl FnOnce(u64) -> u64, told: bool) {
        let max_lag = self.ready_max_lag;
        self.progress.send_if_modified(|p| {
            let before = p.caught_up(max_lag);
            p.head_position = to(p.head_position);
            p.head_seen |= told;
            p.caught_up(max_lag) != before
        });
    }

    /// Applying stopped at `position`; queries waiting beyond it fail now.
    pub fn stop(&self, position: u64, error: String) {
        self.progress
            .send_modify(|p| p.stopped = Some(Stopped { position, error }));
    }

    /// Applying goes on after a stop (the event was skipped).
    pub fn clear_stop(&self) {
        self.progress
            .send_if_modified(|p| p.stopped.take().is_some());
    }

    /// Applying paused or resumed: wakes readiness.
    pub fn set_paused(&self, paused: bool) {
        self.progress
            .send_if_modified(|p| std::mem::replace(&mut p.paused, paused) != paused);
    }

    /// The counts of parked events and skips; wakes nobody.
    pub fn set_parking(&self, parked: u64, skipped: u64) {
        self.progress.send_if_modified(|p| {
            p.parked = parked;
            p.skipped = skipped;
            false
        });
    }

    /// A rebuild's progress (`None`: no rebuild runs); wakes nobody.
    pub fn set_rebuild(&self, position: Option<u64>) {
        self.progress.send_if_modified(|p| {
            p.rebuild_position = position;
            false
        });
    }

    /// Waits until `min_position` is applied, the `deadline` passes, applying
    /// stops short of it, or the service shuts down.
    pub async fn wait_for(
        &self,
        min_position: u64,
        deadline: Instant,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), QueryError> {
        let mut progress = self.progress.subscribe();
        loop {
            {
                let p = progress.borrow_and_update();
                if p.applied_position >= min_position {
                    return Ok(());
                }
                if let Some(stopped) = &p.stopped {
                    return Err(QueryError::Stopped {
                        min_position,
                        applied_position: p.applied_position,
                        position: stopped.position,
                        error: stopped.error.clone(),
                    });
                }
            }
            tokio::select! {
                changed = progress.changed() => {
                    if changed.is_err() {
                        return Err(QueryError::ShuttingDown);
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    let p = self.snapshot();
                    return Err(QueryError::NotCaughtUp {
                        min_position,
                        applied_position: p.applied_position,
                        head_position: p.head_position,
                        connected: p.connected,
                    });
                }
                _ = shutdown.wait_for(|stop| *stop) => return Err(QueryError::ShuttingDown),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_wait_is_woken_by_the_applier_or_fails_at_the_deadline() {
        let status = Arc::new(ProjectionStatus::new(Checkpoint::default(), 1000));
        let (_stop_tx, stop) = watch::channel(false);
        let waiter = {
            let status = Arc::clone(&status);
            let stop = stop.clone();
            tokio::spawn(async move {
                status
                    .wait_for(5, Instant::now() + Duration::from_secs(10), stop)
                    .await
            })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        status.applied(Checkpoint {
            position: 5,
            applied_at: None,
        });
        waiter.await.unwrap().unwrap();

        let err = status
            .wait_for(6, Instant::now() + Duration::from_secs(2), stop.clone())
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("applied up to position 5"),
            "{err}"
        );
        assert_eq!(
            tonic::Status::from(err).code(),
            tonic::Code::DeadlineExceeded
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stopped_projection_fails_waits_beyond_it_at_once() {
        let status = ProjectionStatus::new(
            Checkpoint {
                position: 3,
                applied_at: None,
            },
            1000,
        );
        let (_stop_tx, stop) = watch::channel(false);
        status.stop(4, "poison".to_owned());
        let far = Instant::now() + Duration::from_secs(3600);
        status.wait_for(3, far, stop.clone()).await.unwrap();
        let err = status.wait_for(4, far, stop).await.unwrap_err();
        assert_eq!(tonic::Status::from(err).code(), tonic::Code::Unavailable);
    }

    #[test]
    fn head_changes_wake_watchers_only_across_the_ready_lag() {
        let status = ProjectionStatus::new(Checkpoint::default(), 10);
        let mut progress = status.subscribe();
        assert!(!progress.borrow_and_update().caught_up(10));
        // An event is no head: the replica is not known to be caught up.
        status.saw_position(1);
        assert!(!progress.has_changed().unwrap());
        // The first head heard: caught up (1 behind).
        status.set_head(1);
        assert!(progress.has_changed().unwrap());
        assert!(progress.borrow_and_update().caught_up(10));
        status.saw_position(10);
        assert!(!progress.has_changed().unwrap(), "still within the lag");
        status.set_head(11);
        assert!(progress.has_changed().unwrap(), "crossed the lag");
        assert!(!progress.borrow_and_update().caught_up(10));
        status.set_head(500);
        assert!(!progress.has_changed().unwrap());
        status.stop(1, "any".to_owned());
        assert!(progress.has_changed().unwrap());
    }

    #[test]
    fn pausing_and_a_skip_wake_readiness_and_parking_counts_wake_nobody() {
        let status = ProjectionStatus::new(Checkpoint::default(), 10);
        status.set_head(0);
        let mut progress = status.subscribe();
        assert!(progress.borrow_and_update().caught_up(10));
        status.set_paused(true);
        assert!(progress.has_changed().unwrap());
        assert!(!progress.borrow_and_update().caught_up(10), "paused");
        status.set_paused(true);
        assert!(!progress.has_changed().unwrap(), "no change, no wake");
        status.set_paused(false);
        status.stop(1, "poison".to_owned());
        assert!(!progress.borrow_and_update().caught_up(10));
        status.clear_stop();
        assert!(progress.has_changed().unwrap());
        assert!(progress.borrow_and_update().caught_up(10));
        status.set_parking(1, 2);
        status.set_rebuild(Some(5));
        assert!(!progress.has_changed().unwrap());
        let p = status.snapshot();
        assert_eq!((p.parked, p.skipped, p.rebuild_position), (1, 2, Some(5)));
    }
}

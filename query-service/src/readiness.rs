//! Readiness (SPEC guarantee 9): whether this replica should get queries behind
//! a load balancer. It is ready once it has heard the command side's head and
//! is within `--ready-max-lag` events of it, while applying has not stopped
//! (a poison event or any other stop reported through `ProjectionStatus`) and
//! is not paused (`PauseProjection`: the replica is deliberately falling
//! behind, so it should not take read-your-writes traffic), and
//! while the served read models can answer every query (a rebuild of a model
//! the served generation lacks answers UNAVAILABLE until it switches in).
//! Driven by `ProjectionStatus` changes, not by a timer; `serve` reports it on
//! gRPC health under the service's name, liveness (`""`) is not affected.

use std::sync::Arc;

use tokio::sync::watch;

use crate::read_models::REGISTRY;
use crate::status::{Progress, ProjectionStatus};
use crate::store::Store;

/// Why the replica is not ready, for the log.
fn not_ready_because(progress: &Progress, max_lag: u64, answers_all: bool) -> Option<String> {
    if let Some(stopped) = &progress.stopped {
        return Some(format!(
            "applying stopped at position {}: {}",
            stopped.position, stopped.error
        ));
    }
    if progress.paused {
        return Some("applying is paused (PauseProjection)".to_owned());
    }
    if !progress.head_seen {
        return Some("the command side's head is not known yet".to_owned());
    }
    let lag = progress
        .head_position
        .saturating_sub(progress.applied_position);
    if lag > max_lag {
        return Some(format!(
            "{lag} events behind the head (--ready-max-lag {max_lag})"
        ));
    }
    if !answers_all {
        return Some("a read model is being rebuilt and cannot answer yet".to_owned());
    }
    None
}

/// Whether the served generation holds every read model this build answers from.
fn answers_all(store: &Store) -> bool {
    if !store.is_rebuilding() {
        return true;
    }
    let active = store.active();
    REGISTRY.iter().all(|model| active.read(model).is_ok())
}

/// Publishes readiness on `ready` at every change of `status` until `stop`.
pub async fn follow(
    status: Arc<ProjectionStatus>,
    store: Arc<Store>,
    max_lag: u64,
    ready: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let mut progress = status.subscribe();
    let mut first = true;
    loop {
        let why = {
            let p = progress.borrow_and_update();
            not_ready_because(&p, max_lag, answers_all(&store))
        };
        // Logged at each change (and at the start), not at every progress step.
        let changed = ready.send_if_modified(|r| {
            let now = why.is_none();
            std::mem::replace(r, now) != now
        });
        if changed || first {
            first = false;
            match &why {
                None => tracing::info!("ready: caught up with the command side"),
                Some(reason) => tracing::info!(reason = %reason, "not ready"),
            }
        }
        tokio::select! {
            changed = progress.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Stopped;

    fn progress(applied: u64, head: u64) -> Progress {
        Progress {
            applied_position: applied,
            head_position: head,
            head_seen: true,
            ..Progress::default()
        }
    }

    #[test]
    fn ready_only_within_the_lag_of_a_known_head_and_while_applying() {
        assert!(not_ready_because(&progress(90, 100), 10, true).is_none());
        let behind = not_ready_because(&progress(89, 100), 10, true).unwrap();
        assert!(behind.contains("11 events behind"), "{behind}");
        let unknown = Progress {
            head_seen: false,
            ..progress(100, 100)
        };
        assert!(not_ready_because(&unknown, 10, true).is_some());
        let stopped = Progress {
            stopped: Some(Stopped {
                position: 101,
                error: "any reason".to_owned(),
            }),
            ..progress(100, 100)
        };
        assert!(not_ready_because(&stopped, 10, true)
            .unwrap()
            .contains("any reason"));
        assert!(not_ready_because(&progress(100, 100), 10, false).is_some());
        let paused = Progress {
            paused: true,
            ..progress(100, 100)
        };
        assert!(not_ready_because(&paused, 10, true)
            .unwrap()
            .contains("paused"));
    }
}

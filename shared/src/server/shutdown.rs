//! The last step of a graceful shutdown: drain, but not forever.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;

/// How a server future ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every connection finished on its own.
    Cleanly,
    /// Connections were still open `grace` after `stopping` turned true (for
    /// example a stream whose client stopped reading) and were abandoned.
    GraceExpired,
}

/// Runs `serve` to completion, but once `stopping` turns true gives it at most
/// `grace` more time. A server that cannot drain must still exit, or a client
/// that stops reading could keep a stopping service alive forever.
pub async fn drain_within<E>(
    serve: impl Future<Output = Result<(), E>>,
    mut stopping: watch::Receiver<bool>,
    grace: Duration,
) -> Result<Drained, E> {
    let expired = async move {
        if stopping.wait_for(|stop| *stop).await.is_err() {
            // The stop flag can no longer be set: wait for `serve` alone.
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        served = serve => served.map(|()| Drained::Cleanly),
        () = expired => {
            tracing::warn!(
                grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
                "connections still open after the shutdown grace period (a client that stopped reading?); closing them"
            );
            Ok(Drained::GraceExpired)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_server_that_drains_ends_cleanly() {
        let (_tx, rx) = watch::channel(false);
        let served = drain_within(async { Ok::<(), ()>(()) }, rx, Duration::from_secs(1));
        assert_eq!(served.await, Ok(Drained::Cleanly));
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_that_cannot_drain_is_abandoned_after_the_grace_period() {
        let (tx, rx) = watch::channel(false);
        let stuck = std::future::pending::<Result<(), ()>>();
        let started = tokio::time::Instant::now();
        let served = tokio::spawn(drain_within(stuck, rx, Duration::from_secs(10)));
        tx.send(true).unwrap();
        assert_eq!(served.await.unwrap(), Ok(Drained::GraceExpired));
        assert!(started.elapsed() >= Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn no_grace_period_runs_before_the_stop() {
        let (_tx, rx) = watch::channel(false);
        let stuck = std::future::pending::<Result<(), ()>>();
        let outcome = tokio::time::timeout(
            Duration::from_secs(3600),
            drain_within(stuck, rx, Duration::from_secs(1)),
        )
        .await;
        assert!(outcome.is_err(), "must keep serving while not stopping");
    }
}

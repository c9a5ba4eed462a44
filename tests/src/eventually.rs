//! Waiting for state without sleeping a guessed time: poll with a deadline,
//! or bound a future.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often `eventually` asks again.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Polls `probe` until it gives `Some`, failing the test with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Runs `future` with a deadline, failing the test with `what` when it passes.
pub async fn within<T>(what: &str, timeout: Duration, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(timeout, future)
        .await
        .unwrap_or_else(|_| panic!("timed out after {timeout:?}: {what}"))
}

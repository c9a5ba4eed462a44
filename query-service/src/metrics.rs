//! The projection's own Prometheus metrics: gauges sampled from
//! `ProjectionStatus` (the endpoint itself is `shared::server::metrics`).

use std::time::Duration;

/// How often the projection gauges are refreshed from `ProjectionStatus`.
const PROGRESS_SAMPLE: Duration = Duration::from_millis(200);

/// Keeps the projection's metrics current until `stop` is set: applied and head
/// positions, lag in events, lag in seconds (how long the replica has been
/// behind the head it knows of, 0 when caught up), the link state, the
/// counter of events applied to the served read models, whether applying is
/// paused, the events parked now, and a rebuild's progress. (Skips and
/// auto-parks are counted where they happen, in `applier.rs`:
/// `orders_projection_skipped_events_total`, `orders_projection_auto_parked_total`.)
#[allow(clippy::cast_precision_loss)] // positions and counts stay far below 2^53
pub async fn track_progress(
    status: std::sync::Arc<crate::status::ProjectionStatus>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let applied_total = metrics::counter!("orders_events_applied_total");
    let applied_position = metrics::gauge!("orders_projection_applied_position");
    let head_position = metrics::gauge!("orders_projection_head_position");
    let lag_events = metrics::gauge!("orders_projection_lag_events");
    let lag_seconds = metrics::gauge!("orders_projection_lag_seconds");
    let connected = metrics::gauge!("orders_projection_connected");
    let stopped = metrics::gauge!("orders_projection_stopped");
    let paused = metrics::gauge!("orders_projection_paused");
    let parked = metrics::gauge!("orders_projection_parked_events");
    let rebuilding = metrics::gauge!("orders_projection_rebuilding");
    let rebuild_position = metrics::gauge!("orders_projection_rebuild_position");
    let mut last_applied = status.snapshot().applied_position;
    let mut behind_since: Option<tokio::time::Instant> = None;
    let mut ticks = tokio::time::interval(PROGRESS_SAMPLE);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let p = status.snapshot();
        applied_total.increment(p.applied_position.saturating_sub(last_applied));
        last_applied = p.applied_position;
        applied_position.set(p.applied_position as f64);
        head_position.set(p.head_position as f64);
        let lag = p.head_position.saturating_sub(p.applied_position);
        lag_events.set(lag as f64);
        let now = tokio::time::Instant::now();
        let since = if lag == 0 {
            None
        } else {
            Some(*behind_since.get_or_insert(now))
        };
        behind_since = since;
        lag_seconds.set(since.map_or(0.0, |t| (now - t).as_secs_f64()));
        connected.set(if p.connected { 1.0 } else { 0.0 });
        stopped.set(if p.stopped.is_some() { 1.0 } else { 0.0 });
        paused.set(if p.paused { 1.0 } else { 0.0 });
        parked.set(p.parked as f64);
        rebuilding.set(if p.rebuild_position.is_some() {
            1.0
        } else {
            0.0
        });
        rebuild_position.set(p.rebuild_position.unwrap_or(0) as f64);
    }
}

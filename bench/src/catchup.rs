//! Catch-up: a fresh query-service replica builds its read models from position
//! 0 of the command log; events applied per second and its peak memory.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use shared::proto as pb;
use shared::proto::query_service_client::QueryServiceClient;

use crate::load::{self, progress_line};
use crate::services::{self, Proc};
use crate::stats::Report;

const POLL: Duration = Duration::from_millis(100);
const STALL: Duration = Duration::from_secs(60);

/// Starts a replica on an empty directory and polls `GetProjectionStatus` until
/// it has applied `head`. Hands the running replica and its directory back.
pub async fn run(
    bin_dir: &Path,
    command: SocketAddr,
    head: u64,
) -> Result<(Report, Proc, tempfile::TempDir), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let spawned = Instant::now();
    let replica = services::query_service(bin_dir, dir.path(), command)?;
    let listening = spawned.elapsed();
    let channel = load::connect(replica.addr, 1).await?.remove(0);
    let mut client = QueryServiceClient::new(channel);
    let started = Instant::now();
    let mut last_progress = (Instant::now(), 0);
    let mut last_print = Instant::now();
    let mut printed = 0;
    let applied = loop {
        let status = client
            .get_projection_status(pb::GetProjectionStatusRequest {})
            .await
            .map_err(|e| format!("GetProjectionStatus: {e}"))?
            .into_inner();
        if !status.error.is_empty() {
            return Err(format!("the replica stopped: {}", status.error));
        }
        let applied = status.applied_position;
        if applied >= head {
            break applied;
        }
        if applied > last_progress.1 {
            last_progress = (Instant::now(), applied);
        } else if last_progress.0.elapsed() > STALL {
            return Err(format!("catch-up stalled at {applied} of {head}"));
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            let rss = replica.memory("VmRSS").unwrap_or(0) >> 20;
            progress_line(
                "catch-up",
                started,
                applied,
                applied - printed,
                &format!("applied, RSS {rss} MB"),
            );
            printed = applied;
            last_print = Instant::now();
        }
        tokio::time::sleep(POLL).await;
    };
    let elapsed = started.elapsed();
    let mut report = Report::new("catch-up", "events");
    report.finish(applied, elapsed);
    if let Some(cpu) = replica.cpu_seconds() {
        // Less sensitive to other load on the machine than the wall-clock rate.
        report.extra("replica_cpu_s", cpu);
        #[allow(clippy::cast_precision_loss)]
        report.extra("events_per_cpu_s", applied as f64 / cpu.max(0.01));
    }
    report.extra("start_to_listening_s", listening.as_secs_f64());
    if let Some(hwm) = replica.memory("VmHWM") {
        report.extra("peak_rss_bytes", hwm);
    }
    if let Some(rss) = replica.memory("VmRSS") {
        report.extra("rss_bytes", rss);
    }
    report.extra("data_dir_bytes", services::dir_bytes(dir.path()));
    Ok((report, replica, dir))
}

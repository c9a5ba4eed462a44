//! Bootstrap: a new query replica copying a running one (`--bootstrap-from`)
//! against a full catch-up from position 0, over the same log.
//!
//! Replica A catches up from 0 (T_full: from its start until it has applied the
//! head). Then replica B starts on an empty directory with `--bootstrap-from A`
//! (T_boot: from its start until it answers at the same position with the same
//! `GetOrderAnalytics` and the same `GetOrder` results for a sample of orders).
//! No command is written meanwhile, so both are at the head.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use shared::proto as pb;
use shared::proto::query_service_client::QueryServiceClient;
use tonic::transport::Channel;

use crate::catchup;
use crate::load;
use crate::queries::collect_ids;
use crate::services::{self, Proc};
use crate::stats::Report;

const POLL: Duration = Duration::from_millis(10);
/// Orders whose `GetOrder` answers are compared, spread over the newest
/// `SAMPLE_FROM`.
const SAMPLE: usize = 200;
const SAMPLE_FROM: usize = 20_000;

/// Times a full catch-up and a bootstrap over the log of `command` (at `head`).
pub async fn run(bin_dir: &Path, command: SocketAddr, head: u64) -> Result<Vec<Report>, String> {
    let full_started = Instant::now();
    let (mut catchup, source, _source_dir) = catchup::run(bin_dir, command, head).await?;
    let t_full = full_started.elapsed();
    let source_channel = load::connect(source.addr, 1).await?.remove(0);
    let sample = sample_ids(source_channel.clone()).await?;
    let expected_analytics = analytics(source_channel.clone(), head).await?;
    let expected_views = views(source_channel, &sample, head).await?;

    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let started = Instant::now();
    let replica = Proc::spawn(
        "query-service",
        &services::service_binary(bin_dir, "query-service")?,
        &[
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--data-dir".into(),
            dir.path().display().to_string(),
            "--command-endpoint".into(),
            format!("http://{command}"),
            "--bootstrap-from".into(),
            format!("http://{}", source.addr),
        ],
    )?;
    let listening = started.elapsed();
    let channel = load::connect(replica.addr, 1).await?.remove(0);
    let mut client = QueryServiceClient::new(channel.clone());
    loop {
        let status = client
            .get_projection_status(pb::GetProjectionStatusRequest {})
            .await
            .map_err(|e| format!("GetProjectionStatus: {e}"))?
            .into_inner();
        if !status.error.is_empty() {
            return Err(format!("the new replica stopped: {}", status.error));
        }
        if status.applied_position >= head {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            return Err(format!(
                "the new replica is at {} of {head} after 600 s",
                status.applied_position
            ));
        }
        tokio::time::sleep(POLL).await;
    }
    if analytics(channel.clone(), head).await? != expected_analytics {
        return Err("the new replica's GetOrderAnalytics differs from its source's".to_owned());
    }
    if views(channel, &sample, head).await? != expected_views {
        return Err("the new replica's GetOrder answers differ from its source's".to_owned());
    }
    let t_boot = started.elapsed();

    #[allow(clippy::cast_precision_loss)]
    let ratio = t_boot.as_secs_f64() / t_full.as_secs_f64().max(1e-9);
    println!(
        "bootstrap: full catch-up {:.2} s, bootstrap {:.2} s, ratio {ratio:.3} (target < 0.25)",
        t_full.as_secs_f64(),
        t_boot.as_secs_f64()
    );
    let mut report = Report::new("bootstrap", "events");
    report.finish(head, t_boot);
    report.extra("full_catchup_s", t_full.as_secs_f64());
    report.extra("bootstrap_s", t_boot.as_secs_f64());
    report.extra("bootstrap_vs_full", ratio);
    report.extra("start_to_listening_s", listening.as_secs_f64());
    report.extra("orders_compared", sample.len());
    if let Some(cpu) = replica.cpu_seconds() {
        report.extra("replica_cpu_s", cpu);
    }
    if let Some(cpu) = source.cpu_seconds() {
        report.extra("source_cpu_s", cpu);
    }
    if let Some(hwm) = replica.memory("VmHWM") {
        report.extra("peak_rss_bytes", hwm);
    }
    report.extra("data_dir_bytes", services::dir_bytes(dir.path()));
    catchup.extra("start_to_applied_head_s", t_full.as_secs_f64());
    Ok(vec![catchup, report])
}

/// Every `SAMPLE_FROM / SAMPLE`-th of the newest `SAMPLE_FROM` orders.
async fn sample_ids(channel: Channel) -> Result<Vec<String>, String> {
    let ids = collect_ids(channel, SAMPLE_FROM)
        .await
        .map_err(|e| format!("listing orders: {e}"))?;
    let step = (ids.len() / SAMPLE).max(1);
    Ok(ids.into_iter().step_by(step).collect())
}

async fn analytics(channel: Channel, head: u64) -> Result<pb::GetOrderAnalyticsResponse, String> {
    QueryServiceClient::new(channel)
        .get_order_analytics(pb::GetOrderAnalyticsRequest {
            min_position: head,
            top_n: 50,
        })
        .await
        .map(tonic::Response::into_inner)
        .map_err(|e| format!("GetOrderAnalytics: {e}"))
}

async fn views(
    channel: Channel,
    ids: &[String],
    head: u64,
) -> Result<Vec<pb::GetOrderResponse>, String> {
    let mut client = QueryServiceClient::new(channel);
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        out.push(
            client
                .get_order(pb::GetOrderRequest {
                    order_id: id.clone(),
                    min_position: head,
                })
                .await
                .map_err(|e| format!("GetOrder {id}: {e}"))?
                .into_inner(),
        );
    }
    Ok(out)
}

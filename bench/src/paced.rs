//! Paced load, the loads most deployments run: a fixed command rate with a
//! query-service following a long log. For each rate, two phases:
//!
//! - `paced commands`: the command workload alone (the replica only follows):
//!   command-service CPU per command and query-service CPU per applied event,
//!   both read from /proc, so the client's cost stays out;
//! - `paced e2e`: each command followed by a `GetOrder` with `min_position` and
//!   an open `WatchOrder`: ack -> visible p50/p99, and the same CPU figures.
//!
//! The baselines, at the same rates in the same run: the bare echo server,
//! and the durable echo (the echo server appending each request to a file
//! and fdatasyncing it before the reply: the floor under a durable command
//! on this machine's disk). The command phases print command-service's CPU
//! per command over each.

use std::path::Path;
use std::time::Duration;

use crate::load::Plan;
use crate::services::Proc;
use crate::stats::Report;
use crate::target::Target;

/// Requests in flight: enough that the rate, not the latency, sets the pace.
const CONCURRENCY: usize = 32;
const CONNECTIONS: usize = 4;

/// CPU seconds of a process since `start`.
struct Meter<'a> {
    proc: &'a Proc,
    start: f64,
}

impl<'a> Meter<'a> {
    fn start(proc: &'a Proc) -> Self {
        Meter {
            proc,
            start: proc.cpu_seconds().unwrap_or(0.0),
        }
    }

    fn seconds(&self) -> f64 {
        self.proc.cpu_seconds().unwrap_or(0.0) - self.start
    }
}

#[allow(clippy::cast_precision_loss)]
fn per(cpu_seconds: f64, count: u64) -> f64 {
    cpu_seconds * 1e6 / count.max(1) as f64
}

pub async fn run(
    bin_dir: &Path,
    rates: &[f64],
    seconds: Duration,
    events: u64,
) -> Result<Vec<Report>, String> {
    let plan = |rate| Plan {
        concurrency: CONCURRENCY,
        duration: Some(seconds),
        count: None,
        rate: Some(rate),
    };
    let mut reports = Vec::new();

    // Per rate: the echo's and the durable echo's server CPU per request.
    let mut baselines = vec![[0.0; 2]; rates.len()];
    let sync_dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    for (kind, sync) in [(0, None), (1, Some(sync_dir.path()))] {
        let echo = crate::start_echo_server(sync)?;
        let name = if sync.is_some() {
            "durable echo"
        } else {
            "echo"
        };
        for (&rate, baseline) in rates.iter().zip(&mut baselines) {
            let meter = Meter::start(&echo);
            let mut report = crate::run_echo(
                echo.addr,
                &plan(rate),
                CONNECTIONS,
                &format!("paced {name} @{rate}/s"),
            )
            .await?;
            baseline[kind] = per(meter.seconds(), report.count);
            report.extra("server_cpu_us_per_request", baseline[kind]);
            report.print();
            reports.push(report);
        }
    }

    let target = Target::new(bin_dir, None, None)?;
    eprintln!("paced: writing a log of {events} events (replica following)");
    let mut head = target.ensure_log(events).await?;
    let command = target.command_proc.as_ref().ok_or("no command-service")?;
    let query = target.query_proc.as_ref().ok_or("no query-service")?;
    for (&rate, &baseline) in rates.iter().zip(&baselines) {
        // The replica only follows.
        let (command_cpu, query_cpu) = (Meter::start(command), Meter::start(query));
        let (mut report, written) = target
            .commands(
                CONNECTIONS,
                &plan(rate),
                &format!("paced commands @{rate}/s"),
            )
            .await?;
        target.caught_up(written).await?;
        let applied = written - head;
        head = written;
        figures(&mut report, &command_cpu, &query_cpu, applied, head);
        versus(&mut report, baseline);
        report.print();
        reports.push(report);

        // Commands, each read back through min_position and WatchOrder.
        let (command_cpu, query_cpu) = (Meter::start(command), Meter::start(query));
        let mut report = crate::run_e2e(&target, &plan(rate), CONNECTIONS).await?;
        let status = target.status().await?;
        target.caught_up(status.head_position).await?;
        let applied = status.head_position - head;
        head = status.head_position;
        report.scenario = format!("paced e2e @{rate}/s");
        figures(&mut report, &command_cpu, &query_cpu, applied, head);
        versus(&mut report, baseline);
        report.print();
        reports.push(report);
    }
    Ok(reports)
}

/// command-service's CPU per command over each baseline's per request.
fn versus(report: &mut Report, [echo, durable_echo]: [f64; 2]) {
    let command = report.extra["command_cpu_us_per_command"]
        .as_f64()
        .unwrap_or(0.0);
    report.extra(
        "command_cpu_over_echo",
        command / echo.max(f64::MIN_POSITIVE),
    );
    report.extra(
        "command_cpu_over_durable_echo",
        command / durable_echo.max(f64::MIN_POSITIVE),
    );
}

fn figures(report: &mut Report, command: &Meter<'_>, query: &Meter<'_>, applied: u64, head: u64) {
    report.extra(
        "command_cpu_us_per_command",
        per(command.seconds(), report.count),
    );
    report.extra(
        "query_cpu_us_per_applied_event",
        per(query.seconds(), applied),
    );
    report.extra("applied_events", applied);
    report.extra("log_head", head);
    report.extra(
        "command_rss_mb",
        command.proc.memory("VmRSS").unwrap_or(0) >> 20,
    );
    report.extra(
        "query_rss_mb",
        query.proc.memory("VmRSS").unwrap_or(0) >> 20,
    );
}

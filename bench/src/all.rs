//! `loadgen all`: the baselines, then every scenario against one pair of
//! services, then the baselines once more; writes `results.json`, `summary.md`
//! and the SVG charts, and prints the summary table.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::load::Plan;
use crate::machine::{self, Machine};
use crate::stats::{ms, Report};
use crate::svg::{self, Bar, Curve};
use crate::target::Target;
use crate::{catchup, services, sled_base, stream};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Quick,
    Full,
}

impl Mode {
    fn seconds(self) -> Duration {
        match self {
            Mode::Quick => Duration::from_secs(10),
            Mode::Full => Duration::from_secs(30),
        }
    }

    fn events(self) -> u64 {
        match self {
            Mode::Quick => 100_000,
            Mode::Full => 1_000_000,
        }
    }
}

/// One line of the summary table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub figure: String,
    pub value: String,
    pub baseline: String,
    /// value / baseline (or value / target for absolute targets).
    pub ratio: Option<f64>,
    pub target: String,
    pub met: Option<bool>,
}

#[derive(Serialize)]
struct Results<'a> {
    mode: &'a str,
    machine_at_start: Machine,
    load_at_end: String,
    seconds: f64,
    summary: &'a [Row],
    reports: &'a [Report],
}

pub async fn run(mode: Mode, out: &Path, bin_dir: &Path) -> Result<(), String> {
    let machine = machine::describe();
    eprintln!(
        "loadgen all ({mode:?}): {} cores, {}, load {}",
        machine.cores, machine.cpu, machine.load
    );
    services::service_binary(bin_dir, "command-service")?;
    services::service_binary(bin_dir, "query-service")?;
    let started = Instant::now();
    let seconds = mode.seconds();
    let closed = |concurrency| Plan {
        concurrency,
        duration: Some(seconds),
        count: None,
        rate: None,
    };
    let mut reports = Vec::new();

    // Baselines.
    let echo_server = crate::start_echo_server(None)?;
    let cpu = Cpu::start(&echo_server);
    let mut echo_start = crate::run_echo(echo_server.addr, &closed(64), 4, "echo (start)").await?;
    cpu.finish(&echo_server, &mut echo_start);
    echo_start.print();
    let sled_64 = sled(64, seconds).await?;
    sled_64.print();
    // Groups of the command run average about 34 commands (64 in flight).
    let sled_32 = sled(32, seconds).await?;
    sled_32.print();

    // The command side alone: durable commands, which also write the log.
    let mut target = Target::command_only(bin_dir)?;
    let commands_plan = Plan {
        concurrency: 64,
        duration: None,
        count: Some(mode.events()),
        rate: None,
    };
    let command_proc = target.command_proc.as_ref().ok_or("no command-service")?;
    let cpu = Cpu::start(command_proc);
    let (mut commands, head) = target.commands(4, &commands_plan, "commands").await?;
    cpu.finish(command_proc, &mut commands);
    commands.print();
    let cpu = Cpu::start(command_proc);
    let mut stream = stream::run(
        crate::load::connect(target.command, 1).await?.remove(0),
        false,
    )
    .await?;
    cpu.finish(command_proc, &mut stream);
    stream.print();
    let stream_full = stream::run(
        crate::load::connect(target.command, 1).await?.remove(0),
        true,
    )
    .await?;
    stream_full.print();
    let storage = storage(&target, stream.count);
    storage.print();

    // A fresh query replica catches up with that log, then serves the read loads.
    let (catchup, replica, dir) = catchup::run(bin_dir, target.command, head).await?;
    catchup.print();
    target.attach_query(replica, dir);
    let query_proc = target.query_proc.as_ref().ok_or("no query-service")?;
    let cpu = Cpu::start(query_proc);
    let mut queries = crate::run_queries(&target, &closed(64), 4, 10_000).await?;
    cpu.finish(query_proc, &mut queries);
    queries.print();
    let e2e_plan = Plan {
        concurrency: 32,
        duration: Some(seconds),
        count: None,
        rate: Some(2000.0),
    };
    let e2e = crate::run_e2e(&target, &e2e_plan, 4).await?;
    e2e.print();
    drop(target);

    // The baselines again, minutes later.
    let cpu = Cpu::start(&echo_server);
    let mut echo_end = crate::run_echo(echo_server.addr, &closed(64), 4, "echo (end)").await?;
    cpu.finish(&echo_server, &mut echo_end);
    echo_end.print();
    drop(echo_server);

    let echo_rate = (echo_start.rate + echo_end.rate) / 2.0;
    let summary = summarize(
        echo_rate,
        &echo_start,
        &sled_64,
        &sled_32,
        &commands,
        &queries,
        &e2e,
        &stream,
        &stream_full,
        &catchup,
        &storage,
    );
    reports.extend([
        echo_start,
        sled_64,
        sled_32,
        commands,
        queries,
        e2e,
        stream,
        stream_full,
        catchup,
        storage,
        echo_end,
    ]);

    std::fs::create_dir_all(out).map_err(|e| format!("create {}: {e}", out.display()))?;
    let mode_name = match mode {
        Mode::Quick => "quick",
        Mode::Full => "full",
    };
    let results = Results {
        mode: mode_name,
        machine_at_start: machine.clone(),
        load_at_end: machine::load(),
        seconds: started.elapsed().as_secs_f64(),
        summary: &summary,
        reports: &reports,
    };
    let write = |name: &str, text: String| {
        let path = out.join(name);
        std::fs::write(&path, text).map_err(|e| format!("write {}: {e}", path.display()))
    };
    write(
        "results.json",
        serde_json::to_string_pretty(&results).map_err(|e| e.to_string())?,
    )?;
    let table = markdown(&summary);
    write(
        "summary.md",
        format!(
            "Mode {mode_name}; {} cores, {}; load at start {}, at end {}.\n\n{table}",
            machine.cores,
            machine.cpu,
            machine.load,
            machine::load()
        ),
    )?;
    write("throughput.svg", throughput_chart(&summary))?;
    write("latency.svg", latency_chart(&reports))?;
    println!("\n{table}");
    eprintln!(
        "results in {} ({:.0} s); load now {}",
        out.display(),
        started.elapsed().as_secs_f64(),
        machine::load()
    );
    Ok(())
}

/// CPU seconds used by the server process and by loadgen itself during a run:
/// a per-request cost that other load on the machine disturbs less than rates.
struct Cpu {
    server: f64,
    client: f64,
}

impl Cpu {
    fn start(server: &services::Proc) -> Cpu {
        Cpu {
            server: server.cpu_seconds().unwrap_or(0.0),
            client: services::cpu_seconds(std::process::id()).unwrap_or(0.0),
        }
    }

    fn finish(&self, server: &services::Proc, report: &mut Report) {
        let server = server.cpu_seconds().unwrap_or(0.0) - self.server;
        let client = services::cpu_seconds(std::process::id()).unwrap_or(0.0) - self.client;
        #[allow(clippy::cast_precision_loss)]
        let n = report.count.max(1) as f64;
        report.extra("server_cpu_s", server);
        report.extra("server_cpu_us_per_request", server * 1e6 / n);
        report.extra("loadgen_cpu_us_per_request", client * 1e6 / n);
    }
}

async fn sled(batch: usize, seconds: Duration) -> Result<Report, String> {
    tokio::task::spawn_blocking(move || sled_base::run(batch, 200, seconds))
        .await
        .map_err(|e| e.to_string())?
}

/// Bytes on disk per event and the memory of command-service.
fn storage(target: &Target, events: u64) -> Report {
    let mut report = Report::new("storage", "events");
    report.count = events;
    if let Some(dir) = &target.command_dir {
        let bytes = services::dir_bytes(dir);
        report.extra("command_data_dir_bytes", bytes);
        #[allow(clippy::cast_precision_loss)]
        report.extra("bytes_per_event", bytes as f64 / events.max(1) as f64);
    }
    if let Some(proc) = &target.command_proc {
        report.extra("command_rss_bytes", proc.memory("VmRSS").unwrap_or(0));
        report.extra("command_peak_rss_bytes", proc.memory("VmHWM").unwrap_or(0));
    }
    if let Some(proc) = &target.query_proc {
        report.extra("query_rss_bytes", proc.memory("VmRSS").unwrap_or(0));
    }
    report
}

fn extra_f64(report: &Report, key: &str) -> Option<f64> {
    report.extra.get(key).and_then(serde_json::Value::as_f64)
}

fn mb(bytes: f64) -> String {
    format!("{:.0} MB", bytes / (1024.0 * 1024.0))
}

fn p99(report: &Report, series: &str) -> Option<u64> {
    report.latencies.get(series).map(|l| l.p99_us)
}

#[allow(clippy::too_many_arguments)]
fn summarize(
    echo: f64,
    echo_start: &Report,
    sled: &Report,
    sled_32: &Report,
    commands: &Report,
    queries: &Report,
    e2e: &Report,
    stream: &Report,
    stream_full: &Report,
    catchup: &Report,
    storage: &Report,
) -> Vec<Row> {
    let per_s = |r: f64, unit: &str| format!("{r:.0} {unit}/s");
    let mut rows = vec![
        Row {
            figure: "durable commands (64 in flight, 4 conns)".into(),
            value: per_s(commands.rate, "commands"),
            baseline: format!("echo {}", per_s(echo, "req")),
            ratio: Some(commands.rate / echo),
            target: ">= 60%".into(),
            met: Some(commands.rate >= 0.6 * echo),
        },
        Row {
            figure: "durable commands vs bare sled batch 64 + flush".into(),
            value: per_s(commands.rate, "commands"),
            baseline: format!("sled {}", per_s(sled.rate, "writes")),
            ratio: Some(commands.rate / sled.rate),
            target: "report".into(),
            met: None,
        },
    ];
    rows.push(Row {
        figure: "durable commands vs bare sled batch 32 + flush".into(),
        value: per_s(commands.rate, "commands"),
        baseline: format!("sled {}", per_s(sled_32.rate, "writes")),
        ratio: Some(commands.rate / sled_32.rate),
        target: "report".into(),
        met: None,
    });
    if let Some(p) = p99(commands, "command") {
        rows.push(Row {
            figure: "durable command p99".into(),
            value: format!("{} ms", ms(p)),
            baseline: String::new(),
            ratio: None,
            target: "report".into(),
            met: None,
        });
    }
    rows.push(Row {
        figure: "queries GetOrder:ListRecentOrders 3:1 (64 in flight)".into(),
        value: per_s(queries.rate, "queries"),
        baseline: format!("echo {}", per_s(echo, "req")),
        ratio: Some(queries.rate / echo),
        target: ">= 70%".into(),
        met: Some(queries.rate >= 0.7 * echo),
    });
    if let Some(p) = p99(queries, "query") {
        rows.push(Row {
            figure: "query p99".into(),
            value: format!("{} ms", ms(p)),
            baseline: String::new(),
            ratio: None,
            target: "report".into(),
            met: None,
        });
    }
    for (series, label) in [
        ("ack->query", "ack -> visible via min_position query"),
        ("ack->watch", "ack -> visible via WatchOrder"),
    ] {
        if let Some(l) = e2e.latencies.get(series) {
            rows.push(Row {
                figure: format!("{label} at {:.0} commands/s", e2e.rate),
                value: format!("p50 {} ms, p99 {} ms", ms(l.p50_us), ms(l.p99_us)),
                baseline: String::new(),
                #[allow(clippy::cast_precision_loss)]
                ratio: Some(l.p99_us as f64 / 10_000.0),
                target: "p99 <= 10 ms".into(),
                met: Some(l.p99_us <= 10_000),
            });
        }
    }
    rows.push(Row {
        figure: format!("SubscribeEvents from 0, {} events, 1 client", stream.count),
        value: per_s(stream.rate, "events"),
        baseline: String::new(),
        ratio: Some(stream.rate / 1_000_000.0),
        target: ">= 1,000,000 events/s".into(),
        met: Some(stream.rate >= 1_000_000.0),
    });
    rows.push(Row {
        figure: "the same, a client decoding every message fully".into(),
        value: per_s(stream_full.rate, "events"),
        baseline: String::new(),
        ratio: Some(stream_full.rate / 1_000_000.0),
        target: "report".into(),
        met: None,
    });
    rows.push(Row {
        figure: format!("catch-up of a fresh replica, {} events", catchup.count),
        value: per_s(catchup.rate, "events"),
        baseline: String::new(),
        ratio: Some(catchup.rate / 100_000.0),
        target: ">= 100,000 events/s".into(),
        met: Some(catchup.rate >= 100_000.0),
    });
    if let Some(peak) = extra_f64(catchup, "peak_rss_bytes") {
        rows.push(Row {
            figure: "catch-up peak RSS (VmHWM)".into(),
            value: mb(peak),
            baseline: String::new(),
            ratio: Some(peak / (300.0 * 1024.0 * 1024.0)),
            target: "<= 300 MB".into(),
            met: Some(peak <= 300.0 * 1024.0 * 1024.0),
        });
    }
    let echo_cpu = extra_f64(echo_start, "server_cpu_us_per_request");
    // Server CPU per request over the echo server's, both read from /proc in
    // this run: the client's cost stays out of the ratio.
    for (report, label, target) in [
        (
            commands,
            "command-service CPU per durable command",
            Some(2.5),
        ),
        (queries, "query-service CPU per query", None),
        (stream, "command-service CPU per streamed event", None),
    ] {
        if let Some(us) = extra_f64(report, "server_cpu_us_per_request") {
            let vs_echo = echo_cpu.filter(|_| report.scenario != stream.scenario);
            rows.push(Row {
                figure: label.into(),
                value: format!("{us:.1} µs"),
                baseline: vs_echo
                    .map_or_else(String::new, |e| format!("echo server {e:.1} µs/req")),
                ratio: vs_echo.map(|e| us / e),
                target: target.map_or_else(|| "report".into(), |t| format!("<= {t}x echo")),
                met: target.zip(vs_echo).map(|(t, e)| us / e <= t),
            });
        }
    }
    if let Some(b) = extra_f64(storage, "bytes_per_event") {
        rows.push(Row {
            figure: format!(
                "command-service bytes on disk per event ({} events)",
                storage.count
            ),
            value: format!("{b:.0} B"),
            baseline: String::new(),
            ratio: None,
            target: "report".into(),
            met: None,
        });
    }
    if let Some(rss) = extra_f64(storage, "command_rss_bytes") {
        rows.push(Row {
            figure: format!("command-service RSS after {} events", storage.count),
            value: mb(rss),
            baseline: String::new(),
            ratio: None,
            target: "report".into(),
            met: None,
        });
    }
    rows
}

pub fn markdown(rows: &[Row]) -> String {
    let mut s = String::from(
        "| figure | value | baseline | ratio | target | met |\n|---|---|---|---|---|---|\n",
    );
    for row in rows {
        let ratio = row
            .ratio
            .map_or_else(String::new, |r| format!("{:.0}%", r * 100.0));
        let met = match row.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "",
        };
        s.push_str(&format!(
            "| {} | {} | {} | {ratio} | {} | {met} |\n",
            row.figure, row.value, row.baseline, row.target
        ));
    }
    s
}

/// Throughput as a share of its baseline or target: one bar per figure.
fn throughput_chart(rows: &[Row]) -> String {
    let mut bars = Vec::new();
    for (row, target, label) in [
        (0, Some(0.6), "commands / echo"),
        (1, None, "commands / sled writes"),
    ] {
        if let (Some(row), Some(ratio)) = (rows.get(row), rows.get(row).and_then(|r| r.ratio)) {
            bars.push(Bar {
                label: label.into(),
                ratio,
                target,
                note: format!("{} vs {}", row.value, row.baseline),
            });
        }
    }
    for row in rows {
        let (label, target) = if row.figure.starts_with("queries") {
            ("queries / echo", Some(0.7))
        } else if row.figure.starts_with("SubscribeEvents") {
            ("stream / 1M events/s", Some(1.0))
        } else if row.figure.starts_with("catch-up of") {
            ("catch-up / 100k events/s", Some(1.0))
        } else {
            continue;
        };
        if let Some(ratio) = row.ratio {
            bars.push(Bar {
                label: label.into(),
                ratio,
                target,
                note: row.value.clone()
                    + if row.baseline.is_empty() { "" } else { " vs " }
                    + &row.baseline,
            });
        }
    }
    svg::bars("Throughput as a share of its baseline or target", &bars)
}

/// Latency by percentile of every request-level series.
fn latency_chart(reports: &[Report]) -> String {
    let mut curves = Vec::new();
    for (scenario, series, label) in [
        ("echo (start)", "echo", "bare echo"),
        ("commands", "command", "durable command"),
        ("queries", "query", "query"),
        ("e2e", "ack", "e2e: ack (2k/s)"),
        ("e2e", "ack->query", "e2e: ack -> min_position query"),
        ("e2e", "ack->watch", "e2e: ack -> WatchOrder"),
    ] {
        if let Some(l) = reports
            .iter()
            .find(|r| r.scenario == scenario)
            .and_then(|r| r.latencies.get(series))
        {
            curves.push(Curve {
                label: label.into(),
                points: l.curve.clone(),
            });
        }
    }
    svg::percentiles("Latency by percentile (log scales)", &curves)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_ratios_and_misses() {
        let rows = vec![Row {
            figure: "f".into(),
            value: "10".into(),
            baseline: "20".into(),
            ratio: Some(0.5),
            target: ">= 60%".into(),
            met: Some(false),
        }];
        let table = markdown(&rows);
        assert!(
            table.contains("| f | 10 | 20 | 50% | >= 60% | **no** |"),
            "{table}"
        );
    }
}

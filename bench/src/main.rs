//! `loadgen`: drives real gRPC load at the order services and measures the bare
//! limits of the machine (tonic echo, sled flush) in the same run. See
//! BENCHMARKS.md for the method and the figures.

mod all;
mod bootstrap;
mod catchup;
mod commands;
mod e2e;
mod echo;
mod load;
mod machine;
mod paced;
mod proto;
mod queries;
mod services;
mod sled_base;
mod stats;
mod stream;
mod svg;
mod target;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use prost::Message;

use crate::load::Plan;
use crate::stats::Report;
use crate::target::Target;

#[derive(Parser)]
#[command(
    name = "loadgen",
    about = "Load generator and baselines for the order services"
)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

/// Options every load scenario takes.
#[derive(Args, Clone, Debug)]
pub struct Common {
    /// Requests in flight.
    #[arg(long)]
    concurrency: Option<usize>,
    /// HTTP/2 connections the requests are spread over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Seconds to run (default 10 unless --count is given).
    #[arg(long)]
    duration: Option<f64>,
    /// Requests to send in total.
    #[arg(long)]
    count: Option<u64>,
    /// Requests per second for all workers together (default: as fast as possible).
    #[arg(long)]
    rate: Option<f64>,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// A running command-service (otherwise one is started on a temp directory).
    #[arg(long)]
    command: Option<SocketAddr>,
    /// A running query-service (otherwise one is started on a temp directory).
    #[arg(long)]
    query: Option<SocketAddr>,
    /// Where the release service binaries are.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
}

impl Common {
    fn plan(&self, concurrency: usize) -> Plan {
        let duration = match (self.duration, self.count) {
            (Some(d), _) => Some(Duration::from_secs_f64(d)),
            (None, Some(_)) => None,
            (None, None) => Some(Duration::from_secs(10)),
        };
        Plan {
            concurrency: self.concurrency.unwrap_or(concurrency),
            duration,
            count: self.count,
            rate: self.rate,
        }
    }
}

#[derive(Subcommand)]
enum Scenario {
    /// Serve the bare echo service (the baseline's server process).
    EchoServer {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// The durable echo: each request appended to a file in this
        /// directory and fdatasynced (group commit) before the reply.
        #[arg(long)]
        sync_dir: Option<PathBuf>,
    },
    /// Baseline: bare tonic unary echo, sized like the command workload.
    Echo {
        #[command(flatten)]
        common: Common,
        /// A running echo server (otherwise `loadgen echo-server` is started).
        #[arg(long)]
        echo: Option<SocketAddr>,
    },
    /// Baseline: bare sled, a batch of inserts then one flush, in a loop.
    Sled {
        #[arg(long, default_value_t = 64)]
        batch: usize,
        #[arg(long, default_value_t = 200)]
        value_bytes: usize,
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Durable commands: create, 3 x AddItem, place (64 in flight by default).
    Commands(Common),
    /// GetOrder and ListRecentOrders (3:1) over the newest --orders orders.
    Queries {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 10_000)]
        orders: usize,
    },
    /// Command ack -> visible via min_position and WatchOrder (2,000/s by default).
    E2e(Common),
    /// SubscribeEvents from 0 over a log of --events events (written first into a
    /// started command-service; a running one is read as it is), one client.
    Stream {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 100_000)]
        events: u64,
        /// Decode every message completely (default: only the position).
        #[arg(long)]
        full_decode: bool,
    },
    /// A fresh query replica catching up with a log of --events events.
    Catchup {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 100_000)]
        events: u64,
    },
    /// A full catch-up of a fresh replica (A), then a new replica copying A
    /// (`--bootstrap-from`) until it answers like A at the same position.
    Bootstrap {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 100_000)]
        events: u64,
    },
    /// Fixed command rates with a replica following a long log: server CPU per
    /// command and per applied event (from /proc), ack -> visible latency, and
    /// the echo server at the same rates as the baseline.
    Paced {
        /// Commands per second, one run each.
        #[arg(long, value_delimiter = ',', default_values_t = [500.0, 2000.0])]
        rates: Vec<f64>,
        /// Seconds per phase.
        #[arg(long, default_value_t = 20.0)]
        duration: f64,
        /// Events in the log before the paced phases.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        #[arg(long, default_value = "target/release")]
        bin_dir: PathBuf,
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Everything, baselines first; writes JSON, SVG charts and a Markdown table.
    All {
        /// A few minutes: 10 s per load, a 100k-event log.
        #[arg(long, conflicts_with = "full")]
        quick: bool,
        /// The figures of BENCHMARKS.md: 30 s per load, a 1M-event log.
        #[arg(long)]
        full: bool,
        /// Where results.json, summary.md and the charts go.
        #[arg(long, default_value = "bench/results")]
        out: PathBuf,
        #[arg(long, default_value = "target/release")]
        bin_dir: PathBuf,
    },
}

/// The same allocator as the services, so the echo baseline is the limit of
/// tonic on this machine under the same conditions, and the client costs the
/// shared cores the same in every scenario.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.scenario)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(scenario: Scenario) -> Result<(), String> {
    match scenario {
        Scenario::EchoServer { listen, sync_dir } => echo::serve(listen, sync_dir.as_deref()).await,
        Scenario::Echo { common, echo } => {
            let server;
            let addr = match echo {
                Some(addr) => addr,
                None => {
                    server = start_echo_server(None)?;
                    server.addr
                }
            };
            let report = run_echo(addr, &common.plan(64), common.connections, "echo").await?;
            finish(&[report], common.json.as_deref())
        }
        Scenario::Sled {
            batch,
            value_bytes,
            duration,
            json,
        } => {
            let report = tokio::task::spawn_blocking(move || {
                sled_base::run(batch, value_bytes, Duration::from_secs_f64(duration))
            })
            .await
            .map_err(|e| e.to_string())??;
            finish(&[report], json.as_deref())
        }
        Scenario::Commands(common) => {
            // The command side alone, and the echo server under the same plan
            // in the same run: server CPU per request over the echo server's.
            let plan = common.plan(64);
            let echo = start_echo_server(None)?;
            let echo_cpu = echo.cpu_seconds().unwrap_or(0.0);
            let mut baseline = run_echo(echo.addr, &plan, common.connections, "echo").await?;
            per_request_cpu(&mut baseline, echo.cpu_seconds().unwrap_or(0.0) - echo_cpu);
            drop(echo);
            let target = match common.command {
                Some(addr) => Target::external_command(addr),
                None => Target::command_only(&common.bin_dir)?,
            };
            let before = target
                .command_proc
                .as_ref()
                .and_then(services::Proc::cpu_seconds);
            let (mut report, _) = target
                .commands(common.connections, &plan, "commands")
                .await?;
            let after = target
                .command_proc
                .as_ref()
                .and_then(services::Proc::cpu_seconds);
            if let (Some(before), Some(after)) = (before, after) {
                per_request_cpu(&mut report, after - before);
                let echo_us = baseline.extra.get("server_cpu_us_per_request");
                let us = report.extra.get("server_cpu_us_per_request");
                if let (Some(e), Some(u)) = (
                    echo_us.and_then(|v| v.as_f64()),
                    us.and_then(|v| v.as_f64()),
                ) {
                    report.extra("server_cpu_vs_echo", u / e);
                    report.extra("rate_vs_echo", report.rate / baseline.rate.max(1.0));
                }
            }
            finish(&[baseline, report], common.json.as_deref())
        }
        Scenario::Queries { common, orders } => {
            let target = Target::new(&common.bin_dir, common.command, common.query)?;
            let events = u64::try_from(orders).unwrap_or(u64::MAX) * commands::STEPS_PER_ORDER;
            target.ensure_log(events).await?;
            let report = run_queries(&target, &common.plan(64), common.connections, orders).await?;
            finish(&[report], common.json.as_deref())
        }
        Scenario::E2e(mut common) => {
            common.rate = common.rate.or(Some(2000.0));
            let target = Target::new(&common.bin_dir, common.command, common.query)?;
            let report = run_e2e(&target, &common.plan(32), common.connections).await?;
            finish(&[report], common.json.as_deref())
        }
        Scenario::Stream {
            common,
            events,
            full_decode,
        } => {
            // The command side alone; a log is written only into a started one.
            let target = match common.command {
                Some(addr) => Target::external_command(addr),
                None => {
                    let target = Target::command_only(&common.bin_dir)?;
                    let plan = Plan {
                        concurrency: 64,
                        duration: None,
                        count: Some(events),
                        rate: None,
                    };
                    target.commands(4, &plan, "fill log").await?;
                    target
                }
            };
            let channel = load::connect(target.command, 1).await?.remove(0);
            let report = stream::run(channel, full_decode).await?;
            finish(&[report], common.json.as_deref())
        }
        Scenario::Catchup { common, events } => {
            // A running command-service is caught up with as it is.
            let target;
            let head = match common.command {
                Some(addr) => {
                    target = Target::external_command(addr);
                    stream::log_head(load::connect(addr, 1).await?.remove(0)).await?
                }
                None => {
                    target = Target::new(&common.bin_dir, None, None)?;
                    target.ensure_log(events).await?
                }
            };
            let (report, _replica, _dir) =
                catchup::run(&common.bin_dir, target.command, head).await?;
            finish(&[report], common.json.as_deref())
        }
        Scenario::Bootstrap { common, events } => {
            let target;
            let head = match common.command {
                Some(addr) => {
                    target = Target::external_command(addr);
                    stream::log_head(load::connect(addr, 1).await?.remove(0)).await?
                }
                None => {
                    target = Target::new(&common.bin_dir, None, None)?;
                    target.ensure_log(events).await?
                }
            };
            let reports = bootstrap::run(&common.bin_dir, target.command, head).await?;
            finish(&reports, common.json.as_deref())
        }
        Scenario::Paced {
            rates,
            duration,
            events,
            bin_dir,
            json,
        } => {
            let reports =
                paced::run(&bin_dir, &rates, Duration::from_secs_f64(duration), events).await?;
            println!();
            finish(&reports, json.as_deref())
        }
        Scenario::All {
            quick: _,
            full,
            out,
            bin_dir,
        } => {
            all::run(
                if full {
                    all::Mode::Full
                } else {
                    all::Mode::Quick
                },
                &out,
                &bin_dir,
            )
            .await
        }
    }
}

/// Records a server's CPU seconds for a report, and per request.
fn per_request_cpu(report: &mut Report, server_cpu_s: f64) {
    #[allow(clippy::cast_precision_loss)]
    let n = report.count.max(1) as f64;
    report.extra("server_cpu_s", server_cpu_s);
    report.extra("server_cpu_us_per_request", server_cpu_s * 1e6 / n);
}

/// Prints the reports and writes them as JSON when asked.
fn finish(reports: &[Report], json: Option<&Path>) -> Result<(), String> {
    for report in reports {
        report.print();
    }
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(reports).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("write {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Starts `loadgen echo-server` as its own process; with `sync_dir`, the
/// durable echo writing there.
pub fn start_echo_server(sync_dir: Option<&Path>) -> Result<services::Proc, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut args = vec![
        "echo-server".to_owned(),
        "--listen".to_owned(),
        "127.0.0.1:0".to_owned(),
    ];
    if let Some(dir) = sync_dir {
        args.extend(["--sync-dir".to_owned(), dir.display().to_string()]);
    }
    services::Proc::spawn("echo-server", &exe, &args)
}

/// The echo baseline, with message sizes of a typical command and its result.
pub async fn run_echo(
    addr: SocketAddr,
    plan: &Plan,
    connections: usize,
    name: &str,
) -> Result<Report, String> {
    let request_size = commands::sample_request().encoded_len();
    let response_size = commands::sample_response().encoded_len();
    let workload = Arc::new(echo::EchoLoad {
        channels: load::connect(addr, connections).await?,
        request_size,
        response_size: u32::try_from(response_size).unwrap_or(64),
    });
    let mut report = load::run(name, "requests", workload, plan).await;
    plan.describe(&mut report, connections);
    report.setting("request_bytes", request_size);
    report.setting("response_bytes", response_size);
    Ok(report)
}

pub async fn run_queries(
    target: &Target,
    plan: &Plan,
    connections: usize,
    orders: usize,
) -> Result<Report, String> {
    let ids = queries::collect_ids(target.query_channel().await?, orders)
        .await
        .map_err(|e| format!("listing orders: {e}"))?;
    let known = ids.len();
    let workload = Arc::new(queries::Queries {
        channels: load::connect(target.query()?, connections).await?,
        order_ids: Arc::new(ids),
    });
    let mut report = load::run("queries", "queries", workload, plan).await;
    plan.describe(&mut report, connections);
    report.setting("orders", known);
    Ok(report)
}

pub async fn run_e2e(target: &Target, plan: &Plan, connections: usize) -> Result<Report, String> {
    let workload = Arc::new(e2e::EndToEnd {
        command: load::connect(target.command, connections).await?,
        query: load::connect(target.query()?, connections).await?,
        run_id: target::run_id(),
    });
    let mut report = load::run("e2e", "commands", workload, plan).await;
    plan.describe(&mut report, connections);
    Ok(report)
}

//! The load driver: `concurrency` workers run a `Workload` step after step,
//! closed-loop or at a fixed total rate, until a duration or a count is reached;
//! a progress line goes to stderr once a second.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tonic::transport::{Channel, Endpoint};

use crate::stats::{self, Latency, Report};

/// When a run stops and how fast it goes.
#[derive(Debug, Clone)]
pub struct Plan {
    pub concurrency: usize,
    pub duration: Option<Duration>,
    /// Steps in total (each step is one request unless the workload says otherwise).
    pub count: Option<u64>,
    /// Steps per second for all workers together; `None` = as fast as possible.
    pub rate: Option<f64>,
}

impl Plan {
    /// Records the plan in a report's settings.
    pub fn describe(&self, report: &mut Report, connections: usize) {
        report.setting("concurrency", self.concurrency);
        report.setting("connections", connections);
        if let Some(d) = self.duration {
            report.setting("duration_s", d.as_secs_f64());
        }
        if let Some(c) = self.count {
            report.setting("count", c);
        }
        if let Some(r) = self.rate {
            report.setting("rate", r);
        }
    }
}

/// What one worker sees of the run: its latency series and the shared counters.
pub struct Recorder {
    series: Vec<Histogram<u64>>,
    requests: Arc<AtomicU64>,
}

impl Recorder {
    /// One completed request: counted, and its latency put in series 0.
    pub fn request(&mut self, latency: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.record(0, latency);
    }

    /// A latency in another series (not counted as a request).
    pub fn record(&mut self, series: usize, latency: Duration) {
        self.series[series].saturating_record(stats::micros(latency));
    }
}

/// A kind of traffic. Each worker keeps its own `State` between steps.
pub trait Workload: Send + Sync + 'static {
    type State: Send + 'static;

    /// Names of the latency series; series 0 holds every counted request.
    fn series(&self) -> Vec<&'static str>;

    /// Prepares worker `index` (opens streams, creates its order, ...).
    fn start(
        &self,
        index: usize,
    ) -> impl Future<Output = Result<Self::State, tonic::Status>> + Send;

    /// One step: issues one or more requests and records them.
    fn step(
        &self,
        state: &mut Self::State,
        rec: &mut Recorder,
    ) -> impl Future<Output = Result<(), tonic::Status>> + Send;
}

/// Opens `n` separate HTTP/2 connections to `addr`.
pub async fn connect(addr: SocketAddr, n: usize) -> Result<Vec<Channel>, String> {
    let mut channels = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| e.to_string())?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        channels.push(channel);
    }
    Ok(channels)
}

/// Shared state of a run.
struct Control {
    started: Instant,
    deadline: Option<Instant>,
    count: Option<u64>,
    rate: Option<f64>,
    tickets: AtomicU64,
    stop: AtomicBool,
    errors: AtomicU64,
    samples: Mutex<BTreeMap<String, u64>>,
}

impl Control {
    /// The next step's ticket, or `None` once the run is over; with a rate,
    /// waits until that step's scheduled time.
    async fn ticket(&self) -> Option<u64> {
        if self.stop.load(Ordering::Relaxed) {
            return None;
        }
        let ticket = self.tickets.fetch_add(1, Ordering::Relaxed);
        if self.count.is_some_and(|c| ticket >= c) {
            return None;
        }
        if let Some(rate) = self.rate {
            #[allow(clippy::cast_precision_loss)]
            let at = self.started + Duration::from_secs_f64(ticket as f64 / rate);
            if self.deadline.is_some_and(|d| at >= d) {
                return None;
            }
            tokio::time::sleep_until(at.into()).await;
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return None;
        }
        Some(ticket)
    }

    fn failed(&self, status: &tonic::Status) {
        let n = self.errors.fetch_add(1, Ordering::Relaxed);
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let key = format!("{:?}: {}", status.code(), status.message());
        let key: String = key.chars().take(160).collect();
        if let Some(count) = samples.get_mut(&key) {
            *count += 1;
        } else if samples.len() < 5 {
            samples.insert(key, 1);
        }
        // A run where most steps fail measures nothing: stop it.
        if n >= 1000 && n > self.tickets.load(Ordering::Relaxed) / 2 {
            self.stop.store(true, Ordering::Relaxed);
        }
    }
}

/// Runs `workload` by `plan`; `name` labels the progress line and the report.
pub async fn run<W: Workload>(name: &str, unit: &str, workload: Arc<W>, plan: &Plan) -> Report {
    let series = workload.series();
    let requests = Arc::new(AtomicU64::new(0));
    let mut states = Vec::with_capacity(plan.concurrency);
    let mut start_errors = BTreeMap::new();
    for index in 0..plan.concurrency.max(1) {
        match workload.start(index).await {
            Ok(state) => states.push(state),
            Err(status) => {
                *start_errors
                    .entry(format!("start: {:?}: {}", status.code(), status.message()))
                    .or_insert(0) += 1;
            }
        }
    }
    let started = Instant::now();
    let control = Arc::new(Control {
        started,
        deadline: plan.duration.map(|d| started + d),
        count: plan.count,
        rate: plan.rate,
        tickets: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        errors: AtomicU64::new(0),
        samples: Mutex::new(start_errors),
    });
    let progress = tokio::spawn(progress(
        name.to_owned(),
        Arc::clone(&requests),
        Arc::clone(&control),
    ));
    let mut workers = Vec::with_capacity(states.len());
    for mut state in states {
        let workload = Arc::clone(&workload);
        let control = Arc::clone(&control);
        let mut rec = Recorder {
            series: series.iter().map(|_| stats::histogram()).collect(),
            requests: Arc::clone(&requests),
        };
        workers.push(tokio::spawn(async move {
            while control.ticket().await.is_some() {
                if let Err(status) = workload.step(&mut state, &mut rec).await {
                    control.failed(&status);
                }
            }
            rec.series
        }));
    }
    let mut merged: Vec<Histogram<u64>> = series.iter().map(|_| stats::histogram()).collect();
    for worker in workers {
        if let Ok(histograms) = worker.await {
            for (total, h) in merged.iter_mut().zip(&histograms) {
                let _ = total.add(h);
            }
        }
    }
    let elapsed = started.elapsed();
    control.stop.store(true, Ordering::Relaxed);
    progress.abort();
    let mut report = Report::new(name, unit);
    report.finish(requests.load(Ordering::Relaxed), elapsed);
    report.errors = control.errors.load(Ordering::Relaxed);
    report.error_samples = control
        .samples
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    for (name, h) in series.iter().zip(&merged) {
        if !h.is_empty() {
            report
                .latencies
                .insert((*name).to_owned(), Latency::from_histogram(h));
        }
    }
    report
}

/// Prints `[name] 12s  34567/s  total 400000  errors 0` once a second.
async fn progress(name: String, requests: Arc<AtomicU64>, control: Arc<Control>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last = 0;
    loop {
        tick.tick().await;
        let now = requests.load(Ordering::Relaxed);
        eprintln!(
            "[{name}] {:>4.0}s  {:>8}/s  total {:>9}  errors {}",
            control.started.elapsed().as_secs_f64(),
            now - last,
            now,
            control.errors.load(Ordering::Relaxed)
        );
        last = now;
    }
}

/// A progress line for phases that are not request loops (log reads, catch-up).
pub fn progress_line(name: &str, started: Instant, done: u64, per_second: u64, note: &str) {
    eprintln!(
        "[{name}] {:>4.0}s  {per_second:>8}/s  total {done:>9}  {note}",
        started.elapsed().as_secs_f64()
    );
}

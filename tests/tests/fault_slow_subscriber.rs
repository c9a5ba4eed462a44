//! Isolation of failure: subscribers that stop reading while writers run do
//! not make commands slower (compared with a phase without them, in the same
//! test, by a generous factor), and once they read again they get every event
//! exactly once, in order.
//!
//! `FAULT_SLOW_COMMANDS=5000 cargo test -p e2e-tests --test fault_slow_subscriber`

use std::time::{Duration, Instant};

use e2e::commands::{add, create, item, ok};
use e2e::event_log::stalled_subscription;
use e2e::fault::count;
use e2e::{command_client, pb, read_log, start_command_service, CommandClient, Service};
use pb::subscribe_events_response::Kind;
use tonic::Streaming;

/// Runs `per_client` commands on each of 8 clients (each on its own order)
/// and returns every command's latency, sorted.
async fn measure(svc: &Service, phase: &str, per_client: usize) -> Vec<Duration> {
    let mut tasks = Vec::new();
    for c in 0..8 {
        let mut client: CommandClient = command_client(svc).await;
        let id = format!("{phase}-{c}");
        tasks.push(tokio::spawn(async move {
            ok(&mut client, create(&id, vec![])).await;
            let mut latencies = Vec::with_capacity(per_client);
            for n in 0..per_client {
                // A new sku each time, a fresh line up to the 100-line limit.
                let sku = format!("s{}", n % 90);
                let started = Instant::now();
                ok(&mut client, add(&id, item(&sku, 1, 1))).await;
                latencies.push(started.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    all
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

/// Reads `stream` until position `head`, checking it against `log`.
async fn read_all(stream: &mut Streaming<pb::SubscribeEventsResponse>, log: &[pb::EventEnvelope]) {
    let head = log.len() as u64;
    let mut next = 1;
    while next <= head {
        let message = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .expect("the stalled subscriber gets its events once it reads")
            .expect("stream error")
            .expect("stream ended");
        if let Some(Kind::Event(e)) = message.kind {
            assert_eq!(e.position, next, "event out of order or repeated");
            assert_eq!(e, log[next as usize - 1], "event differs from the log");
            next += 1;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscribers_that_stop_reading_do_not_slow_writers_and_later_get_everything() {
    let per_client = count("FAULT_SLOW_COMMANDS", 250);
    let dir = tempfile::TempDir::new().unwrap();
    let svc = start_command_service(dir.path());
    // Warm up (connections, sled), then measure without subscribers.
    measure(&svc, "warm", 20).await;
    let before = measure(&svc, "alone", per_client).await;

    // Three subscribers from position 0 that never read: the backlog (over
    // 2,000 events) is more than their HTTP/2 windows and the server's
    // per-subscriber buffer (1,024 events) hold, so the server side of each
    // is held up by them for the whole phase.
    let mut stalled = Vec::new();
    for _ in 0..3 {
        stalled.push(stalled_subscription(&svc).await);
    }
    let during = measure(&svc, "stalled", per_client).await;

    let (p50_before, p90_before) = (percentile(&before, 50), percentile(&before, 90));
    let (p50_during, p90_during) = (percentile(&during, 50), percentile(&during, 90));
    let (total_before, total_during): (Duration, Duration) =
        (before.iter().sum(), during.iter().sum());
    eprintln!(
        "fault_slow_subscriber: {} commands per phase; p50 {p50_before:?} -> {p50_during:?}, \
         p90 {p90_before:?} -> {p90_during:?}, total {total_before:?} -> {total_during:?}",
        before.len()
    );
    // Generous: scheduling noise on a shared 2-core machine, not a benchmark.
    assert!(
        p50_during <= p50_before * 3 + Duration::from_millis(2),
        "median command latency grew with stalled subscribers: {p50_before:?} -> {p50_during:?}"
    );
    assert!(
        total_during <= total_before * 3,
        "commands got slower with stalled subscribers: {total_before:?} -> {total_during:?}"
    );

    // Reading again, each gets the whole log, once, in order.
    let log = read_log(&mut command_client(&svc).await, 0).await;
    assert!(log.len() > 2 * per_client * 8);
    for stream in &mut stalled {
        read_all(stream, &log).await;
    }
}

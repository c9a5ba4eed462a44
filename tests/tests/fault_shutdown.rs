//! Graceful shutdown under load: SIGTERM at a random moment while concurrent
//! writers run, `FAULT_SIGTERM_ROUNDS` times (default 6) over one data
//! directory. The service exits 0; every command is either acknowledged and
//! durable, or failed (and then settled by a retry with its key); nothing
//! acknowledged is lost. Also: SIGTERM while a subscriber has stopped reading
//! still exits.
//!
//! `FAULT_SIGTERM_ROUNDS=50 cargo test -p e2e-tests --test fault_shutdown`

use std::time::{Duration, Instant};

use e2e::commands::{add, create, item, ok};
use e2e::event_log::stalled_subscription;
use e2e::fault::{count, seed, tally};
use e2e::writer::{assert_command_side, settle_all, Round, Writer};
use e2e::{command_args, command_client, connect_command, read_log, terminate_within, Service};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tempfile::TempDir;

const WRITERS: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_acknowledges_only_what_is_durable() {
    let rounds = count("FAULT_SIGTERM_ROUNDS", 6);
    let mut rng = StdRng::seed_from_u64(seed("fault_shutdown"));
    let dir = TempDir::new().unwrap();
    let args = command_args(dir.path(), "127.0.0.1:0");
    let mut writers: Vec<Writer> = (0..WRITERS)
        .map(|w| Writer::new(&format!("t{w}"), rng.random()))
        .collect();
    let started = Instant::now();
    let mut durable_unacked = 0;
    for round in 0..rounds {
        let svc = Service::spawn("command-service", &args, &[]);
        let endpoint = svc.endpoint();
        let mut client = connect_command(&endpoint).await;
        // Commands left pending by the previous round are settled first.
        let head = read_log(&mut client, 0).await.len() as u64;
        durable_unacked += settle_all(&mut writers, &mut client, head).await;
        let retry_from: Vec<usize> = writers.iter().map(|w| w.acks.len()).collect();
        let mut round_writers = Round::start(&mut writers, &endpoint).await;
        round_writers.acknowledged(rng.random_range(1..=120)).await;
        let exit = terminate_within(svc, Duration::from_secs(30)).await;
        assert!(
            exit.success(),
            "round {round}: SIGTERM exits 0, got {exit:?}"
        );
        let acks = round_writers.join(&mut writers, "shutdown").await;

        let svc = Service::spawn("command-service", &args, &[]);
        let mut client = connect_command(&svc.endpoint()).await;
        let head = read_log(&mut client, 0).await.len() as u64;
        // Check before settling: everything acknowledged is there.
        for w in &writers {
            for (cmd, ack) in &w.acks {
                assert!(ack.position <= head, "acknowledged but lost: {cmd:?}");
            }
        }
        durable_unacked += settle_all(&mut writers, &mut client, head).await;
        let log = assert_command_side(&mut client, &writers, &retry_from).await;
        eprintln!(
            "round {round}: SIGTERM after {} acks; log {} events",
            acks,
            log.len()
        );
    }
    let codes = tally(writers.iter().flat_map(|w| w.failures.iter().copied()));
    eprintln!(
        "fault_shutdown: {rounds} rounds in {:?}; failed commands found durable afterwards: {durable_unacked}; failure codes seen: {codes:?}",
        started.elapsed()
    );
}

/// hyper's graceful shutdown waits for every open stream to end, and a stream
/// whose client stopped reading never does (HTTP/2 flow control holds its last
/// frames). `--shutdown-grace-ms` bounds that wait: the service then closes the
/// connection, flushes and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_with_a_subscriber_that_stopped_reading_still_exits() {
    let dir = TempDir::new().unwrap();
    let mut args = command_args(dir.path(), "127.0.0.1:0");
    args.extend(["--shutdown-grace-ms".to_owned(), "1000".to_owned()]);
    let svc = Service::spawn("command-service", &args, &[]);
    let mut client = command_client(&svc).await;
    ok(&mut client, create("big", vec![])).await;
    // More events than the subscriber's buffers and window hold.
    let mut tasks = Vec::new();
    for c in 0..8 {
        let mut client = command_client(&svc).await;
        tasks.push(tokio::spawn(async move {
            let id = format!("o{c}");
            ok(&mut client, create(&id, vec![])).await;
            for n in 0..300 {
                let sku = format!("s{}", n % 90);
                ok(&mut client, add(&id, item(&sku, 1, 1))).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Minimal HTTP/2 windows: the server can send it only 64 KiB.
    let stalled = stalled_subscription(&svc).await;
    // The server has filled what it can towards the subscriber: a second
    // subscriber that does read has caught up, which takes longer.
    let log = read_log(&mut client, 0).await;
    assert!(
        log.len() > 2_000,
        "more events than the stalled subscriber can take"
    );
    let exit = terminate_within(svc, Duration::from_secs(30)).await;
    assert!(exit.success(), "SIGTERM exits 0, got {exit:?}");
    drop(stalled);
}

//! Fault injection: `kill -9` of command-service at random moments while
//! concurrent writers run, `FAULT_ROUNDS` times (default 20) over one data
//! directory, with a query-service replica following throughout. After each
//! round: no acknowledged command lost, the log gap-free and holding nothing
//! else, idempotency keys still honoured, the replica equal to the model.
//!
//! `FAULT_ROUNDS=200 FAULT_SEED=... cargo test -p e2e-tests --test fault_command_crash`

use std::time::Instant;

use e2e::fault::{count, seed, tally};
use e2e::writer::{assert_command_side, assert_replica, model_of, Writer};
use e2e::{connect_command, query_client, read_log, start_command_service, start_query_service};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tempfile::TempDir;
use tokio::sync::watch;

const WRITERS: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_command_service_under_concurrent_writers_loses_nothing() {
    let rounds = count("FAULT_ROUNDS", 20);
    let mut rng = StdRng::seed_from_u64(seed("fault_command_crash"));
    let dir = TempDir::new().unwrap();
    let command_dir = dir.path().join("command");
    let mut cmd = start_command_service(&command_dir);
    let replica = start_query_service(&dir.path().join("query"), &cmd.endpoint());
    let query = query_client(&replica).await;

    let mut writers: Vec<Writer> = (0..WRITERS)
        .map(|w| Writer::new(&format!("w{w}"), rng.random()))
        .collect();
    let started = Instant::now();
    let mut committed_unacknowledged = 0;
    for round in 0..rounds {
        let endpoint = cmd.endpoint();
        let retry_from: Vec<usize> = writers.iter().map(|w| w.acks.len()).collect();
        let failures_before: usize = writers.iter().map(|w| w.failures.len()).sum();
        let (acked_tx, mut acked_rx) = watch::channel(0usize);
        let (_stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        for w in writers.drain(..) {
            let client = connect_command(&endpoint).await;
            tasks.push(tokio::spawn(w.run(
                client,
                acked_tx.clone(),
                stop_rx.clone(),
            )));
        }
        // The moment of the kill: after a random number of acknowledgements,
        // with every writer still sending.
        let threshold = rng.random_range(1..=120);
        tokio::time::timeout(
            std::time::Duration::from_secs(60),
            acked_rx.wait_for(|n| *n >= threshold),
        )
        .await
        .expect("writers make progress")
        .unwrap();
        cmd.kill();
        for task in tasks {
            writers.push(
                tokio::time::timeout(std::time::Duration::from_secs(30), task)
                    .await
                    .expect("a writer notices the kill")
                    .expect("writer task"),
            );
        }
        let failed_now = writers.iter().map(|w| w.failures.len()).sum::<usize>() - failures_before;

        cmd.restart();
        assert_eq!(cmd.endpoint(), endpoint, "back on the same address");
        let mut client = connect_command(&cmd.endpoint()).await;
        let head = read_log(&mut client, 0).await.len() as u64;
        // Commands in flight at the kill are settled by a retry with their
        // key: the original result if they had committed (durable but never
        // acknowledged), a commit now if not.
        let mut durable_unacked = 0;
        for w in &mut writers {
            if let Some(ack) = w.settle(&mut client).await {
                if ack.position <= head {
                    durable_unacked += 1;
                }
            }
        }
        committed_unacknowledged += durable_unacked;
        let log = assert_command_side(&mut client, &writers, &retry_from).await;
        let model = model_of(&writers);
        assert_eq!(model.max_position, log.len() as u64);
        assert_replica(&query, &model, &log).await;
        eprintln!(
            "round {round}: killed after {} acks; {failed_now} commands in flight, {durable_unacked} of them durable; log {} events, {} orders",
            *acked_rx.borrow(),
            log.len(),
            model.orders.len()
        );
    }
    let codes = tally(writers.iter().flat_map(|w| w.failures.iter().copied()));
    eprintln!(
        "fault_command_crash: {rounds} rounds in {:?}; in-flight commands found durable after the kill: {committed_unacknowledged}; failure codes seen: {codes:?}",
        started.elapsed()
    );
}

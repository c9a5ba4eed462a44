//! Fault injection: `kill -9` of command-service at random moments while
//! concurrent writers run, `FAULT_ROUNDS` times (default 20) over one data
//! directory, with a query-service replica following throughout. After each
//! round: no acknowledged command lost, the log gap-free and holding nothing
//! else, idempotency keys still honoured, the replica equal to the model.
//!
//! `FAULT_ROUNDS=200 FAULT_SEED=... cargo test -p e2e-tests --test fault_command_crash`

use std::time::Instant;

use e2e::fault::{count, seed, tally};
use e2e::writer::{assert_command_side, assert_replica, model_of, settle_all, Round, Writer};
use e2e::{connect_command, query_client, read_log, start_command_service, start_query_service};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tempfile::TempDir;

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
        let mut round_writers = Round::start(&mut writers, &endpoint).await;
        // The moment of the kill: after a random number of acknowledgements,
        // with every writer still sending.
        round_writers.acknowledged(rng.random_range(1..=120)).await;
        cmd.kill();
        let acks = round_writers.join(&mut writers, "kill").await;
        let failed_now = writers.iter().map(|w| w.failures.len()).sum::<usize>() - failures_before;

        cmd.restart();
        assert_eq!(cmd.endpoint(), endpoint, "back on the same address");
        let mut client = connect_command(&cmd.endpoint()).await;
        let head = read_log(&mut client, 0).await.len() as u64;
        // Commands in flight at the kill are settled by a retry with their
        // key: the original result if they had committed (durable but never
        // acknowledged), a commit now if not.
        let durable_unacked = settle_all(&mut writers, &mut client, head).await;
        committed_unacknowledged += durable_unacked;
        let log = assert_command_side(&mut client, &writers, &retry_from).await;
        let model = model_of(&writers);
        assert_eq!(model.max_position, log.len() as u64);
        assert_replica(&query, &model, &log).await;
        eprintln!(
            "round {round}: killed after {} acks; {failed_now} commands in flight, {durable_unacked} of them durable; log {} events, {} orders",
            acks,
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

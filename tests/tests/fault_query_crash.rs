//! Fault injection: `kill -9` of query-service at random moments, half the
//! rounds while it catches up on a backlog written while it was down, half
//! while it applies live events under concurrent writers; `FAULT_QUERY_ROUNDS`
//! rounds in all (default 20), over one data directory. After each round the
//! restarted replica resumes from its checkpoint and answers exactly like the
//! model of what the command side acknowledged (views, analytics, lists).
//!
//! `FAULT_QUERY_ROUNDS=200 cargo test -p e2e-tests --test fault_query_crash`

use std::path::Path;
use std::time::{Duration, Instant};

use e2e::fault::{count, seed};
use e2e::model::placement_dates;
use e2e::queries::projection_status;
use e2e::workload::run_workload;
use e2e::{command_client, query_args, query_client, read_log, start_command_service, Service};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tempfile::TempDir;

/// One event per transaction, so catching up takes long enough to be hit.
fn start_replica(dir: &Path, endpoint: &str, max_batch: u32) -> Service {
    let mut args = query_args(dir, "127.0.0.1:0", endpoint);
    args.extend(["--max-batch".to_owned(), max_batch.to_string()]);
    Service::spawn("query-service", &args, &[])
}

/// The checkpoint a replica found on disk at start, as it logged it
/// (`read models opened applied_position=N`): what it had durably applied.
/// Its status a moment later may already be past it, and those later
/// batches are not yet durable when a `kill -9` comes.
fn opened_at(replica: &Service) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = replica
            .logs()
            .iter()
            .find(|line| line.contains("read models opened"))
            .and_then(|line| line.split("applied_position=").nth(1))
            .and_then(|rest| {
                rest.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
                    .parse()
                    .ok()
            });
        match found {
            Some(position) => return position,
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            None => panic!("no start checkpoint in the log: {:?}", replica.logs()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_query_service_during_catch_up_and_live_apply() {
    let rounds = count("FAULT_QUERY_ROUNDS", 20);
    let mut rng = StdRng::seed_from_u64(seed("fault_query_crash"));
    let dir = TempDir::new().unwrap();
    let cmd = start_command_service(&dir.path().join("command"));
    let channel = cmd.channel().await;
    let query_dir = dir.path().join("query");
    let mut model = run_workload(channel.clone(), "base", 60, 12, rng.random()).await;
    let started = Instant::now();
    let (mut mid_catch_up, mut mid_live) = (0, 0);

    for round in 0..rounds {
        let checkpoint_before;
        let head;
        let killed_at;
        if round % 2 == 0 {
            // Catch-up: the backlog since the last checkpoint, one event per
            // transaction; killed once a random share of it is applied.
            let part =
                run_workload(channel.clone(), &format!("c{round}"), 25, 12, rng.random()).await;
            model.merge(part);
            head = model.max_position;
            let mut replica = start_replica(&query_dir, &cmd.endpoint(), 1);
            let q = query_client(&replica).await;
            checkpoint_before = opened_at(&replica);
            let target = rng.random_range(checkpoint_before..head);
            let deadline = Instant::now() + Duration::from_secs(30);
            killed_at = loop {
                let applied = projection_status(&q).await.applied_position;
                if applied >= target {
                    replica.kill();
                    break applied;
                }
                assert!(Instant::now() < deadline, "catch-up never reached {target}");
            };
            if killed_at < head {
                mid_catch_up += 1;
            }
        } else {
            // Live: writers run while the replica follows them; killed after
            // a random number of events applied.
            let replica = start_replica(&query_dir, &cmd.endpoint(), 64);
            let q = query_client(&replica).await;
            checkpoint_before = opened_at(&replica);
            let (live_channel, prefix, workload_seed) =
                (channel.clone(), format!("l{round}"), rng.random());
            let workload = tokio::spawn(async move {
                run_workload(live_channel, &prefix, 25, 8, workload_seed).await
            });
            let target = checkpoint_before + rng.random_range(1..=80);
            let mut replica = replica;
            let deadline = Instant::now() + Duration::from_secs(30);
            killed_at = loop {
                let applied = projection_status(&q).await.applied_position;
                if applied >= target || workload.is_finished() {
                    replica.kill();
                    break applied;
                }
                assert!(
                    Instant::now() < deadline,
                    "live apply never reached {target}"
                );
            };
            let was_live = !workload.is_finished();
            model.merge(workload.await.expect("workload"));
            head = model.max_position;
            if was_live {
                mid_live += 1;
            }
        }

        // Restart on the same directory: it resumes after its checkpoint and
        // must equal the model, with nothing applied twice or skipped.
        let replica = start_replica(&query_dir, &cmd.endpoint(), 512);
        let q = query_client(&replica).await;
        let resumed_from = projection_status(&q).await.applied_position;
        assert!(
            resumed_from >= checkpoint_before && resumed_from <= head,
            "resumed from {resumed_from}, checkpoint was {checkpoint_before}, head {head}"
        );
        let log = read_log(&mut command_client(&cmd).await, 0).await;
        assert_eq!(log.len() as u64, model.max_position);
        model.assert_query_side(&q, &placement_dates(&log)).await;
        let status = projection_status(&q).await;
        assert!(
            status.error.is_empty(),
            "projection stopped: {}",
            status.error
        );
        assert_eq!(status.applied_position, head);
        eprintln!(
            "round {round} ({}): checkpoint {checkpoint_before}, killed at applied {killed_at}, head {head}, resumed from {resumed_from}",
            if round % 2 == 0 { "catch-up" } else { "live" }
        );
        drop(replica);
    }
    eprintln!(
        "fault_query_crash: {rounds} rounds in {:?}: {mid_catch_up} kills mid catch-up, {mid_live} mid live apply; {} orders, head {}",
        started.elapsed(),
        model.orders.len(),
        model.max_position
    );
    // The kills must really land in the middle of the work most of the time.
    assert!(
        mid_catch_up * 4 >= rounds.div_ceil(2) * 3 / 2,
        "too few kills mid catch-up"
    );
    assert!(
        mid_live * 4 >= (rounds / 2) * 3 / 2,
        "too few kills mid live apply"
    );
}

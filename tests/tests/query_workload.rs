//! query-service against a randomized workload on the real command-service: every
//! order and the analytics equal a model computed from what the command side
//! acknowledged; replicas and a rebuild give identical answers.

use std::time::{Duration, Instant};

use e2e::model::placement_dates;
use e2e::queries::projection_status;
use e2e::workload::run_workload;
use e2e::{
    command_client, query_args, query_client, read_log, start_command_service, start_query_service,
    Service,
};
use pb::OrderStatus as S;
use tempfile::TempDir;

use e2e::pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_randomized_workload_of_500_orders_matches_the_model() {
    let dir = TempDir::new().unwrap();
    let cmd = start_command_service(&dir.path().join("command"));
    let qs = start_query_service(&dir.path().join("query"), &cmd.endpoint());
    let started = Instant::now();
    let model = run_workload(cmd.channel().await, "r", 500, 24, 20261126).await;
    eprintln!(
        "workload: {} orders, {} commands acknowledged, {} refused, head {} in {:?}",
        model.orders.len(),
        model.commands_acknowledged,
        model.commands_rejected,
        model.max_position,
        started.elapsed()
    );
    assert_eq!(model.orders.len(), 500);
    assert!(
        model.commands_rejected > 100,
        "the workload also sends refused commands"
    );
    for status in [S::Draft, S::Placed, S::Shipped, S::Cancelled] {
        assert!(
            model.orders.values().filter(|o| o.status == status).count() >= 20,
            "the workload leaves orders in every status"
        );
    }
    assert!(model
        .orders
        .values()
        .any(|o| o.status == S::Cancelled && o.was_placed));

    let log = read_log(&mut command_client(&cmd).await, 0).await;
    assert_eq!(
        log.len() as u64,
        model.max_position,
        "one event per acknowledged command"
    );
    let dates = placement_dates(&log);
    let q = query_client(&qs).await;
    model.assert_query_side(&q, &dates).await;
    let snapshot = model.read_snapshot(&q).await;
    model.assert_lists(&snapshot);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_give_identical_answers() {
    let dir = TempDir::new().unwrap();
    let cmd = start_command_service(&dir.path().join("command"));
    // One replica follows the workload live, the other starts after it and
    // builds everything from position 0.
    let live = start_query_service(&dir.path().join("query-a"), &cmd.endpoint());
    let model = run_workload(cmd.channel().await, "p", 150, 16, 7).await;
    let late = start_query_service(&dir.path().join("query-b"), &cmd.endpoint());

    let a = model.read_snapshot(&query_client(&live).await).await;
    let b = model.read_snapshot(&query_client(&late).await).await;
    model.assert_lists(&a);
    assert_eq!(a.views.len(), 150);
    assert!(a == b, "the replicas disagree:\n{a:#?}\n---\n{b:#?}");
    let dates = placement_dates(&read_log(&mut command_client(&cmd).await, 0).await);
    model
        .assert_query_side(&query_client(&late).await, &dates)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_reproduces_the_incrementally_built_read_models() {
    let dir = TempDir::new().unwrap();
    let cmd = start_command_service(&dir.path().join("command"));
    let query_dir = dir.path().join("query");
    let mut qs = start_query_service(&query_dir, &cmd.endpoint());
    let model = run_workload(cmd.channel().await, "b", 120, 16, 99).await;
    let before = model.read_snapshot(&query_client(&qs).await).await;
    assert!(qs.terminate().success(), "SIGTERM exits 0");

    let mut args = query_args(&query_dir, "127.0.0.1:0", &cmd.endpoint());
    args.push("--rebuild".to_owned());
    let rebuilt = Service::spawn("query-service", &args, &[]);
    let q = query_client(&rebuilt).await;
    // Queries are answered (from the old trees) while the rebuild runs.
    let status = projection_status(&q).await;
    assert!(
        status.applied_position >= model.max_position,
        "old trees served meanwhile"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !rebuilt
        .logs()
        .iter()
        .any(|l| l.contains("rebuild caught up"))
    {
        assert!(
            Instant::now() < deadline,
            "rebuild did not finish: {:#?}",
            rebuilt.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = model.read_snapshot(&q).await;
    assert!(before == after, "rebuilt read models differ");
}

//! One history (SPEC guarantee 8): a replica never applies events of a log
//! other than the one its read models were built from. The command side's
//! data directory is wiped and the service restarted on the same address;
//! new orders are written on the new log, past the replica's old checkpoint.
//! The replica stops applying and says why, reads with `min_position` beyond
//! what it holds fail at once, and a restart with `--rebuild` builds the read
//! models from the new log alone.

use std::time::Duration;

use e2e::commands::create_request;
use e2e::queries::projection_status;
use e2e::{
    command_client, eventually, pb, query_args, query_client, start_command_service, Service,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_command_log_stops_the_replica_until_it_rebuilds() {
    let dir = tempfile::tempdir().unwrap();
    let command_dir = dir.path().join("command");
    let query_dir = dir.path().join("query");
    let mut command = start_command_service(&command_dir);
    let replica_args = query_args(&query_dir, "127.0.0.1:0", &command.endpoint());
    let replica = Service::spawn("query-service", &replica_args, &[]);
    let query = query_client(&replica).await;

    // The first history: 3 orders, applied.
    let mut commands = command_client(&command).await;
    let mut old_head = 0;
    for i in 0..3 {
        old_head = commands
            .create_order(create_request(&format!("old-{i}")))
            .await
            .unwrap()
            .into_inner()
            .position;
    }
    eventually("the replica applies the first log", Duration::from_secs(30), || {
        let query = query.clone();
        async move { (projection_status(&query).await.applied_position == old_head).then_some(()) }
    })
    .await;

    // The command side's data is replaced: same address, a new, empty log.
    command.kill();
    std::fs::remove_dir_all(&command_dir).unwrap();
    command.restart();
    let mut commands = command_client(&command).await;
    let mut new_position = 0;
    for i in 0..6 {
        new_position = commands
            .create_order(create_request(&format!("new-{i}")))
            .await
            .unwrap()
            .into_inner()
            .position;
    }
    assert!(
        new_position > old_head,
        "the new log passes the old checkpoint"
    );

    let status = eventually("the replica stops", Duration::from_secs(30), || {
        let query = query.clone();
        async move {
            let status = projection_status(&query).await;
            (!status.error.is_empty()).then_some(status)
        }
    })
    .await;
    assert!(
        status.error.contains("another event log"),
        "{}",
        status.error
    );
    assert!(status.error.contains("--rebuild"), "{}", status.error);
    assert_eq!(
        status.applied_position, old_head,
        "nothing of the new log applied"
    );
    // No blend: the new orders are not there, the old ones still are.
    let mut q = query.clone();
    let missing = q
        .get_order(pb::GetOrderRequest {
            order_id: "new-5".into(),
            min_position: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    q.get_order(pb::GetOrderRequest {
        order_id: "old-0".into(),
        min_position: 0,
    })
    .await
    .unwrap();
    // A read that waits for the new log fails at once, not at its deadline.
    let started = std::time::Instant::now();
    let refused = q
        .get_order(pb::GetOrderRequest {
            order_id: "new-5".into(),
            min_position: new_position,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // Still stopped after a plain restart: the recorded identity is durable.
    drop(replica);
    let replica = Service::spawn("query-service", &replica_args, &[]);
    let query = query_client(&replica).await;
    eventually(
        "the restarted replica stops again",
        Duration::from_secs(30),
        || {
            let query = query.clone();
            async move { (!projection_status(&query).await.error.is_empty()).then_some(()) }
        },
    )
    .await;
    // (What it applied of the first log may not all have been on disk at
    // the kill: read models are rebuilt from the log, never synced.)
    assert!(projection_status(&query).await.applied_position <= old_head);
    drop(replica);

    // --rebuild starts over on the new log.
    let mut rebuild_args = replica_args.clone();
    rebuild_args.push("--rebuild".into());
    let replica = Service::spawn("query-service", &rebuild_args, &[]);
    let mut q = query_client(&replica).await;
    let order = q
        .get_order(pb::GetOrderRequest {
            order_id: "new-5".into(),
            min_position: new_position,
        })
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(order.last_position, new_position);
    let status = projection_status(&q).await;
    assert!(status.error.is_empty(), "{}", status.error);
    let gone = q
        .get_order(pb::GetOrderRequest {
            order_id: "old-0".into(),
            min_position: new_position,
        })
        .await
        .unwrap_err();
    assert_eq!(
        gone.code(),
        tonic::Code::NotFound,
        "the old history is gone"
    );
}

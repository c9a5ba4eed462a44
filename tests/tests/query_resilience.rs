//! query-service when things break: `kill -9` in the middle of catching up, and
//! command-service going away and coming back on the same address while
//! query-service runs. After each, the answers still equal the model.

use std::time::{Duration, Instant};

use e2e::model::{placement_dates, Model};
use e2e::queries::{get_orders, projection_status};
use e2e::workload::run_workload;
use e2e::{
    command_client, eventually, pb, query_args, query_client, read_log, start_command_service,
    start_query_service, Service,
};
use tempfile::TempDir;
use tonic::Code;

fn query_with_batch(dir: &std::path::Path, endpoint: &str, max_batch: u32) -> Service {
    let mut args = query_args(dir, "127.0.0.1:0", endpoint);
    args.extend(["--max-batch".to_owned(), max_batch.to_string()]);
    Service::spawn("query-service", &args, &[])
}

/// Polls the status as fast as it answers until `at_least` is applied, then
/// kills the process. Returns the last status seen before the kill.
async fn kill_while_catching_up(
    service: &mut Service,
    at_least: u64,
    head: u64,
) -> pb::GetProjectionStatusResponse {
    let q = query_client(service).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = projection_status(&q).await;
        if status.applied_position >= at_least {
            service.kill();
            assert!(
                status.applied_position < head,
                "caught up before it could be killed mid-way ({status:?})"
            );
            return status;
        }
        assert!(Instant::now() < deadline, "never started applying");
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_mid_catch_up_then_restart_still_equals_the_model() {
    let dir = TempDir::new().unwrap();
    let cmd = start_command_service(&dir.path().join("command"));
    let model = run_workload(cmd.channel().await, "k", 300, 24, 4242).await;
    let dates = placement_dates(&read_log(&mut command_client(&cmd).await, 0).await);
    let query_dir = dir.path().join("query");

    // One event per transaction makes catching up long enough to be interrupted.
    let mut first = query_with_batch(&query_dir, &cmd.endpoint(), 1);
    let seen = kill_while_catching_up(&mut first, model.max_position / 3, model.max_position).await;
    eprintln!(
        "killed at applied {} of {}",
        seen.applied_position, model.max_position
    );

    let mut second = query_with_batch(&query_dir, &cmd.endpoint(), 1);
    let seen =
        kill_while_catching_up(&mut second, model.max_position * 2 / 3, model.max_position).await;
    eprintln!(
        "killed again at applied {} of {}",
        seen.applied_position, model.max_position
    );

    let third = start_query_service(&query_dir, &cmd.endpoint());
    let q = query_client(&third).await;
    model.assert_query_side(&q, &dates).await;
    let status = projection_status(&q).await;
    assert!(status.error.is_empty(), "{}", status.error);
    assert_eq!(status.applied_position, model.max_position);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn command_service_restarting_is_reconnected_and_caught_up() {
    let dir = TempDir::new().unwrap();
    let command_dir = dir.path().join("command");
    let mut cmd = start_command_service(&command_dir);
    let endpoint = cmd.endpoint();
    let qs = start_query_service(&dir.path().join("query"), &endpoint);
    let q = query_client(&qs).await;

    let first = run_workload(cmd.channel().await, "before", 40, 8, 1).await;
    // Killed only once the replica has everything: what it applied is then known.
    eventually("connected and caught up", Duration::from_secs(10), || {
        let q = q.clone();
        async move {
            let s = projection_status(&q).await;
            (s.connected && s.applied_position == first.max_position).then_some(())
        }
    })
    .await;

    cmd.kill();
    let status = eventually("connected = false", Duration::from_secs(20), || {
        let q = q.clone();
        async move {
            let s = projection_status(&q).await;
            (!s.connected).then_some(s)
        }
    })
    .await;
    assert_eq!(status.applied_position, first.max_position);
    // Queries keep being answered from what was applied; beyond it they fail in time.
    let some_order = first.orders.keys().next().unwrap().clone();
    let view = get_orders(&q, std::slice::from_ref(&some_order), first.max_position).await;
    first.orders[&some_order].assert_view(&view[0]);
    let mut request = tonic::Request::new(pb::GetOrderRequest {
        order_id: some_order,
        min_position: first.max_position + 1,
    });
    request.set_timeout(Duration::from_millis(500));
    let err = q.clone().get_order(request).await.unwrap_err();
    assert!(
        matches!(err.code(), Code::DeadlineExceeded | Code::Unavailable),
        "{err:?}"
    );
    assert!(err.message().contains("not connected"), "{}", err.message());

    cmd.restart();
    assert_eq!(cmd.endpoint(), endpoint, "back on the same address");
    eventually("connected again", Duration::from_secs(20), || {
        let q = q.clone();
        async move { projection_status(&q).await.connected.then_some(()) }
    })
    .await;

    let second = run_workload(cmd.channel().await, "after", 40, 8, 2).await;
    let mut model = Model {
        orders: first.orders.clone(),
        ..Model::default()
    };
    model.orders.extend(second.orders);
    model.max_position = second.max_position;
    assert!(
        second.max_position > first.max_position,
        "positions continue after restart"
    );
    let dates = placement_dates(&read_log(&mut command_client(&cmd).await, 0).await);
    model.assert_query_side(&q, &dates).await;
    let status = eventually("lag 0", Duration::from_secs(10), || {
        let q = q.clone();
        async move {
            let s = projection_status(&q).await;
            (s.lag == 0 && s.head_position == model.max_position).then_some(s)
        }
    })
    .await;
    assert!(status.connected && status.error.is_empty());
}

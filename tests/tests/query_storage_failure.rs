//! A storage failure on the read side is final for the process (crash-only,
//! SPEC guarantee 9): query-service whose files may not grow past a few MiB
//! (`RLIMIT_FSIZE`, with `SIGXFSZ` ignored so a write past it fails with
//! `EFBIG`, as on a full disk) exits non-zero within seconds once the events it
//! follows fill them, saying why; restarted without the limit, it catches up
//! from its last durable checkpoint and answers correctly.

use std::time::{Duration, Instant};

use e2e::{
    command_client, eventually, item, pb, query_args, query_client, read_log,
    start_command_service, start_query_service, Service,
};

/// Files may grow to this: room for the store's start and some orders.
const FILE_LIMIT: u64 = 2 * 1024 * 1024;
/// Orders written at once between checks of the replica.
const CHUNK: usize = 50;
/// More than enough orders to fill `FILE_LIMIT` several times over.
const MAX_ORDERS: usize = 20_000;

fn large_order(i: usize) -> pb::CreateOrderRequest {
    // 20 lines of 64-character skus, so the limit comes soon.
    pb::CreateOrderRequest {
        order_id: format!("o-{i}"),
        customer_id: format!("c-{}", i % 13),
        items: (0..20)
            .map(|l| item(&format!("{i:032}{l:032}"), 1, 100))
            .collect(),
        command_id: format!("k-{i}"),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_the_replica_which_catches_up_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let command = start_command_service(&dir.path().join("command"));
    let mut commands = command_client(&command).await;
    let data_dir = dir.path().join("query");
    let mut limited = Service::try_spawn_file_limited(
        "query-service",
        &query_args(&data_dir, "127.0.0.1:0", &command.endpoint()),
        FILE_LIMIT,
    )
    .unwrap_or_else(|(logs, status)| panic!("no start ({status:?}):\n{}", logs.join("\n")));

    // Write until the replica, following, has stopped. After each chunk it
    // either applies the chunk or exits, within 15 s.
    let probe = query_client(&limited).await;
    let mut written = 0;
    let exit = 'writing: loop {
        assert!(
            written < MAX_ORDERS,
            "{MAX_ORDERS} orders fit under a {FILE_LIMIT}-byte file limit:\n{}",
            limited.logs().join("\n")
        );
        let chunk: Vec<_> = (written..written + CHUNK)
            .map(|i| {
                let mut client = commands.clone();
                tokio::spawn(async move { client.create_order(large_order(i)).await.unwrap() })
            })
            .collect();
        let mut head = 0;
        for order in chunk {
            head = head.max(order.await.unwrap().into_inner().position);
        }
        written += CHUNK;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = limited.wait_exit(Duration::ZERO) {
                break 'writing status;
            }
            let applied = probe
                .clone()
                .get_projection_status(pb::GetProjectionStatusRequest {})
                .await
                .map_or(0, |s| s.into_inner().applied_position);
            if applied >= head {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "15 s after the write at {head}, the replica has applied up to {applied} and still runs:\n{}",
                limited.logs().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    assert!(!exit.success(), "exit status {exit:?}");
    let logs = limited.logs().join("\n");
    assert!(logs.contains("storage failure"), "{logs}");
    drop(limited);

    // On healthy storage: it catches up from where it was and answers.
    let head = read_log(&mut commands, 0).await.last().unwrap().position;
    let replica = start_query_service(&data_dir, &command.endpoint());
    let mut queries = query_client(&replica).await;
    eventually(
        "the restarted replica catches up",
        Duration::from_secs(60),
        || {
            let mut queries = queries.clone();
            async move {
                let status = queries
                    .get_projection_status(pb::GetProjectionStatusRequest {})
                    .await
                    .ok()?
                    .into_inner();
                assert!(status.error.is_empty(), "{status:?}");
                (status.applied_position == head).then_some(())
            }
        },
    )
    .await;
    for i in [0, written / 2, written - 1] {
        let order = queries
            .get_order(pb::GetOrderRequest {
                order_id: format!("o-{i}"),
                min_position: head,
            })
            .await
            .unwrap_or_else(|e| panic!("order o-{i}: {e}"))
            .into_inner()
            .order
            .unwrap();
        assert_eq!(order.lines.len(), 20, "o-{i}");
        assert_eq!(order.total_cents, 20 * 100, "o-{i}");
        assert_eq!(order.customer_id, format!("c-{}", i % 13));
    }
}

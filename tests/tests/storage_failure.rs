//! A storage failure is final for the process (crash-only): command-service
//! whose files may not grow past a few MiB (`RLIMIT_FSIZE`, with `SIGXFSZ`
//! ignored so a write past it fails with `EFBIG`, as on a full disk) refuses
//! commands with UNAVAILABLE, exits non-zero within seconds, and, restarted
//! without the limit, has every command it acknowledged, at its position.

use std::time::Duration;

use e2e::{command_args, command_client, item, pb, read_log, start_command_service, Service};

/// Files may grow to this: room for the store's start and a few hundred commands.
const FILE_LIMIT: u64 = 3 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_the_service_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("command");
    let mut limited = Service::try_spawn_file_limited(
        "command-service",
        &command_args(&data_dir, "127.0.0.1:0"),
        FILE_LIMIT,
    )
    .unwrap_or_else(|(logs, status)| panic!("no start ({status:?}):\n{}", logs.join("\n")));
    let mut client = command_client(&limited).await;
    // Large commands (20 lines of 64-character skus) so the limit comes soon.
    let items: Vec<pb::LineItem> = (0..20).map(|i| item(&format!("{i:064}"), 1, 100)).collect();
    let mut acknowledged = Vec::new();
    let refusal = loop {
        let i = acknowledged.len();
        assert!(
            i < 20_000,
            "20,000 commands fit under a {FILE_LIMIT}-byte file limit"
        );
        let answer = client
            .create_order(pb::CreateOrderRequest {
                order_id: format!("o-{i}"),
                customer_id: "c".repeat(64),
                items: items.clone(),
                command_id: format!("k-{i}"),
                ..Default::default()
            })
            .await;
        match answer {
            Ok(result) => acknowledged.push(result.into_inner()),
            Err(status) => break status,
        }
    };
    assert_eq!(
        refusal.code(),
        tonic::Code::Unavailable,
        "after {} acknowledged: {refusal:?}",
        acknowledged.len()
    );
    assert!(
        !acknowledged.is_empty(),
        "the limit left room for some commands"
    );
    let status = limited
        .wait_exit(Duration::from_secs(15))
        .unwrap_or_else(|| {
            panic!(
                "still running after the storage failure:\n{}",
                limited.logs().join("\n")
            )
        });
    assert!(!status.success(), "exit status {status:?}");
    let logs = limited.logs().join("\n");
    assert!(logs.contains("storage failure"), "{logs}");
    drop(limited);

    // On healthy storage: every acknowledged command, at its position.
    let service = start_command_service(&data_dir);
    let mut client = command_client(&service).await;
    let log = read_log(&mut client, 0).await;
    let positions: Vec<u64> = log.iter().map(|e| e.position).collect();
    assert_eq!(
        positions,
        (1..=log.len() as u64).collect::<Vec<_>>(),
        "gap-free"
    );
    for ack in &acknowledged {
        let event = &log[usize::try_from(ack.position).unwrap() - 1];
        assert_eq!(event.order_id, ack.order_id, "position {}", ack.position);
    }
    // Writing goes on after the log, and a repeat returns the original result.
    let again = client
        .create_order(pb::CreateOrderRequest {
            order_id: "o-0".into(),
            customer_id: "c".repeat(64),
            items: items.clone(),
            command_id: "k-0".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, acknowledged[0]);
    let next = client
        .create_order(pb::CreateOrderRequest {
            order_id: "after".into(),
            customer_id: "c".into(),
            items: vec![item("apple", 1, 1)],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next.position, log.len() as u64 + 1);
}

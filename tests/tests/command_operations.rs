//! Operating command-service, through the real binary: health, heartbeats,
//! configuration by environment, refusing a locked data dir or a taken port,
//! and graceful shutdown on SIGTERM.

use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use e2e::commands::*;
use e2e::event_log::*;
use e2e::reflection;
use e2e::{
    command_args, command_client, connect_command, pb, start_command_service, terminate_within,
    within, Service,
};
use pb::subscribe_events_response::Kind;
use prost::Message;
use prost_types::FileDescriptorProto;
use tempfile::TempDir;
use tokio::sync::watch;
use tonic::Streaming;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

#[track_caller]
fn assert_clean_failure(
    what: &str,
    result: Result<Service, (Vec<String>, Option<ExitStatus>)>,
) -> Vec<String> {
    let (logs, status) = match result {
        Ok(_) => panic!("{what}: the service started"),
        Err(e) => e,
    };
    let status = status
        .unwrap_or_else(|| panic!("{what}: the service neither started nor exited; log: {logs:?}"));
    assert!(
        status.code().is_some_and(|c| c != 0),
        "{what}: expected a non-zero exit code, got {status:?}; log: {logs:?}"
    );
    assert!(
        !logs.iter().any(|l| l.contains("panicked")),
        "{what}: a panic is not a clear error: {logs:?}"
    );
    logs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_grpc_health_service_reports_serving() {
    let dir = TempDir::new().unwrap();
    let svc = start_command_service(dir.path());
    let mut health = HealthClient::new(svc.channel().await);
    let response = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("grpc.health.v1.Health/Check")
        .into_inner();
    assert_eq!(response.status(), ServingStatus::Serving);
}

async fn next_kind(stream: &mut Streaming<pb::SubscribeEventsResponse>) -> Kind {
    within(
        "a subscription message",
        Duration::from_secs(10),
        stream.message(),
    )
    .await
    .expect("stream error")
    .expect("the stream ended")
    .kind
    .expect("a message kind")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_reflection_lists_and_describes_the_services() {
    let dir = TempDir::new().unwrap();
    let svc = start_command_service(dir.path());
    // v1alpha is what grpcurl 1.8 asks; newer clients ask v1.
    for version in ["v1", "v1alpha"] {
        let names = reflection::list_services(svc.channel().await, version).await;
        for expected in ["orders.v1.CommandService", "grpc.health.v1.Health"] {
            assert!(
                names.iter().any(|n| n == expected),
                "reflection {version}: {expected} is not listed: {names:?}"
            );
        }

        let files =
            reflection::files_containing(svc.channel().await, version, "orders.v1.CommandService")
                .await;
        let methods: Vec<String> = files
            .iter()
            .map(|bytes| FileDescriptorProto::decode(bytes.as_slice()).expect("a descriptor"))
            .filter(|f| f.package() == "orders.v1")
            .flat_map(|f| f.service)
            .filter(|s| s.name() == "CommandService")
            .flat_map(|s| s.method)
            .map(|m| m.name().to_owned())
            .collect();
        assert_eq!(
            methods,
            [
                "CreateOrder",
                "AddItem",
                "RemoveItem",
                "PlaceOrder",
                "ShipOrder",
                "CancelOrder",
                "SubscribeEvents",
                "ListOrderEvents"
            ],
            "reflection {version}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscribers_get_a_heartbeat_when_caught_up_and_then_while_idle() {
    let dir = TempDir::new().unwrap();
    let svc = start_command_service(dir.path());
    let mut c = command_client(&svc).await;
    let mut stream = c
        .clone()
        .subscribe_events(pb::SubscribeEventsRequest {
            after_position: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // An empty log: caught up at once.
    match next_kind(&mut stream).await {
        Kind::Heartbeat(h) => assert_eq!(h.head_position, 0),
        Kind::Event(e) => panic!("an event in an empty log: {e:?}"),
    }
    let created = ok(&mut c, create("o1", vec![item("a", 1, 1)])).await;
    match next_kind(&mut stream).await {
        Kind::Event(e) => assert_eq!(ack_of(&e), created),
        Kind::Heartbeat(h) => panic!("expected the live event, got a heartbeat {h:?}"),
    }
    // Idle now: heartbeats keep coming, each with the head.
    for _ in 0..2 {
        match next_kind(&mut stream).await {
            Kind::Heartbeat(h) => assert_eq!(h.head_position, 1),
            Kind::Event(e) => panic!("an event nobody wrote: {e:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_flags_have_environment_variable_equivalents() {
    let dir = TempDir::new().unwrap();
    let data = dir.path().join("from-env");
    let svc = Service::spawn(
        "command-service",
        &[],
        &[
            ("COMMAND_LISTEN", "127.0.0.1:0"),
            ("COMMAND_DATA_DIR", data.to_str().unwrap()),
        ],
    );
    let mut c = command_client(&svc).await;
    assert_eq!(ok(&mut c, create("o1", vec![])).await, ack("o1", 1, 1));
    assert!(
        data.read_dir().is_ok_and(|mut d| d.next().is_some()),
        "nothing was stored under COMMAND_DATA_DIR"
    );
    // The effective configuration is logged at start.
    let logs = svc.logs();
    assert!(
        logs.iter().any(|l| l.contains(data.to_str().unwrap())),
        "the data dir in effect is not logged: {logs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_process_on_the_same_data_dir_exits_nonzero_naming_the_lock() {
    let dir = TempDir::new().unwrap();
    let svc = start_command_service(dir.path());
    let mut c = command_client(&svc).await;
    ok(&mut c, create("o1", vec![])).await;

    let second = Service::try_spawn(
        "command-service",
        &command_args(dir.path(), "127.0.0.1:0"),
        &[],
    );
    let logs = assert_clean_failure("a second process on a locked data dir", second);
    assert!(
        logs.iter().any(|l| l.to_lowercase().contains("lock")),
        "the error does not mention the lock: {logs:?}"
    );

    // The first process is unharmed.
    assert_eq!(ok(&mut c, create("o2", vec![])).await, ack("o2", 1, 2));
    assert_eq!(read_log(&mut c, 0).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_taken_port_exits_nonzero_with_a_clear_error() {
    let dir = TempDir::new().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let result = Service::try_spawn(
        "command-service",
        &command_args(dir.path(), &addr.to_string()),
        &[],
    );
    let logs = assert_clean_failure("a taken port", result);
    let text = logs.join("\n").to_lowercase();
    assert!(
        text.contains(&addr.port().to_string()) || text.contains("in use"),
        "the error names neither the address nor the cause: {logs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_configuration_exits_nonzero_with_a_clear_error() {
    let dir = TempDir::new().unwrap();
    // A data dir that is a regular file.
    let file = dir.path().join("not-a-directory");
    std::fs::write(&file, b"x").unwrap();
    let result = Service::try_spawn("command-service", &command_args(&file, "127.0.0.1:0"), &[]);
    let logs = assert_clean_failure("a data dir that is a file", result);
    assert!(
        logs.iter().any(|l| l.contains("not-a-directory")),
        "the error does not name the data dir: {logs:?}"
    );
    // A listen address that is not one.
    let result = Service::try_spawn(
        "command-service",
        &command_args(&dir.path().join("data"), "not-an-address"),
        &[],
    );
    let logs = assert_clean_failure("a malformed --listen", result);
    assert!(
        logs.iter()
            .any(|l| l.contains("not-an-address") || l.contains("listen")),
        "the error does not name the flag: {logs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_exits_zero_even_with_an_open_subscription() {
    let dir = TempDir::new().unwrap();
    let svc = start_command_service(dir.path());
    let mut c = command_client(&svc).await;
    ok(&mut c, create("o1", vec![item("a", 1, 1)])).await;
    let mut stream = c
        .subscribe_events(pb::SubscribeEventsRequest {
            after_position: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // The subscription is live: it has sent the stored event.
    let first = within("the first event", Duration::from_secs(10), stream.message())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(first.kind, Some(Kind::Event(_))));

    let status = terminate_within(svc, Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(0), "SIGTERM: {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_while_writers_run_exits_zero_keeping_every_acknowledged_command() {
    const WRITERS: usize = 4;
    let dir = TempDir::new().unwrap();
    let svc = start_command_service(dir.path());
    let (acked_tx, mut acked_rx) = watch::channel(0usize);
    let acked_tx = Arc::new(acked_tx);
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let endpoint = svc.endpoint();
            let acked_tx = Arc::clone(&acked_tx);
            tokio::spawn(async move {
                let mut c = connect_command(&endpoint).await;
                let id = format!("writer-{w}");
                let mut mine = vec![ok(&mut c, create(&id, vec![])).await];
                acked_tx.send_modify(|n| *n += 1);
                for _ in 0..5_000 {
                    match send(&mut c, add(&id, item("unit", 1, 1))).await {
                        Ok(a) => {
                            mine.push(a);
                            acked_tx.send_modify(|n| *n += 1);
                        }
                        Err(_) => break,
                    }
                }
                mine
            })
        })
        .collect();
    within(
        "60 acknowledged commands",
        Duration::from_secs(60),
        acked_rx.wait_for(|n| *n >= 60),
    )
    .await
    .unwrap();

    let status = terminate_within(svc, Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(0), "SIGTERM: {status:?}");
    let mut acknowledged = Vec::new();
    for writer in writers {
        acknowledged.extend(
            within("a writer", Duration::from_secs(30), writer)
                .await
                .unwrap(),
        );
    }

    let svc = start_command_service(dir.path());
    let mut c = command_client(&svc).await;
    let log = read_log(&mut c, 0).await;
    assert_gap_free(&log);
    for a in &acknowledged {
        assert_eq!(
            log.get(a.position as usize - 1).map(ack_of).as_ref(),
            Some(a),
            "acknowledged before SIGTERM, missing after"
        );
    }
}

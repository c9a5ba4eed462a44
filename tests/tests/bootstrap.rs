//! A new replica in seconds (`query-service --bootstrap-from`): it copies a
//! running replica's database files at one checkpoint (`StreamSnapshot`),
//! then follows the command log from there. Through the real binaries: the
//! copy answers like its source at the same position and then follows new
//! commands; a source killed mid-copy leaves nothing served (a start without
//! the flag refuses the partial copy) and a later start copies again; a
//! source of another command log, or a wrong token, is refused with a clear
//! line and a non-zero exit.

use std::path::Path;
use std::time::Duration;

use e2e::auth::{bearer, QUERY_TOKEN};
use e2e::commands::{create, create_request};
use e2e::fault_proxy::{Chaos, FaultProxy};
use e2e::model::Model;
use e2e::queries::projection_status;
use e2e::reflection;
use e2e::workload::run_workload;
use e2e::{
    command_client, eventually, item, pb, query_args, query_client, start_command_service,
    start_query_service, QueryClient, Service,
};
use shared::proto::replication_service_client::ReplicationServiceClient;
use shared::proto::stream_snapshot_response::Kind;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// `query_args` with `--bootstrap-from peer` and `extra`.
fn bootstrap_args(dir: &Path, command: &str, peer: &str, extra: &[&str]) -> Vec<String> {
    let mut args = query_args(dir, "127.0.0.1:0", command);
    args.extend(["--bootstrap-from".to_owned(), peer.to_owned()]);
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

/// Waits until `query` has applied `position`.
async fn applied(query: &QueryClient, position: u64, what: &str) {
    eventually(what, Duration::from_secs(60), || {
        let query = query.clone();
        async move { (projection_status(&query).await.applied_position >= position).then_some(()) }
    })
    .await;
}

/// The one log line saying the copy is in, if any.
fn bootstrapped_line(service: &Service) -> Option<String> {
    service
        .logs()
        .into_iter()
        .find(|l| l.contains("bootstrapped; following the command log"))
}

/// Starts `args` expecting it to fail before serving; its log, joined.
fn refused_start(args: &[String], envs: &[(&str, &str)]) -> String {
    match Service::try_spawn("query-service", args, envs) {
        Ok(service) => panic!(
            "query-service started; its log:\n{}",
            service.logs().join("\n")
        ),
        Err((logs, status)) => {
            let status = status.expect("it exits rather than hangs");
            assert!(!status.success(), "a failed bootstrap exits non-zero");
            logs.join("\n")
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_replica_answers_like_its_source_then_follows_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let command = start_command_service(&dir.path().join("command"));
    let source = start_query_service(&dir.path().join("a"), &command.endpoint());
    let model = run_workload(command.channel().await, "boot", 120, 8, 13).await;
    let head = model.max_position;
    let source_query = query_client(&source).await;
    applied(&source_query, head, "the source applies the workload").await;

    let b_dir = dir.path().join("b");
    let args = bootstrap_args(&b_dir, &command.endpoint(), &source.endpoint(), &[]);
    let copy = Service::spawn("query-service", &args, &[]);
    let line = bootstrapped_line(&copy).expect("the new replica copied the source");
    assert!(line.contains(&format!("position={head}")), "{line}");
    let copy_query = query_client(&copy).await;
    // Equal to the source at the same position: every view, list and the analytics.
    assert_eq!(projection_status(&copy_query).await.applied_position, head);
    let expected = model.read_snapshot(&source_query).await;
    let copied = model.read_snapshot(&copy_query).await;
    model.assert_lists(&copied);
    assert_eq!(copied, expected, "the copy answers like its source");

    // Then it follows the log: read-your-writes with min_position.
    let mut commands = command_client(&command).await;
    let ack = commands
        .create_order(create_request("after-copy"))
        .await
        .unwrap()
        .into_inner();
    let view = copy_query
        .clone()
        .get_order(pb::GetOrderRequest {
            order_id: "after-copy".into(),
            min_position: ack.position,
        })
        .await
        .expect("the copy follows the command log")
        .into_inner()
        .order
        .unwrap();
    assert_eq!(view.last_position, ack.position);
    // The source kept applying too (the copy held it off only while streaming).
    applied(
        &source_query,
        ack.position,
        "the source applies after the copy",
    )
    .await;

    // A restart on the now-filled directory does not copy again.
    drop(copy);
    let copy = Service::spawn("query-service", &args, &[]);
    assert!(bootstrapped_line(&copy).is_none());
    assert!(
        copy.logs()
            .iter()
            .any(|l| l.contains("--bootstrap-from is ignored")),
        "{}",
        copy.logs().join("\n")
    );
    let copy_query = query_client(&copy).await;
    applied(
        &copy_query,
        ack.position,
        "the restarted copy is where it was",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_is_a_header_chunks_and_a_trailer_at_one_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let command = start_command_service(&dir.path().join("command"));
    let source = start_query_service(&dir.path().join("a"), &command.endpoint());
    let model: Model = run_workload(command.channel().await, "s", 20, 4, 5).await;
    applied(&query_client(&source).await, model.max_position, "applied").await;
    // Advertised beside QueryService, and SERVING on health.
    let names = reflection::list_services(source.channel().await, "v1").await;
    assert!(
        names.contains(&"orders.v1.ReplicationService".to_owned()),
        "{names:?}"
    );
    let health = HealthClient::new(source.channel().await)
        .check(HealthCheckRequest {
            service: "orders.v1.ReplicationService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status, ServingStatus::Serving as i32);
    let mut client = ReplicationServiceClient::new(source.channel().await);
    let mut stream = client
        .stream_snapshot(pb::StreamSnapshotRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut kinds = Vec::new();
    while let Some(message) = stream.message().await.unwrap() {
        kinds.push(message.kind.expect("a kind"));
    }
    let Some(Kind::Header(header)) = kinds.first() else {
        panic!("no header first: {kinds:?}");
    };
    assert_eq!(header.position, model.max_position);
    assert_eq!(header.format_version, 2, "the database files");
    assert!(!header.log_id.is_empty());
    assert!(header.models.iter().any(|m| m.name == "analytics"));
    let Some(Kind::Trailer(trailer)) = kinds.last() else {
        panic!("no trailer last");
    };
    // Chunks of file parts: each file's parts consecutive from offset 0, the
    // files one after the other, and as many bytes as the trailer says.
    let mut files: Vec<(String, u64)> = Vec::new();
    for kind in &kinds[1..kinds.len() - 1] {
        let Kind::Chunk(chunk) = kind else {
            panic!("a header or trailer in the middle: {kind:?}");
        };
        assert!(chunk.entries.is_empty());
        for part in &chunk.files {
            match files.last_mut() {
                Some((name, end)) if *name == part.path => {
                    assert_eq!(part.offset, *end, "{} continues where it was", part.path);
                    *end += part.data.len() as u64;
                }
                _ => {
                    assert!(
                        files.iter().all(|(name, _)| *name != part.path),
                        "{} sent twice",
                        part.path
                    );
                    assert_eq!(part.offset, 0, "{} starts at 0", part.path);
                    files.push((part.path.clone(), part.data.len() as u64));
                }
            }
        }
    }
    let names: Vec<&str> = files.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(&names[..2], ["conf", "db"], "{names:?}");
    let bytes: u64 = files.iter().map(|(_, len)| len).sum();
    assert_eq!(trailer.file_bytes, bytes);
    assert_ne!(trailer.file_checksum, 0);
    // The entries the files hold: at least one per order view.
    assert!(trailer.entry_count > 20, "{trailer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_killed_mid_copy_leaves_nothing_served_and_a_later_start_copies_again() {
    let dir = tempfile::tempdir().unwrap();
    let command = start_command_service(&dir.path().join("command"));
    // Chunks of at most 16 KiB (a quarter of the message limit).
    let mut source_args = query_args(&dir.path().join("a"), "127.0.0.1:0", &command.endpoint());
    source_args.extend(["--max-message-bytes".to_owned(), "65536".to_owned()]);
    let mut source = Service::spawn("query-service", &source_args, &[]);
    // Orders with many lines: a copy of many chunks.
    let channel = command.channel().await;
    let mut tasks = Vec::new();
    for w in 0..8 {
        let mut client = e2e::CommandClient::new(channel.clone());
        tasks.push(tokio::spawn(async move {
            let mut last = 0;
            for i in 0..50 {
                let items = (0..40)
                    .map(|n| item(&format!("sku-{w}-{i}-{n:02}"), 1 + n, 100 + i64::from(n)))
                    .collect();
                last = last.max(
                    client
                        .create_order(create(&format!("big-{w}-{i:03}"), items))
                        .await
                        .unwrap()
                        .into_inner()
                        .position,
                );
            }
            last
        }));
    }
    let mut head = 0;
    for task in tasks {
        head = head.max(task.await.unwrap());
    }
    let source_query = query_client(&source).await;
    applied(&source_query, head, "the source applies the orders").await;

    // The copy goes through a proxy that holds each 16 KiB it forwards for up
    // to 100 ms, so that the copy takes seconds and the test sees how far it
    // got.
    let proxy = FaultProxy::start(source.addr).await;
    proxy.set_chaos(Chaos {
        stall: 1.0,
        max_stall: Duration::from_millis(100),
        ..Chaos::default()
    });
    let b_dir = dir.path().join("b");
    let args = bootstrap_args(&b_dir, &command.endpoint(), &proxy.endpoint(), &[]);
    let starting = {
        let args = args.clone();
        tokio::task::spawn_blocking(move || refused_start(&args, &[]))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while proxy.stats().bytes_forwarded < 64 * 1024 {
        assert!(
            std::time::Instant::now() < deadline,
            "the copy never started"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // kill -9, mid-copy; and its connections die with it (what the proxy
    // still buffers from it would otherwise be delivered, as if it had lived).
    source.kill();
    proxy.reset_all();
    let log = starting.await.unwrap();
    assert!(log.contains("bootstrap from"), "{log}");
    let received = log
        .split(" after ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("says how far the copy got: {log}"));
    assert!(received > 0, "some entries had arrived: {log}");
    assert!(log.contains("nothing of the copy is served"), "{log}");
    assert!(
        !log.contains("bootstrapped; following"),
        "a half copy was recorded: {log}"
    );
    assert!(
        !log.contains("listening on"),
        "a half copy was served: {log}"
    );

    // Without the flag, the partial copy is refused, not served.
    let log = refused_start(&query_args(&b_dir, "127.0.0.1:0", &command.endpoint()), &[]);
    assert!(
        log.contains("holds a copy that --bootstrap-from did not finish"),
        "{log}"
    );

    // The source comes back; a later start copies everything, anew.
    source.restart();
    applied(&query_client(&source).await, head, "the source is back").await;
    let args = bootstrap_args(&b_dir, &command.endpoint(), &source.endpoint(), &[]);
    let copy = Service::spawn("query-service", &args, &[]);
    let line = bootstrapped_line(&copy).expect("the second start copies");
    assert!(line.contains(&format!("position={head}")), "{line}");
    // The partial copy of the first attempt was removed, not built upon.
    assert!(
        copy.logs()
            .iter()
            .any(|l| l.contains("an earlier copy into this directory did not finish")),
        "{}",
        copy.logs().join("\n")
    );
    let copy_query = query_client(&copy).await;
    let source_query = query_client(&source).await;
    for id in ["big-0-000", "big-7-049", "big-3-025"] {
        let get = |q: QueryClient| async move {
            q.clone()
                .get_order(pb::GetOrderRequest {
                    order_id: id.into(),
                    min_position: 0,
                })
                .await
                .unwrap()
                .into_inner()
        };
        assert_eq!(
            get(copy_query.clone()).await,
            get(source_query.clone()).await
        );
    }
    let analytics = |q: QueryClient| async move {
        q.clone()
            .get_order_analytics(pb::GetOrderAnalyticsRequest {
                min_position: 0,
                top_n: 50,
            })
            .await
            .unwrap()
            .into_inner()
    };
    assert_eq!(analytics(copy_query).await, analytics(source_query).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_of_another_command_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let command = start_command_service(&dir.path().join("command"));
    let other = start_command_service(&dir.path().join("other"));
    let foreign = start_query_service(&dir.path().join("foreign"), &other.endpoint());
    let ack = command_client(&other)
        .await
        .create_order(create_request("elsewhere"))
        .await
        .unwrap()
        .into_inner();
    applied(&query_client(&foreign).await, ack.position, "applied").await;

    let b_dir = dir.path().join("b");
    let args = bootstrap_args(&b_dir, &command.endpoint(), &foreign.endpoint(), &[]);
    let log = refused_start(&args, &[]);
    assert!(log.contains("another command log"), "{log}");

    // Nothing was kept: the same directory then starts normally on its own log.
    let replica = Service::spawn(
        "query-service",
        &query_args(&b_dir, "127.0.0.1:0", &command.endpoint()),
        &[],
    );
    let query = query_client(&replica).await;
    let missing = query
        .clone()
        .get_order(pb::GetOrderRequest {
            order_id: "elsewhere".into(),
            min_position: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_takes_the_query_token() {
    let dir = tempfile::tempdir().unwrap();
    let command = start_command_service(&dir.path().join("command"));
    let mut source_args = query_args(&dir.path().join("a"), "127.0.0.1:0", &command.endpoint());
    source_args.extend(["--auth-token".to_owned(), QUERY_TOKEN.to_owned()]);
    let source = Service::spawn("query-service", &source_args, &[]);
    let ack = command_client(&command)
        .await
        .create_order(create_request("guarded"))
        .await
        .unwrap()
        .into_inner();
    let status_client = query_client(&source).await;
    eventually("the source applies", Duration::from_secs(30), || {
        let mut q = status_client.clone();
        async move {
            let r = q
                .get_projection_status(bearer(pb::GetProjectionStatusRequest {}, Some(QUERY_TOKEN)))
                .await
                .ok()?;
            (r.into_inner().applied_position >= ack.position).then_some(())
        }
    })
    .await;
    // Without a token the stream is refused.
    let refused = ReplicationServiceClient::new(source.channel().await)
        .stream_snapshot(pb::StreamSnapshotRequest {})
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    let b_dir = dir.path().join("b");
    let wrong = bootstrap_args(
        &b_dir,
        &command.endpoint(),
        &source.endpoint(),
        &["--bootstrap-token", "not-the-token"],
    );
    let log = refused_start(&wrong, &[]);
    assert!(log.contains("invalid bearer token"), "{log}");
    assert!(!log.contains("not-the-token"), "the token is never logged");

    // The right token, from the environment.
    let args = bootstrap_args(&b_dir, &command.endpoint(), &source.endpoint(), &[]);
    let copy = Service::spawn(
        "query-service",
        &args,
        &[("QUERY_BOOTSTRAP_TOKEN", QUERY_TOKEN)],
    );
    assert!(bootstrapped_line(&copy).is_some());
    let view = query_client(&copy)
        .await
        .get_order(pb::GetOrderRequest {
            order_id: "guarded".into(),
            min_position: ack.position,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(view.order.unwrap().order_id, "guarded");
}

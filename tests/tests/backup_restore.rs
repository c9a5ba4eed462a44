//! Online backup and restore of command-service (`CommandAdminService.Backup`,
//! `command-service backup`, `command-service restore`), through the real
//! binaries: a backup taken while clients keep writing holds exactly the
//! commands acknowledged up to its position (their events, their orders,
//! their idempotency keys), and a service started on the restored directory
//! continues the same log from the next position. Bad input is refused with
//! one clear line and changes nothing.

use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::auth::{bearer, COMMAND_TOKEN};
use e2e::commands::{add, create, numbers_in, place, send, with, Ack, Cmd};
use e2e::event_log::assert_gap_free;
use e2e::{
    binary, command_args, connect_command, path_arg, pb, read_log, start_command_service,
    ClosedPort, Service,
};
use tonic::Code;

/// Runs `command-service` with `args` (a tool) to its end.
async fn tool(args: &[&str]) -> Output {
    let output = tokio::process::Command::new(binary("command-service"))
        .args(args)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(120), output)
        .await
        .expect("the tool ends")
        .expect("the tool runs")
}

/// `command-service restore --from FROM --data-dir TO`.
async fn restore(from: &Path, to: &Path) -> Output {
    tool(&[
        "restore",
        "--from",
        &path_arg(from),
        "--data-dir",
        &path_arg(to),
    ])
    .await
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The log id a service reports on `SubscribeEvents` (`orders-log-id`).
async fn log_id(endpoint: &str) -> String {
    let mut client = connect_command(endpoint).await;
    let response = client
        .subscribe_events(pb::SubscribeEventsRequest::default())
        .await
        .expect("subscribe");
    response
        .metadata()
        .get(shared::LOG_ID_HEADER)
        .expect("the log id header")
        .to_str()
        .unwrap()
        .to_owned()
}

/// A command one writer sent, and what it got back.
#[derive(Debug, Clone)]
struct Sent {
    writer: usize,
    cmd: Cmd,
    ack: Ack,
    acked_at: Instant,
    latency: Duration,
}

/// Writers that each create orders and add to and place them, every command
/// with a command_id and the expected version, until `stop` is set.
fn start_writers(
    endpoint: &str,
    writers: usize,
    stop: &Arc<AtomicBool>,
    sent: &Arc<Mutex<Vec<Sent>>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..writers)
        .map(|writer| {
            let (endpoint, stop, sent) = (endpoint.to_owned(), stop.clone(), sent.clone());
            tokio::spawn(async move {
                let mut client = connect_command(&endpoint).await;
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let order = format!("w{writer}-{n}");
                    let commands = [
                        with(
                            create(&order, vec![e2e::item("a", 1, 100)]),
                            None,
                            &format!("{order}-c"),
                        ),
                        with(
                            add(&order, e2e::item("b", 2, 250)),
                            Some(1),
                            &format!("{order}-a"),
                        ),
                        with(place(&order), Some(2), &format!("{order}-p")),
                    ];
                    for cmd in commands {
                        let sent_at = Instant::now();
                        let ack = send(&mut client, cmd.clone())
                            .await
                            .unwrap_or_else(|s| panic!("{cmd:?}: {s:?}"));
                        let acked_at = Instant::now();
                        sent.lock().unwrap().push(Sent {
                            writer,
                            cmd,
                            ack,
                            acked_at,
                            latency: acked_at - sent_at,
                        });
                    }
                    n += 1;
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_restores_every_acknowledged_command_and_the_log_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let original = start_command_service(&dir.path().join("original"));
    let endpoint = original.endpoint();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(Mutex::new(Vec::new()));
    let writers = start_writers(&endpoint, 6, &stop, &sent);

    // Under load: a store of some size, then the backup while writing goes on.
    let preload_ms = std::env::var("BACKUP_PRELOAD_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500);
    tokio::time::sleep(Duration::from_millis(preload_ms)).await;
    let file = dir.path().join("orders.backup");
    let before = Instant::now();
    let acked_before = sent.lock().unwrap().len();
    let output = tool(&["backup", "--endpoint", &endpoint, "--to", &path_arg(&file)]).await;
    let took = before.elapsed();
    let after = Instant::now();
    let acked_during = sent.lock().unwrap().len() - acked_before;
    assert!(
        output.status.success(),
        "backup failed: {}",
        stderr(&output)
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    let sent = sent.lock().unwrap().clone();

    // "backup of log ID at position P written to FILE (...)"
    let printed = stdout(&output);
    let original_log_id = log_id(&endpoint).await;
    assert!(printed.contains(&original_log_id), "{printed}");
    let position = printed
        .split("at position ")
        .nth(1)
        .and_then(|rest| numbers_in(rest).first().copied())
        .unwrap_or_else(|| panic!("no position in {printed:?}"));
    let after_backup = sent.iter().filter(|s| s.ack.position > position).count();
    let slowest = |during: bool| {
        sent.iter()
            .filter(|s| (s.acked_at >= before && s.acked_at - s.latency <= after) == during)
            .map(|s| s.latency)
            .max()
            .unwrap_or_default()
    };
    eprintln!(
        "slowest command during the backup {:?}, at any other time {:?}",
        slowest(true),
        slowest(false)
    );
    eprintln!(
        "backup of {} commands took {took:?} ({} bytes) while {acked_during} commands were \
         acknowledged; {after_backup} acknowledged after its position {position}",
        sent.len() - after_backup,
        std::fs::metadata(&file).unwrap().len(),
    );
    assert!(acked_during > 0, "commands went on during the backup");
    assert!(after_backup > 0, "the log grew past the backup's position");
    for s in &sent {
        if s.acked_at < before {
            assert!(
                s.ack.position <= position,
                "acknowledged before the backup began, yet after its position {position}: {s:?}"
            );
        }
    }
    let streamed = original
        .logs()
        .into_iter()
        .find(|l| l.contains("backup streamed"));
    eprintln!("the service logged: {streamed:?}");
    let mut original_client = connect_command(&endpoint).await;
    let original_log = read_log(&mut original_client, 0).await;
    drop(original);

    // Restore into a new directory and serve from it.
    let restored_dir = dir.path().join("restored");
    let restoring = Instant::now();
    let output = restore(&file, &restored_dir).await;
    assert!(
        output.status.success(),
        "restore failed: {}",
        stderr(&output)
    );
    eprintln!("the restore took {:?}", restoring.elapsed());
    assert!(
        stdout(&output).contains(&format!("position {position}")),
        "{}",
        stdout(&output)
    );
    let restored = start_command_service(&restored_dir);
    assert_eq!(
        log_id(&restored.endpoint()).await,
        original_log_id,
        "the same log"
    );
    let mut client = connect_command(&restored.endpoint()).await;

    // The log is the original's, up to the position, and nothing after it.
    let log = read_log(&mut client, 0).await;
    assert_eq!(log.len() as u64, position);
    assert_eq!(
        log,
        original_log[..position as usize],
        "the events up to the position"
    );

    // Every command up to the position is there: its idempotency key gives
    // back the original result and writes nothing.
    for s in sent.iter().filter(|s| s.ack.position <= position) {
        let again = send(&mut client, s.cmd.clone()).await.unwrap();
        assert_eq!(again, s.ack, "the repeat of {:?}", s.cmd);
    }
    assert_eq!(
        read_log(&mut client, position).await,
        vec![],
        "repeats write nothing"
    );

    // The commands after it were not: sent again, each writer's in its
    // order, they execute anew on the orders as they were at the position
    // (same versions, checked by expected_version), at the next positions.
    let mut next = position + 1;
    for s in sent.iter().filter(|s| s.ack.position > position) {
        let again = send(&mut client, s.cmd.clone())
            .await
            .unwrap_or_else(|e| panic!("writer {}: {:?} again: {e:?}", s.writer, s.cmd));
        assert_eq!(
            (again.order_id.as_str(), again.version, again.position),
            (s.ack.order_id.as_str(), s.ack.version, next),
            "{:?}",
            s.cmd
        );
        next += 1;
    }
    let fresh = send(
        &mut client,
        create("after-restore", vec![e2e::item("x", 1, 1)]),
    )
    .await
    .unwrap();
    assert_eq!((fresh.version, fresh.position), (1, next));
    let log = read_log(&mut client, 0).await;
    assert_gap_free(&log);
    assert_eq!(log.len() as u64, next);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_refuses_a_non_empty_directory_and_a_corrupt_file_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let service = start_command_service(&dir.path().join("original"));
    let mut client = connect_command(&service.endpoint()).await;
    for i in 0..20 {
        let order = format!("o-{i}");
        send(
            &mut client,
            with(create(&order, vec![e2e::item("a", 1, 5)]), None, &order),
        )
        .await
        .unwrap();
    }
    let file = dir.path().join("b.backup");
    let output = tool(&[
        "backup",
        "--endpoint",
        &service.endpoint(),
        "--to",
        &path_arg(&file),
    ])
    .await;
    assert!(output.status.success(), "{}", stderr(&output));

    // A directory with anything in it.
    let occupied = dir.path().join("occupied");
    std::fs::create_dir_all(&occupied).unwrap();
    std::fs::write(occupied.join("keep.txt"), "mine").unwrap();
    let output = restore(&file, &occupied).await;
    assert!(!output.status.success());
    let error = stderr(&output);
    assert!(error.contains("is not empty"), "{error}");
    assert_eq!(error.trim().lines().count(), 1, "one line: {error}");
    assert_eq!(
        std::fs::read_dir(&occupied).unwrap().count(),
        1,
        "nothing written"
    );

    // The same backup with one byte flipped in the middle: refused before
    // anything is created.
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    let corrupt = dir.path().join("corrupt.backup");
    std::fs::write(&corrupt, &bytes).unwrap();
    let target = dir.path().join("from-corrupt");
    let output = restore(&corrupt, &target).await;
    assert!(!output.status.success());
    let error = stderr(&output);
    assert!(error.contains("corrupt"), "{error}");
    assert!(!target.exists(), "no directory made from a corrupt file");

    // Cut short, or not a backup at all.
    std::fs::write(&corrupt, &std::fs::read(&file).unwrap()[..middle]).unwrap();
    let output = restore(&corrupt, &target).await;
    assert!(
        !output.status.success() && stderr(&output).contains("ends early"),
        "{}",
        stderr(&output)
    );
    std::fs::write(&corrupt, "hello").unwrap();
    let output = restore(&corrupt, &target).await;
    assert!(!output.status.success() && stderr(&output).contains("not a command-service backup"));
    assert!(!target.exists());

    // The good file restores, into an empty directory too.
    std::fs::create_dir_all(&target).unwrap();
    let output = restore(&file, &target).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("position 20"),
        "{}",
        stdout(&output)
    );
}

/// A service with a command token and an admin token.
fn start_with_tokens(data_dir: &Path, admin: &str) -> Service {
    let mut args = command_args(data_dir, "127.0.0.1:0");
    args.extend([
        "--auth-token".into(),
        COMMAND_TOKEN.into(),
        "--admin-token".into(),
        admin.into(),
    ]);
    Service::spawn("command-service", &args, &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_needs_the_admin_token_and_a_reachable_service() {
    const ADMIN: &str = "adm-token-5b20e9";
    let dir = tempfile::tempdir().unwrap();
    let service = start_with_tokens(&dir.path().join("c"), ADMIN);
    let endpoint = service.endpoint();
    let file = dir.path().join("b.backup");
    let to = path_arg(&file);

    for token in [None, Some("wrong-token"), Some(COMMAND_TOKEN)] {
        let mut args = vec!["backup", "--endpoint", &endpoint, "--to", &to];
        if let Some(token) = token {
            args.extend(["--token", token]);
        }
        let output = tool(&args).await;
        assert!(!output.status.success(), "token {token:?} was accepted");
        assert!(
            stderr(&output).contains("Unauthenticated"),
            "{}",
            stderr(&output)
        );
        assert!(!file.exists(), "no file from a refused backup");
    }
    // Reflection and health name the admin service, without a token.
    for version in ["v1", "v1alpha"] {
        let names = e2e::reflection::list_services(service.channel().await, version).await;
        assert!(
            names.iter().any(|n| n == "orders.v1.CommandAdminService"),
            "{names:?}"
        );
    }
    let mut health = tonic_health::pb::health_client::HealthClient::new(service.channel().await);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "orders.v1.CommandAdminService".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    // The admin token is for the admin service only.
    let mut client = connect_command(&endpoint).await;
    let status = client
        .create_order(bearer(
            create("o-1", vec![e2e::item("a", 1, 1)]),
            Some(ADMIN),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let mut admin =
        pb::command_admin_service_client::CommandAdminServiceClient::new(service.channel().await);
    let status = admin
        .backup(bearer(pb::BackupRequest {}, Some(COMMAND_TOKEN)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    // The admin token from a file (and the environment's way, for the token itself).
    let token_file = dir.path().join("admin.token");
    std::fs::write(&token_file, format!("{ADMIN}\n")).unwrap();
    let output = tool(&[
        "backup",
        "--endpoint",
        &endpoint,
        "--to",
        &to,
        "--token-file",
        &path_arg(&token_file),
    ])
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("at position 0"),
        "{}",
        stdout(&output)
    );
    assert!(file.exists());

    // Nothing listening.
    let closed = ClosedPort::new();
    let output = tool(&[
        "backup",
        "--endpoint",
        &closed.endpoint(),
        "--to",
        &path_arg(&dir.path().join("x")),
    ])
    .await;
    assert!(!output.status.success());
    let error = stderr(&output);
    assert!(error.contains("cannot reach command-service at"), "{error}");
    assert_eq!(error.trim().lines().count(), 1, "one line: {error}");
    assert!(!dir.path().join("x").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_over_tls_trusts_the_given_ca_only() {
    let dir = tempfile::tempdir().unwrap();
    let pki = e2e::tls::Pki::new();
    let mut args = command_args(&dir.path().join("c"), "127.0.0.1:0");
    args.extend(pki.server_args());
    let service = Service::spawn("command-service", &args, &[]);
    let https = format!("https://{}", service.addr);
    let file = dir.path().join("b.backup");
    let to = path_arg(&file);

    let output = tool(&["backup", "--endpoint", &https, "--to", &to]).await;
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("needs --ca-file"),
        "{}",
        stderr(&output)
    );

    let other = e2e::tls::Pki::new();
    let output = tool(&[
        "backup",
        "--endpoint",
        &https,
        "--to",
        &to,
        "--ca-file",
        &path_arg(&other.ca),
    ])
    .await;
    assert!(
        !output.status.success(),
        "a server the CA did not sign was trusted"
    );
    assert!(!file.exists());

    let output = tool(&[
        "backup",
        "--endpoint",
        &https,
        "--to",
        &to,
        "--ca-file",
        &path_arg(&pki.ca),
    ])
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(file.exists());
}

//! Guarantee 1, seen from outside the process: no acknowledgement leaves
//! before an fsync/fdatasync of the data-directory file its command's group
//! was written to has completed.
//!
//! command-service runs under `strace -f -ttt -T -y` (attached to every
//! thread). For each of a series of sequential commands (committed on the
//! request's thread), then of bursts of concurrent ones (mostly committed by
//! the writer thread, a group per sync), between the client sending the
//! request and receiving the acknowledgement, the trace must show a write to
//! a file in the data directory, then an fdatasync/fsync of that same file,
//! started after the write and completed before the acknowledgement
//! arrived. Skipped (with a message) when `strace` is not installed;
//! `.ci/run` installs it.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use e2e::commands::create_request;
use e2e::{command_client, pb, start_command_service};

const COMMANDS: usize = 20;
/// Then this many bursts of `BURST` concurrent commands.
const BURSTS: usize = 5;
const BURST: usize = 8;

/// One traced system call on a file: when it started and ended (seconds
/// since the epoch), its name, the file it worked on, and its result.
#[derive(Debug, Clone)]
struct Call {
    start: f64,
    end: f64,
    name: String,
    path: String,
    ok: bool,
}

/// A create of `order_id` with idempotency key `command_id`.
fn keyed(order_id: &str, command_id: &str) -> pb::CreateOrderRequest {
    pb::CreateOrderRequest {
        command_id: command_id.to_owned(),
        ..create_request(order_id)
    }
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Parses strace's `-f -ttt -T -y` output into the calls of interest,
/// joining `<unfinished ...>` lines with their `<... resumed>` ends.
fn parse_trace(trace: &str, names: &[&str]) -> Vec<Call> {
    let mut calls = Vec::new();
    let mut unfinished: HashMap<String, (f64, String, String)> = HashMap::new();
    for line in trace.lines() {
        // `PID TIME CALL...`; strace pads the PID to a width, so split on
        // runs of spaces for the first two fields.
        let line = line.trim_start();
        let Some((pid, rest)) = line.split_once(' ') else {
            continue;
        };
        let Some((time, rest)) = rest.trim_start().split_once(' ') else {
            continue;
        };
        let Ok(time) = time.parse::<f64>() else {
            continue;
        };
        let (name, path, tail) = if let Some(resumed) = rest.strip_prefix("<... ") {
            let Some((name, tail)) = resumed.split_once(" resumed>") else {
                continue;
            };
            let Some((start, path, _)) = unfinished.remove(pid) else {
                continue;
            };
            let _ = time;
            (name.to_owned(), path, (start, tail.to_owned()))
        } else {
            let Some((name, args)) = rest.split_once('(') else {
                continue;
            };
            if !names.contains(&name) {
                continue;
            }
            // The first argument, a descriptor shown as `9</path/of/file>`.
            let path = args
                .split_once('<')
                .and_then(|(_, p)| p.split_once('>'))
                .map(|(p, _)| p.to_owned())
                .unwrap_or_default();
            if rest.ends_with("<unfinished ...>") {
                unfinished.insert(pid.to_owned(), (time, path, name.to_owned()));
                continue;
            }
            (name.to_owned(), path, (time, rest.to_owned()))
        };
        if !names.contains(&name.as_str()) {
            continue;
        }
        let (start, tail) = tail;
        // `... = 0 <0.000123>`: the result, then the time spent.
        let duration = tail
            .rsplit_once('<')
            .and_then(|(_, d)| d.trim_end_matches('>').parse::<f64>().ok())
            .unwrap_or(f64::INFINITY);
        let ok = tail
            .rsplit_once(" = ")
            .is_some_and(|(_, r)| !r.trim_start().starts_with('-'));
        calls.push(Call {
            start,
            end: start + duration,
            name,
            path,
            ok,
        });
    }
    calls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledgement_waits_for_a_completed_sync_of_the_file_its_group_wrote() {
    if Command::new("strace").arg("-V").output().is_err() {
        eprintln!("SKIPPED: strace is not installed (apt-get install strace)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("command");
    let service = start_command_service(&data_dir);
    let mut client = command_client(&service).await;
    // One command before tracing, so start-up work is out of the picture.
    client
        .create_order(create_request("warm-up"))
        .await
        .unwrap();

    let trace_file = dir.path().join("strace.log");
    let mut strace = Command::new("strace")
        .args(["-f", "-ttt", "-T", "-y", "-qq", "-o"])
        .arg(&trace_file)
        .args([
            "-e",
            "trace=write,pwrite64,writev,fdatasync,fsync",
            "-p",
            &service.pid().unwrap().to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start strace");
    // strace attaches to the threads one after another (all of them when it
    // starts): they are traced once a probe command's log write shows in the
    // trace. A command that comes alone is committed on the request's thread,
    // one that queues on the writer thread; this test checks the ack of
    // either against the trace of all threads.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut probe = 0;
    loop {
        probe += 1;
        client
            .create_order(create_request(&format!("probe-{probe}")))
            .await
            .unwrap();
        let trace = std::fs::read_to_string(&trace_file).unwrap_or_default();
        // Only a commit writes the log's segments (`*.wal`).
        let commit_traced = trace
            .lines()
            .any(|line| line.contains("write") && line.contains(".wal>"));
        if commit_traced {
            break;
        }
        assert!(Instant::now() < deadline, "strace never attached");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut windows = Vec::new();
    for i in 0..COMMANDS {
        let sent = now();
        client
            .create_order(keyed(&format!("o-{i}"), &format!("k-{i}")))
            .await
            .unwrap();
        windows.push((sent, now()));
    }
    // Concurrent commands: most of each burst queues for the writer thread
    // and shares its group's sync (the sequential ones above came alone and
    // were committed on the request's thread).
    for round in 0..BURSTS {
        let burst = (0..BURST).map(|j| {
            let mut client = client.clone();
            async move {
                let sent = now();
                client
                    .create_order(keyed(&format!("b-{round}-{j}"), &format!("kb-{round}-{j}")))
                    .await
                    .unwrap();
                (sent, now())
            }
        });
        windows.extend(futures::future::join_all(burst).await);
    }
    // SIGINT: strace detaches and writes out the rest of its trace.
    let _ = Command::new("kill")
        .args(["-INT", &strace.id().to_string()])
        .status();
    let _ = strace.wait();

    let trace = std::fs::read_to_string(&trace_file).unwrap();
    let data_dir = data_dir.canonicalize().unwrap();
    let in_data_dir = |call: &Call| Path::new(&call.path).starts_with(&data_dir);
    let calls: Vec<Call> = parse_trace(
        &trace,
        &["write", "pwrite64", "writev", "fdatasync", "fsync"],
    )
    .into_iter()
    .filter(in_data_dir)
    .collect();
    for (i, &(sent, acked)) in windows.iter().enumerate() {
        let synced = calls.iter().any(|sync| {
            (sync.name == "fdatasync" || sync.name == "fsync")
                && sync.ok
                && sync.end <= acked
                && calls.iter().any(|write| {
                    write.name.contains("write")
                        && write.path == sync.path
                        && write.ok
                        && write.start >= sent
                        && write.end <= sync.start
                })
        });
        assert!(
            synced,
            "command {i} (sent at {sent:.6}, acknowledged at {acked:.6}) had no write to a \
             data-directory file followed by a completed sync of it in between; traced calls \
             around it: {:#?}",
            calls
                .iter()
                .filter(|c| c.start >= sent - 0.01 && c.start <= acked + 0.01)
                .collect::<Vec<_>>()
        );
    }
}

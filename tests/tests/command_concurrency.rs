//! command-service under concurrency, through the real binary: optimistic
//! concurrency races, subscribers while writers run, and `kill -9` mid-write.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use e2e::commands::*;
use e2e::event_log::*;
use e2e::{command_client, connect_command, pb, start_command_service, within, CommandClient};
use pb::event_envelope::Event as E;
use pb::subscribe_events_response::Kind;
use tempfile::TempDir;
use tokio::sync::{watch, Barrier};
use tonic::{Code, Streaming};

// ---- optimistic concurrency ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_clients_with_expected_version_get_exactly_one_success_per_version() {
    const CLIENTS: usize = 32;
    const ROUNDS: u64 = 10;
    let dir = TempDir::new().unwrap();
    let svc = start_command_service(dir.path());
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        // One connection per client.
        clients.push(connect_command(&svc.endpoint()).await);
    }
    assert_eq!(
        ok(&mut clients[0], create("contested", vec![])).await,
        ack("contested", 1, 1)
    );

    let mut winners = Vec::new();
    for round in 1..=ROUNDS {
        // Every client expects the version `round` and they all fire at once.
        let start = Arc::new(Barrier::new(CLIENTS));
        let tasks: Vec<_> = clients
            .iter()
            .enumerate()
            .map(|(i, client)| {
                let mut client = client.clone();
                let start = Arc::clone(&start);
                let cmd = with(
                    add("contested", item(&format!("client-{i}"), 1, 100)),
                    Some(round),
                    "",
                );
                tokio::spawn(async move {
                    start.wait().await;
                    send(&mut client, cmd).await
                })
            })
            .collect();
        let mut successes = Vec::new();
        for (i, task) in tasks.into_iter().enumerate() {
            match within("a racing command", Duration::from_secs(30), task)
                .await
                .unwrap()
            {
                Ok(a) => successes.push((i, a)),
                Err(s) => {
                    assert_eq!(
                        s.code(),
                        Code::Aborted,
                        "round {round}, client {i}: {:?}",
                        s.message()
                    );
                    // Whoever lost, lost to the one winner of this round.
                    assert!(
                        numbers_in(s.message()).contains(&(round + 1)),
                        "round {round}, client {i}: no current version {} in {:?}",
                        round + 1,
                        s.message()
                    );
                }
            }
        }
        assert_eq!(
            successes.len(),
            1,
            "round {round}: expected exactly one success, got {successes:?}"
        );
        let (winner, a) = successes.pop().unwrap();
        assert_eq!(a, ack("contested", round + 1, round + 1), "round {round}");
        winners.push(winner);
    }

    let log = read_log(&mut clients[0], 0).await;
    assert_gap_free(&log);
    assert_eq!(log.len() as u64, ROUNDS + 1, "only the winners wrote");
    for (round, winner) in winners.iter().enumerate() {
        let Some(E::ItemAdded(added)) = &log[round + 1].event else {
            panic!("position {} is not an ItemAdded", round + 2)
        };
        assert_eq!(
            added.item.as_ref().unwrap().sku,
            format!("client-{winner}"),
            "the event at version {} is not the winner's",
            round + 2
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_retries_of_one_command_id_write_once_and_agree() {
    const CLIENTS: usize = 16;
    let dir = TempDir::new().unwrap();
    let svc = start_command_service(dir.path());
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(connect_command(&svc.endpoint()).await);
    }

    // The same request under the same key, sent by everyone at once (with a
    // server-generated id, so a second write would show as a second order).
    let same = with(create("", vec![item("a", 1, 1)]), None, "the-key");
    let start = Arc::new(Barrier::new(CLIENTS));
    let tasks: Vec<_> = clients
        .iter()
        .map(|client| {
            let (mut client, start, cmd) = (client.clone(), Arc::clone(&start), same.clone());
            tokio::spawn(async move {
                start.wait().await;
                send(&mut client, cmd).await
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        let result = within("a retry", Duration::from_secs(30), task)
            .await
            .unwrap();
        results.push(result.unwrap_or_else(|s| panic!("a retry failed: {s:?}")));
    }
    assert!(
        results.iter().all(|a| *a == results[0]),
        "retries disagree: {results:?}"
    );
    assert_eq!((results[0].version, results[0].position), (1, 1));

    // Different requests under one key, at once: one wins, the rest are refused.
    let start = Arc::new(Barrier::new(CLIENTS));
    let tasks: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(i, client)| {
            let (mut client, start) = (client.clone(), Arc::clone(&start));
            let cmd = with(create(&format!("o{i}"), vec![]), None, "contested-key");
            tokio::spawn(async move {
                start.wait().await;
                send(&mut client, cmd).await
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        match within("a contested key", Duration::from_secs(30), task)
            .await
            .unwrap()
        {
            Ok(a) => winners.push(a),
            Err(s) => assert_eq!(s.code(), Code::InvalidArgument, "{s:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "one key, several writes: {winners:?}");
    assert_eq!((winners[0].version, winners[0].position), (1, 2));

    let log = read_log(&mut clients[0], 0).await;
    assert_gap_free(&log);
    assert_eq!(
        log.iter().map(ack_of).collect::<Vec<_>>(),
        [results[0].clone(), winners[0].clone()]
    );
}

// ---- subscribers while writers run ----

/// A sku of the maximum length, so that events carrying every line are large.
fn long_sku(i: usize) -> String {
    format!("{i:0>64}")
}

/// 100 lines of long skus: an OrderCreated or OrderPlaced of ~7.5 KB.
fn big_basket() -> Vec<pb::LineItem> {
    (0..100).map(|i| item(&long_sku(i), 1, 1)).collect()
}

/// Writer `w` creates `orders` big orders, adds to each and places it; every
/// acknowledged result is returned, and counted in `acked`.
async fn write_big_orders(
    endpoint: String,
    w: usize,
    orders: usize,
    acked: Arc<watch::Sender<usize>>,
) -> Vec<Ack> {
    let mut c = connect_command(&endpoint).await;
    let mut mine = Vec::new();
    for n in 0..orders {
        let id = format!("w{w}-o{n}");
        for cmd in [
            Cmd::from(create(&id, big_basket())),
            add(&id, item(&long_sku(n % 100), 2, 1)).into(),
            place(&id).into(),
        ] {
            mine.push(ok(&mut c, cmd).await);
            acked.send_modify(|count| *count += 1);
        }
    }
    mine
}

/// Reads `stream` until the event at `last` arrives, then checks that nothing
/// else follows: the next message is a heartbeat at `last`.
async fn read_until(stream: &mut Streaming<pb::SubscribeEventsResponse>, last: u64) -> Vec<Ack> {
    let mut seen = Vec::new();
    let mut caught_up = false;
    loop {
        let msg = within(
            "the next subscription message",
            Duration::from_secs(30),
            stream.message(),
        )
        .await
        .expect("stream error")
        .expect("the stream ended");
        match msg.kind.expect("a message kind") {
            Kind::Event(e) => {
                assert!(
                    !caught_up,
                    "event {} after the last one ({last})",
                    e.position
                );
                seen.push(e);
            }
            Kind::Heartbeat(h) => {
                let at = seen.last().map_or(0, |e| e.position);
                assert!(
                    h.head_position >= at,
                    "heartbeat at {} behind the events sent ({at})",
                    h.head_position
                );
                if caught_up {
                    assert_eq!(h.head_position, last, "the log grew past {last}");
                    break;
                }
            }
        }
        if seen.last().is_some_and(|e| e.position >= last) {
            caught_up = true;
        }
    }
    assert_gap_free(&seen);
    seen.iter().map(ack_of).collect()
}

async fn subscribe(
    client: &mut CommandClient,
    after_position: u64,
) -> Streaming<pb::SubscribeEventsResponse> {
    client
        .subscribe_events(pb::SubscribeEventsRequest {
            after_position,
            ..Default::default()
        })
        .await
        .expect("subscribe")
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscribers_see_every_acknowledged_event_once_in_order_while_8_writers_run() {
    const WRITERS: usize = 8;
    const ORDERS_PER_WRITER: usize = 60;
    const TOTAL: u64 = (WRITERS * ORDERS_PER_WRITER * 3) as u64;
    let dir = TempDir::new().unwrap();
    let svc = start_command_service(dir.path());
    let endpoint = svc.endpoint();
    let (acked_tx, acked_rx) = watch::channel(0usize);
    let acked_tx = Arc::new(acked_tx);

    // A subscriber that never reads until the writers are done: it must not
    // slow them down, and must still get everything (~7 MB of events: more than
    // the HTTP/2 window and any sane server buffer hold).
    let mut stalled_client = command_client(&svc).await;
    let mut stalled = subscribe(&mut stalled_client, 0).await;

    // Subscribers that join from position 0 at different moments: before the
    // first write, and while the writers are busy (catch-up racing live events).
    let readers: Vec<_> = [0usize, 200, 900]
        .into_iter()
        .map(|join_after| {
            let endpoint = endpoint.clone();
            let mut acked = acked_rx.clone();
            tokio::spawn(async move {
                acked.wait_for(|n| *n >= join_after).await.unwrap();
                let mut client = connect_command(&endpoint).await;
                let mut stream = subscribe(&mut client, 0).await;
                read_until(&mut stream, TOTAL).await
            })
        })
        .collect();

    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            tokio::spawn(write_big_orders(
                endpoint.clone(),
                w,
                ORDERS_PER_WRITER,
                Arc::clone(&acked_tx),
            ))
        })
        .collect();
    let mut acknowledged = Vec::new();
    for writer in writers {
        acknowledged.extend(
            within("a writer", Duration::from_secs(90), writer)
                .await
                .unwrap(),
        );
    }
    acknowledged.sort_by_key(|a| a.position);
    let positions: Vec<u64> = acknowledged.iter().map(|a| a.position).collect();
    assert_eq!(
        positions,
        (1..=TOTAL).collect::<Vec<_>>(),
        "acknowledged positions"
    );

    for (i, reader) in readers.into_iter().enumerate() {
        let seen = within("a subscriber", Duration::from_secs(60), reader)
            .await
            .unwrap();
        assert_eq!(
            seen, acknowledged,
            "subscriber {i} does not match the acknowledgements"
        );
    }
    let seen = read_until(&mut stalled, TOTAL).await;
    assert_eq!(
        seen, acknowledged,
        "the stalled subscriber does not match the acknowledgements"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscription_from_a_position_gets_the_rest_then_live_events() {
    let dir = TempDir::new().unwrap();
    let svc = start_command_service(dir.path());
    let mut c = command_client(&svc).await;
    for i in 0..5 {
        ok(&mut c, create(&format!("o{i}"), vec![])).await;
    }
    let mut stream = subscribe(&mut c.clone(), 3).await;
    let mut first = Vec::new();
    loop {
        let msg = within("catch-up", Duration::from_secs(30), stream.message())
            .await
            .unwrap()
            .unwrap();
        match msg.kind.unwrap() {
            Kind::Event(e) => first.push(e.position),
            Kind::Heartbeat(h) => {
                assert_eq!(h.head_position, 5);
                break;
            }
        }
    }
    assert_eq!(first, [4, 5], "the stored events after position 3");
    let live = ok(&mut c, create("o5", vec![])).await;
    assert_eq!(live.position, 6);
    loop {
        let msg = within("a live event", Duration::from_secs(30), stream.message())
            .await
            .unwrap()
            .unwrap();
        if let Kind::Event(e) = msg.kind.unwrap() {
            assert_eq!(ack_of(&e), live);
            break;
        }
    }
}

// ---- kill -9 ----

/// Writer `w` adds to its order (creating it in the first cycle) until the
/// service goes away; returns every acknowledged command with its result.
async fn write_until_killed(
    endpoint: String,
    cycle: usize,
    w: usize,
    acked: Arc<watch::Sender<usize>>,
) -> Vec<(Cmd, Ack)> {
    let mut c = connect_command(&endpoint).await;
    let id = format!("writer-{w}");
    let mut mine = Vec::new();
    for n in 0..2_000 {
        let key = format!("c{cycle}-w{w}-{n}");
        let cmd = if cycle == 0 && n == 0 {
            with(create(&id, vec![]), None, &key)
        } else {
            with(add(&id, item("unit", 1, 1)), None, &key)
        };
        match send(&mut c, cmd.clone()).await {
            Ok(a) => {
                mine.push((cmd, a));
                acked.send_modify(|count| *count += 1);
            }
            // The service is gone (or going): stop.
            Err(_) => break,
        }
    }
    mine
}

/// Reads the whole log and checks that it is gap-free and holds every
/// acknowledged result at its position.
async fn assert_log_holds(
    c: &mut CommandClient,
    acknowledged: &[(Cmd, Ack)],
) -> Vec<pb::EventEnvelope> {
    let log = read_log(c, 0).await;
    assert_gap_free(&log);
    for (cmd, a) in acknowledged {
        let stored = log.get(a.position as usize - 1).map(ack_of);
        assert_eq!(
            stored.as_ref(),
            Some(a),
            "an acknowledged command is not in the log as acknowledged: {}",
            describe(cmd)
        );
    }
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_command_survives_kill_9_and_writing_continues() {
    const WRITERS: usize = 8;
    const CYCLES: usize = 3;
    let dir = TempDir::new().unwrap();
    let mut acknowledged = Vec::new();
    for cycle in 0..CYCLES {
        let mut svc = start_command_service(dir.path());
        if cycle > 0 {
            assert_log_holds(&mut command_client(&svc).await, &acknowledged).await;
        }
        let (acked_tx, mut acked_rx) = watch::channel(0usize);
        let acked_tx = Arc::new(acked_tx);
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let writer = write_until_killed(svc.endpoint(), cycle, w, Arc::clone(&acked_tx));
                tokio::spawn(writer)
            })
            .collect();
        within(
            "100 acknowledged commands",
            Duration::from_secs(60),
            acked_rx.wait_for(|n| *n >= 100),
        )
        .await
        .unwrap();
        svc.kill();
        for writer in writers {
            acknowledged.extend(
                within(
                    "a writer to notice the kill",
                    Duration::from_secs(30),
                    writer,
                )
                .await
                .unwrap(),
            );
        }
    }

    let svc = start_command_service(dir.path());
    let mut c = command_client(&svc).await;
    let log = assert_log_holds(&mut c, &acknowledged).await;
    let head = log.len() as u64;
    assert!(head >= acknowledged.len() as u64);

    // The idempotency keys were committed with the events: retries change nothing.
    let mut last_per_writer: BTreeMap<String, (Cmd, Ack)> = BTreeMap::new();
    for (cmd, a) in &acknowledged {
        last_per_writer.insert(a.order_id.clone(), (cmd.clone(), a.clone()));
    }
    for (cmd, a) in last_per_writer.values() {
        assert_eq!(
            &ok(&mut c, cmd.clone()).await,
            a,
            "retry of {}",
            describe(cmd)
        );
    }
    assert_log_unchanged(&mut c, head, "retries after kill -9").await;

    // Writing continues, on top of the recovered versions.
    let mut versions: HashMap<String, u64> = HashMap::new();
    for e in &log {
        versions.insert(e.order_id.clone(), e.version);
    }
    let mut next = head;
    let mut orders: Vec<_> = versions.into_iter().collect();
    orders.sort();
    for (order, version) in orders {
        next += 1;
        assert_eq!(
            ok(
                &mut c,
                with(add(&order, item("unit", 1, 1)), Some(version), "")
            )
            .await,
            ack(&order, version + 1, next)
        );
    }
    let after = read_log(&mut c, 0).await;
    assert_gap_free(&after);
    assert_eq!(after.len() as u64, next);
}

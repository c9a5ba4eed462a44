//! Fault injection on the network: a TCP fault proxy (`e2e::fault_proxy`)
//! between query-service and command-service stalls, drops and resets the
//! event stream and refuses reconnections at random, `FAULT_PROXY_FAULTS`
//! times (default 40), while writers run. A plain subscriber behind the same
//! proxy resubscribes after its last event each time it is cut off. Afterwards
//! the replica converges to the model, and the subscriber has every event
//! exactly once, in order.
//!
//! `FAULT_PROXY_FAULTS=400 cargo test -p e2e-tests --test fault_network`

use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::fault::{count, seed};
use e2e::fault_proxy::{Chaos, FaultProxy};
use e2e::model::{placement_dates, Model};
use e2e::queries::projection_status;
use e2e::workload::run_workload;
use e2e::{
    command_args, command_client, eventually, pb, query_client, read_log, start_query_service,
    CommandClient, Service,
};
use pb::subscribe_events_response::Kind;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tempfile::TempDir;
use tokio::sync::{watch, Mutex};

/// Subscribes through `endpoint` after the last event it has, again and
/// again, until it has received position `until`; returns every event
/// received, in the order received.
async fn resubscribing_reader(
    endpoint: String,
    until: watch::Receiver<u64>,
    reconnects: Arc<Mutex<u64>>,
) -> Vec<pb::EventEnvelope> {
    let mut events: Vec<pb::EventEnvelope> = Vec::new();
    let done =
        |events: &[pb::EventEnvelope]| events.last().map_or(0, |e| e.position) >= *until.borrow();
    while !done(&events) {
        let after = events.last().map_or(0, |e| e.position);
        // Every step is bounded: through a faulty proxy a connect or a call can
        // otherwise wait forever on a connection that went silent.
        let target = tonic::transport::Endpoint::from_shared(endpoint.clone())
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(3));
        let Ok(Ok(channel)) = tokio::time::timeout(Duration::from_secs(5), target.connect()).await
        else {
            *reconnects.lock().await += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let mut client = CommandClient::new(channel);
        let subscribe = client.subscribe_events(pb::SubscribeEventsRequest {
            after_position: after,
            ..Default::default()
        });
        let Ok(Ok(response)) = tokio::time::timeout(Duration::from_secs(5), subscribe).await else {
            *reconnects.lock().await += 1;
            continue;
        };
        let mut stream = response.into_inner();
        while !done(&events) {
            match tokio::time::timeout(Duration::from_secs(3), stream.message()).await {
                Ok(Ok(Some(m))) => {
                    if let Some(Kind::Event(e)) = m.kind {
                        events.push(e);
                    }
                }
                // Ended, broken, or silent for longer than a heartbeat: resubscribe.
                _ => {
                    *reconnects.lock().await += 1;
                    break;
                }
            }
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_behind_a_faulty_link_converges_with_nothing_lost_or_doubled() {
    let faults = count("FAULT_PROXY_FAULTS", 40);
    let mut rng = StdRng::seed_from_u64(seed("fault_network"));
    let dir = TempDir::new().unwrap();
    let mut args = command_args(&dir.path().join("command"), "127.0.0.1:0");
    // Frequent heartbeats, so a stalled stream is told from an idle one quickly.
    args.extend(["--heartbeat-ms".to_owned(), "200".to_owned()]);
    let cmd = Service::spawn("command-service", &args, &[]);
    let proxy = FaultProxy::start(cmd.addr).await;
    let replica = start_query_service(&dir.path().join("query"), &proxy.endpoint());
    let query = query_client(&replica).await;

    let (stop_tx, stop_rx) = watch::channel(false);
    let (until_tx, until_rx) = watch::channel(u64::MAX);
    let reconnects = Arc::new(Mutex::new(0));
    let reader = tokio::spawn(resubscribing_reader(
        proxy.endpoint(),
        until_rx,
        Arc::clone(&reconnects),
    ));
    // Writers go straight to command-service, in batches, until the faults end.
    let channel = cmd.channel().await;
    let workload_seed: u64 = rng.random();
    let writers = tokio::spawn({
        let stop = stop_rx.clone();
        async move {
            let mut model = Model::default();
            let mut batch = 0;
            while !*stop.borrow() {
                let part = run_workload(
                    channel.clone(),
                    &format!("n{batch}"),
                    20,
                    8,
                    workload_seed ^ batch,
                )
                .await;
                model.merge(part);
                batch += 1;
            }
            model
        }
    });

    let started = Instant::now();
    proxy.set_chaos(Chaos {
        stall: 0.05,
        max_stall: Duration::from_millis(300),
        drop: 0.005,
        reset: 0.005,
    });
    let mut kinds = [0usize; 4];
    for _ in 0..faults {
        // The fault schedule: a random pause, then a random fault.
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..250))).await;
        let kind = rng.random_range(0..4);
        kinds[kind] += 1;
        match kind {
            0 => proxy.reset_all(),
            1 => proxy.drop_all(),
            2 => proxy.stall_for(Duration::from_millis(rng.random_range(50..1500))),
            _ => {
                proxy.refuse_new(true);
                proxy.reset_all();
                tokio::time::sleep(Duration::from_millis(rng.random_range(50..400))).await;
                proxy.refuse_new(false);
            }
        }
    }
    proxy.set_chaos(Chaos::default());
    stop_tx.send(true).unwrap();
    let model = writers.await.expect("writers");
    let faulted_for = started.elapsed();

    // The replica converges once the link is healthy again.
    let status = eventually("the replica to catch up", Duration::from_secs(60), || {
        let q = query.clone();
        let head = model.max_position;
        async move {
            let s = projection_status(&q).await;
            (s.applied_position >= head).then_some(s)
        }
    })
    .await;
    assert!(
        status.error.is_empty(),
        "projection stopped: {}",
        status.error
    );
    let log = read_log(&mut command_client(&cmd).await, 0).await;
    assert_eq!(log.len() as u64, model.max_position);
    model
        .assert_query_side(&query, &placement_dates(&log))
        .await;
    let snapshot = model.read_snapshot(&query).await;
    model.assert_lists(&snapshot);
    let doubled: Vec<_> = replica
        .logs()
        .into_iter()
        .filter(|l| l.contains("received twice"))
        .collect();
    assert!(
        doubled.is_empty(),
        "the stream delivered events twice: {doubled:?}"
    );

    // The plain subscriber gets every event exactly once, in order, as stored.
    until_tx.send(model.max_position).unwrap();
    let received = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("the subscriber to receive the whole log")
        .expect("reader");
    assert_eq!(
        received.len(),
        log.len(),
        "events received by the subscriber"
    );
    for (i, e) in received.iter().enumerate() {
        assert_eq!(
            e.position,
            i as u64 + 1,
            "subscriber: event {i} out of order"
        );
        assert_eq!(
            e, &log[i],
            "subscriber: event {} differs from the log",
            e.position
        );
    }
    let stats = proxy.stats();
    eprintln!(
        "fault_network: {faults} faults in {faulted_for:?} (reset {}, drop {}, stall {}, refuse {}); proxy {stats:?}; \
         replica reconnected {} times; subscriber resubscribed {} times; {} events; {} orders",
        kinds[0],
        kinds[1],
        kinds[2],
        kinds[3],
        replica
            .logs()
            .iter()
            .filter(|l| l.contains("subscribed to the event stream"))
            .count()
            .saturating_sub(1),
        *reconnects.lock().await,
        log.len(),
        model.orders.len()
    );
    // How many connections a reset or drop finds open depends on where the
    // replica's backoff is at that moment, so only require that they hit some.
    assert!(
        stats.resets + stats.drops > 0,
        "faults were injected: {stats:?}"
    );
}

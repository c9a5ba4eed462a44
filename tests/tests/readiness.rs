//! Ready means caught up (SPEC guarantee 9): on gRPC health, query-service
//! reports its service name `orders.v1.QueryService` (what readiness probes
//! ask) NOT_SERVING while it is more than `--ready-max-lag` events behind the
//! command side's head, or has not heard that head at all; `""` (liveness)
//! stays SERVING meanwhile.

use std::time::{Duration, Instant};

use e2e::{
    command_client, item, pb, query_args, query_client, start_command_service, ClosedPort, Service,
};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// What readiness probes ask (deploy/k8s).
const READINESS: &str = "orders.v1.QueryService";
/// What liveness probes ask.
const LIVENESS: &str = "";

/// Events in the log before the replica starts.
const EVENTS: usize = 8000;
/// Writers at once, so the log is written in a few seconds.
const WRITERS: usize = 16;

async fn health(
    client: &mut HealthClient<tonic::transport::Channel>,
    service: &str,
) -> ServingStatus {
    let status = client
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .unwrap_or_else(|e| panic!("health check of {service:?}: {e}"))
        .into_inner()
        .status;
    ServingStatus::try_from(status).expect("a known serving status")
}

fn replica(data_dir: &std::path::Path, command_endpoint: &str, extra: &[&str]) -> Service {
    let mut args = query_args(data_dir, "127.0.0.1:0", command_endpoint);
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    Service::spawn("query-service", &args, &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_behind_the_log_is_not_ready_until_it_has_caught_up() {
    let dir = tempfile::tempdir().unwrap();
    let command = start_command_service(&dir.path().join("command"));
    let client = command_client(&command).await;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let mut client = client.clone();
            tokio::spawn(async move {
                for i in (w..EVENTS).step_by(WRITERS) {
                    client
                        .create_order(pb::CreateOrderRequest {
                            order_id: format!("o-{i}"),
                            customer_id: format!("c-{}", i % 7),
                            items: vec![item("apple", 1, 100)],
                            ..Default::default()
                        })
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }

    // One event per atomic batch: thousands of batches to catch up.
    let query = replica(
        &dir.path().join("query"),
        &command.endpoint(),
        &["--ready-max-lag", "10", "--max-batch", "1"],
    );
    let mut probe = HealthClient::new(query.channel().await);
    let mut queries = query_client(&query).await;
    assert_eq!(
        health(&mut probe, READINESS).await,
        ServingStatus::NotServing,
        "a replica thousands of events behind is not ready"
    );
    let started = Instant::now();
    let mut seen_behind = false;
    loop {
        let liveness = health(&mut probe, LIVENESS).await;
        let readiness = health(&mut probe, READINESS).await;
        let status = queries
            .get_projection_status(pb::GetProjectionStatusRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            liveness,
            ServingStatus::Serving,
            "liveness is not readiness"
        );
        if readiness == ServingStatus::Serving {
            // Read after the health answer: it can only have got closer.
            assert!(
                status.head_position - status.applied_position <= 10,
                "SERVING while {} behind",
                status.head_position - status.applied_position
            );
            break;
        }
        if status.head_position >= EVENTS as u64
            && status.applied_position + 10 < status.head_position
        {
            seen_behind = true;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "still not ready after 2 minutes: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        seen_behind,
        "the replica was seen behind the head before it was ready"
    );
    let status = queries
        .get_projection_status(pb::GetProjectionStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(status.applied_position + 10 >= EVENTS as u64, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_cannot_reach_the_command_side_is_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let closed = ClosedPort::new();
    let query = replica(&dir.path().join("query"), &closed.endpoint(), &[]);
    let mut probe = HealthClient::new(query.channel().await);
    // Not known to be caught up: it has never heard the head. Asked over a few
    // seconds (several reconnect attempts), not just once.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        assert_eq!(
            health(&mut probe, READINESS).await,
            ServingStatus::NotServing
        );
        assert_eq!(health(&mut probe, LIVENESS).await, ServingStatus::Serving);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

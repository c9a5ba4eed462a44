//! Guarantee 6 end to end, in-process: an event this build cannot read stops
//! applying at its position, the last good state keeps being served, and the
//! position and error show in `GetProjectionStatus`.
//!
//! The real command-service only writes events this build knows, so the
//! upstream here is a log replayer (`e2e::log_replayer`): a gRPC
//! `CommandService` that streams a fixed log, as a newer command-service with
//! a new event type would.

use std::time::{Duration, Instant};

use clap::Parser;
use e2e::log_replayer::{envelope, serve_log};
use query_service::config::Config;
use shared::domain::{Currency, CustomerId, Event, Line, Sku};
use shared::proto as pb;
use shared::proto::query_service_client::QueryServiceClient;
use tokio::net::TcpListener;
use tonic::Code;

/// The stand-in log's identity.
const LOG_ID: &str = "0190a0a0-0000-7000-8000-000000000001";

fn created() -> Event {
    Event::OrderCreated {
        customer_id: CustomerId::parse("customer_id", "c").unwrap(),
        currency: Currency::parse("currency", "").unwrap(),
        items: vec![Line {
            sku: Sku::parse("sku", "a").unwrap(),
            quantity: 2,
            unit_price_cents: 50,
        }],
        total_cents: 100,
        item_count: 2,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_stops_applying_and_the_last_good_state_is_served() {
    let mut unknown = envelope(2, "o-1", 2, created());
    // What an event type added after this build decodes to: no known `event`.
    unknown.event = None;
    let log = vec![
        envelope(1, "o-1", 1, created()),
        unknown,
        envelope(3, "o-2", 1, created()),
    ];
    let upstream = serve_log(log, LOG_ID).await;

    let dir = tempfile::tempdir().unwrap();
    let config = Config::try_parse_from([
        "query-service",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--command-endpoint",
        &upstream,
    ])
    .unwrap()
    .validate()
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let service = tokio::spawn(query_service::run(config, listener, async {
        let _ = stopped.await;
    }));

    let mut q = QueryServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let status = q
            .get_projection_status(pb::GetProjectionStatusRequest {})
            .await
            .unwrap()
            .into_inner();
        if !status.error.is_empty() {
            break status;
        }
        assert!(Instant::now() < deadline, "no error reported: {status:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.applied_position, 1);
    assert!(status.error.contains("position 2"), "{}", status.error);

    // The state before the poison event is still served.
    let view = q
        .get_order(pb::GetOrderRequest {
            order_id: "o-1".into(),
            min_position: 1,
        })
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!((view.version, view.total_cents), (1, 100));
    // Nothing after it was applied, and waiting for it fails at once.
    let started = Instant::now();
    let err = q
        .get_order(pb::GetOrderRequest {
            order_id: "o-2".into(),
            min_position: 3,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(
        err.message().contains("stopped at position 2"),
        "{}",
        err.message()
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    let missing = q
        .get_order(pb::GetOrderRequest {
            order_id: "o-2".into(),
            min_position: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), service)
        .await
        .expect("run returns after shutdown")
        .unwrap()
        .unwrap();
}

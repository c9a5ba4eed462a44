//! Guarantee 6 end to end, in-process: an event this build cannot read stops
//! applying at its position, the last good state keeps being served, and the
//! position and error show in `GetProjectionStatus`.
//!
//! The real command-service only writes events this build knows, so the
//! upstream here is a log replayer: a gRPC `CommandService` that streams a fixed
//! log, as a newer command-service with a new event type would.

use std::pin::Pin;
use std::time::{Duration, Instant};

use clap::Parser;
use futures::Stream;
use query_service::config::Config;
use shared::domain::{Currency, CustomerId, Event, Line, OrderId, RecordedEvent, Sku, Timestamp};
use shared::proto as pb;
use shared::proto::command_service_server::{CommandService, CommandServiceServer};
use shared::proto::query_service_client::QueryServiceClient;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request, Response, Status};

struct LogReplayer {
    log: Vec<pb::EventEnvelope>,
}

fn read_only() -> Status {
    Status::unimplemented("this log replayer serves SubscribeEvents only")
}

#[tonic::async_trait]
impl CommandService for LogReplayer {
    async fn create_order(
        &self,
        _: Request<pb::CreateOrderRequest>,
    ) -> Result<Response<pb::CreateOrderResponse>, Status> {
        Err(read_only())
    }
    async fn add_item(
        &self,
        _: Request<pb::AddItemRequest>,
    ) -> Result<Response<pb::AddItemResponse>, Status> {
        Err(read_only())
    }
    async fn remove_item(
        &self,
        _: Request<pb::RemoveItemRequest>,
    ) -> Result<Response<pb::RemoveItemResponse>, Status> {
        Err(read_only())
    }
    async fn place_order(
        &self,
        _: Request<pb::PlaceOrderRequest>,
    ) -> Result<Response<pb::PlaceOrderResponse>, Status> {
        Err(read_only())
    }
    async fn ship_order(
        &self,
        _: Request<pb::ShipOrderRequest>,
    ) -> Result<Response<pb::ShipOrderResponse>, Status> {
        Err(read_only())
    }
    async fn cancel_order(
        &self,
        _: Request<pb::CancelOrderRequest>,
    ) -> Result<Response<pb::CancelOrderResponse>, Status> {
        Err(read_only())
    }
    async fn list_order_events(
        &self,
        _: Request<pb::ListOrderEventsRequest>,
    ) -> Result<Response<pb::ListOrderEventsResponse>, Status> {
        Err(read_only())
    }

    type SubscribeEventsStream =
        Pin<Box<dyn Stream<Item = Result<pb::SubscribeEventsResponse, Status>> + Send>>;

    async fn subscribe_events(
        &self,
        request: Request<pb::SubscribeEventsRequest>,
    ) -> Result<Response<Self::SubscribeEventsStream>, Status> {
        use pb::subscribe_events_response::Kind;
        let after = request.into_inner().after_position;
        let head = self.log.last().map_or(0, |e| e.position);
        let mut messages: Vec<_> = self
            .log
            .iter()
            .filter(|e| e.position > after)
            .map(|e| Kind::Event(e.clone()))
            .collect();
        messages.push(Kind::Heartbeat(pb::Heartbeat {
            head_position: head,
            log_id: LOG_ID.to_owned(),
        }));
        let stream = futures::stream::iter(
            messages
                .into_iter()
                .map(|kind| Ok(pb::SubscribeEventsResponse { kind: Some(kind) })),
        );
        // Like the real stream, it stays open once caught up, and says which
        // log it serves before any event.
        let mut response = Response::new(Box::pin(futures::StreamExt::chain(
            stream,
            futures::stream::pending(),
        )) as Self::SubscribeEventsStream);
        response
            .metadata_mut()
            .insert(shared::LOG_ID_HEADER, LOG_ID.parse().unwrap());
        Ok(response)
    }
}

/// The stand-in log's identity.
const LOG_ID: &str = "0190a0a0-0000-7000-8000-000000000001";

fn envelope(position: u64, order: &str, version: u64, event: Event) -> pb::EventEnvelope {
    pb::EventEnvelope::from(&RecordedEvent {
        position,
        event_id: format!("e{position}"),
        order_id: OrderId::parse("order_id", order).unwrap(),
        version,
        occurred_at: Timestamp::from_micros(1_700_000_000_000_000),
        command_id: None,
        event,
    })
}

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
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(CommandServiceServer::new(LogReplayer { log }))
            .serve_with_incoming(TcpIncoming::from(upstream)),
    );

    let dir = tempfile::tempdir().unwrap();
    let config = Config::try_parse_from([
        "query-service",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--command-endpoint",
        &format!("http://{upstream_addr}"),
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

//! A stand-in upstream for poison-event tests: a gRPC `CommandService` in the
//! test process that streams a fixed log (then stays open, like the real
//! stream) and refuses every command. The real command-service only writes
//! events this build can apply; this one serves what a newer command-service
//! with a new event type would.

use std::pin::Pin;

use futures::Stream;
use shared::domain::{Event, OrderId, RecordedEvent, Timestamp};
use shared::proto as pb;
use shared::proto::command_service_server::{CommandService, CommandServiceServer};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// A `CommandService` that streams `log` and nothing else, as the log
/// identified by `log_id`.
pub struct LogReplayer {
    pub log: Vec<pb::EventEnvelope>,
    pub log_id: &'static str,
}

/// Serves `log` (as the log `log_id`) on a port of its own; gives the endpoint.
pub async fn serve_log(log: Vec<pb::EventEnvelope>, log_id: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(CommandServiceServer::new(LogReplayer { log, log_id }))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    format!("http://{addr}")
}

/// The stored form of `event` at `position`, for order `order` at `version`.
pub fn envelope(position: u64, order: &str, version: u64, event: Event) -> pb::EventEnvelope {
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
            log_id: self.log_id.to_owned(),
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
            .insert(shared::LOG_ID_HEADER, self.log_id.parse().unwrap());
        Ok(response)
    }
}

//! The gRPC layer: unpacks requests, hands them to the writer or the log reader,
//! and maps results. No business rule lives here.

use std::time::Duration;

use shared::convert::OrderEventsPage;
use shared::domain::{OrderId, Submission, ValidationError};
use shared::proto as pb;
use shared::proto::command_service_server::CommandService;
use shared::telemetry::TraceContext;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::error::CommandError;
use crate::store::{self, CommandResult, Store};
use crate::subscription::{EventStream, Filter, Subscription};
use crate::writer::WriterHandle;

/// The most event bytes one `ListOrderEvents` page carries (the page ends
/// early, with a token, rather than grow past it).
const PAGE_BYTES: usize = 1 << 20;

pub struct CommandApi {
    pub writer: WriterHandle,
    pub store: Store,
    pub head: watch::Receiver<u64>,
    pub heartbeat_interval: Duration,
    pub shutdown: watch::Receiver<bool>,
    /// Read-ahead per `SubscribeEvents` stream (`--max-subscriber-buffer-bytes`).
    pub subscriber_buffer_bytes: usize,
}

impl CommandApi {
    async fn execute<R>(&self, request: &Request<R>) -> Result<CommandResult, Status>
    where
        for<'a> Submission: TryFrom<&'a R, Error = ValidationError>,
    {
        let submission = Submission::try_from(request.get_ref()).map_err(CommandError::from)?;
        let name = submission.request.command.name();
        // Stored with the command's events (observe.rs put it there).
        let trace = request.extensions().get::<TraceContext>().cloned();
        let result = self.writer.submit(submission, trace).await;
        match &result {
            Ok(r) => {
                tracing::debug!(command = name, order_id = %r.order_id, position = r.position, "committed")
            }
            Err(e) => tracing::debug!(command = name, error = %e, "refused"),
        }
        Ok(result?)
    }

    /// One page of an order's history, read from the history index and the
    /// log blocks (blocking sled reads: run off the async workers). Only
    /// events up to the published head are listed, as `SubscribeEvents` would.
    fn order_events(
        store: &Store,
        page: &OrderEventsPage,
        head: u64,
    ) -> Result<pb::ListOrderEventsResponse, CommandError> {
        if store.load_order(&page.order_id)?.version == 0 {
            return Err(CommandError::NotFound(page.order_id.clone()));
        }
        // One more than the page, to know whether another page follows.
        let mut entries =
            store.order_history(&page.order_id, page.after_version, page.page_size + 1)?;
        entries.retain(|&(_, position)| position <= head);
        let more = entries.len() > page.page_size;
        entries.truncate(page.page_size);
        let positions: Vec<u64> = entries.iter().map(|&(_, position)| position).collect();
        let mut messages = store.events_at(&positions)?;
        // A page stays far below any sensible --max-message-bytes, however
        // large the events: past the budget it ends early, with a token.
        let mut bytes = 0;
        let fits = messages
            .iter()
            .take_while(|message| {
                bytes += message.len();
                bytes <= PAGE_BYTES
            })
            .count()
            .max(1);
        let more = more || fits < messages.len();
        messages.truncate(fits);
        entries.truncate(fits);
        let events = messages
            .into_iter()
            .zip(&positions)
            .map(|(message, &position)| store::decode_event(position, message))
            .collect::<Result<Vec<_>, _>>()?;
        let next_page_token = match entries.last() {
            Some(&(version, _)) if more => page.next_page_token(version),
            _ => String::new(),
        };
        Ok(pb::ListOrderEventsResponse {
            events,
            next_page_token,
        })
    }
}

/// Builds a command's `<Rpc>Response` from its result (they all share three fields).
macro_rules! command_response {
    ($ty:ident, $result:expr) => {{
        let r = $result;
        Ok(Response::new(pb::$ty {
            order_id: r.order_id.to_string(),
            version: r.version,
            position: r.position,
        }))
    }};
}

#[tonic::async_trait]
impl CommandService for CommandApi {
    async fn create_order(
        &self,
        request: Request<pb::CreateOrderRequest>,
    ) -> Result<Response<pb::CreateOrderResponse>, Status> {
        command_response!(CreateOrderResponse, self.execute(&request).await?)
    }

    async fn add_item(
        &self,
        request: Request<pb::AddItemRequest>,
    ) -> Result<Response<pb::AddItemResponse>, Status> {
        command_response!(AddItemResponse, self.execute(&request).await?)
    }

    async fn remove_item(
        &self,
        request: Request<pb::RemoveItemRequest>,
    ) -> Result<Response<pb::RemoveItemResponse>, Status> {
        command_response!(RemoveItemResponse, self.execute(&request).await?)
    }

    async fn place_order(
        &self,
        request: Request<pb::PlaceOrderRequest>,
    ) -> Result<Response<pb::PlaceOrderResponse>, Status> {
        command_response!(PlaceOrderResponse, self.execute(&request).await?)
    }

    async fn ship_order(
        &self,
        request: Request<pb::ShipOrderRequest>,
    ) -> Result<Response<pb::ShipOrderResponse>, Status> {
        command_response!(ShipOrderResponse, self.execute(&request).await?)
    }

    async fn cancel_order(
        &self,
        request: Request<pb::CancelOrderRequest>,
    ) -> Result<Response<pb::CancelOrderResponse>, Status> {
        command_response!(CancelOrderResponse, self.execute(&request).await?)
    }

    async fn list_order_events(
        &self,
        request: Request<pb::ListOrderEventsRequest>,
    ) -> Result<Response<pb::ListOrderEventsResponse>, Status> {
        let page = OrderEventsPage::try_from(request.get_ref()).map_err(CommandError::from)?;
        let store = self.store.clone();
        let head = *self.head.borrow();
        let response = tokio::task::spawn_blocking(move || Self::order_events(&store, &page, head))
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "order history read panicked");
                Status::internal("order history could not be read")
            })??;
        Ok(Response::new(response))
    }

    type SubscribeEventsStream = tokio_stream::Empty<Result<pb::SubscribeEventsResponse, Status>>;

    /// Never called: `CommandRoutes` (routes.rs) is the only service mounted for
    /// `orders.v1.CommandService`, and it answers `SubscribeEvents` itself with
    /// the stored bytes (`CommandApi::subscribe`) before the generated server
    /// sees the request. The generated trait still requires the method.
    async fn subscribe_events(
        &self,
        _request: Request<pb::SubscribeEventsRequest>,
    ) -> Result<Response<Self::SubscribeEventsStream>, Status> {
        Err(Status::unimplemented(
            "SubscribeEvents is served by CommandRoutes from the stored log",
        ))
    }
}

impl CommandApi {
    /// Opens a subscription to every event after the request's `after_position`.
    pub fn subscribe(
        &self,
        request: &Request<pb::SubscribeEventsRequest>,
    ) -> Result<EventStream, Status> {
        if *self.shutdown.borrow() {
            return Err(CommandError::ShuttingDown.into());
        }
        let after = request.get_ref().after_position;
        let filter = filter_of(request.get_ref()).map_err(CommandError::Invalid)?;
        tracing::info!(after_position = after, remote = ?request.remote_addr(), ?filter, "subscriber connected");
        let subscription = Subscription {
            store: self.store.clone(),
            head: self.head.clone(),
            heartbeat_interval: self.heartbeat_interval,
            shutdown: self.shutdown.clone(),
            buffer_bytes: self.subscriber_buffer_bytes,
            filter,
        };
        Ok(subscription.start(after))
    }
}

/// The event filter a `SubscribeEvents` request asks for, checked.
fn filter_of(request: &pb::SubscribeEventsRequest) -> Result<Filter, ValidationError> {
    let mut event_types = Vec::with_capacity(request.event_types.len());
    for &value in &request.event_types {
        match pb::EventType::try_from(value) {
            Ok(pb::EventType::Unspecified) | Err(_) => {
                return Err(ValidationError::new(
                    "event_types",
                    format!("{value} is not an event type (EVENT_TYPE_ORDER_CREATED .. EVENT_TYPE_ORDER_CANCELLED)"),
                ))
            }
            Ok(kind) => event_types.push(kind),
        }
    }
    if !request.order_id.is_empty() {
        OrderId::parse("order_id", &request.order_id)?;
    }
    Ok(Filter {
        event_types,
        order_id: request.order_id.clone(),
    })
}

#[cfg(test)]
mod tests {
    use shared::domain::Order;

    use super::*;
    use crate::store::WriteBatch;

    /// An order with `count` events of about 2 KiB each, committed in groups.
    fn store_with_big_history(dir: &std::path::Path, count: u64) -> Store {
        let store = Store::open(dir, 1 << 20).unwrap();
        for group in (1..=count).collect::<Vec<_>>().chunks(100) {
            let mut batch = WriteBatch::default();
            for &position in group {
                let event = pb::EventEnvelope {
                    position,
                    order_id: "big".into(),
                    version: position,
                    command_id: "c".repeat(2048),
                    ..Default::default()
                };
                batch.push_event(position, &event);
            }
            let order = Order {
                version: *group.last().unwrap(),
                ..Order::default()
            };
            let id = shared::domain::OrderId::parse("order_id", "big").unwrap();
            batch.orders.push((id, order));
            let record = Store::record(batch, group[0], *group.last().unwrap());
            store.commit(&record).unwrap();
        }
        store
    }

    #[test]
    fn a_page_of_large_events_ends_at_the_byte_budget_and_the_token_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_big_history(dir.path(), 1500);
        let request = |token: String| pb::ListOrderEventsRequest {
            order_id: "big".into(),
            page_size: 1000,
            page_token: token,
            ..Default::default()
        };
        let (mut versions, mut token, mut pages) = (Vec::new(), String::new(), 0);
        loop {
            let page = OrderEventsPage::try_from(&request(token)).unwrap();
            let response = CommandApi::order_events(&store, &page, 1500).unwrap();
            let bytes: usize = response
                .events
                .iter()
                .map(prost::Message::encoded_len)
                .sum();
            assert!(bytes <= PAGE_BYTES, "{bytes}");
            versions.extend(response.events.iter().map(|e| e.version));
            pages += 1;
            if response.next_page_token.is_empty() {
                break;
            }
            token = response.next_page_token;
        }
        assert_eq!(versions, (1..=1500).collect::<Vec<_>>());
        assert!(
            pages >= 3,
            "1500 events of 2 KiB take at least 3 pages: {pages}"
        );
    }

    #[test]
    fn events_past_the_published_head_are_not_listed_yet() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_big_history(dir.path(), 200);
        let page = OrderEventsPage::try_from(&pb::ListOrderEventsRequest {
            order_id: "big".into(),
            page_size: 1000,
            ..Default::default()
        })
        .unwrap();
        let response = CommandApi::order_events(&store, &page, 150).unwrap();
        assert_eq!(response.events.len(), 150);
        assert!(response.next_page_token.is_empty());
    }
}

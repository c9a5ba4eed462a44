//! The gRPC layer: unpacks requests, hands them to the writer or the log reader,
//! and maps results. No business rule lives here.

use std::time::Duration;

use shared::domain::{Submission, ValidationError};
use shared::proto as pb;
use shared::proto::command_service_server::CommandService;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::error::CommandError;
use crate::store::{CommandResult, Store};
use crate::subscription::{EventStream, Subscription};
use crate::writer::WriterHandle;

pub struct CommandApi {
    pub writer: WriterHandle,
    pub store: Store,
    pub head: watch::Receiver<u64>,
    pub heartbeat_interval: Duration,
    pub shutdown: watch::Receiver<bool>,
}

impl CommandApi {
    async fn execute<R>(&self, request: &R) -> Result<CommandResult, Status>
    where
        for<'a> Submission: TryFrom<&'a R, Error = ValidationError>,
    {
        let submission = Submission::try_from(request).map_err(CommandError::from)?;
        let name = submission.request.command.name();
        let result = self.writer.submit(submission).await;
        match &result {
            Ok(r) => {
                tracing::debug!(command = name, order_id = %r.order_id, position = r.position, "committed")
            }
            Err(e) => tracing::debug!(command = name, error = %e, "refused"),
        }
        Ok(result?)
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
        command_response!(CreateOrderResponse, self.execute(request.get_ref()).await?)
    }

    async fn add_item(
        &self,
        request: Request<pb::AddItemRequest>,
    ) -> Result<Response<pb::AddItemResponse>, Status> {
        command_response!(AddItemResponse, self.execute(request.get_ref()).await?)
    }

    async fn remove_item(
        &self,
        request: Request<pb::RemoveItemRequest>,
    ) -> Result<Response<pb::RemoveItemResponse>, Status> {
        command_response!(RemoveItemResponse, self.execute(request.get_ref()).await?)
    }

    async fn place_order(
        &self,
        request: Request<pb::PlaceOrderRequest>,
    ) -> Result<Response<pb::PlaceOrderResponse>, Status> {
        command_response!(PlaceOrderResponse, self.execute(request.get_ref()).await?)
    }

    async fn ship_order(
        &self,
        request: Request<pb::ShipOrderRequest>,
    ) -> Result<Response<pb::ShipOrderResponse>, Status> {
        command_response!(ShipOrderResponse, self.execute(request.get_ref()).await?)
    }

    async fn cancel_order(
        &self,
        request: Request<pb::CancelOrderRequest>,
    ) -> Result<Response<pb::CancelOrderResponse>, Status> {
        command_response!(CancelOrderResponse, self.execute(request.get_ref()).await?)
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
        tracing::info!(after_position = after, remote = ?request.remote_addr(), "subscriber connected");
        let subscription = Subscription {
            store: self.store.clone(),
            head: self.head.clone(),
            heartbeat_interval: self.heartbeat_interval,
            shutdown: self.shutdown.clone(),
        };
        Ok(subscription.start(after))
    }
}

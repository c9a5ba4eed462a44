//! The service mounted for `orders.v1.CommandService`: the generated server for
//! the commands, and a route of its own for `SubscribeEvents` that sends the
//! stored events as they are (`PreEncodedCodec`) instead of decoding each one
//! into a `SubscribeEventsResponse` for prost to encode again. Both routes sit
//! behind the same layers (auth, limits, metrics) as any other method. The
//! generated server never sees a `SubscribeEvents` call, so the typed method the
//! generated trait requires (`grpc.rs`) only answers UNIMPLEMENTED.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use shared::grpc_codec::PreEncodedCodec;
use shared::proto as pb;
use shared::proto::command_service_server::{CommandServiceServer, SERVICE_NAME};
use tonic::body::Body;
use tonic::codegen::{http, BoxFuture, Service, StdError};
use tonic::server::{Grpc, NamedService, ServerStreamingService};
use tonic::{Request, Response, Status};

use crate::grpc::CommandApi;
use crate::subscription::{EventStream, SubscriberLimit};

pub const SUBSCRIBE_PATH: &str = "/orders.v1.CommandService/SubscribeEvents";

/// `orders.v1.CommandService` with the stored-bytes `SubscribeEvents`.
#[derive(Clone)]
pub struct CommandRoutes {
    api: Arc<CommandApi>,
    generated: CommandServiceServer<CommandApi>,
    max_message_bytes: usize,
    subscribers: SubscriberLimit,
}

impl CommandRoutes {
    pub fn new(api: CommandApi, max_message_bytes: usize, subscribers: SubscriberLimit) -> Self {
        let api = Arc::new(api);
        let generated = CommandServiceServer::from_arc(Arc::clone(&api))
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes);
        CommandRoutes {
            api,
            generated,
            max_message_bytes,
            subscribers,
        }
    }
}

impl<B> Service<http::Request<B>> for CommandRoutes
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != SUBSCRIBE_PATH {
            return self.generated.call(request);
        }
        let method = StoredEvents(Arc::clone(&self.api), self.subscribers.clone());
        let limit = Some(self.max_message_bytes);
        Box::pin(async move {
            let mut grpc = Grpc::new(PreEncodedCodec::<pb::SubscribeEventsRequest>::default())
                .apply_max_message_size_config(limit, limit);
            Ok(grpc.server_streaming(method, request).await)
        })
    }
}

impl NamedService for CommandRoutes {
    const NAME: &'static str = SERVICE_NAME;
}

struct StoredEvents(Arc<CommandApi>, SubscriberLimit);

impl ServerStreamingService<pb::SubscribeEventsRequest> for StoredEvents {
    type Response = Bytes;
    type ResponseStream = EventStream;
    type Future = std::future::Ready<Result<Response<EventStream>, Status>>;

    fn call(&mut self, request: Request<pb::SubscribeEventsRequest>) -> Self::Future {
        let stream = self
            .1
            .admit()
            .and_then(|slot| Ok(self.0.subscribe(&request)?.holding(slot)));
        let log_id = tonic::metadata::MetadataValue::try_from(self.0.store.log_id());
        std::future::ready(stream.map(|stream| {
            let mut response = Response::new(stream);
            // Which log this is, before any event (the replica checks it).
            if let Ok(log_id) = log_id {
                response
                    .metadata_mut()
                    .insert(shared::LOG_ID_HEADER, log_id);
            }
            response
        }))
    }
}

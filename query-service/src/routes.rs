//! The service mounted for `orders.v1.QueryService`: the generated server, with
//! `WatchOrder` admitted under the watcher limits first (`Watchers::admit`), so
//! that a watch beyond `--max-watchers-per-order` or `--max-watchers` is
//! refused with RESOURCE_EXHAUSTED before anything is registered or read. The
//! admitted stream holds its place until the client leaves or the watch ends.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use shared::grpc_codec::OrdersCodec;
use shared::proto as pb;
use shared::proto::query_service_server::{QueryService, QueryServiceServer, SERVICE_NAME};
use tokio_stream::Stream;
use tonic::body::Body;
use tonic::codegen::{http, BoxFuture, Service, StdError};
use tonic::server::{Grpc, NamedService, ServerStreamingService};
use tonic::{Request, Response, Status};

use crate::grpc::QueryApi;
use crate::watchers::{WatchSlot, Watchers};

pub const WATCH_PATH: &str = "/orders.v1.QueryService/WatchOrder";

/// `orders.v1.QueryService` with `WatchOrder` behind the watcher limits.
#[derive(Clone)]
pub struct QueryRoutes {
    api: Arc<QueryApi>,
    generated: QueryServiceServer<QueryApi>,
    max_message_bytes: usize,
}

impl QueryRoutes {
    pub fn new(api: QueryApi, max_message_bytes: usize) -> Self {
        let api = Arc::new(api);
        let generated = QueryServiceServer::from_arc(Arc::clone(&api))
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes);
        QueryRoutes {
            api,
            generated,
            max_message_bytes,
        }
    }
}

impl<B> Service<http::Request<B>> for QueryRoutes
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
        if request.uri().path() != WATCH_PATH {
            return self.generated.call(request);
        }
        let method = AdmittedWatch(Arc::clone(&self.api));
        let limit = Some(self.max_message_bytes);
        Box::pin(async move {
            let codec = OrdersCodec::<pb::WatchOrderResponse, pb::WatchOrderRequest>::default();
            let mut grpc = Grpc::new(codec).apply_max_message_size_config(limit, limit);
            Ok(grpc.server_streaming(method, request).await)
        })
    }
}

impl NamedService for QueryRoutes {
    const NAME: &'static str = SERVICE_NAME;
}

struct AdmittedWatch(Arc<QueryApi>);

type WatchStream = <QueryApi as QueryService>::WatchOrderStream;

impl ServerStreamingService<pb::WatchOrderRequest> for AdmittedWatch {
    type Response = pb::WatchOrderResponse;
    type ResponseStream = Admitted<WatchStream>;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: Request<pb::WatchOrderRequest>) -> Self::Future {
        let api = Arc::clone(&self.0);
        Box::pin(async move {
            let slot =
                Watchers::admit(&api.watchers, &request.get_ref().order_id).map_err(|reached| {
                    tracing::warn!(%reached, "WatchOrder refused");
                    Status::resource_exhausted(reached.to_string())
                })?;
            let response = api.watch_order(request).await?;
            Ok(response.map(|stream| Admitted {
                stream,
                _slot: slot,
            }))
        })
    }
}

/// A watch stream holding its place under the limits until it is dropped.
pub struct Admitted<S> {
    stream: S,
    _slot: WatchSlot,
}

impl<S: Stream + Unpin> Stream for Admitted<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        Pin::new(&mut self.stream).poll_next(cx)
    }
}

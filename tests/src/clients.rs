//! gRPC clients of the services under test: one way to connect each client,
//! by service or by endpoint, and the channels the tests need to shape.

use std::time::{Duration, Instant};

use shared::proto::command_service_client::CommandServiceClient;
use shared::proto::query_service_client::QueryServiceClient;
use tonic::transport::{Channel, Endpoint};

use crate::service::Service;

/// A command-service client.
pub type CommandClient = CommandServiceClient<Channel>;

/// A query-service client.
pub type QueryClient = QueryServiceClient<Channel>;

/// How long `connect_*` keeps retrying while a service is starting.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A client of `service`, which has logged its address and so accepts.
pub async fn command_client(service: &Service) -> CommandClient {
    CommandServiceClient::new(service.channel().await)
}

/// A client of `service`, which has logged its address and so accepts.
pub async fn query_client(service: &Service) -> QueryClient {
    QueryServiceClient::new(service.channel().await)
}

/// A command-service client of `endpoint`, on its own connection; retries
/// while the service is starting.
pub async fn connect_command(endpoint: &str) -> CommandClient {
    CommandServiceClient::new(connect(endpoint).await)
}

/// A query-service client of `endpoint`, on its own connection; retries
/// while the service is starting.
pub async fn connect_query(endpoint: &str) -> QueryClient {
    QueryServiceClient::new(connect(endpoint).await)
}

/// A new connection to `endpoint`, retried for `CONNECT_TIMEOUT`.
async fn connect(endpoint: &str) -> Channel {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    let target = Endpoint::from_shared(endpoint.to_owned()).expect("endpoint");
    loop {
        match target.connect().await {
            Ok(channel) => return channel,
            Err(e) => assert!(Instant::now() < deadline, "connect to {endpoint}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A connection whose HTTP/2 windows are the protocol's minimum (64 KiB): a
/// stream it does not read soon makes the server stop sending.
pub async fn narrow_window_channel(endpoint: &str) -> Channel {
    Endpoint::from_shared(endpoint.to_owned())
        .expect("endpoint")
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .expect("connect")
}

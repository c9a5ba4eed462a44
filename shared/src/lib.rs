//! What both services share: the `orders.v1` gRPC contract, the proto <-> domain
//! conversions, the storage codecs and process plumbing. The `Order` domain is
//! its own crate (`orders-domain`), re-exported here as `shared::domain`.

pub mod codec;
pub mod convert;
pub mod grpc_codec;
pub mod proto;
pub mod server;
pub mod telemetry;

pub use orders_domain as domain;

/// The `SubscribeEvents` response header carrying the command log's identity
/// (also in every `Heartbeat.log_id`), read before any event is applied.
pub const LOG_ID_HEADER: &str = "orders-log-id";

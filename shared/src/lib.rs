//! What both services share: the `Order` domain, the `orders.v1` gRPC contract,
//! the proto <-> domain conversions, the storage codecs and process plumbing.

pub mod codec;
pub mod convert;
pub mod domain;
pub mod grpc_codec;
pub mod proto;
pub mod server;
pub mod telemetry;

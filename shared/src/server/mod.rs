//! gRPC server plumbing both services use: bearer-token auth, connection
//! limits, per-RPC spans and metrics, TLS configuration, server reflection, the bounded
//! shutdown drain and the Prometheus endpoint.

pub mod auth;
pub mod connections;
pub mod metrics;
pub mod observe;
pub mod reflection;
pub mod shutdown;
pub mod tls;

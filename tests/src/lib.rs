//! The test-support library of the end-to-end suites: starts the real
//! `command-service` and `query-service` binaries on ports the OS assigns,
//! hands out gRPC clients, and holds the one command model, the one query-side
//! model and the one `eventually` every suite in `tests/` uses.

pub mod auth;
pub mod clients;
pub mod commands;
pub mod event_log;
pub mod eventually;
pub mod fault;
pub mod fault_proxy;
pub mod log_replayer;
pub mod metrics;
pub mod model;
pub mod queries;
pub mod reflection;
pub mod service;
pub mod snapshot;
pub mod tls;
pub mod workload;
pub mod writer;

pub use shared::proto as pb;

pub use clients::{command_client, connect_command, connect_query, query_client};
pub use clients::{CommandClient, QueryClient};
pub use commands::item;
pub use event_log::read_log;
pub use eventually::{eventually, within};
pub use service::{binary, path_arg, terminate_within, ClosedPort, Service};
pub use service::{command_args, query_args, start_command_service, start_query_service};
